"""A study's lifecycle: spec -> plugins -> journal -> study -> workers -> on_finish.

:func:`run_study` starts a study from a spec, :func:`resume_study` continues one from its study.db,
:func:`join_study` adds workers to a study another controller runs on a shared storage. Run and
resume check everything a user can get wrong (spec, plugins, sampler options, the output
directory) before writing anything, run the :class:`~optspec.run.controller.Controller`, and always
end with ``on_finish`` (:mod:`optspec.run.finish`), where the built-in ``sqlite`` plugin writes
study.db.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from attrs import field, frozen

from optspec.config import Config
from optspec.errors import OptspecError, StudyFailed, UsageError
from optspec.outcome import Outcome, RunResult
from optspec.run import trust
from optspec.run.dirlock import output_locked
from optspec.run.finish import checkpointer, finish
from optspec.run.forkserver import start_worker_server
from optspec.run.setup import pickle_plugins, prepare_controller
from optspec.run.study_attrs import (
    INTERRUPTED_ATTR,
    RETRY_OF_ATTR,
    check_same_spec,
    record_effective_spec,
    record_fail_reason,
    record_spec,
    stored_spec,
)
from optspec.spec.load import load_spec, parse_spec, with_overrides
from optspec.spec.model import Spec
from optspec.spec.overrides import Override, shorthand_overrides

if TYPE_CHECKING:
    import optuna

    from optspec.plugins.manager import PluginManager


def _optional_tuple(value: Iterable[str] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


@frozen(kw_only=True)
class RunOptions:
    """What the command line (or an API caller) adds to a spec for one invocation.

    :ivar output: directory for study.db and results.json (``run``; default ``[study] output``).
    :ivar n_trials: the study's new total, earlier runs included (``--n-trials``).
    :ivar timeout: wall-clock limit of this invocation in seconds; ``math.inf`` lifts the spec's.
    :ivar workers: worker processes, or ``"auto"``.
    :ivar plugin_args: ``-p NAME`` / ``-p no:NAME`` values.
    :ivar plugins: plugin objects registered after all others. Every worker registers them too,
        so they must pickle: modules (sent by name) or instances of importable classes.
    :ivar overwrite: ``run`` replaces a study.db already in the output directory.
    :ivar quiet: no progress output.
    :ivar verbose: Optuna's INFO lines too (``-v``).
    :ivar dashboard: serve optuna-dashboard over the live study on 127.0.0.1 at this port.
    :ivar storage: run on this shared storage URL instead of the in-memory journal, so that
        ``optspec worker`` processes on other machines can join; study.db is written all the same.
    :ivar serve: ``"[HOST:]PORT"``: serve the study over Optuna's gRPC proxy there (127.0.0.1
        unless a host is given), for ``optspec worker SPEC --storage grpc://HOST:PORT``.
    :ivar spec_dir: ``resume`` resolves the spec's objective references from this directory.
    :ivar spec_file: ``resume --spec FILE``: run this spec file instead of the stored spec (same
        study name and directions); it becomes the study's recorded spec.
    :ivar stored_spec: ``resume --stored-spec``: run the stored spec even when the spec file
        recorded for the study differs from it. Without either, such a difference is a
        UsageError naming both ways.
    :ivar devices: ``worker --devices``: this machine's device slots, one per worker, instead of
        the spec's ``[run] devices``.
    :ivar overrides: ``--set KEY=VALUE`` texts, set on the spec before it is checked. With them,
        ``n_trials``, ``timeout`` and ``workers`` are recorded in the study's spec (``resume``
        continues with them), except for ``join_study``, where ``workers`` is this machine's.
    """

    output: str | os.PathLike[str] | None = None
    n_trials: int | None = None
    timeout: float | None = None
    workers: int | str | None = None
    plugin_args: tuple[str, ...] = field(default=(), converter=tuple)
    plugins: tuple[object, ...] = field(default=(), converter=tuple)
    overwrite: bool = False
    quiet: bool = False
    verbose: bool = False
    dashboard: int | None = None
    storage: str | None = None
    serve: str | None = None
    spec_dir: str | os.PathLike[str] | None = None
    spec_file: str | os.PathLike[str] | None = None
    stored_spec: bool = False
    devices: tuple[str, ...] | None = field(default=None, converter=_optional_tuple)
    overrides: tuple[str, ...] = field(default=(), converter=tuple)

    def all_overrides(self) -> list[str | Override]:
        """``--set`` and the shorthands ``--n-trials``, ``--timeout``, ``--workers``, in order."""
        shorthands = shorthand_overrides(
            n_trials=self.n_trials, timeout=self.timeout, workers=self.workers
        )
        return [*self.overrides, *shorthands]

    def with_budget(self, spec: Spec) -> Spec:
        """``spec`` with ``--set`` and the shorthands applied, checked as the spec file is and
        recorded in the spec's text (what the study stores)."""
        return with_overrides(spec, self.all_overrides())

    def on_this_machine(self, spec: Spec) -> Spec:
        """``spec`` with ``worker --devices`` and ``--workers``: this machine's own, not part of
        the study's spec (whose text a joining worker must match)."""
        if self.devices is not None:
            # This machine's device slots, one per worker; the worker count follows them
            # unless --workers is given.
            run = attrs.evolve(spec.run, devices=self.devices, workers=len(self.devices))
            spec = spec.evolve(run=run)
        if self.workers is None:
            return spec
        workers: Any = self.workers  # "auto" or a count, as --workers checked it
        run = attrs.evolve(spec.run, workers=workers)
        if run.devices and run.worker_count > len(run.devices):
            from optspec.spec.devices import devices_problem

            problem = devices_problem(run.worker_count, run.devices, "[run] devices")
            raise UsageError(f"--workers {self.workers}: {problem}")
        return spec.evolve(run=run)


