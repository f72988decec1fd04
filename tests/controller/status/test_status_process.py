"""The status endpoint in its own process (controller/status/process.py, child.py, snapshot.py):
it answers exactly as the in-thread app over the same source (fast path and forwarded requests alike), an
operator action is visible in the next read, standby and busy-store answers keep their meaning, a killed
status process is replaced, and a killed daemon takes its status process with it (the port is freed)."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from controller.errors import StateBusyError
from controller.status.app import StatusServer, create_app
from controller.status.process import StatusProcess
from controller.status.snapshot import EVENTS_WINDOW, SnapshotBuilder
from tests.support.net import free_port
from tests.support.status_source import MemoryStatusSource

TOKEN = "process-token-0123456789abcdef"
ROOT = Path(__file__).resolve().parents[3]


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def pair() -> Iterator[tuple[MemoryStatusSource, httpx.Client, httpx.Client, StatusProcess]]:
    """The same source behind the status process and behind the in-thread app (the reference)."""
    source = MemoryStatusSource(events=2500)  # more than a snapshot's window: some pages are forwarded
    proc = StatusProcess(source, TOKEN, "127.0.0.1", free_port(), interval=0.1)
    ref = StatusServer(create_app(source, TOKEN, status_ttl=0.0), "127.0.0.1", free_port())
    proc.start()
    ref.start()
    try:
        with httpx.Client(base_url=proc.url, trust_env=False, timeout=10) as a, \
                httpx.Client(base_url=ref.url, trust_env=False, timeout=10) as b:
            yield source, a, b, proc
    finally:
        proc.stop()
        ref.stop()


def _same(path: str, a: httpx.Response, b: httpx.Response) -> None:
    assert a.status_code == b.status_code, (path, a.status_code, b.status_code, a.text[:200])
    assert a.headers["content-type"] == b.headers["content-type"], path
    if a.headers["content-type"].startswith("application/json"):
        ja, jb = a.json(), b.json()
        if isinstance(ja, dict):  # the memory source stamps started_at afresh on every call
            ja.pop("started_at", None)
            jb.pop("started_at", None)
        assert ja == jb, path
    elif not path.startswith("/metrics"):
        assert a.content == b.content, path


READS = [
    "/healthz", "/readyz", "/v1/status", "/v1/policies/web", "/v1/policies/api", "/v1/policies/nope",
    "/v1/policies/Bad_Name", "/v1/events", "/v1/events?limit=5", "/v1/events?limit=1000", "/v1/events?cursor=0",
    "/v1/events?cursor=0&limit=1000", "/v1/events?cursor=2400&limit=50", "/v1/events?cursor=2400&policy=web",
    "/v1/events?policy=api&limit=1000", "/v1/events?cursor=99999", "/v1/events?cursor=1499&limit=3",
    "/v1/events?cursor=1500&limit=3", "/v1/events?limit=0", "/v1/events?cursor=-1", "/v1/events?limit=abc",
    "/v1/events?policy=Bad_Name", "/v1/events?limit=5&limit=7", "/v1/events?limit=05&other=1",
    "/v1/status?x=1", "/openapi.json", "/", "/ui/dashboard.js", "/ui/nope.js", "/v1/policies/web/history",
    "/v1/policies/nope/history", "/v1/policies/web/history?limit=3", "/v1/policies/web/history?since=1&limit=4",
    "/v1/policies/web/history?limit=0", "/v1/policies/web/history?limit=5001", "/v1/policies/web/history?since=x",
    "/v1/policies/api/history?since=0&limit=5000", "/v1/policies/web/history?limit=2&limit=3",
]


def test_answers_as_the_in_thread_app(pair: tuple[MemoryStatusSource, httpx.Client, httpx.Client,
                                                   StatusProcess]) -> None:
    _, proc, ref, _ = pair
    for path in READS:
        _same(path, proc.get(path), ref.get(path))
    m = proc.get("/metrics")  # the daemon's exposition, rendered into the snapshot
    assert m.status_code == 200 and 'burst_replicas{policy="web",state="serving"} 2.0' in m.text
    assert "burst_api_calls_total" in m.text and m.headers["content-type"] == ref.get("/metrics").headers["content-type"]


def test_history_is_answered_from_the_status_process_window() -> None:
    """Bounded (24 h, pages of at most ``limit``), fed by the snapshots: the daemon's ``history`` is never
    called, and a sample recorded after start is served once the next snapshot came."""
    class NoHistory(MemoryStatusSource):
        def history(self, policy: str, since: float, limit: int) -> list[Any]:
            raise AssertionError("history was read in the daemon")

    source = NoHistory()
    source.samples.append((500, "web", time.time() - 90_000, 1.0, 1.0, 1))  # older than the 24 h served
    sp = StatusProcess(source, TOKEN, "127.0.0.1", free_port(), interval=0.1)
    sp.start()
    try:
        with httpx.Client(base_url=sp.url, trust_env=False, timeout=10) as c:
            everything = c.get("/v1/policies/web/history?since=1").json()
            assert len(everything) == 10 and all(p["at"] > time.time() - 86_400 for p in everything)
            pages, since = [], 1.0
            while True:  # paging: since just after the last point
                page = c.get(f"/v1/policies/web/history?since={since:.6f}&limit=4").json()
                pages += page
                if len(page) < 4:
                    break
                since = page[-1]["at"] + 1e-6
            assert pages == everything
            # odd spellings go through the app, which reads the same window
            assert c.get("/v1/policies/web/history?since=1e0&limit=4").json() == everything[:4]
            source.samples.append((501, "web", time.time(), 99.0, 100.0, 3))
            deadline = time.monotonic() + 10
            while c.get("/v1/policies/web/history?limit=5000").json()[-1]["value"] != 99.0:
                assert time.monotonic() < deadline, "a new sample never reached the status process"
                time.sleep(0.1)
            assert c.get("/v1/policies/nope/history").status_code == 404
    finally:
        sp.stop()


def test_operator_actions_and_tokens(pair: tuple[MemoryStatusSource, httpx.Client, httpx.Client,
                                                 StatusProcess]) -> None:
    source, proc, _, sp = pair
    url = "/v1/policies/web/pause"
    assert proc.post(url).status_code == 401
    assert proc.post(url, headers=auth(TOKEN[:-1])).status_code == 403
    assert proc.post(url, headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    assert source.calls == []  # nothing reached the controller
    r = proc.post(url, headers=auth())
    assert r.status_code == 200 and r.json()["action"] == "pause" and source.calls == [("pause", "web")]
    assert proc.get("/v1/policies/web").json()["paused"] is True  # visible in the very next read
    assert proc.post("/v1/policies/nope/drain", headers=auth()).status_code == 404
    assert proc.post("/v1/policies/Bad_Name/drain", headers=auth()).status_code == 422
    assert proc.post("/v1/policies/web/resume", headers=auth()).status_code == 200
    assert proc.get("/v1/status").json()["policies"][0]["paused"] is False
    # the status process holds no secret of the daemon's: neither in its arguments nor in its environment
    assert sp.pid is not None
    child = psutil.Process(sp.pid)
    assert TOKEN not in " ".join(child.cmdline()) and TOKEN not in json.dumps(child.environ())
    assert child.nice() == 10


def test_events_pages_from_the_snapshot_follow_the_source() -> None:
    rng = random.Random(7)
    for count in (0, 40, EVENTS_WINDOW + 300):
        source = MemoryStatusSource(events=count)
        snap = SnapshotBuilder(source).build()
        assert snap.events_complete is (count < EVENTS_WINDOW)
        answered = 0
        for _ in range(400):
            cursor = rng.choice([None, 0, rng.randrange(0, count + 5)])
            limit, policy = rng.choice([1, 5, 100, 1000]), rng.choice([None, "web", "api", "other"])
            body = snap.events_page(cursor=cursor, limit=limit, policy=policy)
            if body is None:  # outside the window: the daemon answers it
                assert count >= EVENTS_WINDOW
                continue
            answered += 1
            assert json.loads(body) == source.events(cursor=cursor, limit=limit, policy=policy).model_dump(), \
                (count, cursor, limit, policy)
        assert answered > 100


def test_standby_is_read_only() -> None:
    source = MemoryStatusSource(role="standby")
    sp = StatusProcess(source, TOKEN, "127.0.0.1", free_port(), interval=0.1)
    sp.start()
    try:
        with httpx.Client(base_url=sp.url, trust_env=False, timeout=10) as c:
            r = c.get("/readyz")
            assert r.status_code == 503 and r.json()["reason"].startswith("standby") and r.json()["role"] == "standby"
            assert c.get("/v1/status").json()["role"] == "standby"
            r = c.post("/v1/policies/web/drain", headers=auth())
            assert r.status_code == 409 and "standby" in r.json()["detail"]
            assert c.post("/v1/policies/web/drain").status_code == 401
    finally:
        sp.stop()


class _BusySource(MemoryStatusSource):
    def status(self):  # type: ignore[no-untyped-def]
        raise StateBusyError("database is locked")

    def ready(self) -> tuple[bool, str]:
        return False, "state store busy or unreachable in the last 30s"


def test_busy_state_store_is_503_and_readyz_says_so() -> None:
    sp = StatusProcess(_BusySource(), TOKEN, "127.0.0.1", free_port(), interval=0.1)
    sp.start()
    try:
        with httpx.Client(base_url=sp.url, trust_env=False, timeout=10) as c:
            r = c.get("/v1/status")
            assert r.status_code == 503 and r.headers["retry-after"] == "1" and "locked" in r.json()["detail"]
            r = c.get("/readyz")
            assert r.status_code == 503 and "busy" in r.json()["reason"] and r.json()["role"] is None
            m = c.get("/metrics")  # counters are still served
            assert m.status_code == 200 and "burst_api_calls_total" in m.text
            assert c.get("/healthz").status_code == 200
    finally:
        sp.stop()


class _SlowSource(MemoryStatusSource):
    """A status that takes 60 ms to read, as a big fleet's does (0.23 s at 5,000 replicas)."""

    def status(self):  # type: ignore[no-untyped-def]
        time.sleep(0.06)
        return super().status()


