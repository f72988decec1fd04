"""HAProxy through its runtime API (stats socket, unix or TCP): the ``LoadBalancer`` port
(``HaproxyLoadBalancer``) and the ``MetricsSource`` of backend sessions or queue (``HaproxyMetricsSource``).
Called by the controller's admit/drain/reconcile steps and by the metrics sampler.

Servers added at run time live only in the running process: a reload drops them, so the controller
re-applies its servers (``reapply``) whenever it reconciles; ``add`` is idempotent, so that is safe.
"""

from __future__ import annotations

import csv
import io
import logging
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from controller.errors import BurstError, NotFoundError, PermanentError, TransientError
from controller.ports import Server
from policies.types import Observation

__all__ = ["HaproxyLoadBalancer", "HaproxyMetricsSource", "RuntimeApi", "StatRow"]

logger = logging.getLogger(__name__)

_OK_ANSWERS = ("", "New server registered.", "Server deleted.")
# server states HAProxy prints in `show stat` -> the Server.state the port speaks
_STATE = {"DRAIN": "drain", "MAINT": "maint", "NOLB": "drain"}


class _NoSuchServer(NotFoundError):
    pass


def _classify(command: str, answer: str) -> None:
    """The one place runtime-API answers become our errors (the API speaks text, not codes)."""
    text = answer.strip()
    if text in _OK_ANSWERS or text.startswith(("New server registered", "Server deleted")):
        return
    lowered = text.lower()
    if "no such server" in lowered:
        raise _NoSuchServer(text)
    if "no such backend" in lowered or "no such proxy" in lowered or "unknown backend" in lowered:
        raise NotFoundError(f"haproxy: {command!r}: {text}")
    if "permission denied" in lowered:
        raise PermanentError(f"haproxy: {command!r}: {text} (the stats socket needs `level admin`)")
    if "still has connections" in lowered or "try again" in lowered:
        raise TransientError(f"haproxy: {command!r}: {text}")
    if "unknown command" in lowered:
        raise PermanentError(f"haproxy: {command!r} is not supported by this HAProxy (2.6+ needed): {text}")
    raise PermanentError(f"haproxy: {command!r}: {text[:300]}")


class RuntimeApi:
    """One command per connection over the stats socket: ``/path``, ``unix:///path`` or ``tcp://h:p``."""

    def __init__(self, address: str, timeout: float = 5.0) -> None:
        self.address = address
        self.timeout = timeout

    def _connect(self) -> socket.socket:
        if self.address.startswith("tcp://"):
            host, _, port = self.address[len("tcp://"):].rpartition(":")
            return socket.create_connection((host.strip("[]"), int(port)), timeout=self.timeout)
        path = self.address.removeprefix("unix://")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(path)
        except BaseException:
            s.close()
            raise
        return s

    def send(self, command: str) -> str:
        try:
            with self._connect() as s:
                s.sendall(command.encode() + b"\n")
                chunks = []
                while chunk := s.recv(65536):
                    chunks.append(chunk)
        except FileNotFoundError as exc:
            raise TransientError(f"haproxy stats socket {self.address} does not exist (is HAProxy running?)") from exc
        except PermissionError as exc:
            raise PermanentError(f"haproxy stats socket {self.address}: permission denied") from exc
        except OSError as exc:  # refused, reset, timeout: HAProxy restarting or overloaded
            raise TransientError(f"haproxy stats socket {self.address}: {exc}") from exc
        return b"".join(chunks).decode(errors="replace")

    def command(self, command: str) -> str:
        answer = self.send(command)
        _classify(command, answer)
        return answer

    def stat(self, backend: str, kind: int) -> list[StatRow]:
        """``show stat BACKEND KIND -1`` (KIND: 2 backend, 4 servers, 6 both) as rows; the backend row is
        always asked for, so an empty backend and a missing one can be told apart."""
        command = f"show stat {backend} {kind | 2} -1"
        answer = self.send(command)
        text = answer.lstrip("# ")
        if not text.startswith("pxname"):
            _classify(command, answer)
            raise PermanentError(f"haproxy: unexpected `show stat` answer: {answer[:200]!r}")
        rows = [StatRow.from_csv(r) for r in csv.DictReader(io.StringIO(text)) if r.get("pxname") == backend]
        if not any(r.name == "BACKEND" for r in rows):
            raise NotFoundError(f"haproxy: no backend {backend!r}")
        return [r for r in rows if kind & 2 or r.name != "BACKEND"]


