"""Fixtures shared by the whole suite; keep them small and generic (helpers: tests/helpers.py)."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import OBJECTIVES, run_cli


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
    """``optspec_cli(*args, cwd=None, timeout=120)``: the real command line, in a fresh
    interpreter (:func:`tests.helpers.run_cli`)."""
    return run_cli


# -- real servers for the storage tests (.ci/services starts them) ---------------------------


def _server_url(variable: str, what: str) -> str:
    url = os.environ.get(variable)
    if url:
        return url
    if os.environ.get("CI") == "true":
        pytest.fail(f"{variable} is not set: CI must run a {what} server (.ci/run starts one)")
    pytest.skip(f'no {what} server: set {variable}, e.g. eval "$(.ci/services)"')


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose search path is a schema of this test's own, dropped afterwards."""
    import sqlalchemy

    base = _server_url("OPTSPEC_TEST_POSTGRES_URL", "PostgreSQL")
    schema = f"test_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(base, poolclass=sqlalchemy.pool.NullPool)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in base else "?"
    try:
        yield f"{base}{separator}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis URL whose database is emptied before and after the test."""
    import redis

    url = _server_url("OPTSPEC_TEST_REDIS_URL", "Redis")
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def study_dir(tmp_path: Path) -> Path:
    """``tmp_path`` with ``objectives.py`` (:data:`tests.helpers.OBJECTIVES`) in it."""
    (tmp_path / "objectives.py").write_text(OBJECTIVES)
    return tmp_path