def test_slow_builds_stretch_the_interval_and_the_answers_say_how_old_they_may_be() -> None:
    """Builds of 60 ms with a 0.1 s interval would keep the daemon building ~60% of the time under steady
    requests; the interval grows to 10 x the build time (BUILD_SHARE), and no answer is older than what
    each snapshot promised (2 x that interval). The memory source stamps ``started_at`` at each build (as
the build time less 100 s)."""
    sp = StatusProcess(_SlowSource(), TOKEN, "127.0.0.1", free_port(), interval=0.1)
    sp.start()
    try:
        before = len(sp.build_spans)
        worst = 0.0
        with httpx.Client(base_url=sp.url, trust_env=False, timeout=10) as c:
            t_end = time.monotonic() + 4.0
            while time.monotonic() < t_end:
                sent = time.time()  # the age that counts is the answer's when asked: not the wait for a CPU
                r = c.get("/v1/status")
                assert r.status_code == 200
                worst = max(worst, sent - (r.json()["started_at"] + 100))  # built 100 s after it
                time.sleep(0.01)
        builds = len(sp.build_spans) - before
        interval = sp.effective_interval()
        assert interval >= 0.5  # 10 x ~60 ms
        assert 2 <= builds <= 4.0 / 0.5 + 2, builds  # at the configured 0.1 s it would be ~25
        assert worst <= 2 * interval + 0.3, (worst, interval)  # the promise, plus one build and a request
    finally:
        sp.stop()


