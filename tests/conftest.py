"""Fixtures shared by the whole suite; keep them small and generic."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[..., Path]:
    """``write_spec(text, name="study.toml")``: write a spec into ``tmp_path``, return its path."""

    def write(text: str, name: str = "study.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def optspec_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``optspec_cli(*args, cwd=None)``: the real command line, in a fresh interpreter."""

    def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "optspec", *map(str, args)],
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=60,
        )

    return run
