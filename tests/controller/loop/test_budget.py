"""The budget guard: replicas.max and the hourly spend cap, counting leaving replicas, in-flight launch
intents and instances whose replica is unknown; with a property test that no sequence of checks can
exceed either bound."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.loop.budget import Holding, check_launch, hourly_spend, price_of
from tests.controller.fakes import make_policy


def test_unknown_type_is_priced_at_the_worst_the_policy_may_launch() -> None:
    p = make_policy()
    assert price_of(p, Holding("r1")) == 0.62
    assert price_of(p, Holding("r1", "ecs.c5.large")) == 0.55
    # the cloud's figure is used, but never below what ops budgeted with
    assert price_of(p, Holding("r1", "ecs.c5.large", price_per_hour=0.40)) == 0.55
    assert price_of(p, Holding("r1", "ecs.c5.large", price_per_hour=0.90)) == 0.90


def test_count_cap() -> None:
    p = make_policy(replicas={"min": 0, "max": 3})
    held = [Holding("a", "ecs.c6.large"), Holding("b")]
    check = check_launch(p, held, 5)
    assert check.allowed == 1 and check.held == 2 and "replicas.max" in (check.reason or "")


def test_money_cap_counts_in_flight_and_leaving() -> None:
    p = make_policy(budget={"max_per_hour": 2.0, "prices": {"ecs.c6.large": 0.62, "ecs.c5.large": 0.55}})
    held = [Holding("serving", "ecs.c6.large"), Holding("intent:l1")]  # 1.24/h already
    check = check_launch(p, held, 4)
    assert check.allowed == 1 and "budget" in (check.reason or "")
    assert abs(check.spend_per_hour - 1.24) < 1e-9


def test_exactly_reaching_the_cap_is_allowed() -> None:
    p = make_policy(budget={"max_per_hour": 1.86, "prices": {"ecs.c6.large": 0.62, "ecs.c5.large": 0.55}})
    assert check_launch(p, [], 5).allowed == 3


def test_the_same_replica_is_counted_once() -> None:
    p = make_policy()
    held = [Holding("r1"), Holding("r1", "ecs.c5.large"), Holding("r2")]
    assert check_launch(p, held, 0).held == 2
    assert abs(hourly_spend(p, held) - (0.55 + 0.62)) < 1e-9


holding = st.builds(Holding, key=st.sampled_from([f"r{i}" for i in range(12)] + ["intent:x", "instance:y"]),
                    instance_type=st.sampled_from([None, "ecs.c6.large", "ecs.c5.large"]),
                    price_per_hour=st.sampled_from([None, 0.3, 0.7]))


@settings(max_examples=300, deadline=None)
@given(held=st.lists(holding, max_size=15), wanted=st.integers(0, 30),
       cap=st.floats(0.62, 20.0), maximum=st.integers(0, 20))
def test_property_never_exceeds_count_or_money(held: list[Holding], wanted: int, cap: float, maximum: int) -> None:
    p = make_policy(budget={"max_per_hour": cap, "prices": {"ecs.c6.large": 0.62, "ecs.c5.large": 0.55}},
                    replicas={"min": 0, "max": maximum})
    check = check_launch(p, held, wanted)
    assert 0 <= check.allowed <= wanted
    after = list(held) + [Holding(f"new{i}") for i in range(check.allowed)]
    if check.allowed:
        # whatever was held before, what the guard lets through never takes us over either bound
        assert check_launch(p, after, 0).held <= maximum
        assert hourly_spend(p, after) <= cap + 1e-6
    # and one more launch beyond what was allowed would not fit, unless the caller wanted fewer
    if check.allowed < wanted:
        assert check_launch(p, after, 1).allowed == 0


def test_replicas_per_node_pays_each_instance_once_and_fills_free_places_first() -> None:
    p = make_policy(workload__replicas_per_node=3, replicas={"min": 0, "max": 20}, budget={"max_per_hour": 1.3,
                                                          "prices": {"ecs.c6.large": 0.62, "ecs.c5.large": 0.55}})
    # two replicas on one c5 instance (0.55/h), its third place free
    held = [Holding("a", "ecs.c5.large", instance_id="i-1", joinable=True),
            Holding("b", "ecs.c5.large", instance_id="i-1", joinable=True)]
    assert hourly_spend(p, held) == pytest.approx(0.55)
    # the free place, then one more instance (0.62 worst) of 3 places fits under 1.3: 4 in all
    assert check_launch(p, held, 10).allowed == 4
    # the launch step pays for an instance of its own: free places elsewhere do not count
    assert check_launch(p, held, 1, new_instance=True).allowed >= 1
    assert check_launch(p, held + [Holding("x"), Holding("y"), Holding("z"), Holding("w")], 1,
                        new_instance=True).allowed == 0
    # an instance with a replica on its way out takes no one new
    leaving = [Holding("a", "ecs.c5.large", instance_id="i-1", joinable=False), held[1]]
    assert check_launch(p, leaving, 10).allowed == 3
    # one replica per node: exactly the former rule (each replica its own instance)
    single = make_policy(replicas={"min": 0, "max": 20}, budget={"max_per_hour": 1.3, "prices": {"ecs.c6.large": 0.62, "ecs.c5.large": 0.55}})
    assert check_launch(single, held, 10).allowed == 0 and hourly_spend(single, held) == pytest.approx(1.10)
