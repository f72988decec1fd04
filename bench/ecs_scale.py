"""Benchmark: EcsComputePool at scale against the ECS emulator, through the real SDK.

Launches 1,000 instances, grows to 5,000, lists all 5,000 by ownership tags and releases them; prints the
API calls per Action (the emulator's counter) and wall time of each step, next to a reference: the same
listing done by a bare SDK loop with the largest page (the fewest calls possible).
Targets: 1,000 launches in at most 10 RunInstances calls; listing 5,000 in at most 50 DescribeInstances.

    .venv/bin/python bench/ecs_scale.py [--launch 1000] [--total 5000]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aliyunsdkcore.client import AcsClient
from aliyunsdkecs.request.v20140526.DescribeInstancesRequest import DescribeInstancesRequest

from adapters.aliyun.credentials import CloudCredentials, StaticCredentials
from adapters.aliyun.ecs import EcsComputePool, EcsPoolSettings
from adapters.aliyun.ecs_api import EcsApiSettings
from controller.ports import TAG_CONTROLLER, TAG_POLICY, LaunchSpec, Owner
from lab.emulator.ecs import EcsEmulator
from lab.emulator.ecs_records import EcsConfig

REGION = "cn-bench"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--launch", type=int, default=1000)
    ap.add_argument("--total", type=int, default=5000)
    args = ap.parse_args()

    emu = EcsEmulator(access_keys={"bench": "bench-secret"},
                      config=EcsConfig(boot_delay=0, address_pool="127.16.0.0/16"))
    emu.start()
    api = EcsApiSettings(region=REGION, credentials=StaticCredentials(CloudCredentials("bench", "bench-secret")),
                         endpoint=emu.url, rng=random.Random(1))
    pool = EcsComputePool(EcsPoolSettings(api=api, docker_endpoint_template=emu.docker_endpoint))
    spec = LaunchSpec(region=REGION, instance_types=("ecs.g7.large", "ecs.c7.large"), zones=(f"{REGION}-a",),
                      image_id="img-bench", security_group_id="sg-bench", user_data="#cloud-config\n",
                      tags={TAG_CONTROLLER: "bench", TAG_POLICY: "web"})
    rows: list[tuple[str, float, dict[str, int]]] = []

    def step(name: str, fn):  # type: ignore[no-untyped-def]
        emu.server.reset_calls()
        started = time.perf_counter()
        result = fn()
        rows.append((name, time.perf_counter() - started, emu.calls()))
        return result

    try:
        first = step(f"launch {args.launch}", lambda: pool.launch(spec, args.launch, "bench-intent-1"))
        rest = args.total - args.launch
        more = step(f"launch {rest} more", lambda: pool.launch(spec, rest, "bench-intent-2")) if rest > 0 else []
        replay = step(f"replay launch {args.launch}", lambda: pool.launch(spec, args.launch, "bench-intent-1"))
        listed = step(f"list {args.total}", lambda: pool.list(Owner("bench", "web")))
        step(f"reference: bare SDK list {args.total}", lambda: _bare_list(emu))
        step(f"release {args.total}", lambda: pool.release([i.id for i in listed]))
        leaks = len(emu.live_instances())
    finally:
        pool.close()
        emu.stop()

    print(f"{'step':<34} {'wall s':>8}  API calls")
    for name, seconds, calls in rows:
        print(f"{name:<34} {seconds:>8.2f}  {json.dumps(calls, sort_keys=True)}")
    launch_calls = rows[0][2].get("RunInstances", 0)
    list_calls = rows[3][2].get("DescribeInstances", 0)
    reference_calls = rows[4][2].get("DescribeInstances", 0)
    print()
    print(f"instances: launched {len(first) + len(more)}, replay returned the same {args.launch}: "
          f"{sorted(i.id for i in replay) == sorted(i.id for i in first)}, listed {len(listed)}, left after "
          f"release {leaks}")
    print(f"RunInstances for {args.launch}: {launch_calls} (target <= {-(-args.launch // 100)})")
    print(f"DescribeInstances to list {args.total}: {list_calls} (target <= {-(-args.total // 100)}; "
          f"bare SDK reference {reference_calls}); list wall time vs reference: {rows[3][1] / rows[4][1]:.2f}x")
    ok = (launch_calls <= -(-args.launch // 100) and list_calls <= -(-args.total // 100)
          and len(listed) == args.total and leaks == 0)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def _bare_list(emu: EcsEmulator) -> int:
    client = AcsClient("bench", "bench-secret", REGION, auto_retry=False, proxy={"http": None, "https": None})
    client.add_endpoint(REGION, "Ecs", emu.endpoint)
    seen, page = 0, 1
    while True:
        req = DescribeInstancesRequest()
        req.set_PageSize(100)
        req.set_PageNumber(page)
        got = json.loads(client.do_action_with_exception(req))["Instances"]["Instance"]
        if not got:
            return seen
        seen += len(got)
        page += 1


if __name__ == "__main__":
    sys.exit(main())
