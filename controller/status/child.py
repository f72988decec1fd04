"""The status endpoint's process (started by controller/status/process.py; ``python -m
controller.status.child``): serves the status app (controller/status/app.py, unchanged contract) from the
snapshots the daemon publishes, and forwards what a snapshot cannot answer to the daemon.

The hot read routes (``/healthz``, ``/readyz``, ``/v1/status``, ``/v1/policies/{name}``, its ``/history``,
``/v1/events``, ``/metrics``) with well-formed arguments are answered from the snapshot's bytes before FastAPI is entered;
everything else (POSTs and their token checks, odd arguments and their 422s, OpenAPI, the dashboard) goes
through the app itself.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import dataclasses
import itertools
import json
import logging
import math
import os
import re
import signal
import socket
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any, cast

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST

from controller.errors import BurstError, FencedError, NotFoundError, TransientError
from controller.service import register_secret, setup_logging
from controller.status.app import HISTORY_PAGE, MAX_EVENTS_PAGE, create_app
from controller.status.confinement import confine
from controller.status.guard import HostCheck, HttpLimits, Throttle, allowed_hosts, guarded_protocol
from controller.status.history import HistoryWindow
from controller.status.models import POLICY_NAME_PATTERN, ControllerStatus, EventPage, MetricPoint
from controller.status.snapshot import Snapshot

__all__ = ["FastPath", "SnapshotSource", "main"]

logger = logging.getLogger(__name__)

CALL_TIMEOUT = 30.0  # seconds the child waits for the daemon before answering 503
_ERRORS: dict[str, type[BurstError]] = {"not_found": NotFoundError, "fenced": FencedError,
                                        "transient": TransientError, "error": BurstError}
_POLICY = re.compile(POLICY_NAME_PATTERN)
_DIGITS = re.compile(r"[0-9]{1,19}")
_SINCE = re.compile(r"[0-9]{1,11}(\.[0-9]{1,9})?")
_JSON = b"application/json"


class SnapshotSource:
    """``StatusSource`` over the latest snapshot; calls that need the daemon go over the channel."""

    def __init__(self, conn: Connection, first: Snapshot, *, interval: float, max_age: float) -> None:
        self.conn = conn
        self.history_window = HistoryWindow()
        # the first snapshot's samples (the whole window: seconds to render at 300,000) are taken by the
        # channel's reader once the endpoint serves
        self._first_samples = first.samples
        self.snapshot = dataclasses.replace(first, samples=())
        self.live_ready = first.ready  # the daemon sends readiness ahead of each snapshot
        self.interval, self.max_age = interval, max_age
        self._ids = itertools.count(1)
        self._waiting: dict[int, tuple[threading.Event, list[Any]]] = {}
        self._lock = threading.Lock()
        self._arrived = threading.Condition()
        self._asked_at = -math.inf  # when a newer snapshot was last asked for
        self._parsed: tuple[int, ControllerStatus] | None = None
        self.on_stop: Any = None

    def _take(self, snapshot: Snapshot) -> Snapshot:
        """Move the snapshot's new samples into the history window; the snapshot kept holds none."""
        if snapshot.samples:
            self.history_window.add(snapshot.samples)
            snapshot = dataclasses.replace(snapshot, samples=())
        if snapshot.status_json is not None:
            self.history_window.retain(snapshot.policies)
        return snapshot

    def age(self) -> float:
        return time.time() - self.snapshot.built_at

    def stale(self) -> bool:
        """Too old to answer from: older than ``max_age``, or than what the daemon promised for this
        snapshot when its builds are slow (``Snapshot.max_age``)."""
        return self.age() > max(self.max_age, self.snapshot.max_age)

    def touch(self) -> None:
        """A request came: ask the daemon for a newer snapshot if this one is ``interval`` old (once; again
        after a second without an answer)."""
        now = time.monotonic()
        if self.age() >= self.interval and now - self._asked_at > 1.0:
            self._asked_at = now
            with self._lock:
                self.conn.send(("want",))

    def current(self) -> Snapshot:
        """The snapshot to answer from: never older than ``max_age`` unless the daemon takes over 2 s to
        build one (a busy store): then the last one, whose age the answer's data shows anyway."""
        self.touch()
        if self.stale():
            version = self.snapshot.version
            with self._arrived:
                self._arrived.wait_for(lambda: self.snapshot.version != version, timeout=2.0)
        return self.snapshot

    def read_forever(self) -> None:
        """The channel's reader: snapshots replace the current one, replies wake their caller. The end of
        the channel means the daemon is gone: so is this process."""
        self.history_window.add(self._first_samples)
        self._first_samples = ()
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                logger.info("status process: the controller is gone, exiting")
                os._exit(0)
            kind = message[0]
            if kind == "snapshot":
                taken = self._take(message[1])
                with self._arrived:
                    self.snapshot = taken
                    self.live_ready = self.snapshot.ready
                    self._asked_at = -math.inf
                    self._arrived.notify_all()
            elif kind == "ready":
                self.live_ready = message[1]
            elif kind == "reply":
                with self._lock:
                    waiter = self._waiting.pop(message[1], None)
                if waiter is not None:
                    waiter[1].extend(message[2:])
                    waiter[0].set()
            elif kind == "stop" and self.on_stop is not None:
                self.on_stop()

    def _call(self, method: str, **kwargs: Any) -> Any:
        call_id, done, box = next(self._ids), threading.Event(), cast(list[Any], [])
        with self._lock:
            self._waiting[call_id] = (done, box)
            self.conn.send(("call", call_id, method, kwargs))
        if not done.wait(CALL_TIMEOUT):
            with self._lock:
                self._waiting.pop(call_id, None)
            raise TransientError(f"the controller did not answer {method} within {CALL_TIMEOUT:.0f}s")
        ok, payload = box
        if ok:
            return payload
        kind, message = payload
        raise _ERRORS.get(kind, BurstError)(message)

    # ------------------------------------------------------------------ StatusSource

    def status(self) -> ControllerStatus:
        snap = self.current()
        if snap.status_json is None:
            raise TransientError(snap.status_error or "status unavailable")
        parsed = self._parsed
        if parsed is None or parsed[0] != snap.version:
            parsed = (snap.version, ControllerStatus.model_validate_json(snap.status_json))
            self._parsed = parsed
        return parsed[1]

    def events(self, *, cursor: int | None, limit: int, policy: str | None) -> EventPage:
        body = self.current().events_page(cursor=cursor, limit=limit, policy=policy)
        if body is None:
            body = self._call("events", cursor=cursor, limit=limit, policy=policy)
        return EventPage.model_validate_json(body)

    def ready(self) -> tuple[bool, str]:
        self.current()
        return self.live_ready

    def pause(self, policy: str) -> None:
        self._call("pause", policy=policy)

    def resume(self, policy: str) -> None:
        self._call("resume", policy=policy)

    def drain(self, policy: str) -> None:
        self._call("drain", policy=policy)

    def history(self, policy: str, since: float, limit: int) -> list[MetricPoint]:
        snap = self.current()
        if snap.status_json is None:
            raise TransientError(snap.status_error or "status unavailable")
        if policy not in snap.policies:
            raise NotFoundError(f"no policy named {policy!r}")
        return [MetricPoint.model_validate(p) for p in json.loads(self.history_window.page(policy, since, limit))]

    def history_rows(self, *, after: int, since: float, limit: int) -> list[Any]:
        raise BurstError("the status process keeps its own history window")

    def metrics_text(self) -> bytes:
        return self.current().metrics_text


