"""The status endpoint's defences, probed with real HTTP against the real status process
(controller/status/guard.py, controller/status/confinement.py): the Host check on every route, the limits on a
request head and on open connections, one log line per kind of refusal and interval, and what the status
process gave up before serving (read from /proc/PID/status)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controller.status.guard import HttpLimits
from controller.status.process import StatusProcess
from tests.support.net import free_port
from tests.support.status_source import MemoryStatusSource

TOKEN = "guard-token-0123456789abcdef"
LIMITS = HttpLimits(max_connections=40, head_timeout=3.0, keep_alive=1, log_interval=5.0)
ROUTES = ["/healthz", "/readyz", "/v1/status", "/v1/policies/web", "/v1/policies/web/history", "/v1/events",
          "/metrics", "/", "/ui/dashboard.js", "/openapi.json", "/docs", "/nothing-here"]


@pytest.fixture
def proc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[StatusProcess]:
    """The status process, its log (the stdout it inherits) in ``tmp_path / "status.log"``."""
    # a credential in the daemon's environment must not reach the status process
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "guard-secret-not-for-the-child")
    sp = StatusProcess(MemoryStatusSource(), TOKEN, "127.0.0.1", free_port(), interval=0.1,
                       allowed_hosts=("status.example.net", "10.1.2.3"), limits=LIMITS)
    saved, log = os.dup(1), os.open(tmp_path / "status.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    try:
        sp.start()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(log)
    try:
        yield sp
    finally:
        sp.stop()


def _raw(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes (or the answer is complete and the socket idles)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return out


def test_every_route_refuses_a_foreign_host(proc: StatusProcess) -> None:
    with httpx.Client(base_url=proc.url, trust_env=False, timeout=10) as c:
        for path in ROUTES:
            r = c.get(path, headers={"Host": f"evil.example:{proc.port}"})
            assert r.status_code == 421, (path, r.status_code)
            assert "status.allowed_hosts" in r.json()["detail"] and len(r.content) < 200
        r = c.post("/v1/policies/web/pause", headers={"Host": "evil.example", "Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 421  # a token does not make a rebound page's request acceptable
        # the listen address, localhost in its three spellings, and the configured names, with the port
        for host in ("127.0.0.1", "localhost", "[::1]", "status.example.net", "STATUS.example.net", "10.1.2.3"):
            for path in ROUTES[:-2]:
                r = c.get(path, headers={"Host": f"{host}:{proc.port}"})
                assert r.status_code in (200, 503), (host, path, r.status_code)  # 503: /readyz of a fresh source
        # the right name on another port is another origin
        assert c.get("/v1/status", headers={"Host": f"127.0.0.1:{proc.port + 1}"}).status_code == 421
    assert b" 421 " in _raw(proc.port, b"GET /v1/status HTTP/1.0\r\n\r\n")  # no Host at all


def test_request_head_limits(proc: StatusProcess) -> None:
    host = f"Host: 127.0.0.1:{proc.port}\r\n".encode()
    big = _raw(proc.port, b"GET /healthz HTTP/1.1\r\n" + host + b"X-Big: " + b"a" * 20_000 + b"\r\n\r\n")
    assert big.startswith(b"HTTP/1.1 431 ")
    many = b"".join(b"X-H%d: 1\r\n" % i for i in range(101))
    assert _raw(proc.port, b"GET /healthz HTTP/1.1\r\n" + host + many + b"\r\n").startswith(b"HTTP/1.1 431 ")
    long_target = b"GET /v1/events?policy=" + b"a" * 5000 + b" HTTP/1.1\r\n" + host + b"\r\n"
    assert _raw(proc.port, long_target).startswith(b"HTTP/1.1 414 ")
    # a 200 MB header is cut off at the limit: the process reads no more of it
    with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\n" + host + b"X-Huge: ")
        sent, answer = 0, b""
        try:
            while sent < 200_000_000:
                s.sendall(b"b" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            answer = s.recv(4096)
        except ConnectionResetError:
            pass
        assert sent < 10_000_000, sent
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431 ")
    with httpx.Client(base_url=proc.url, trust_env=False, timeout=10) as c:
        assert c.get("/healthz").status_code == 200  # still serving


def test_slow_connections_past_the_cap_and_healthz_recovers(proc: StatusProcess, tmp_path: Path) -> None:
    held, started = [], time.monotonic()
    for _ in range(LIMITS.max_connections + 20):  # each sends half a head and stops
        s = socket.create_connection(("127.0.0.1", proc.port), timeout=5)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        held.append(s)
    try:
        # the extra connections were answered 503 at once and closed
        refused = 0
        for s in held[LIMITS.max_connections:]:
            data = s.recv(4096)
            refused += data.startswith(b"HTTP/1.1 503 ")
        assert refused == 20
        # the held ones are closed once their head is late; /healthz answers again within that time
        deadline = time.monotonic() + LIMITS.head_timeout + 5
        while True:
            try:
                r = httpx.get(f"{proc.url}/healthz", trust_env=False, timeout=2)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "healthz did not recover after the slow connections' deadline"
            time.sleep(0.1)
        assert held[0].recv(4096) == b""  # closed by the server, without an answer
    finally:
        for s in held:
            s.close()
    time.sleep(LIMITS.log_interval + 0.5)
    out = (tmp_path / "status.log").read_text()
    lines, events = _logged(out, r"connections open, the cap", "connections refused at the cap")
    assert events >= 20, out[-2000:]  # the 20, and /healthz's tries while the cap held
    assert lines <= 2 * (int((time.monotonic() - started) / LIMITS.log_interval) + 1), out[-2000:]
    assert "closed a connection that sent no complete request head" in out


def _logged(out: str, first: str, kind: str) -> tuple[int, int]:
    """(lines, events) of one kind of refusal in the log: each interval's first line stands for one event,
    its count line (``N more <kind> in the last ...``) for N."""
    firsts = len(re.findall(first, out))
    counts = [int(n) for n in re.findall(rf"(\d+) more {kind} in the last", out)]
    return firsts + len(counts), firsts + sum(counts)


def test_malformed_requests_are_logged_once_per_interval(proc: StatusProcess, tmp_path: Path) -> None:
    started = time.monotonic()
    for _ in range(200):
        assert _raw(proc.port, b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    intervals = int((time.monotonic() - started) / LIMITS.log_interval) + 1
    time.sleep(LIMITS.log_interval + 0.5)
    out = (tmp_path / "status.log").read_text()
    lines, events = _logged(out, r"refused a malformed request \(400\)", "malformed requests")
    assert events == 200, out[-2000:]  # every one counted
    assert lines <= 2 * intervals, out[-2000:]  # a line and a count line per interval, not one per request


def test_status_process_gives_up_its_privileges(proc: StatusProcess) -> None:
    assert proc.pid is not None
    status = dict(line.split(":", 1) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines())
    assert int(status["CapEff"].strip(), 16) == 0 and int(status["CapPrm"].strip(), 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"  # the filter that refuses a new Unix socket (the Docker socket)
    if os.geteuid() == 0:  # permitted here: none left (under the unit setgroups is refused: see confinement.py)
        assert status["Groups"].strip() == ""
    environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
    assert b"ALIBABA_CLOUD" not in environ and b"guard-secret" not in environ


def test_the_daemon_shields_its_memory_from_the_status_process() -> None:
    """``burstctl run`` makes its process undumpable: /proc/PID/{mem,environ,fd} become root's, so the status
    process (same user, no CAP_SYS_PTRACE) cannot read the daemon's credentials there."""
    code = ("import ctypes, time; from controller.status.confinement import shield_daemon; ok = shield_daemon(); "
            "print(ok, ctypes.CDLL(None).prctl(3, 0, 0, 0, 0), flush=True); time.sleep(5)")
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                          cwd=Path(__file__).resolve().parents[3]) as p:
        try:
            assert p.stdout is not None and p.stdout.readline().split() == ["True", "0"]
            assert os.stat(f"/proc/{p.pid}/environ").st_uid == 0  # root's, whoever runs it
        finally:
            p.kill()


