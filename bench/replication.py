"""Replication benchmark: the controller's in-process copy against `skopeo copy`, between real loopback
docker-registry instances, in the same run. Prints every figure.

    .venv/bin/python bench/replication.py [--layer-mb 50] [--rounds 3] [--big-mb 1024]

Cold: a 4-layer image of random data into a FRESH destination registry for each tool and round.
Warm: the same copy again when every blob is present (and the daemon's `ensure` warm path).
Memory: a 1 GB single-layer image copied by a child process; its peak RSS (ru_maxrss) against its RSS
before the copy. Goals: burstctl/skopeo <= 1.0 cold, warm < 100 ms, peak RSS < 100 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.registry.client import RegistryOptions
from adapters.registry.replication import Replicator
from lab.localregistry import LocalRegistry
from tests.support.ociimage import ImagePusher

MB = 1 << 20

_CHILD = r"""
import json, resource, sys, threading, time
sys.path.insert(0, sys.argv[3])
from adapters.registry.replication import Replicator
def vm(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
r = Replicator()
r.has(sys.argv[1])  # connections, auth and imports all warm before the baseline
before = vm("VmRSS")
during = [before]
stop = threading.Event()
def sample():
    while not stop.wait(0.02):
        during.append(vm("VmRSS"))
threading.Thread(target=sample, daemon=True).start()
t = time.perf_counter()
res = r.replicate(sys.argv[1], sys.argv[2])
seconds = time.perf_counter() - t
stop.set()
print(json.dumps({"before_mb": before, "max_during_mb": max(during), "hwm_mb": vm("VmHWM"),
                  "seconds": seconds, "bytes": res.bytes_copied}))
"""


def _cpu_children() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _cpu_self() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def skopeo(src: str, dst: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the skopeo process)."""
    cpu, started = _cpu_children(), time.perf_counter()
    subprocess.run(["skopeo", "copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false",
                    f"docker://{src}", f"docker://{dst}"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started, _cpu_children() - cpu


def ours(replicator: Replicator, src: str, dst: str) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of this process, blobs copied)."""
    cpu, started = _cpu_self(), time.perf_counter()
    result = replicator.replicate(src, dst)
    return time.perf_counter() - started, _cpu_self() - cpu, result.copied_blobs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layer-mb", type=int, default=50, help="size of each of the 4 layers (default 50)")
    ap.add_argument("--rounds", type=int, default=5, help="cold rounds per tool (default 5)")
    ap.add_argument("--big-mb", type=int, default=1024, help="layer size for the memory run (0 skips it)")
    ap.add_argument("--concurrency", type=int, default=6)
    args = ap.parse_args()
    if not shutil.which("skopeo") or not shutil.which("docker-registry"):
        print("bench: skopeo and docker-registry are needed (scripts/services.sh install)", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="bench-replication-"))
    started: list[LocalRegistry] = []

    def registry(name: str) -> LocalRegistry:
        reg = LocalRegistry(tmp / name).start()
        started.append(reg)
        return reg

    try:
        src = registry("src")
        pusher = ImagePusher(f"http://{src.address}")
        t = time.perf_counter()
        img = pusher.image("bench/app", "v1", [args.layer_mb * MB] * 4, seed=7)
        total = sum(n for _, n in img.blobs)
        print(f"machine: {os.cpu_count()} CPUs; skopeo {_skopeo_version()}; image {len(img.layers)} layers, "
              f"{total / 1e6:.1f} MB (built in {time.perf_counter() - t:.1f}s)")
        src_ref = f"{src.address}/bench/app:v1"
        options = RegistryOptions(concurrency=args.concurrency)

        cold_ours, cold_skopeo, cpu_ours, cpu_skopeo = [], [], [], []
        for i in range(args.rounds):
            # alternate who goes first, so page cache and CPU frequency favour neither
            for tool in (("ours", "skopeo") if i % 2 == 0 else ("skopeo", "ours")):
                dst = registry(f"dst-{tool}-{i}")
                if tool == "ours":
                    rep = Replicator(options)
                    seconds, cpu, copied = ours(rep, src_ref, f"{dst.address}/bench/app:v1")
                    rep.close()
                    assert copied == len(img.blobs)
                    cold_ours.append(seconds)
                    cpu_ours.append(cpu)
                else:
                    seconds, cpu = skopeo(src_ref, f"{dst.address}/bench/app:v1")
                    cold_skopeo.append(seconds)
                    cpu_skopeo.append(cpu)
                dst.stop()
        med_ours, med_skopeo = statistics.median(cold_ours), statistics.median(cold_skopeo)
        print(f"cold  burstctl (in-process): {_fmt(cold_ours)}  median {med_ours:.3f}s "
              f"({total / med_ours / 1e6:.0f} MB/s), copier CPU {statistics.median(cpu_ours):.2f}s")
        print(f"cold  skopeo copy          : {_fmt(cold_skopeo)}  median {med_skopeo:.3f}s "
              f"({total / med_skopeo / 1e6:.0f} MB/s), copier CPU {statistics.median(cpu_skopeo):.2f}s")
        print(f"cold  ratio burstctl/skopeo: {med_ours / med_skopeo:.2f} wall (goal <= 1.0), "
              f"{statistics.median(cpu_ours) / statistics.median(cpu_skopeo):.2f} CPU")

        dst = registry("dst-warm")
        rep = Replicator(options)
        ours(rep, src_ref, f"{dst.address}/bench/app:v1")
        skopeo(src_ref, f"{dst.address}/bench/app-skopeo:v1")
        warm_ours = [ours(rep, src_ref, f"{dst.address}/bench/app:v1")[0] for _ in range(5)]
        ensure_s = []
        for _ in range(5):
            t = time.perf_counter()
            rep.ensure(src_ref, f"{dst.address}/bench/app:v1")
            ensure_s.append(time.perf_counter() - t)
        rep.close()
        warm_skopeo = [skopeo(src_ref, f"{dst.address}/bench/app-skopeo:v1")[0] for _ in range(3)]
        print(f"warm  burstctl replicate   : median {statistics.median(warm_ours) * 1000:.1f} ms "
              "(GET source manifest, HEAD destination)  (goal < 100 ms)")
        print(f"warm  burstctl ensure      : median {statistics.median(ensure_s) * 1000:.1f} ms "
              "(daemon pre-replication: two HEADs)")
        print(f"warm  skopeo copy          : median {statistics.median(warm_skopeo) * 1000:.1f} ms "
              "(includes process start)")

        if args.big_mb:
            t = time.perf_counter()
            big = pusher.image("bench/big", "v1", [args.big_mb * MB], seed=9)
            print(f"memory: {big.layers[0][1] / 1e6:.0f} MB layer pushed in {time.perf_counter() - t:.1f}s")
            dst = registry("dst-big")
            out = subprocess.run([sys.executable, "-c", _CHILD, f"{src.address}/bench/big:v1",
                                  f"{dst.address}/bench/big:v1", str(ROOT)], check=True, capture_output=True,
                                 text=True)
            m = json.loads(out.stdout)
            print(f"memory: copy of {m['bytes'] / 1e6:.0f} MB in {m['seconds']:.2f}s; RSS before {m['before_mb']:.1f} MB, "
                  f"max during the copy {m['max_during_mb']:.1f} MB (+{m['max_during_mb'] - m['before_mb']:.1f}), "
                  f"process peak (VmHWM) {m['hwm_mb']:.1f} MB  (goal < 100 MB)")
        pusher.close()
    finally:
        for reg in started:
            reg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"


def _skopeo_version() -> str:
    out = subprocess.run(["skopeo", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    return out.rsplit(" ", 1)[-1]


if __name__ == "__main__":
    sys.exit(main())
