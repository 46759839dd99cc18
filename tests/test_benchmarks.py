"""The benchmarks still run: a smoke run of each at its smallest sizes (no timing is checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.slow
def test_bench_scale_runs_quick() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_scale.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stderr
    for section in ("1. ", "2. one trial", "3. ", "4. dump_to_sqlite", "5. optspec resume"):
        assert section in result.stdout
