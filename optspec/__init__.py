"""optspec: run Optuna studies described in TOML.

The public API is small and stable::

    from optspec import hookimpl, load_spec, run_study

Importing this package is cheap: optuna is imported only by the parts that need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from optspec.errors import OptspecError, SpecError, StudyFailed, UsageError
from optspec.hookspecs import hookimpl, hookspec
from optspec.spec import load_spec

__version__ = "0.1.0"

__all__ = [
    "OptspecError",
    "SpecError",
    "StudyFailed",
    "UsageError",
    "__version__",
    "hookimpl",
    "hookspec",
    "load_spec",
    "resume_study",
    "run_study",
]

if TYPE_CHECKING:
    from optspec.engine import resume_study, run_study


def __getattr__(name: str) -> Any:
    # The engine pulls in optuna and multiprocessing; keep `import optspec` light.
    if name in ("run_study", "resume_study"):
        from optspec import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'optspec' has no attribute {name!r}")
