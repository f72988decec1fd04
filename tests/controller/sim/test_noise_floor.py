"""bench/noise_floor.py: the floor is a floor. On every synthetic family the shipped policy, through the
simulator, costs no less (as a ratio to HPA's penalized cost) than the best policy that knows the load's
course and only not its noise; and that policy, given no noise to face, costs what the oracle does."""

from __future__ import annotations

import math
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"
sys.path.insert(0, str(BENCH))

from noise_floor import _replicas, noise_floor
from synthetic_traces import SHAPES, make

from controller.sim.simulator import default_settings, run_hpa, run_policy
from policies.loader import load_policies

WEB = Path(__file__).resolve().parents[3] / "deploy/policies.d/web.yaml"


def _policy_ratio(shape: str) -> tuple[float, float]:
    policy = load_policies([str(WEB)]).policies["web"]
    trace = make(shape)
    s = default_settings(trace)
    return run_policy(policy, trace, s).penalized_cost, run_hpa(trace, s).penalized_cost


@pytest.fixture(scope="module")
def runs() -> dict[str, tuple[float, float, float]]:
    with ProcessPoolExecutor(max_workers=2) as pool:
        floors = list(pool.map(noise_floor, SHAPES))
        costs = list(pool.map(_policy_ratio, SHAPES))
    return {shape: (f.best_ratio, p, h) for shape, f, (p, h) in zip(SHAPES, floors, costs, strict=True)}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_shipped_policy_never_beats_the_floor(runs, shape):
    floor, policy_cost, hpa_cost = runs[shape]
    assert 0 < floor <= policy_cost / hpa_cost, (shape, floor, policy_cost / hpa_cost)


def test_without_noise_the_rule_holds_what_the_mean_needs_and_more_weight_holds_more():
    # mean 130 over on-prem 100, replicas of 10: 3 replicas exactly, with or without a penalty
    assert _replicas(130.0, 0.0, 100.0, 10.0, 10.0) == 3
    assert _replicas(135.0, 0.0, 100.0, 10.0, 10.0) == 4  # 5 units short would cost 5 replicas' worth
    assert _replicas(131.0, 0.0, 100.0, 10.0, 10.0) == 3  # 1 unit short costs what a 4th replica does: a tie
    assert _replicas(131.0, 0.0, 100.0, 10.0, 100.0) == 4
    assert _replicas(90.0, 0.0, 100.0, 10.0, 10.0) == 0
    held = [_replicas(130.0, 8.0, 100.0, 10.0, w) for w in (10, 100, 10_000)]
    assert held == sorted(held) and held[0] < held[-1], held
    # a replica is worth buying while the chance that the load passes what it adds is above about 1 / w: the
    # next one would not have been, the last one bought was
    def beyond(n: int) -> float:
        return 0.5 * math.erfc((100.0 + 10.0 * n - 130.0) / 8.0 / math.sqrt(2))

    assert beyond(held[-1] + 1) < 1 / 10_000 <= beyond(held[-1] - 1)
