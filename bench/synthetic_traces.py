"""Synthetic load traces of the shapes real ones come in, to check a policy generalises beyond the two
shipped traces: a daily cycle with noise (lighter weekends), flash crowds on a quiet base, per-minute noise,
four weeks of a daily cycle with a deep weekly dip, and regime shifts (the level jumps to a new plateau every
day or few, with a daily cycle on top). Deterministic (seeded); used by bench/decision_quality.py and
`python bench/synthetic_traces.py DIR` writes them as CSV."""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

from controller.sim.trace import Trace

__all__ = ["SHAPES", "course", "make", "write_csv"]

START = 1_700_006_400.0  # 2023-11-15 00:00 UTC
DAY = 1440


# each generator returns, per minute, (the load, its mean, the standard deviation of its per-minute noise): the
# mean and the noise are what bench/decision_quality.py's noise floor needs; the draws are in a fixed order


def _daily(rng: random.Random, days: int) -> list[tuple[float, float, float]]:
    # a business-day curve: low at night, peak early afternoon, weekends lighter, 6% per-minute noise
    out = []
    for m in range(days * DAY):
        phase = (m % DAY) / DAY
        weekend = 0.7 if (m // DAY) % 7 in (5, 6) else 1.0
        level = 100 + 80 * weekend * max(0.0, math.sin(math.pi * (phase - 0.25) / 0.6)) if 0.25 <= phase <= 0.85 else 100
        out.append((max(1.0, level * (1 + 0.06 * rng.gauss(0, 1))), level, 0.06 * level))
    return out


def _flash(rng: random.Random, days: int) -> list[tuple[float, float, float]]:
    # a quiet base with a gentle daily swing, hit by flash crowds: a few minutes' ramp to 2-5x, minutes to
    # hours at the top, an exponential tail
    n = days * DAY
    mean = [80 + 10 * math.sin(2 * math.pi * m / DAY) for m in range(n)]
    var = [9.0] * n
    out = [mean[m] + 3 * rng.gauss(0, 1) for m in range(n)]
    for _ in range(days):
        start = rng.randrange(0, n - 400)
        ramp, top, amp = rng.randint(1, 8), rng.randint(15, 180), rng.uniform(100, 320)
        profile = [(k + 1) / ramp for k in range(ramp)] + [1.0] * top + [math.exp(-k / 15) for k in range(90)]
        for k, f in enumerate(profile):
            if start + k < n:
                out[start + k] += amp * f * (1 + 0.05 * rng.gauss(0, 1))
                mean[start + k] += amp * f
                var[start + k] += (0.05 * amp * f) ** 2
    return [(max(1.0, x), mu, math.sqrt(v)) for x, mu, v in zip(out, mean, var, strict=True)]


def _noise(rng: random.Random, days: int) -> list[tuple[float, float, float]]:
    # a flat mean with heavy per-minute noise and a slow wander: nothing to predict, much to ignore
    out, wander = [], 0.0
    for _ in range(days * DAY):
        wander = 0.995 * wander + rng.gauss(0, 1.5)
        out.append((max(1.0, 100 + wander + 18 * rng.gauss(0, 1)), 100 + wander, 18.0))
    return out


def _weekly(rng: random.Random, days: int) -> list[tuple[float, float, float]]:
    # a daily cycle whose weekends fall to a third of a weekday's peak, 5% per-minute noise, over 4 weeks
    out = []
    for m in range(days * DAY):
        phase = (m % DAY) / DAY
        weekend = 0.3 if (m // DAY) % 7 in (5, 6) else 1.0
        bump = 120 * weekend * max(0.0, math.sin(math.pi * (phase - 0.3) / 0.5)) if 0.3 <= phase <= 0.8 else 0.0
        out.append((max(1.0, (90 + bump) * (1 + 0.05 * rng.gauss(0, 1))), 90 + bump, 0.05 * (90 + bump)))
    return out


def _regime(rng: random.Random, days: int) -> list[tuple[float, float, float]]:
    # plateaus that last 6 hours to 3 days and jump to a level between 0.6x and 1.8x of the first, with a
    # mild daily cycle and 5% noise on top: yesterday is a poor guide just after a shift
    out: list[tuple[float, float, float]] = []
    level = 100.0
    left = 0
    for m in range(days * DAY):
        if left == 0:
            level = 100.0 * rng.uniform(0.6, 1.8)
            left = rng.randint(6 * 60, 3 * DAY)
        left -= 1
        daily = 1 + 0.15 * math.sin(2 * math.pi * (m % DAY) / DAY - math.pi / 2)
        out.append((max(1.0, level * daily * (1 + 0.05 * rng.gauss(0, 1))), level * daily, 0.05 * level * daily))
    return out


SHAPES = {"daily": _daily, "flash": _flash, "noise": _noise, "weekly": _weekly, "regime": _regime}
DAYS = {"weekly": 28}  # long enough for two weekly seasons before a day's fit window


def _generate(shape: str, days: int | None, seed: int) -> list[tuple[float, float, float]]:
    days = DAYS.get(shape, 14) if days is None else days
    return SHAPES[shape](random.Random(f"{shape}-{seed}"), days)


def make(shape: str, days: int | None = None, seed: int = 7) -> Trace:
    values = [v for v, _, _ in _generate(shape, days, seed)]
    times = [START + 60.0 * i for i in range(len(values))]
    return Trace.from_samples(times, values, f"synthetic-{shape}")


def course(shape: str, days: int | None = None, seed: int = 7) -> tuple[list[float], list[float]]:
    """The load's course under ``make``'s trace: per minute its mean (the cycle, the flash crowds, the wander
    and the regimes, all known) and the standard deviation of the per-minute noise around it."""
    rows = _generate(shape, days, seed)
    return [mu for _, mu, _ in rows], [sd for _, _, sd in rows]


def write_csv(trace: Trace, path: Path) -> None:
    lines = ["timestamp,value"] + [f"{t:.0f},{v:.3f}" for t, v in zip(trace.times, trace.values)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    for shape in SHAPES:
        write_csv(make(shape), out / f"synthetic_{shape}.csv")
        print(out / f"synthetic_{shape}.csv")
