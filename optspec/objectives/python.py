"""``callable = "pkg.module:attr"`` or ``"path/to/file.py:attr"``: a Python function per trial.

The module is imported with the spec's directory first on sys.path, then the working directory;
a file path is loaded from the file, relative to the spec. The function gets, by the names in its
signature, any declared parameter (``def objective(lr, layers)``), ``trial``, ``params``,
``trial_dir`` (a :class:`pathlib.Path` made for the trial) and the ``args`` entries.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from optspec.errors import SpecError
from optspec.util import did_you_mean

if TYPE_CHECKING:
    import optuna

    from optspec.config import Config
    from optspec.spec.model import Spec

from optspec.objectives import Objective
from optspec.objectives.trial_dirs import TrialDirs

#: Names the objective's signature may use for what optspec passes, besides parameters and
#: ``args`` entries.
PASSED_NAMES = ("trial", "params", "trial_dir")


def python_objective(table: dict[str, Any], spec: Spec, config: Config | None = None) -> Objective:
    """Import the callable ``table["callable"]`` names and check it can be called by name.

    The table's shape was checked with the spec (:mod:`optspec.spec.tables.objective`).
    """
    ref = table["callable"]
    module_name, _, attr = ref.rpartition(":")
    args = table.get("args", {})
    if module_name.endswith(".py"):
        module = _import_file(spec.directory / module_name)
    else:
        module = _import_module(module_name, spec.directory)
    function = _attribute(module, attr, ref)
    declared = tuple(param.name for param in spec.params)
    passed, by_name = _check_signature(function, dict(args), attr, declared)
    output = config.output if config is not None else None
    return PythonObjective(
        function, dict(args), passed, by_name, TrialDirs(output, spec.run.keep_trial_dirs)
    )


class PythonObjective:
    """Calls the user's function with the arguments its signature asks for, by name."""

    def __init__(
        self,
        function: Callable[..., Any],
        args: dict[str, Any],
        passed: tuple[str, ...],
        by_name: tuple[tuple[str, bool], ...] = (),
        trial_dirs: TrialDirs | None = None,
    ):
        self.function = function
        self.args = args
        self.passed = passed  # which of PASSED_NAMES the function takes
        self.by_name = by_name  # (declared parameter it takes, whether it has a default)
        self.trial_dirs = trial_dirs or TrialDirs(None)

    def __call__(self, trial: optuna.Trial, params: dict[str, Any]) -> Any:
        import optuna

        kwargs = dict(self.args)
        for name, has_default in self.by_name:
            if name in params:
                kwargs[name] = params[name]
            elif not has_default:
                kwargs[name] = None  # a conditional parameter switched off in this trial
        if "trial" in self.passed:
            kwargs["trial"] = trial
        if "params" in self.passed:
            kwargs["params"] = params
        if "trial_dir" not in self.passed:
            return self.function(**kwargs)
        trial_dir = kwargs["trial_dir"] = self.trial_dirs.make(trial.number)
        ending = "failed"
        try:
            result = self.function(**kwargs)
            ending = "complete"
            return result
        except optuna.TrialPruned:
            ending = "pruned"
            raise
        finally:
            self.trial_dirs.release(trial_dir, ending)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"PythonObjective({getattr(self.function, '__qualname__', self.function)!r})"


def put_first_on_sys_path(directories: list[str]) -> None:
    """``directories`` first on sys.path, in this order; see also ``run.setup.prepare_sys_path``."""
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
    put_first_on_sys_path(list(dict.fromkeys([str(spec_dir), os.getcwd()])))
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
    put_first_on_sys_path([str(path.parent)])  # so the file can import its sibling modules
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
            hint = did_you_mean(part, names)
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
    function: Callable[..., Any], args: dict[str, Any], attr: str, declared: tuple[str, ...] = ()
) -> tuple[tuple[str, ...], tuple[tuple[str, bool], ...]]:
    """What ``function`` takes by name: which of PASSED_NAMES, and which declared parameters
    (with whether each has a default); SpecError for what it cannot be given."""
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
        elif key in declared:
            continue  # the spec's own check reports it (optspec.spec.tables.objective)
        elif key not in accepted and not takes_any:
            hint = did_you_mean(key, accepted)
            problems.append(
                f"objective.args.{key}: {attr}() takes no parameter {key!r}; {hint}"
                f"its parameters: {', '.join(accepted) or 'none'}"
            )
    for parameter in parameters.values():
        name = parameter.name
        known = name in PASSED_NAMES or name in args or name in declared
        required = parameter.default is parameter.empty
        if parameter.kind is parameter.POSITIONAL_ONLY and (known or required):
            problems.append(
                f"objective.callable: {attr}() takes {name!r} positional-only; "
                "optspec passes arguments by name: drop the / from the signature"
            )
        elif parameter.kind in by_name and name in PASSED_NAMES and name in declared:
            problems.append(
                f"objective.callable: {attr}() takes {name!r}, which is both what optspec "
                f"passes as {name} and the declared params.{name}; rename the parameter"
            )
        elif parameter.kind in by_name and required and not known:
            hint = did_you_mean(name, [*declared, *PASSED_NAMES])
            problems.append(
                f"objective.callable: {attr}() needs {name!r}, which is neither a declared "
                f"parameter ({', '.join(declared) or 'none'}), trial, params, trial_dir nor an "
                f"objective.args entry; {hint}declare it in [params], add it to "
                "objective.args or give it a default"
            )
    if problems:
        raise SpecError(problems)
    passed = tuple(name for name in PASSED_NAMES if name in accepted)
    params = tuple(
        (p.name, p.default is not p.empty)
        for p in parameters.values()
        if p.kind in by_name and p.name in declared and p.name not in PASSED_NAMES
    )
    return passed, params
