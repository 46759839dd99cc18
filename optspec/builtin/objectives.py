"""The built-in objective kinds: ``python`` calls a function, ``command`` runs a program per trial.

Both factories run in the controller, to report a bad ``[objective]`` table before anything
starts, and again in every worker. So they only resolve and check (import the module, read the
signature, find the executable) and leave all per-trial work to the callable they return,
``objective(trial, params)``. What that callable returns goes through
:func:`optspec.evaluate.record_result`, the same for every kind.

A command runs once per trial in ``<output>/trials/<number>``, with ``stdout.log``,
``stderr.log`` and the ``results.jsonl`` it may append to. The directory is removed after a
completed or pruned trial when the command left nothing else there, and kept after a failure,
since its logs are what the user reads next.

optuna is imported inside functions only: listing plugins must stay cheap.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import re
import shlex
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from optspec import hookimpl
from optspec.errors import SpecError
from optspec.evaluate import TrialFailed

if TYPE_CHECKING:
    import optuna

    from optspec.config import Config
    from optspec.spec import Spec

Objective = Callable[["optuna.Trial", dict[str, Any]], Any]


@hookimpl
def register_objectives() -> dict[str, Callable[..., Objective]]:
    return {"python": python_objective, "command": command_objective}


# =================================================================================================
# python: callable = "pkg.module:attr" or "path/to/file.py:attr"
# =================================================================================================

#: Names the objective's signature may use for what optspec passes, besides ``args`` entries.
PASSED_NAMES = ("trial", "params")


def python_objective(table: dict[str, Any], spec: Spec) -> Objective:
    """Import the callable ``table["callable"]`` names and check it can be called by name."""
    ref = table.get("callable")
    module_name, _, attr = ref.rpartition(":") if isinstance(ref, str) else ("", "", "")
    if not module_name or not attr:
        raise SpecError(
            'objective.callable: expected "pkg.module:function" or "path/to/file.py:function", '
            f"got {ref!r}"
        )
    args = table.get("args", {})
    if not isinstance(args, Mapping):
        raise SpecError(f"objective.args: must be a table of keyword arguments, got {args!r}")
    if module_name.endswith(".py"):
        module = _import_file(spec.directory / module_name)
    else:
        module = _import_module(module_name, spec.directory)
    function = _attribute(module, attr, ref)
    passed = _check_signature(function, dict(args), attr)
    return PythonObjective(function, dict(args), passed)


class PythonObjective:
    """Calls the user's function with the arguments its signature asks for, by name."""

    def __init__(self, function: Callable[..., Any], args: dict[str, Any], passed: tuple[str, ...]):
        self.function = function
        self.args = args
        self.passed = passed  # which of PASSED_NAMES the function takes

    def __call__(self, trial: optuna.Trial, params: dict[str, Any]) -> Any:
        available = {"trial": trial, "params": params}
        return self.function(**self.args, **{name: available[name] for name in self.passed})

    def __repr__(self) -> str:
        return f"PythonObjective({getattr(self.function, '__qualname__', self.function)!r})"


def _put_first_on_sys_path(directories: list[str]) -> None:
    # Moved to the front even when already present: the spec's own modules must win over
    # anything of the same name further down sys.path, in the controller and workers alike.
    for directory in reversed(directories):
        if directory in sys.path:
            sys.path.remove(directory)
        sys.path.insert(0, directory)
    # Objective files are often written just before a run (and by tests): without this the
    # import system may answer from a stale directory listing.
    importlib.invalidate_caches()


def _import_module(name: str, spec_dir: Path) -> ModuleType:
    _put_first_on_sys_path(list(dict.fromkeys([str(spec_dir), os.getcwd()])))
    try:
        return importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - a user's module may raise anything at import
        if isinstance(exc, ModuleNotFoundError) and _names_module_or_parent(exc.name, name):
            tried = ", ".join(path or "''" for path in sys.path)
            raise SpecError(
                f"objective.callable: cannot import {name!r}: {exc}; looked in sys.path: {tried}. "
                'Put the module next to the spec, install it, or use "path/to/file.py:function"'
            ) from None
        raise SpecError(
            f"objective.callable: importing {name!r} failed: {_exception_with_place(exc)}"
        ) from None


def _names_module_or_parent(missing: str | None, name: str) -> bool:
    """True when ``No module named X`` is about ``name`` itself rather than one of its imports."""
    return missing is not None and (name == missing or name.startswith(missing + "."))


_NOT_IDENTIFIER = re.compile(r"\W")


