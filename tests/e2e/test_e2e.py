"""End to end on the real components: `burstctl run` as its own process against the lab (ECS emulator over
the real SDK, two docker-registry instances, HAProxy, the local Docker Engine over mutual TLS, SQLite):
a burst and drain driven by real load through HAProxy, with the on-prem server's share of the requests
measured against its weight's share while cloud replicas serve; SIGKILL mid-burst and a restart that adopts its
instances and launches no duplicate; an invalid policy edit that leaves the last good one in force; the
status endpoint and its token."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controller.cli.demo import CycleResult, burst_cycle
from lab.lab import Lab, LabSettings
from lab.loadgen import LoadGenerator, LoadStats
from tests.support.controller_process import ControllerProcess, running_controller, running_lab, wait_for
from tests.support.haproxy_log import haproxy_log, log_size

pytestmark = pytest.mark.timeout(720)  # booted nodes: minutes each on a shared machine


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with running_lab(tmp_path / "lab", LabSettings(boot_delay=1.0)) as lab:
        yield lab
    assert lab.cloud_containers() == [], "lab left containers behind"


@pytest.fixture
def controller(lab: Lab) -> Iterator[ControllerProcess]:
    with running_controller(lab) as c:
        yield c


class ShareMeter:
    """The on-prem server's share of the requests HAProxy sent while cloud replicas served beside it, against
    the share its weight gives it: w(onprem) / the sum of the weights of the servers taking new requests
    (status UP or "no check"; a draining one takes none). Called between the cycle's waits, it samples which
    servers were ready (HAProxy's `show stat`); afterwards each request in HAProxy's own log counts at the
    moment its connection to a server was made, and only when it falls between two samples that saw the same
    servers with the same weights (requests still completing from before a change count where they were sent).
    """

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.offset = log_size(lab)
        self.samples: list[tuple[float, dict[str, int]]] = []  # (epoch, ready server -> weight)

    def _ready(self) -> dict[str, int]:
        lines = self.lab.haproxy_command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        status, weight = header.index("status"), header.index("weight")
        out = {}
        for line in lines[1:]:
            p = line.split(",")
            if len(p) > weight and p[0] == "web" and p[1] not in ("FRONTEND", "BACKEND") \
                    and p[status] in ("UP", "no check"):
                out[p[1]] = int(p[weight])
        return out

    def __call__(self) -> None:
        before = time.time()
        ready = self._ready()
        after = time.time()
        self.samples.append(((before + after) / 2, ready))

    def share(self) -> tuple[int, float, float]:
        """(requests counted, on-prem's share of them, the share its weight gave it)."""
        logged = [r for r in haproxy_log(self.lab, self.offset) if r.connected is not None and r.server != "<NOSRV>"]
        total, onprem, expected = 0, 0, 0.0
        for (t0, ready), (t1, ready_after) in zip(self.samples, self.samples[1:], strict=False):
            if ready != ready_after or "onprem" not in ready or len(ready) < 2:
                continue
            for r in logged:
                if t0 <= (r.connected or 0) < t1 and r.server in ready:
                    total += 1
                    onprem += r.server == "onprem"
                    expected += ready["onprem"] / sum(ready.values())
        return total, onprem / max(total, 1), expected / max(total, 1)


def burst(lab: Lab, controller: ControllerProcess, meter: ShareMeter | None = None) -> tuple[CycleResult, LoadStats]:
    """Start the controller and drive one burst-and-drain cycle with real load through HAProxy."""
    controller.start()
    load = LoadGenerator(lab.url)
    try:
        result = burst_cycle(lab, None, load, hold=3.0, timeout=480.0, tick=meter or (lambda: None))
    finally:
        load.stop()
    print(result.line())
    assert result.error is None, controller.log()
    return result, load.snapshot()


def test_burst_and_drain_driven_by_real_load(lab: Lab, controller: ControllerProcess) -> None:
    meter = ShareMeter(lab)
    result, stats = burst(lab, controller, meter)
    errors = stats.errors
    # no request may go unanswered: client time-outs here were docker0 changing its MAC address while the cloud
    # containers started and stopped on the shared engine (deploy/pin-bridge-mac.sh, docs/replicas.md)
    assert result.cloud_requests > 0 and result.drained, errors
    assert stats.failed == 0 and not errors and stats.retried == 0, (errors, stats.retried)
    assert result.launched == 2  # replicas.max
    assert lab.live_instances() == [] and lab.cloud_servers() == []
    # the peak overflows into the cloud, it does not move there: each replica takes the on-prem server's weight,
    # so on-prem keeps its share of the requests (1/2 beside one replica, 1/3 beside two)
    total, share, expected = meter.share()
    print(f"on-prem share while cloud replicas served: {share:.3f} of {total} requests, "
          f"expected {expected:.3f} from the HAProxy weights")
    assert total >= 50, "too few requests while cloud replicas served beside on-prem to measure a share"
    assert abs(share - expected) <= 0.10 * expected, (share, expected, total)
    events = httpx.get(f"{lab.status_url}/v1/events", params={"limit": 500}, timeout=5, trust_env=False).json()
    kinds = [e["kind"] for e in events["events"]]
    for kind in ("replicate", "scale-out", "launch", "start", "admit", "scale-in", "drain", "release"):
        assert kind in kinds, f"no {kind} event in {kinds}"
    assert controller.terminate() == 0


def test_sigkill_mid_burst_then_restart_adopts_and_launches_no_duplicate(lab: Lab, controller: ControllerProcess) -> None:
    assert lab.emulator is not None
    controller.start()
    load = LoadGenerator(lab.url)
    try:
        load.set_clients(16)
        # kill it while the replicas are on their way in (launched, not yet serving)
        wait_for("a launch", lambda: len(lab.live_instances()) >= 1, timeout=60)
        controller.kill()
        launched_before = {i["id"] for i in lab.live_instances()}
        assert launched_before
        controller.start()
        wait_for("two cloud replicas serving", lambda: len(lab.cloud_servers()) == 2, timeout=240)
        # identical replicas carry the on-prem HEALTHCHECK, and Docker reports them healthy (admission needs it)
        onprem = lab.onprem_container.attrs["Config"]["Healthcheck"]
        for c in lab.cloud_containers():
            c.reload()
            assert c.attrs["Config"]["Healthcheck"] == onprem and c.attrs["State"]["Health"]["Status"] == "healthy"
        calls = lab.emulator.calls()
        live = lab.live_instances()
        assert len(live) == 2, live
        assert launched_before <= {i["id"] for i in live}  # the first ones were adopted, not replaced
        assert lab.emulator.state.snapshot()["launched"] == 2  # ever: no duplicate launch
        assert calls.get("DeleteInstances", 0) == 0  # nothing launched twice and cleaned up
        print(f"SIGKILL test: RunInstances calls {calls.get('RunInstances')}, instances ever launched 2")
        # the status answers from a snapshot the daemon publishes (at most a moment behind the journal)
        wait_for("status: two serving", lambda: controller.status()["policies"][0]["replicas"] == {"serving": 2},
                 timeout=5)
        load.set_clients(1)
        wait_for("drain", lambda: not lab.live_instances() and not lab.cloud_servers(), timeout=120)
        assert (load.snapshot().failed, load.snapshot().retried) == (0, 0)
    finally:
        load.stop()
    assert controller.terminate() == 0
    assert "Traceback" not in controller.log()


def test_invalid_policy_edit_keeps_the_last_good_one_and_the_status_token(lab: Lab,
                                                                         controller: ControllerProcess) -> None:
    controller.start()
    url, token = lab.status_url, lab.token
    before = controller.status()
    assert [p["name"] for p in before["policies"]] == ["web"] and before["policy_errors"] == []
    assert before["policies"][0]["budget_per_hour"] == 5.0

    # an edit with a mistake: the file is rejected with FILE:LINE:COL, the last good version stays
    lab.policy_path.write_text(lab.policy_yaml(**{"max_per_hour: 5.0": "max_per_hour: -3"}))
    wait_for("the rejection in status", lambda: controller.status()["policy_errors"] != [], timeout=20)
    state = controller.status()
    assert any(line.startswith(f"{lab.policy_path}:") and "budget.max_per_hour" in line
               for line in state["policy_errors"]), state["policy_errors"]
    assert [p["name"] for p in state["policies"]] == ["web"] and state["policies"][0]["budget_per_hour"] == 5.0
    assert "policy rejected" in controller.log()

    # fixed: the new version takes over and the errors clear
    lab.policy_path.write_text(lab.policy_yaml(**{"max_per_hour: 5.0": "max_per_hour: 6.5"}))
    wait_for("the fixed policy", lambda: controller.status()["policies"][0]["budget_per_hour"] == 6.5, timeout=20)
    assert controller.status()["policy_errors"] == []

    # the status endpoint's token guards the mutations
    pause = f"{url}/v1/policies/web/pause"
    assert httpx.post(pause, timeout=5, trust_env=False).status_code == 401
    assert httpx.post(pause, headers={"Authorization": "Bearer wrong"}, timeout=5, trust_env=False).status_code == 403
    ok = httpx.post(pause, headers={"Authorization": f"Bearer {token}"}, timeout=5, trust_env=False)
    assert ok.status_code == 200, ok.text
    assert controller.status()["policies"][0]["paused"] is True
    missing = httpx.post(f"{url}/v1/policies/nope/pause", headers={"Authorization": f"Bearer {token}"},
                         timeout=5, trust_env=False)
    assert missing.status_code == 404
    assert httpx.post(f"{url}/v1/policies/web/resume", headers={"Authorization": f"Bearer {token}"},
                      timeout=5, trust_env=False).status_code == 200
    assert controller.status()["policies"][0]["paused"] is False

    # SIGHUP reloads too; a removed file drains (nothing to drain here) and the policy is forgotten
    os.remove(lab.policy_path)
    assert controller.proc is not None
    controller.proc.send_signal(signal.SIGHUP)
    wait_for("the removal", lambda: controller.status()["policies"] == [] or
             controller.status()["policies"][0]["draining"], timeout=20)
    assert controller.terminate() == 0


def test_two_replicas_per_node_share_one_instance(lab: Lab, controller: ControllerProcess) -> None:
    """workload.replicas_per_node: 2 on the real components: the burst's two replicas run as two containers
    on one emulated instance (distinct host ports), each its own HAProxy server; the drain releases the
    instance once, after its last replica left, and no request fails."""
    lab.policy_path.write_text(lab.policy_yaml(**{"  service_port: 80\n": "  service_port: 80\n  replicas_per_node: 2\n"}))
    result, stats = burst(lab, controller)
    assert stats.failed == 0 and not stats.errors and stats.retried == 0, (stats.errors, stats.retried)
    assert result.launched == 1 and result.drained  # two replicas (replicas.max), one instance
    served = {name for name in stats.by_server if name.startswith(f"{lab.controller_id}-")}
    events = httpx.get(f"{lab.status_url}/v1/events", params={"limit": 500}, timeout=5, trust_env=False).json()
    for e in reversed(events["events"]):
        print(e["kind"], e["message"])
    assert len(served) == 2, stats.by_server
    assert lab.live_instances() == [] and lab.cloud_servers() == []
    by_kind: dict[str, list[str]] = {}
    for e in events["events"]:
        by_kind.setdefault(e["kind"], []).append(e["message"])
    assert len(by_kind["launch"]) == 1 and len(by_kind["place"]) == 1, by_kind
    # "replica r...: container c... on i-... (address:port)"
    endpoints = {m.rsplit("(", 1)[1].rstrip(")") for m in by_kind["start"] if ": container " in m}
    assert len(endpoints) == 2 and len({e.rsplit(":", 1)[0] for e in endpoints}) == 1, endpoints
    releases = by_kind["release"]
    assert sum("released i-" in m for m in releases) == 1 and sum(" left " in m for m in releases) == 1, releases