_RUN_OPTIONS = frozenset(attrs.fields_dict(RunOptions)) - {
    "spec_dir",
    "spec_file",
    "stored_spec",
    "devices",
}
_RESUME_OPTIONS = frozenset(
    {
        "n_trials",
        "timeout",
        "workers",
        "plugin_args",
        "plugins",
        "spec_dir",
        "spec_file",
        "stored_spec",
        "quiet",
        "verbose",
        "overrides",
    }
)
_JOIN_OPTIONS = frozenset({"storage", "workers", "plugin_args", "quiet", "devices", "overrides"})


def _options(
    function: str, options: RunOptions | None, given: dict[str, Any], allowed: frozenset[str]
) -> RunOptions:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise TypeError(f"{function}() got an unexpected keyword argument {unknown[0]!r}")
    return attrs.evolve(options or RunOptions(), **given)


def run_study(
    spec: Spec | str | os.PathLike[str], options: RunOptions | None = None, **kwargs: Any
) -> RunResult:
    """Run the study ``spec`` describes and write study.db; the API behind ``optspec run``.

    Options come as a :class:`RunOptions` or as its fields by keyword (``n_trials=20``), all but
    ``spec_dir``, ``spec_file``, ``stored_spec`` and ``devices``.

    :raises UsageError: (and SpecError) for anything the user can fix; nothing is written then.
    """
    opts = _options("run_study", options, kwargs, _RUN_OPTIONS)
    # First: its imports overlap with reading the spec and setting up (a bad spec stops it).
    start_worker_server()
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    spec = opts.with_budget(spec)
    out = Path(opts.output).absolute() if opts.output is not None else spec.study.output
    _check_output(out, opts.overwrite)
    journal = _journal_kind() if opts.storage is None else None
    config = Config(
        spec,
        out,
        plugin_args=opts.plugin_args,
        quiet=opts.quiet,
        verbose=opts.verbose,
        dashboard_port=opts.dashboard,
        storage_url=opts.storage,
        serve=opts.serve,
        journal=journal,
    )
    served_at = _serve_address(opts.serve)
    components = prepare_controller(config, opts.plugins)
    pickled_plugins = pickle_plugins(opts.plugins)

    import optuna

    from optspec.storage.indexed import IndexedJournalStorage

    _set_optuna_verbosity(config)
    with contextlib.ExitStack() as stack:
        stack.enter_context(output_locked(out, "choose another output (-o DIR)"))
        _check_output(out, opts.overwrite)  # again: another run may have written it meanwhile
        if opts.storage is None:
            backend = stack.enter_context(_new_journal(journal))
            study_storage: Any = IndexedJournalStorage(backend)
        else:
            from optspec.storage.remote import open_storage

            backend = None
            study_storage = open_storage(opts.storage, heartbeat=spec.run.heartbeat)
            _refuse_existing_study(study_storage, spec.study.name, opts.storage)
        # Bound before the study exists: a busy port is a usage error with nothing written.
        stack.enter_context(_live_dashboard(study_storage, config))
        if served_at is not None:
            stack.enter_context(_served(study_storage, *served_at))
        study = optuna.create_study(
            storage=study_storage,
            study_name=spec.study.name,
            directions=spec.study.directions,  # type: ignore[arg-type]  # the spec checked them
            sampler=components.sampler,
            pruner=components.pruner,
        )
        record_spec(study, spec, out)
        for point in spec.enqueue[: spec.run.n_trials]:
            study.enqueue_trial(point)
        return _run(config, components.pm, study, backend, pickled_plugins)


