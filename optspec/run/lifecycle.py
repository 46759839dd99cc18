"""A study's lifecycle: spec -> plugins -> journal -> study -> workers -> on_finish.

:func:`run_study` starts a study from a spec, :func:`resume_study` continues one from its study.db.
Both check everything a user can get wrong (spec, plugins, sampler options, the output directory)
before writing anything, run the :class:`~optspec.run.controller.Controller`, and always end with
``on_finish``, where the built-in ``sqlite`` plugin writes study.db.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import io
import math
import os
import pickle
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from optspec.config import Config
from optspec.errors import OptspecError, SpecError, StudyFailed, UsageError
from optspec.outcome import Outcome, RunResult
from optspec.run import trust
from optspec.run.study_attrs import (
    INTERRUPTED_ATTR,
    RETRY_OF_ATTR,
    SPEC_ATTR,
    SPEC_DIR_ATTR,
    SPEC_FILE_ATTR,
    SPEC_SHA256_ATTR,
    VERSION_ATTR,
    record_fail_reason,
)
from optspec.spec.load import load_spec, parse_spec
from optspec.spec.model import Spec

if TYPE_CHECKING:
    import optuna

    from optspec.plugins.manager import PluginManager


def run_study(
    spec: Spec | str | os.PathLike[str],
    *,
    output: str | os.PathLike[str] | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    workers: int | str | None = None,
    plugin_args: Sequence[str] = (),
    plugins: Sequence[object] = (),
    overwrite: bool = False,
    quiet: bool = False,
    verbose: bool = False,
    dashboard: int | None = None,
    storage: str | None = None,
    serve: str | None = None,
) -> RunResult:
    """Run the study ``spec`` describes and write study.db; the API behind ``optspec run``.

    :param plugins: plugin objects registered after all others. Every worker registers them
        too, so they must pickle: modules (sent by name) or instances of importable classes.
    :param dashboard: serve optuna-dashboard over the live study on 127.0.0.1 at this port.
    :param storage: run on this shared storage URL instead of the in-memory journal, so that
        ``optspec worker`` processes on other machines can join; study.db is written all the same.
    :param serve: ``"[HOST:]PORT"``: serve the study over Optuna's gRPC proxy there (127.0.0.1
        unless a host is given), for ``optspec worker SPEC --storage grpc://HOST:PORT``.
    :raises UsageError: (and SpecError) for anything the user can fix; nothing is written then.
    """
    # First: its imports overlap with reading the spec and setting up (a bad spec stops it).
    _start_worker_server()
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    spec = _with_budget(spec, n_trials, timeout, workers)
    out = Path(output).absolute() if output is not None else spec.study.output
    _check_output(out, overwrite)
    config = Config(
        spec,
        out,
        plugin_args=tuple(plugin_args),
        quiet=quiet,
        verbose=verbose,
        dashboard_port=dashboard,
        storage_url=storage,
        serve=serve,
    )
    served_at = _serve_address(serve)
    pm, sampler, pruner = _prepare(config, plugins)
    pickled_plugins = _pickle_plugins(plugins)

    import optuna

    from optspec.storage.indexed import IndexedJournalStorage

    _set_optuna_verbosity(config)
    with contextlib.ExitStack() as stack:
        if storage is None:
            backend = stack.enter_context(_new_journal())
            study_storage: Any = IndexedJournalStorage(backend)
        else:
            from optspec.storage.remote import open_storage

            backend = None
            study_storage = open_storage(storage, heartbeat=spec.run.heartbeat)
            _refuse_existing_study(study_storage, spec.study.name, storage)
        # Bound before the study exists: a busy port is a usage error with nothing written.
        stack.enter_context(_live_dashboard(study_storage, config))
        if served_at is not None:
            stack.enter_context(_served(study_storage, *served_at))
        study = optuna.create_study(
            storage=study_storage,
            study_name=spec.study.name,
            directions=spec.study.directions,
            sampler=sampler,
            pruner=pruner,
        )
        _record_spec(study, spec, out)
        for point in spec.enqueue[: spec.run.n_trials]:
            study.enqueue_trial(point)
        return _run(config, pm, study, backend, pickled_plugins)


def join_study(
    spec: Spec | str | os.PathLike[str],
    *,
    storage: str,
    workers: int | str | None = None,
    plugin_args: Sequence[str] = (),
    quiet: bool = False,
    devices: Sequence[str] | None = None,
) -> Outcome:
    """Run worker processes for a study that ``optspec run --storage`` started elsewhere.

    They take trials until the study holds ``n_trials``; study-level hooks and study.db stay
    with the controller that started the study.

    :param devices: this machine's device slots, one per worker (``--devices``), instead of
        the spec's ``[run] devices``; the worker count follows them unless ``workers`` is given.
    """
    import optuna

    from optspec.run.controller import Controller
    from optspec.storage.remote import open_storage

    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    if devices is not None:
        run = attrs.evolve(spec.run, devices=tuple(devices), workers=len(devices))
        spec = spec.evolve(run=run)
    spec = _with_budget(spec, None, None, workers)
    config = Config(
        spec,
        spec.study.output,
        role="worker",
        plugin_args=tuple(plugin_args),
        quiet=quiet,
        storage_url=storage,
    )
    _start_worker_server()
    pm, _, _ = _prepare(config, ())
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_storage = open_storage(storage, heartbeat=spec.run.heartbeat)
    study = _wait_for_study(study_storage, spec.study.name, storage)
    _check_same_spec(study, spec, storage)
    return Controller(config=config, pm=pm, study=study, backend=None, join=True).run()


def resume_study(
    study_db: str | os.PathLike[str],
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    workers: int | str | None = None,
    plugin_args: Sequence[str] = (),
    plugins: Sequence[object] = (),
    spec_dir: str | os.PathLike[str] | None = None,
    quiet: bool = False,
    verbose: bool = False,
    spec_file: str | os.PathLike[str] | None = None,
    stored_spec: bool = False,
) -> RunResult:
    """Continue the study in ``study_db`` (or a fallback journal file) with the spec stored in it.

    ``n_trials`` is the new total for the study. Trials an interruption failed run again first.

    :param spec_file: run this spec file instead of the stored spec (same study name and
        directions); it becomes the study's recorded spec.
    :param stored_spec: run the stored spec even when the spec file recorded for the study
        differs from it. Without either, such a difference is a UsageError naming both ways.
    """
    from optspec.storage import optuna_compat

    path = Path(study_db).absolute()
    directory = path if path.is_dir() else path.parent
    if path.name == "journal.log" or (not path.is_file() and (directory / "journal.log").exists()):
        raise UsageError(_old_journal_message(directory))
    if path.is_dir():
        raise UsageError(f"{study_db} is a directory; give the study.db file of an earlier run")
    if not path.is_file():
        raise UsageError(f"{study_db}: no such file; give the study.db of an earlier run")
    lock = _lock_for_resume(path)
    _start_worker_server()
    try:
        import optuna

        from optspec.storage.studydb import load_from_sqlite

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        backend, loaded = load_from_sqlite(path, backend=_new_journal())
        with backend:
            stored = optuna_compat.study_storage(loaded).get_study_system_attrs(
                optuna_compat.study_id(loaded)
            )
            if spec_file is not None:
                spec = trust.spec_from_file(spec_file, loaded, stored, path)
            else:
                spec = _spec_of(loaded, path, spec_dir)
                if not stored_spec:
                    trust.refuse_changed_spec_file(spec, stored, path)
            spec = _with_budget(spec, n_trials, timeout, workers)
            config = Config(
                spec,
                path.parent,
                plugin_args=tuple(plugin_args),
                quiet=quiet,
                verbose=verbose,
                study_db=path.with_name("study.db") if _is_journal_file(path) else path,
            )
            _set_optuna_verbosity(config)
            pm, sampler, pruner = _prepare(config, plugins)
            pickled_plugins = _pickle_plugins(plugins)
            study = optuna.load_study(
                study_name=loaded.study_name,
                storage=optuna_compat.study_storage(loaded),
                sampler=sampler,
                pruner=pruner,
            )
            if spec_file is not None:
                _record_spec(study, spec, path.parent)  # the spec it runs from now on
            _retry_interrupted(study, spec.run.n_trials)
            return _run(config, pm, study, backend, pickled_plugins)
    finally:
        os.close(lock)


# -- setup ------------------------------------------------------------------------------------


def prepare_sys_path(spec: Spec) -> None:
    """The spec's directory first on sys.path, then the working directory, as the docs promise.

    Runs in the controller and in every worker, so references resolve alike in both.
    """
    for entry in (str(Path.cwd()), str(spec.directory)):
        if entry in sys.path:
            sys.path.remove(entry)
        sys.path.insert(0, entry)


def _set_optuna_verbosity(config: Config) -> None:
    import optuna

    # Optuna logs a line per finished trial at INFO: only when asked (`-v`).
    optuna.logging.set_verbosity(optuna.logging.INFO if config.verbose else optuna.logging.WARNING)


def _start_worker_server() -> None:
    from optspec.run.forkserver import start_worker_server

    start_worker_server()


def _new_journal() -> Any:
    from optspec.storage.select import SharedMemoryJournalBackend

    try:
        return SharedMemoryJournalBackend()
    except (MemoryError, OSError) as exc:
        raise StudyFailed(f"cannot create the shared-memory journal: {exc}") from None


def _with_budget(
    spec: Spec, n_trials: int | None, timeout: float | None, workers: int | str | None
) -> Spec:
    changes: dict[str, Any] = {}
    if n_trials is not None:
        changes["n_trials"] = n_trials
    if timeout is not None:
        changes["timeout"] = None if math.isinf(timeout) else timeout  # `--timeout off`
    if workers is not None:
        changes["workers"] = workers
    if not changes:
        return spec
    run = attrs.evolve(spec.run, **changes)
    if workers is not None and run.devices and run.worker_count > len(run.devices):
        from optspec.spec.load import devices_problem

        problem = devices_problem(run.worker_count, run.devices, "[run] devices")
        raise UsageError(f"--workers {workers}: {problem}")
    return spec.evolve(run=run)


class _PluginPickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        # A plugin module travels to the workers by name; they import it themselves.
        if isinstance(obj, types.ModuleType):
            return importlib.import_module, (obj.__name__,)
        return NotImplemented


def _pickle_plugins(plugins: Sequence[object]) -> bytes:
    """The plugin objects as the workers will get them, checked before anything is written."""
    if not plugins:
        return b""
    buffer = io.BytesIO()
    try:
        _PluginPickler(buffer).dump(tuple(plugins))
    except Exception as exc:  # noqa: BLE001 - pickle raises many types; all mean the same
        raise UsageError(
            f"a plugin object cannot be sent to the worker processes ({type(exc).__name__}: "
            f"{exc}); pass a module, or an instance of a class defined at a module's top level"
        ) from None
    return buffer.getvalue()


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


def _check_same_spec(study: optuna.Study, spec: Spec, url: str) -> None:
    """A joining worker runs the spec the study was started with, not an edited copy."""
    from optspec.storage import optuna_compat

    storage = optuna_compat.study_storage(study)
    stored = storage.get_study_system_attrs(storage.get_study_id_from_name(study.study_name))
    expected = stored.get(SPEC_SHA256_ATTR)
    if expected is None or expected == hashlib.sha256(spec.text.encode()).hexdigest():
        return
    from optspec.spec.compare import differing_keys

    keys = differing_keys(stored.get(SPEC_ATTR, ""), spec.text)
    if not keys:
        return  # comments or layout only: the same spec
    shown = ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
    raise UsageError(
        f"{spec.path}: differs from the spec the study {study.study_name!r} on {url} was "
        f"started with, at {shown}; workers must run the same spec (same file contents)"
    )


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


def check_spec(spec: Spec, plugin_args: Sequence[str] = ()) -> None:
    """Every check ``run`` makes before its first trial, without running or writing anything:
    the plugins are imported and configured, sampler, pruner and objective built (the objective's
    module imported, as ``pytest --collect-only`` imports test modules). For ``optspec validate``.
    """
    _prepare(Config(spec, spec.study.output, plugin_args=tuple(plugin_args), quiet=True), ())


def _prepare(config: Config, plugins: Sequence[object]) -> tuple[PluginManager, Any, Any]:
    """Plugins configured and the run's components built once: every user mistake surfaces here,
    before anything is written."""
    from optspec.plugins.components import make_objective, make_pruner, make_sampler
    from optspec.plugins.manager import build_plugin_manager

    prepare_sys_path(config.spec)
    file = config.spec.path or config.study_db
    try:
        pm = build_plugin_manager(config.spec, config.plugin_args, plugins)
        pm.hook.configure(config=config)
        sampler = make_sampler(pm, config)
        pruner = make_pruner(pm, config)
        make_objective(pm, config)
    except SpecError as exc:
        raise exc.with_file(file) from None
    except OptspecError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's bug, reported in one line
        raise StudyFailed(
            f"a plugin raised while the run was set up: {type(exc).__name__}: {exc}"
        ) from None
    if not pm.has_plugin("sqlite") and config.role == "controller":
        print(
            "optspec: the sqlite plugin is blocked: study.db and results.json will not be written",
            file=sys.stderr,
        )
    return pm, sampler, pruner


def _record_spec(study: optuna.Study, spec: Spec, output: Path) -> None:
    from optspec import __version__
    from optspec.storage import optuna_compat

    # Optuna 5 dropped Study.set_system_attr; the storage method is the public way left.
    storage = optuna_compat.study_storage(study)
    study_id = storage.get_study_id_from_name(study.study_name)
    directory = spec.directory.absolute()
    attrs_ = {
        SPEC_ATTR: spec.text,
        SPEC_SHA256_ATTR: hashlib.sha256(spec.text.encode()).hexdigest(),
        VERSION_ATTR: __version__,
        SPEC_DIR_ATTR: {"relative": os.path.relpath(directory, output), "absolute": str(directory)},
        SPEC_FILE_ATTR: spec.path.name if spec.path else "study.toml",
    }
    for key, value in attrs_.items():
        storage.set_study_system_attr(study_id, key, value)


def _spec_of(study: optuna.Study, path: Path, spec_dir: str | os.PathLike[str] | None) -> Spec:
    from optspec.storage import optuna_compat

    storage = optuna_compat.study_storage(study)
    attrs_ = storage.get_study_system_attrs(storage.get_study_id_from_name(study.study_name))
    if SPEC_ATTR not in attrs_:
        raise UsageError(
            f"{path}: this study was not made by optspec (no {SPEC_ATTR} attribute); "
            "run it from a spec with `optspec run`"
        )
    if spec_dir is not None:
        directory = Path(spec_dir).absolute()
    else:
        stored = attrs_.get(SPEC_DIR_ATTR) or {}
        relative = path.parent / stored.get("relative", ".")
        absolute = Path(stored.get("absolute", relative))
        # The relative location first: a study.db restored into a fresh checkout resumes.
        directory = relative.resolve() if relative.is_dir() or not absolute.is_dir() else absolute
    name = attrs_.get(SPEC_FILE_ATTR, "study.toml")
    spec = parse_spec(attrs_[SPEC_ATTR], path=directory / name)
    # The study keeps its name and stays where its study.db is.
    return spec.evolve(study=attrs.evolve(spec.study, name=study.study_name, output=path.parent))


def _is_journal_file(path: Path) -> bool:
    from optspec.storage.studydb import SQLITE_HEADER

    with path.open("rb") as file:
        return file.read(len(SQLITE_HEADER)) != SQLITE_HEADER


def _lock_for_resume(path: Path) -> int:
    """Hold a lock on study.db's directory while resuming: study.db itself is replaced (a new
    inode) at every dump, and a lock file would be left behind."""
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UsageError(
            f"{path} is being resumed by another optspec process; wait for it to finish"
        ) from None
    return fd


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
    from optspec.run.controller import Controller

    outcome = Outcome("failed", "the run did not start")
    try:
        pm.hook.on_study_start(study=study, config=config)
        outcome = Controller(
            config=config,
            pm=pm,
            study=study,
            backend=backend,
            plugin_objects=plugin_objects,
            on_tick=_checkpointer(config, pm, study),
        ).run()
    except OptspecError as exc:
        outcome = Outcome("failed", str(exc))
    except Exception as exc:  # noqa: BLE001 - a plugin's bug fails the study, study.db is kept
        outcome = Outcome("failed", f"a plugin raised: {type(exc).__name__}: {exc}")
    finally:
        outcome = _finish(config, pm, study, outcome)
    return RunResult(
        outcome=outcome,
        study_name=study.study_name,
        output=config.output,
        study_db=config.study_db,
        trials=study.get_trials(deepcopy=False),
    )


def _checkpointer(
    config: Config, pm: PluginManager, study: optuna.Study
) -> Callable[[], None] | None:
    """``[run] checkpoint``: also write study.db every so often while the workers run.

    Only when the sqlite plugin writes study.db at all (it may be blocked). A failed checkpoint
    is reported and the run goes on: the final write is what counts.
    """
    interval = config.spec.run.checkpoint
    if interval is None or not pm.has_plugin("sqlite"):
        return None
    from optspec.builtin.sqlite import write_study_db

    next_at = time.monotonic() + interval

    def checkpoint() -> None:
        nonlocal next_at
        if time.monotonic() < next_at:
            return
        try:
            write_study_db(study, config)
        except OptspecError as exc:
            print(f"optspec: checkpoint failed: {exc}", file=sys.stderr)
        next_at = time.monotonic() + interval

    return checkpoint


def _finish(config: Config, pm: PluginManager, study: optuna.Study, outcome: Outcome) -> Outcome:
    """Fire on_finish so that every implementation runs, even after one raised, and so that a
    signal arriving meanwhile cannot cut the writing of study.db short."""
    errors: list[tuple[str, BaseException]] = []
    with _signals_deferred() as received:
        try:
            with _guarded(pm.hook.on_finish, errors):
                pm.hook.on_finish(study=study, config=config, outcome=outcome)
        except Exception as exc:  # noqa: BLE001 - a wrapper (study.db itself) failed
            errors.append(("", exc))
    if received and outcome.status == "done":
        outcome = Outcome("interrupted", f"interrupted by {received[0]} while finishing")
    if not errors:
        return outcome
    plugin, exc = errors[0]
    if isinstance(exc, OptspecError):
        return Outcome("failed", str(exc))
    where = f"plugin {plugin!r} " if plugin else ""
    return Outcome("failed", f"{where}raised in on_finish: {type(exc).__name__}: {exc}")


@contextmanager
def _signals_deferred() -> Iterator[list[str]]:
    """SIGINT and SIGTERM are noted, not acted on, for the duration (main thread only)."""
    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in signals}
    for sig in signals:
        signal.signal(sig, lambda signum, frame: received.append(signal.Signals(signum).name))
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def _guarded(hook: Any, errors: list[tuple[str, BaseException]]) -> Iterator[None]:
    """Make each plain implementation of ``hook`` record its exception instead of raising.

    pluggy stops at the first implementation that raises; for the end-of-run notification
    every plugin must get its turn. Wrappers are left alone: the sqlite plugin's is what
    writes study.db, and its failure must propagate.
    """
    originals = []
    for impl in hook.get_hookimpls():
        if impl.wrapper or impl.hookwrapper:
            continue
        originals.append((impl, impl.function))
        impl.function = _recording(impl.plugin_name, impl.function, errors)
    try:
        yield
    finally:
        for impl, function in originals:
            impl.function = function


def _recording(
    plugin: str, function: Callable[..., Any], errors: list[tuple[str, BaseException]]
) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        try:
            return function(*args)
        except Exception as exc:  # noqa: BLE001 - reported once every implementation ran
            errors.append((plugin, exc))
            return None

    return call
