"""A small, bounded HTTP load generator for the demo and the end-to-end tests: N client threads GET one
loopback URL in a loop and count answers by the server that served them (HAProxy's ``X-Served-By``
header) and failures. Loopback only, at most ``MAX_CLIENTS`` clients, never retrying on its own.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

__all__ = ["MAX_CLIENTS", "LoadGenerator", "LoadStats"]

logger = logging.getLogger(__name__)

MAX_CLIENTS = 64
SERVED_BY = "X-Served-By"


@dataclass
class LoadStats:
    ok: int = 0
    failed: int = 0
    by_server: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    def served_by_prefix(self, prefix: str) -> int:
        return sum(n for name, n in self.by_server.items() if name.startswith(prefix))


def _loopback_only(url: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"the load generator only targets loopback addresses, not {host!r}")


class LoadGenerator:
    """``set_clients(n)`` changes the load at any time; ``stop()`` ends it. Thread-safe counters."""

    def __init__(self, url: str, *, timeout: float = 10.0, pause: float = 0.0) -> None:
        _loopback_only(url)
        self.url, self.timeout, self.pause = url, timeout, pause
        self.stats = LoadStats()
        self._lock = threading.Lock()
        self._threads: list[tuple[threading.Thread, threading.Event]] = []
        self._stopped = False
        self.first_seen: dict[str, float] = {}  # server name -> monotonic time of its first answer
        self.failures: list[tuple[float, str, str]] = []  # (epoch, why, server) of each failed request

    @property
    def clients(self) -> int:
        return len(self._threads)

    def set_clients(self, n: int) -> None:
        n = max(0, min(MAX_CLIENTS, n))
        while len(self._threads) < n and not self._stopped:
            stop = threading.Event()
            t = threading.Thread(target=self._client, args=(stop,), name=f"load-{len(self._threads)}", daemon=True)
            self._threads.append((t, stop))
            t.start()
        while len(self._threads) > n:
            t, stop = self._threads.pop()
            stop.set()
            if t.ident is not None:  # an interrupt (Ctrl-C, SIGTERM) can land between appending and starting it
                t.join(self.timeout + 1)

    def stop(self) -> None:
        self.set_clients(0)
        self._stopped = True

    def snapshot(self) -> LoadStats:
        with self._lock:
            return LoadStats(self.stats.ok, self.stats.failed, Counter(self.stats.by_server), Counter(self.stats.errors))

    def _client(self, stop: threading.Event) -> None:
        with httpx.Client(timeout=self.timeout, trust_env=False) as client:
            while not stop.is_set():
                try:
                    r = client.get(self.url)
                    server = r.headers.get(SERVED_BY, "?")
                    good = r.status_code < 500
                    why = f"HTTP {r.status_code}"
                except httpx.HTTPError as exc:
                    good, server, why = False, "", type(exc).__name__
                with self._lock:
                    if good:
                        self.stats.ok += 1
                        self.stats.by_server[server] += 1
                        self.first_seen.setdefault(server, time.monotonic())
                    else:
                        self.stats.failed += 1
                        self.stats.errors[why] += 1
                if not good:
                    logger.warning("request failed: %s (server %s)", why, server or "-")
                    with self._lock:
                        self.failures.append((time.time(), why, server))
                if self.pause:
                    stop.wait(self.pause)