class FastPath:
    """ASGI app in front of the status app: answers the hot GETs from the snapshot's bytes, with the same
    status, body and content type the app would give; passes everything else to the app."""

    def __init__(self, app: Any, source: SnapshotSource) -> None:
        self.app, self.source = app, source
        self._ready: tuple[tuple[bool, str, str | None], int, bytes] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            source = self.source
            if source.stale():  # after a quiet spell: wait for a fresh one, off the event loop
                await asyncio.get_running_loop().run_in_executor(None, source.current)
            else:
                source.touch()
            answer = self._answer(scope["path"], scope["query_string"])
            if answer is not None:
                code, body, media = answer
                await send({"type": "http.response.start", "status": code,
                            "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", media)]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _answer(self, path: str, query: bytes) -> tuple[int, bytes, bytes] | None:
        snap = self.source.snapshot
        if path.endswith("/history") and path.startswith("/v1/policies/"):
            return self._history(snap, path, query)
        if path == "/v1/events":
            args = _events_args(query)
            if args is None:
                return None
            body = snap.events_page(**args)
            return None if body is None else (200, body, _JSON)
        if query:
            return None
        if path == "/v1/status":
            return None if snap.status_json is None else (200, snap.status_json, _JSON)
        if path == "/healthz":
            return 200, b'{"status":"ok"}', _JSON
        if path == "/readyz":
            return self._readyz(snap)
        if path == "/metrics":
            return 200, snap.metrics_text, CONTENT_TYPE_LATEST.encode()
        if path.startswith("/v1/policies/"):
            body = snap.policies.get(path[len("/v1/policies/"):])
            return None if body is None else (200, body, _JSON)
        return None

    def _history(self, snap: Snapshot, path: str, query: bytes) -> tuple[int, bytes, bytes] | None:
        """``/v1/policies/{name}/history`` of a known policy with plainly valid arguments, else None."""
        name = path[len("/v1/policies/"):-len("/history")]
        if name not in snap.policies:
            return None
        since, limit = time.time() - 3600, HISTORY_PAGE
        seen: set[str] = set()
        for part in query.decode("latin-1").split("&") if query else ():
            key, eq, value = part.partition("=")
            if not eq or key in seen:
                return None
            seen.add(key)
            if key == "since" and _SINCE.fullmatch(value):
                since = float(value) or since
            elif key == "limit" and _DIGITS.fullmatch(value) and 1 <= int(value) <= HISTORY_PAGE:
                limit = int(value)
            else:
                return None
        return 200, self.source.history_window.page(name, since, limit), _JSON

    def _readyz(self, snap: Snapshot) -> tuple[int, bytes, bytes]:
        ok, reason = self.source.live_ready
        key = (ok, reason, snap.role)
        cached = self._ready
        if cached is None or cached[0] != key:
            # as JSONResponse renders Readiness.model_dump()
            body = json.dumps({"ready": ok, "reason": reason, "role": snap.role}, ensure_ascii=False,
                              allow_nan=False, indent=None, separators=(",", ":")).encode()
            cached = self._ready = (key, 200 if ok else 503, body)
        return cached[1], cached[2], _JSON


