"""Load traces for the simulator: a CSV whose first column is a timestamp and another the demand (the
second, or the one chosen by name or number when there are several: never guessed).

Read by `burstctl simulate` and bench/. Timestamps may be ISO 8601 (naive ones are UTC) or epoch seconds;
a header row is recognised by its second column not being a number. Every problem names FILE:LINE.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

from controller.errors import ConfigError

__all__ = ["Trace", "load_trace", "parse_timestamp"]


@dataclass(frozen=True, slots=True)
class Trace:
    """Samples in time order; each value holds until the next sample, the last one for ``end - times[-1]``
    (the trace's typical spacing)."""

    name: str
    times: list[float]
    values: list[float]
    end: float

    def percentile(self, q: float) -> float:
        """Linear interpolation between closest ranks (numpy's default)."""
        s = sorted(self.values)
        pos = q / 100.0 * (len(s) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)

    @classmethod
    def from_samples(cls, times: list[float], values: list[float], name: str = "<samples>") -> Trace:
        if not times or len(times) != len(values):
            raise ValueError("a trace needs as many values as timestamps, at least one")
        gaps = sorted(b - a for a, b in pairwise(times))
        step = gaps[len(gaps) // 2] if gaps else 60.0
        return cls(name, list(times), list(values), times[-1] + step)


def parse_timestamp(text: str) -> float:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    iso = text.replace("Z", "+00:00") if text.endswith("Z") else text
    dt = datetime.fromisoformat(iso)  # ValueError names the bad text
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _problem(path: str, line: int, message: str) -> ConfigError:
    where = f"{path}:{line}" if line else path
    return ConfigError(f"{where}: {message}")


def _value_column(name: str, rows: list[list[str]], column: str | None) -> int:
    """The index of the demand column. A file with more than two columns needs ``column``: a header name,
    or a number counting the timestamp as 1."""
    first = _first_data_line(rows)
    head = rows[first - 1] if first else []
    width = max((len(r) for r in rows if r and any(c.strip() for c in r)), default=0)
    header = [c.strip() for c in head] if len(head) >= 2 and not _is_number(head[1]) else []
    if column is None:
        if width <= 2:
            return 1
        names = ", ".join(header[1:]) if header else f"columns 2 to {width}"
        raise _problem(name, first, f"the trace has {width - 1} value columns ({names}): choose one with "
                                    f"--column NAME or --column N (the timestamp is column 1)")
    if column.isdigit():
        index = int(column) - 1
        if not 1 <= index < width:
            raise _problem(name, first, f"--column {column}: the value columns are 2 to {width}")
        return index
    if column not in header[1:]:
        known = ", ".join(header[1:]) or "none: the file has no header row"
        raise _problem(name, first, f"--column {column!r}: no such column (columns: {known})")
    return header.index(column)


def load_trace(path: str | Path, column: str | None = None) -> Trace:
    """Read and check a trace file; raises ConfigError whose problem lines say FILE:LINE: what is wrong.
    ``column``: the value column of a file with several (see ``_value_column``)."""
    name = str(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except FileNotFoundError:
        raise _problem(name, 0, "no such trace file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _problem(name, 0, f"cannot read the trace: {exc}") from None
    except csv.Error as exc:
        raise _problem(name, 0, f"not a CSV file: {exc}") from None
    times: list[float] = []
    values: list[float] = []
    col = _value_column(name, rows, column)
    for lineno, row in enumerate(rows, 1):
        if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        if len(row) <= col:
            want = "'timestamp,value'" if col == 1 else f"at least {col + 1} columns"
            raise _problem(name, lineno, f"expected {want}, got {','.join(row)!r}")
        if not times and lineno == _first_data_line(rows) and not _is_number(row[1]):
            continue  # the header row
        try:
            t = parse_timestamp(row[0])
        except ValueError:
            raise _problem(name, lineno, f"'{row[0].strip()}' is not a timestamp "
                                         "(use ISO 8601 like 2014-05-14 01:14:00, or epoch seconds)") from None
        if not _is_number(row[col]):
            raise _problem(name, lineno, f"demand '{row[col].strip()}' is not a number")
        v = float(row[col])
        if not math.isfinite(v) or v < 0:
            raise _problem(name, lineno, f"demand {row[col].strip()} must be a finite number >= 0")
        if not math.isfinite(t):
            raise _problem(name, lineno, f"timestamp {row[0].strip()} is not finite")
        if times and t <= times[-1]:
            what = "repeats" if t == times[-1] else "goes back before"
            raise _problem(name, lineno, f"timestamp {row[0].strip()} {what} the previous row's; "
                                         "rows must be in increasing time order")
        times.append(t)
        values.append(v)
    if not times:
        raise _problem(name, 0, "the trace has no data rows (expected 'timestamp,value' lines)")
    return Trace.from_samples(times, values, name)


def _first_data_line(rows: list[list[str]]) -> int:
    for lineno, row in enumerate(rows, 1):
        if row and any(c.strip() for c in row) and not row[0].lstrip().startswith("#"):
            return lineno
    return 0


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
