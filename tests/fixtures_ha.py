"""Fixtures of the leader-election and HA tests: a state database URL on SQLite and on the real PostgreSQL.

On PostgreSQL each test gets its own schema (``search_path`` in the URL) in one database made for the
session: creating a database per test costs 1-3 s, a schema a few milliseconds."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

PG_URL = os.environ.get("BURST_PG_URL", "postgresql+psycopg://burst:burst@127.0.0.1:25432/postgres")


def _connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


@pytest.fixture(scope="session")
def ha_pg_database() -> Iterator[str]:
    """A database of its own on the real PostgreSQL 15 (scripts/services.sh), dropped after the session."""
    name = f"burst_ha_{uuid.uuid4().hex[:10]}"
    with _connect(PG_URL) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = PG_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with _connect(PG_URL) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def ha_pg_url(ha_pg_database: str) -> Iterator[str]:
    """A fresh, empty schema in the session's database: a URL whose connections use only it."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with _connect(ha_pg_database) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{ha_pg_database}?options=-csearch_path%3D{schema}"
    finally:
        with _connect(ha_pg_database) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgresql"])
def lease_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A state database URL, once on SQLite (a file) and once on PostgreSQL (a schema)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return str(request.getfixturevalue("ha_pg_url"))
