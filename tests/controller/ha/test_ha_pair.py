"""An active/standby pair end to end: two real `burstctl run` processes with the same controller id and the
same PostgreSQL state database, against the lab (ECS emulator over the real SDK, registries, HAProxy, the
local Docker Engine over mutual TLS). SIGKILL the active mid-burst: the standby takes over within 15 s
(measured), adopts the fleet and launches nothing twice. Then a partition: the active is paused (SIGSTOP)
past the lease TTL, the other takes over and drains; resumed (SIGCONT), the old one does nothing and says
it is a standby. Each controller signs its ECS calls with its own access key, so the emulator tells whose
call each one is."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from controller.store.state import StateStore
from lab.emulator.rpc_wire import AccessKey
from lab.lab import Lab, LabSettings
from lab.loadgen import LoadGenerator
from lab.parts import EMULATOR_KEY
from tests.support.controller_process import ControllerProcess
from tests.support.net import free_port

LEASE_TTL, RENEW_EVERY = 10.0, 2.0  # the defaults of controller.yaml's ha section
TAKEOVER_BOUND = 15.0  # issue 9: the standby takes over within 15 s of the active's death
MUTATING = {"RunInstances", "DeleteInstances", "DeleteInstance", "StopInstances", "TagResources"}
pytestmark = pytest.mark.timeout(600)  # booted nodes: minutes on a shared machine


@dataclass
class CallLog:
    """Every ECS API call the emulator handled: (monotonic time, access key id, action)."""

    calls: list[tuple[float, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def by(self, key: str, since: float = 0.0) -> list[str]:
        with self.lock:
            return [action for at, k, action in self.calls if k == key and at >= since]


class Member(ControllerProcess):
    """One `burstctl run` of the pair: its own status port and ECS access key, the shared state URL."""

    def __init__(self, lab: Lab, name: str, state_url: str, key: tuple[str, str]) -> None:
        config = lab.root / f"controller-{name}.yaml"
        port = free_port()
        text = lab.config_path.read_text()
        text = text.replace(f"url: sqlite:///{lab.root}/state.db", f"url: {state_url}")
        text = text.replace(f"listen: 127.0.0.1:{lab.status_port}", f"listen: 127.0.0.1:{port}")
        text += f"ha:\n  enabled: true\n  lease_ttl: {LEASE_TTL:g}s\n  renew_every: {RENEW_EVERY:g}s\n"
        config.write_text(text)
        super().__init__(lab, config=config, name=name, port=port,
                         env={"ALIBABA_CLOUD_ACCESS_KEY_ID": key[0], "ALIBABA_CLOUD_ACCESS_KEY_SECRET": key[1]})
        self.key = key

    def start(self, timeout: float = 0.0) -> None:
        self.spawn()  # one of the pair stays a standby (never ready): the test waits for the role it expects

    def readiness(self) -> dict[str, Any] | None:
        """/readyz as JSON (200 active, 503 standby), None while it does not answer."""
        try:
            return dict(httpx.get(f"{self.url}/readyz", timeout=2, trust_env=False).json())
        except (httpx.HTTPError, ValueError):
            return None

    def role(self) -> str | None:
        r = self.readiness()
        return None if r is None else r.get("role")


def wait_for(what: str, until: Callable[[], bool], timeout: float, explain: Callable[[], str] = str) -> float:
    """Poll until true; returns the seconds it took."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if until():
            return time.monotonic() - began
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}: {explain()}")


