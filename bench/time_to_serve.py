"""Time to serve on booted nodes: from the scale-out trigger (the controller's RunInstances) to the first replica
serving, phase by phase, for a cold node of the stock Debian image and a cold node of an image baked by
`burstctl bake` (controller/loop/bake.py), median of --runs runs each. The warm node (a stopped node of the warm
pool started again) is measured only when the controller has a warm pool; this build has none, so it is
skipped with its reason and ``warm_s`` is null.

    .venv/bin/python bench/time_to_serve.py [--runs 3] [--layer-mb 66] [--vm-boot 40] [--json]

The workload is about 200 MB in 4 layers: local/busybox:1 plus 3 COPY layers of random data, built on the
private Docker Engine with the classic builder (DOCKER_BUILDKIT=0: the Engine API's /build). The lab
(lab/lab.py) provides the ECS emulator with booted nodes, the on-prem and cloud registries and the
on-prem container running that image; the bake and the nodes use the controller's own adapters
(EcsComputePool, DockerNodeRuntime, the node bootstrap UserData).

Phases of one run: ``api`` RunInstances answered; ``vm boot`` the VM's own boot before the guest runs,
modelled (not slept: added as a constant); ``os boot`` the node's systemd up (the emulator's machine);
``bootstrap`` cloud-init until the node's Docker API answers over mutual TLS (a stock node installs Docker
from the region's mirror first; a baked one has it, and its Docker data comes from the image's snapshot
before the machine starts); ``pull`` the workload image (none on a baked node); ``start`` creating and starting
the replica; ``serve`` until it answers HTTP 200. The controller's own detection delay (its metric window and
``sustained_out``) comes before the trigger and is the same for every kind of node, so it is left out.

Modelled VM times (override the first with --vm-boot): a new pay-as-you-go ECS instance of a public Linux
image is taken to spend 40 s between RunInstances and its guest's kernel starting, and a stopped one 20 s
between StartInstances and the same point (the warm case, once there is one to measure). These are assumptions of the order of magnitude
Alibaba Cloud documents for instance creation and start-up ("How long does it take to create an ECS
instance?", https://www.alibabacloud.com/help/en/elastic-compute-service/latest/instance-faq, and the
instance lifecycle, https://www.alibabacloud.com/help/en/ecs/user-guide/instance-lifecycle); they shift the
stock and baked totals alike and leave the phases measured here as measured.
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
WARM_SKIPPED = ("the controller has no warm pool yet (issue 15 item 1: stopped nodes started again); "
                "warm_s is null")


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


def one_run(lab: Lab, baker: Any, policy: Any, workload: Any, image_id: str, vm_boot: float, n: int) -> dict[str, float]:
    compute, runtime = baker.compute, baker.runtime
    spec = launch_spec(policy, lab.controller_id, f"bench{n}", f"bench-{image_id}-{n}",
                       baker.edges.user_data(policy, f"bench{n}"))
    spec = dataclasses.replace(spec, image_id=image_id)
    t0 = time.time()
    [inst] = compute.launch(spec, 1, f"bench-{image_id}-{n}-{int(t0)}")
    t_api = time.time()
    try:
        def engine() -> Node | None:
            [now] = compute.get([inst.id])
            if now.state.value != "running" or not now.private_ip:
                return None
            node = Node(now.id, now.private_ip, f"tcp://{now.private_ip}:2376")
            runtime.ping(node)
            return node

        node = wait(f"{inst.id}: Docker API", engine, 600, 0.25)
        t_engine = time.time()
        up = lab.machine_up(inst.id) or t_engine
        container = runtime.start(node, workload, f"bench-{n}", {LABEL_CONTROLLER: lab.controller_id})
        t_started = time.time()
        wait("serving", lambda: httpx.get(f"http://{node.address}:{container.port}/", timeout=2).status_code == 200,
             120, 0.1)
        t_serving = time.time()
    finally:
        compute.release([inst.id])
    pull = container.pull_seconds or 0.0
    return {"api": t_api - t0, "vm boot": vm_boot, "os boot": max(0.0, up - t_api),
            "bootstrap": max(0.0, t_engine - up), "pull": pull, "start": max(0.0, t_started - t_engine - pull),
            "serve": t_serving - t_started}


def median_phases(runs: list[dict[str, float]]) -> dict[str, float]:
    out = {p: statistics.median(r[p] for r in runs) for p in PHASES}
    out["total"] = statistics.median(sum(r[p] for p in PHASES) for r in runs)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--layer-mb", type=int, default=66, help="MB of random data per COPY layer (3 layers)")
    ap.add_argument("--vm-boot", type=float, default=40.0, help="modelled seconds of a new VM's own boot")
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
        baker.images.delete_image(baked.image_id)
    finally:
        if close is not None:
            close()
        lab.stop()
        client.close()
    say(f"warm: skipped: {WARM_SKIPPED}")
    say("\nmedian seconds per phase (trigger -> first replica serving)")
    say(f"{'phase':<10}" + "".join(f"{k:>12}" for k in results))
    for phase in (*PHASES, "total"):
        say(f"{phase:<10}" + "".join(f"{results[k][phase]:>12.1f}" for k in results))
    stock, baked_s = results["cold_stock"]["total"], results["cold_baked"]["total"]
    say(f"cold baked / cold stock: {baked_s / stock:.2f} (modelled VM boot {args.vm_boot:.0f}s included in both)")
    summary = {"cold_stock_s": round(stock, 1), "cold_baked_s": round(baked_s, 1), "warm_s": None,
               "warm_skipped": WARM_SKIPPED, "runs": args.runs, "image_mb": round(size), "image_layers": layers,
               "vm_boot_s": args.vm_boot,
               "phases": {k: {p: round(v, 2) for p, v in r.items()} for k, r in results.items()}}
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
