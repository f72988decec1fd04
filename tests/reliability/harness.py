"""What the reliability tests check and how much they try: the invariants of a controller run against the
lab (lab/lab.py), read from the outside world (the ECS emulator's instances, ever launched ones
included; HAProxy's servers; the Docker Engine's containers) and from the journal (the state database,
opened read-only), a spend/max monitor, seeded counts (CI small, ``bench/reliability.py`` full) and the
results file the bench script turns into the table of docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from controller.ports import LABEL_REPLICA, TAG_CONTROLLER, TAG_INTENT
from lab.lab import Lab, LabSettings

__all__ = ["Invariants", "Journal", "SpendMonitor", "count", "record", "reliability_settings", "seed", "wait_for"]

LEAVING = ("draining", "stopping", "releasing")
PRICE = 0.62  # the lab policy's price of ecs.c6.large
CAP = 1.3  # CNY/h: two replicas fit (1.24), a third (1.86) would exceed the cap
MAX = 3  # replicas.max: the budget, not the maximum, is what binds


def count(name: str, ci: int) -> int:
    """How many of something to try: ``RELIABILITY_<NAME>`` (set by bench/reliability.py) or the CI count."""
    return int(os.environ.get(f"RELIABILITY_{name.upper()}", ci))


def seed() -> int:
    return int(os.environ.get("RELIABILITY_SEED", "20240607"))


def record(part: str, **figures: Any) -> None:
    """Append one result line for the bench table (no-op unless RELIABILITY_REPORT names a file)."""
    path = os.environ.get("RELIABILITY_REPORT")
    line = json.dumps({"part": part, **figures}, sort_keys=True, default=str)
    print(f"reliability: {line}")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def wait_for(what: str, until: Callable[[], bool], timeout: float, every: float = 0.1) -> float:
    """Poll ``until``; returns the seconds it took, raises AssertionError naming ``what`` after ``timeout``."""
    t0 = time.monotonic()
    while True:
        if until():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def reliability_settings(reconcile: str = "2s", **kw: Any) -> LabSettings:
    """The lab tuned for quick cycles; the policy is given the CAP/MAX above by ``reliability_policy``.
    Shared-engine nodes: these suites launch hundreds of instances (50 SIGKILLs through burst and drain, fault
    storms) to test the journal, reconcile and the cloud adapter, which are the same whatever a node is; a
    booted machine per launch would take the suite past the CI budget. The bursts through booted nodes are the
    lab end-to-end tests (tests/controller/test_e2e*.py, test_ha_pair.py, test_dashboard_e2e.py, the demo)."""
    kw.setdefault("nodes", "shared-engine")
    s = LabSettings(boot_delay=1.0, max_replicas=MAX, orphan_grace="10s", **kw)
    s.intervals = {**s.intervals, "reconcile": reconcile}
    return s


def reliability_policy(lab: Lab, **changes: str) -> str:
    """The lab policy with a budget that binds before replicas.max: spend-cap violations are visible."""
    return lab.policy_yaml(**{"max_per_hour: 5.0": f"max_per_hour: {CAP}", **changes})


class Journal:
    """The controller's state database, read-only (sqlite3 ``mode=ro``: no migration, no write lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _rows(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
        try:
            conn.row_factory = sqlite3.Row
            return list(conn.execute(sql, args))
        finally:
            conn.close()

    def live_instances(self) -> set[str]:
        return {r["id"] for r in self._rows("SELECT id FROM instances WHERE released_at IS NULL")}

    def replicas(self, states: tuple[str, ...] | None = None) -> list[sqlite3.Row]:
        rows = self._rows("SELECT * FROM replicas")
        return [r for r in rows if states is None or r["state"] in states]

    def live_replicas(self) -> list[sqlite3.Row]:
        return [r for r in self.replicas() if r["state"] != "gone"]

    def intents(self, kind: str | None = None) -> dict[str, sqlite3.Row]:
        rows = self._rows("SELECT * FROM intents") if kind is None else \
            self._rows("SELECT * FROM intents WHERE kind = ?", kind)
        return {r["id"]: r for r in rows}

    def tables(self) -> list[str]:
        return [r[0] for r in self._rows("SELECT name FROM sqlite_master WHERE type='table'")]

    def dump(self) -> str:
        """Every row of every table, as text (for the secret search)."""
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
        try:
            return "\n".join(conn.iterdump())
        finally:
            conn.close()