def test_a_killed_status_process_is_replaced() -> None:
    sp = StatusProcess(MemoryStatusSource(), TOKEN, "127.0.0.1", free_port(), interval=0.1)
    sp.start()
    try:
        first = sp.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{sp.url}/v1/status", trust_env=False, timeout=2).status_code == 200 \
                        and sp.pid != first:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the status process was not replaced"
            time.sleep(0.2)
    finally:
        sp.stop()
    assert not psutil.pid_exists(sp.pid or 0) or psutil.Process(sp.pid or 0).status() == psutil.STATUS_ZOMBIE


_PARENT = """
import sys, time
sys.path.insert(0, {root!r})
from controller.status.process import StatusProcess
from tests.support.status_source import MemoryStatusSource
sp = StatusProcess(MemoryStatusSource(), "parent-token-0123456789", "127.0.0.1", {port})
sp.start()
print("PID", sp.pid, flush=True)
time.sleep(120)
"""


def test_the_status_process_dies_with_the_daemon() -> None:
    port = free_port()
    parent = subprocess.Popen([sys.executable, "-c", _PARENT.format(root=str(ROOT), port=port)],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert parent.stdout is not None
        line = ""
        while not line.startswith("PID "):  # the status process logs to the same stdout
            line = parent.stdout.readline()
            assert line, "the daemon stand-in exited"
        child = int(line.split()[1])
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", trust_env=False, timeout=5).status_code == 200
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 5
        while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the status process outlived the daemon"
            time.sleep(0.05)
        deadline = time.monotonic() + 3
        while True:  # a restarted daemon can listen on the port again (StatusProcess.start retries 5 s)
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                    s.listen()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the port is still held after the daemon died"
                    time.sleep(0.1)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
