"""Exit codes and how the command line reports errors, through the real command line."""

from __future__ import annotations

from pathlib import Path

from optspec import ExitCode

BROKEN_PLUGIN = """\
from optspec import hookimpl


@hookimpl
def register_samplers():
    raise RuntimeError("a bug in a plugin")
"""


def test_exit_codes_are_the_documented_ones() -> None:
    assert {code.name: int(code) for code in ExitCode} == {
        "OK": 0,
        "STUDY_FAILED": 1,
        "USAGE_ERROR": 2,
        "INTERNAL_ERROR": 3,
        "INTERRUPTED": 130,
    }


def test_help_lists_every_exit_code(optspec_cli) -> None:
    result = optspec_cli("--help")

    assert result.returncode == 0
    epilog = result.stdout.split("exit codes:", 1)[1]
    for code in ExitCode:
        assert f"\n  {int(code):<4} " in epilog


def test_an_unexpected_error_is_one_line_and_exit_3(optspec_cli, tmp_path: Path) -> None:
    (tmp_path / "broken_plugin.py").write_text(BROKEN_PLUGIN)

    result = optspec_cli("plugins", "-p", "broken_plugin", cwd=tmp_path)

    assert result.returncode == ExitCode.INTERNAL_ERROR == 3
    assert result.stderr.splitlines() == [
        "optspec: internal error: RuntimeError: a bug in a plugin "
        "(rerun with --debug for the traceback)"
    ]


def test_debug_shows_the_traceback_of_an_unexpected_error(optspec_cli, tmp_path: Path) -> None:
    (tmp_path / "broken_plugin.py").write_text(BROKEN_PLUGIN)

    result = optspec_cli("--debug", "plugins", "-p", "broken_plugin", cwd=tmp_path)

    assert result.returncode == 3
    assert "Traceback (most recent call last):" in result.stderr
    assert 'raise RuntimeError("a bug in a plugin")' in result.stderr
    assert (
        result.stderr.splitlines()[-1] == "optspec: internal error: RuntimeError: a bug in a plugin"
    )


def test_a_usage_error_is_exit_2_without_traceback(optspec_cli, tmp_path: Path) -> None:
    result = optspec_cli("show", tmp_path / "missing.db")

    assert result.returncode == ExitCode.USAGE_ERROR
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1
