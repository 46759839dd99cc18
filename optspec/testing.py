"""A pytest plugin for testing optspec plugins against real runs: ``optspec_run``.

Opt in from a ``conftest.py`` (or a test module), the way pytest's own ``pytester`` is enabled::

    pytest_plugins = ["optspec.testing"]

    def test_my_plugin_tags_every_trial(optspec_run):
        run = optspec_run(plugins=[MyPlugin()], n_trials=4)
        assert run.exit_code == 0
        assert [t.user_attrs["tag"] for t in run.study.trials] == ["mine"] * 4
        assert len(run.calls("on_trial_start", role="worker")) == 4

``optspec_run(spec=None, *, plugins=(), plugin_args=(), n_trials=4, workers=2, files=None, ...)``
writes the spec into ``tmp_path`` (with a default objective when it names none), runs it in this
process through :func:`optspec.run_study`, with the workers it spawns, and returns a
:class:`RecordedRun`: the :class:`~optspec.RunResult`, the study loaded from study.db, and
every hook call of the run with the process it ran in.

How calls are recorded
    A run has one controller (the test's own process) and worker processes started from a
    ``forkserver``, each building its own plugin manager from the same plugins; no manager crosses a
    process boundary, and optspec has no hook that hands the manager to a plugin. So the
    recording uses the two ways in that exist:

    * in the controller, pluggy's hook-call monitoring (``pm.add_hookcall_monitoring``, as
      pytester's ``HookRecorder`` does) on the manager the run builds: the fixture wraps
      :func:`optspec.plugins.manager.build_plugin_manager` for the duration of the test. It sees
      every call before any implementation runs, with the live argument objects, so a call is
      recorded even when an implementation raises;
    * in the workers, a recorder plugin object, :class:`WorkerRecorder`, that implements every
      hook (``tryfirst``, registered after all other plugins) and is handed to the run like any
      plugin object, so it is pickled into each worker and registered there. In a worker it
      appends one JSON line per call to ``tmp_path/hookcalls.jsonl``; in the controller it does
      nothing, since the monitor already saw the call.

    Worker calls therefore carry a JSON summary of their arguments (trial number, params, state,
    values, user attrs, config role, outcome) and no live objects; controller calls carry both.

Registering plugins for a test
    There is no global plugin manager to register into and forget to clean up (the trap
    datasette's docs warn about): every run builds its own. ``optspec_run.register(plugin)``
    adds a plugin object to every later run of the test and ``optspec_run.unregister(plugin)``
    takes it out again; both end with the test. Plugin objects must pickle, because each worker
    registers them too: instances of classes defined at module level, or modules, which the
    run sends to the workers by name.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from attrs import field, frozen

from optspec import hookimpl
from optspec.plugins.hookspecs import (
    configure,
    on_checkpoint,
    on_finish,
    on_study_start,
    on_trial_end,
    on_trial_start,
    register_objectives,
    register_pruners,
    register_samplers,
)

if TYPE_CHECKING:
    import optuna

    from optspec.outcome import RunResult
    from optspec.plugins.manager import PluginManager

CALLS_FILE = "hookcalls.jsonl"
"""Where workers append their hook calls, in the test's ``tmp_path``."""

DEFAULT_OBJECTIVE = '''\
"""The objective optspec.testing writes when a test's spec names none."""


def objective(params):
    return (params["x"] - 2) ** 2
'''

DEFAULT_SPEC = """\
version = 1

[study]
name = "testing"
direction = "minimize"

[objective]
callable = "objective.py:objective"

[params]
x = { type = "float", low = -10, high = 10 }

[sampler]
name = "random"
"""
"""The spec ``optspec_run()`` runs when a test gives none."""

HOOK_NAMES = tuple(
    hook.__name__
    for hook in (
        configure,
        register_samplers,
        register_pruners,
        register_objectives,
        on_study_start,
        on_trial_start,
        on_trial_end,
        on_checkpoint,
        on_finish,
    )
)


# -- recorded calls ---------------------------------------------------------------------------


@frozen
class HookCall:
    """One call of one hook in one process.

    :ivar name: the hook, ``"on_trial_end"``.
    :ivar pid: the process it ran in.
    :ivar role: ``"controller"`` or ``"worker"``, from the pid (the test's process is the
        controller), not from what ``config.role`` claims.
    :ivar args: a JSON-able summary of the arguments, the same in every process (see
        :func:`summarize`).
    :ivar kwargs: the live argument objects; empty for calls made in a worker.
    :ivar time: ``time.time()`` when the call started, to order calls across processes.
    """

    name: str
    pid: int
    role: str
    args: dict[str, Any]
    kwargs: Mapping[str, Any] = field(factory=dict, repr=False)
    time: float = 0.0


