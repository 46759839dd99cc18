"""The ``optspec`` command: argparse in front, the work in the modules each command names.

Every command imports what it needs when it runs, so ``optspec --help`` and ``optspec validate``
start without loading optuna. This is the one place that turns errors and outcomes into exit
codes (:class:`ExitCode`): errors derived from :class:`~optspec.errors.OptspecError` are printed as
they are, without a traceback; anything else is a bug, named in one line (``--debug`` shows the
traceback) and exits with :attr:`ExitCode.INTERNAL_ERROR`.
"""

from __future__ import annotations

import argparse
import enum
import math
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from optspec import __version__
from optspec.errors import OptspecError, UsageError
from optspec.util import flush_or_silence

if TYPE_CHECKING:
    from optspec.outcome import Outcome


class ExitCode(enum.IntEnum):
    """How ``optspec`` exits; documented in README and ``optspec --help``."""

    OK = 0
    """Done: the budget or the timeout was reached (other commands: they did their job)."""
    STUDY_FAILED = 1
    """The study failed: ``max_failed`` reached, a plugin raised, study.db could not be written."""
    USAGE_ERROR = 2
    """A usage or spec error: nothing ran, nothing was written."""
    INTERNAL_ERROR = 3
    """An unexpected error in optspec itself (a bug): rerun with ``--debug`` for the traceback."""
    INTERRUPTED = 130
    """SIGINT or SIGTERM stopped the run; its results are saved."""


_BY_STATUS = {
    "done": ExitCode.OK,
    "failed": ExitCode.STUDY_FAILED,
    "interrupted": ExitCode.INTERRUPTED,
}


def exit_code_for(result: Outcome | BaseException) -> ExitCode:
    """The exit code of a run's outcome, or of an error that ended a command."""
    if isinstance(result, BaseException):
        if isinstance(result, UsageError):
            return ExitCode.USAGE_ERROR
        if isinstance(result, OptspecError):
            return ExitCode.STUDY_FAILED
        if isinstance(result, KeyboardInterrupt):
            return ExitCode.INTERRUPTED
        return ExitCode.INTERNAL_ERROR
    return _BY_STATUS[result.status]


