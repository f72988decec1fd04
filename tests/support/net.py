"""Loopback ports and readiness waits for the real components the tests start."""

from __future__ import annotations

import socket
import time

_RESERVED: list[socket.socket] = []


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` kept reserved until the test process exits: bound with SO_REUSEADDR and never
    listening. A server given the port that sets SO_REUSEADDR too (uvicorn, StatusProcess, http.server,
    HAProxy, Docker's proxy) listens on it, again after a restart, while nothing else on the machine can take
    it meanwhile (another bind to port 0, an outgoing connection's local port); while nothing listens,
    connecting is refused (the closed port some tests need)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 0))
    _RESERVED.append(s)
    return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as exc:
            last = exc
            time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not open within {timeout}s: {last}")