def ours(lab: Lab, inst: dict[str, Any]) -> bool:
    return inst.get("tags", {}).get(TAG_CONTROLLER) == lab.controller_id


def all_launched(lab: Lab) -> list[dict[str, Any]]:
    """Every instance the emulator ever created for this controller, released ones included."""
    assert lab.emulator is not None
    with lab.emulator.state.lock:
        recs = list(lab.emulator.state.instances.values())
    return [{"id": r.id, "tags": dict(r.tags), "deleted": r.deleted_at is not None, "created_at": r.created_at,
             "type": r.instance_type} for r in recs if r.tags.get(TAG_CONTROLLER) == lab.controller_id]


@dataclass
class SpendMonitor:
    """Samples the emulator every 50 ms: the most instances and the highest hourly spend ever live at once."""

    lab: Lab
    prices: dict[str, float] = field(default_factory=lambda: {"ecs.c6.large": PRICE})
    max_live: int = 0
    max_spend: float = 0.0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._run, name="spend-monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        worst = max(self.prices.values())
        while not self._stop.wait(0.05):
            live = [i for i in self.lab.live_instances() if ours(self.lab, i)]
            spend = sum(self.prices.get(i["instance_type"], worst) for i in live)
            self.max_live = max(self.max_live, len(live))
            self.max_spend = max(self.max_spend, spend)
            self.samples += 1


class Invariants:
    """The crash-consistency checks, each returning a list of violations (empty: it holds)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.journal = Journal(lab.root / "state.db")

    def unknown_instances(self) -> list[str]:
        """Live instances with our tag that the journal does not record (a launch in flight for under 2 s,
        whose intent is pending, is known: its outcome is being written)."""
        known = self.journal.live_instances()
        pending = {i for i, row in self.journal.intents("launch").items() if row["state"] == "pending"}
        now = time.time()
        out = []
        for inst in self.lab.live_instances():
            if not ours(self.lab, inst) or inst["id"] in known:
                continue
            if inst["tags"].get(TAG_INTENT) in pending and now - inst["created_at"] < 2.0:
                continue
            out.append(inst["id"])
        return out

    def duplicate_launches(self) -> list[str]:
        """Intents or replicas that got more than one instance, ever; instances with no launch intent."""
        launched = all_launched(self.lab)
        intents = self.journal.intents("launch")
        by_intent = Counter(i["tags"].get(TAG_INTENT) for i in launched)
        by_replica: defaultdict[str, list[str]] = defaultdict(list)
        problems = [f"intent {k} launched {n} instances" for k, n in by_intent.items() if n > 1]
        for inst in launched:
            row = intents.get(inst["tags"].get(TAG_INTENT, ""))
            if row is None:
                problems.append(f"{inst['id']} has no launch intent in the journal")
            else:
                by_replica[row["replica_id"]].append(inst["id"])
        problems += [f"replica {r} has instances {ids}" for r, ids in by_replica.items() if len(ids) > 1]
        return problems

    def running_replicas(self) -> set[str]:
        """Replica ids of our running containers (the low-level list: no inspect of each container, which
        races with the controller removing one; see DAEMON-NOTES, RELIABILITY -> LOOP)."""
        return {c["Labels"].get(LABEL_REPLICA) for c in self.lab.replica_rows(running_only=True)}

    def stray_backends(self) -> list[str]:
        """Our HAProxy servers without a running container of their replica behind them."""
        running = self.running_replicas()
        prefix = f"{self.lab.controller_id}-{self.lab.policy_name}-"
        return [s for s in self.lab.cloud_servers() if s[len(prefix):] not in running]

    def gone(self, replica_ids: set[str]) -> list[str]:
        """Which of these replicas are not gone yet (for the interrupted drains)."""
        states = {r["id"]: r["state"] for r in self.journal.replicas()}
        return [f"{rid}:{states.get(rid)}" for rid in replica_ids if states.get(rid) != "gone"]

    def leaks(self) -> list[str]:
        """After a full drain: anything of ours still alive anywhere."""
        out = [f"instance {i['id']}" for i in self.lab.live_instances() if ours(self.lab, i)]
        out += [f"server {s}" for s in self.lab.cloud_servers()]
        out += [f"container {c['Names']}" for c in self.lab.replica_rows()]
        out += [f"replica {r['id']}:{r['state']}" for r in self.journal.live_replicas()]
        return out


def rng_for(part: str) -> random.Random:
    return random.Random(f"{seed()}:{part}")