def summarize(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-able summary of a hook call's arguments, the same in the controller and workers."""
    return {name: _summary(value) for name, value in kwargs.items()}


def _summary(value: Any) -> Any:
    import optuna
    from optuna.trial import FrozenTrial

    from optspec.config import Config
    from optspec.outcome import Outcome

    if isinstance(value, FrozenTrial):
        return {
            "number": value.number,
            "state": value.state.name,
            "values": value.values,
            "params": value.params,
            "user_attrs": value.user_attrs,
        }
    if isinstance(value, optuna.Trial):
        return {"number": value.number, "params": value.params}
    if isinstance(value, optuna.Study):
        return {"study_name": value.study_name}
    if isinstance(value, Config):
        return {"role": value.role, "worker_index": value.worker_index, "output": str(value.output)}
    if isinstance(value, Outcome):
        return {"status": value.status, "message": value.message}
    return json.loads(json.dumps(value, default=repr))


class WorkerRecorder:
    """A plugin that implements every hook and records the calls made in worker processes.

    It pickles to the path of the calls file and the controller's pid, so each worker gets a
    working copy. Each call is one ``os.write`` of one line to a file opened with ``O_APPEND``,
    so lines from several workers never interleave.
    """

    def __init__(self, path: Path, controller_pid: int) -> None:
        self.path = path
        self.controller_pid = controller_pid

    def _record(self, name: str, **kwargs: Any) -> None:
        pid = os.getpid()
        if pid == self.controller_pid:
            return  # the controller's calls are recorded by hook-call monitoring
        line = {"name": name, "pid": pid, "time": time.time(), "args": summarize(kwargs)}
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(line) + "\n").encode())
        finally:
            os.close(fd)

    @hookimpl(tryfirst=True)
    def configure(self, config: Any) -> None:
        self._record("configure", config=config)

    @hookimpl(tryfirst=True)
    def register_samplers(self) -> None:
        self._record("register_samplers")

    @hookimpl(tryfirst=True)
    def register_pruners(self) -> None:
        self._record("register_pruners")

    @hookimpl(tryfirst=True)
    def register_objectives(self) -> None:
        self._record("register_objectives")

    @hookimpl(tryfirst=True)
    def on_study_start(self, study: Any, config: Any) -> None:
        self._record("on_study_start", study=study, config=config)

    @hookimpl(tryfirst=True)
    def on_trial_start(self, trial: Any, config: Any) -> None:
        self._record("on_trial_start", trial=trial, config=config)

    @hookimpl(tryfirst=True)
    def on_trial_end(self, study: Any, trial: Any) -> None:
        self._record("on_trial_end", study=study, trial=trial)

    @hookimpl(tryfirst=True)
    def on_checkpoint(self, study: Any, config: Any) -> None:
        self._record("on_checkpoint", study=study, config=config)

    @hookimpl(tryfirst=True)
    def on_finish(self, study: Any, config: Any, outcome: Any) -> None:
        self._record("on_finish", study=study, config=config, outcome=outcome)

    def read(self) -> list[HookCall]:
        if not self.path.exists():
            return []
        calls = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            data = json.loads(line)
            calls.append(
                HookCall(data["name"], data["pid"], "worker", data["args"], time=data["time"])
            )
        return calls