def _events_args(query: bytes) -> dict[str, Any] | None:
    """cursor, limit and policy when the query is plainly valid; None for anything the app should judge."""
    args: dict[str, Any] = {"cursor": None, "limit": 100, "policy": None}
    seen: set[str] = set()
    for part in query.decode("latin-1").split("&") if query else ():
        key, eq, value = part.partition("=")
        if not eq or key in seen or key not in args:
            return None
        seen.add(key)
        if key == "policy":
            if not _POLICY.fullmatch(value):
                return None
            args[key] = value
        else:
            if not _DIGITS.fullmatch(value):
                return None
            number = int(value)
            if key == "cursor" and number > 2**63 - 1:
                return None
            if key == "limit" and not 1 <= number <= MAX_EVENTS_PAGE:
                return None
            args[key] = number
    return args


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when the daemon dies (Linux), so a killed daemon never leaves the port held.
    (The signal follows the daemon's thread that started this process: a status process started by the
    publisher thread, after a crash, dies when that thread ends, which is when the endpoint stops anyway.)"""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # it died before the line above
        os._exit(0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m controller.status.child")
    ap.add_argument("--listen-fd", type=int, required=True)
    ap.add_argument("--channel-fd", type=int, required=True)
    ap.add_argument("--parent-pid", type=int, required=True)
    args = ap.parse_args(argv)
    _die_with_parent(args.parent_pid)
    conn = Connection(args.channel_fd)
    kind, settings = conn.recv()
    assert kind == "config"
    setup_logging(settings["log_format"], settings["log_level"])
    # the daemon logs where it listens; uvicorn's own start/stop lines would only repeat it
    logging.getLogger("uvicorn.error").setLevel(max(logging.WARNING, logging.getLogger().level))
    token = settings["token"]
    register_secret(token)
    try:
        if int(settings["nice"]) >= 20:  # below every nice value: run only on a CPU nothing else wants
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        else:
            os.nice(int(settings["nice"]))
    except OSError as exc:
        logger.warning("status process: could not lower its priority: %s", exc)
    missed = confine()  # no Docker socket, no other process's memory, no privilege to regain
    if missed:
        logger.info("status process: kept %s", "; ".join(missed))
    kind, first = conn.recv()
    source = SnapshotSource(conn, first, interval=float(settings["interval"]), max_age=float(settings["max_age"]))
    app = create_app(source, token, status_ttl=0.0, version=settings["version"], metrics_text=source.metrics_text)
    sock = socket.socket(fileno=args.listen_fd)
    limits = HttpLimits(**settings["limits"])
    throttle = Throttle(limits.log_interval)
    hosts = allowed_hosts(settings["host"], int(settings["port"]), settings["allowed_hosts"])
    config = uvicorn.Config(HostCheck(FastPath(app, source), hosts, throttle), http=guarded_protocol(limits, throttle),
                            loop="auto", log_config=None, access_log=False, lifespan="off",
                            timeout_graceful_shutdown=2, timeout_keep_alive=limits.keep_alive)
    server = uvicorn.Server(config)

    def stop() -> None:
        server.should_exit = True

    source.on_stop = stop
    threading.Thread(target=source.read_forever, name="status-channel", daemon=True).start()

    def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            threading.Event().wait(0.01)
        with source._lock:
            conn.send(("ready",))

    threading.Thread(target=announce, name="status-ready", daemon=True).start()
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
