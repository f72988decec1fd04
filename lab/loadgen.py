"""A small, bounded HTTP load generator for the demo and the end-to-end tests: N client threads GET one
loopback URL in a loop and count answers by the server that served them (HAProxy's ``X-Served-By``
header) and failures. Loopback only, at most ``MAX_CLIENTS`` clients, retrying only what a browser
retries (a GET whose reused connection closed before any answer, counted); a failed request's connection is
not reused.
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
    retried: int = 0  # GETs sent again after their reused connection closed without an answer

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
            return LoadStats(self.stats.ok, self.stats.failed, Counter(self.stats.by_server), Counter(self.stats.errors),
                             self.stats.retried)

    def _client(self, stop: threading.Event) -> None:
        while not stop.is_set():
            # a fresh connection after each failure: HAProxy closes the client's connection after a 502 for a
            # server that died, without a ``Connection: close``
            with httpx.Client(timeout=self.timeout, trust_env=False) as client:
                reused = False  # whether the next request goes over a connection an answer came on
                while not stop.is_set():
                    good, reused = self._request(client, reused)
                    if not good:
                        break
                    if self.pause:
                        stop.wait(self.pause)
            if self.pause:
                stop.wait(self.pause)

    def _request(self, client: httpx.Client, reused: bool) -> tuple[bool, bool]:
        """One GET, counted: (answered below 500, whether ``client``'s connection stays open for the next). Like
        a browser (RFC 9112 section 9.3.1), a GET whose reused connection was closed before any byte of an
        answer is sent again once on a new connection, and counted in ``retried``: HAProxy closes the client's
        connection that way when the server connection it reused for the request turns out dead, so that the
        client retries."""
        kept = True
        try:
            try:
                r = client.get(self.url)
            except httpx.RemoteProtocolError as exc:
                if not reused or "without sending a response" not in str(exc):
                    raise
                with self._lock:
                    self.stats.retried += 1
                kept = False  # client's connection is gone; the answer came on one closed since
                with httpx.Client(timeout=self.timeout, trust_env=False) as fresh:
                    r = fresh.get(self.url)
            server = r.headers.get(SERVED_BY, "?")
            good = r.status_code < 500
            why = f"HTTP {r.status_code}"
            kept = kept and r.headers.get("connection", "").lower() != "close"
        except httpx.HTTPError as exc:
            good, server, why, kept = False, "", type(exc).__name__, False
        with self._lock:
            if good:
                self.stats.ok += 1
                self.stats.by_server[server] += 1
                self.first_seen.setdefault(server, time.monotonic())
            else:
                self.stats.failed += 1
                self.stats.errors[why] += 1
                self.failures.append((time.time(), why, server))
        if not good:
            logger.warning("request failed: %s (server %s)", why, server or "-")
        return good, kept
