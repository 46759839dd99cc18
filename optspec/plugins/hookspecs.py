"""Every hook optspec calls, with where it runs and what it receives.

Plugins implement hooks with ``@optspec.hookimpl`` on module-level functions or methods::

    from optspec import hookimpl

    @hookimpl
    def on_trial_end(trial):
        print(trial.number, trial.state.name, trial.values)

Hooks are called with keyword arguments only; an implementation may accept any subset of a hook's
arguments, so hooks gain arguments over time without breaking plugins.

Processes: a run has one *controller* (the ``optspec`` process) and W *worker* processes. Setup
hooks run in both, since every worker rebuilds its own plugin manager (plugin state is per process).
Study-level and trial-end hooks run in the controller only, once each; only ``on_trial_start`` runs
in the worker that runs the trial. Objects that come from another process are snapshots
(:class:`optuna.trial.FrozenTrial`), never live handles.

When an implementation raises, pluggy skips the remaining ones for that call; optspec reports the
error and stops the study with exit code 1. ``on_finish`` is the exception: every implementation
runs, and the first error is reported once all of them ran, so study.db is always written.
``on_checkpoint`` reports its error and the run goes on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from collections.abc import Callable

    import optuna

    from optspec.config import Config
    from optspec.outcome import Outcome

hookspec = pluggy.HookspecMarker("optspec")
hookimpl = pluggy.HookimplMarker("optspec")


# -------------------------------------------------------------------------------------------------
# Setup hooks: controller and every worker, before anything else.
# -------------------------------------------------------------------------------------------------


@hookspec
def configure(config: Config) -> None:
    """Set the plugin up for this run.

    :param config: the run's :class:`~optspec.config.Config`: the validated spec
        (``config.spec``), this plugin's ``[plugin.NAME]`` table (``config.plugin_options(NAME)``),
        the output directory and whether this process is the controller or a worker
        (``config.role``).

    Runs in the controller and in every worker, after all plugins are registered and before any
    ``register_*`` hook. Raise :class:`~optspec.SpecError` with the TOML path for a bad value in
    your table (``raise SpecError("plugin.my-plugin.url: must start with http://")``); the run then
    stops with exit code 2 before anything is written.
    """


@hookspec
def register_samplers() -> dict[str, Callable[..., optuna.samplers.BaseSampler]]:
    """Return samplers by the name a spec gives in ``[sampler] name``.

    A factory is called with the options of the ``[sampler]`` table (without ``name``) as keyword
    arguments and returns the sampler. Options the factory cannot take are spec errors naming their
    TOML path. optspec also passes, when the factory takes a parameter of that name and the spec
    does not set it: ``seed`` (the study seed, offset by the worker index), ``search_space`` (a
    ``dict`` of the declared parameters' choices, for grid-like samplers) and ``directions``.

    Runs in the controller and every worker. All results are merged; a name registered by two
    plugins is an error naming both.
    """


@hookspec
def register_pruners() -> dict[str, Callable[..., optuna.pruners.BasePruner]]:
    """Return pruners by the name a spec gives in ``[pruner] name``.

    A factory is called with the options of the ``[pruner]`` table (without ``name``) as keyword
    arguments and returns the pruner. Runs in the controller and every worker; results are merged
    and a name registered twice is an error naming both plugins.
    """


@hookspec
def register_objectives() -> dict[str, Callable[..., Callable[..., Any]]]:
    """Return objective kinds by the name a spec gives in ``[objective] kind``.

    A factory is called with the ``[objective]`` table as a ``dict`` (and with ``spec=`` the
    validated spec when it takes a parameter of that name). It returns the callable a worker runs
    for each trial: ``objective(trial, params)``, where ``params`` holds the values of the declared
    parameters suggested for this trial plus the fixed ones. The callable returns a float, a
    sequence of floats (one per direction) or a dict of metrics; it may call ``trial.report`` and
    raise :class:`optuna.TrialPruned`.

    The built-in kinds are ``python`` (``callable = "pkg.module:attr"``) and ``command``.
    Runs in the controller (to check the table early) and every worker; a kind registered twice
    is an error naming both plugins.
    """


# -------------------------------------------------------------------------------------------------
# Study lifecycle: controller only.
# -------------------------------------------------------------------------------------------------


@hookspec
def on_study_start(study: optuna.Study, config: Config) -> None:
    """The study exists and no worker runs yet.

    :param study: the live study (over the run's shared journal): set study attributes here.
    :param config: the run's configuration.

    Runs once, in the controller, after the study is created (or loaded by ``resume``) and
    enqueued points are added, before workers start.
    """


@hookspec
def on_trial_start(trial: optuna.Trial, config: Config) -> None:
    """A trial is about to be evaluated.

    :param trial: the live :class:`optuna.Trial`, parameters already suggested; set user
        attributes here (``trial.set_user_attr``).
    :param config: the configuration as rebuilt in this worker (``config.role == "worker"``).

    Runs in the worker process that evaluates the trial, once per trial, before the objective.
    An exception fails this trial (state FAIL, the reason in its ``fail_reason`` attribute) and
    stops the study with exit code 1, as a raising ``on_trial_end`` does: a plugin's bug would
    otherwise fail every trial that follows.
    """


@hookspec
def on_trial_end(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """A trial finished (COMPLETE, PRUNED or FAIL).

    :param study: the study as the controller sees it.
    :param trial: a snapshot of the finished trial; read it, do not change it (it is the
        object the controller's copy of the study keeps, as ``study.get_trials(deepcopy=False)``
        returns them).

    Runs in the controller, exactly once per finished trial, in the order the controller sees
    them in the journal (roughly finishing order, not trial number order), including trials a
    crashed worker left behind and the controller failed.
    """


@hookspec
def on_checkpoint(study: optuna.Study, config: Config) -> None:
    """Time to save what the study holds so far (``[run] checkpoint``, e.g. ``"5m"``).

    :param study: the live study, every trial finished so far included.
    :param config: the run's configuration.

    Runs in the controller, every ``checkpoint`` interval while the workers run (never when
    ``checkpoint = "off"``). The built-in ``sqlite`` plugin writes study.db here, so that a
    controller killed outright loses at most one interval. An exception is reported on stderr and
    the run goes on: the write in ``on_finish`` is the one that counts.
    """


@hookspec
def on_finish(study: optuna.Study, config: Config, outcome: Outcome) -> None:
    """The run is over, whatever the reason; workers have stopped.

    :param study: the study with every trial of the run.
    :param config: the run's configuration.
    :param outcome: why it ended (``outcome.status``: ``"done"``, ``"failed"``,
        ``"interrupted"``) and a message; also what the run wrote: a plugin that writes a file
        records it with ``outcome.record_artifact(kind, path, plugin=NAME)``, and a ``wrapper``
        reads ``outcome.artifact("study.db")`` after its ``yield`` to know whether (and where)
        study.db was written.

    Runs once, in the controller, in a ``finally``: after a normal end, a failure, a timeout or an
    interrupt. Every implementation runs even if one raises; the first error fails the run once
    all of them ran. The built-in ``sqlite`` plugin writes study.db here, in the ``finally`` of a
    ``wrapper=True`` implementation: after every plain implementation (so study attributes other
    plugins set in ``on_finish`` are saved) and even when one of them raised. This is the
    "trylast" of the hook table, made robust: a raising plain implementation cannot skip a
    wrapper's ``finally``.
    """