def join_study(
    spec: Spec | str | os.PathLike[str], options: RunOptions | None = None, **kwargs: Any
) -> Outcome:
    """Run worker processes for a study that ``optspec run --storage`` started elsewhere.

    Options: ``storage`` (required), ``workers``, ``plugin_args``, ``quiet``, ``devices``
    (this machine's device slots, one per worker). The workers take
    trials until the study holds ``n_trials``; study-level hooks and study.db stay with the
    controller that started the study.
    """
    import optuna

    from optspec.run.controller import Controller, Mode
    from optspec.storage.remote import open_storage

    opts = _options("join_study", options, kwargs, _JOIN_OPTIONS)
    if opts.storage is None:
        raise TypeError("join_study() needs storage=URL: the study's shared storage")
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    # The run's overrides first: the spec's text must stay the one the study was started with.
    spec = opts.on_this_machine(with_overrides(spec, opts.overrides))
    config = Config(
        spec,
        spec.study.output,
        role="worker",
        plugin_args=opts.plugin_args,
        quiet=opts.quiet,
        storage_url=opts.storage,
    )
    start_worker_server()
    pm = prepare_controller(config, ()).pm
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_storage = open_storage(opts.storage, heartbeat=spec.run.heartbeat)
    try:
        study = _wait_for_study(study_storage, spec.study.name, opts.storage)
        check_same_spec(study, spec, opts.storage)
        controller = Controller(config=config, pm=pm, study=study, mode=Mode.JOIN)
    except OptspecError:
        raise
    except Exception as exc:
        if not _is_rpc_error(exc):
            raise
        # A served study whose controller finished (or stopped) while this one was joining.
        raise StudyFailed(
            f"--storage {opts.storage} stopped answering while this worker joined: its "
            "controller has finished or stopped serving the study"
        ) from None
    return controller.run()


def _is_rpc_error(exc: BaseException) -> bool:
    """An error of the gRPC channel to a served study (grpcio's own classes)."""
    return type(exc).__module__.split(".")[0] == "grpc"


def resume_study(
    study_db: str | os.PathLike[str], options: RunOptions | None = None, **kwargs: Any
) -> RunResult:
    """Continue the study in ``study_db`` (or a fallback journal file) with the spec stored in it.

    Options: ``n_trials`` (the new total for the study), ``timeout``, ``workers``,
    ``plugin_args``, ``plugins``, ``spec_dir``, ``spec_file``, ``stored_spec``, ``quiet``,
    ``verbose``. Trials an interruption failed run again first.
    """
    opts = _options("resume_study", options, kwargs, _RESUME_OPTIONS)
    path = Path(study_db).absolute()
    directory = path if path.is_dir() else path.parent
    if path.name == "journal.log" or (not path.is_file() and (directory / "journal.log").exists()):
        raise UsageError(_old_journal_message(directory))
    if path.is_dir():
        raise UsageError(f"{study_db} is a directory; give the study.db file of an earlier run")
    if not path.is_file():
        raise UsageError(f"{study_db}: no such file; give the study.db of an earlier run")
    _refuse_stale_journal(path)
    _check_resume_writable(path)
    release_lock = _lock_for_resume(path)
    start_worker_server()
    try:
        import optuna

        from optspec.storage import optuna_compat
        from optspec.storage.studydb import load_from_sqlite

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        backend = _new_journal()
        with backend:  # freed on any failure from here on, a bad file included
            _, loaded = load_from_sqlite(path, backend=backend)
            stored = optuna_compat.study_storage(loaded).get_study_system_attrs(
                optuna_compat.study_id(loaded)
            )
            if opts.spec_file is not None:
                spec = trust.spec_from_file(opts.spec_file, loaded, stored, path)
            else:
                spec = stored_spec(loaded, path, opts.spec_dir)
                if not opts.stored_spec:
                    trust.refuse_changed_spec_file(spec, stored, path)
            spec = _overridden(spec, opts.all_overrides())
            config = Config(
                spec,
                path.parent,
                plugin_args=opts.plugin_args,
                quiet=opts.quiet,
                verbose=opts.verbose,
                study_db=path.with_name("study.db") if _is_journal_file(path) else path,
                journal=getattr(backend, "kind", None),
            )
            _set_optuna_verbosity(config)
            components = prepare_controller(config, opts.plugins)
            pickled_plugins = pickle_plugins(opts.plugins)
            study = optuna.load_study(
                study_name=loaded.study_name,
                storage=optuna_compat.study_storage(loaded),
                sampler=components.sampler,
                pruner=components.pruner,
            )
            if opts.spec_file is not None:
                record_spec(study, spec, path.parent)  # the spec it runs from now on
            else:
                record_effective_spec(study, spec)  # with this resume's overrides
            _retry_interrupted(study, spec.run.n_trials)
            return _run(config, components.pm, study, backend, pickled_plugins)
    finally:
        release_lock()


