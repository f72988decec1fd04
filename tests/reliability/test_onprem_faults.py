"""On-prem faults under a running `burstctl run` that holds two cloud replicas because its workload is busy.
The workload's on-prem host is a PRIVATE Docker Engine (tests/reliability/dockerd.py), the policy reads
workload_cpu from it; the shared engine that scripts/services.sh started is never restarted (that would kill
other people's test containers). In turn:

1. the private engine stops (the metrics source is down) and comes back (its container restarts): the
   controller reports the metric error in its status, holds the two replicas (never scales in on missing
   data), and picks the readings up again;
2. HAProxy is reloaded (it forgets the servers added at run time): reconcile puts them back;
3. the state database is locked by another connection (BEGIN EXCLUSIVE): the controller reports not
   ready (state store busy), keeps answering its status, holds, and writes again once the lock goes;
4. the state database's filesystem is full (a 24 MB tmpfs mounted for it, filled up): same;
and at the end the workload goes idle and the controller scales in and releases everything: it acts again.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lab.lab import Lab
from lab.parts import DOCKER_HOST, WORKLOAD_CMD
from tests.reliability.dockerd import PrivateDockerd
from tests.reliability.harness import Invariants, Journal, record, reliability_policy, wait_for
from tests.support.controller_process import ControllerProcess

RECONCILE = 2.0
# the lab's workload (busybox httpd with a CGI page) plus a CPU burner that runs while /tmp/busy exists
BUSY_CMD = WORKLOAD_CMD.replace("& trap", "& (touch /tmp/busy; while :; do if [ -f /tmp/busy ]; then :; else "
                                 "sleep 0.5; fi; done) & trap")
HOLD = 3.0 + 4.0 + 4.0  # sustained_in + cooldown.scale_in + margin: a scale-in on missing data would show


@pytest.fixture
def private_engine() -> Iterator[PrivateDockerd]:
    had_docker0 = _has_link("docker0")
    engine = PrivateDockerd()
    try:
        yield engine.start()
    finally:
        engine.remove()
        # the shared engine's bridge must survive the private one (see tests/reliability/dockerd.py)
        assert _has_link("docker0") or not had_docker0, "the private dockerd removed docker0"


def _has_link(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True, check=False).returncode == 0


@pytest.fixture
def statefs(rlab: Lab) -> Iterator[Path]:
    """A 24 MB tmpfs for the state database, so that the test can fill it."""
    path = rlab.root / "statefs"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _status(lab: Lab) -> dict:
    return httpx.get(f"{lab.status_url}/v1/status", timeout=10, trust_env=False).json()


def _web(lab: Lab) -> dict:
    [web] = _status(lab)["policies"]
    return web


def _ready(lab: Lab) -> tuple[int, dict]:
    r = httpx.get(f"{lab.status_url}/readyz", timeout=10, trust_env=False)
    return r.status_code, r.json()


def _scale_ins(lab: Lab) -> int:
    events = httpx.get(f"{lab.status_url}/v1/events", params={"limit": 1000}, timeout=10, trust_env=False).json()
    return sum(e["kind"] == "scale-in" for e in events["events"])


def _hold_two(lab: Lab, seconds: float, what: str) -> None:
    """For ``seconds``: still two cloud replicas serving, and no scale-in decided."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        replicas = _web(lab)["replicas"]
        assert replicas.get("serving") == 2 and sum(replicas.values()) == 2, f"{what}: replicas {replicas}"
        assert _scale_ins(lab) == 0, f"{what}: scaled in"
        time.sleep(0.5)


