"""The per-policy gauges set from a status snapshot (``controller.metrics.observe_status``): values follow
the status, and a policy or replica state that is gone loses its series (the children are kept between
snapshots, so this is what could go wrong)."""

from __future__ import annotations

import time

from controller import metrics
from controller.status.models import ControllerStatus, DecisionStatus, PolicyStatus


def _status(policies: dict[str, dict[str, int]], spend: float = 1.0) -> ControllerStatus:
    return ControllerStatus(controller_id="m", version="1", started_at=time.time(), policies=[
        PolicyStatus(name=name, replicas=replicas, spend_per_hour=spend, budget_per_hour=10.0,
                     decision=DecisionStatus(desired=sum(replicas.values()), direction="hold", reason="r", at=1.0))
        for name, replicas in policies.items()])


def _value(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(f"burst_{name}", labels)


def test_gauges_follow_the_status_and_lose_what_is_gone() -> None:
    metrics.observe_status(_status({"m-web": {"serving": 2, "booting": 1}, "m-api": {"serving": 1}}))
    assert _value("replicas", policy="m-web", state="serving") == 2
    assert _value("replicas", policy="m-web", state="booting") == 1
    assert _value("desired_replicas", policy="m-web") == 3
    assert _value("spend_per_hour", policy="m-api") == 1.0

    metrics.observe_status(_status({"m-web": {"serving": 3}}, spend=2.5))
    assert _value("replicas", policy="m-web", state="serving") == 3
    assert _value("replicas", policy="m-web", state="booting") is None  # no booting replica any more
    assert _value("spend_per_hour", policy="m-web") == 2.5
    assert _value("spend_per_hour", policy="m-api") is None  # the policy is gone: all its series
    assert _value("replicas", policy="m-api", state="serving") is None
    assert _value("budget_per_hour", policy="m-api") is None

    metrics.observe_status(_status({"m-api": {"serving": 1}}))  # and back again
    assert _value("replicas", policy="m-api", state="serving") == 1
    assert _value("replicas", policy="m-web", state="serving") is None
    metrics.observe_status(_status({}))


def test_warm_nodes_follow_the_pool() -> None:
    from controller.status.models import WarmPoolStatus

    status = _status({"m-pool": {}})
    status.policies[0].warm_pool = WarmPoolStatus(size=2, warm=1)
    metrics.observe_status(status)
    assert _value("warm_nodes", policy="m-pool") == 1
    status.policies[0].warm_pool = WarmPoolStatus(size=2, warm=0)  # woken by the next burst
    metrics.observe_status(status)
    assert _value("warm_nodes", policy="m-pool") == 0
    metrics.observe_status(_status({}))
    assert _value("warm_nodes", policy="m-pool") is None
