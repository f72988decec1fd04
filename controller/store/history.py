"""The metric samples the daemon recorded, read back from the state database and written as a load trace
(``timestamp,value``, the format ``controller.sim.trace.load_trace`` reads). Used by ``burstctl history``.

The database is opened READ-ONLY and without ``StateStore``: that class migrates the schema when it opens,
and an export (maybe of a backup copy, maybe by a newer ``burstctl`` than the running daemon) must never
change the database it reads.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from sqlalchemy import text
from sqlalchemy.exc import OperationalError, ProgrammingError

from controller.errors import NotFoundError
from controller.store.database import readonly_engine, redacted_url, translated

__all__ = ["TRACE_HEADER", "Sample", "SampleSet", "format_timestamp", "read_samples", "write_trace"]

logger = logging.getLogger(__name__)

TRACE_HEADER = "timestamp,value"


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    value: float | None
    ok: bool
    replicas: int


@dataclass(frozen=True, slots=True)
class SampleSet:
    policy: str
    since: float
    samples: list[Sample]


def read_samples(url: str, policy: str, since: float) -> SampleSet:
    """Samples of ``policy`` taken at or after ``since`` (epoch seconds), oldest first.

    Raises NotFoundError when the database or the policy's samples are missing (naming the policies that
    have samples), StateBusyError when the database cannot be reached."""
    engine = readonly_engine(url)
    try:
        with translated(f"state database {redacted_url(url)}", every_error=True), engine.connect() as conn:
            try:
                rows = conn.execute(text(
                    "SELECT at, value, ok, replicas FROM metric_samples WHERE policy = :p AND at >= :since "
                    "ORDER BY at, id"), {"p": policy, "since": since}).all()
                others: Sequence[str] = []
                if not rows:
                    others = [r[0] for r in conn.execute(text(
                        "SELECT DISTINCT policy FROM metric_samples WHERE at >= :since ORDER BY policy"),
                        {"since": since})]
            except (OperationalError, ProgrammingError) as exc:
                if "no such table" in str(exc.orig) or "does not exist" in str(exc.orig):
                    raise NotFoundError(f"{redacted_url(url)} is not a burst-controller state database "
                                        "(it has no metric_samples table)") from None
                raise
    finally:
        engine.dispose()
    if not rows:
        when = format_timestamp(since)
        have = f"; policies with samples since then: {', '.join(others)}" if others else \
            "; no policy has samples since then (is the daemon running? try a longer --since)"
        raise NotFoundError(f"no samples of policy {policy!r} since {when} UTC{have}")
    return SampleSet(policy, since, [Sample(float(at), None if v is None else float(v), bool(ok), int(n or 0))
                                     for at, v, ok, n in rows])


def format_timestamp(at: float) -> str:
    """UTC, whole seconds, like the shared traces: ``2014-05-14 01:14:00``."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _format_value(v: float) -> str:
    return repr(round(v, 6))


def trace_rows(samples: Iterable[Sample]) -> tuple[list[tuple[str, str]], int]:
    """(rows, skipped): usable samples as trace rows. Failed or negative samples are skipped (the simulator
    wants demand >= 0, and a failed query is no demand); samples in the same second keep the last one, so
    timestamps strictly increase as ``load_trace`` requires."""
    rows: list[tuple[str, str]] = []
    skipped = 0
    for s in samples:
        if not s.ok or s.value is None or not math.isfinite(s.value) or s.value < 0:
            skipped += 1
            continue
        stamp = format_timestamp(s.at)
        if rows and rows[-1][0] == stamp:
            rows[-1] = (stamp, _format_value(s.value))
        else:
            rows.append((stamp, _format_value(s.value)))
    return rows, skipped


def write_trace(rows: Sequence[tuple[str, str]], out: TextIO) -> None:
    out.write(TRACE_HEADER + "\n")
    out.writelines(f"{stamp},{value}\n" for stamp, value in rows)
