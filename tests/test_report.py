"""`optspec report`: the HTML page as a person sees it in a real headless Chromium (charts
drawn, no network request), and the Markdown summary CI job summaries show."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.browser import Browser, require_browser

OBJECTIVES = """
def single(params):
    x = params["x"]
    if x > 6:
        raise ValueError(f"x is too large: {x}")
    return (x - 2) ** 2 + params["y"]

def multi(params):
    return {"loss": params["x"] ** 2, "cost": (params["x"] - 2) ** 2 + params["y"]}
"""

COMMON = """
[objective]
callable = "objectives.py:{name}"
[params]
x = {{ type = "float", low = -10, high = 10 }}
y = {{ type = "int", low = 0, high = 5 }}
opt = {{ type = "categorical", choices = ["adam", "sgd"] }}
[sampler]
name = "random"
seed = 3
[run]
n_trials = 40
workers = 1
max_failed = 40
"""

SPECS = {
    "single": '[study]\nname = "single"\ndirection = "minimize"\n' + COMMON,
    "multi": '[study]\nname = "multi"\n'
    '[[study.objectives]]\nmetric = "loss"\ndirection = "minimize"\n'
    '[[study.objectives]]\nmetric = "cost"\ndirection = "minimize"\n' + COMMON,
}


def optspec(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "optspec", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=240,
    )


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A single-objective study.db where the trials with x > 6 failed, and a two-objective one."""
    root = tmp_path_factory.mktemp("report")
    (root / "objectives.py").write_text(OBJECTIVES)
    found = {}
    for name, text in SPECS.items():
        (root / f"{name}.toml").write_text("version = 1\n" + text.format(name=name))
        result = optspec("run", f"{name}.toml", "-o", name, "-q", cwd=root)
        assert result.returncode == 0, result.stderr
        found[name] = root / name / "study.db"
    return found


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["single", "multi"])
def test_html_report_draws_its_charts_in_chromium_without_network(studies, kind, tmp_path):
    browser_path = require_browser()
    page = tmp_path / "report.html"
    result = optspec("report", studies[kind], "-o", page)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"report: {page}\n"
    html = page.read_text(encoding="utf-8")
    assert page.stat().st_size < 10 * 1024 * 1024
    assert "<script" not in html and "<link" not in html

    browser = Browser(browser_path)
    try:
        browser.open(page.as_uri())
        seen = browser.evaluate(
            """JSON.stringify({
              title: document.querySelector("h1").textContent,
              charts: Object.fromEntries(["history", "pareto", "importance", "parallel",
                "slices"].map(id => [id, document.querySelectorAll(`#${id} svg.chart`).length])),
              drawnDots: [...document.querySelectorAll("path.dots")]
                .filter(p => p.getBBox().width > 0 && p.getBBox().height > 0).length,
              drawnLines: [...document.querySelectorAll("#parallel path.line")]
                .filter(p => p.getTotalLength() > 100).length,
              chartWidths: [...document.querySelectorAll("svg.chart")]
                .map(svg => svg.getBoundingClientRect().width),
              best: (document.querySelector("#best-trial, #pareto-front") || {}).textContent,
              failures: document.querySelectorAll("#failure-table tr").length - 1,
              spec: document.querySelector("#spec-text").textContent,
            })"""
        )
        browser.screenshot(tmp_path / "report.png")
        urls = browser.requested_urls()
    finally:
        browser.close()
    import json

    seen = json.loads(seen)
    assert seen["title"] == f"Study {kind}"
    assert seen["charts"]["history"] == (1 if kind == "single" else 2)
    assert seen["charts"]["pareto"] == (0 if kind == "single" else 1)
    assert seen["charts"]["importance"] >= 1
    assert seen["charts"]["parallel"] == 1
    assert seen["charts"]["slices"] == 3  # x, y, opt
    assert seen["drawnDots"] >= 4
    assert seen["drawnLines"] >= 1
    assert min(seen["chartWidths"]) > 300  # laid out at a readable size
    assert "#" in seen["best"]
    assert seen["failures"] == (1 if kind == "single" else -1)  # one reason; no table
    assert f'callable = "objectives.py:{kind}"' in seen["spec"]
    assert urls == [page.as_uri()]  # the page itself and nothing else
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_markdown_summary_holds_best_value_states_and_failure_reasons(studies):
    result = optspec("report", studies["single"], "--format", "md", "-o", "-")
    assert result.returncode == 0, result.stderr
    md = result.stdout
    import optuna

    study = optuna.load_study(study_name="single", storage=f"sqlite:///{studies['single']}")
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert failed  # the fixture has failures to show
    assert f"**Best trial #{study.best_trial.number}**: value = `{study.best_value:.6g}`" in md
    assert f"{len(failed)} FAIL" in md
    assert re.search(
        rf"\| {len(failed)} \| `ValueError: x is too large: [\d.]+ "
        rf"\(at .*objectives\.py:5\)` \| #{failed[0].number} \|",
        md,
    ), md

    multi = optspec("report", studies["multi"], "--format", "md", "-o", "-").stdout
    assert "**Pareto front**:" in multi
    assert "| trial | loss | cost | x | y | opt |" in multi


