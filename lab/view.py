"""The live terminal view of `burstctl demo` (rich Live): load, the controller's replicas by state with
their instances and addresses, HAProxy's servers, and the latest events. Called by controller/cli/demo.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from lab.lab import Lab
from lab.loadgen import LoadGenerator

__all__ = ["run_live"]


def _render(lab: Lab, service: Any, load: LoadGenerator, phase: str, cycle: int, results: list[Any]) -> Group:
    stats = load.snapshot()
    prefix = f"{lab.controller_id}-"
    head = Table.grid(padding=(0, 2))
    head.add_row(f"[bold]cycle {cycle}[/] {phase}", f"clients {load.clients}",
                 f"requests {stats.ok} ok / [red]{stats.failed} failed[/]",
                 f"on-prem {stats.by_server.get('onprem', 0)}", f"cloud {stats.served_by_prefix(prefix)}")
    runtime = service.daemon.runtimes.get(lab.policy_name)
    obs = runtime.last_observation if runtime else None
    decision = service.store.last_decision(lab.policy_name)
    head.add_row(f"metric (HAProxy sessions): {obs.value if obs and obs.value is not None else '-'}",
                 f"decision: {decision.direction if decision else '-'} {decision.desired if decision else ''}",
                 (decision.reason[:70] if decision else ""), "", "")
    replicas = Table(title="cloud replicas", expand=True)
    for col in ("replica", "state", "instance", "address", "age"):
        replicas.add_column(col)
    now = time.time()
    for r in service.store.live_replicas(lab.policy_name):
        replicas.add_row(r.id, r.state, r.instance_id or "-", f"{r.address}:{r.port}" if r.port else (r.address or "-"),
                         f"{now - r.created_at:.0f}s")
    events = Table(title="events", expand=True, show_header=False)
    events.add_column("at", width=8)
    events.add_column("kind", width=14)
    events.add_column("message")
    for e in service.store.events(limit=8)[0]:
        events.add_row(time.strftime("%H:%M:%S", time.localtime(e.at)), e.kind, e.message[:110])
    done = Table.grid()
    for res in results[-3:]:
        done.add_row(res.line())
    return Group(Panel(head, title="burst-controller demo (Ctrl-C to stop)"), replicas, events, done)


def run_live(lab: Lab, service: Any, load: LoadGenerator, *, cycles: int, hold: float, cycle: Callable[..., Any]) -> int:
    results: list[Any] = []
    state: dict[str, Any] = {"phase": "starting", "cycle": 1}
    with Live(_render(lab, service, load, state["phase"], 1, results), refresh_per_second=4,
              screen=False, transient=False) as live:
        def tick() -> None:
            live.update(_render(lab, service, load, state["phase"], state["cycle"], results))

        def phase(text: str) -> None:
            state["phase"] = text
            tick()

        n = 0
        while cycles == 0 or n < cycles:
            n += 1
            state["cycle"] = n
            results.append(cycle(lab, service, load, hold=hold, tick=tick, phase=phase))
            end = time.monotonic() + 3
            while time.monotonic() < end:
                tick()
                time.sleep(0.25)
    return 0 if results and all(r.ok for r in results) else 1
