"""The state database under the journal: its engines (SQLite in WAL mode by default, PostgreSQL by URL,
``postgresql+psycopg://...``), the schema migrated at open, and the one way to write. Every write runs in one
transaction through ``_write``, which first calls the optional ``fence`` hook (the leader lease check of an
active/standby pair) so a fenced controller can never write. A locked, full or unreachable database raises
``StateBusyError`` (transient: the loop holds and retries). The journal itself is controller/store/state.py;
the records beside it (events, samples, decisions, per-policy state, node images) controller/store/records.py.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import func, text
from sqlmodel import Session, select

from controller.store import migrations
from controller.store.database import pg_engine, sqlite_engine, sqlite_path, translated
from controller.store.models import (
    DecisionRow,
    EventRow,
    InstanceRow,
    Intent,
    MetricSample,
    Replica,
)

__all__ = ["DEFAULT_URL", "FenceHook", "StoreBase", "dumps", "new_id"]

logger = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:////var/lib/burst-controller/state.db"
FenceHook = Callable[[Session], "int | None"]


def new_id(prefix: str = "") -> str:
    """A short unique id; intent ids double as ECS ClientTokens (at most 64 ASCII characters)."""
    return prefix + uuid.uuid4().hex[:20]


def dumps(value: object) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


class StoreBase:
    """The engines, the write lock and the fenced transactions of the state database. Thread-safe."""

    def __init__(self, url: str = DEFAULT_URL, *, clock: Callable[[], float] = time.time,
                 fence: FenceHook | None = None, busy_timeout: float = 5.0) -> None:
        self.url = url
        self.clock = clock
        self.fence = fence
        self._sqlite = url.startswith("sqlite")
        # One writer at a time inside this process; busy_timeout covers other processes.
        self._write_lock = threading.RLock() if self._sqlite else None
        if self._sqlite:
            path = sqlite_path(url)
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._writer = sqlite_engine(url, busy_timeout, begin="BEGIN IMMEDIATE")
            self._reader = sqlite_engine(url, busy_timeout, begin="BEGIN")
            # SCALE-HA: history rows (samples, decisions) commit without their own fsync; the next journal
            # commit's fsync of the WAL (or a checkpoint) makes them durable too. 500 policies x 2 history
            # rows per tick at ~7 ms per fsync would otherwise cost seconds per tick.
            self._history_writer = sqlite_engine(url, busy_timeout, begin="BEGIN IMMEDIATE", synchronous="NORMAL")
        else:
            self._writer = pg_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
            self._reader = self._writer
            self._history_writer = self._writer
        # SCALE-HA: group commit of history rows (see _history): queued rows, the last queued and flushed seq
        self._hist: list[Any] = []
        self._hist_seq = self._hist_done = 0
        self._hist_lock = threading.Lock()
        self._hist_flush = threading.Lock()
        self._local = threading.local()  # this thread's open transaction()
        with translated(), self._writer.begin() as conn:
            applied = migrations.migrate(conn)
        if applied:
            logger.info("state schema migrated to version %d", applied[-1])

    # ------------------------------------------------------------------ engines and transactions

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group the journal writes made inside (by this thread) into ONE transaction: one fence check and
        one commit (PERF: a scaling action's plan, policy row and event were three fsyncs). All or nothing."""
        if getattr(self._local, "tx", None) is not None:
            yield  # already inside one
            return
        with self._write() as tx:
            self._local.tx = tx
            try:
                yield
            finally:
                self._local.tx = None

    @contextmanager
    def _write(self, *, durable: bool = True) -> Iterator[tuple[Session, int | None]]:
        """One write transaction behind the fence; ``durable=False`` (history rows only) skips its own fsync.
        Inside ``transaction()``, the journal writes of this thread join its transaction."""
        outer = getattr(self._local, "tx", None) if durable else None
        if outer is not None:
            yield outer
            return
        lock = self._write_lock
        if lock is not None:
            lock.acquire()
        try:
            engine = self._writer if durable else self._history_writer
            with translated(), Session(engine, expire_on_commit=False) as session, session.begin():
                if not durable and not self._sqlite:
                    session.execute(text("SET LOCAL synchronous_commit = off"))
                fence_token = self.fence(session) if self.fence else None
                yield session, fence_token
        finally:
            if lock is not None:
                lock.release()

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with translated(), Session(self._reader, expire_on_commit=False) as session:
            yield session

    def close(self) -> None:
        self._writer.dispose()
        if self._history_writer is not self._writer:
            self._history_writer.dispose()
        if self._reader is not self._writer:
            self._reader.dispose()

    def schema_version(self) -> int:
        with translated(), self._reader.connect() as conn:
            return migrations.current_version(conn)


    def count(self, table: str) -> int:
        model = {"events": EventRow, "intents": Intent, "replicas": Replica, "instances": InstanceRow,
                 "samples": MetricSample, "decisions": DecisionRow}[table]
        with self._read() as s:
            return int(s.exec(select(func.count()).select_from(model)).one())


