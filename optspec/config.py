"""What a run is configured with, as every hook sees it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from attrs import Factory, field, frozen

from optspec.spec.model import Spec

Role = Literal["controller", "worker"]


@frozen
class Config:
    """The validated spec plus what the command line and the process add to it.

    ``spec.run`` already holds the effective budget (``--n-trials``, ``--timeout``, ``--workers``
    applied). The same Config is rebuilt in every worker with ``role = "worker"``, so plugins can
    tell where they run.
    """

    spec: Spec
    output: Path
    role: Role = "controller"
    worker_index: int | None = None
    device: str | None = None
    """The worker's ``[run] devices`` entry (``"0"``, ``"0,1"``); None without devices."""
    plugin_args: tuple[str, ...] = ()
    quiet: bool = False
    verbose: bool = False
    """``-v``: Optuna's own INFO lines (one per finished trial), in the controller and workers."""
    storage_url: str | None = None
    serve: str | None = None
    """``run --serve [HOST:]PORT``: the study is served over gRPC for ``optspec worker``."""
    journal: str | None = None
    """The kind of shared journal the run's workers share (``memfd``, ``portable``,
    ``manager``: see ``OPTSPEC_JOURNAL``); None on a shared storage and in workers."""
    dashboard_port: int | None = None
    """``run --dashboard [PORT]``: optuna-dashboard serves the live study on 127.0.0.1:PORT."""
    study_db: Path = field(default=Factory(lambda self: self.output / "study.db", takes_self=True))
    """Where ``on_finish`` writes the study: ``output/study.db``, or the file ``resume`` read."""

    @property
    def shared_storage(self) -> bool:
        """Workers on other machines may take trials of this study (``--storage``, ``--serve``)."""
        return self.storage_url is not None or self.serve is not None

    @property
    def trial_budget(self) -> int:
        """The trials this run ends with at most: ``n_trials``, or the grid's size when the grid
        sampler has fewer points (it tries each once, then the run ends)."""
        from optspec.objectives.space import grid_size

        size = grid_size(self.spec)
        return self.spec.run.n_trials if size is None else min(size, self.spec.run.n_trials)

    def plugin_options(self, name: str) -> dict[str, Any]:
        """The ``[plugin.NAME]`` table of the spec, empty when absent."""
        return dict(self.spec.plugin.get(name, {}))