def _overridden(spec: Spec, overrides: Sequence[str | Override]) -> Spec:
    """The spec a resume runs (stored, or ``--spec FILE``) with this resume's own overrides on
    top, recorded after those it already holds; it keeps its name and its place by study.db."""
    if not overrides:
        return spec
    assert spec.path is not None  # both come from a file name: the recorded one, or --spec FILE
    changed = parse_spec(spec.text, path=spec.path, overrides=overrides, applied=spec.overrides)
    study = attrs.evolve(changed.study, name=spec.study.name, output=spec.study.output)
    return changed.evolve(study=study)


def _set_optuna_verbosity(config: Config) -> None:
    import optuna

    # Optuna logs a line per finished trial at INFO: only when asked (`-v`).
    optuna.logging.set_verbosity(optuna.logging.INFO if config.verbose else optuna.logging.WARNING)


def _journal_kind() -> str:
    """The kind of shared journal this machine gives a run (UsageError for a bad choice)."""
    from optspec.storage.select import chosen_kind

    return chosen_kind()


def _new_journal(kind: str | None = None) -> Any:  # None: the kind select.py picks here
    from optspec.storage.select import journal_class

    try:
        return journal_class(kind)()
    except (MemoryError, OSError) as exc:
        raise StudyFailed(f"cannot create the shared-memory journal: {exc}") from None


def _serve_address(serve: str | None) -> tuple[str, int] | None:
    if serve is None:
        return None
    from optspec.storage.remote import parse_address

    return parse_address(serve, "--serve")


@contextmanager
def _served(storage: Any, host: str, port: int) -> Iterator[None]:
    """``run --serve``: the study over Optuna's gRPC proxy until the run (and study.db) is done."""
    from optspec.storage.remote import serve

    server, bound = serve(storage, host, port)
    print(
        f"optspec: serving the study at grpc://{host}:{bound} for `optspec worker SPEC --storage "
        f"grpc://{host}:{bound}` (no authentication: keep it on a private network)",
        file=sys.stderr,
        flush=True,
    )
    try:
        yield
    finally:
        server.stop(grace=1.0)


@contextmanager
def _live_dashboard(storage: Any, config: Config) -> Iterator[None]:
    if config.dashboard_port is None:
        yield
        return
    from optspec.report.dashboard import start_live_dashboard

    # The controller's own JournalStorage: its lock makes the dashboard thread safe beside it.
    dashboard = start_live_dashboard(storage, config.dashboard_port)
    print(f"optuna-dashboard: {dashboard.url}", file=sys.stderr, flush=True)
    try:
        yield
    finally:
        dashboard.stop()


def _refuse_existing_study(storage: Any, name: str, url: str) -> None:
    if name in {study.study_name for study in storage.get_all_studies()}:
        raise UsageError(
            f"--storage {url} already holds a study named {name!r}; join it with "
            f"`optspec worker SPEC --storage {url}`, or give [study] name another value"
        )


JOIN_WAIT = 30.0
"""Seconds ``optspec worker`` waits for the controller to create the study."""


def _wait_for_study(storage: Any, name: str, url: str) -> optuna.Study:
    import optuna

    deadline = time.monotonic() + JOIN_WAIT
    while True:
        try:
            return optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            if time.monotonic() >= deadline:
                raise UsageError(
                    f"--storage {url} holds no study named {name!r} after {JOIN_WAIT:g}s; "
                    f"start it with `optspec run SPEC --storage {url}`"
                ) from None
            time.sleep(0.5)


