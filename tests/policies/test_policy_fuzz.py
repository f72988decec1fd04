"""Fuzzing the loader: mutated examples, mutated structures and raw noise give only clean, located
problems, never an exception. bench/fuzz_policies.py runs the same generators 10,000 times."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.loader import load_policy_text
from tests.support.policy_docs import check_result, generated_document

_FUZZ = settings(max_examples=500, deadline=5000, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(st.randoms(use_true_random=False))
def test_generated_documents_only_give_clean_problems(rng) -> None:
    text = generated_document(rng)
    check_result(text, "fuzz.yaml", load_policy_text(text, "fuzz.yaml"))


_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                     st.text(max_size=20), st.sampled_from(["5m", "09:00", "ecs.c6.large", "threshold"]))
_keys = st.one_of(st.sampled_from(["name", "workload", "metric", "strategy", "type", "min", "max", "cloud",
                                   "budget", "prices", "traffic", "haproxy", "schedule"]), st.text(max_size=8))
_trees = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(_keys, inner, max_size=5)), max_leaves=25)


@settings(max_examples=150, deadline=5000, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(_trees)
def test_any_yaml_value_gives_clean_problems(tree) -> None:
    from tests.support.policy_docs import dump

    text = dump(tree)
    check_result(text, "tree.yaml", load_policy_text(text, "tree.yaml"))


@settings(max_examples=150, deadline=5000, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_any_text_gives_clean_problems(text) -> None:
    check_result(text, "text.yaml", load_policy_text(text, "text.yaml"))
