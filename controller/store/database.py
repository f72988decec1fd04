"""The state database's engines and errors, in one place: SQLite engines with their PRAGMAs and the
transaction kind they begin, PostgreSQL engines whose sessions end when idle in a transaction, the
read-only engine of an export, and the one translation of database errors into project errors. Used by
the state store (``controller/store/state.py``), the leader lease (``controller/ha/leader.py``) and ``burstctl
history`` (``controller/store/history.py``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from controller.errors import NotFoundError, StateBusyError

__all__ = [
    "IDLE_IN_TRANSACTION_TIMEOUT",
    "pg_engine",
    "readonly_engine",
    "redacted_url",
    "sqlite_engine",
    "sqlite_path",
    "sqlite_url",
    "translated",
]

# A controller frozen inside a write transaction (SIGSTOP, a paused VM) would hold the leader lease's row FOR
# SHARE (controller/ha/leader.py, the fence check) for as long as it stays frozen, and no standby could take
# over: PostgreSQL ends a session idle in a transaction this long (its transaction rolls back, nothing
# half-written; the frozen process finds its connection gone when it resumes). The controller's own
# transactions hold no outside call and last milliseconds (every intent commits before its call).
IDLE_IN_TRANSACTION_TIMEOUT = "5s"


def sqlite_url(path: str | os.PathLike[str]) -> str:
    return f"sqlite:///{Path(path).absolute()}"


def sqlite_path(url: str) -> str:
    """The file of a ``sqlite:///`` URL ("" for none, ":memory:" for memory)."""
    return url.split(":///", 1)[1] if ":///" in url else ""


def redacted_url(url: str) -> str:
    """The database named without its password, for messages."""
    head, sep, tail = url.partition("@")
    if sep and "://" in head:
        scheme, _, userinfo = head.partition("://")
        return f"{scheme}://{userinfo.split(':', 1)[0]}@{tail}"
    return url


def pg_engine(url: str, **kwargs: Any) -> Engine:
    """A PostgreSQL engine whose sessions end after ``IDLE_IN_TRANSACTION_TIMEOUT`` idle in a transaction.
    Set per session (the URL's own ``options``, e.g. a search_path, stay as they are)."""
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        with dbapi_conn.cursor() as cur:
            cur.execute(f"SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_TIMEOUT}'")
        dbapi_conn.commit()

    return engine


def sqlite_engine(url: str, busy_timeout: float, *, begin: Literal["BEGIN", "BEGIN IMMEDIATE"],
                  synchronous: Literal["FULL", "NORMAL"] | None = "FULL", wal: bool = True,
                  pooled: bool = True) -> Engine:
    """A SQLite engine that begins its transactions itself with ``begin`` (IMMEDIATE takes the write lock up
    front: no deadlock upgrading a read to a write), waits ``busy_timeout`` seconds for another writer,
    and with ``wal`` and ``synchronous`` sets those PRAGMAs on each connection (None: the file's own).
    Pooled by default: opening a SQLite connection (and its PRAGMAs) costs more than most queries."""
    pool: dict[str, Any] = {"pool_size": 8, "max_overflow": 24, "pool_pre_ping": False} if pooled \
        else {"poolclass": NullPool}
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": busy_timeout}, **pool)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        if wal:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        if synchronous is not None:
            cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)

    return engine


def readonly_engine(url: str) -> Engine:
    """An engine that cannot write: SQLite opened ``mode=ro`` (it refuses every write on the connection,
    whatever the code above it does), PostgreSQL in read-only transactions. NotFoundError when a SQLite
    file is missing: an export must never create the database it reads."""
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if not path or path == ":memory:":
            raise NotFoundError(f"{url}: not a state database file")
        if not Path(path).is_file():
            raise NotFoundError(f"no state database at {path} (is state.url right? the daemon creates it at "
                                "its first start)")
        ro = f"sqlite:///file:{Path(path).absolute()}?mode=ro&uri=true"
        return create_engine(ro, poolclass=NullPool, connect_args={"timeout": 5.0})
    return create_engine(url, poolclass=NullPool,
                         execution_options={"postgresql_readonly": True} if url.startswith("postgresql") else {})


@contextmanager
def translated(what: str = "state database", *, every_error: bool = False) -> Iterator[None]:
    """The one place database errors become project errors: a locked, full or unreachable database, or a
    lost connection, is ``StateBusyError`` (transient: the loop holds and retries), its message starting
    with ``what``. ``every_error``: any other database error too (a command that reports and exits),
    where the loop lets a programming error through as it is."""
    try:
        yield
    except OperationalError as exc:
        raise StateBusyError(f"{what} unavailable: {str(exc.orig)[:200]}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise StateBusyError(f"{what} connection lost: {str(exc.orig)[:200]}") from exc
        if every_error:
            raise StateBusyError(f"{what}: {str(exc.orig)[:200]}") from exc
        raise
