"""Failed trials grouped by reason: for the end-of-run summary, ``optspec show`` and the report.

Reasons of one cause often differ only in the numbers they quote (``x is 3.2``, ``x is 4.1``,
``exit status 1`` at another line), so trials are grouped by their reason's first line with
every number blanked out; each group shows one real reason and an example trial.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from attrs import frozen

from optspec.run.study_attrs import FAIL_REASON_ATTR

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

NO_REASON = "no reason recorded"
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


@frozen
class FailureGroup:
    reason: str
    """The reason of the example trial, as it was recorded."""
    count: int
    trials: tuple[int, ...]
    """The numbers of every trial in the group, in order; the first is the example."""

    @property
    def example(self) -> int:
        return self.trials[0]


def fail_reason(trial: FrozenTrial) -> str:
    reason = trial.user_attrs.get(FAIL_REASON_ATTR) or trial.system_attrs.get(FAIL_REASON_ATTR)
    return str(reason) if reason else NO_REASON


def failures_by_reason(trials: Iterable[FrozenTrial]) -> list[FailureGroup]:
    """The FAIL trials' reasons, most frequent first (ties: the earliest example first)."""
    from optuna.trial import TrialState

    groups: dict[str, list[tuple[int, str]]] = {}
    for trial in trials:
        if trial.state != TrialState.FAIL:
            continue
        reason = fail_reason(trial)
        key = _NUMBER.sub("#", reason.splitlines()[0] if reason else "")
        groups.setdefault(key, []).append((trial.number, reason))
    ordered = sorted(groups.values(), key=lambda members: (-len(members), members[0][0]))
    return [
        FailureGroup(
            reason=members[0][1],
            count=len(members),
            trials=tuple(number for number, _ in members),
        )
        for members in ordered
    ]