@contextlib.contextmanager
def _exclusive_lock(db: Path) -> Iterator[None]:
    conn = sqlite3.connect(str(db), timeout=10, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


@contextlib.contextmanager
def _disk_full(directory: Path) -> Iterator[None]:
    """The file system of ``directory`` full for the duration: a filler file written until ENOSPC, and topped
    up every 0.2 s while the phase lasts (SQLite may free space, e.g. a WAL file deleted when its last
    connection closes); removed at the end. A file system already full is a valid start: the filler then
    stays empty, or is not even created when no inode is left. The writes are unbuffered: a buffered file
    keeps the bytes the disk refused and raises ENOSPC again when it is closed."""
    filler = directory / "filler"
    try:
        fd: int | None = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        fd = None
    stop = threading.Event()

    def top_up() -> None:
        while fd is not None:
            try:
                os.write(fd, bytes(1 << 20))  # short writes just go round again
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                if stop.wait(0.2):
                    return

    top_up_thread = threading.Thread(target=top_up, name="disk-filler", daemon=True)
    top_up_thread.start()
    try:
        wait_for("the state file system full", lambda: os.statvfs(directory).f_bavail == 0, 30, 0.1)
        yield
    finally:
        stop.set()
        top_up_thread.join()
        if fd is not None:
            os.close(fd)
        filler.unlink(missing_ok=True)


def test_holds_reports_and_resumes_through_onprem_faults(rlab: Lab, rcontroller: ControllerProcess,
                                                         private_engine: PrivateDockerd, statefs: Path) -> None:
    # the workload on the private engine: the lab's image, pulled from the on-prem registry (so it has a
    # registry digest to replicate), limited to half a CPU, restarted with its engine; busy above 20%
    app = f"prv-{rlab.id}"
    with private_engine.client() as c:
        image = f"{rlab.onprem_registry}/lab/web:1"
        c.images.pull(image)
        c.containers.run(image, ["sh", "-c", BUSY_CMD], name=f"burst-rel-{rlab.id}", detach=True,
                         labels={"app": app}, network_mode="none", nano_cpus=500_000_000,
                         # ten times the CPU weight of other containers (the lab's, other tests' booted
                         # nodes), so that it still gets its half CPU on a loaded machine: measured at load
                         # average 43, the default weight got it 5% of its limit, this one 60%
                         cpu_shares=10_000, restart_policy={"Name": "always"})
    text = reliability_policy(rlab)
    sock = rlab.haproxy_socket
    text = text.replace(f'hosts: ["{DOCKER_HOST}"]', f'hosts: ["{private_engine.url}"]')
    text = text.replace(f"selector: {{app: web-{rlab.id}}}", f"selector: {{app: {app}}}")
    text = text.replace("  source: haproxy\n", "  source: workload_cpu\n")
    text = text.replace(f"  haproxy: {{socket: {sock}, backend: web, stat: sessions}}\n", "")
    text = text.replace("scale_out_above: 6", "scale_out_above: 20").replace("scale_in_below: 2", "scale_in_below: 10")
    assert "workload_cpu" in text and private_engine.url in text and "stat: sessions" not in text
    rlab.policy_path.write_text(text)
    db = statefs / "state.db"
    rlab.config_path.write_text(rlab.config_path.read_text().replace(f"sqlite:///{rlab.root}/state.db",
                                                                     f"sqlite:///{db}"))
    journal = Journal(db)
    inv = Invariants(rlab)
    inv.journal = journal
    figures: dict[str, float] = {}

    rcontroller.start()
    figures["scale_out_s"] = wait_for("two replicas serving on the busy workload",
                                      lambda: len(rlab.cloud_servers()) == 2, 120, 0.3)

    # 1. the on-prem engine (the metrics source) goes away, then comes back
    private_engine.stop()
    t0 = time.monotonic()
    wait_for("the metric error in status", lambda: (_web(rlab)["metric"] or {}).get("ok") is False, 20, 0.3)
    figures["metric_down_reported_s"] = time.monotonic() - t0
    web = _web(rlab)
    assert web["metric"]["error"], web["metric"]
    assert any("metric" in e["message"] for e in web["last_errors"]), web["last_errors"]
    _hold_two(rlab, HOLD, "metrics source down")
    private_engine.start()
    t0 = time.monotonic()
    wait_for("the metric back", lambda: (_web(rlab)["metric"] or {}).get("ok") is True, 40, 0.3)
    figures["metric_back_s"] = time.monotonic() - t0
    _hold_two(rlab, 3.0, "metrics source back")

    # 2. HAProxy reloaded: the servers added at run time are gone until reconcile restores them
    assert rlab.haproxy is not None
    rlab.haproxy.send_signal(signal.SIGUSR2)  # the master re-reads haproxy.cfg
    wait_for("the reload to drop the runtime servers", lambda: len(rlab.cloud_servers()) < 2, 10, 0.1)
    t0 = time.monotonic()
    wait_for("the servers restored", lambda: len(rlab.cloud_servers()) == 2, 2 * RECONCILE + 2, 0.1)
    figures["servers_restored_s"] = time.monotonic() - t0
    assert inv.stray_backends() == []

    # 3. the state database locked by someone else
    with _exclusive_lock(db):
        locked_at = time.time()
        wait_for("not ready: state store busy", lambda: _ready(rlab)[0] == 503, 30, 0.5)
        _code, body = _ready(rlab)
        assert "state store" in body["reason"], body
        assert _web(rlab)["replicas"] == {"serving": 2}  # status still answers (WAL readers are not blocked)
    figures["db_locked_s"] = time.time() - locked_at
    wait_for("writes again after the lock", lambda: _last_sample(journal) > locked_at + figures["db_locked_s"], 20, 0.5)
    _hold_two(rlab, 2.0, "database lock released")

    # 4. the state database's disk full
    with _disk_full(statefs):
        full_at = time.time()
        wait_for("samples to stop (disk full)", lambda: _last_sample(journal) < time.time() - 3, 30, 0.5)
        assert _ready(rlab)[0] == 503
        _hold_two(rlab, HOLD, "disk full")
    freed_at = time.time()
    figures["disk_full_s"] = freed_at - full_at
    wait_for("writes again after the disk is freed", lambda: _last_sample(journal) > freed_at, 30, 0.5)

    # the workload goes idle: the controller acts again, scales in, and releases everything
    with private_engine.client() as c:
        [container] = c.containers.list(filters={"label": f"app={app}"})
        container.exec_run(["rm", "-f", "/tmp/busy"])
    figures["scale_in_s"] = wait_for(f"a full drain ({inv.leaks()})", lambda: not inv.leaks(), 90, 0.5)
    assert rcontroller.terminate() == 0
    logs = "".join((rlab.root / f"controller-{i}.log").read_text() for i in range(1, rcontroller.starts + 1))
    assert "Traceback" not in logs
    assert "state store busy" in logs or "state database unavailable" in logs
    print("onprem faults: " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()))
    record("onprem_faults", **{k: round(v, 1) for k, v in figures.items()}, scale_ins_on_missing_data=0)


def _last_sample(journal: Journal) -> float:
    rows = journal._rows("SELECT MAX(at) AS at FROM metric_samples")
    return float(rows[0]["at"] or 0.0)
