"""Fixtures of the controller tests: a state store on SQLite AND on the real PostgreSQL (one fresh database
per test), so every state test runs on both backends."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from controller.store.state import StateStore, sqlite_url

PG_URL = os.environ.get("BURST_PG_URL", "postgresql+psycopg://burst:burst@127.0.0.1:25432/postgres")


def _pg_admin() -> psycopg.Connection:
    return psycopg.connect(PG_URL.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database on the real PostgreSQL 15 (started by scripts/services.sh), dropped afterwards."""
    name = f"burst_t_{uuid.uuid4().hex[:10]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = PG_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "state.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(state_url: str) -> Iterator[StateStore]:
    s = StateStore(state_url)
    try:
        yield s
    finally:
        s.close()
