"""``command = ["{python}", "train.py", "--lr", "{lr}"]``: a program per trial, never a shell.

A command runs once per trial with its trial directory ``<output>/trials/<number>``, which holds
``stdout.log``, ``stderr.log`` and the ``results.jsonl`` it may append to. What remains of the
directory afterwards is ``[run] keep_trial_dirs``'s business (:mod:`optspec.objectives.trial_dirs`);
by default it is removed after a completed or pruned trial when the command left nothing else
there, and kept after a failure, since its logs are what the user reads next.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import string
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optspec import platform
from optspec.errors import SpecError
from optspec.objectives.results import TrialFailed
from optspec.objectives.trial_dirs import RESULTS_FILE, STDERR_FILE, STDOUT_FILE, TrialDirs
from optspec.util import is_int, is_number

if TYPE_CHECKING:
    import optuna

    from optspec.config import Config
    from optspec.spec.model import Spec

from optspec.objectives import Objective

#: How often a running command's results file is read: quick enough for pruning to bite early,
#: rare enough to cost nothing next to a real trial.
POLL_SECONDS = 0.03
#: Time a command gets to exit after SIGTERM before its process group gets SIGKILL.
GRACE_SECONDS = 2.0
STDERR_TAIL_LINES = 20
STDERR_TAIL_CHARS = 2000
#: How much of the end of stdout is searched for a result line.
STDOUT_TAIL_BYTES = 1 << 20


def command_objective(table: dict[str, Any], spec: Spec, config: Config | None = None) -> Objective:
    """Resolve the cwd and executable of a command objective; return its per-trial runner.

    The table's shape was checked with the spec (:mod:`optspec.spec.tables.objective`).
    """
    argv = table["command"]
    cwd = _command_cwd(table.get("cwd"), spec.directory)
    env = {str(k): str(v) for k, v in table.get("env", {}).items()}
    argv = [_executable(argv[0], cwd, {**os.environ, **env}), *argv[1:]]
    one_objective = len(spec.study.objectives) == 1
    worker = config.worker_index if config is not None else None
    device = config.device if config is not None else None
    return CommandObjective(
        argv=argv,
        cwd=cwd,
        env={**env, **worker_environment(spec, worker, device)},
        trial_dirs=TrialDirs(
            config.output if config is not None else None, spec.run.keep_trial_dirs
        ),
        slot={"worker": 0 if worker is None else worker, "device": device or ""},
        timeout=spec.run.trial_timeout,
        # optuna's report() is single-objective only; a multi-objective command's step lines
        # are not reported.
        reports=one_objective,
        report_metric=spec.study.metrics[0] if spec.study.metrics and one_objective else None,
    )


def worker_environment(spec: Spec, worker: int | None, device: str | None) -> dict[str, str]:
    """``OPTSPEC_WORKER`` and, with devices, ``OPTSPEC_DEVICE`` and ``[run] device_env``.

    The worker process sets them in its own environment; a command gets them explicitly too,
    so that ``[objective] env`` cannot hand it another worker's device by accident.
    """
    if worker is None:
        return {}
    env = {"OPTSPEC_WORKER": str(worker)}
    if device is not None:
        env |= {"OPTSPEC_DEVICE": device, spec.run.device_env: device}
    return env


def _placeholders(element: str, path: str) -> list[str]:
    """Names ``element`` formats in (``{lr}`` -> ``lr``; ``{lr:.3g}`` -> ``lr``)."""
    try:
        fields = [
            field for _, field, _, _ in string.Formatter().parse(element) if field is not None
        ]
    except ValueError as exc:
        raise SpecError(f"{path}: {exc}; write {{{{ and }}}} for literal braces") from None
    return [re.split(r"[.\[]", field, maxsplit=1)[0] for field in fields]


def _command_cwd(cwd: Any, spec_dir: Path) -> Path:
    if cwd is None:
        return spec_dir
    path = (spec_dir / cwd).resolve()
    if not path.is_dir():
        raise SpecError(f"objective.cwd: no directory {str(path)!r} (relative to the spec)")
    return path


def _executable(argv0: str, cwd: Path, env: Mapping[str, str]) -> str:
    """``argv0`` once it is known to run, resolved to the file in ``cwd`` when it names one."""
    if _placeholders(argv0, "objective.command[0]"):
        return argv0  # only known per trial; a failure to start is then that trial's FAIL
    name = argv0.format()  # just the {{ }} escapes
    if os.sep in name or (os.altsep and os.altsep in name):
        path = cwd / name  # the child changes to cwd before exec, so this is what it will run
        if not path.is_file():
            raise SpecError(f"objective.command[0]: no file {name!r} in {cwd} (the command's cwd)")
        if not os.access(path, os.X_OK):
            raise SpecError(
                f"objective.command[0]: {str(path)!r} is not executable; chmod +x it, or run it "
                f'through its interpreter: ["python", {name!r}, ...]'
            )
        return argv0
    if shutil.which(name, path=env.get("PATH")):
        return argv0
    local = cwd / name
    if local.is_file() and os.access(local, os.X_OK):
        # exec searches only PATH for a bare name; a file of that name in cwd is what was meant.
        return str(local).replace("{", "{{").replace("}", "}}")
    raise SpecError(
        f"objective.command[0]: {name!r} is neither on PATH nor an executable file in {cwd}; "
        f"give its full path, or a path relative to the command's cwd like './{name}'"
    )


class CommandObjective:
    """Runs the command for one trial: start, watch the results file, stop, read the result.

    The process runs in its own session: the controller owns Ctrl-C, and a stopped trial takes
    every process the command started with it (its whole process group). Its output goes to
    files in the trial directory, which cannot deadlock the way an unread pipe can.
    """

    def __init__(
        self,
        *,
        argv: list[str],
        cwd: Path,
        env: dict[str, str],
        trial_dirs: TrialDirs,
        slot: dict[str, Any],
        timeout: float | None,
        reports: bool,
        report_metric: str | None,
    ) -> None:
        self.argv = argv
        self.cwd = cwd
        self.env = env
        self.trial_dirs = trial_dirs
        self.slot = slot  # {worker} and {device}
        self.timeout = timeout
        self.reports = reports
        self.report_metric = report_metric

    def __repr__(self) -> str:
        return f"CommandObjective({shlex.join(self.argv)!r})"

    def __call__(self, trial: optuna.Trial, params: dict[str, Any]) -> Any:
        import optuna

        trial_dir = self.trial_dirs.make(trial.number)
        (trial_dir / RESULTS_FILE).unlink(missing_ok=True)  # never read an earlier run's lines
        results = ResultsFile(trial_dir / RESULTS_FILE)
        ending = "failed"
        try:
            argv = self._argv(params, trial.number, trial_dir)
            env = self._environment(params, trial.number, trial_dir)
            process = self._start(argv, env, trial_dir)
            try:
                self._watch(process, results, trial)
            finally:
                _stop(process)
            result = self._result(process, results, argv, trial_dir)
            ending = "complete"
            return result
        except optuna.TrialPruned:
            ending = "pruned"
            raise
        finally:
            self.trial_dirs.release(trial_dir, ending)  # type: ignore[arg-type]

    # -- one trial, step by step ------------------------------------------------------------------

    def _argv(self, params: dict[str, Any], number: int, trial_dir: Path) -> list[str]:
        values = {
            # A spec that declared its own `device` parameter before slots existed keeps it.
            **self.slot,
            **params,
            "trial_number": number,
            "trial_dir": str(trial_dir),
            "python": sys.executable,
        }
        argv = []
        for index, element in enumerate(self.argv):
            path = f"objective.command[{index}]"
            for name in _placeholders(element, path):
                if name not in values:
                    raise TrialFailed(
                        f"{path}: placeholder {{{name}}} has no value in this trial "
                        f"(params.{name} is not suggested while its `when` condition is false); "
                        "pass it through OPTSPEC_PARAMS instead, which holds only present params"
                    )
            try:
                argv.append(element.format(**values))  # one element stays one element: no shell
            except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
                raise TrialFailed(f"{path}: cannot format {element!r}: {exc}") from None
        return argv

    def _environment(self, params: dict[str, Any], number: int, trial_dir: Path) -> dict[str, str]:
        return {
            **os.environ,
            **self.env,
            "OPTSPEC_PARAMS": json.dumps(params, default=str),
            "OPTSPEC_TRIAL_NUMBER": str(number),
            "OPTSPEC_TRIAL_DIR": str(trial_dir),
            "OPTSPEC_RESULTS": str(trial_dir / RESULTS_FILE),
        }

    def _start(self, argv: list[str], env: dict[str, str], trial_dir: Path) -> subprocess.Popen:
        with (
            open(trial_dir / STDOUT_FILE, "wb") as stdout,
            open(trial_dir / STDERR_FILE, "wb") as stderr,
        ):
            try:
                return subprocess.Popen(
                    argv,
                    cwd=self.cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                    **platform.new_process_group(),
                )
            except OSError as exc:
                raise TrialFailed(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from None

    def _watch(self, process: subprocess.Popen, results: ResultsFile, trial: optuna.Trial) -> None:
        """Until the command exits: report its steps, prune it, or stop it at trial_timeout."""
        import optuna

        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while not _leader_exited(process):
            for step, value in self._steps(results.read()):
                trial.report(value, step)
                if trial.should_prune():
                    _stop(process)
                    raise optuna.TrialPruned(f"pruned at step {step}")
            if deadline is not None and time.monotonic() > deadline:
                _stop(process)
                raise TrialFailed(
                    f"trial_timeout of {self.timeout:g}s exceeded; stopped the command "
                    f"{shlex.join(process.args)}"  # type: ignore[arg-type]
                )
            time.sleep(POLL_SECONDS)
        # Steps written just before exiting are still recorded, though too late to prune.
        for step, value in self._steps(results.read(to_end=True)):
            trial.report(value, step)

    def _steps(self, records: list[dict[str, Any]]) -> list[tuple[int, float]]:
        steps = []
        for record in records:
            step = record["step"]
            if not is_int(step) or step < 0:
                raise TrialFailed(f"{RESULTS_FILE}: step must be an integer >= 0, got {record}")
            if self.reports:
                steps.append((step, self._intermediate_value(record)))
        return steps

    def _intermediate_value(self, record: dict[str, Any]) -> float:
        if self.report_metric is not None:
            if not is_number(record.get(self.report_metric)):
                raise TrialFailed(
                    f"{RESULTS_FILE}: step line {json.dumps(record)} has no number "
                    f"{self.report_metric!r}, the metric of the first objective"
                )
            return float(record[self.report_metric])
        numbers = [key for key, value in record.items() if key != "step" and is_number(value)]
        if len(numbers) != 1:
            raise TrialFailed(
                f"{RESULTS_FILE}: step line {json.dumps(record)} needs exactly one number besides "
                '"step" to report; or add [[study.objectives]] to say which metric it is'
            )
        return float(record[numbers[0]])

    def _result(
        self,
        process: subprocess.Popen,
        results: ResultsFile,
        argv: list[str],
        trial_dir: Path,
    ) -> Any:
        if process.returncode != 0:
            raise TrialFailed(
                f"command {shlex.join(argv)} {_exit_status(process.returncode)}"
                f"{_stderr_tail(trial_dir / STDERR_FILE)}\n(output kept in {trial_dir})"
            )
        if results.final:
            return results.final
        value = _last_stdout_value(trial_dir / STDOUT_FILE)
        if value is None:
            raise TrialFailed(
                f"command {shlex.join(argv)} gave no result: write a JSON line without "
                '"step" to $OPTSPEC_RESULTS, or print a JSON object or a number as the last line '
                f"of its output (output kept in {trial_dir})"
            )
        return value


class ResultsFile:
    """The JSON lines a command appends to ``OPTSPEC_RESULTS``, read as they arrive.

    Lines with ``"step"`` are intermediate values, handed out once each; the others are final
    metrics, merged in order into :attr:`final`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.line_number = 0
        self.final: dict[str, Any] = {}

    def read(self, *, to_end: bool = False) -> list[dict[str, Any]]:
        """The step lines appended since the last read; a line still being written waits for
        its newline unless ``to_end`` (the command has exited)."""
        try:
            with open(self.path, "rb") as file:
                file.seek(self.offset)
                data = file.read()
        except FileNotFoundError:
            return []
        if not to_end:
            data = data[: data.rfind(b"\n") + 1]
        self.offset += len(data)
        steps = []
        for raw in data.splitlines():
            self.line_number += 1
            record = self._parse(raw)
            if record is None:
                continue
            if "step" in record:
                steps.append(record)
            else:
                self.final.update(record)
        return steps

    def _parse(self, raw: bytes) -> dict[str, Any] | None:
        if not raw.strip():
            return None
        try:
            record = json.loads(raw)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            shown = raw.decode(errors="replace")[:200]
            raise TrialFailed(
                f"{RESULTS_FILE} line {self.line_number} is not a JSON object: {shown!r}"
            )
        return record


