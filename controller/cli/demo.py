"""`burstctl demo`: the whole product on one machine, no cloud account. Starts the lab (lab/lab.py:
ECS emulator, two registries, HAProxy, an on-prem busybox workload), runs the controller in-process, drives
load at HAProxy and shows live the controller replicating the image, launching emulated instances that run
real containers, admitting them to HAProxy and draining them when the load stops. `--once` runs one cycle
unattended and prints a one-line summary; it exits 0 only if cloud replicas served traffic, no request
failed and everything drained back to zero. Everything started is removed on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controller.cli.run import ControllerService
from controller.config import load_config
from lab.lab import Lab, LabSettings
from lab.loadgen import LoadGenerator
from lab.parts import BAKED_IMAGE, STOCK_IMAGE

__all__ = ["CycleResult", "add_parser", "burst_cycle"]

logger = logging.getLogger(__name__)

HIGH_CLIENTS = 16
LOW_CLIENTS = 1


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="burst to emulated cloud instances and back, live, on this machine",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--once", action="store_true", help="one unattended burst-and-drain cycle; print a summary line")
    p.add_argument("--cycles", type=int, default=0, help="cycles to run live (default: until Ctrl-C)")
    p.add_argument("--boot-delay", type=float, default=2.0,
                   help="the emulated VM's own boot before its machine starts, seconds (default 2)")
    p.add_argument("--image", default=STOCK_IMAGE,
                   help=f"the node image: {STOCK_IMAGE} (stock: the bootstrap installs Docker, the default) or "
                   f"{BAKED_IMAGE} (Docker baked in)")
    p.add_argument("--hold", type=float, default=8.0, help="seconds of peak load after the first cloud replica serves")
    p.set_defaults(func=_demo)


@dataclass
class CycleResult:
    launched: int = 0
    cloud_requests: int = 0
    total_requests: int = 0
    failed: int = 0
    to_first_serving: float | None = None
    to_drained: float | None = None
    drained: bool = False
    error: str | None = None
    phases: list[tuple[str, float]] = field(default_factory=list)  # trigger -> first replica serving

    @property
    def ok(self) -> bool:
        return self.cloud_requests > 0 and self.failed == 0 and self.drained and self.error is None

    def line(self) -> str:
        first = f"{self.to_first_serving:.1f}s" if self.to_first_serving is not None else "never"
        drain = f"{self.to_drained:.1f}s" if self.to_drained is not None else "never"
        verdict = "OK" if self.ok else f"FAILED{': ' + self.error if self.error else ''}"
        phases = f" ({', '.join(f'{name} {secs:.1f}s' for name, secs in self.phases)})" if self.phases else ""
        return (f"demo: replicas launched {self.launched}, requests served by cloud replicas {self.cloud_requests} "
                f"of {self.total_requests}, failed requests {self.failed}, trigger to first cloud replica serving "
                f"{first}{phases}, load stop to drained {drain}: {verdict}")


# trigger -> serving, phase by phase, for the first replica admitted after the trigger
PHASES = (
    ("decide", "the scale-out decision"),
    ("launch", "image replicated and RunInstances answered"),
    ("boot", "the machine boots (the VM's modelled boot, then systemd)"),
    ("bootstrap", "cloud-init: Docker installed unless baked, its mutual-TLS endpoint answering"),
    ("pull", "the node pulls the image from the cloud registry"),
    ("start", "the container created and started"),
    ("admit", "health checks pass, admitted to the load balancer"),
)


def serving_phases(store: Any, since: float, machine_up: Callable[[str], float | None]) -> list[tuple[str, float]]:
    """Seconds of each of ``PHASES`` for the first replica admitted after ``since`` (wall clock), from the
    journal's events and, for ``boot``, when the emulator saw the machine's systemd up."""
    rows, _ = store.events_after(cursor=None, limit=500)
    rows = [r for r in rows if r.at >= since]
    detail = {r.id: json.loads(r.details) if r.details else {} for r in rows}
    admit = next((r for r in rows if r.kind == "admit"), None)
    decide = next((r for r in rows if r.kind == "scale-out"), None)
    if admit is None or decide is None:
        return []
    rid = detail[admit.id].get("replica")
    of = {r.kind: r for r in rows if detail[r.id].get("replica") == rid and r.kind in ("launch", "node-ready", "start")}
    if len(of) < 3:
        return []
    launch, ready, start = of["launch"], of["node-ready"], of["start"]
    up = machine_up(str(detail[ready.id].get("instance", ""))) or ready.at
    pull = float(detail[start.id].get("pull_s") or 0.0)
    marks = [since, decide.at, launch.at, up, ready.at]
    out = [(name, max(0.0, b - a)) for (name, _), a, b in zip(PHASES, marks, marks[1:], strict=False)]
    out += [("pull", pull), ("start", max(0.0, start.at - ready.at - pull)), ("admit", max(0.0, admit.at - start.at))]
    return out


def _wait(until: Callable[[], bool], timeout: float, tick: Callable[[], None]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tick()
        if until():
            return True
        time.sleep(0.25)
    return False


def burst_cycle(lab: Lab, service: ControllerService | None, load: LoadGenerator, *, hold: float = 8.0,
                tick: Callable[[], None] = lambda: None, phase: Callable[[str], None] = lambda s: None,
                timeout: float = 600.0) -> CycleResult:
    """One burst and drain against a running controller (in-process ``service`` or a separate process)."""
    prefix = f"{lab.controller_id}-"
    result = CycleResult()
    before = load.snapshot()
    launched_before = {i["InstanceId"] if "InstanceId" in i else i.get("id") for i in lab.live_instances()}
    seen_instances: set[str] = set()

    def track() -> None:
        for inst in lab.live_instances():
            iid = inst.get("InstanceId") or inst.get("id")
            if iid and iid not in launched_before:
                seen_instances.add(str(iid))
        tick()

    phase("baseline load")
    load.set_clients(LOW_CLIENTS)
    _wait(lambda: False, 2.0, track)
    phase(f"peak: {HIGH_CLIENTS} clients")
    t0, t0_wall = time.monotonic(), time.time()
    load.set_clients(HIGH_CLIENTS)
    cloud_first = lambda: min((t for s, t in load.first_seen.items() if s.startswith(prefix) and t >= t0),
                              default=None)
    if not _wait(lambda: cloud_first() is not None, timeout, track):
        result.error = f"no cloud replica served within {timeout:.0f}s"
    else:
        result.to_first_serving = (cloud_first() or t0) - t0
        if service is not None:
            result.phases = serving_phases(service.store, t0_wall, lab.machine_up)
        phase("peak: cloud replicas serving")
        _wait(lambda: False, hold, track)
    phase("load back to baseline: draining")
    t1 = time.monotonic()
    load.set_clients(LOW_CLIENTS)

    def drained() -> bool:
        live = service.store.live_replicas() if service is not None else []
        return not live and not lab.live_instances() and not lab.cloud_servers() and not lab.cloud_containers()

    if _wait(drained, timeout, track):
        result.drained, result.to_drained = True, time.monotonic() - t1
    elif result.error is None:
        result.error = f"not drained within {timeout:.0f}s"
    _wait(lambda: False, 1.0, track)  # a little baseline after the drain: the on-prem server still answers
    load.set_clients(0)
    after = load.snapshot()
    result.launched = len(seen_instances)
    result.cloud_requests = after.served_by_prefix(prefix) - before.served_by_prefix(prefix)
    result.total_requests = after.ok + after.failed - before.ok - before.failed
    result.failed = after.failed - before.failed
    phase("idle")
    return result


def _demo(args: argparse.Namespace) -> int:
    if args.once:
        logging.getLogger().setLevel(logging.WARNING)
    lab = Lab(settings=LabSettings(boot_delay=args.boot_delay, node_image=args.image))
    service: ControllerService | None = None
    load: LoadGenerator | None = None

    def interrupted(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    # SIGTERM (kill, a CI time-out) and SIGHUP (the terminal closed) clean up like Ctrl-C: HAProxy, the
    # registries and the emulator run in sessions of their own and would outlive an unhandled signal
    previous = {sig: signal.signal(sig, interrupted) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        lab.start(progress=(lambda m: print(f"demo: {m}", file=sys.stderr)) if args.once else None)
        cfg = load_config(lab.config_path)
        from controller.wiring import build_edges

        service = ControllerService(cfg, edges=build_edges(cfg, credentials=lab.credentials()))
        service.start()
        load = LoadGenerator(lab.url)
        if args.once:
            result = burst_cycle(lab, service, load, hold=args.hold,
                                 phase=lambda s: print(f"demo: {s}", file=sys.stderr))
            print(result.line())
            return 0 if result.ok else 1
        from lab.view import run_live

        return run_live(lab, service, load, cycles=args.cycles, hold=args.hold, cycle=burst_cycle)
    except KeyboardInterrupt:
        print("demo: interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        for sig in previous:  # a second signal must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        try:
            # each step on its own: whatever fails, the lab (processes in sessions of their own) is removed
            for what, step in (("load generator", load.stop if load is not None else None),
                               ("controller", service.shutdown if service is not None else None),
                               ("lab", lab.stop)):
                if step is None:
                    continue
                try:
                    step()
                except Exception as exc:  # noqa: BLE001 (reported, and the clean-up goes on)
                    print(f"demo: clean-up of the {what} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
