"""`burstctl status`, `events` (also --follow) and `pause/resume/drain` against a running status endpoint
(uvicorn on a free loopback port), and clean one-line errors when something is wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.cli.main import main
from controller.status.app import StatusServer, create_app
from tests.support.net import free_port
from tests.support.status_source import MemoryStatusSource

TOKEN = "cli-test-token-0123456789abcdef"
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def source() -> MemoryStatusSource:
    return MemoryStatusSource(events=30)


@pytest.fixture
def server(source: MemoryStatusSource) -> Iterator[StatusServer]:
    srv = StatusServer(create_app(source, TOKEN, status_ttl=0.0), "127.0.0.1", free_port())
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def config(tmp_path: Path, server: StatusServer) -> Path:
    token = tmp_path / "status.token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    cfg = tmp_path / "controller.yaml"
    cfg.write_text(f"controller_id: t1\nstatus:\n  listen: 127.0.0.1:{server.port}\n  token_file: {token}\n")
    return cfg


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_status_table(capsys: pytest.CaptureFixture[str], server: StatusServer,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal: no cell wraps
    rc, out, err = run(capsys, "status", "--url", server.url, "--instances")
    assert rc == 0, err
    assert "controller dc1-burst" in out and "active" in out and "ready" in out
    assert "policy error: /etc/p/bad.yaml:3:5" in out
    for text in ("web", "api", "80 workload_cpu", "scale out to 2", "booting=1 serving=2", "1.24/h of 20.00/h",
                 "web: scale out to 2: cpu 81% > 75% for 2m", "DescribeInstances throttled", "i-web0"):
        assert text in out, text


def test_status_piped_is_not_folded_to_80_columns(capsys: pytest.CaptureFixture[str], server: StatusServer,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a terminal and no COLUMNS (a pipe, a file, a cron mail): each policy is one table line, not a
    dozen folded ones."""
    monkeypatch.delenv("COLUMNS", raising=False)
    rc, out, err = run(capsys, "status", "--url", server.url, "--instances")
    assert rc == 0, err
    rows = [line for line in out.splitlines() if line.startswith("│ ")]
    assert [r.split("│")[1].strip() for r in rows[:2]] == ["web", "api"], out
    assert "80 workload_cpu" in rows[0] and "1.24/h of 20.00/h" in rows[0] and "booting=1 serving=2" in rows[0], out


def test_a_shadow_policy_reads_as_shadow_with_what_it_would_do(capsys: pytest.CaptureFixture[str],
                                                                server: StatusServer, source: MemoryStatusSource,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    source.policies["api"] = source.policies["api"].model_copy(update={"mode": "shadow"})
    rc, out, err = run(capsys, "status", "--url", server.url)
    assert rc == 0, err
    [api_row] = [line for line in out.splitlines() if line.startswith("│ api")]
    [web_row] = [line for line in out.splitlines() if line.startswith("│ web")]
    assert "would scale out to 2 (shadow)" in api_row and api_row.rstrip(" │").endswith("shadow"), api_row
    assert "would" not in web_row and "shadow" not in web_row, web_row
    assert "api: would scale out to 2 (shadow): cpu 81% > 75% for 2m" in out
    rc, out, _ = run(capsys, "status", "--url", server.url, "--policy", "api", "--json")
    assert rc == 0 and json.loads(out)["mode"] == "shadow"


def test_status_json_and_one_policy(capsys: pytest.CaptureFixture[str], server: StatusServer,
                                    config: Path) -> None:
    rc, out, _ = run(capsys, "status", "--config", str(config), "--json")  # URL from the config
    assert rc == 0 and json.loads(out)["controller_id"] == "dc1-burst"
    rc, out, _ = run(capsys, "status", "--url", server.url, "--policy", "api", "--json")
    assert rc == 0 and json.loads(out)["name"] == "api"
    rc, _, err = run(capsys, "status", "--url", server.url, "--policy", "nope")
    assert rc == 1 and "no policy named 'nope' (HTTP 404)" in err


def test_events_table_json_and_filters(capsys: pytest.CaptureFixture[str], server: StatusServer) -> None:
    rc, out, _ = run(capsys, "events", "--url", server.url, "--limit", "5")
    assert rc == 0 and "event 30" in out and "event 26" in out and "event 25" not in out
    # not a terminal: one tab-separated line per event, whole (grep finds a message in one line)
    rows = [line.split("\t") for line in out.splitlines()]
    assert len(rows) == 5 and all(len(r) == 5 for r in rows), out
    assert [r[0] for r in rows] == ["26", "27", "28", "29", "30"] and rows[-1][4].startswith("event 30"), out
    rc, out, _ = run(capsys, "events", "--url", server.url, "--json", "--policy", "web", "--cursor", "0",
                     "--limit", "1000")
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 15 and all(e["policy"] == "web" for e in lines)
    rc, _, err = run(capsys, "events", "--url", server.url, "--limit", "0")
    assert rc == 2 and "--limit must be from 1 to 1000" in err


def test_pause_resume_drain_with_token(capsys: pytest.CaptureFixture[str], server: StatusServer,
                                       source: MemoryStatusSource, config: Path, tmp_path: Path) -> None:
    rc, out, err = run(capsys, "pause", "web", "--config", str(config))
    assert rc == 0, err
    assert "policy web paused" in out
    rc, out, _ = run(capsys, "drain", "api", "--url", server.url, "--token-file", str(tmp_path / "status.token"),
                     "--json")
    assert rc == 0 and json.loads(out)["action"] == "drain"
    rc, out, _ = run(capsys, "resume", "web", "--config", str(config))
    assert rc == 0
    assert source.calls == [("pause", "web"), ("drain", "api"), ("resume", "web")]
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-token-at-all")
    wrong.chmod(0o600)
    rc, _, err = run(capsys, "pause", "web", "--url", server.url, "--token-file", str(wrong))
    assert rc == 1 and "wrong bearer token (HTTP 403)" in err
    wrong.chmod(0o644)
    rc, _, err = run(capsys, "pause", "web", "--url", server.url, "--token-file", str(wrong))
    assert rc == 2 and "accessible by other users" in err
    rc, _, err = run(capsys, "pause", "web", "--url", server.url, "--config", str(tmp_path / "none.yaml"))
    assert rc == 2 and "no such file" in err
    rc, _, err = run(capsys, "pause", "Bad_Name", "--url", server.url, "--token-file", str(config.parent / "status.token"))
    assert rc == 2 and "is not a policy name" in err
    assert len(source.calls) == 3


def _burstctl(*argv: str, **kw: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "controller.cli.main", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO, **kw)  # type: ignore[call-overload]


def test_connection_refused_is_one_clean_line() -> None:
    proc = _burstctl("status", "--url", f"http://127.0.0.1:{free_port()}")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and out == ""
    assert err.strip().count("\n") == 0, err  # one line, no traceback
    assert "cannot reach the controller at http://127.0.0.1:" in err and "connection refused" in err


def test_events_follow_prints_new_events(server: StatusServer, source: MemoryStatusSource) -> None:
    proc = _burstctl("events", "--url", server.url, "--follow", "--json", "--limit", "1", "--interval", "0.2")
    try:
        first = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        assert first["id"] == 30
        time.sleep(0.5)
        source.add_event("web", "launched i-new")
        source.add_event("api", "drained i-old")
        got = [json.loads(proc.stdout.readline())["message"] for _ in range(2)]  # type: ignore[union-attr]
        assert got == ["launched i-new", "drained i-old"]
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
