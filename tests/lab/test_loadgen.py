"""The load generator against a real HAProxy whose only server answers some requests and drops the others'
connections: HAProxy answers those with a 502 and then closes the client's connection without a
``Connection: close``; a request on a server connection HAProxy reused gets its client connection closed
unanswered and unlogged, for the client to retry. Each failed request is counted once, as HAProxy logged it,
and what a browser would retry is retried once and counted."""

from __future__ import annotations

import abc
import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.loadgen import LoadGenerator
from lab.parts import free_port, wait_port

CFG = """\
defaults
    mode http
    log stdout format raw local0
    option httplog
    timeout connect 2s
    timeout client 30s
    timeout server 30s

frontend fe
    bind 127.0.0.1:{port}
    default_backend web

backend web
    http-response set-header X-Served-By %[srv_name]
    server flaky 127.0.0.1:{backend}
"""


class RawServer(abc.ABC):
    """A loopback HTTP/1.1 server on raw sockets, a thread per connection; ``_connection`` says what it does."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    @abc.abstractmethod
    def _connection(self, conn: socket.socket) -> None:
        """What one accepted connection gets (each subclass's own behaviour)."""


class FlakyServer(RawServer):
    """Answers every odd-numbered request it receives (counted over all connections) with a 200; closes the
    connection of every even-numbered one without a byte."""

    def __init__(self, port: int) -> None:
        self.requests = 0
        self._lock = threading.Lock()
        super().__init__(port)

    def _connection(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while conn.recv(65536):
                with self._lock:
                    self.requests += 1
                    drop = self.requests % 2 == 0
                if drop:
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[tuple[str, FlakyServer, Path]]:
    exe = shutil.which("haproxy")
    assert exe, "HAProxy is installed by scripts/bootstrap.sh"
    reserved: list[socket.socket] = []
    port, backend = free_port(reserved), free_port(reserved)
    server = FlakyServer(backend)
    (tmp_path / "h.cfg").write_text(CFG.format(port=port, backend=backend))
    log = tmp_path / "haproxy.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([exe, "-db", "-f", str(tmp_path / "h.cfg")], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_port(port)
        yield f"http://127.0.0.1:{port}/", server, log
    finally:
        proc.terminate()
        proc.wait(10)
        server.sock.close()
        for s in reserved:
            s.close()


def test_each_failed_request_is_counted_once_and_what_haproxy_closes_unanswered_is_retried_once(
        proxy: tuple[str, FlakyServer, Path]) -> None:
    url, server, log = proxy
    load = LoadGenerator(url)
    load.set_clients(4)
    time.sleep(2)
    load.stop()
    stats = load.snapshot()
    logged = [line for line in log.read_text().splitlines() if '"GET / HTTP/1.1"' in line]
    bad = [line for line in logged if " 502 " in line]
    assert stats.ok > 20 and stats.failed > 20, stats
    # every request the clients sent reached HAProxy and was logged: none was lost on a closed connection
    assert stats.errors == {"HTTP 502": len(bad)}, (stats, len(bad))
    assert stats.ok + stats.failed == len(logged), (stats, len(logged))
    assert stats.by_server == {"flaky": stats.ok}
    # the others reached the server on a connection HAProxy reused, were dropped there, and HAProxy closed the
    # client's connection unlogged so that it retries: the generator did, once each, and counted them
    assert stats.retried > 0 and server.requests == len(logged) + stats.retried, (stats, server.requests)


class ClosingServer(RawServer):
    """Answers the first ``answered`` requests of each connection, then closes it at the next without a byte."""

    def __init__(self, answered: int) -> None:
        self.answered = answered
        super().__init__()

    def _connection(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            for _ in range(self.answered):
                if not conn.recv(65536):
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx-served-by: s\r\n\r\nok\n")
            conn.recv(65536)


@pytest.mark.parametrize(("answered", "retried"), [(0, False), (1, True)])
def test_only_a_request_on_a_reused_connection_is_sent_again(answered: int, retried: bool) -> None:
    server = ClosingServer(answered)
    load = LoadGenerator(f"http://127.0.0.1:{server.port}/")
    try:
        load.set_clients(2)
        time.sleep(1)
    finally:
        load.stop()
        server.sock.close()
    stats = load.snapshot()
    if retried:  # each connection's second request is closed unanswered, sent again, and answered
        assert stats.failed == 0 and stats.retried > 10 and stats.ok > stats.retried, stats
    else:  # a new connection closed unanswered is a failure, never sent again
        assert stats.ok == 0 and stats.retried == 0 and stats.errors.keys() == {"RemoteProtocolError"}, stats