def _check_output(output: Path, overwrite: bool) -> None:
    """Everything about the output directory that would only fail once the trials have run."""
    study_db = output / "study.db"
    if study_db.is_dir():
        raise UsageError(f"{study_db} is a directory; remove it or choose another output (-o DIR)")
    existing = next(parent for parent in (output, *output.parents) if parent.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        what = "not a directory" if not existing.is_dir() else "not writable"
        raise UsageError(f"cannot write to {output}: {existing} is {what}; choose another -o DIR")
    if study_db.exists() and not overwrite:
        raise UsageError(
            f"{study_db} already exists; continue that study with `optspec resume {study_db}`, "
            "or start over with --overwrite"
        )
    if (output / "journal.log").exists() and not study_db.exists():
        raise UsageError(_old_journal_message(output))


def _old_journal_message(directory: Path) -> str:
    return (
        f"{directory} holds journal.log from an older optspec, and no study.db; old journal "
        "studies are not migrated to study.db: start the study again with `optspec run` into "
        "another directory (-o DIR), or move this one away"
    )


def _is_journal_file(path: Path) -> bool:
    from optspec.storage.studydb import is_sqlite_file

    return not is_sqlite_file(path)


def _lock_for_resume(path: Path) -> Callable[[], None]:
    """Hold a lock on study.db's directory while resuming: study.db itself is replaced (a new
    inode) at every dump, and a lock file would be left behind. Returns its release."""
    lock = output_locked(path.parent, f"resume a copy of {path.name} elsewhere")
    lock.__enter__()

    def release() -> None:
        lock.__exit__(None, None, None)

    return release


def _check_resume_writable(path: Path) -> None:
    """Before any trial runs: resume replaces study.db, or saves study.journal beside it."""
    directory = Path(os.path.realpath(path)).parent
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(
            f"cannot write to {directory}: resuming replaces {path.name} there (or saves "
            f"study.journal beside it); copy {path.name} to a writable directory and resume that"
        )


def _refuse_stale_journal(path: Path) -> None:
    """A fallback journal older than the study.db beside it would replace newer trials."""
    if not _is_journal_file(path):
        return
    study_db = path.with_name("study.db")
    try:
        newer = study_db.stat().st_mtime_ns > path.stat().st_mtime_ns
    except FileNotFoundError:
        return
    if newer:
        raise UsageError(
            f"{path} is older than {study_db}, which resuming it would replace; "
            f"continue with `optspec resume {study_db}`, or move {study_db} away to go back "
            f"to {path.name}"
        )


def _retry_interrupted(study: optuna.Study, n_trials: int) -> None:
    """Enqueue again the parameters of trials an interruption failed, once each.

    Trials still RUNNING in the file come from a checkpoint of a run whose controller died:
    they are failed as interrupted first, so they are retried too.
    """
    from optuna.trial import TrialState

    from optspec.storage import optuna_compat

    storage = optuna_compat.study_storage(study)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = "interrupted: still running when its run stopped without finishing"
        record_fail_reason(storage, optuna_compat.trial_id(trial), reason, interrupted=True)
        storage.set_trial_state_values(optuna_compat.trial_id(trial), TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    room = n_trials - sum(1 for trial in trials if trial.state != TrialState.WAITING)
    retried = {trial.user_attrs.get(RETRY_OF_ATTR) for trial in trials}
    for trial in trials:
        if room <= 0:
            break
        if (
            trial.state == TrialState.FAIL
            and trial.system_attrs.get(INTERRUPTED_ATTR)
            and trial.number not in retried
        ):
            study.enqueue_trial(trial.params, user_attrs={RETRY_OF_ATTR: trial.number})
            room -= 1


# -- the run ----------------------------------------------------------------------------------


def _run(
    config: Config,
    pm: PluginManager,
    study: optuna.Study,
    backend: Any | None,
    plugin_objects: bytes,
) -> RunResult:
    from optspec.run.controller import Controller, Mode

    outcome = Outcome("failed", "the run did not start")
    try:
        pm.hook.on_study_start(study=study, config=config)
        outcome = Controller(
            config=config,
            pm=pm,
            study=study,
            mode=Mode.HOST if config.shared_storage else Mode.LOCAL,
            backend=backend,
            plugin_objects=plugin_objects,
            on_tick=checkpointer(config, pm, study),
        ).run()
    except OptspecError as exc:
        outcome = Outcome("failed", str(exc))
    except KeyboardInterrupt:  # before the controller's own handler was in place
        outcome = Outcome("interrupted", "interrupted by SIGINT while starting")
    except Exception as exc:  # noqa: BLE001 - a plugin's bug fails the study, study.db is kept
        outcome = Outcome("failed", f"a plugin raised: {type(exc).__name__}: {exc}")
    finally:
        outcome = finish(config, pm, study, outcome)
    return RunResult(
        outcome=outcome,
        study_name=study.study_name,
        output=config.output,
        study_db=config.study_db,
        trials=study.get_trials(deepcopy=False),
    )
