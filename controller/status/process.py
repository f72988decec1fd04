"""The status endpoint in a process of its own, so that status traffic cannot slow the control loop: the
daemon publishes a ``Snapshot`` (controller/status/snapshot.py) and the child (controller/status/child.py,
uvicorn at a lower CPU priority) serves it. Snapshots are built on demand: while requests come, the child
asks for a new one once its snapshot is ``interval`` old (so at most one build per ``interval``, whatever
the request rate), a request that finds it older than ``max_age`` (after a quiet spell) waits for a fresh
one, an operator action publishes at once, and with no requests nothing is built at all. A periodic build
waits (up to ``GAP_WAIT``) for a gap between the loop's step rounds, so it never runs beside one. On a
fleet where a build is slow, the interval grows so that builds take at most ``BUILD_SHARE`` of the
daemon's time (10 x the recent build time: 2.3 s at 500 policies x 10 replicas), and each snapshot says
how old it may get (twice that), which the child honours instead of ``max_age``.

Used by ``burstctl run`` and ``burstctl demo`` (controller/cli/run.py) in place of the in-thread
``controller.status.app.StatusServer``. The daemon binds the listening socket (so a bad address fails here, and
the socket stays the daemon's), passes it to the child, and answers the child's calls over a socket pair:
pause / resume / drain (after the child checked the token), and events the snapshot does not hold. History
is served from the status process's own window (controller/status/history.py), fed by the snapshots.
A child that dies is restarted; the child dies with the daemon (PR_SET_PDEATHSIG and end of the channel).
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import logging
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from controller.errors import BurstError, FencedError, NotFoundError, TransientError
from controller.status.app import StatusSource
from controller.status.guard import HttpLimits
from controller.status.snapshot import SnapshotBuilder

__all__ = ["MAX_AGE", "NICE", "PUBLISH_INTERVAL", "StatusProcess"]

logger = logging.getLogger(__name__)

PUBLISH_INTERVAL = 0.25  # seconds: under requests, a new snapshot at most this often
MAX_AGE = 0.5  # seconds: no answer comes from an older snapshot (the request waits for a new one)
GAP_WAIT = 0.1  # seconds a build waits at most for a gap between the loop's step rounds
BUILD_SHARE = 0.1  # under requests, the daemon spends at most about this share of its time on builds
NICE = 10  # the child's nice value: under CPU contention the control loop (nice 0) runs first; 20 = SCHED_IDLE
_CALLS = frozenset({"pause", "resume", "drain", "events"})
_MUTATIONS = frozenset({"pause", "resume", "drain"})
# The child gets a minimal environment: it needs no credential, and must not talk to systemd itself.
_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "HOME", "PYTHONPATH", "PYTHONHASHSEED")


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, NotFoundError):
        return "not_found"
    if isinstance(exc, FencedError):
        return "fenced"
    if isinstance(exc, TransientError):
        return "transient"
    return "error"


class _Child:
    """One incarnation of the child process and its channel."""

    def __init__(self, owner: StatusProcess) -> None:
        self.owner = owner
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = {k: v for k, v in os.environ.items() if k in _ENV_KEEP}
        package_root = str(Path(__file__).resolve().parents[2])  # where `controller` is importable from
        env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
        listen_fd, channel_fd = owner.sock.fileno(), child_end.fileno()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controller.status.child", "--listen-fd", str(listen_fd),
             "--channel-fd", str(channel_fd), "--parent-pid", str(os.getpid())],
            pass_fds=(listen_fd, channel_fd), env=env, stdin=subprocess.DEVNULL, close_fds=True)
        child_end.close()
        self.conn = Connection(parent_end.detach())
        self.send_lock = threading.Lock()
        self.closed = threading.Event()

    def send(self, message: tuple[Any, ...]) -> None:
        with self.send_lock:
            if not self.closed.is_set():
                self.conn.send(message)

    def serve_calls(self) -> None:
        """Answer the child's calls until the channel closes; each call on the pool, so a slow history read
        never holds up an operator's pause."""
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                self.closed.set()
                return
            if message[0] == "want":
                self.owner._wanted.set()
            elif message[0] == "call":
                self.owner.pool.submit(self._answer, *message[1:])

    def _answer(self, call_id: int, method: str, kwargs: dict[str, Any]) -> None:
        try:
            if method not in _CALLS:
                raise BurstError(f"unknown call {method!r}")
            result: Any = getattr(self.owner.source, method)(**kwargs)
            if method in _MUTATIONS:
                self.owner.publish()  # a GET after the POST sees its effect: the snapshot is sent first
            if method == "events":
                result = result.model_dump_json().encode()
            reply: tuple[Any, ...] = ("reply", call_id, True, result)
        except BurstError as exc:
            reply = ("reply", call_id, False, (_error_kind(exc), exc.message))
        except Exception:
            logger.exception("status call %s failed", method)
            reply = ("reply", call_id, False, ("error", f"{method} failed inside the controller (see its log)"))
        try:
            self.send(reply)
        except OSError:  # the child is gone; a new one asks again
            pass

    def stop(self, timeout: float) -> None:
        try:
            self.send(("stop",))
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("status process %d did not stop in %.0fs: killing it", self.proc.pid, timeout)
            self.proc.kill()
            self.proc.wait(5)
        self.closed.set()
        self.conn.close()