EPILOG = """\
exit codes:
  0    done (budget or timeout reached)
  1    the study failed (max_failed reached, a plugin raised, study.db not written)
  2    usage or spec error (nothing ran, nothing written)
  3    internal error in optspec (rerun with --debug for the traceback)
  130  interrupted (results saved)
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command: Callable[[argparse.Namespace], ExitCode] = args.command
    try:
        return int(command(args))
    except OptspecError as exc:
        _say(f"optspec: {exc}" if "\n" not in str(exc) else str(exc))
        return int(exit_code_for(exc))
    except KeyboardInterrupt as exc:
        _say("optspec: interrupted")
        return int(exit_code_for(exc))
    except Exception as exc:  # noqa: BLE001 - a bug: one line, the traceback on request
        if args.debug:
            traceback.print_exc()
        message = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"optspec: internal error: {type(exc).__name__}"
            + (f": {message}" if message else "")
            + ("" if args.debug else " (rerun with --debug for the traceback)"),
            file=sys.stderr,
        )
        return int(exit_code_for(exc))
    finally:
        for stream in (sys.stdout, sys.stderr):
            flush_or_silence(stream)


def _say(message: str) -> None:
    """A message on stderr, if stderr still leads anywhere: a closed pipe (``2>&1 | head -1``)
    must not turn a finished study into a traceback."""
    try:
        print(message, file=sys.stderr)
    except (OSError, ValueError, AttributeError):  # AttributeError: stderr is None
        return
    flush_or_silence(sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optspec",
        allow_abbrev=False,
        description="Run Optuna studies described in TOML.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"optspec {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of an unexpected error (exit code 3)",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    run = commands.add_parser("run", help="run the study a spec describes")
    run.add_argument("spec", metavar="SPEC", type=Path, help="the study spec (study.toml)")
    run.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        type=Path,
        help="directory for study.db and results.json (default: [study] output)",
    )
    _add_set_option(run)
    _add_budget_options(run)
    _add_plugin_option(run)
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a study.db already in the output directory",
    )
    run.add_argument(
        "--dashboard",
        metavar="PORT",
        nargs="?",
        type=_port,
        const=8080,
        help="serve optuna-dashboard over the live study on 127.0.0.1 (default port 8080)",
    )
    run.add_argument(
        "--storage",
        metavar="URL",
        help="run on a shared storage (postgresql://, redis://) that `optspec worker` joins",
    )
    run.add_argument(
        "--serve",
        metavar="[HOST:]PORT",
        help="serve the study over gRPC (127.0.0.1 unless HOST is given; no authentication) "
        "for `optspec worker SPEC --storage grpc://HOST:PORT`",
    )
    _add_quiet_option(run)
    run.set_defaults(command=_run)

    resume = commands.add_parser(
        "resume",
        help="continue a study from its study.db",
        description=(
            "Continue the study in STUDY_DB. It runs the spec stored in STUDY_DB, unless the "
            "spec file recorded for the study exists and differs: then resume stops, and "
            "--spec FILE (run the checked-in spec) or --stored-spec (run the stored one) "
            "decides. In CI, pass --spec: a study.db from a cache never decides what runs."
        ),
    )
    resume.add_argument("study_db", metavar="STUDY_DB", type=Path)
    trusted = resume.add_mutually_exclusive_group()
    trusted.add_argument(
        "--spec",
        metavar="FILE",
        type=Path,
        dest="spec_file",
        help="run FILE's objective, space and plugins (same study name and directions)",
    )
    trusted.add_argument(
        "--stored-spec",
        action="store_true",
        help="run the spec stored in STUDY_DB even if the recorded spec file differs",
    )
    _add_set_option(resume)
    _add_budget_options(resume)
    _add_plugin_option(resume)
    resume.add_argument(
        "--spec-dir",
        metavar="DIR",
        type=Path,
        help="resolve the spec's objective references from DIR",
    )
    _add_quiet_option(resume)
    resume.set_defaults(command=_resume)

    worker = commands.add_parser("worker", help="join a study running on a shared storage")
    worker.add_argument("spec", metavar="SPEC", type=Path)
    worker.add_argument(
        "--storage",
        metavar="URL",
        required=True,
        help="the controller's storage: postgresql://, redis://, or grpc://HOST:PORT (--serve)",
    )
    _add_set_option(worker)
    worker.add_argument("--workers", metavar="W", type=_workers, help='processes, or "auto"')
    worker.add_argument(
        "--devices",
        metavar="LIST",
        type=_devices,
        help='device slots of this machine, one per worker: "0,1" (a device each), or a TOML '
        'array like \'["0,1", "2,3"]\' (several each); replaces [run] devices',
    )
    _add_plugin_option(worker)
    _add_quiet_option(worker, verbose=False)
    worker.set_defaults(command=_worker)

    validate = commands.add_parser(
        "validate",
        help="every check `run` makes before its first trial; no trial runs",
        description=(
            "Check each SPEC as `run` does before its first trial: the spec itself, sampler and "
            "pruner options, the objective (its module is imported, as `pytest --collect-only` "
            "imports test modules), and the plugins (imported and configured). No trial runs "
            "and nothing is written."
        ),
    )
    validate.add_argument("specs", metavar="SPEC", type=Path, nargs="+")
    _add_set_option(validate)
    validate.add_argument(
        "--print",
        action="store_true",
        dest="print_spec",
        help="print the resolved spec, defaults filled in, as TOML",
    )
    validate.set_defaults(command=_validate)

    show = commands.add_parser("show", help="states, best trial or Pareto front, the spec it ran")
    show.add_argument("study_db", metavar="STUDY_DB", type=Path)
    show.add_argument("--json", action="store_true", help="print JSON for machines")
    show.set_defaults(command=_show)

    export = commands.add_parser("export", help="write every trial as CSV or JSON")
    export.add_argument("study_db", metavar="STUDY_DB", type=Path)
    export.add_argument("--format", choices=("csv", "json"), default="csv")
    export.add_argument(
        "-o", "--output", metavar="FILE", type=Path, help="default: standard output"
    )
    export.set_defaults(command=_export)

    report = commands.add_parser(
        "report",
        help="one self-contained HTML page (or a Markdown summary) of a study.db",
        description=(
            "Write a report of STUDY_DB: an HTML page with the optimization history, parameter "
            "importances, parallel coordinates and slices, the Pareto front (several "
            "objectives), the best trial(s), failures by reason and the spec. It has no script "
            "and no external resource, so it opens offline. --format md writes a compact "
            "Markdown summary for CI job summaries."
        ),
    )
    report.add_argument("study_db", metavar="STUDY_DB", type=Path)
    report.add_argument("--format", choices=("html", "md"), default="html")
    report.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="default: report.html (or report.md) next to STUDY_DB; - for standard output",
    )
    report.set_defaults(command=_report_command)

    plugins = commands.add_parser(
        "plugins", help="plugins, their hooks, samplers, pruners, objectives"
    )
    _add_plugin_option(plugins)
    plugins.set_defaults(command=_plugins)

    dashboard = commands.add_parser(
        "dashboard", help="optuna-dashboard for a study.db on 127.0.0.1"
    )
    dashboard.add_argument("study_db", metavar="STUDY_DB", type=Path)
    dashboard.add_argument("--port", type=_port, default=8080)
    dashboard.set_defaults(command=_dashboard)

    schema = commands.add_parser("schema", help="JSON Schema of the spec format, for editors")
    schema.set_defaults(command=_schema)
    # An abbreviation is a silent guess: `resume --spec FILE` must never mean `--spec-dir FILE`.
    for subparser in commands.choices.values():
        subparser.allow_abbrev = False
    return parser


def _add_budget_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--n-trials",
        metavar="N",
        type=_n_trials,
        help="trials the study should hold in all, counting earlier runs",
    )
    parser.add_argument(
        "--timeout",
        metavar="T",
        type=_duration,
        help='wall-clock limit of this invocation: "90s", "10m", "2h" or seconds',
    )
    parser.add_argument("--workers", metavar="W", type=_workers, help='processes, or "auto"')


def _add_set_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        type=_override,
        default=[],
        help="set one spec value: KEY a dotted TOML path (run.n_trials, params.lr.high), "
        "VALUE a TOML value (a bare word is a string); repeatable",
    )


def _add_plugin_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-p",
        dest="plugins",
        metavar="NAME",
        action="append",
        default=[],
        help="load plugin module NAME; -p no:NAME blocks plugin NAME",
    )


def _add_quiet_option(parser: argparse.ArgumentParser, *, verbose: bool = True) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    if verbose:
        group.add_argument(
            "-v", "--verbose", action="store_true", help="also show Optuna's own INFO lines"
        )


def _positive_int(text: str, maximum: int) -> int:
    expected = f"expected an integer from 1 to {maximum}"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{expected}, got {text!r}") from None
    if not 1 <= value <= maximum:
        raise argparse.ArgumentTypeError(f"{expected}, got {value}")
    return value


def _n_trials(text: str) -> int:
    from optspec.spec.tables.run import MAX_TRIALS

    return _positive_int(text, MAX_TRIALS)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {text!r}")
    return value


def _workers(text: str) -> int | str:
    from optspec.spec.tables.run import MAX_WORKERS

    return "auto" if text == "auto" else _positive_int(text, MAX_WORKERS)


def _devices(text: str) -> list[str]:
    from optspec.spec.devices import parse_device_list

    try:
        return parse_device_list(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _override(text: str) -> str:
    from optspec.spec.overrides import parse_override

    try:
        parse_override(text)
    except UsageError as exc:  # argparse names the option itself
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--set ")) from None
    return text


def _duration(text: str) -> float:
    """Seconds; ``--timeout off`` is infinity, so that it can lift a timeout the spec sets."""
    from optspec.spec.durations import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return math.inf if seconds is None else seconds


# -- commands ---------------------------------------------------------------------------------


def _validate(args: argparse.Namespace) -> ExitCode:
    from optspec.errors import SpecError
    from optspec.run.setup import check_spec
    from optspec.spec.dump import spec_to_toml
    from optspec.spec.load import load_spec

    status = ExitCode.OK
    for path in args.specs:
        try:
            spec = load_spec(path, overrides=args.overrides)
            check_spec(spec)
        except SpecError as exc:
            print(exc.with_file(path), file=sys.stderr)
            status = exit_code_for(exc)
            continue
        except UsageError as exc:
            print(exc, file=sys.stderr)
            status = exit_code_for(exc)
            continue
        if args.print_spec:
            print(spec_to_toml(spec), end="")
        else:
            print(f"ok: {path}")
    return status


def _run(args: argparse.Namespace) -> ExitCode:
    _start_worker_server()
    from optspec.run.lifecycle import run_study

    result = run_study(
        args.spec,
        output=args.output,
        n_trials=args.n_trials,
        timeout=args.timeout,
        workers=args.workers,
        plugin_args=args.plugins,
        overwrite=args.overwrite,
        quiet=args.quiet,
        verbose=args.verbose,
        dashboard=args.dashboard,
        storage=args.storage,
        serve=args.serve,
        overrides=args.overrides,
    )
    return _report(result.outcome)


def _resume(args: argparse.Namespace) -> ExitCode:
    _start_worker_server()
    from optspec.run.lifecycle import resume_study

    result = resume_study(
        args.study_db,
        n_trials=args.n_trials,
        timeout=args.timeout,
        workers=args.workers,
        plugin_args=args.plugins,
        spec_dir=args.spec_dir,
        quiet=args.quiet,
        verbose=args.verbose,
        spec_file=args.spec_file,
        stored_spec=args.stored_spec,
        overrides=args.overrides,
    )
    return _report(result.outcome)


def _worker(args: argparse.Namespace) -> ExitCode:
    _start_worker_server()
    from optspec.run.lifecycle import join_study

    outcome = join_study(
        args.spec,
        storage=args.storage,
        workers=args.workers,
        plugin_args=args.plugins,
        quiet=args.quiet,
        devices=args.devices,
        overrides=args.overrides,
    )
    return _report(outcome)


def _start_worker_server() -> None:
    """Before anything else is imported: the worker server's own imports (optuna, the worker
    module) are the longest step before a first trial, and they overlap with ours from here on."""
    from optspec.run.forkserver import start_worker_server

    start_worker_server()


def _report(outcome: Outcome) -> ExitCode:
    """The exit code of a run; why it did not simply finish goes to stderr."""
    if outcome.status != "done":
        _say(f"optspec: {outcome.status}: {outcome.message}")
    return exit_code_for(outcome)


def _show(args: argparse.Namespace) -> ExitCode:
    from optspec.report.results import show

    show(args.study_db, as_json=args.json)
    return ExitCode.OK


def _export(args: argparse.Namespace) -> ExitCode:
    from optspec.report.results import export

    export(args.study_db, fmt=args.format, output=args.output)
    return ExitCode.OK


def _report_command(args: argparse.Namespace) -> ExitCode:
    from optspec.report.render import report

    written = report(args.study_db, fmt=args.format, output=args.output)
    if written is not None:
        print(f"report: {written}")
    return ExitCode.OK


def _plugins(args: argparse.Namespace) -> ExitCode:
    from optspec.plugins.manager import describe_plugins

    sys.path.insert(0, "")  # -p NAME may name a module in the working directory, as for `run`
    print(describe_plugins(args.plugins))
    return ExitCode.OK


def _dashboard(args: argparse.Namespace) -> ExitCode:
    from optspec.report.dashboard import serve_study_db

    serve_study_db(args.study_db, port=args.port)
    return ExitCode.OK


def _schema(args: argparse.Namespace) -> ExitCode:
    import json

    from optspec.spec.schema import spec_json_schema

    print(json.dumps(spec_json_schema(), indent=2))
    return ExitCode.OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
