"""Units used in policy files: durations such as ``90s``, ``5m``, ``1h30m``, ``2d`` (a bare number means
seconds). ``Duration`` is a pydantic-ready float of seconds; both the policy model and the strategies use it."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

__all__ = ["Duration", "format_duration", "parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(value: Any) -> float:
    """Seconds in ``value``: a number (seconds) or a string like ``90s``, ``5m``, ``1h30m``.

    Raises ValueError with a message fit for ops (it becomes ``field: message`` in the validator)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 90s or 5m, got a boolean")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like 90s or 5m, got {type(value).__name__}")
    text = value.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    pos, total = 0, 0.0
    for m in _PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"'{value}' is not a duration: use a number with a unit, like 90s, 5m, 1h30m (units ms, s, m, h, d, w)")
    return total


def format_duration(seconds: float) -> str:
    """The shortest readable form: 90 -> '1m30s', 3600 -> '1h'."""
    if seconds < 1 and seconds > 0:
        return f"{round(seconds * 1000)}ms"
    rest = int(round(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"


Duration = Annotated[float, BeforeValidator(parse_duration)]
