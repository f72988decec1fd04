"""Retry with capped exponential backoff and jitter: the one way the controller and its adapters retry a
call (tenacity underneath). Used by ``adapters/aliyun/client.py`` (ECS and SLB), ``adapters/registry/client.py`` and
``adapters/registry/blobcopy.py`` (registries) and the daemon's start-up reconcile.

``Backoff`` holds one caller's numbers (attempts, base, cap) and its sleep and random source, which tests
replace; ``retry_call`` runs a function under it, retrying only what ``retry_on`` says."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from controller.errors import BurstError, TransientError

__all__ = ["Backoff", "retry_call"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class Backoff:
    attempts: int  # calls in all, the first included
    base: float  # the first wait's ceiling, seconds; doubles each time
    cap: float  # no wait is longer
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, hint: float | None = None) -> float:
        """The wait after failed attempt ``attempt`` (1-based): "equal jitter", between half the ceiling
        ``min(cap, base * 2**(attempt - 1))`` and the ceiling, so retries of many callers spread out. With
        ``hint`` (a server's Retry-After) at least that, up to a quarter more, within ``cap``."""
        if hint is not None:
            return min(self.cap, hint * (1 + self.rng.random() / 4))
        ceiling = min(self.cap, self.base * 2 ** (attempt - 1))
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)


def retry_call(fn: Callable[[], T], backoff: Backoff, what: str, *,
               retry_on: Callable[[BaseException], bool] = lambda exc: isinstance(exc, TransientError)) -> T:
    """``fn()``, called again after a wait while it raises an error ``retry_on`` accepts (by default a
    ``TransientError``), at most ``backoff.attempts`` times in all; the last error is raised as it is. A
    ``TransientError``'s ``retry_after`` (the server's Retry-After) is the wait's hint. Each retry is logged
    at INFO, naming ``what``."""

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        return backoff.delay(state.attempt_number, exc.retry_after if isinstance(exc, TransientError) else None)

    def log(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        code = exc.code if isinstance(exc, BurstError) else None
        logger.info("%s %s (%s), retry %d in %.2fs", what,
                    "transient failure" if isinstance(exc, TransientError) else "failure", code or exc,
                    state.attempt_number, delay,
                    extra={"what": what, "attempt": state.attempt_number, "wait": round(delay, 2), "code": code})

    retrying = Retrying(sleep=backoff.sleep, stop=stop_after_attempt(max(1, backoff.attempts)), wait=wait,
                        retry=retry_if_exception(retry_on), before_sleep=log, reraise=True)
    return retrying(fn)
