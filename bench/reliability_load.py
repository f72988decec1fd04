"""Issue 7 part 5: the status endpoint under load while the controller manages 100 replicas, and the control
loop's tick time meanwhile, as a ratio measured in the same run (quiet, loaded, quiet).

    .venv/bin/python bench/reliability_load.py [--replicas 100] [--seconds 10] [--clients 4] [--concurrency 4]

The daemon and the status app are the real ones (tests/reliability/loadrig.py), in one process as under
`burstctl run`; the replicas are ECS-emulator instances launched through the real compute pool and SDK; the
node side (containers, load balancer, health probe) is a light in-memory double, because 100 real containers
are too heavy for this machine. Targets: >= 1,000 requests/s, p99 < 50 ms, tick time +10% at most.
Loopback only."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.reliability.harness import record
from tests.reliability.loadrig import LoadRig


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=4, help="client processes")
    ap.add_argument("--concurrency", type=int, default=4, help="connections per client process")
    ap.add_argument("--mix", default="mixed", choices=["mixed", "status", "healthz"])
    ap.add_argument("--client-nice", type=int, default=19,
                    help="nice value of the client processes (default 19: they stand for clients on other "
                         "machines and yield this machine's 2 cores to the controller; 0 to let them compete)")
    args = ap.parse_args()
    rig = LoadRig(args.replicas, step=1.0).start()
    try:
        t0 = time.monotonic()
        rig.wait_serving(300)
        print(f"reliability_load: {args.replicas} replicas serving after {time.monotonic() - t0:.0f}s "
              f"({len(rig.emulator.live_instances())} ECS-emulator instances via the real SDK; node runtime, load "
              "balancer and health probe are in-memory doubles)")
        result = rig.measure(args.seconds, args.clients, args.concurrency, args.mix, args.client_nice)
    finally:
        rig.stop()
        shutil.rmtree(rig.root, ignore_errors=True)
    for p in result.phases:
        line = f"reliability_load: {p.name:8s} ticks={len(p.ticks):3d} tick median={p.tick_median_ms:.1f}ms " \
               f"mean={p.tick_mean_ms:.1f}ms"
        if p.requests:
            line += f"  status: {p.requests} requests, {p.errors} errors, {p.rate:.0f}/s, p50 {p.p50_ms:.1f}ms, " \
                    f"p99 {p.p99_ms:.1f}ms"
        print(line)
    loaded = result.phases[1]
    ok_rate, ok_p99, ok_tick = loaded.rate >= 1000, loaded.p99_ms < 50, result.ratio <= 1.10
    print(f"reliability_load: rate {loaded.rate:.0f}/s (>= 1000: {'MET' if ok_rate else 'NOT MET'}), p99 "
          f"{loaded.p99_ms:.1f} ms (< 50: {'MET' if ok_p99 else 'NOT MET'}), tick time x{result.ratio:.2f} under "
          f"load (<= 1.10: {'MET' if ok_tick else 'NOT MET'})")
    record("load", replicas=args.replicas, instances=result.instances, rate=round(loaded.rate),
           p50_ms=round(loaded.p50_ms, 1), p99_ms=round(loaded.p99_ms, 1), errors=loaded.errors,
           tick_quiet_ms=[round(p.tick_median_ms, 1) for p in result.phases if p.name.startswith("quiet")],
           tick_loaded_ms=round(loaded.tick_median_ms, 1), ratio=round(result.ratio, 2),
           clients=f"{args.clients}x{args.concurrency}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
