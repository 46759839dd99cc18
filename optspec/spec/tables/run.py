"""``[run]``: the budget, how trials run, and the device slots of the workers."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from optspec.spec.devices import devices_problem, parse_device_entry
from optspec.spec.model import KEEP_TRIAL_DIRS, RunSection
from optspec.spec.tables.checker import Checker, describe, join
from optspec.util import is_int

RUN_KEYS = (
    "n_trials", "timeout", "workers", "max_failed", "trial_timeout", "checkpoint",
    "devices", "device_env", "keep_trial_dirs", "heartbeat",
)  # fmt: skip
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


MAX_TRIALS = 10**9
"""Far beyond what one study.db holds usefully; a clear error instead of an endless start-up."""
MAX_WORKERS = 1024


def check_run(c: Checker, value: Any) -> RunSection:
    table = c.table(value, "run", RUN_KEYS)
    defaults = RunSection()
    positive = lambda v: is_int(v) and v >= 1  # noqa: E731
    workers = c.get(
        table,
        "workers",
        "run",
        lambda v: (positive(v) and v <= MAX_WORKERS) or v == "auto",
        f'an integer from 1 to {MAX_WORKERS} or "auto"',
        defaults.workers,
    )
    devices = _devices(c, table)
    if devices and "workers" not in table:
        workers = len(devices)
    elif (
        len(devices) == len(table.get("devices", ()))
        and is_int(workers)
        and devices
        and (workers > len(devices))
    ):
        c.add("run.workers", devices_problem(workers, devices, "run.devices"))
        workers = len(devices)
    return RunSection(
        n_trials=c.get(
            table,
            "n_trials",
            "run",
            lambda v: positive(v) and v <= MAX_TRIALS,
            f"an integer from 1 to {MAX_TRIALS}",
            defaults.n_trials,
        ),
        timeout=c.duration(table, "timeout", "run", defaults.timeout),
        workers=workers,
        max_failed=c.get(table, "max_failed", "run", positive, "an integer >= 1"),
        trial_timeout=c.duration(table, "trial_timeout", "run", defaults.trial_timeout),
        checkpoint=c.duration(table, "checkpoint", "run", defaults.checkpoint),
        devices=devices,
        device_env=c.get(
            table,
            "device_env",
            "run",
            lambda v: isinstance(v, str) and bool(_ENV_NAME.match(v)),
            'an environment variable name like "CUDA_VISIBLE_DEVICES"',
            defaults.device_env,
        ),
        keep_trial_dirs=c.get(
            table,
            "keep_trial_dirs",
            "run",
            lambda v: v in KEEP_TRIAL_DIRS,
            ", ".join(f'"{keep}"' for keep in KEEP_TRIAL_DIRS[:-1])
            + f' or "{KEEP_TRIAL_DIRS[-1]}"',
            defaults.keep_trial_dirs,
        ),
        heartbeat=c.duration(table, "heartbeat", "run", defaults.heartbeat),
    )


def _devices(c: Checker, table: Mapping[str, Any]) -> tuple[str, ...]:
    """``[run] devices``: one entry per worker slot, as strings (``7`` is read as ``"7"``)."""
    if "devices" not in table:
        return ()
    value = table["devices"]
    if not isinstance(value, list) or not value:
        c.add(
            "run.devices",
            f'must be a non-empty array like ["0", "1"], one entry per worker, got '
            f"{describe(value)}; leave it out to run without devices",
        )
        return ()
    entries = []
    for index, item in enumerate(value):
        entry, problem = parse_device_entry(item)
        if problem:
            c.add(join("run.devices", index), problem)
        else:
            entries.append(entry)
    return tuple(entries)
