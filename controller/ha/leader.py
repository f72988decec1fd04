"""Leader election for an active/standby pair: a lease row in the state database with a fencing epoch.

``Leadership`` runs the election in a thread for ``controller.ha.pair.HaDaemon`` (``burstctl run`` with
``ha.enabled``); its ``fence`` is the ``StateStore`` write hook, so every journal write of the active
controller verifies, in its own transaction, that its epoch is still the current one. Why a lease row and
not a PostgreSQL advisory lock: it works on SQLite too, it carries the epoch that fences a returning old
leader, and its expiry (the TTL) bounds takeover time, where a lock held by a partitioned session is only
freed when PostgreSQL notices the dead TCP connection (minutes, by default).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, text

from controller.errors import FencedError, StateBusyError
from controller.store.database import pg_engine, sqlite_engine, translated

__all__ = ["Leadership", "LeaseInfo", "LeaseSettings", "LeaseTable", "new_holder"]

logger = logging.getLogger(__name__)


def new_holder() -> str:
    """This process's identity in the lease: host, pid and a random part (a restarted process is new)."""
    return f"{socket.gethostname()[:120]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class LeaseSettings:
    ttl: float = 10.0  # a lease not renewed for this long may be taken over
    renew_every: float = 2.0  # the active renews this often; the standby tries to acquire this often (max 1 s)
    # The active stops acting at ttl * (1 - drift) after the start of its last successful renewal, before
    # the database can let anyone else in: covers clock-rate drift between the two hosts and the database.
    drift: float = 0.1

    def __post_init__(self) -> None:
        if self.ttl <= 0 or self.renew_every <= 0:
            raise ValueError("lease ttl and renew_every must be positive")
        if self.renew_every * 2 > self.ttl * (1 - self.drift):
            raise ValueError(f"renew_every ({self.renew_every:g}s) must be at most half the lease ttl "
                             f"({self.ttl:g}s): one missed renewal must not lose the lease")

    @property
    def hold_for(self) -> float:
        return self.ttl * (1 - self.drift)

    @property
    def poll_every(self) -> float:
        return min(1.0, self.renew_every)


@dataclass(frozen=True)
class LeaseInfo:
    controller_id: str
    holder: str
    epoch: int
    expires_at: float
    acquired_at: float
    renewed_at: float
    now: float  # the database's clock when read (PostgreSQL), this host's on SQLite

    @property
    def remaining(self) -> float:
        return self.expires_at - self.now

    @property
    def live(self) -> bool:
        return self.remaining > 0