def test_report_default_output_and_errors(studies, tmp_path):
    result = optspec("report", studies["multi"], "--format", "md")
    assert result.returncode == 0, result.stderr
    assert (studies["multi"].parent / "report.md").is_file()
    missing = optspec("report", tmp_path / "nope.db")
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr
    unwritable = optspec("report", studies["multi"], "-o", tmp_path / "no" / "dir" / "r.html")
    assert unwritable.returncode == 2
    assert "cannot write" in unwritable.stderr and "Traceback" not in unwritable.stderr


def test_the_network_check_sees_a_request_when_a_page_makes_one(tmp_path):
    # What makes "no request" above meaningful: the same check on a page that does request.
    browser_path = require_browser()
    page = tmp_path / "leaky.html"
    page.write_text('<!DOCTYPE html><img src="http://127.0.0.1:9/pixel.png">')
    browser = Browser(browser_path)
    try:
        browser.open(page.as_uri())
        urls = browser.requested_urls()
    finally:
        browser.close()
    assert "http://127.0.0.1:9/pixel.png" in urls


@pytest.mark.slow
def test_github_step_summary_gets_the_markdown_summary_after_run_and_resume(studies, tmp_path):
    import os
    import shutil

    root = studies["single"].parent.parent
    work = tmp_path / "work"
    shutil.copytree(root, work, ignore=shutil.ignore_patterns("single", "multi", "*.html"))
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(summary)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "optspec", *args],
            capture_output=True,
            text=True,
            cwd=work,
            env=env,
            timeout=240,
        )

    ran = cli("run", "single.toml", "-o", "out", "-q", "--n-trials", "30")
    assert ran.returncode == 0, ran.stderr
    text = summary.read_text()
    assert text.startswith("earlier step\n### optspec study `single`\n")
    assert "**30 trials**" in text and "Run ended **done: 30 trials reached**" in text
    assert "ValueError: x is too large" in text
    import optuna

    best = optuna.load_study(study_name="single", storage=f"sqlite:///{work / 'out/study.db'}")
    assert f"value = `{best.best_value:.6g}`" in text

    resumed = cli("resume", "out/study.db", "-q", "--n-trials", "34")
    assert resumed.returncode == 0, resumed.stderr
    assert summary.read_text().count("### optspec study `single`") == 2
    assert "**34 trials**" in summary.read_text()

    blocked = cli("resume", "out/study.db", "-q", "--n-trials", "36", "-p", "no:github")
    assert blocked.returncode == 0, blocked.stderr
    assert "**36 trials**" not in summary.read_text()


@pytest.mark.parametrize("seed", range(12))
def test_pareto_front_is_optunas_best_trials(seed):
    import random

    import optuna

    from optspec.report.results import pareto_front

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = random.Random(seed)
    k = rng.choice([2, 3, 4])
    directions = [rng.choice(["minimize", "maximize"]) for _ in range(k)]
    study = optuna.create_study(directions=directions)
    constrained = seed % 3 == 0

    def objective(trial: optuna.Trial) -> list[float]:
        if constrained:
            trial.set_constraint("c", rng.uniform(-1, 1))
        if rng.random() < 0.1:
            raise optuna.TrialPruned()
        return [float(rng.randint(0, 6)) for _ in range(k)]  # ties and duplicates on purpose

    study.optimize(objective, n_trials=rng.randint(1, 150))
    assert [t.number for t in pareto_front(study)] == sorted(t.number for t in study.best_trials)
