"""The one retry helper (controller/retry.py): how many attempts, which errors are retried, and the waits
between attempts (capped exponential with equal jitter, a server's Retry-After honoured). The adapters'
own numbers are pinned against the real components: tests/adapters/aliyun/test_ecs_pool.py (ECS),
tests/adapters/registry/test_registry_copy.py (a registry that comes back)."""

from __future__ import annotations

import random

import pytest

from controller.errors import NotFoundError, PermanentError, TransientError
from controller.retry import Backoff, retry_call


def _failing(errors: list[Exception]):
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return "done"

    return fn, calls


def test_transient_errors_are_retried_until_success_with_capped_equal_jitter_waits() -> None:
    slept: list[float] = []
    fn, calls = _failing([TransientError("busy") for _ in range(5)])
    assert retry_call(fn, Backoff(6, 0.5, 3.0, sleep=slept.append, rng=random.Random(1)), "test") == "done"
    assert len(calls) == 6 and len(slept) == 5
    ceilings = [0.5, 1.0, 2.0, 3.0, 3.0]  # doubling from the base, then the cap
    assert all(c / 2 <= s <= c for s, c in zip(slept, ceilings, strict=True)), slept
    assert len(set(slept)) == 5  # jittered: no two waits alike


def test_the_last_error_is_raised_after_every_attempt_and_others_are_not_retried() -> None:
    slept: list[float] = []
    fn, calls = _failing([TransientError(f"busy {n}") for n in range(4)])
    with pytest.raises(TransientError, match="busy 2"):
        retry_call(fn, Backoff(3, 0.1, 1.0, sleep=slept.append), "test")
    assert len(calls) == 3 and len(slept) == 2

    for error in (PermanentError("no"), NotFoundError("gone"), ValueError("bug")):
        fn, calls = _failing([error])
        with pytest.raises(type(error)):
            retry_call(fn, Backoff(5, 0.1, 1.0, sleep=slept.append), "test")
        assert len(calls) == 1


def test_retry_on_chooses_what_is_retried() -> None:
    fn, calls = _failing([PermanentError("not yet"), PermanentError("not yet")])
    assert retry_call(fn, Backoff(5, 0.0, 0.0, sleep=lambda s: None), "test",
                      retry_on=lambda exc: isinstance(exc, PermanentError)) == "done"
    assert len(calls) == 3


def test_a_retry_after_is_waited_at_least_within_the_cap() -> None:
    slept: list[float] = []
    fn, _ = _failing([TransientError("429", retry_after=2.0), TransientError("429", retry_after=60.0)])
    retry_call(fn, Backoff(3, 0.1, 10.0, sleep=slept.append), "test")
    assert 2.0 <= slept[0] <= 2.5 and slept[1] == 10.0


def test_one_attempt_means_no_retry() -> None:
    fn, calls = _failing([TransientError("busy")])
    with pytest.raises(TransientError):
        retry_call(fn, Backoff(1, 0.1, 1.0, sleep=lambda s: pytest.fail("slept")), "test")
    assert len(calls) == 1