def _import_file(path: Path) -> ModuleType:
    path = path.resolve()
    if not path.is_file():
        raise SpecError(
            f"objective.callable: no file {str(path)!r}; paths are relative to the spec"
        )
    # A stable name per file: a second factory call in the same process reuses the module, and
    # pickle finds classes and functions defined there through sys.modules.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    module_name = f"optspec_objective_{_NOT_IDENTIFIER.sub('_', path.stem)}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    _put_first_on_sys_path([str(path.parent)])  # so the file can import its sibling modules
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    assert module_spec is not None and module_spec.loader is not None  # a .py file always has one
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - a user's module may raise anything at import
        del sys.modules[module_name]
        raise SpecError(
            f"objective.callable: loading {str(path)!r} failed: {_exception_with_place(exc)}"
        ) from None
    return module


def _exception_with_place(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, SyntaxError):
        return text  # its message already names the file and line
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        text += f" (at {frames[-1].filename}:{frames[-1].lineno})"
    return text


def _attribute(module: ModuleType, attr: str, ref: str) -> Callable[..., Any]:
    obj: Any = module
    for depth, part in enumerate(attr.split(".")):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            owner = ".".join([module.__name__, *attr.split(".")[:depth]])
            where = f"{owner!r} ({module.__file__})" if depth == 0 else repr(owner)
            names = sorted(name for name in dir(obj) if not name.startswith("_"))
            close = difflib.get_close_matches(part, names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            shown = ", ".join(names[:20]) or "nothing public"
            raise SpecError(
                f"objective.callable: {where} has no attribute {part!r}; {hint}it defines: {shown}"
            ) from None
    if not callable(obj):
        raise SpecError(
            f"objective.callable: {ref!r} is a {type(obj).__name__}, not callable; "
            "name a function (or a class or object with __call__)"
        )
    return obj


def _check_signature(
    function: Callable[..., Any], args: dict[str, Any], attr: str
) -> tuple[str, ...]:
    """Which of ``trial``/``params`` ``function`` takes; SpecError for what it cannot be given."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        raise SpecError(
            f"objective.callable: cannot read the signature of {attr}; "
            "wrap it in a function taking trial and/or params"
        ) from None
    by_name = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    accepted = [p.name for p in parameters.values() if p.kind in by_name]
    problems = []
    for key in args:
        if key in PASSED_NAMES:
            problems.append(
                f"objective.args.{key}: {key!r} is reserved: optspec passes the trial's {key} "
                "under that name; rename the argument"
            )
        elif key not in accepted and not takes_any:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(
                f"objective.args.{key}: {attr}() takes no parameter {key!r}; {hint}"
                f"its parameters: {', '.join(accepted) or 'none'}"
            )
    for parameter in parameters.values():
        known = parameter.name in PASSED_NAMES or parameter.name in args
        required = parameter.default is parameter.empty
        if parameter.kind is parameter.POSITIONAL_ONLY and (known or required):
            problems.append(
                f"objective.callable: {attr}() takes {parameter.name!r} positional-only; "
                "optspec passes arguments by name: drop the / from the signature"
            )
        elif parameter.kind in by_name and required and not known:
            problems.append(
                f"objective.callable: {attr}() needs {parameter.name!r}, which is neither trial, "
                f"params nor an objective.args entry; add {parameter.name} to objective.args "
                "or give it a default"
            )
    if problems:
        raise SpecError(problems)
    return tuple(name for name in PASSED_NAMES if name in accepted)


# =================================================================================================
# command: command = ["python", "train.py", "--lr", "{lr}"]
# =================================================================================================

RESULTS_FILE = "results.jsonl"
STDOUT_FILE = "stdout.log"
STDERR_FILE = "stderr.log"
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
    """Check the argv, cwd and executable of a command objective; return its per-trial runner."""
    argv = table.get("command")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise SpecError(
            'objective.command: must be an argv array like ["python", "train.py", "--lr", "{lr}"]'
            f", got {argv!r}"
        )
    for index, element in enumerate(argv):
        _placeholders(element, f"objective.command[{index}]")  # raises on a malformed one
    cwd = _command_cwd(table.get("cwd"), spec.directory)
    env = {str(k): str(v) for k, v in table.get("env", {}).items()}
    argv = [_executable(argv[0], cwd, {**os.environ, **env}), *argv[1:]]
    one_objective = len(spec.study.objectives) == 1
    return CommandObjective(
        argv=argv,
        cwd=cwd,
        env=env,
        output=config.output if config is not None else None,
        timeout=spec.run.trial_timeout,
        # optuna's report() is single-objective only; a multi-objective command's step lines
        # are not reported.
        reports=one_objective,
        report_metric=spec.study.metrics[0] if spec.study.metrics and one_objective else None,
    )


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
    if not isinstance(cwd, str):
        raise SpecError(f"objective.cwd: must be a directory path (a string), got {cwd!r}")
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
        output: Path | None,
        timeout: float | None,
        reports: bool,
        report_metric: str | None,
    ) -> None:
        self.argv = argv
        self.cwd = cwd
        self.env = env
        self.output = output
        self.timeout = timeout
        self.reports = reports
        self.report_metric = report_metric

    def __repr__(self) -> str:
        return f"CommandObjective({shlex.join(self.argv)!r})"

    def __call__(self, trial: optuna.Trial, params: dict[str, Any]) -> Any:
        import optuna

        trial_dir = self._trial_dir(trial.number)
        results = ResultsFile(trial_dir / RESULTS_FILE)
        failed = True
        try:
            argv = self._argv(params, trial.number, trial_dir)
            env = self._environment(params, trial.number, trial_dir)
            process = self._start(argv, env, trial_dir)
            try:
                self._watch(process, results, trial)
            finally:
                _stop(process)
            result = self._result(process, results, argv, trial_dir)
            failed = False
            return result
        except optuna.TrialPruned:
            failed = False
            raise
        finally:
            _tidy(trial_dir, keep=failed)

    # -- one trial, step by step ------------------------------------------------------------------

    def _trial_dir(self, number: int) -> Path:
        if self.output is None:
            # No run directory (the API or a test): one temporary directory per objective.
            self.output = Path(tempfile.mkdtemp(prefix="optspec-command-"))
        trial_dir = self.output / "trials" / str(number)
        trial_dir.mkdir(parents=True, exist_ok=True)
        (trial_dir / RESULTS_FILE).unlink(missing_ok=True)  # never read an earlier run's lines
        return trial_dir

    def _argv(self, params: dict[str, Any], number: int, trial_dir: Path) -> list[str]:
        values = {
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
                    start_new_session=True,
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
            if not _is_int(step) or step < 0:
                raise TrialFailed(f"{RESULTS_FILE}: step must be an integer >= 0, got {record}")
            if self.reports:
                steps.append((step, self._intermediate_value(record)))
        return steps

    def _intermediate_value(self, record: dict[str, Any]) -> float:
        if self.report_metric is not None:
            if not _is_number(record.get(self.report_metric)):
                raise TrialFailed(
                    f"{RESULTS_FILE}: step line {json.dumps(record)} has no number "
                    f"{self.report_metric!r}, the metric of the first objective"
                )
            return float(record[self.report_metric])
        numbers = [key for key, value in record.items() if key != "step" and _is_number(value)]
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


def _leader_exited(process: subprocess.Popen) -> bool:
    """Whether the command's own process exited, without reaping it where the OS allows.

    Unreaped, its zombie keeps the process group id reserved, so signalling what is left of the
    group afterwards cannot hit an unrelated process that got the id.
    """
    if process.returncode is not None:
        return True
    if hasattr(os, "waitid"):
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        return os.waitid(os.P_PID, process.pid, flags) is not None
    return process.poll() is not None


def _stop(process: subprocess.Popen, grace: float = GRACE_SECONDS) -> None:
    """End the command's process group: SIGTERM, SIGKILL after ``grace``; reap the command.

    Also called once the command exited by itself, to end children it left running.
    """
    if not _leader_exited(process):
        _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while not _leader_exited(process) and time.monotonic() < deadline:
            time.sleep(0.01)
    if process.returncode is None:  # not reaped yet: the group id is still ours
        _signal_group(process, signal.SIGKILL)
    process.wait()


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is already gone
        os.killpg(process.pid, signum)


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
        if isinstance(value, dict) or _is_number(value):
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


def _tidy(trial_dir: Path, *, keep: bool) -> None:
    """Remove the trial directory if the command left nothing there besides optspec's files.

    A failed trial keeps it: its logs are what a user reads next.
    """
    if keep and any(trial_dir.iterdir()):
        return
    ours = {RESULTS_FILE, STDOUT_FILE, STDERR_FILE}
    if all(entry.name in ours for entry in trial_dir.iterdir()):
        shutil.rmtree(trial_dir, ignore_errors=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
