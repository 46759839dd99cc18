"""The attributes optspec writes into a study, by name: what other tools may read back.

Study system attributes hold the spec a study ran (``optuna.load_study(...)`` keeps them), so
``optspec resume`` and ``optspec show`` need nothing but study.db. Trial user attributes are
meant for people: optuna-dashboard and ``optspec export`` show them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

# Study system attributes.
SPEC_ATTR = "optspec:spec"
"""The spec's TOML text, as it was read."""
SPEC_SHA256_ATTR = "optspec:spec_sha256"
"""sha256 of that text: ``optspec worker`` joins only with the same spec."""
VERSION_ATTR = "optspec:version"
"""The optspec version that created the study."""
SPEC_DIR_ATTR = "optspec:spec_dir"
"""``{"relative": ..., "absolute": ...}``: the spec's directory, relative to study.db first."""
SPEC_FILE_ATTR = "optspec:spec_file"
"""The spec's file name, for the study name default and relative references."""
OVERRIDES_ATTR = "optspec:overrides"
"""The ``--set KEY=VALUE`` overrides applied to the spec file to make the stored spec."""

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
