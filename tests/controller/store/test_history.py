"""`burstctl history`: the samples recorded through the real StateStore (SQLite and PostgreSQL) exported as
a trace that `burstctl simulate --trace` accepts; the database is only read; errors name what is wrong."""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.cli.main import main
from controller.sim.trace import load_trace
from controller.store.history import read_samples
from controller.store.state import StateStore, sqlite_url
from tests.controller.conftest import PG_URL, _pg_admin

ROOT = Path(__file__).resolve().parents[3]
WEB_POLICY = ROOT / "deploy" / "policies.d" / "web.yaml"
T0 = float(int(time.time()) - 3000)  # a whole second, within the default 24h


def _record(store: StateStore, n: int = 200) -> None:
    """Fifty minutes of a policy's samples every 15 s (a peak in the middle), plus what an export must
    handle: a failed sample, two samples in one second, another policy, and a sample older than --since."""
    for i in range(n):
        value = 40.0 + (45.0 if 80 <= i < 120 else 0.0) + (i % 7) * 0.5
        store.record_sample("web", at=T0 + 15 * i, value=value, ok=True, source="workload_cpu",
                            replicas=2 if 85 <= i < 130 else 0)
    store.record_sample("web", at=T0 + 15 * 10 + 5, value=None, ok=False, source="workload_cpu", error="timeout")
    store.record_sample("web", at=T0 + 15 * 20 + 0.4, value=12.5, ok=True, source="workload_cpu")  # same second as i=20
    store.record_sample("api", at=T0, value=1.0, ok=True, source="prometheus")
    store.record_sample("web", at=T0 - 3 * 86400, value=7.0, ok=True, source="workload_cpu")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def recorded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One recorded database per backend for the module (the tests only read it)."""
    if request.param == "sqlite":
        url = sqlite_url(tmp_path_factory.mktemp("history") / "state.db")
        name = None
    else:
        name = f"burst_t_{uuid.uuid4().hex[:10]}"
        with _pg_admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"{PG_URL.rpartition('/')[0]}/{name}"
    try:
        store = StateStore(url)
        try:
            _record(store)
        finally:
            store.close()
        yield url
    finally:
        if name is not None:
            with _pg_admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_export_is_a_trace_the_simulator_replays(recorded: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "web.csv"
    assert main(["history", "--policy", "web", "--export", str(out), "--state-url", recorded]) == 0
    assert "exported 200 samples of policy web" in capsys.readouterr().err
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["timestamp", "value"]
    assert len(rows) == 201  # 200 seconds with a usable sample; the failed one and the 3-day-old one left out
    assert rows[1] == [time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(T0)), "40.0"]
    assert rows[21][1] == "12.5"  # two samples in one second: the later one
    trace = load_trace(out)
    assert trace.times[0] == T0 and trace.times[-1] == T0 + 15 * 199
    assert max(trace.values) == pytest.approx(88.0)

    assert main(["simulate", "--policy", str(WEB_POLICY), "--trace", str(out), "--json",
                 "--boot-delay", "30s", "--interval", "15s"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report  # the simulator read the exported trace and produced its report


def test_since_and_standard_output(recorded: str, capsys: pytest.CaptureFixture[str]) -> None:
    since = str(T0 + 15 * 190)  # epoch seconds
    assert main(["history", "--policy", "web", "--export", "-", "--since", since, "--state-url", recorded]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "timestamp,value" and len(lines) == 11
    assert main(["history", "--policy", "web", "--export", "-", "--since", "1d", "--state-url", recorded]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 201


def test_summary_without_export(recorded: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "--policy", "web", "--state-url", recorded]) == 0
    out = capsys.readouterr().out
    assert "policy web: 202 samples" in out and "max 88" in out and "cloud replicas: max 2" in out
    assert "failed samples: 1" in out


def test_unknown_policy_names_the_policies_that_have_samples(recorded: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "--policy", "shop", "--export", "-", "--state-url", recorded]) == 1
    err = capsys.readouterr().err
    assert "no samples of policy 'shop'" in err and "policies with samples since then: api, web" in err
    assert "Traceback" not in err


def test_the_state_url_comes_from_the_controller_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "state.db"
    store = StateStore(sqlite_url(db))
    _record(store, n=30)
    store.close()
    config = tmp_path / "controller.yaml"
    text = (ROOT / "deploy" / "controller.yaml").read_text()
    config.write_text(text.replace("sqlite:////var/lib/burst-controller/state.db", sqlite_url(db)))
    out = tmp_path / "out.csv"
    assert main(["history", "--policy", "web", "--export", str(out), "--config", str(config)]) == 0
    assert len(load_trace(out).times) == 30


def test_the_database_is_only_read(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    store = StateStore(sqlite_url(db))
    _record(store, n=30)
    store.close()
    with sqlite3.connect(db) as conn:  # fold the WAL in so the main file holds everything
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    found = read_samples(sqlite_url(db), "web", T0 - 1)
    assert len(found.samples) == 32
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


@pytest.mark.parametrize("setup,message", [
    ("missing", "no state database at"),
    ("empty", "is not a burst-controller state database"),
])
def test_a_wrong_database_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: str,
                                           message: str) -> None:
    db = tmp_path / "state.db"
    if setup == "empty":
        sqlite3.connect(db).close()
    out = tmp_path / "out.csv"
    assert main(["history", "--policy", "web", "--export", str(out), "--state-url", sqlite_url(db)]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()  # nothing half-written


def test_a_bad_since_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["history", "--policy", "web", "--since", "yesterday", "--state-url", "sqlite:////nonexistent"])
    assert exc.value.code == 2
    assert "neither a duration" in capsys.readouterr().err


def test_all_failed_samples_is_said_not_exported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "state.db"
    store = StateStore(sqlite_url(db))
    store.record_sample("web", at=T0, value=None, ok=False, source="haproxy", error="socket gone")
    store.close()
    out = tmp_path / "out.csv"
    assert main(["history", "--policy", "web", "--export", str(out), "--state-url", sqlite_url(db)]) == 1
    assert "nothing to export" in capsys.readouterr().err and not out.exists()
