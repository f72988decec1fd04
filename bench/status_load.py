"""Load on the status endpoint: several client processes (httpx, keep-alive pools) drive a uvicorn-served
status app for a bounded time and the script prints the achieved request rate and p50/p99 latency.

    .venv/bin/python bench/status_load.py [--seconds 10] [--clients 4] [--concurrency 8] [--mix status]

The app runs in its own process (as in the daemon: uvicorn in a thread) over an in-memory StatusSource
holding 10 policies x 10 replicas (100 replicas), with the daemon's default status cache (0.5 s).
Target (issue 7): >= 1,000 requests/s with p99 < 50 ms. Only loopback is used.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

MIXES = {
    "status": ["/v1/status"],
    "mixed": ["/v1/status", "/v1/status", "/v1/events?limit=50", "/v1/policies/p3", "/healthz", "/readyz",
              "/metrics"],
    "healthz": ["/healthz"],
}


def _serve(port: int, ready: mp.Event, stop: mp.Event) -> None:  # type: ignore[valid-type]
    from controller.status import StatusServer, create_app
    from controller.status_models import InstanceStatus
    from tests.support.status_source import MemoryStatusSource

    names = tuple(f"p{i}" for i in range(10))
    source = MemoryStatusSource(policies=names, events=5000)
    for name in names:  # 10 replicas each: 100 replicas in all
        p = source.policies[name]
        source.policies[name] = p.model_copy(update={
            "replicas": {"serving": 10},
            "instances": [InstanceStatus(id=f"i-{name}-{k}", zone="cn-hangzhou-h", type="ecs.c6.large",
                                         state="serving", age_seconds=600.0 + k, spend=0.1) for k in range(10)]})
    server = StatusServer(create_app(source, "bench-token-0123456789abcdef"), "127.0.0.1", port)
    server.start()
    ready.set()  # type: ignore[attr-defined]
    stop.wait()  # type: ignore[attr-defined]
    server.stop()


def _client(url: str, paths: list[str], seconds: float, concurrency: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker(offset: int) -> None:
        nonlocal errors
        local: list[float] = []
        bad = 0
        with httpx.Client(base_url=url, trust_env=False, timeout=5) as client:
            i = offset
            while time.monotonic() < deadline:
                path = paths[i % len(paths)]
                i += 1
                t0 = time.perf_counter()
                try:
                    r = client.get(path)
                    if r.status_code != 200:
                        bad += 1
                except httpx.HTTPError:
                    bad += 1
                local.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(local)
            errors += bad

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((latencies, errors))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=4, help="client processes")
    ap.add_argument("--concurrency", type=int, default=4, help="connections per client process")
    ap.add_argument("--mix", choices=sorted(MIXES), default="mixed")
    args = ap.parse_args()
    from tests.support.net import free_port

    port = free_port()
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    server = ctx.Process(target=_serve, args=(port, ready, stop), daemon=True)
    server.start()
    if not ready.wait(60):
        print("status_load: server did not start", file=sys.stderr)
        return 1
    url = f"http://127.0.0.1:{port}"
    httpx.get(f"{url}/v1/status", trust_env=False)  # warm the cache and the app
    results = {}
    # /healthz first, as the reference: what this machine's uvicorn + FastAPI stack does with no work at all
    for mix in dict.fromkeys(["healthz", args.mix]):
        results[mix] = _phase(ctx, url, MIXES[mix], args)
    stop.set()
    server.join(10)
    if server.is_alive():
        server.terminate()
    ok = True
    for mix, (rate, p50, p99, worst, n, errors) in results.items():
        print(f"status_load: mix={mix} clients={args.clients}x{args.concurrency} seconds={args.seconds:g} "
              f"requests={n} errors={errors} rate={rate:.0f}/s p50={p50:.1f}ms p99={p99:.1f}ms max={worst:.1f}ms")
    rate, _, p99, _, _, errors = results[args.mix]
    ref = results["healthz"][0]
    ok = rate >= 1000 and p99 < 50 and errors == 0
    print(f"status_load: {args.mix} rate is {rate / ref:.0%} of the /healthz reference in the same run; "
          f"target >= 1000/s and p99 < 50 ms: {'MET' if ok else 'NOT MET'}")
    return 0


def _phase(ctx, url: str, paths: list[str], args: argparse.Namespace) -> tuple[float, float, float, float, int, int]:  # type: ignore[no-untyped-def]
    out = ctx.Queue()
    clients = [ctx.Process(target=_client, args=(url, paths, args.seconds, args.concurrency, out))
               for _ in range(args.clients)]
    for c in clients:
        c.start()
    latencies: list[float] = []
    errors = 0
    for _ in clients:
        lat, err = out.get(timeout=args.seconds + 120)
        latencies.extend(lat)
        errors += err
    for c in clients:
        c.join(10)
    latencies.sort()
    n = len(latencies)
    if n == 0:
        return 0.0, 0.0, 0.0, 0.0, 0, errors
    return (n / args.seconds, statistics.median(latencies) * 1000, latencies[min(n - 1, int(n * 0.99))] * 1000,
            latencies[-1] * 1000, n, errors)


if __name__ == "__main__":
    sys.exit(main())
