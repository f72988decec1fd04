"""Bad input, property-based (hypothesis): generated policy files (the POLICY-MODEL engineer's generators in
tests/support/policy_docs.py) and generated controller configs (tests/reliability/config_docs.py) give only
clean FILE:LINE:COL problems, never an exception, and no document takes more than a few seconds (a hang
fails the hypothesis deadline). CI runs 150 + 250 documents; bench/reliability.py runs 10,000 of each
(RELIABILITY_FUZZ_POLICIES, RELIABILITY_FUZZ_CONFIGS)."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.loader import load_policy_text
from tests.reliability.config_docs import check_config, generated_config
from tests.reliability.harness import count, record, rng_for
from tests.support.policy_docs import check_result, generated_document

POLICIES = count("fuzz_policies", 150)
CONFIGS = count("fuzz_configs", 200)
DEADLINE_MS = 5000  # per document: a hang (or a pathological slow path) fails the test


class Tally:
    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.slowest = 0.0

    def timed(self, fn, *args):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        out = fn(*args)
        self.slowest = max(self.slowest, time.perf_counter() - t0)
        self.outcomes[out] += 1
        return out


_policies, _configs = Tally(), Tally()


def _policy_outcome(text: str) -> str:
    result = load_policy_text(text, "fuzz.yaml")
    check_result(text, "fuzz.yaml", result)
    for problem in result.problems:  # one problem, one line (a located line, never a continuation)
        assert "\n" not in str(problem) and "\r" not in str(problem), str(problem)
    return "rejected" if result.problems else "valid"


@settings(max_examples=POLICIES, deadline=DEADLINE_MS, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False))
def test_generated_policy_files_give_only_located_problems(rng) -> None:  # type: ignore[no-untyped-def]
    _policies.timed(_policy_outcome, generated_document(rng))


@settings(max_examples=CONFIGS, deadline=DEADLINE_MS, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False))
def test_generated_controller_configs_give_only_located_problems(rng) -> None:  # type: ignore[no-untyped-def]
    _configs.timed(check_config, generated_config(rng))


@settings(max_examples=max(50, CONFIGS // 4), deadline=DEADLINE_MS, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_any_text_as_controller_config_gives_only_located_problems(text: str) -> None:
    _configs.timed(check_config, text)


def test_seeded_controller_configs_give_only_located_problems() -> None:
    """The same generator from a seeded RNG, an exact count (hypothesis stops early when its choices repeat;
    this loop guarantees the full run's 10,000): RELIABILITY_FUZZ_CONFIGS_SEEDED."""
    rng = rng_for("configs")
    n = count("fuzz_configs_seeded", 100)
    before = Counter(_configs.outcomes)
    t0 = time.perf_counter()
    for _ in range(n):
        text = generated_config(rng)
        try:
            _configs.timed(check_config, text)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\ninput:\n{text}") from None
    assert _configs.slowest < DEADLINE_MS / 1000, f"a document took {_configs.slowest:.1f}s"
    seen = _configs.outcomes - before
    print(f"seeded configs: {n} documents, {seen['valid']} valid, {seen['rejected']} rejected with located problems, "
          f"0 exceptions, {time.perf_counter() - t0:.0f}s, slowest {1000 * _configs.slowest:.0f} ms")


def test_the_generators_reach_both_outcomes() -> None:
    """The fuzzing is worth something only if it produced both valid and rejected documents (runs last in
    this module, after the property tests filled the tallies)."""
    if not _policies.outcomes or not _configs.outcomes:
        pytest.skip("run with the property tests of this module (they fill the tallies)")
    assert _policies.outcomes["rejected"] > 0 and _policies.outcomes["valid"] > 0, _policies.outcomes
    assert _configs.outcomes["rejected"] > 0 and _configs.outcomes["valid"] > 0, _configs.outcomes
    record("fuzz", policies=sum(_policies.outcomes.values()), policies_valid=_policies.outcomes["valid"],
           configs=sum(_configs.outcomes.values()), configs_valid=_configs.outcomes["valid"],
           slowest_ms=round(1000 * max(_policies.slowest, _configs.slowest)), exceptions=0)
