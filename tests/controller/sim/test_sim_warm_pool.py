"""The simulator's boot delay per source and warm pool (controller/sim/simulator.py): a pool of 0 and no baked
image change nothing; a warm pool starts later bursts' replicas sooner (less demand turned away) and bills
its stopped nodes at the disk fraction; a baked image's shorter boot serves sooner too."""

from __future__ import annotations

import dataclasses

from controller.sim.simulator import SimSettings, run_policy, with_warm_pool
from controller.sim.trace import Trace
from tests.controller.fakes import make_policy


def _bursts() -> Trace:
    """Ten one-hour peaks of twice the on-prem capacity, three hours apart, one sample a minute."""
    times, values = [], []
    for m in range(10 * 240):
        times.append(m * 60.0)
        values.append(200.0 if m % 240 < 60 else 50.0)
    return Trace(name="bursts", times=times, values=values, end=times[-1] + 60.0)


def test_a_warm_pool_and_a_baked_image_serve_bursts_sooner_at_a_disk_cost() -> None:
    # a CPU metric: its thresholds (75 / 40) are utilisation, which replicas lower
    policy = make_policy(metric={"source": "workload_cpu", "window": "10s", "stale_after": "60s"},
                         warm_pool={"size": 4, "max_age": "1d", "disk_price": 0.031},
                         replicas={"min": 0, "max": 12, "max_step_up": 12, "max_step_down": 12},
                         min_lifetime="0s")
    trace = _bursts()
    base = SimSettings(onprem_capacity=100.0, replica_capacity=10.0, boot_delay=300.0, interval=60.0)
    stock = run_policy(policy, trace, base)
    assert stock.warm_starts == 0 and stock.warm_node_hours == 0.0
    assert run_policy(policy, trace, dataclasses.replace(base, warm_size=0, warm_boot=30.0)) == stock
    warm_settings = with_warm_pool(dataclasses.replace(base, warm_boot=30.0), policy)
    assert warm_settings.warm_size == 4 and abs(warm_settings.disk_fraction - 0.031 / 0.55) < 1e-9
    warm = run_policy(policy, trace, warm_settings)
    assert warm.warm_starts >= 4 * 8  # every burst after the first starts the pool's four nodes
    assert warm.unserved_fraction < stock.unserved_fraction
    assert warm.warm_node_hours > 0
    assert abs(warm.penalized_cost - (warm.instance_hours + 10.0 * _unserved_rh(warm, trace, base)
                                      + warm_settings.disk_fraction * warm.warm_node_hours)) < 1e-6
    baked = run_policy(policy, trace, dataclasses.replace(base, baked_boot=120.0))
    assert baked.warm_starts == 0 and baked.unserved_fraction < stock.unserved_fraction


def _unserved_rh(o, trace: Trace, s: SimSettings) -> float:  # type: ignore[no-untyped-def]
    demand = sum(v * 60.0 for v in trace.values)
    return o.unserved_fraction * demand / (s.replica_capacity * 3600.0)
