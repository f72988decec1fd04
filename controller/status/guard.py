"""The status endpoint's defences at the HTTP layer, used by the status process (controller/status/child.py):
``GuardedProtocol`` (uvicorn's httptools protocol with limits on the request head, a deadline for it, and a
cap on open connections), ``HostCheck`` (an ASGI wrapper answering 421 to a request for a Host name the
endpoint does not serve, so that a web page cannot read it through DNS rebinding) and ``Throttle`` (one log
line per kind of refusal and interval, with a count, instead of one per request).

uvicorn alone has no head size limit with httptools, no deadline for a request head (its keep-alive timer
only runs after a response) and no connection cap (``limit_concurrency`` answers 503 to a request, but only
once its head has arrived, and keeps every idle connection open).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["GuardedProtocol", "HostCheck", "HttpLimits", "Throttle", "allowed_hosts", "guarded_protocol"]

logger = logging.getLogger(__name__)

_REASONS = {400: b"Bad Request", 414: b"URI Too Long", 421: b"Misdirected Request",
            431: b"Request Header Fields Too Large", 503: b"Service Unavailable"}


@dataclass(frozen=True)
class HttpLimits:
    """What one client may hold of the status process. The defaults leave room for every legitimate
    client (a browser sends about 1 KB of headers) and keep 1,000 connections under the unit's LimitNOFILE."""

    max_head_bytes: int = 16_384  # request line + headers; more: 431
    max_headers: int = 100  # more: 431
    max_target_bytes: int = 4_096  # path + query; more: 414
    head_timeout: float = 10.0  # seconds for a request head to arrive (from connect, or the last response)
    keep_alive: int = 5  # seconds an idle keep-alive connection is kept
    max_connections: int = 1_000  # open connections; more are answered 503 and closed at once
    log_interval: float = 10.0  # seconds: at most one log line per kind of refusal and interval

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Throttle:
    """Rate-limited warnings: the first of a kind in an interval is logged at once, the rest are counted and
    said in one line when the interval ends ("12 more in the last 10 s"). Called from the event loop."""

    def __init__(self, interval: float, log: logging.Logger = logger) -> None:
        self.interval, self.log = interval, log
        self._counts: dict[str, int] = {}
        self._windows: dict[str, float] = {}

    def note(self, kind: str, message: str) -> None:
        now = time.monotonic()
        if now - self._windows.get(kind, -self.interval * 2) >= self.interval:
            self._windows[kind] = now
            self._counts[kind] = 0
            self.log.warning("status endpoint: %s (more like it in the next %gs are counted, not logged)",
                             message, self.interval, extra={"kind": kind})
            try:
                asyncio.get_running_loop().call_later(self.interval, self._flush, kind)
            except RuntimeError:  # no loop (a unit test): the next note of the kind flushes instead
                pass
            return
        self._counts[kind] = self._counts.get(kind, 0) + 1

    def _flush(self, kind: str) -> None:
        count = self._counts.pop(kind, 0)
        if count:
            self.log.warning("status endpoint: %d more %s in the last %gs", count, kind, self.interval,
                             extra={"kind": kind, "count": count})


def allowed_hosts(listen_host: str, port: int, extra: Iterable[str] = ()) -> frozenset[bytes]:
    """The Host header values the endpoint answers: its listen address, localhost, 127.0.0.1 and [::1], and
    the configured names, each with the port (and bare when the port is 80), lower case."""
    names = {listen_host, "localhost", "127.0.0.1", "::1", *extra}
    out: set[bytes] = set()
    for name in names:
        try:
            literal = f"[{name}]" if ipaddress.ip_address(name).version == 6 else name
        except ValueError:
            literal = name
        literal = literal.lower()
        out.add(f"{literal}:{port}".encode())
        if port == 80:
            out.add(literal.encode())
    return frozenset(out)


def _response(code: int, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return b"".join([b"HTTP/1.1 %d %s\r\n" % (code, _REASONS[code]), b"content-type: ", content_type, b"\r\n",
                     b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body), body])


class HostCheck:
    """ASGI wrapper: a request whose Host header is not one of ``hosts`` gets 421 and a short body."""

    def __init__(self, app: Any, hosts: frozenset[bytes], throttle: Throttle) -> None:
        self.app, self.hosts, self.throttle = app, hosts, throttle

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            host = next((v for k, v in scope["headers"] if k == b"host"), b"").lower()
            if host not in self.hosts:
                self.throttle.note("requests for an unknown Host", f"refused a request for Host "
                                   f"{host[:100].decode('latin-1')!r} (421; status.allowed_hosts adds names)")
                body = b'{"detail":"unknown Host: this endpoint serves its listen address, localhost and the ' \
                       b'names in status.allowed_hosts"}'
                await send({"type": "http.response.start", "status": 421,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class _Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        self.code, self.message = code, message


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with ``HttpLimits``; ``guarded_protocol`` binds the limits."""

    limits: HttpLimits = HttpLimits()
    throttle: Throttle = Throttle(HttpLimits.log_interval)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_bytes = self._header_count = 0
        self._in_head = True
        self._head_timer: asyncio.TimerHandle | None = None
        if len(self.connections) >= self.limits.max_connections:
            self.transport, self.flow = transport, None  # type: ignore[assignment]
            self.throttle.note("connections refused at the cap",
                               f"{self.limits.max_connections} connections open, the cap: refusing more (503)")
            transport.write(_response(503, b"too many connections\n", b"text/plain"))
            transport.close()
            return
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self.flow is None:  # refused at the cap: never counted
            return
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self.throttle.note("slow or idle connections closed",
                               f"closed a connection that sent no complete request head in "
                               f"{self.limits.head_timeout:g}s")
            self.transport.close()

    def _refuse(self, code: int, message: str) -> None:
        self.throttle.note(f"requests refused with {code}", f"refused a request: {message} ({code})")
        self._cancel_head_timer()
        self.transport.write(_response(code, message.encode() + b"\n", b"text/plain; charset=utf-8"))
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_head_bytes:
                self._refuse(431, f"request head over {self.limits.max_head_bytes} bytes")
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _Refused):
                self._refuse(exc.__context__.code, exc.__context__.message)
                return
            self.throttle.note("malformed requests", "refused a malformed request (400)")
            self.send_400_response("Invalid HTTP request received.")
        except httptools.HttpParserUpgrade:
            self.throttle.note("upgrade requests", "refused an upgrade request (400; no WebSocket here)")
            self.send_400_response("Unsupported upgrade request.")

    def on_message_begin(self) -> None:
        self._header_count = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > self.limits.max_target_bytes:
            raise _Refused(414, f"request target over {self.limits.max_target_bytes} bytes")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            raise _Refused(431, f"over {self.limits.max_headers} header fields")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:  # nothing pipelined: wait for the next head
            self._in_head, self._head_bytes = True, 0
            self._arm_head_timer()


def guarded_protocol(limits: HttpLimits, throttle: Throttle) -> type[GuardedProtocol]:
    """A ``GuardedProtocol`` class with these limits, for ``uvicorn.Config(http=...)``."""
    return type("GuardedProtocol", (GuardedProtocol,), {"limits": limits, "throttle": throttle})
