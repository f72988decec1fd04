"""Issue 7 part 5: the status endpoint under load while the controller manages 100 replicas, and the control
loop's tick time meanwhile, as a ratio measured in the same run (quiet and loaded phases alternating).

    .venv/bin/python bench/reliability_load.py [--replicas 100] [--seconds 8] [--rounds 5] [--rate 1200]
                                               [--capacity-rounds 3] [--clients 4] [--concurrency 4]
                                               [--mix mixed|status|healthz|history] [--client-nice 10] [--step 0.2]

Two loads, one after the other on the same daemon:
- at the target rate (the criterion): the clients send ``--rate`` requests per second in all, each connection
  on a fixed schedule (open loop; a latency counts from when the request was due, so a stall is not hidden).
  Targets: >= 1,000 requests/s answered with no error, p99 < 50 ms, tick time +10% at most.
- at capacity (a figure, no target): the clients send as fast as they are answered, which on this 2-core
  machine takes both cores: the most the endpoint does, and what a saturated host does to the loop's tick.

The daemon and the status endpoint are the real ones (tests/reliability/loadrig.py), as under `burstctl run`:
the daemon publishes status snapshots and the endpoint is served by its own process at nice 10
(controller/status/process.py); the replicas are ECS-emulator instances launched through the real compute
pool and SDK; the node side (containers, load balancer, health probe) is a light in-memory double, because
100 real containers are too heavy for this machine. The load generator's client processes run on the same
2 cores at --client-nice. The loop steps every --step seconds (the product's default is 2 s, its floor 0.2 s; a
shorter step gives more ticks to compare, the tick's work is the same). Loopback only."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.status.process import NICE, PUBLISH_INTERVAL
from tests.reliability.harness import record
from tests.reliability.loadrig import LoadRig


def _seed_history(rig: LoadRig, points: int) -> None:
    """An hour of the policy's samples, so that a history answer is as large as on a controller that ran."""
    assert rig.store is not None
    now, rows = time.time(), []
    for k in range(points):
        rig.store.record_sample("web", at=now - 3600 + k * 3600 / max(points, 1), value=50.0 + k % 17, ok=True,
                                source="bench", capacity=100.0, replicas=k % 5, into=rows.append)
    rig.store.record_history(rows)
    print(f"reliability_load: {points} samples of the last hour written for policy web")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=8.0, help="per phase")
    ap.add_argument("--rate", type=float, default=1200.0,
                    help="requests per second in all at the target load (the criterion is >= 1,000)")
    ap.add_argument("--capacity-rounds", type=int, default=3,
                    help="loaded phases at capacity, after the target-rate ones (0: none)")
    ap.add_argument("--publish-interval", type=float, default=PUBLISH_INTERVAL,
                    help="seconds between status snapshots under requests (the product's default)")
    ap.add_argument("--status-nice", type=int, default=NICE,
                    help="nice value of the status process (20: SCHED_IDLE, for it and with --client-nice 20 "
                         "for the clients too)")
    ap.add_argument("--step", type=float, default=0.2,
                    help="the loop's step interval (seconds; the daemon's floor is 0.2): shorter gives more ticks to "
                         "compare per phase")
    ap.add_argument("--rounds", type=int, default=5, help="loaded phases at the target rate, each between two quiet ones")
    ap.add_argument("--clients", type=int, default=4, help="client processes")
    ap.add_argument("--concurrency", type=int, default=4, help="connections per client process")
    ap.add_argument("--mix", default="mixed", choices=["mixed", "status", "healthz", "history"])
    ap.add_argument("--history-points", type=int, default=720,
                    help="samples of the last hour written for the policy before measuring (720: one per 5 s, "
                         "a 46 KB history answer, as in issue 19)")
    ap.add_argument("--client-nice", type=int, default=10,
                    help="nice value of the client processes (default 10, the status process's own: the load "
                         "generator stands for clients on other machines, and like the endpoint it yields the 2 "
                         "cores to the control loop; 0 lets it compete with the loop)")
    args = ap.parse_args()
    if args.rounds < 1 or args.capacity_rounds < 0 or args.seconds <= 1 or args.rate < 0:
        ap.error("--rounds must be at least 1, --capacity-rounds at least 0, --seconds over 1 and --rate >= 0")
    rig = LoadRig(args.replicas, step=args.step, publish_interval=args.publish_interval,
                  status_nice=args.status_nice).start()
    try:
        t0 = time.monotonic()
        rig.wait_serving(300)
        print(f"reliability_load: {args.replicas} replicas serving after {time.monotonic() - t0:.0f}s "
              f"({len(rig.emulator.live_instances())} ECS-emulator instances via the real SDK; node runtime, load "
              "balancer and health probe are in-memory doubles)")
        _seed_history(rig, args.history_points)
        target = rig.measure(args.seconds, args.clients, args.concurrency, args.mix, args.client_nice, args.rounds,
                             rate=args.rate)
        capacity = rig.measure(args.seconds, args.clients, args.concurrency, args.mix, args.client_nice,
                               args.capacity_rounds) if args.capacity_rounds else None
    finally:
        rig.stop()
        shutil.rmtree(rig.root, ignore_errors=True)
    for title, result in [(f"at {args.rate:g} requests/s", target), ("at capacity", capacity)]:
        if result is None:
            continue
        print(f"reliability_load: -- {title} ({args.mix}, {args.clients}x{args.concurrency} clients at nice "
              f"{args.client_nice}) --")
        for p in result.phases:
            line = f"reliability_load: {p.name:9s} ticks={len(p.ticks):3d} tick median={p.tick_median_ms:.2f}ms " \
                   f"mean={p.tick_mean_ms:.2f}ms daemon CPU {p.cpu:.0%}"
            if p.requests:
                line += f"  status: {p.requests} requests, {p.errors} errors, {p.rate:.0f}/s, p50 {p.p50_ms:.1f}ms, " \
                        f"p99 {p.p99_ms:.1f}ms"
            print(line)
        print(f"reliability_load: tick x{result.ratio:.2f} (median of {sum(len(p.ticks) for p in result.loaded)} "
              f"loaded ticks over median of {sum(len(p.ticks) for p in result.phases) - sum(len(p.ticks) for p in result.loaded)}"
              f" quiet ones); each loaded phase over its neighbours: "
              f"{', '.join(f'x{r:.2f}' for r in result.round_ratios)}; noise floor {result.noise:.1%} (odd over even "
              f"quiet phases), quiet phases' medians {result.spread:.0%} apart; a status snapshot takes the daemon "
              f"{result.snapshot_ms:.1f} ms (median), at most every {args.publish_interval:g} s while requests come; "
              f"{result.beside} of its {result.builds} builds ran beside a step round")
    loaded = target.loaded
    rate, p99 = min(p.rate for p in loaded), max(p.p99_ms for p in loaded)  # the worst loaded phase is the figure
    p50, errors = max(p.p50_ms for p in loaded), sum(p.errors for p in loaded)
    ok_rate, ok_p99, ok_tick = rate >= 1000 and errors == 0, p99 < 50, target.ratio <= 1.10
    print(f"reliability_load: at {args.rate:g}/s, worst loaded phase: rate {rate:.0f}/s (>= 1000, no error: "
          f"{'MET' if ok_rate else 'NOT MET'}), p50 {p50:.1f} ms, p99 {p99:.1f} ms (< 50: "
          f"{'MET' if ok_p99 else 'NOT MET'}); tick time x{target.ratio:.2f} under load (<= 1.10: "
          f"{'MET' if ok_tick else 'NOT MET'}; noise floor {target.noise:.1%})")
    figures: dict[str, object] = {}
    if capacity is not None:
        cap = capacity.loaded
        figures = {"capacity_rate": round(min(p.rate for p in cap)), "capacity_p99_ms": round(max(p.p99_ms for p in cap), 1),
                   "capacity_errors": sum(p.errors for p in cap), "capacity_ratio": round(capacity.ratio, 2),
                   "capacity_noise": round(capacity.noise, 3)}
        print(f"reliability_load: at capacity, worst loaded phase: {figures['capacity_rate']}/s, p99 "
              f"{figures['capacity_p99_ms']} ms, {figures['capacity_errors']} errors; tick x{capacity.ratio:.2f} "
              "(both cores busy: no target, the figure says what a saturated host costs the loop)")
    record("load", replicas=args.replicas, instances=target.instances, target_rate=args.rate, rate=round(rate),
           p50_ms=round(p50, 1), p99_ms=round(p99, 1), errors=errors,
           tick_quiet_ms=[round(p.tick_median_ms, 2) for p in target.phases if p.name.startswith("quiet")],
           tick_loaded_ms=[round(p.tick_median_ms, 2) for p in loaded], ratio=round(target.ratio, 3),
           round_ratios=[round(r, 3) for r in target.round_ratios],
           clients=f"{args.clients}x{args.concurrency}", client_nice=args.client_nice, mix=args.mix,
           noise=round(target.noise, 3), spread=round(target.spread, 2), snapshot_ms=round(target.snapshot_ms, 1),
           builds=target.builds, builds_beside_a_round=target.beside,
           daemon_cpu=[round(p.cpu, 3) for p in target.phases], **figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