class LeaseTable:
    """The ``leader_lease`` row of one controller id (created by migration 2, controller/store/migrations.py).

    Times are the database's clock on PostgreSQL (the pair may run on two hosts whose clocks differ) and
    this host's clock on SQLite (one host by construction). Its own small engine: a loop that has every
    pooled connection busy must not delay a renewal."""

    _COLUMNS = "controller_id, holder, epoch, expires_at, acquired_at, renewed_at"

    def __init__(self, url: str, controller_id: str, *, clock: Callable[[], float] = time.time,
                 busy_timeout: float = 5.0) -> None:
        self.controller_id = controller_id
        self.clock = clock
        self._pg = url.startswith("postgres")
        if self._pg:
            # short timeouts: a renewal stuck longer than the lease is worth nothing
            # the state store's session settings (a frozen holder's transaction ends, see pg_engine)
            self.engine: Engine = pg_engine(url, pool_size=2, max_overflow=2, pool_pre_ping=True,
                                            connect_args={"connect_timeout": 3})
        else:
            # its own connections, no pool, no PRAGMA but busy_timeout: lease changes are read-modify-write
            self.engine = sqlite_engine(url, busy_timeout, begin="BEGIN IMMEDIATE", synchronous=None, wal=False,
                                        pooled=False)

    def close(self) -> None:
        self.engine.dispose()

    def _now(self, conn: Connection) -> float:
        if self._pg:
            # a renewal stuck longer than this is worth nothing (it waits behind our own long writes' row
            # locks, see check); SET LOCAL ends with the transaction
            conn.execute(text("SET LOCAL statement_timeout = '3s'"))
            return float(conn.execute(text("SELECT EXTRACT(EPOCH FROM clock_timestamp())")).scalar_one())
        return self.clock()

    def _row(self, conn: Connection, now: float, *, lock: str = "") -> LeaseInfo | None:
        row = conn.execute(text(f"SELECT {self._COLUMNS} FROM leader_lease WHERE controller_id = :cid {lock}"),
                           {"cid": self.controller_id}).one_or_none()
        if row is None:
            return None
        return LeaseInfo(controller_id=row[0], holder=row[1], epoch=int(row[2]), expires_at=float(row[3]),
                         acquired_at=float(row[4]), renewed_at=float(row[5]), now=now)

    def read(self) -> LeaseInfo | None:
        with translated("lease: state database"), self.engine.connect() as conn:
            return self._row(conn, self._now(conn))

    def try_acquire(self, holder: str, ttl: float) -> LeaseInfo | None:
        """Take the lease if nobody holds a live one; the epoch goes up by one. None if someone does."""
        with translated("lease: state database"), self.engine.begin() as conn:
            now = self._now(conn)
            conn.execute(text("INSERT INTO leader_lease (controller_id, holder, epoch, expires_at, acquired_at, "
                              "renewed_at) VALUES (:cid, '', 0, 0, :now, :now) ON CONFLICT (controller_id) "
                              "DO NOTHING"), {"cid": self.controller_id, "now": now})
            # On PostgreSQL this UPDATE waits for any write transaction holding the row FOR SHARE (the
            # fence check, below), so an old leader's write commits entirely before the takeover, or not.
            taken = conn.execute(text("UPDATE leader_lease SET holder = :holder, epoch = epoch + 1, "
                                      "expires_at = :exp, acquired_at = :now, renewed_at = :now "
                                      "WHERE controller_id = :cid AND expires_at <= :now"),
                                 {"cid": self.controller_id, "holder": holder, "exp": now + ttl, "now": now})
            if taken.rowcount != 1:
                return None
            return self._row(conn, now)

    def renew(self, holder: str, epoch: int, ttl: float) -> LeaseInfo | None:
        """Extend our lease; None when it is no longer ours (taken over: a newer epoch)."""
        with translated("lease: state database"), self.engine.begin() as conn:
            now = self._now(conn)
            done = conn.execute(text("UPDATE leader_lease SET expires_at = :exp, renewed_at = :now "
                                     "WHERE controller_id = :cid AND holder = :holder AND epoch = :epoch"),
                                {"cid": self.controller_id, "holder": holder, "epoch": epoch, "exp": now + ttl,
                                 "now": now})
            return self._row(conn, now) if done.rowcount == 1 else None

    def release(self, holder: str, epoch: int) -> bool:
        """Give the lease up at once (a clean shutdown): the standby takes over at its next attempt."""
        with translated("lease: state database"), self.engine.begin() as conn:
            done = conn.execute(text("UPDATE leader_lease SET expires_at = 0 "
                                     "WHERE controller_id = :cid AND holder = :holder AND epoch = :epoch"),
                                {"cid": self.controller_id, "holder": holder, "epoch": epoch})
            return done.rowcount == 1

    def check(self, conn: Any, holder: str, epoch: int) -> LeaseInfo | None:
        """Inside a caller's write transaction: the lease row, locked FOR SHARE on PostgreSQL so a takeover
        waits for this transaction to end (SQLite's BEGIN IMMEDIATE already serialises every writer)."""
        now = self.clock() if not self._pg else 0.0
        return self._row(conn, now, lock="FOR SHARE" if self._pg else "")