# -- process handling -----------------------------------------------------------------------------


_leader_exited = platform.leader_exited


def _stop(process: subprocess.Popen, grace: float = GRACE_SECONDS) -> None:
    """End the command and what it started: SIGTERM, SIGKILL after ``grace``; reap the command.

    Also called once the command exited by itself, to end children it left running.
    """
    if not _leader_exited(process):
        platform.end_process_tree(process, force=False)
        deadline = time.monotonic() + grace
        while not _leader_exited(process) and time.monotonic() < deadline:
            time.sleep(0.01)
    if process.returncode is None:  # not reaped yet: the group id is still ours
        platform.end_process_tree(process, force=True)
    process.wait()


def _exit_status(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def _stderr_tail(path: Path) -> str:
    text = _read_tail(path, STDERR_TAIL_CHARS * 4).decode(errors="replace")
    tail = "\n".join(text.rstrip().splitlines()[-STDERR_TAIL_LINES:])[-STDERR_TAIL_CHARS:]
    return f"; stderr:\n{tail}" if tail.strip() else "; no stderr output"


def _last_stdout_value(path: Path) -> dict[str, Any] | float | None:
    """The last line of stdout that is a JSON object or a number."""
    lines = _read_tail(path, STDOUT_TAIL_BYTES).decode(errors="replace").splitlines()
    for line in reversed(lines):
        line = line.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except ValueError:
            value = _python_float(line)  # print(float("nan")) writes nan, which JSON does not
        if isinstance(value, dict) or is_number(value):
            return value
    return None


def _python_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _read_tail(path: Path, size: int) -> bytes:
    try:
        with open(path, "rb") as file:
            file.seek(max(0, path.stat().st_size - size))
            return file.read()
    except FileNotFoundError:
        return b""
