"""A real HAProxy (2.6, master-worker) per test: ``haproxy -W -db -f CFG`` in a tmp dir, an admin stats
socket (``mode 600 level admin``), an HTTP frontend on a free loopback port and empty backends the
controller fills through the runtime API. ``reload()`` re-reads the config the way ops do (SIGUSR2 to
the master), which drops every server added at run time."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.net import free_port, wait_port

__all__ = ["HaproxyProcess", "start_haproxy"]

_CONFIG = """\
global
    stats socket {sock} mode 600 level admin expose-fd listeners
{tcp_socket}    stats timeout 30s
    pidfile {pidfile}

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout queue 5s
    retries 2
    option redispatch

frontend fe
    bind 127.0.0.1:{port}
    default_backend {default}
{backends}
"""

_BACKEND = """
backend {name}
    balance roundrobin
{static}"""


@dataclass
class HaproxyProcess:
    dir: Path
    socket: Path
    port: int  # the HTTP frontend, on 127.0.0.1
    backends: tuple[str, ...]
    admin_tcp: str | None = None  # "tcp://127.0.0.1:P" when started with a TCP admin socket too
    proc: subprocess.Popen[bytes] | None = None
    reloads: int = field(default=0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, line: str, timeout: float = 5.0) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.socket))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def _worker_pids(self) -> set[str]:
        assert self.proc is not None
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False)
        return set(out.stdout.split())

    def reload(self, timeout: float = 30.0) -> None:
        """Reload like ``systemctl reload haproxy``: the master re-reads the file and starts a new worker.
        Returns once the new worker answers on the stats socket. Each try waits at most 2 s for an answer: a
        connection that reached the old worker as it hands over its listeners may get none (seen in CI: the
        reload had succeeded, and two 5 s tries used up the 10 s this allowed)."""
        assert self.proc is not None
        before = self._worker_pids()
        os.kill(self.proc.pid, signal.SIGUSR2)
        self.reloads += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self._worker_pids()
            if now and now - before:
                try:
                    if "pxname" in self.command("show stat", timeout=2.0):
                        return
                except OSError:
                    pass
            time.sleep(0.05)
        raise TimeoutError(f"haproxy did not reload within {timeout}s; log: {self.log()}")

    def log(self) -> str:
        try:
            return (self.dir / "haproxy.log").read_text()[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()  # SIGTERM to the master stops the workers too
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None


def start_haproxy(tmp: Path, backends: tuple[str, ...] = ("web",),
                  static_servers: dict[str, list[str]] | None = None, tcp_admin: bool = False) -> HaproxyProcess:
    exe = shutil.which("haproxy")
    assert exe, "haproxy missing: scripts/services.sh install"
    port = free_port()
    sock = tmp / "admin.sock"
    body = "".join(_BACKEND.format(name=b, static="".join(f"    server {s}\n" for s in (static_servers or {}).get(b, ())))
                   for b in backends)
    cfg = tmp / "haproxy.cfg"
    admin_port = free_port() if tcp_admin else None
    tcp_socket = f"    stats socket ipv4@127.0.0.1:{admin_port} level admin\n" if admin_port else ""
    cfg.write_text(_CONFIG.format(sock=sock, pidfile=tmp / "haproxy.pid", port=port, default=backends[0],
                                  backends=body, tcp_socket=tcp_socket))
    check = subprocess.run([exe, "-c", "-f", str(cfg)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    hp = HaproxyProcess(dir=tmp, socket=sock, port=port, backends=backends,
                        admin_tcp=f"tcp://127.0.0.1:{admin_port}" if admin_port else None)
    with open(tmp / "haproxy.log", "wb") as log:  # the child keeps its own descriptor
        hp.proc = subprocess.Popen([exe, "-W", "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        wait_port("127.0.0.1", port)
        # the socket file appears at bind(), before listen(): a connect in between is refused, so wait
        # until the stats socket answers, not only until it exists (a test saw ECONNREFUSED once under load)
        deadline = time.monotonic() + 10
        while True:
            with suppress(OSError):  # not listening yet: try again until the deadline
                if sock.exists() and "Name:" in hp.command("show info"):
                    break
            assert time.monotonic() < deadline, f"no stats socket answering; log: {hp.log()}"
            time.sleep(0.02)
    except BaseException:
        hp.stop()
        raise
    return hp


@pytest.fixture()
def haproxy_factory() -> Iterator[Callable[..., HaproxyProcess]]:
    """``haproxy_factory(backends=("web",), static_servers=None, tcp_admin=False)`` starts one; all are
    stopped at teardown."""
    started: list[tuple[HaproxyProcess, Path]] = []

    def make(backends: tuple[str, ...] = ("web",), static_servers: dict[str, list[str]] | None = None,
             tcp_admin: bool = False) -> HaproxyProcess:
        tmp = Path(tempfile.mkdtemp(prefix="haproxy-"))
        hp = start_haproxy(tmp, backends, static_servers, tcp_admin)
        started.append((hp, tmp))
        return hp

    yield make
    for hp, tmp in started:
        hp.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture()
def haproxy(haproxy_factory: Callable[..., HaproxyProcess]) -> HaproxyProcess:
    """One HAProxy with an empty backend ``web`` behind the frontend at ``haproxy.url``."""
    return haproxy_factory()
