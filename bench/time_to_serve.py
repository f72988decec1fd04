"""Time to serve on booted nodes: from the scale-out trigger to the first replica serving, phase by phase, for a
cold node of the stock Debian image, a cold node of an image baked by `burstctl bake` (controller/loop/bake.py)
and a warm node (a node of the warm pool, controller/loop/warm_pool.py: stopped with StopCharging after its
replica ran, started again), median of --runs runs each.

    .venv/bin/python bench/time_to_serve.py [--runs 3] [--layer-mb 66] [--vm-boot 26] [--vm-start 21] [--json]

The workload is about 200 MB in 4 layers: local/busybox:1 plus 3 COPY layers of random data, built on the
private Docker Engine with the classic builder (DOCKER_BUILDKIT=0: the Engine API's /build). The lab
(lab/lab.py) provides the ECS emulator with booted nodes, the on-prem and cloud registries and the
on-prem container running that image; the bake and the nodes use the controller's own adapters
(EcsComputePool, DockerNodeRuntime, the node bootstrap UserData).

The trigger is the controller's RunInstances for a cold node and its StartInstances for a warm one. Phases of
one run: ``api`` that call answered; ``vm boot`` the VM's own boot (cold) or start (warm) before the guest
runs, modelled (not slept: added as a constant); ``os boot`` the node's systemd up (the emulator's machine);
``bootstrap`` until the node's Docker API answers over mutual TLS (a stock node's cloud-init installs Docker
from the region's mirror first; a baked one has it, and its Docker data comes from the image's snapshot
before the machine starts; a warm node's Engine simply starts again with its disk); ``pull`` the workload
image (none on a baked or warm node: it is on the disk); ``start`` creating and starting the replica;
``serve`` until it answers HTTP 200. The controller's own detection delay (its metric window and
``sustained_out``) comes before the trigger and is the same for every kind of node, so it is left out.

The warm node is prepared as a burst leaves one: launched (from the baked image, to save the bench a stock
boot), its replica started and serving, then stopped and removed as a drain does, then StopInstances with
StoppedMode=StopCharging until Stopped. Each warm run starts it, serves, and parks it again.

Modelled VM times (override with --vm-boot and --vm-start): 26 s for a new instance and 21 s for a stopped one
started again. Alibaba Cloud's documentation gives no figure for either (its RunInstances, StartInstances and
Economical Mode pages say only that the calls are asynchronous and that starting stopped instances speeds up
a scale-out), nor do AWS's warm pool pages; the figures are the public measurement of
https://github.com/brevdev/ec2-coldboot-research (Amazon EC2, run-instances to SSH answering: cold launch
25.8 s, stop/start 21.2 s, of which about 16 s Pending to Running). They include the guest's own boot to
SSH, which the ``os boot`` phase measures here again, so every total carries that overlap alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker
import httpx

from adapters.docker_engine.client import docker_client
from controller.config import load_config
from controller.errors import BurstError
from controller.loop.bake import BakeSettings
from controller.loop.steps import launch_spec
from controller.ports import LABEL_CONTROLLER, Node
from controller.wiring import build_baker
from lab.lab import Lab, LabSettings
from lab.localimage import ensure_busybox_image
from lab.parts import DOCKER_HOST, STOCK_IMAGE
from policies.loader import load_policies
from tests.support.wait import wait_until

MB = 1 << 20
IMAGE = "local/burst-bench-serve:200m"
PHASES = ("api", "vm boot", "os boot", "bootstrap", "pull", "start", "serve")


def build_image(client: docker.DockerClient, layer_mb: int, layers: int = 3) -> str:
    """local/busybox:1 plus ``layers`` COPY layers of random data (built once per size, kept)."""
    tag = f"{IMAGE}-{layer_mb}x{layers}"
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    ensure_busybox_image(client, "local/busybox:1")
    with tempfile.TemporaryDirectory(prefix="burst-bench-image-") as tmp:
        lines = ["FROM local/busybox:1"]
        for n in range(layers):
            with open(Path(tmp) / f"blob{n}", "wb") as fh:
                fh.writelines(os.urandom(MB) for _ in range(layer_mb))
            lines.append(f"COPY blob{n} /data/blob{n}")
        (Path(tmp) / "Dockerfile").write_text("\n".join(lines) + "\n")
        client.images.build(path=tmp, tag=tag, rm=True, forcerm=True)  # the Engine's classic builder
    return tag


def wait(what: str, check: Any, timeout: float, every: float = 0.25) -> Any:
    return wait_until(what, check, timeout, every, retry=(BurstError, httpx.HTTPError, OSError))


def serve(lab: Lab, baker: Any, workload: Any, inst_id: str, t0: float, t_api: float, vm: float,
          n: int) -> tuple[dict[str, float], Node, Any]:
    """After the trigger (at ``t0``, answered at ``t_api``): until the node's Docker API answers, then the
    replica started and answering HTTP 200. The phases, the node and the replica's container."""
    compute, runtime = baker.compute, baker.runtime

    def engine() -> Node | None:
        [now] = compute.get([inst_id])
        if now.state.value != "running" or not now.private_ip:
            return None
        node = Node(now.id, now.private_ip, f"tcp://{now.private_ip}:2376")
        runtime.ping(node)
        return node

    node = wait(f"{inst_id}: Docker API", engine, 600, 0.25)
    t_engine = time.time()
    up = lab.machine_up(inst_id) or t_engine
    container = runtime.start(node, workload, f"bench-{n}", {LABEL_CONTROLLER: lab.controller_id})
    t_started = time.time()
    wait("serving", lambda: httpx.get(f"http://{node.address}:{container.port}/", timeout=2).status_code == 200,
         120, 0.1)
    t_serving = time.time()
    pull = container.pull_seconds or 0.0
    phases = {"api": t_api - t0, "vm boot": vm, "os boot": max(0.0, up - t_api),
              "bootstrap": max(0.0, t_engine - up), "pull": pull, "start": max(0.0, t_started - t_engine - pull),
              "serve": t_serving - t_started}
    return phases, node, container


