"""Journals, random studies and trial comparisons shared by the storage tests.

``study_in_journal`` is a hypothesis strategy: one study built call by call through a real
JournalStorage, as workers would, in every trial state.
"""

from __future__ import annotations

import json
import math
from typing import Any

import optuna
from hypothesis import strategies as st
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages import JournalStorage
from optuna.storages.journal import BaseJournalBackend
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState


class ListBackend(BaseJournalBackend):
    """A journal in a list. Logs go through JSON, as through a real backend's codec, so no
    object is shared between what was appended and what is read back."""

    def __init__(self) -> None:
        self._logs: list[dict[str, Any]] = []

    def read_logs(self, log_number_from: int) -> list[dict[str, Any]]:
        return self._logs[log_number_from:]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        self._logs.extend(json.loads(json.dumps(log)) for log in logs)


# --------------------------------------------------------------------------------------------
# Comparing trials


_NAN = "<nan>"


def comparable(trial: FrozenTrial, *, with_id: bool = True) -> dict[str, Any]:
    """A trial's fields, NaN made comparable (nan != nan would fail any equal trials)."""
    fields = dict(trial.__dict__)
    fields["intermediate_values"] = {
        step: _NAN if math.isnan(v) else v for step, v in trial.intermediate_values.items()
    }
    if not with_id:
        del fields["_trial_id"]
    return fields


def assert_same_trials(
    actual: list[FrozenTrial], expected: list[FrozenTrial], *, with_id: bool = True
) -> None:
    assert [comparable(t, with_id=with_id) for t in actual] == [
        comparable(t, with_id=with_id) for t in expected
    ]


# --------------------------------------------------------------------------------------------
# Random studies


def _categorical_key(choice: Any) -> tuple[str, Any]:
    # Choices Optuna itself cannot tell apart ([True, 1], [1, 1.0], [0.0, -0.0]) share a key.
    if isinstance(choice, (bool, int, float)):
        return ("number", float(choice))
    return (type(choice).__name__, choice)


finite_floats = st.floats(allow_nan=False, allow_infinity=False, width=64)
categorical_choices = st.lists(
    st.one_of(
        st.none(), st.booleans(), st.integers(-(2**40), 2**40), finite_floats, st.text(max_size=4)
    ),
    min_size=1,
    max_size=5,
    unique_by=_categorical_key,
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), finite_floats, st.text(max_size=6)),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=6,
)
attrs = st.dictionaries(st.text(max_size=6), json_values, max_size=3)
values_with_inf = st.one_of(finite_floats, st.sampled_from([math.inf, -math.inf]))
intermediate = st.one_of(values_with_inf, st.just(math.nan))


@st.composite
def distributions(draw: st.DrawFn) -> BaseDistribution:
    kind = draw(st.sampled_from(["float", "float_log", "float_step", "int", "int_log", "int_step"]))
    if kind == "float":
        low = draw(st.floats(-1e6, 1e6))
        return FloatDistribution(low, low + draw(st.floats(0, 1e6)))
    if kind == "float_log":
        low = draw(st.floats(1e-8, 1e3))
        return FloatDistribution(low, low * draw(st.floats(1, 1e3)), log=True)
    if kind == "float_step":
        low, step = draw(st.integers(-100, 100)) / 4, draw(st.sampled_from([0.25, 0.5, 3.0]))
        return FloatDistribution(low, low + step * draw(st.integers(0, 20)), step=step)
    if kind == "int":
        low = draw(st.integers(-(10**9), 10**9))
        return IntDistribution(low, low + draw(st.integers(0, 10**6)))
    if kind == "int_log":
        low = draw(st.integers(1, 1000))
        return IntDistribution(low, low * draw(st.integers(1, 1000)), log=True)
    low, step = draw(st.integers(-100, 100)), draw(st.integers(1, 7))
    return IntDistribution(low, low + step * draw(st.integers(0, 20)), step=step)


def param_value(draw: st.DrawFn, distribution: BaseDistribution) -> Any:
    if isinstance(distribution, CategoricalDistribution):
        return draw(st.sampled_from(distribution.choices))
    assert isinstance(distribution, (FloatDistribution, IntDistribution))
    low, high, step = distribution.low, distribution.high, distribution.step
    if step is not None:
        value = low + step * draw(st.integers(0, round((high - low) / step)))
        return int(value) if isinstance(distribution, IntDistribution) else value
    if isinstance(distribution, IntDistribution):
        return draw(st.integers(low, high))
    return draw(st.floats(low, high))


@st.composite
def study_in_journal(draw: st.DrawFn) -> tuple[ListBackend, str]:
    """A journal holding one study built call by call, as workers would, in every trial state."""
    backend = ListBackend()
    storage = JournalStorage(backend)
    name = draw(st.text(min_size=1, max_size=10))
    directions = draw(
        st.lists(
            st.sampled_from([StudyDirection.MINIMIZE, StudyDirection.MAXIMIZE]),
            min_size=1,
            max_size=3,
        )
    )
    study_id = storage.create_new_study(directions, name)
    for key, value in draw(attrs).items():
        storage.set_study_user_attr(study_id, key, value)
    for key, value in draw(attrs).items():
        storage.set_study_system_attr(study_id, key, value)

    space = draw(
        st.dictionaries(
            st.text(min_size=1, max_size=5),
            st.one_of(distributions(), categorical_choices.map(CategoricalDistribution)),
            max_size=4,
        )
    )
    study = optuna.load_study(study_name=name, storage=storage)
    states = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING]
    for _ in range(draw(st.integers(0, 8))):
        if draw(st.integers(0, 5)) == 0:
            # Enqueued trials are WAITING: no start time, fixed params in a system attr.
            names = draw(st.lists(st.sampled_from(sorted(space)), unique=True)) if space else []
            study.enqueue_trial({n: param_value(draw, space[n]) for n in names})
            continue
        trial_id = storage.create_new_trial(study_id)
        names = draw(st.permutations(sorted(space)))[: draw(st.integers(0, len(space)))]
        for param in names:
            distribution = space[param]
            internal = distribution.to_internal_repr(param_value(draw, distribution))
            storage.set_trial_param(trial_id, param, internal, distribution)
        for step, value in draw(
            st.dictionaries(st.integers(0, 10**6), intermediate, max_size=3)
        ).items():
            storage.set_trial_intermediate_value(trial_id, step, value)
        for key, value in draw(attrs).items():
            storage.set_trial_user_attr(trial_id, key, value)
        for key, value in draw(attrs).items():
            storage.set_trial_system_attr(trial_id, key, value)
        state = draw(st.sampled_from(states))
        if state == TrialState.RUNNING:
            continue
        values = None
        if state == TrialState.COMPLETE or (state == TrialState.PRUNED and draw(st.booleans())):
            values = draw(
                st.lists(values_with_inf, min_size=len(directions), max_size=len(directions))
            )
        storage.set_trial_state_values(trial_id, state, values)
    return backend, name
