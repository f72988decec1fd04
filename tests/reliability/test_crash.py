"""Crash consistency: `burstctl run` (a real process, against the lab's ECS emulator, registries, HAProxy and
Docker Engine) is SIGKILLed at seeded random points while the load alternates between a peak and the
baseline, so the kills land in every phase of burst and drain cycles. After each restart, within two
reconcile ticks: no instance the journal does not know, no duplicate launch (the emulator's own record of
every instance ever created, by intent tag, against the journal's launch intents), no HAProxy backend
without a running container; every drain the kill interrupted completes; the spend cap (which binds
before replicas.max) and replicas.max are never exceeded, sampled every 50 ms throughout.

CI count: 8 kill points (RELIABILITY_CRASH_POINTS); bench/reliability.py runs 50.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Self

import pytest

from lab.lab import Lab
from lab.loadgen import LoadGenerator
from tests.reliability.harness import (
    CAP,
    LEAVING,
    MAX,
    Invariants,
    SpendMonitor,
    all_launched,
    count,
    record,
    rng_for,
    wait_for,
)
from tests.support.controller_process import ControllerProcess

RECONCILE = 2.0  # the lab's reconcile interval in this suite (harness.reliability_settings)
HIGH, LOW = 16, 1  # load generator clients at the peak and at the baseline
PERIOD = 9.0  # seconds of peak, then as many of baseline
DRAIN_DEADLINE = 15.0 + 2.0 + 4 * RECONCILE  # drain.timeout + stop_timeout + slack: a drain must be done by then


class Waves:
    """Alternates the load between the peak and the baseline every PERIOD seconds, in a thread."""

    def __init__(self, load: LoadGenerator) -> None:
        self.load, self.peak = load, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="waves")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = not self.peak
            self.load.set_clients(HIGH if self.peak else LOW)
            self._stop.wait(PERIOD)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


# eight restarts: ~3 s each on a quiet machine, ~50 s each at load average 40-50 (the interpreter's start and
# imports), which took the test past the suite's 300 s
@pytest.mark.timeout(900)
def test_sigkill_at_random_points_of_burst_and_drain_cycles(rlab: Lab, rcontroller: ControllerProcess) -> None:
    points = count("crash_points", 8)
    rng = rng_for("crash")
    plan = [(round(rng.uniform(1.5, 7.0), 2), round(rng.uniform(0.0, 1.0), 2)) for _ in range(points)]
    print(f"crash points (seconds after the previous restart, seconds down): {plan}")
    inv = Invariants(rlab)
    interrupted: Counter[str] = Counter()  # replica states at the moment of a kill
    pending_drains: list[tuple[float, set[str]]] = []  # (restart time, replicas leaving at the kill)
    drains_completed = 0
    restarts: list[float] = []  # seconds from exec to ready
    load = LoadGenerator(rlab.url)
    rcontroller.start()
    begin = time.monotonic()
    try:
        with SpendMonitor(rlab) as monitor, Waves(load) as waves:
            for n, (after, down) in enumerate(plan, 1):
                time.sleep(after)
                states = {r["id"]: r["state"] for r in inv.journal.live_replicas()}
                rcontroller.kill()
                interrupted.update(states.values())
                leaving = {rid for rid, st in states.items() if st in LEAVING}
                print(f"kill {n}/{points} at {time.monotonic() - begin:.0f}s: {'peak' if waves.peak else 'baseline'} load, replicas "
                      f"{dict(Counter(states.values())) or 'none'}")
                time.sleep(down)
                t0 = time.monotonic()
                rcontroller.start()
                restarted = time.monotonic()
                restarts.append(restarted - t0)
                if leaving:
                    pending_drains.append((restarted, leaving))
                # within two reconcile ticks of the restart: the journal knows every instance, and every
                # backend has a live container behind it
                wait_for(f"kill {n}: journal knows every instance ({inv.unknown_instances()})",
                         lambda: not inv.unknown_instances(), 2 * RECONCILE)
                wait_for(f"kill {n}: no backend without a container ({inv.stray_backends()})",
                         lambda: not inv.stray_backends(), 2 * RECONCILE)
                assert inv.duplicate_launches() == [], f"kill {n}"
                for started, replicas in list(pending_drains):
                    if not inv.gone(replicas):
                        pending_drains.remove((started, replicas))
                        drains_completed += 1
                    else:
                        assert time.monotonic() - started < DRAIN_DEADLINE, \
                            f"interrupted drains not completed {DRAIN_DEADLINE:.0f}s after restart: {inv.gone(replicas)}"
            print(f"all kills done at {time.monotonic() - begin:.0f}s")
            load.set_clients(0)
            for started, replicas in pending_drains:
                wait_for(f"interrupted drain of {sorted(replicas)}", lambda r=replicas: not inv.gone(r),
                         max(1.0, DRAIN_DEADLINE - (time.monotonic() - started)))
                drains_completed += 1
            # the end: everything drained and released, nothing left anywhere
            wait_for(f"a full drain ({inv.leaks()})", lambda: not inv.leaks(), 60)
        assert load.snapshot().ok > 0
        assert monitor.max_spend <= CAP + 1e-9, f"spend reached {monitor.max_spend:.2f}/h over the cap {CAP}"
        assert monitor.max_live <= MAX
        assert inv.duplicate_launches() == []
        assert rcontroller.terminate() == 0
    finally:
        load.stop()
    logs = [(rlab.root / f"controller-{i}.log").read_text() for i in range(1, rcontroller.starts + 1)]
    assert not [n for n, text in enumerate(logs, 1) if "Traceback" in text], "a controller log has a traceback"
    launched = all_launched(rlab)
    print(f"crash: {points} kills, states interrupted {dict(interrupted)}, {len(launched)} instances launched, "
          f"{drains_completed} interrupted drains completed, max live {monitor.max_live}, "
          f"max spend {monitor.max_spend:.2f}/h (cap {CAP}), restart to ready {min(restarts):.1f}-{max(restarts):.1f}s")
    assert launched, "the load never caused a launch: the test would prove nothing"
    record("crash", kills=points, interrupted=dict(interrupted), launched=len(launched),
           drains_interrupted=drains_completed, max_spend=round(monitor.max_spend, 2), cap=CAP,
           max_live=monitor.max_live, max=MAX, unknown=0, duplicates=0, stray_backends=0, leaks=0)