@pytest.fixture(scope="module")
def pair_env(tmp_path_factory: pytest.TempPathFactory, ha_pg_database: str) -> Iterator[tuple[Lab, str, CallLog]]:
    import psycopg

    schema = "pair"
    with psycopg.connect(ha_pg_database.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as c:
        c.execute(f'CREATE SCHEMA "{schema}"')
    state_url = f"{ha_pg_database}?options=-csearch_path%3D{schema}"
    lab = Lab(root=tmp_path_factory.mktemp("ha") / "lab", settings=LabSettings(boot_delay=2.0)).start()
    assert lab.emulator is not None
    lab.emulator.server.access_keys["ha-b"] = AccessKey("ha-b", "ha-b-secret")
    log = CallLog()
    handle = lab.emulator.server.handle

    def recording(method: str, params: dict[str, str], host: str, *more: Any) -> Any:
        with log.lock:
            log.calls.append((time.monotonic(), params.get("AccessKeyId", ""), params.get("Action", "")))
        return handle(method, params, host, *more)  # more: the V3 signature's request, when one came

    lab.emulator.server.handle = recording  # type: ignore[method-assign]
    try:
        yield lab, state_url, log
    finally:
        lab.stop()
        assert lab.cloud_containers() == [], "lab left containers behind"


@pytest.fixture(scope="module")
def members(pair_env: tuple[Lab, str, CallLog]) -> Iterator[dict[str, Member]]:
    lab, state_url, _ = pair_env
    made = {"a": Member(lab, "a", state_url, EMULATOR_KEY), "b": Member(lab, "b", state_url, ("ha-b", "ha-b-secret"))}
    try:
        yield made
    finally:
        for m in made.values():
            if m.proc is not None and m.proc.poll() is None:
                m.proc.send_signal(signal.SIGCONT)
                m.proc.kill()
                m.proc.wait(10)


@pytest.fixture(scope="module")
def load(pair_env: tuple[Lab, str, CallLog]) -> Iterator[LoadGenerator]:
    gen = LoadGenerator(pair_env[0].url)
    try:
        yield gen
    finally:
        gen.stop()


def test_sigkill_of_the_active_standby_takes_over_within_15s_without_duplicates(
        pair_env: tuple[Lab, str, CallLog], members: dict[str, Member], load: LoadGenerator) -> None:
    lab, state_url, calls = pair_env
    a, b = members["a"], members["b"]
    assert lab.emulator is not None
    a.start()
    wait_for("A active", lambda: a.role() == "active", 40, a.log)
    b.start()
    wait_for("B up as standby", lambda: b.role() == "standby", 40, b.log)
    standby = b.status()
    assert standby["role"] == "standby" and standby["ready"] is False
    assert standby["ready_reason"].startswith("standby: ") and ":" in standby["ready_reason"]
    assert [p["name"] for p in standby["policies"]] == ["web"]  # it shows the active's fleet, read-only
    token = {"Authorization": f"Bearer {lab.token}"}
    refused = httpx.post(f"{b.url}/v1/policies/web/pause", headers=token, timeout=5, trust_env=False)
    assert refused.status_code == 409, refused.text
    assert httpx.get(f"{b.url}/readyz", timeout=5, trust_env=False).status_code == 503

    load.set_clients(16)
    wait_for("a launch by A", lambda: len(lab.live_instances()) >= 1, 60, a.log)
    assert calls.by("ha-b", since=0) == []  # the standby never called the cloud
    a.kill()
    killed = time.monotonic()
    took = wait_for("B active", lambda: b.role() == "active", 30, b.log)
    print(f"takeover after SIGKILL: {took:.1f}s (lease ttl {LEASE_TTL:g}s, renewed every {RENEW_EVERY:g}s)")
    assert took <= TAKEOVER_BOUND, f"takeover took {took:.1f}s"
    assert time.monotonic() - killed <= TAKEOVER_BOUND + 1

    wait_for("two cloud replicas serving under B", lambda: len(lab.cloud_servers()) == 2, 300, b.log)
    snap = lab.emulator.state.snapshot()
    assert snap["launched"] == 2 and snap["live"] == 2, snap  # nothing launched twice
    assert "DeleteInstances" not in calls.by(EMULATOR_KEY[0]) + calls.by("ha-b")
    store = StateStore(state_url)
    try:
        launches = store.intents(policy="web", kind="launch")
        assert len(launches) == 2 and all(i.state == "done" for i in launches), launches
        tokens = {i.token for i in launches}
        instances = {row.id: row.intent_id for row in store.instances("web")}
        assert len(instances) == 2 and set(instances.values()) <= tokens
        leader_events = [e for e in store.events(limit=200)[0] if e.kind == "leader"]
        assert leader_events and "epoch 2" in leader_events[0].message, [e.message for e in leader_events]
    finally:
        store.close()
    # the status answers from a snapshot the daemon publishes (at most 0.5 s behind the journal)
    wait_for("B's status: two serving", lambda: b.status()["policies"][0]["replicas"] == {"serving": 2}, 5,
             lambda: str(b.status()["policies"][0]["replicas"]))


def test_partitioned_old_leader_does_not_act_when_it_comes_back(
        pair_env: tuple[Lab, str, CallLog], members: dict[str, Member], load: LoadGenerator) -> None:
    lab, state_url, calls = pair_env
    a, b = members["a"], members["b"]
    wait_for("the fleet the previous test left: B active with two serving replicas",
             lambda: b.role() == "active" and len(lab.cloud_servers()) == 2, 20, b.log)
    a.start()  # the killed one comes back: as a standby
    wait_for("A up as standby", lambda: a.role() == "standby", 40, a.log)

    b.signal(signal.SIGSTOP)  # B is cut off: it cannot renew, and it does not know
    paused = time.monotonic()
    load.set_clients(0)  # the peak passes: the new leader will drain and release while B is still paused
    wait_for("A active", lambda: a.role() == "active", 30, a.log)
    took = time.monotonic() - paused  # set_clients(0) above waits for requests in flight: count from the pause
    print(f"takeover from a paused leader: {took:.1f}s")
    assert took <= TAKEOVER_BOUND
    wait_for("A releasing", lambda: "DeleteInstances" in calls.by(EMULATOR_KEY[0], since=paused), 60, a.log)

    resumed = time.monotonic()
    b.signal(signal.SIGCONT)
    wait_for("B to say it is a standby", lambda: b.role() == "standby", 10, b.log)
    wait_for("the drain to finish", lambda: not lab.live_instances() and not lab.cloud_servers(), 120, a.log)
    time.sleep(RENEW_EVERY)  # give B every chance to misbehave
    after = calls.by("ha-b", since=resumed)
    assert not MUTATING & set(after), after
    assert len(after) <= 1, after  # at most one read that was already on its way when B was paused
    st = b.status()
    assert st["role"] == "standby" and st["ready"] is False
    assert "stepping down to STANDBY" in b.log()
    store = StateStore(state_url)
    try:
        late = [i for i in store.intents() if i.created_at >= time.time() - (time.monotonic() - resumed)
                and i.fence is not None and i.fence < 3]
        assert late == [], late  # no journal write under B's old epoch after it resumed
        assert store.live_replicas("web") == []
    finally:
        store.close()
    stats = load.snapshot()
    # A server removed with sessions open, or two controllers fighting over HAProxy, shows as failed requests:
    # none, through the kill, the takeover and the fenced old leader.
    assert stats.failed == 0 and not stats.errors and stats.retried == 0, stats
    assert a.terminate() == 0
    assert b.terminate() == 0
    assert "Traceback" not in a.log() + b.log()
