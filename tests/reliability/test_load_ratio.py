"""The load rig's machinery with a small count (tests/reliability/loadrig.py): the real daemon manages 5
replicas on ECS-emulator instances, the real status endpoint (its own process, serving the daemon's
snapshots) answers client processes, and the tick-time ratio (loaded over quiet, measured in one run) comes
out as a finite figure with every request answered. The figures themselves (100 replicas, >= 1,000 requests/s, p99, the ratio) are bench/ output
(bench/reliability_load.py), never timed assertions here."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.harness import record
from tests.reliability.loadrig import LoadRig

REPLICAS = 5


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[LoadRig]:
    r = LoadRig(REPLICAS, step=0.5, root=tmp_path).start()
    try:
        yield r
    finally:
        r.stop()


def test_tick_ratio_machinery_with_a_small_count(rig: LoadRig) -> None:
    rig.wait_serving(90)
    result = rig.measure(seconds=3.0, clients=1, concurrency=2)
    assert result.instances == REPLICAS  # the real compute pool launched them on the emulator, once each
    quiet1, loaded, quiet2 = result.phases
    for phase in result.phases:
        assert len(phase.ticks) >= 2, f"{phase.name}: {len(phase.ticks)} ticks"
    assert loaded.requests > 0 and loaded.errors == 0 and loaded.p99_ms > 0
    assert math.isfinite(result.ratio) and result.ratio > 0
    assert rig.serving() == REPLICAS  # managing them did not stop under the load
    print(f"load ratio machinery: {REPLICAS} replicas, {loaded.rate:.0f} req/s, p99 {loaded.p99_ms:.1f} ms, "
          f"tick median quiet {quiet1.tick_median_ms:.1f}/{quiet2.tick_median_ms:.1f} ms, loaded "
          f"{loaded.tick_median_ms:.1f} ms, ratio {result.ratio:.2f}")
    record("load_machinery", replicas=REPLICAS, rate=round(loaded.rate), p99_ms=round(loaded.p99_ms, 1),
           ratio=round(result.ratio, 2))


def test_a_fixed_rate_load_and_the_snapshot_builds_it_causes(rig: LoadRig) -> None:
    """The open-loop mode the bench's criterion runs at (``rate``): the clients send that many requests a
    second, every one answered; the daemon builds status snapshots for them, and the rig counts how many of
    those ran beside a step round (the figure, not a timed assertion: the gate itself is tested in
    tests/controller/test_daemon.py)."""
    rig.wait_serving(90)
    result = rig.measure(seconds=3.0, clients=2, concurrency=2, rate=300.0)
    loaded = result.loaded[0]
    assert loaded.errors == 0
    # never over the schedule; short of it only when answers come late (each connection waits for its
    # answer), i.e. the machine's load: 209/s at p50 680 ms at load average 50, a figure for bench/, not here
    assert 0 < loaded.rate <= 1.02 * 300, loaded.rate
    assert result.builds >= 4  # requests came for 3 s: snapshots at most every 0.25 s, on demand
    assert 0 <= result.beside <= result.builds
    record("load_fixed_rate", replicas=REPLICAS, rate=round(loaded.rate), p99_ms=round(loaded.p99_ms, 1),
           builds=result.builds, beside=result.beside, ratio=round(result.ratio, 2))