class ControllerMonitor:
    """Hook-call monitoring on every manager built in this process (pluggy's own mechanism)."""

    def __init__(self) -> None:
        self.calls: list[HookCall] = []
        self.pid = os.getpid()

    def attach(self, pm: PluginManager) -> None:
        # optspec calls each on_finish implementation on its own from within the on_finish call
        # (so that all of them run): those inner calls are parts of one call, not calls.
        running: list[str] = []

        def before(name: str, impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
            if name not in running:
                self.calls.append(
                    HookCall(
                        name, self.pid, "controller", summarize(kwargs), dict(kwargs), time.time()
                    )
                )
            running.append(name)

        def after(outcome: Any, name: str, impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
            running.pop()

        pm.add_hookcall_monitoring(before, after)


# -- the result of a run ----------------------------------------------------------------------


@frozen
class RecordedRun:
    """A finished run: its result, its study as saved, and every hook call it made.

    :ivar result: what :func:`optspec.run_study` returned.
    :ivar spec_path: the spec that ran.
    :ivar hook_calls: every recorded call, controller and workers, in the order they started.
    :ivar controller_pid: the pid of the controller (this test's process).
    """

    result: RunResult
    spec_path: Path
    hook_calls: list[HookCall]
    controller_pid: int

    @property
    def exit_code(self) -> int:
        """The exit code ``optspec run`` would end with."""
        from optspec.cli import exit_code_for

        return int(exit_code_for(self.result.outcome))

    @property
    def output(self) -> Path:
        return self.result.output

    @property
    def study_db(self) -> Path:
        return self.result.study_db

    @property
    def study(self) -> optuna.Study:
        """The study as saved in study.db, read through Optuna's own SQLite storage."""
        import optuna

        if not self.study_db.is_file():
            raise AssertionError(f"no study.db was written at {self.study_db}")
        return optuna.load_study(
            study_name=self.result.study_name, storage=f"sqlite:///{self.study_db}"
        )

    def calls(self, name: str, *, role: str | None = None) -> list[HookCall]:
        """The calls of hook ``name``, in any process or only in ``role``'s."""
        if name not in HOOK_NAMES:
            raise ValueError(f"{name!r} is not an optspec hook; hooks: {', '.join(HOOK_NAMES)}")
        return [
            call
            for call in self.hook_calls
            if call.name == name and (role is None or call.role == role)
        ]

    def worker_pids(self) -> set[int]:
        """The pids of every worker process that made a hook call."""
        return {call.pid for call in self.hook_calls if call.role == "worker"}


# -- the fixture ------------------------------------------------------------------------------


class OptspecRunner:
    """The ``optspec_run`` fixture: call it to run a spec, register plugins for every run."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp_path = tmp_path
        self.monkeypatch = monkeypatch
        self.registered: list[object] = []
        self._runs = 0
        self._monitor: ControllerMonitor | None = None

    def register(self, plugin: object) -> object:
        """Add ``plugin`` to every later run of this test; returns it, to use as a decorator."""
        self.registered.append(plugin)
        return plugin

    def unregister(self, plugin: object) -> None:
        """Take a plugin :meth:`register` added out of later runs."""
        self.registered.remove(plugin)

    def __call__(
        self,
        spec: str | None = None,
        *,
        plugins: Sequence[object] = (),
        plugin_args: Sequence[str] = (),
        n_trials: int = 4,
        workers: int = 2,
        files: Mapping[str, str] | None = None,
        **options: Any,
    ) -> RecordedRun:
        """Write ``spec`` (TOML text) and ``files`` into a new directory of ``tmp_path``, run it.

        :param spec: the spec's text; by default :data:`DEFAULT_SPEC`. ``objective.py`` is
            always written next to it (minimum at ``x = 2``; it needs a parameter ``x``), and a
            spec without an ``[objective]`` table gets ``callable = "objective.py:objective"``.
        :param plugins: plugin objects for this run, after those :meth:`register` added.
        :param plugin_args: like ``-p`` on the command line: ``["my_plugin", "no:terminal"]``.
        :param files: more files to write next to the spec, by relative name (objective modules,
            plugin modules, an ``optspec_plugins.py``).
        :param options: passed on to :func:`optspec.run_study` (``timeout``, ``quiet``, ...);
            ``quiet`` defaults to True.
        :raises UsageError: (and SpecError) as :func:`optspec.run_study` does; no call is
            recorded then that the test could not see in the exception.
        """
        from optspec.run.lifecycle import run_study

        self._runs += 1
        directory = self.tmp_path / f"run{self._runs}"
        directory.mkdir()
        text = DEFAULT_SPEC if spec is None else spec
        if "[objective]" not in text:
            text += '\n[objective]\ncallable = "objective.py:objective"\n'
        for name, content in {"objective.py": DEFAULT_OBJECTIVE, **(files or {})}.items():
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            (directory / name).write_text(content, encoding="utf-8")
        spec_path = directory / "study.toml"
        spec_path.write_text(text, encoding="utf-8")

        monitor = self._monitoring()
        first = len(monitor.calls)
        recorder = WorkerRecorder(directory / CALLS_FILE, os.getpid())
        options.setdefault("quiet", True)
        options.setdefault("output", directory / "output")
        result = run_study(
            spec_path,
            plugins=[*self.registered, *plugins, recorder],
            plugin_args=plugin_args,
            n_trials=n_trials,
            workers=workers,
            **options,
        )
        calls = sorted(monitor.calls[first:] + recorder.read(), key=lambda call: call.time)
        return RecordedRun(result, spec_path, calls, os.getpid())

    def _monitoring(self) -> ControllerMonitor:
        """Monitor every manager this process builds from now on, until the test ends."""
        if self._monitor is None:
            import optspec.plugins.manager

            monitor = ControllerMonitor()
            build = optspec.plugins.manager.build_plugin_manager

            def build_monitored(*args: Any, **kwargs: Any) -> PluginManager:
                pm = build(*args, **kwargs)
                monitor.attach(pm)
                return pm

            self.monkeypatch.setattr(
                optspec.plugins.manager, "build_plugin_manager", build_monitored
            )
            self._monitor = monitor
        return self._monitor


@pytest.fixture
def optspec_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[OptspecRunner]:
    """Run specs in-process with real workers and record every hook call: see the module doc."""
    yield OptspecRunner(tmp_path, monkeypatch)


__all__ = [
    "DEFAULT_SPEC",
    "HookCall",
    "OptspecRunner",
    "RecordedRun",
    "WorkerRecorder",
    "optspec_run",
    "summarize",
]
