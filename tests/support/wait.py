"""Waiting for the outside world: ``wait_until`` calls a check until it answers something truthy."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["wait_until"]


def wait_until(what: str, check: Callable[[], Any], timeout: float, every: float = 1.0,
               retry: tuple[type[BaseException], ...] = ()) -> Any:
    """``check()`` every ``every`` seconds until it returns something truthy, which is returned. An exception
    of a ``retry`` type counts as "not yet" (a node still booting, an answer not yet JSON). At ``timeout``:
    AssertionError naming ``what`` and the last answer or exception."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except retry as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f}s (last: {last!r})")