def one_run(lab: Lab, baker: Any, policy: Any, workload: Any, image_id: str, vm_boot: float, n: int) -> dict[str, float]:
    """A cold node: RunInstances of ``image_id`` -> serving; released after."""
    compute = baker.compute
    spec = launch_spec(policy, lab.controller_id, f"bench{n}", f"bench-{image_id}-{n}",
                       baker.edges.user_data(policy, f"bench{n}"))
    spec = dataclasses.replace(spec, image_id=image_id)
    t0 = time.time()
    [inst] = compute.launch(spec, 1, f"bench-{image_id}-{n}-{int(t0)}")
    t_api = time.time()
    try:
        phases, _, _ = serve(lab, baker, workload, inst.id, t0, t_api, vm_boot, n)
    finally:
        compute.release([inst.id])
    return phases


def park(baker: Any, node: Node, container: Any) -> None:
    """As a scale-in leaves a node to the warm pool: the replica stopped and removed, the node stopped with
    StopCharging, until Stopped."""
    baker.runtime.stop(node, container.id, "SIGTERM", 2.0)
    baker.runtime.remove(node, container.id)
    baker.compute.stop([node.instance_id], charging=False)
    wait(f"{node.instance_id}: Stopped", lambda: baker.compute.get([node.instance_id])[0].state.value == "stopped",
         300, 0.5)


def warm_runs(lab: Lab, baker: Any, policy: Any, workload: Any, image_id: str, vm_start: float, runs: int,
              say: Any) -> list[dict[str, float]]:
    """One node of ``image_id`` served once and parked, then ``runs`` times: StartInstances -> serving, parked
    again. Released at the end."""
    compute = baker.compute
    spec = launch_spec(policy, lab.controller_id, "benchwarm", f"bench-warm-{image_id}",
                       baker.edges.user_data(policy, "benchwarm"))
    spec = dataclasses.replace(spec, image_id=image_id)
    t0 = time.time()
    [inst] = compute.launch(spec, 1, f"bench-warm-{image_id}-{int(t0)}")
    out: list[dict[str, float]] = []
    try:
        _, node, container = serve(lab, baker, workload, inst.id, t0, time.time(), 0.0, 100)
        park(baker, node, container)
        say(f"warm node {inst.id} parked (Stopped, StopCharging)")
        for n in range(runs):
            t0 = time.time()
            compute.start([inst.id])
            t_api = time.time()
            phases, node, container = serve(lab, baker, workload, inst.id, t0, t_api, vm_start, 200 + n)
            out.append(phases)
            say(f"warm run {n + 1}: {sum(phases.values()):.1f}s  " + "  ".join(f"{p} {phases[p]:.1f}" for p in PHASES))
            park(baker, node, container)
    finally:
        compute.release([inst.id])
    return out


