"""Benchmark: CPU and wall time of each of the loop's jobs on bench/scale.py's fleet (10 serving replicas per
policy, the same doubles, the real state store and ECS path against the emulator in its own process): the
sample round, the step round with every policy evaluated in its hold band (no health check due, then all
of them due), and the reconcile, each through the daemon's own methods, best of 3. Nothing is decided, so
every run does the same work; used for the per-job table of docs/ha.md.

    .venv/bin/python bench/tick_phases.py [--policies 500] [--state-url URL]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import scale

from controller.daemon import Daemon
from controller.loop.edges import LoopOptions
from controller.store.state import StateStore


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policies", type=int, default=500)
    ap.add_argument("--state-url", help="state database (default: a SQLite file in a temporary directory)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="burst-phases-"))
    emulator = scale.Emulator()
    store: StateStore | None = None
    try:
        scale.write_policies(work / "policies", args.policies, 12)
        edges, runtime, balancer = scale.make_edges(emulator, {})
        store = StateStore(args.state_url or f"sqlite:///{work / 'state.db'}")
        daemon = Daemon(options=LoopOptions(controller_id=scale.CONTROLLER), store=store, edges=edges,
                        policies_dir=work / "policies")
        daemon.reload(initial=True)
        scale.seed(daemon, edges, runtime, balancer, 10)
        runtimes = list(daemon.runtimes.values())
        daemon.sample_round(timeout=None)  # warm-up: first-use costs (statement caches, connection pools)
        daemon.step_round(force_evaluate=True, timeout=None)
        daemon.reconcile()

        def run(label: str, fn: Callable[[], object], before: Callable[[], object] = lambda: None) -> None:
            best_cpu = best_wall = float("inf")
            for _ in range(3):
                before()
                cpu, wall = time.process_time(), time.perf_counter()  # all threads: the pools' work counts
                fn()
                best_cpu = min(best_cpu, time.process_time() - cpu)
                best_wall = min(best_wall, time.perf_counter() - wall)
            print(f"{label:<52} {best_cpu * 1e3:7.0f} ms CPU {best_wall * 1e3:7.0f} ms wall "
                  f"({best_cpu / len(runtimes) * 1e3:.2f} ms CPU per policy)")

        def probes_due() -> None:
            for r in runtimes:
                r.lifecycle._last_probe.clear()

        def probes_done() -> None:
            now = time.time()
            for r in runtimes:
                for rid in list(r.lifecycle._last_probe):
                    r.lifecycle._last_probe[rid] = now

        print(f"{args.policies} policies x 10 serving replicas, state {store.url.split(':', 1)[0]}, best of 3")
        run("sample round", lambda: daemon.sample_round(timeout=None))
        run("step round: evaluate all (hold band), no probe due",
            lambda: daemon.step_round(force_evaluate=True, timeout=None), probes_done)
        run("step round: evaluate all (hold band), all probes due",
            lambda: daemon.step_round(force_evaluate=True, timeout=None), probes_due)
        run("step round: nothing due", lambda: daemon.step_round(timeout=None), probes_done)
        run("reconcile (5,000 instances listed, 500 backends)", daemon.reconcile)
    finally:
        if store is not None:
            store.close()
        emulator.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
