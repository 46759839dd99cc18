"""The attributes optspec writes into a study, by name: what other tools may read back.

Study system attributes hold the spec a study ran (``optuna.load_study(...)`` keeps them), so
``optspec resume`` and ``optspec show`` need nothing but study.db. Trial user attributes are
meant for people: optuna-dashboard and ``optspec export`` show them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from optspec.errors import UsageError
from optspec.spec.load import parse_spec

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage

    from optspec.spec.model import Spec

# Study system attributes.
SPEC_ATTR = "optspec:spec"
"""The effective spec's TOML text: the file as it was read or, with ``--set`` overrides (and
``--n-trials``, ``--timeout``, ``--workers``), the overridden document, so ``resume`` continues
with them."""
SPEC_SHA256_ATTR = "optspec:spec_sha256"
"""sha256 of that text: ``optspec worker`` joins only with the same spec."""
OVERRIDES_ATTR = "optspec:overrides"
"""The overrides that text holds on top of the spec file, ``KEY=VALUE`` strings in the order
they were set: the file plus these gives the same text again."""
VERSION_ATTR = "optspec:version"
"""The optspec version that created the study."""
SPEC_DIR_ATTR = "optspec:spec_dir"
"""``{"relative": ..., "absolute": ...}``: the spec's directory, relative to study.db first."""
SPEC_FILE_ATTR = "optspec:spec_file"
"""The spec's file name, for the study name default and relative references."""

# Trial system attributes.
INTERRUPTED_ATTR = "optspec:interrupted"
"""The run was stopped while this trial ran; ``resume`` retries its parameters."""

# Trial user attributes.
FAIL_REASON_ATTR = "fail_reason"
"""Why a FAIL trial failed: the exception, exit status, timeout or signal. Also a trial system
attribute, where Optuna up to 3.x kept the reason, for tools that look there."""
RETRY_OF_ATTR = "retry_of"
"""The number of the interrupted trial whose parameters this trial retries."""


def record_fail_reason(
    storage: BaseStorage, trial_id: int, reason: str, *, interrupted: bool = False
) -> None:
    """Keep why a trial is about to be failed; the caller then sets its state to FAIL."""
    storage.set_trial_user_attr(trial_id, FAIL_REASON_ATTR, reason)
    storage.set_trial_system_attr(trial_id, FAIL_REASON_ATTR, reason)
    if interrupted:
        storage.set_trial_system_attr(trial_id, INTERRUPTED_ATTR, True)


def spec_sha256(spec: Spec) -> str:
    return hashlib.sha256(spec.text.encode()).hexdigest()


def record_spec(study: optuna.Study, spec: Spec, output: Path) -> None:
    """Store the spec in the study, so that study.db alone is enough to resume and show it."""
    from optspec import __version__
    from optspec.storage.optuna_compat import study_storage

    # Optuna 5 dropped Study.set_system_attr; the storage method is the public way left.
    storage = study_storage(study)
    study_id = storage.get_study_id_from_name(study.study_name)
    record_effective_spec(study, spec)
    directory = spec.directory.absolute()
    values: dict[str, Any] = {
        VERSION_ATTR: __version__,
        SPEC_DIR_ATTR: {"relative": os.path.relpath(directory, output), "absolute": str(directory)},
        SPEC_FILE_ATTR: spec.path.name if spec.path else "study.toml",
    }
    for key, value in values.items():
        storage.set_study_system_attr(study_id, key, value)


def record_effective_spec(study: optuna.Study, spec: Spec) -> None:
    """The spec as it runs, overrides included, so that a later resume continues with it."""
    from optspec.storage.optuna_compat import study_storage

    storage = study_storage(study)
    study_id = storage.get_study_id_from_name(study.study_name)
    values: dict[str, Any] = {
        SPEC_ATTR: spec.text,
        SPEC_SHA256_ATTR: spec_sha256(spec),
        OVERRIDES_ATTR: list(spec.overrides),
    }
    for key, value in values.items():
        storage.set_study_system_attr(study_id, key, value)


def _system_attrs(study: optuna.Study) -> dict[str, object]:
    from optspec.storage.optuna_compat import study_id, study_storage

    return study_storage(study).get_study_system_attrs(study_id(study))


def stored_spec(study: optuna.Study, path: Path, spec_dir: str | os.PathLike[str] | None) -> Spec:
    """The spec :func:`record_spec` stored in the study read from ``path`` (its study.db).

    Objective references resolve from ``spec_dir`` if given, else from the spec's directory
    relative to study.db when it exists (a study.db restored into a fresh checkout resumes),
    else from the absolute one.
    """
    values = _system_attrs(study)
    if SPEC_ATTR not in values:
        raise UsageError(
            f"{path}: this study was not made by optspec (no {SPEC_ATTR} attribute); "
            "run it from a spec with `optspec run`"
        )
    if spec_dir is not None:
        directory = Path(spec_dir).absolute()
    else:
        stored = values.get(SPEC_DIR_ATTR) or {}
        assert isinstance(stored, dict)
        relative = path.parent / stored.get("relative", ".")
        absolute = Path(stored.get("absolute", relative))
        directory = relative.resolve() if relative.is_dir() or not absolute.is_dir() else absolute
    name = str(values.get(SPEC_FILE_ATTR, "study.toml"))
    overrides = values.get(OVERRIDES_ATTR)
    applied = [str(item) for item in overrides] if isinstance(overrides, list) else []
    spec = parse_spec(str(values[SPEC_ATTR]), path=directory / name, applied=applied)
    # The study keeps its name and stays where its study.db is.
    return spec.evolve(study=attrs.evolve(spec.study, name=study.study_name, output=path.parent))


PER_INVOCATION_KEYS = frozenset(
    {"run.n_trials", "run.timeout", "run.workers", "run.devices", "run.device_env"}
)
"""Keys a joining worker may set differently: the controller alone holds the budget (its
tickets) and the timeout, and each machine has its own processes and devices."""


def check_same_spec(study: optuna.Study, spec: Spec, url: str) -> None:
    """A joining worker runs the spec the study was started with, not an edited copy."""
    stored = _system_attrs(study)
    expected = stored.get(SPEC_SHA256_ATTR)
    if expected is None or expected == spec_sha256(spec):
        return
    from optspec.spec.compare import differing_keys

    keys = [
        key
        for key in differing_keys(str(stored.get(SPEC_ATTR, "")), spec.text)
        if key not in PER_INVOCATION_KEYS
    ]
    if not keys:
        return  # comments, layout, or what each invocation sets for itself
    shown = ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
    raise UsageError(
        f"{spec.path}: differs from the spec the study {study.study_name!r} on {url} was "
        f"started with, at {shown}; workers must run the same spec (same file contents)"
    )
