"""Helpers for the decision-engine tests: a valid policy built from a base dict with overrides."""

from __future__ import annotations

import copy
from typing import Any

from policies.model import Policy

NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC, a Tuesday

BASE: dict[str, Any] = {
    "name": "web",
    "workload": {"selector": {"app": "web"}, "service_port": 80},
    "metric": {"source": "workload_cpu", "window": "1m", "stale_after": "3m"},
    "strategy": {"type": "threshold", "scale_out_above": 75, "scale_in_below": 40,
                 "sustained_out": "2m", "sustained_in": "10m"},
    "replicas": {"min": 0, "max": 20, "max_step_up": 4, "max_step_down": 2},
    "cooldown": {"scale_out": "2m", "scale_in": "10m"},
    "min_lifetime": "10m",
    "cloud": {"region": "cn-hangzhou", "zones": ["cn-hangzhou-h"], "instance_types": ["ecs.c6.large"],
              "image_id": "img-1", "vswitches": {"cn-hangzhou-h": "vsw-1"}, "security_group": "sg-1"},
    "registry": {"target": "registry.example.com/team/web"},
    "traffic": {"haproxy": {"socket": "/run/haproxy/admin.sock", "backend": "web"}},
    "budget": {"max_per_hour": 100, "prices": {"ecs.c6.large": 0.5}},
}


def policy(**sections: Any) -> Policy:
    """The base policy with whole sections replaced (``strategy={...}``) or, for dicts, merged
    (``replicas={"max": 5}`` keeps the other replica bounds)."""
    data = copy.deepcopy(BASE)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict) and key != "strategy":
            data[key].update(value)
        else:
            data[key] = value
    return Policy.model_validate(data)


def samples(values: list[float], step: float = 60.0, end: float = NOW) -> tuple[tuple[float, float], ...]:
    """(time, value) history ending one ``step`` before ``end`` (the current reading is at ``end``)."""
    n = len(values)
    return tuple((end - (n - i) * step, v) for i, v in enumerate(values))
