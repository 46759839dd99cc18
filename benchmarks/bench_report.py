"""What ``optspec report`` costs as a study grows, against reading the study it reports on.

Run: ``python benchmarks/bench_report.py``. Studies of 1k, 5k and 10k trials (4 parameters: a
float, a log-scale float, an int and a categorical; one value, or two objectives; 5% FAIL with
reasons) are written to study.db with ``dump_to_sqlite``. For each, the baseline is
``open_study_file`` (what ``optspec show`` does to read the file: every report pays it too);
then the HTML page (``build_html``: charts, PED-ANOVA importances, failures) and the Markdown
summary are built from the study already read. The table gives seconds, the ratio to the read,
and the HTML file's size.

Targets: the HTML page under 10 MB at 10k trials; building it grows about linearly.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.trial import TrialState, create_trial

from optspec.report.html import build_html
from optspec.report.markdown import markdown_summary
from optspec.report.results import open_study_file
from optspec.storage.journal import InProcessJournalBackend
from optspec.storage.studydb import dump_to_sqlite

SIZES = (1_000, 5_000, 10_000)
DISTRIBUTIONS = {
    "x": FloatDistribution(-10, 10),
    "lr": FloatDistribution(1e-5, 1e-1, log=True),
    "layers": IntDistribution(1, 8),
    "opt": CategoricalDistribution(["adam", "sgd", "rms"]),
}


def make_study_db(path: Path, n: int, objectives: int) -> None:
    rng = random.Random(n * objectives)
    backend = InProcessJournalBackend()
    study = optuna.create_study(
        study_name="bench",
        storage=JournalStorage(backend),
        directions=["minimize"] * objectives,
    )
    trials = []
    for _ in range(n):
        params = {
            "x": rng.uniform(-10, 10),
            "lr": 10 ** rng.uniform(-5, -1),
            "layers": rng.randint(1, 8),
            "opt": rng.choice(["adam", "sgd", "rms"]),
        }
        if rng.random() < 0.05:
            trials.append(
                create_trial(
                    state=TrialState.FAIL,
                    params=params,
                    distributions=DISTRIBUTIONS,
                    user_attrs={
                        "fail_reason": f"ValueError: diverged at step {rng.randint(1, 99)}"
                    },
                )
            )
            continue
        value = (params["x"] - 2) ** 2 + params["layers"] + (params["opt"] == "sgd")
        values = [value, abs(params["x"]) + params["lr"] * 100][:objectives]
        trials.append(create_trial(values=values, params=params, distributions=DISTRIBUTIONS))
    study.add_trials(trials)
    dump_to_sqlite(backend, "bench", path)


def timed(function):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print("optspec report: cost by study size; baseline = reading study.db (open_study_file)")
    header = (
        f"{'objectives':>10} {'trials':>7} {'read s':>7} {'html s':>7} {'html/read':>9} "
        f"{'md s':>6} {'md/read':>7} {'html MB':>8}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for objectives in (1, 2):
            for n in SIZES:
                path = Path(tmp) / f"{objectives}-{n}.db"
                make_study_db(path, n, objectives)
                study, read = timed(lambda p=path: open_study_file(p))
                page, html_s = timed(lambda s=study, p=path: build_html(s, str(p)))
                _, md_s = timed(lambda s=study: markdown_summary(s))
                size = len(page.encode()) / 1e6
                print(
                    f"{objectives:>10} {n:>7} {read:>7.2f} {html_s:>7.2f} {html_s / read:>9.1f} "
                    f"{md_s:>6.2f} {md_s / read:>7.2f} {size:>8.2f}"
                )


if __name__ == "__main__":
    main()
