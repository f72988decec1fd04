"""The noise floor of each synthetic family: the least penalized cost, as a ratio to HPA's, that any policy
could reach in `burstctl simulate`'s cost model if it knew the load's whole course in advance (the cycle, every
flash crowd, every regime shift) and only not its per-minute noise, and were billed for nothing but the minutes
its replicas serve (no boot, no drain). No real policy can do better, short of luck on the draws: a decision
takes a boot to act, and the noise of each minute is drawn independently of everything before it.

Two rules of such a policy are scored on the trace's actual draws, each over a grid of its one parameter, and
the cheaper is reported:
* each minute, the ``n`` replicas that minimise ``n / 60 + w * E[unserved] / (Y * 60)`` (a replica-minute
  against the load expected to be turned away, from the normal loss function of the noise), for a weight ``w``
  of a replica-hour turned away: ``w = P`` (the simulator's penalty) gives the least expected penalized cost,
  a larger ``w`` less unserved load for more instance-hours (this is the rule that minimises the expected
  instance-hours for a given expected unserved load);
* the whole replicas that cover the mean plus ``k`` standard deviations of the noise.
Reported: the least penalized cost of all, and the least whose unserved load is no more than HPA's (the
parameter chosen after the fact on the very draws it is scored on, which only flatters the floor).

    .venv/bin/python bench/noise_floor.py
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_traces import SHAPES, course, make

from controller.sim.simulator import default_settings, run_hpa

__all__ = ["Floor", "noise_floor"]

WEIGHTS = tuple(10 * 1.25**k for k in range(53))  # P = 10 to about 1.4 million
SIGMAS = tuple(0.1 * k for k in range(61))  # the fixed rule: the mean plus 0 to 6 standard deviations
_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@dataclass(frozen=True, slots=True)
class Floor:
    trace: str
    hpa_cost: float
    hpa_unserved: float
    best_ratio: float  # the least penalized cost of any rule over HPA's
    best_unserved: float
    ratio: float  # the least penalized cost with no more unserved load than HPA, over HPA's
    unserved: float
    rule: str  # the rule and parameter that gave it


def _loss(z: float) -> float:
    """The standard normal loss function: E[max(0, Z - z)]."""
    return math.exp(-0.5 * z * z) * _INV_SQRT_2PI - z * 0.5 * math.erfc(z / _SQRT2)


def _replicas(mu: float, sd: float, x: float, y: float, w: float) -> int:
    """The n that minimises n / 60 + w * E[max(0, D - x - y n)] / (y * 60), D ~ N(mu, sd): convex in n."""
    def cost(n: int) -> float:
        short = sd * _loss((x + y * n - mu) / sd) if sd > 0 else max(0.0, mu - x - y * n)
        return n + w * short / y

    n = max(0, math.ceil((mu - x) / y))
    c = cost(n)
    while n > 0 and (d := cost(n - 1)) <= c:
        n, c = n - 1, d
    while (u := cost(n + 1)) < c:
        n, c = n + 1, u
    return n


def noise_floor(shape: str, days: int | None = None) -> Floor:
    trace = make(shape, days)
    s = default_settings(trace)
    hpa = run_hpa(trace, s)
    means, sds = course(shape, days)
    x, y, p = s.onprem_capacity, s.replica_capacity, s.unserved_penalty
    values = trace.values
    total = sum(values)
    rows = list(zip(means, sds, values, strict=True))
    scored = []
    rules = [(f"w={w:.0f}", lambda mu, sd, w=w: _replicas(mu, sd, x, y, w)) for w in WEIGHTS]
    rules += [(f"k={k:.1f}", lambda mu, sd, k=k: max(0, math.ceil((mu + k * sd - x) / y - 1e-9))) for k in SIGMAS]
    for name, rule in rules:
        ih = short = 0.0
        for mu, sd, d in rows:
            n = rule(mu, sd)
            ih += n / 60.0
            short += max(0.0, d - x - y * n)
        scored.append((ih + p * short / (y * 60.0), short / total, name))
    best_cost, best_unserved, _ = min(scored)
    within = [c for c in scored if c[1] <= hpa.unserved_fraction]
    cost, unserved, rule = min(within) if within else (math.inf, math.nan, "-")
    return Floor(f"synthetic-{shape}", hpa.penalized_cost, hpa.unserved_fraction, best_cost / hpa.penalized_cost,
                 best_unserved, cost / hpa.penalized_cost, unserved, rule)


def main() -> int:
    print("noise floor: the best any policy could do knowing the load's course but not its per-minute noise")
    print(f"{'trace':18s} {'HPA unserved':>12s} {'least cost/HPA':>15s} {'its unserved':>12s} "
          f"{'at <= HPA unserved':>19s} {'unserved':>9s}  rule")
    for shape in SHAPES:
        f = noise_floor(shape)
        print(f"{f.trace:18s} {f.hpa_unserved:12.5f} {f.best_ratio:15.3f} {f.best_unserved:12.5f} "
              f"{f.ratio:19.3f} {f.unserved:9.5f}  {f.rule}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
