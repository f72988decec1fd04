"""The backup and restore procedures of docs/operations.md, run as written against the real databases:
`sqlite3 STATE ".backup FILE"` while the controller writes, and pg_dump / pg_restore on PostgreSQL 15. The
restored database opens in StateStore (no migration needed) with the journal and history intact, and
`burstctl history` reads a backup file directly."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from controller.cli.main import main
from controller.store.models import IntentState
from controller.store.state import StateStore, sqlite_url
from tests.controller.conftest import PG_URL, _pg_admin

pytestmark = pytest.mark.timeout(60)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=False, capture_output=True, text=True, timeout=60)


def _fill(store: StateStore) -> str:
    """A journal entry and some history; returns the pending launch intent's id."""
    [(_, intent)] = store.plan_replicas("web", 1, spec_hash="h", reason="backup test")
    for i in range(20):
        store.record_sample("web", at=time.time() - 600 + i * 15, value=50.0 + i, ok=True, source="host_cpu")
    store.record_event("note", "before the backup", policy="web")
    return intent.id


def test_sqlite_online_backup_while_the_controller_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert shutil.which("sqlite3"), "sqlite3 missing: scripts/services.sh install"
    live = tmp_path / "state.db"
    store = StateStore(sqlite_url(live))
    intent_id = _fill(store)
    stop = threading.Event()

    def keep_writing() -> None:  # the daemon does not stop for a backup
        n = 0
        while not stop.is_set():
            store.record_event("tick", f"write {n} during the backup", policy="web")
            n += 1

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        backup = tmp_path / "backup" / "state.db"
        backup.parent.mkdir()
        done = _run("sqlite3", str(live), f".backup '{backup}'")
        assert done.returncode == 0, done.stderr
    finally:
        stop.set()
        writer.join()
        store.close()
    check = _run("sqlite3", str(backup), "PRAGMA integrity_check")
    assert check.stdout.strip() == "ok"

    # `burstctl history` reads the backup file as it is
    assert main(["history", "--policy", "web", "--state-url", sqlite_url(backup), "--since", "1h"]) == 0
    assert "policy web: 20 samples" in capsys.readouterr().out

    # restore: the file replaces state.db, and stale -wal/-shm files of the old database must go too
    for suffix in ("", "-wal", "-shm"):
        Path(f"{live}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(backup, live)
    restored = StateStore(sqlite_url(live))
    try:
        intent = restored.intent(intent_id)
        assert intent is not None and intent.state == IntentState.PENDING  # resumed at the next start
        assert len(restored.samples("web", 0)) == 20
        assert restored.count("events") >= 1
    finally:
        restored.close()


def test_postgresql_pg_dump_and_pg_restore(pg_url: str, tmp_path: Path) -> None:
    for tool in ("pg_dump", "pg_restore"):
        assert shutil.which(tool), f"{tool} missing: scripts/services.sh install (postgresql)"
    store = StateStore(pg_url)
    try:
        intent_id = _fill(store)
        events = store.count("events")
    finally:
        store.close()
    libpq = pg_url.replace("postgresql+psycopg://", "postgresql://")  # pg_dump takes a libpq URL
    dump = tmp_path / "state.dump"
    target = f"burst_r_{uuid.uuid4().hex[:10]}"
    try:
        done = _run("pg_dump", "--format=custom", f"--file={dump}", libpq)
        assert done.returncode == 0, done.stderr
        with _pg_admin() as conn:
            conn.execute(f'CREATE DATABASE "{target}"')
        target_url = f"{PG_URL.rpartition('/')[0]}/{target}"
        done = _run("pg_restore", "--no-owner", "--exit-on-error",
                    f"--dbname={target_url.replace('postgresql+psycopg://', 'postgresql://')}", str(dump))
        assert done.returncode == 0, done.stderr
        restored = StateStore(target_url)
        try:
            intent = restored.intent(intent_id)
            assert intent is not None and intent.state == IntentState.PENDING
            assert len(restored.samples("web", 0)) == 20 and restored.count("events") == events
            restored.record_event("note", "after the restore")  # ids continue: sequences were restored
        finally:
            restored.close()
    finally:
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')