def median_phases(runs: list[dict[str, float]]) -> dict[str, float]:
    out = {p: statistics.median(r[p] for r in runs) for p in PHASES}
    out["total"] = statistics.median(sum(r[p] for p in PHASES) for r in runs)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--layer-mb", type=int, default=66, help="MB of random data per COPY layer (3 layers)")
    ap.add_argument("--vm-boot", type=float, default=26.0, help="modelled seconds of a new VM's own boot")
    ap.add_argument("--vm-start", type=float, default=21.0, help="modelled seconds of a stopped VM's own start")
    ap.add_argument("--json", action="store_true", help="last line: one JSON object")
    args = ap.parse_args()
    say = (lambda m: print(m, file=sys.stderr, flush=True)) if args.json else (lambda m: print(m, flush=True))
    client = docker_client(DOCKER_HOST, None, timeout=600)
    image = build_image(client, args.layer_mb)
    size = client.images.get(image).attrs["Size"] / MB
    layers = len(client.images.get(image).attrs["RootFS"]["Layers"])
    say(f"workload image {image}: {size:.0f} MB in {layers} layers")
    lab = Lab(settings=LabSettings(node_image=STOCK_IMAGE, boot_delay=0.0, workload_image=image))
    lab.start(progress=say)
    baker = close = None
    results: dict[str, Any] = {}
    all_runs: dict[str, list[float]] = {}
    try:
        cfg = load_config(lab.config_path)
        baker, close = build_baker(cfg, settings=BakeSettings(keep=1, poll=1.0, boot_timeout=900), credentials=lab.credentials(),
                                   say=lambda m: say(f"  bake: {m}"))
        policy = load_policies([str(lab.policy_path)]).policies["web"]
        started = time.monotonic()
        baked = baker.bake(policy)
        say(f"baked {baked.image_id} in {time.monotonic() - started:.0f}s: "
            + ", ".join(f"{k} {v:.1f}s" for k, v in baked.phases.items()))
        workload = baker.edges.workloads.capture(policy, baked.workload_image)
        for kind, image_id in (("cold_stock", STOCK_IMAGE), ("cold_baked", baked.image_id)):
            runs = []
            for n in range(args.runs):
                runs.append(one_run(lab, baker, policy, workload, image_id, args.vm_boot, n))
                say(f"{kind} run {n + 1}: {sum(runs[-1].values()):.1f}s  "
                    + "  ".join(f"{p} {runs[-1][p]:.1f}" for p in PHASES))
            results[kind] = median_phases(runs)
            all_runs[kind] = [round(sum(r.values()), 1) for r in runs]
        runs = warm_runs(lab, baker, policy, workload, baked.image_id, args.vm_start, args.runs, say)
        results["warm"] = median_phases(runs)
        all_runs["warm"] = [round(sum(r.values()), 1) for r in runs]
        baker.images.delete_image(baked.image_id)
    finally:
        if close is not None:
            close()
        lab.stop()
        client.close()
    say("\nmedian seconds per phase (trigger -> first replica serving)")
    say(f"{'phase':<10}" + "".join(f"{k:>12}" for k in results))
    for phase in (*PHASES, "total"):
        say(f"{phase:<10}" + "".join(f"{results[k][phase]:>12.1f}" for k in results))
    stock, baked_s, warm_s = (results[k]["total"] for k in ("cold_stock", "cold_baked", "warm"))
    # health admission: the policy's passes at its interval, the controller's wait after the first 200 (the
    # same for every kind of node, so the totals leave it out; the warm goal counts it on both sides)
    health = policy.workload.health
    admission = float(health.passes) * float(health.interval)
    beyond = warm_s - args.vm_start
    say(f"cold baked / cold stock: {baked_s / stock:.2f}; warm / cold stock: {warm_s / stock:.2f} "
        f"(modelled VM boot {args.vm_boot:g}s, VM start {args.vm_start:g}s)")
    say(f"warm with health admission: {warm_s + admission:.1f}s against modelled VM start + health admission "
        f"{args.vm_start + admission:.1f}s ({args.vm_start:g} + {health.passes} passes x {float(health.interval):g}s): "
        f"{beyond:+.1f}s beyond it "
        f"(os boot {results['warm']['os boot']:.1f}, Docker {results['warm']['bootstrap']:.1f}, "
        f"start {results['warm']['start']:.1f}, serve {results['warm']['serve']:.1f})")
    summary = {"cold_stock_s": round(stock, 1), "cold_baked_s": round(baked_s, 1), "warm_s": round(warm_s, 1),
               "runs": args.runs, "run_totals_s": all_runs, "image_mb": round(size), "image_layers": layers,
               "vm_boot_s": args.vm_boot, "vm_start_s": args.vm_start, "health_admission_s": admission,
               "warm_beyond_vm_start_and_admission_s": round(beyond, 1),
               "phases": {k: {p: round(v, 2) for p, v in r.items()} for k, r in results.items()}}
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
