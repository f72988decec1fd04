"""The daemon on fakes, in real time with short intervals: per-policy jobs (a hung policy never stalls
another), the StatusSource answers, operator pause/resume/drain, a policy removed while it had replicas is
drained even across a restart."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from controller.daemon import Daemon
from controller.errors import NotFoundError
from controller.loop.edges import LoopOptions
from controller.status.models import ControllerStatus
from controller.store.state import StateStore, sqlite_url
from policies.types import Decision, Direction, Fleet, Observation
from tests.controller.fakes import FakeMetrics, World, policy_dict

OPTIONS = LoopOptions(controller_id="dc1", sample_interval=0.1, evaluate_interval=0.2, step_interval=0.1,
                      reconcile_interval=0.5, replicate_interval=60, gc_interval=0.3, reload_interval=0.2,
                      boot_timeout=30, start_timeout=30, orphan_grace=60)


class HangingMetrics(FakeMetrics):
    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def query(self, window: float) -> Observation:
        self.release.wait(30)
        return super().query(window)


def write_policy(d: Path, name: str) -> None:
    data = policy_dict(name)
    data["workload"]["health"] = {"path": "/", "interval": "0.1s", "timeout": "0.05s", "passes": 1, "failures": 2}
    data["cooldown"] = {"scale_out": "0s", "scale_in": "0s"}
    with (d / f"{name}.yaml").open("w") as fh:
        YAML().dump(data, fh)


def wait_for(what: str, until: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if until():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Harness:
    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / "policies"
        self.dir.mkdir()
        self.url = sqlite_url(tmp / "state.db")
        self.world = World(time.time)
        self.world.compute.boot_delay = 0.0
        self.metrics: dict[str, FakeMetrics] = {}
        self.world.edges.metrics = lambda p: self.metrics.setdefault(p.name, FakeMetrics())
        self.want: dict[str, int] = {}
        self.daemons: list[Daemon] = []

    def decide(self, policy: object, obs: Observation, fleet: Fleet, now: float) -> Decision:
        n = self.want.get(policy.name, 0)  # type: ignore[attr-defined]
        return Decision(n, Direction.OUT if n > fleet.active else Direction.IN if n < fleet.active else Direction.HOLD,
                        f"wants {n}")

    def daemon(self) -> Daemon:
        d = Daemon(options=OPTIONS, store=StateStore(self.url), edges=self.world.edges, policies_dir=self.dir,
                   decide=self.decide)
        d.start()
        self.daemons.append(d)
        return d

    def serving(self, d: Daemon, name: str) -> int:
        return d.replica_counts(name).get("serving", 0)

    def close(self) -> None:
        for m in self.metrics.values():
            if isinstance(m, HangingMetrics):
                m.release.set()
        for d in self.daemons:
            if d.scheduler.running:
                d.stop(timeout=10)
            d.store.close()


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.close()


def test_a_hung_policy_never_stalls_another(h: Harness) -> None:
    write_policy(h.dir, "web")
    write_policy(h.dir, "slow")
    h.metrics["slow"] = HangingMetrics()
    h.want.update(web=2, slow=1)
    d = h.daemon()
    wait_for("web serving 2", lambda: h.serving(d, "web") == 2)
    # slow's sampler hangs, but its tick still runs on what it has: it holds (no data) and never scales in
    assert d.status().policies[0].name == "slow"


def test_status_source_answers_and_operator_actions(h: Harness) -> None:
    write_policy(h.dir, "web")
    h.want["web"] = 1
    d = h.daemon()
    wait_for("one serving", lambda: h.serving(d, "web") == 1)
    st = d.status()
    assert isinstance(st, ControllerStatus) and st.controller_id == "dc1" and st.ready
    [web] = st.policies
    assert web.replicas == {"serving": 1} and len(web.instances) == 1 and web.instances[0].state == "serving"
    assert web.metric is not None and web.metric.ok and web.decision is not None
    assert web.budget_per_hour == 10.0 and abs(web.spend_per_hour - 0.62) < 1e-9
    assert d.history("web", 0, 100)
    page = d.events(cursor=None, limit=100, policy="web")
    assert any(e.kind == "admit" for e in page.events)
    with pytest.raises(NotFoundError):
        d.pause("nope")

    d.pause("web")
    h.want["web"] = 2
    time.sleep(1.0)
    assert d.replica_counts("web") == {"serving": 1} and d.status().policies[0].paused

    d.drain("web")
    wait_for("drained", lambda: d.replica_counts("web") == {})
    assert d.status().policies[0].draining
    d.resume("web")
    wait_for("back to 2", lambda: h.serving(d, "web") == 2)


def test_a_removed_policy_is_drained_even_across_a_restart(h: Harness) -> None:
    write_policy(h.dir, "web")
    h.want["web"] = 1
    d = h.daemon()
    wait_for("one serving", lambda: h.serving(d, "web") == 1)
    d.stop()
    (h.dir / "web.yaml").unlink()
    h.world.lb.sessions_of = {s.name: 5 for s in h.world.lb.list("web")}  # hold the drain open for a bit
    d2 = h.daemon()
    assert d2.runtimes["web"].removed
    wait_for("draining", lambda: d2.replica_counts("web").get("draining") == 1)
    h.world.lb.sessions_of = {}
    wait_for("drained", lambda: d2.replica_counts("web") == {})
    assert h.world.compute.instances == {}
    wait_for("forgotten", lambda: "web" not in d2.runtimes)


def test_a_busy_state_store_holds_the_job_and_shows_in_readiness(h: Harness) -> None:
    import sqlite3

    write_policy(h.dir, "web")
    h.want["web"] = 1
    d = h.daemon()
    assert d.ready() == (True, "")
    d.scheduler.pause()  # drive the job by hand from here
    # the rounds in flight (one dispatched just before the pause starts a moment later), and the policy's
    # steps they left running in the background, finish first: a policy whose steps still run sits the next
    # round out, and would not touch the locked store
    def idle() -> bool:
        return not d._running and all(f.done() for f in [*d.rounds._stepping.values(),
                                                         *d.rounds._sampling.values()])

    for _ in range(2):
        wait_for("the rounds' work done", idle)
        time.sleep(0.3)
    busy = StateStore(h.url, busy_timeout=0.1)
    d.store.close()
    d.store = d.runtimes["web"].store = d.reconciler.store = d.rounds.store = busy
    lock = sqlite3.connect(h.url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        d._guard("step", lambda: d.step_round(force_evaluate=True, timeout=None))  # held, not raised
        ok, why = d.ready()
        assert not ok and "state store" in why
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    d._guard("step", lambda: d.step_round(force_evaluate=True, timeout=None))  # resumes once the lock is gone
    assert len(busy.live_replicas("web")) == 1


def test_docker_unhealthy_takes_a_serving_replica_out_in_the_daemons_rounds(h: Harness) -> None:
    """The daemon probes serving replicas in batched rounds (controller/loop/rounds.py); with a HEALTHCHECK in
    the workload, a container Docker reports unhealthy fails those checks although HTTP answers."""
    write_policy(h.dir, "web")
    h.world.workloads.healthcheck = {"Test": ["CMD", "true"]}
    h.want["web"] = 1
    d = h.daemon()
    time.sleep(1.0)
    assert h.serving(d, "web") == 0  # Docker says "starting": not admitted though HTTP passes
    h.world.runtime.set_health("healthy")
    wait_for("web serving", lambda: h.serving(d, "web") == 1)
    h.world.runtime.set_health("unhealthy")
    wait_for("the unhealthy replica replaced", lambda: any(
        "health check failures" in (r.failure or "") for r in d.store.replicas("web")))


def test_wait_between_steps_returns_in_a_gap_of_the_loop(h: Harness) -> None:
    """The status snapshot's gate (controller/status/process.py): on return no step round runs and the next
    is at least ``room`` away. Sampled at 25 points of the loop's 0.2 s period, a gate that returned at once
    would be inside a round or within the room about half the time."""
    import random
    from datetime import UTC, datetime

    write_policy(h.dir, "web")
    h.want["web"] = 1
    d = h.daemon()
    wait_for("a serving replica", lambda: h.serving(d, "web") == 1)
    rng = random.Random(7)
    room = 0.08
    for _ in range(25):
        time.sleep(rng.uniform(0.0, 0.2))
        d.wait_between_steps(room, max_wait=2.0)
        job = d.scheduler.get_job("step")
        until = (job.next_run_time - datetime.now(UTC)).total_seconds()
        assert "step" not in d._running
        assert until >= room - 0.03, f"returned {until * 1000:.0f} ms before the next step round"


def test_wait_between_steps_gives_up_after_max_wait(h: Harness) -> None:
    """A room the loop never leaves (longer than its period) costs the caller ``max_wait``, not forever."""
    write_policy(h.dir, "web")
    d = h.daemon()
    t0 = time.monotonic()
    d.wait_between_steps(room=5.0, max_wait=0.3)
    took = time.monotonic() - t0
    assert 0.29 <= took < 2.0, took


def test_the_ha_pair_waits_for_its_active_daemons_gap_and_a_standby_does_not(h: Harness) -> None:
    """``HaDaemon.wait_between_steps`` goes to the running daemon while the lease is held (a room its loop
    never leaves costs ``max_wait``); as a standby there is no loop to wait for (it returns at once)."""
    from controller.ha.pair import HaDaemon

    class Lease:  # the lease's one question, answered by the test (the real lease: test_leader.py)
        held = True

        def holds(self) -> bool:
            return self.held

    write_policy(h.dir, "web")
    d = h.daemon()
    lease = Lease()
    ha = HaDaemon(leadership=lease, store=d.store, make_daemon=lambda: d, controller_id="dc1")  # type: ignore[arg-type]
    ha.daemon = d
    t0 = time.monotonic()
    ha.wait_between_steps(room=5.0, max_wait=0.3)
    assert time.monotonic() - t0 >= 0.29
    lease.held = False
    t0 = time.monotonic()
    ha.wait_between_steps(room=5.0, max_wait=0.3)
    assert time.monotonic() - t0 < 0.1


def test_a_rejected_reload_says_what_stays_in_force(h: Harness) -> None:
    write_policy(h.dir, "web")
    d = h.daemon()

    def reloads() -> list[str]:
        return [e.message for e in d.events(cursor=None, limit=100, policy=None).events if e.kind == "reload"]

    (h.dir / "web.yaml").write_text((h.dir / "web.yaml").read_text().replace("service_port: 80", "service_port: x"))
    wait_for("a rejected reload", lambda: any("rejected" in m for m in reloads()))
    [message] = [m for m in reloads() if "rejected" in m]
    assert "the last good version of web stays in force" in message and "kept for -" not in message
    (h.dir / "new.yaml").write_text("name: new\n")
    wait_for("the new file rejected", lambda: any("nothing loaded from new.yaml (no earlier good version)" in m
                                                 for m in reloads()))


def test_spend_rate_and_spent_today_from_the_journals_instance_lifetimes(h: Harness) -> None:
    """spend_per_hour is the run rate of what is held now; spent_today integrates each instance's price
    over its lifetime since 00:00 UTC: yesterday's part of an instance and released instances are counted
    as they should be."""
    from controller.ports import Instance, InstanceState

    midnight = 20_000 * 86400.0
    now = [midnight + 2 * 3600]  # 02:00 UTC
    write_policy(h.dir, "web")
    store = StateStore(h.url, clock=lambda: now[0])
    d = Daemon(options=OPTIONS, store=store, edges=h.world.edges, policies_dir=h.dir, clock=lambda: now[0])
    try:
        d.reload(initial=True)

        def instance(iid: str, created: float, price: float) -> None:
            store.record_instance(Instance(id=iid, state=InstanceState.RUNNING, instance_type="ecs.c6.large",
                                           zone="cn-hangzhou-h", private_ip=None, tags={}, created_at=created,
                                           price_per_hour=price), policy="web", replica_id=None, intent_id=None)

        instance("i-old", midnight - 3600, 1.0)      # since 23:00 yesterday, released at 01:00: 1 h today
        instance("i-gone", midnight - 7200, 2.0)     # released yesterday at 23:30: nothing today
        now[0] = midnight - 1800
        store.mark_released(["i-gone"])
        now[0] = midnight + 3600
        store.mark_released(["i-old"])
        now[0] = midnight + 2 * 3600
        instance("i-live", midnight + 1800, 0.5)      # since 00:30, held: 1.5 h today
        [web] = d.status().policies
        assert web.spent_today == pytest.approx(1.0 * 1 + 0.5 * 1.5)
        assert web.spend_per_hour == pytest.approx(0.62)  # what is held now, at the policy's budget.prices
    finally:
        store.close()
