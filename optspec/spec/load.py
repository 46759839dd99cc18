"""Reading a spec: file -> TOML -> :class:`~optspec.spec.model.Spec`, every error with its path.

Each table has its own checker in :mod:`optspec.spec.tables`; they share one
:class:`~optspec.spec.tables.checker.Checker`, so all problems in a spec are reported at once,
each as ``file: toml.path: message``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optspec.errors import SpecError, UsageError
from optspec.spec.dump import document_to_toml, spec_to_toml
from optspec.spec.model import SPEC_VERSION, Spec
from optspec.spec.overrides import Override, apply_overrides, as_overrides, header, trace
from optspec.spec.tables.checker import Checker
from optspec.spec.tables.components import check_component, check_pruner, check_sampler_space
from optspec.spec.tables.constraints import check_constraints
from optspec.spec.tables.enqueue import check_enqueue
from optspec.spec.tables.objective import check_objective
from optspec.spec.tables.params import check_params
from optspec.spec.tables.plugins import check_plugin_tables, check_plugins
from optspec.spec.tables.run import check_run
from optspec.spec.tables.study import check_study
from optspec.util import is_int, tomllib

TOP_KEYS = (
    "version", "study", "objective", "params", "sampler", "pruner",
    "constraints", "run", "enqueue", "plugins", "plugin",
)  # fmt: skip


OverridesArg = Sequence[str | Override]


def load_spec(path: str | os.PathLike[str], *, overrides: OverridesArg = ()) -> Spec:
    """Read and validate the spec at ``path``; raise :class:`~optspec.SpecError` listing every
    problem, or :class:`~optspec.UsageError` when the file cannot be read.

    :param overrides: ``"KEY=VALUE"`` strings, as ``--set`` takes them, set before validation.
    """
    return read_spec_file(Path(path), overrides)


def parse_spec(
    text: str,
    *,
    path: str | os.PathLike[str],
    overrides: OverridesArg = (),
    applied: Sequence[str] = (),
) -> Spec:
    """Validate spec ``text`` as if it were the file at ``path`` (which need not exist).

    :param applied: overrides ``text`` already holds (a study's stored spec): listed with the new
        ones in the effective text and in ``Spec.overrides``, not set again.
    """
    return convert_spec_text(text, Path(path), overrides, applied)


def with_overrides(spec: Spec, overrides: OverridesArg) -> Spec:
    """``spec`` with more overrides set, checked as ``--set`` is and recorded in ``spec.text``.

    The spec's own text is read again with them when it still describes ``spec``; a spec built
    or changed in code is written out first (:func:`~optspec.spec.dump.spec_to_toml`).
    """
    if not overrides:
        return spec
    path = spec.path or Path.cwd() / "study.toml"
    text = spec.text
    try:
        same = bool(text) and convert_spec_text(text, path) == spec
    except SpecError:
        same = False
    if not same:
        text = spec_to_toml(spec)
    return convert_spec_text(text, path, overrides, spec.overrides)


def read_spec_file(path: Path, overrides: OverridesArg = ()) -> Spec:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such spec file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, expected a spec file (study.toml)") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=path) from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    return convert_spec_text(text, path, overrides)


def convert_spec_text(
    text: str, path: Path, overrides: OverridesArg = (), applied: Sequence[str] = ()
) -> Spec:
    data = parse_toml(text, path)
    changes = as_overrides(overrides)
    misplaced, created = apply_overrides(data, changes)
    checker = Checker(path, overridden=[change.path for change in changes])
    spec = check_spec(checker, data, text)
    if misplaced or checker.problems:
        file_problems: list[tuple[str, str]] = []
        if changes and checker.problems:  # which problems the file has without the overrides
            check_spec(plain := Checker(path), parse_toml(text, path), text)
            file_problems = plain.problems
        lines = [f"{label}: {message}" for label, message in misplaced]
        lines += trace(checker.problems, changes, created, file_problems)
        raise SpecError(lines, file=path)
    if not changes:
        return spec.evolve(overrides=tuple(applied)) if applied else spec
    recorded = (*applied, *(change.text for change in changes))
    effective = header(path.name, recorded) + document_to_toml(data)
    return spec.evolve(text=effective, overrides=recorded)


def parse_toml(text: str, path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(_describe_toml_error(exc), file=path) from None


def check_spec(c: Checker, data: dict[str, Any], text: str) -> Spec:
    """The whole document, table by table; ``text`` is kept as the spec's own text."""
    c.table(data, "", TOP_KEYS)
    version = c.get(data, "version", "", is_int, "the integer 1", SPEC_VERSION)
    if version != SPEC_VERSION:
        c.add("version", f"unsupported spec version {version}; this optspec reads version 1")
    study = check_study(c, data.get("study", {}))
    params = check_params(c, data.get("params", {}))
    objective = check_objective(c, data.get("objective"), params)
    sampler = check_component(c, data, "sampler", "tpe")
    pruner = check_pruner(c, data, study)
    check_sampler_space(c, sampler, params)
    return Spec(
        version=SPEC_VERSION,
        study=study,
        objective=objective,
        params=params,
        sampler=sampler,
        pruner=pruner,
        constraints=check_constraints(c, data.get("constraints", [])),
        run=check_run(c, data.get("run", {})),
        enqueue=check_enqueue(c, data.get("enqueue", []), params),
        plugins=check_plugins(c, data.get("plugins", {})),
        plugin=check_plugin_tables(c, data.get("plugin", {})),
        path=c.path,
        text=text,
    )


def _describe_toml_error(exc: Exception) -> str:
    message = str(exc)
    match = re.search(r"\(at line (\d+), column (\d+)\)", message)
    if match:
        message = message[: match.start()].strip()
        return f"line {match[1]}, column {match[2]}: invalid TOML: {message}"
    return f"invalid TOML: {message}"
