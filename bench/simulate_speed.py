"""How fast `burstctl simulate` runs: 84,000 one-minute steps of the shipped web.yaml policy (the real
`policies.engine.decide` every step) over the CPU trace, against a reference measured in the same run: the
HPA baseline over the same steps (the same simulated fleet and integration, with a one-line rule).

    .venv/bin/python bench/simulate_speed.py [--policy deploy/policies.d/web.yaml] [--steps 84000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller.sim.simulator import default_settings, run_hpa, run_policy
from controller.sim.trace import Trace, load_trace
from policies.loader import load_policies

ROOT = Path(__file__).resolve().parent.parent
TRACE = "/work/shared/traces/nab_cpu_utilization_asg_misconfiguration.csv"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default=str(ROOT / "deploy/policies.d/web.yaml"))
    ap.add_argument("--trace", default=TRACE)
    ap.add_argument("--steps", type=int, default=84_000)
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs (default 3)")
    args = ap.parse_args()
    policy = next(iter(load_policies([args.policy]).policies.values()))
    full = load_trace(args.trace)
    spacing = (full.end - full.times[-1])
    n = min(len(full.times), int(args.steps * 60 // spacing))
    trace = Trace.from_samples(full.times[:n], full.values[:n], full.name)
    s = default_settings(trace)
    steps = int((trace.end - trace.times[0]) // s.interval)

    def best(fn) -> tuple[float, float]:
        walls, cpus = [], []
        for _ in range(args.repeat):
            w, c = time.perf_counter(), time.process_time()
            fn()
            walls.append(time.perf_counter() - w)
            cpus.append(time.process_time() - c)
        return min(walls), min(cpus)

    pw, pc = best(lambda: run_policy(policy, trace, s))
    hw, hc = best(lambda: run_hpa(trace, s))
    print(f"policy {policy.name} ({policy.strategy.type}) on {Path(args.trace).name}: {steps} steps of "
          f"{s.interval:.0f}s")
    print(f"  policy (engine every step): {pw:6.2f} s wall, {pc:6.2f} s cpu, {1e6 * pc / steps:6.1f} us/step")
    print(f"  reference (hpa rule)      : {hw:6.2f} s wall, {hc:6.2f} s cpu, {1e6 * hc / steps:6.1f} us/step")
    print(f"  ratio policy/reference    : {pc / hc:6.1f}x (cpu)")
    target = 5.0
    print(f"  target: {steps} steps under {target:.0f} s -> {'met' if pc < target else 'NOT met'} "
          f"({pc:.2f} s cpu; wall {pw:.2f} s on a machine with load {_load()})")
    return 0


def _load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
