"""The seam to Optuna's private names: one module, pinned to the releases it was checked against."""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import Any

import optuna
import pytest

from optspec.storage import optuna_compat

PACKAGE = Path(__file__).resolve().parent.parent / "optspec"
COMPAT = PACKAGE / "storage" / "optuna_compat.py"


def test_installed_optuna_is_a_release_the_compat_module_was_checked_against() -> None:
    installed = ".".join(optuna.__version__.split(".")[:2])
    assert installed in optuna_compat.CHECKED_VERSIONS, (
        f"optuna {optuna.__version__} is installed, but optspec/storage/optuna_compat.py was "
        f"checked against {optuna_compat.CHECKED_VERSIONS}: read each private use again"
    )


@functools.cache
def _optuna_private_names() -> frozenset[str]:
    """Every underscore name Optuna defines on its objects: ``self._x = ...`` and ``def _x``."""
    names: set[str] = set()
    for path in Path(optuna.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_bytes())):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                if isinstance(node.value, ast.Name) and node.value.id == "self":
                    names.add(node.attr)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
    return frozenset(name for name in names if name.startswith("_") and not name.endswith("__"))


def _private_optuna_uses(path: Path) -> list[str]:
    """Imports from Optuna's private modules, and reads of Optuna's private names off anything
    but ``self``/``cls`` (optspec's own objects may share a name, like ``self._backend``)."""
    private = _optuna_private_names()
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("optuna"):
            if any(part.startswith("_") for part in node.module.split(".")):  # type: ignore[union-attr]
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: from {node.module}")
        elif isinstance(node, ast.Attribute) and node.attr in private:
            if isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"}:
                continue
            found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: .{node.attr}")
    return found


def test_no_optuna_private_name_is_used_outside_the_compat_module() -> None:
    uses = [
        use
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != COMPAT
        for use in _private_optuna_uses(path)
    ]
    assert uses == [], "move these into optspec/storage/optuna_compat.py"


def test_the_check_finds_a_private_use() -> None:
    # Guards the guard: a reading that returned nothing would make the test above pass always.
    assert _private_optuna_uses(COMPAT)


# -- the batched tickets equal Optuna's own one-by-one trials --------------------------------


def _storage_for(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    from optspec.storage.indexed import IndexedJournalStorage
    from optspec.storage.journal import InProcessJournalBackend
    from optspec.storage.remote import open_storage

    if kind == "journal":  # the controller's own study, as `run --serve` serves it
        return IndexedJournalStorage(InProcessJournalBackend())
    if kind == "sqlite":
        return open_storage(f"sqlite:///{tmp_path / 'tickets.db'}")
    return open_storage(request.getfixturevalue(f"{kind}_url"))


@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgres", "redis"])
def test_batched_waiting_trials_equal_optunas_own_one_by_one(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from optuna.trial import TrialState, create_trial

    storage = _storage_for(kind, request, tmp_path)
    theirs = optuna.create_study(study_name="theirs", storage=storage)
    ours = optuna.create_study(study_name="ours", storage=storage)
    done = theirs.ask()  # a study that already holds a trial: numbering continues from it
    theirs.tell(done, 1.0)
    done = ours.ask()
    ours.tell(done, 1.0)
    # Interleaved: each trial takes the next id of the storage, as it would on a shared one.
    for count in (3, 1, 2):
        for _ in range(count):
            ticket = create_trial(state=TrialState.WAITING)
            storage.create_new_trial(optuna_compat.study_id(theirs), template_trial=ticket)
        optuna_compat.create_waiting_trials(storage, optuna_compat.study_id(ours), count)

    def seen(study: optuna.Study) -> list[tuple[Any, ...]]:
        return [
            (t.number, t.state, t.datetime_start, t.datetime_complete, t.params, t.values,
             t.user_attrs, t.system_attrs, t.intermediate_values)
            for t in study.get_trials()[1:]
        ]  # fmt: skip

    assert seen(ours) == seen(theirs)
    assert [t.state for t in ours.get_trials()[1:]] == [TrialState.WAITING] * 6
    assert [t.number for t in ours.get_trials()] == list(range(7))
    # Ids: each batch's ids are the next ones the storage hands out, in number order.
    ids = [optuna_compat.trial_id(t) for t in ours.get_trials()]
    assert ids == sorted(ids) and len(set(ids)) == 7
    for trial in ours.get_trials():
        number = storage.get_trial_id_from_study_id_trial_number(
            optuna_compat.study_id(ours), trial.number
        )
        assert number == optuna_compat.trial_id(trial)
    # A fresh reader (another host) replays or queries the same trials.
    fresh = _storage_for(kind, request, tmp_path) if kind != "journal" else storage
    again = optuna.load_study(study_name="ours", storage=fresh)
    assert seen(again) == seen(ours)
    assert optuna_compat.count_waiting_trials(storage, optuna_compat.study_id(ours)) == 6
    # And Optuna pops them as its own enqueued trials.
    popped = ours.ask()
    assert popped.number == 1
    assert optuna_compat.count_waiting_trials(storage, optuna_compat.study_id(ours)) == 5


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_the_redis_backend_shares_a_study_with_optunas_own(redis_url: str) -> None:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalRedisBackend

    ours = optuna_compat.RedisBackend(redis_url)
    ours.CHUNK = 3  # several reads per sync
    theirs = JournalRedisBackend(redis_url)
    logs = [{"op_code": 99, "n": n, "text": "é" * n} for n in range(8)]
    ours.append_logs(logs[:5])  # one script for many
    theirs.append_logs(logs[5:7])
    ours.append_logs(logs[7:])
    assert list(ours.read_logs(0)) == list(theirs.read_logs(0)) == logs
    assert list(ours.read_logs(4)) == logs[4:]
    assert list(ours.read_logs(8)) == []
    # A study run by both: each reads every trial the other wrote.
    optspec_side = JournalStorage(optuna_compat.RedisBackend(redis_url, prefix="both"))
    optuna_side = JournalStorage(JournalRedisBackend(redis_url, prefix="both"))
    study = optuna.create_study(study_name="both", storage=optspec_side)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    other = optuna.load_study(study_name="both", storage=optuna_side)
    other.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    mine = optuna.load_study(study_name="both", storage=optspec_side).trials
    assert [(t.number, t.params) for t in mine] == [(t.number, t.params) for t in other.trials]
    assert len(mine) == 5
