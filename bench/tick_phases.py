"""Benchmark: sequential CPU per policy of each loop job (sample, evaluate, advance) on bench/scale.py's
fleet (10 serving replicas per policy, the same doubles, the real state store and ECS path), so a change
to the loop's hot path can be measured without the noise of 64 contending threads. Used for the per-job
table of docs/ha.md.

    .venv/bin/python bench/tick_phases.py [--policies 100] [--state-url URL]
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
from controller.edges import LoopOptions
from controller.state import StateStore
from controller.tick import PolicyRuntime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policies", type=int, default=100)
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
        for r in runtimes:  # warm-up: first-use costs (statement caches, connection pools)
            r.sample()
            r.tick(force_evaluate=True)

        def run(label: str, fn: Callable[[PolicyRuntime], object]) -> None:
            best = float("inf")
            for _ in range(3):
                cpu = time.process_time()  # all threads: the step pool's work counts
                for r in runtimes:
                    fn(r)
                best = min(best, (time.process_time() - cpu) / len(runtimes) * 1e3)
            print(f"{label:<44} {best:6.2f} ms CPU per policy (best of 3)")

        def probes_due(r: PolicyRuntime) -> None:
            r.lifecycle._last_probe.clear()
            r.advance()

        print(f"{args.policies} policies x 10 serving replicas, state {store.url.split(':', 1)[0]}, sequential")
        run("sample", lambda r: r.sample())
        run("evaluate (hold band)", lambda r: r.evaluate(time.time()))
        run("advance, no probe due", lambda r: r.advance())
        run("advance, all 10 probes due", probes_due)
    finally:
        if store is not None:
            store.close()
        emulator.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
