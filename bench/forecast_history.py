"""What a forecast policy costs the daemon: per-tick CPU and memory of one policy holding the history its
strategy reads (``policies.engine.history_span``: about 15.3 days for the shipped web.yaml, whose weekly
candidate needs two weeks before its day of backtest), against the threshold policy api.yaml as reference.

Each tick does what `PolicyRuntime.sample` and `PolicyRuntime.observation` do with the in-memory history
(`policies.history.History`: append the new samples, drop those older than the span, hand the engine a view
of it, no copy) and runs the real
`policies.engine.decide`; refits (every 6 h of the samples' clock for web.yaml) fall inside the measured
ticks, so the mean includes them and the slowest tick is a refit. The load is a daily cycle with a lighter
weekend and noise. Memory is the Python heap (tracemalloc) held by the history and the strategy's cache.

    .venv/bin/python bench/forecast_history.py [--sample-interval 15] [--evaluate-interval 30] [--hours 24]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policies import forecast
from policies.engine import decide, history_span
from policies.history import History
from policies.loader import load_policies
from policies.types import Fleet, Observation

ROOT = Path(__file__).resolve().parent.parent
START = 1_700_000_000.0  # a Tuesday, 22:13 UTC


def utilisation(t: float, rng: random.Random) -> float:
    day = (t % 86400.0) / 86400.0
    weekend = ((t // 86400.0) + 4) % 7 >= 5
    base = 45.0 + 35.0 * math.sin(2 * math.pi * (day - 0.3)) ** 2
    return max(1.0, base * (0.6 if weekend else 1.0) + rng.gauss(0, 4.0))


def run(policy: Any, sample_every: float, evaluate_every: float, hours: float) -> tuple[float, float, float, int]:
    """(mean CPU per tick, slowest tick, history memory in bytes, samples held)."""
    rng = random.Random(7)
    span = max(3600.0, history_span(policy))
    forecast.clear_cache()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    history = History(span)
    t = START - span
    while t < START:
        last = (t, utilisation(t, rng))
        history.append(*last)
        t += sample_every
    ready = ((START - span, 0),)
    fleet = Fleet(active=0, ready=0, ready_history=ready)
    # one untimed tick, so the memory figure includes the first fit
    obs = Observation(value=last[1], age=0.0, source="cpu", history=history.view(before=last[0]))
    decide(policy, obs, fleet, last[0])
    memory = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    ticks = int(hours * 3600 / evaluate_every)
    per_tick = max(1, round(evaluate_every / sample_every))
    slowest, total = 0.0, 0.0
    now = START
    for _ in range(ticks):
        c = time.process_time()
        for _ in range(per_tick):  # the sample rounds since the last tick
            now += evaluate_every / per_tick
            value = utilisation(now, rng)
            history.append(now, value)
        # PolicyRuntime.observation: a view of the samples before the current one
        obs = Observation(value=value, age=0.0, source="cpu", history=history.view(before=now))
        decide(policy, obs, fleet, now)
        spent = time.process_time() - c
        total += spent
        slowest = max(slowest, spent)
    return total / ticks, slowest, float(memory), len(history)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default=str(ROOT / "deploy/policies.d/web.yaml"))
    ap.add_argument("--reference", default=str(ROOT / "deploy/policies.d/api.yaml"))
    ap.add_argument("--sample-interval", type=float, default=15.0, help="the daemon's default: 15 s")
    ap.add_argument("--evaluate-interval", type=float, default=30.0, help="the daemon's default: 30 s")
    ap.add_argument("--hours", type=float, default=24.0, help="ticks over this much of the samples' clock")
    args = ap.parse_args()
    policy = next(iter(load_policies([args.policy]).policies.values()))
    ref = next(iter(load_policies([args.reference]).policies.values()))
    rows = []
    for p in (policy, ref):
        mean, slowest, memory, held = run(p, args.sample_interval, args.evaluate_interval, args.hours)
        rows.append((p, mean, slowest, memory, held))
        print(f"{p.name} ({p.strategy.type}): history {max(3600.0, history_span(p)) / 86400:.2f} days, "
              f"{held} samples; per tick {1e3 * mean:7.3f} ms cpu (slowest {1e3 * slowest:6.1f} ms); "
              f"memory {memory / 1e6:6.2f} MB")
    (_, m1, s1, mem1, _), (_, m2, s2, mem2, _) = rows
    print(f"ratio {policy.name}/{ref.name}: per tick {m1 / m2:.1f}x cpu, slowest tick {s1 / s2:.1f}x, "
          f"memory {mem1 / mem2:.1f}x ({args.sample_interval:.0f} s samples, a tick every "
          f"{args.evaluate_interval:.0f} s, {args.hours:.0f} h of ticks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
