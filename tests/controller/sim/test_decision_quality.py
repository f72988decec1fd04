"""Issue 2's decision-quality bar for the shipped deploy/policies.d/web.yaml on each real trace in
/work/shared/traces: a lower penalized cost than HPA, no more launches than HPA, and not dominated by
either baseline. The full table (and synthetic traces) is bench/decision_quality.py."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from controller.sim.simulator import criteria_failures, default_settings, simulate
from controller.sim.trace import load_trace
from policies.loader import load_policies

WEB = Path(__file__).resolve().parents[3] / "deploy/policies.d/web.yaml"
TRACES = sorted(Path("/work/shared/traces").glob("*.csv"))


def _failures(trace_path: str) -> tuple[list[str], float, float]:
    policy = load_policies([str(WEB)]).policies["web"]
    trace = load_trace(trace_path)
    report = simulate(policy, trace, default_settings(trace))
    return criteria_failures(report), report.policy.penalized_cost, report.hpa.penalized_cost


def test_the_shipped_traces_are_there():
    assert len(TRACES) >= 2, "the real traces live in /work/shared/traces"


@pytest.fixture(scope="module")
def outcomes() -> dict[str, tuple[list[str], float, float]]:
    with ProcessPoolExecutor(max_workers=2) as pool:  # one trace per core: the CPU trace is 90,000 steps
        return dict(zip([p.name for p in TRACES], pool.map(_failures, [str(p) for p in TRACES])))


@pytest.mark.parametrize("name", [p.name for p in TRACES])
def test_web_policy_beats_the_baselines(outcomes, name):
    failures, policy_cost, hpa_cost = outcomes[name]
    assert failures == [], f"{name}: " + "; ".join(failures)
    assert policy_cost < hpa_cost
