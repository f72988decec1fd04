"""End to end: drift roll-forward by the real daemon (`burstctl run`) on the lab. Mid-burst the on-prem
container is replaced by one with a new environment value (drained in HAProxy first, as ops would); the
daemon's next capture sees a new spec_hash and rolls every cloud replica to it, one at a time, while the
load generator keeps sending requests: none fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controller.ports import LABEL_SPEC_HASH
from lab.lab import Lab, LabSettings
from lab.loadgen import LoadGenerator
from lab.parts import LAB_LABEL
from tests.support.controller_process import ControllerProcess, running_controller, running_lab, wait_for

pytestmark = pytest.mark.timeout(720)  # booted nodes: minutes each on a shared machine

INTERVALS = {"sample": "0.5s", "evaluate": "1s", "step": "0.5s", "reconcile": "3s", "replicate": "2s", "gc": "60s"}


@pytest.fixture
def rlab(tmp_path: Path) -> Iterator[Lab]:
    with running_lab(tmp_path / "lab", LabSettings(boot_delay=1.0, intervals=INTERVALS)) as lab:
        yield lab


@pytest.fixture
def rcontroller(rlab: Lab) -> Iterator[ControllerProcess]:
    with running_controller(rlab) as c:
        yield c


def _running_hashes(lab: Lab) -> list[str]:
    # the low-level listing on every node: no per-container inspect that races the controller removing one
    return [str(r["Labels"].get(LABEL_SPEC_HASH, "")) for r in lab.replica_rows(running_only=True)]


def _onprem_in_flight(lab: Lab) -> int:
    """Requests queued for or being served by HAProxy's on-prem server (``show stat``: qcur, scur)."""
    for line in lab.haproxy_command("show stat").splitlines():
        parts = line.split(",")
        if len(parts) > 4 and parts[:2] == ["web", "onprem"]:
            return int(parts[2] or 0) + int(parts[4] or 0)
    raise AssertionError("HAProxy has no web/onprem server")


def _replace_onprem(lab: Lab, env: dict[str, str]) -> None:
    """A rolling update on-prem: out of HAProxy (drain, wait for requests in flight), swap, back in."""
    assert lab.docker is not None
    old = lab.onprem_container
    old.reload()
    port = int(old.attrs["HostConfig"]["PortBindings"]["80/tcp"][0]["HostPort"])
    lab.haproxy_command("set server web/onprem state drain")
    # its requests in flight done (0.3 s each on a quiet machine; a fixed wait was too short on a loaded one)
    wait_for("the on-prem server's requests in flight", lambda: _onprem_in_flight(lab) == 0, 60)
    old.stop(timeout=5)
    old.remove()
    lab.onprem_container = lab.docker.containers.run(
        old.attrs["Config"]["Image"], old.attrs["Config"]["Cmd"], name=old.name, detach=True,
        labels=old.labels, ports={"80/tcp": ("127.0.0.1", port)}, hostname="onprem", environment=env)
    wait_for("the new on-prem container", lambda: "served" in lab.docker.containers.get(lab.onprem_container.id)
             .exec_run(["wget", "-qO-", "http://127.0.0.1/cgi-bin/work"]).output.decode(), 15)
    lab.haproxy_command("set server web/onprem state ready")


def test_cloud_replicas_roll_to_a_changed_onprem_spec_without_a_failed_request(rlab: Lab,
                                                                                rcontroller: ControllerProcess) -> None:
    rcontroller.start()
    load = LoadGenerator(rlab.url)
    try:
        load.set_clients(16)
        wait_for("two cloud replicas serving", lambda: len(rlab.cloud_servers()) == 2, 240)
        old = set(_running_hashes(rlab))
        assert len(old) == 1 and "" not in old
        _replace_onprem(rlab, {"RELEASE": "2"})
        wait_for("every cloud replica on the new spec", lambda: (lambda h: len(h) >= 2 and not set(h) & old)(
            _running_hashes(rlab)) and len(rlab.cloud_servers()) == 2, 300)
        stats = load.snapshot()
    finally:
        load.stop()
    [new] = set(_running_hashes(rlab))
    assert new != next(iter(old))
    assert stats.failed == 0 and stats.retried == 0, (dict(stats.errors), stats.retried)
    assert stats.served_by_prefix(f"{rlab.controller_id}-") > 0
    page = httpx.get(f"{rlab.status_url}/v1/events?limit=1000", timeout=5, trust_env=False).json()
    rolls = [e["message"] for e in page["events"] if e["kind"] == "roll"]
    # two replicas at replicas.max 2: each one drained first, then replaced by the repair launch
    assert len(rolls) >= 2 and all(f"to spec {new[:12]}" in m for m in rolls), rolls
    assert rlab.docker is not None and rlab.docker.containers.list(filters={"label": f"{LAB_LABEL}={rlab.id}"})