class StatusProcess:
    """Same interface as ``StatusServer`` (``url``, ``start``, ``stop``), over a ``StatusSource``."""

    def __init__(self, source: StatusSource, token: str | None, host: str = "127.0.0.1", port: int = 9180, *,
                 version: str = "", interval: float = PUBLISH_INTERVAL, max_age: float = MAX_AGE,
                 nice: int = NICE,
                 log_format: str = "text", log_level: str | None = None,
                 registry: CollectorRegistry | None = None, allowed_hosts: tuple[str, ...] = (),
                 limits: HttpLimits | None = None) -> None:
        """``log_level`` None: the level this process logs at now (the demo quiets its logs, run does not).
        ``allowed_hosts``: Host names served besides the listen address and localhost (status.allowed_hosts);
        ``limits``: what one client may hold (controller/status/guard.py)."""
        self.source, self.host, self.port, self.interval = source, host, port, interval
        self.max_age = max(max_age, interval)
        if log_level is None:
            log_level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        self._settings = {"token": token, "version": version, "nice": nice, "log_format": log_format,
                          "interval": interval, "max_age": max(max_age, interval),
                          "log_level": log_level, "allowed_hosts": list(allowed_hosts),
                          "limits": (limits or HttpLimits()).to_dict()}
        self.builder = SnapshotBuilder(source, registry=registry)
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="status-call")
        self.sock: socket.socket
        self._child: _Child | None = None
        self._publish_lock = threading.RLock()  # held from a new process's first build until it is the child
        # (start, end) of recent builds, time.monotonic: their durations space the builds; benchmarks read them
        self.build_spans: deque[tuple[float, float]] = deque(maxlen=10_000)
        self._stopping = threading.Event()
        self._wanted = threading.Event()  # the child asked for a newer snapshot
        self._built_at = -math.inf
        self._thread = threading.Thread(target=self._run, name="status-publish", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The status process's id (it changes when the process is restarted)."""
        return self._child.proc.pid if self._child is not None else None

    def start(self, timeout: float = 30.0) -> None:
        """Bind, start the child with a first snapshot, and return once it answers."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        bind_deadline = time.monotonic() + min(timeout, 5.0)
        while True:
            try:
                self.sock.bind((self.host, self.port))
                break
            except OSError as exc:
                # a previous controller's sockets may take a moment to go after it was killed (restarts)
                if exc.errno == errno.EADDRINUSE and time.monotonic() < bind_deadline:
                    time.sleep(0.1)
                    continue
                self.sock.close()
                raise TransientError(f"status endpoint could not listen on {self.host}:{self.port}: "
                                     f"{exc.strerror}") from exc
        self.sock.listen(2048)
        self.sock.set_inheritable(True)
        self.port = self.sock.getsockname()[1]
        self._settings.update(host=self.host, port=self.port)
        self._child = self._spawn()
        deadline = time.monotonic() + timeout
        while True:
            if not self._child.conn.poll(0.05):
                if self._child.proc.poll() is not None or time.monotonic() > deadline:
                    self._child.stop(2)
                    self.sock.close()
                    raise TransientError(f"status endpoint process did not start on {self.host}:{self.port}")
                continue
            message = self._child.conn.recv()
            if message[0] == "ready":
                break
            if message[0] == "want":  # a request came before the child said it listens
                self._wanted.set()
            elif message[0] == "call":  # the same: answered once the calls are served, below
                self.pool.submit(self._child._answer, *message[1:])
        threading.Thread(target=self._child.serve_calls, name="status-calls", daemon=True).start()
        self._thread.start()
        logger.info("status endpoint listening on %s (process %d, nice %d)", self.url, self._child.proc.pid,
                    self._settings["nice"])

    def _spawn(self) -> _Child:
        child = _Child(self)
        child.send(("config", self._settings))
        with self._publish_lock:
            self.builder.restart_samples()  # a new process starts with the whole history window
            snapshot = self.builder.build()
        child.send(("snapshot", snapshot))
        return child

    def publish(self) -> None:
        """Build a snapshot now and send it (after an operator action; the publisher does it periodically)."""
        with self._publish_lock:
            child = self._child
            if child is not None:  # readiness first: it needs no store, and a slow build must not delay it
                try:
                    child.send(("ready", self.source.ready()))
                except OSError:
                    pass
            started = time.monotonic()
            snapshot = self.builder.build()
            self._built_at = time.monotonic()
            self.build_spans.append((started, self._built_at))  # before the interval that follows from it
            snapshot = dataclasses.replace(snapshot, max_age=max(self.max_age, 2 * self.effective_interval()))
            child = self._child
            if child is not None:
                try:
                    child.send(("snapshot", snapshot))
                except OSError:
                    pass  # the publisher notices the dead child and starts another

    def _run(self) -> None:
        """Publish when the child asks, at most once per ``interval``; restart a child that died (after a
        pause, so a crash loop is slow)."""
        while not self._stopping.is_set():
            wanted = self._wanted.wait(1.0)
            child = self._child
            if child is not None and child.proc.poll() is not None:
                logger.error("status process %d exited with %s: restarting it", child.proc.pid, child.proc.returncode)
                child.closed.set()
                child.conn.close()
                if self._stopping.wait(1.0):
                    return
                try:
                    with self._publish_lock:  # no snapshot (and its new samples) goes to the dead one meanwhile
                        self._child = child = self._spawn()
                except (OSError, BurstError) as exc:
                    logger.error("status process could not be restarted: %s", exc)
                    continue
                threading.Thread(target=child.serve_calls, name="status-calls", daemon=True).start()
                continue
            if not wanted:
                continue
            if self._stopping.wait(max(0.0, self._built_at + self.effective_interval() - time.monotonic())):
                return
            self._wanted.clear()
            self._wait_for_gap()
            try:
                self.publish()
            except Exception:  # the publisher must outlive any one bad build
                logger.exception("status snapshot failed")

    def _recent_build(self) -> float | None:
        """Median of the last 20 builds' times (seconds), None before the first."""
        recent = sorted(end - start for start, end in itertools.islice(reversed(self.build_spans), 20))
        return recent[len(recent) // 2] if recent else None

    def effective_interval(self) -> float:
        """Seconds between builds under requests: ``interval``, or more when builds are slow, so that they
        take at most ``BUILD_SHARE`` of the daemon's time."""
        recent = self._recent_build()
        return self.interval if recent is None else max(self.interval, recent / BUILD_SHARE)

    def _wait_for_gap(self) -> None:
        """A periodic build runs between the loop's step rounds (``wait_between_steps`` of the daemon or the
        HA pair), so that it never holds the daemon's interpreter while a round runs: room for twice the
        recent build time, waiting ``GAP_WAIT`` at most (an operator action's publish does not wait)."""
        wait = getattr(self.source, "wait_between_steps", None)
        if wait is None:
            return
        recent = self._recent_build()
        room = 0.05 if recent is None else min(self.effective_interval(), max(0.01, 2 * recent))
        try:
            wait(room, GAP_WAIT)
        except Exception:  # never let the gate stop the publisher
            logger.exception("status snapshot: waiting for a gap between step rounds failed")

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wanted.set()  # wakes the publisher
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._child is not None:
            self._child.stop(timeout)
        self.pool.shutdown(wait=False, cancel_futures=True)
        if hasattr(self, "sock"):
            self.sock.close()
