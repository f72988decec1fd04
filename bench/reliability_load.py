"""Issue 7 part 5: the status endpoint under load while the controller manages 100 replicas, and the control
loop's tick time meanwhile, as a ratio measured in the same run (quiet, loaded, quiet).

    .venv/bin/python bench/reliability_load.py [--replicas 100] [--seconds 15] [--clients 4] [--concurrency 4]
                                               [--mix mixed|status|healthz] [--client-nice 10]

The daemon and the status endpoint are the real ones (tests/reliability/loadrig.py), as under `burstctl run`:
the daemon publishes status snapshots and the endpoint is served by its own process at nice 10
(controller/status_process.py); the replicas are ECS-emulator instances launched through the real compute
pool and SDK; the node side (containers, load balancer, health probe) is a light in-memory double, because
100 real containers are too heavy for this machine. The load generator's client processes run on the same
2 cores at --client-nice. Targets: >= 1,000 requests/s, p99 < 50 ms, tick time +10% at most.
Loopback only."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.status_process import NICE, PUBLISH_INTERVAL
from tests.reliability.harness import record
from tests.reliability.loadrig import LoadRig


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=8.0, help="per phase")
    ap.add_argument("--publish-interval", type=float, default=PUBLISH_INTERVAL,
                    help="seconds between status snapshots under requests (the product's default)")
    ap.add_argument("--status-nice", type=int, default=NICE,
                    help="nice value of the status process (20: SCHED_IDLE, for it and with --client-nice 20 "
                         "for the clients too)")
    ap.add_argument("--step", type=float, default=0.5,
                    help="the loop's step interval (seconds): shorter gives more ticks to compare per phase")
    ap.add_argument("--rounds", type=int, default=4, help="loaded phases, each between two quiet ones")
    ap.add_argument("--clients", type=int, default=4, help="client processes")
    ap.add_argument("--concurrency", type=int, default=4, help="connections per client process")
    ap.add_argument("--mix", default="mixed", choices=["mixed", "status", "healthz"])
    ap.add_argument("--client-nice", type=int, default=10,
                    help="nice value of the client processes (default 10, the status process's own: the load "
                         "generator stands for clients on other machines, and like the endpoint it yields the 2 "
                         "cores to the control loop; 0 lets it compete with the loop)")
    args = ap.parse_args()
    rig = LoadRig(args.replicas, step=args.step, publish_interval=args.publish_interval,
                  status_nice=args.status_nice).start()
    try:
        t0 = time.monotonic()
        rig.wait_serving(300)
        print(f"reliability_load: {args.replicas} replicas serving after {time.monotonic() - t0:.0f}s "
              f"({len(rig.emulator.live_instances())} ECS-emulator instances via the real SDK; node runtime, load "
              "balancer and health probe are in-memory doubles)")
        result = rig.measure(args.seconds, args.clients, args.concurrency, args.mix, args.client_nice, args.rounds)
    finally:
        rig.stop()
        shutil.rmtree(rig.root, ignore_errors=True)
    for p in result.phases:
        line = f"reliability_load: {p.name:9s} ticks={len(p.ticks):3d} tick median={p.tick_median_ms:.1f}ms " \
               f"mean={p.tick_mean_ms:.1f}ms daemon CPU {p.cpu:.0%}"
        if p.requests:
            line += f"  status: {p.requests} requests, {p.errors} errors, {p.rate:.0f}/s, p50 {p.p50_ms:.1f}ms, " \
                    f"p99 {p.p99_ms:.1f}ms"
        print(line)
    print(f"reliability_load: the quiet phases' tick medians are {result.noise:.0%} apart (the noise floor of the "
          f"ratio on this machine now); the daemon builds a status snapshot in {result.snapshot_ms:.1f} ms (median), "
          f"at most every {args.publish_interval:g} s while requests come")
    loaded = result.loaded
    # the worst loaded phase is the figure: lowest rate, highest p99
    rate, p99 = min(p.rate for p in loaded), max(p.p99_ms for p in loaded)
    p50, errors = max(p.p50_ms for p in loaded), sum(p.errors for p in loaded)
    ok_rate, ok_p99, ok_tick = rate >= 1000 and errors == 0, p99 < 50, result.ratio <= 1.10
    print(f"reliability_load: worst loaded phase: rate {rate:.0f}/s (>= 1000, no error: "
          f"{'MET' if ok_rate else 'NOT MET'}), p50 {p50:.1f} ms, p99 {p99:.1f} ms (< 50: {'MET' if ok_p99 else 'NOT MET'}); "
          f"tick time x{result.ratio:.2f} under load, median of every loaded tick over every quiet one "
          f"(<= 1.10: {'MET' if ok_tick else 'NOT MET'})")
    record("load", replicas=args.replicas, instances=result.instances, rate=round(rate),
           p50_ms=round(p50, 1), p99_ms=round(p99, 1), errors=errors,
           tick_quiet_ms=[round(p.tick_median_ms, 1) for p in result.phases if p.name.startswith("quiet")],
           tick_loaded_ms=[round(p.tick_median_ms, 1) for p in loaded], ratio=round(result.ratio, 2),
           clients=f"{args.clients}x{args.concurrency}", client_nice=args.client_nice, mix=args.mix,
           noise=round(result.noise, 2), snapshot_ms=round(result.snapshot_ms, 1),
           daemon_cpu=[round(p.cpu, 2) for p in result.phases])
    return 0


if __name__ == "__main__":
    sys.exit(main())
