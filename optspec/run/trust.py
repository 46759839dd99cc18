"""Which spec ``optspec resume`` runs: a study.db never decides on its own what runs.

A study.db restored from a CI cache or downloaded as an artifact (one a pull request from a fork
wrote, say) carries a spec, commands included. ``resume --spec FILE`` runs FILE's objective,
space and plugins instead, once the study's name and directions match. Without it, when the spec
file recorded for the study exists and says something else than the stored spec, resume stops
and names both ways forward: ``--spec FILE`` (trust the checked-in file) or ``--stored-spec``
(trust study.db).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from optspec.errors import SpecError, UsageError
from optspec.run.study_attrs import OVERRIDES_ATTR, SPEC_ATTR
from optspec.spec.load import load_spec

if TYPE_CHECKING:
    import optuna

    from optspec.spec.model import Spec


def spec_from_file(
    file: str | os.PathLike[str], study: optuna.Study, stored: dict[str, Any], study_db: Path
) -> Spec:
    """``resume --spec FILE``: FILE's spec for ``study``, which must have the same name and
    directions; the study keeps its place next to study.db."""
    path = Path(file)
    spec = _load(path, stored)
    if spec.study.name != study.study_name:
        raise UsageError(
            f"--spec {file}: its study is named {spec.study.name!r}, the study in {study_db} "
            f"is {study.study_name!r}; a spec can only resume a study of the same name"
        )
    directions = [d.name.lower() for d in study.directions]
    if list(spec.study.directions) != directions:
        raise UsageError(
            f"--spec {file}: its directions are {list(spec.study.directions)}, the study in "
            f"{study_db} has {directions}; a spec can only resume a study with the same "
            "directions"
        )
    return spec.evolve(study=attrs.evolve(spec.study, output=study_db.parent))


def refuse_changed_spec_file(spec: Spec, stored: dict[str, Any], study_db: Path) -> None:
    """Stop when the spec file recorded for the study exists and differs from the stored spec.

    ``spec`` is the stored spec, placed where its file was recorded (``spec.path``).
    """
    file = spec.path
    if file is None or not file.is_file():
        return  # nothing checked in to compare with: the stored spec is all there is
    try:
        current = _load(file, stored).text
    except (SpecError, UsageError):
        current = None  # it no longer loads: it differs all the same
    if current is not None and _digest(current) == _digest(stored[SPEC_ATTR]):
        return
    raise UsageError(
        f"{file}, the spec file recorded for the study in {study_db}, differs from the spec "
        "stored in it; a study.db (from a cache or an artifact) does not decide what runs: "
        f"resume with `--spec {file}` to run the checked-in spec, or with `--stored-spec` to "
        "run the one stored in study.db"
    )


def _load(path: Path, stored: dict[str, Any]) -> Spec:
    """The file as the study would run it: with the overrides the stored spec was made with."""
    overrides = [str(item) for item in stored.get(OVERRIDES_ATTR) or ()]
    return load_spec(path, overrides=overrides)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