@dataclass(frozen=True, slots=True)
class StatRow:
    backend: str
    name: str  # server name, or "BACKEND"
    status: str
    weight: int
    sessions: int  # scur
    queue: int  # qcur
    addr: str

    @classmethod
    def from_csv(cls, row: dict[str, str]) -> StatRow:
        def num(key: str) -> int:
            value = row.get(key) or "0"
            return int(value) if value.isdigit() else 0

        return cls(backend=row["pxname"], name=row["svname"], status=row.get("status") or "",
                   weight=num("weight"), sessions=num("scur"), queue=num("qcur"), addr=row.get("addr") or "")


class HaproxyLoadBalancer:
    """``LoadBalancer`` over the HAProxy 2.6 runtime API; one instance per stats socket."""

    def __init__(self, socket_address: str, timeout: float = 5.0, delete_wait: float = 3.0,
                 own_prefix: str = "") -> None:
        """``own_prefix``: how the names of the servers this controller adds begin (``<controller_id>-``);
        the other servers of a backend are the on-prem ones, whose weight a replica gets by default."""
        self.api = RuntimeApi(socket_address, timeout)
        self.own_prefix = own_prefix
        self._delete_wait = delete_wait
        # HAProxy applies commands one at a time, but add+enable must not interleave with a del
        self._lock = threading.Lock()

    def close(self) -> None:
        return None

    def _server_rows(self, backend: str) -> dict[str, StatRow]:
        return {r.name: r for r in self.api.stat(backend, 4)}

    def add(self, backend: str, server: Server) -> None:
        target = f"{backend}/{server.name}"
        with self._lock:
            rows = self._server_rows(backend)
            existing = rows.get(server.name)
            if existing is None:
                weight = server.weight if server.weight is not None else self._onprem_weight(rows, server.name)
                self.api.command(f"add server {target} {server.address}:{server.port} weight {weight}")
                # dynamic servers are born in maintenance: admit it
                self.api.command(f"enable server {target}")
                if server.state == "drain":
                    self.api.command(f"set server {target} state drain")
                logger.info("haproxy server added", extra={"backend": backend, "server": server.name,
                                                           "addr": f"{server.address}:{server.port}",
                                                           "weight": weight})
                return
            if existing.addr and existing.addr != f"{server.address}:{server.port}":
                # same identity, new place (a replica restarted on another port): move it, keep its state
                self.api.command(f"set server {target} addr {server.address} port {server.port}")
                logger.warning("haproxy server moved", extra={"backend": backend, "server": server.name,
                                                              "from": existing.addr})

    def _onprem_weight(self, rows: dict[str, StatRow], name: str) -> int:
        """The weight the backend's own servers have (the most common one, when they differ): a replica
        added with it takes the share of one of them. Without any, the servers this controller added
        (which got it too); in an empty backend HAProxy's default, 1."""
        others = [r for n, r in rows.items() if n != name]
        theirs = [r.weight for r in others if not (self.own_prefix and r.name.startswith(self.own_prefix))]
        weights = theirs or [r.weight for r in others]
        return Counter(weights).most_common(1)[0][0] if weights else 1

    def reapply(self, backend: str, servers: Iterable[Server]) -> list[str]:
        """Make every server in ``servers`` exist again, in its state (after a reload or restart);
        returns the names that had to be re-added."""
        present = set(self._server_rows(backend))
        readded = []
        for server in servers:
            if server.name not in present:
                readded.append(server.name)
            self.add(backend, server)
            if server.state == "maint":
                self._admin(backend, server.name, "disable server {t}")
        if readded:
            logger.warning("haproxy servers re-applied (HAProxy was reloaded or restarted)",
                           extra={"backend": backend, "servers": readded})
        return readded

    def _admin(self, backend: str, name: str, template: str) -> bool:
        """Run an admin command on one server; False when the server does not exist."""
        try:
            self.api.command(template.format(t=f"{backend}/{name}"))
            return True
        except _NoSuchServer:
            return False

    def drain(self, backend: str, name: str) -> None:
        if not self._admin(backend, name, "set server {t} state drain"):
            self._backend_exists(backend)
            logger.info("drain of absent haproxy server %s/%s: nothing to do", backend, name)

    def set_weight(self, backend: str, name: str, weight: int) -> None:
        if not self._admin(backend, name, f"set server {{t}} weight {int(weight)}"):
            raise NotFoundError(f"haproxy: no server {backend}/{name}")

    def sessions(self, backend: str, name: str) -> int:
        row = self._server_rows(backend).get(name)
        return 0 if row is None else row.sessions + row.queue

    def remove(self, backend: str, name: str) -> None:
        with self._lock:
            if not self._admin(backend, name, "set server {t} state maint"):
                self._backend_exists(backend)
                return
            deadline = time.monotonic() + self._delete_wait
            while True:
                try:
                    if not self._admin(backend, name, "del server {t}"):
                        return
                    logger.info("haproxy server removed", extra={"backend": backend, "server": name})
                    return
                except TransientError:
                    # sessions left after a forced drain timeout, or idle pooled connections: close them
                    self._admin(backend, name, "shutdown sessions server {t}")
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.1)

    def list(self, backend: str) -> list[Server]:
        out = []
        for row in self.api.stat(backend, 4):
            address, _, port = row.addr.rpartition(":")
            out.append(Server(name=row.name, address=address, port=int(port) if port.isdigit() else 0,
                              state=_STATE.get(row.status.split(" ")[0], "ready"), weight=row.weight,
                              sessions=row.sessions + row.queue))
        return out

    def _backend_exists(self, backend: str) -> None:
        self.api.stat(backend, 2)  # raises NotFoundError for a wrong backend name