_AS_SERVICE = """
import subprocess, sys
from confinement import shield_daemon
def caps():
    rows = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
    return {k: rows[k].strip() for k in ("Groups", "CapEff", "CapPrm", "CapAmb")}
shield_daemon()
print("daemon", caps(), flush=True)
child = "from confinement import confine; missed = confine(); " \\
        "rows = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines()); " \\
        "print('status', missed, {k: rows[k].strip() for k in ('Groups', 'CapEff', 'CapPrm', 'CapAmb')})"
subprocess.run([sys.executable, "-c", child], check=True)
"""
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's: readable by any user, unlike a venv under /root


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to a service-like identity with an ambient capability "
                                               "takes root (CI runs as root)")
def test_with_the_docker_group_drop_in_the_status_process_drops_the_groups_and_the_daemon_lowers_setgid() -> None:
    """What the unit plus deploy/burst-controller-docker-group.conf give the daemon: a non-root user with a
    supplementary group (docker's stand-in) and CAP_SETGID as an ambient capability. The daemon lowers it from
    its effective set and passes it on; the status process drops the group, then every capability.
    controller/status/confinement.py needs only the standard library: a copy in a directory any user can read runs
    under Debian's python3 as nobody."""
    where = Path(tempfile.mkdtemp(prefix="confinement-"))
    try:
        where.chmod(0o755)
        shutil.copy(Path(__file__).resolve().parents[3] / "controller" / "status" / "confinement.py", where)
        (where / "confinement.py").chmod(0o644)
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--groups=4242", "--inh-caps=+setgid",
               "--ambient-caps=+setgid", "--bounding-set=-all,+setgid", SYSTEM_PYTHON, "-c", _AS_SERVICE]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False, cwd=where,
                             env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(where)})
    finally:
        shutil.rmtree(where)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = {line.split(" ", 1)[0]: line for line in out.stdout.splitlines()}
    setgid = f"{1 << 6:016x}"  # CAP_SETGID is capability 6
    daemon = lines["daemon"]
    assert "'Groups': '4242'" in daemon and "'CapEff': '0000000000000000'" in daemon, daemon
    assert f"'CapPrm': '{setgid}'" in daemon and f"'CapAmb': '{setgid}'" in daemon, daemon
    status = lines["status"]
    assert status.startswith("status [] ") and "'Groups': ''" in status, status
    assert "'CapEff': '0000000000000000'" in status and "'CapPrm': '0000000000000000'" in status, status