class Leadership:
    """One process's side of the election. ``role`` is "active" while it holds a lease it renewed within
    ``hold_for``; ``holds()`` is the cheap local check the daemon's jobs and the fenced edges make before
    acting, ``fence`` the transactional one every state write makes. ``changed`` is set on every change of
    role (HaDaemon starts or stops the loop on it)."""

    def __init__(self, table: LeaseTable, settings: LeaseSettings | None = None, *, holder: str | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.table = table
        self.settings = settings or LeaseSettings()
        self.holder = holder or new_holder()
        self.monotonic = monotonic
        self.changed = threading.Event()
        self.last_seen: LeaseInfo | None = None  # the lease as last read (who is active, for the standby)
        self._seen_at = 0.0  # monotonic time of that read
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._epoch: int | None = None
        self._deadline = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ queries

    @property
    def epoch(self) -> int | None:
        return self._epoch

    @property
    def role(self) -> str:
        return "active" if self.holds() else "standby"

    def holds(self) -> bool:
        return self._epoch is not None and self.monotonic() < self._deadline

    def ensure(self) -> int:
        """The epoch, or FencedError (and the step-down starts) when the lease is no longer surely ours."""
        epoch = self._epoch
        if epoch is None:
            raise FencedError(f"controller {self.table.controller_id}: this process is a standby; it must not act")
        if self.monotonic() >= self._deadline:
            self._lose(epoch, "lease not renewed in time (paused, or the state database unreachable)")
            raise FencedError(f"controller {self.table.controller_id}: lease epoch {epoch} expired here; "
                              "stepping down")
        return epoch

    def fence(self, session: Any) -> int:
        """``StateStore`` write hook: the write happens only if our epoch is still the current one."""
        epoch = self.ensure()
        row = self.table.check(session, self.holder, epoch)
        if row is None or row.holder != self.holder or row.epoch != epoch:
            who = f"{row.holder} (epoch {row.epoch})" if row is not None else "nobody"
            self._lose(epoch, f"lease taken over by {who}")
            raise FencedError(f"controller {self.table.controller_id}: fenced: epoch {epoch} is no longer "
                              f"current, the lease is held by {who}")
        return epoch

    # ------------------------------------------------------------------ transitions

    def _gain(self, info: LeaseInfo, sent: float) -> None:
        with self._lock:
            self._epoch = info.epoch
            self._deadline = sent + self.settings.hold_for
        self.last_seen = info
        logger.warning("leader: this process (%s) is now ACTIVE for controller %s, epoch %d", self.holder,
                       info.controller_id, info.epoch)
        self.changed.set()

    def _lose(self, epoch: int, why: str) -> None:
        with self._lock:
            if self._epoch != epoch:
                return  # already lost (several threads notice at once)
            self._epoch = None
            self._deadline = 0.0
        logger.warning("leader: stepping down to STANDBY (epoch %d): %s", epoch, why)
        self.changed.set()

    def try_acquire(self) -> bool:
        """One election attempt (the thread makes these; start-up makes one at once)."""
        if self._epoch is not None:
            return True
        sent = self.monotonic()
        try:
            info = self.table.try_acquire(self.holder, self.settings.ttl)
            if info is None:
                self.last_seen, self._seen_at = self.table.read(), self.monotonic()
            self.last_error = None
        except StateBusyError as exc:
            self.last_error = str(exc)
            logger.warning("leader: election attempt failed: %s", exc)
            return False
        if info is None:
            return False
        self._gain(info, sent)
        return True

    def renew(self) -> bool:
        epoch = self._epoch
        if epoch is None:
            return False
        sent = self.monotonic()
        if sent >= self._deadline:
            self._lose(epoch, "lease not renewed in time (paused, or the state database unreachable)")
            return False
        try:
            info = self.table.renew(self.holder, epoch, self.settings.ttl)
            self.last_error = None
        except StateBusyError as exc:
            self.last_error = str(exc)
            logger.warning("leader: renewal failed (%.1fs left): %s", self._deadline - sent, exc)
            return True
        if info is None:
            self._lose(epoch, "lease taken over by another process")
            return False
        with self._lock:
            if self._epoch == epoch:
                self._deadline = sent + self.settings.hold_for
        self.last_seen = info
        return True

    def resign(self) -> None:
        """Give the lease up (clean shutdown, or the loop could not start): the standby takes over at once."""
        epoch = self._epoch
        if epoch is None:
            return
        self._lose(epoch, "resigned")
        try:
            self.table.release(self.holder, epoch)
        except StateBusyError as exc:
            logger.warning("leader: could not release the lease (it expires by itself): %s", exc)

    # ------------------------------------------------------------------ the election thread

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()

    def stop(self, *, resign: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if resign:
            self.resign()
        self.table.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._epoch is None:
                    self.try_acquire()
                else:
                    self.renew()
            except Exception:
                logger.exception("leader: election step crashed")
            self._stop.wait(self._next_wait())

    def _next_wait(self) -> float:
        now = self.monotonic()
        if self._epoch is not None:  # renew on time, and never sleep past the point where we must stop acting
            return max(0.05, min(self.settings.renew_every, self._deadline - now - 0.05))
        wait = self.settings.poll_every
        seen = self.last_seen
        if seen is not None and seen.holder and seen.holder != self.holder:
            left = seen.remaining - (now - self._seen_at)
            if left > -wait:  # the holder's lease runs out before the next poll: try right after it does
                wait = min(wait, max(0.02, left + 0.02))
        return wait