class HaproxyMetricsSource:
    """Backend current sessions (``scur``) or queue (``qcur``) from ``show stat``, averaged over the window
    from the samples this source has taken (the sampler calls ``query`` every tick)."""

    def __init__(self, socket_address: str, backend: str, stat: str = "sessions", timeout: float = 3.0) -> None:
        if stat not in ("sessions", "queue"):
            raise PermanentError(f"haproxy metric stat must be sessions or queue, not {stat!r}")
        self.api = RuntimeApi(socket_address, timeout)
        self.backend = backend
        self.stat = stat
        self._samples: deque[tuple[float, float]] = deque(maxlen=10_000)
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"haproxy:{self.backend}:{self.stat}"

    def query(self, window: float) -> Observation:
        now = time.time()
        try:
            row = next(r for r in self.api.stat(self.backend, 2) if r.name == "BACKEND")
        except (BurstError, StopIteration) as exc:
            return Observation(value=None, age=0.0, source=self.name, ok=False,
                               error=str(exc) or f"no BACKEND row for {self.backend}")
        value = float(row.sessions if self.stat == "sessions" else row.queue)
        with self._lock:
            self._samples.append((now, value))
            while self._samples and self._samples[0][0] < now - max(window, 0.0):
                self._samples.popleft()
            in_window: Sequence[tuple[float, float]] = tuple(self._samples)
        mean = sum(v for _, v in in_window) / len(in_window)
        return Observation(value=mean, age=0.0, source=self.name, history=tuple(in_window[:-1]))

    def close(self) -> None:
        return None
