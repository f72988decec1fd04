"""End to end: a read-only bind-mounted config file travels to the cloud replicas (`workload.mounts: copy`)
on the lab's booted nodes, with the real daemon (`burstctl run`). The replicas serve the on-prem config;
then the file is edited on-prem, the daemon's next capture sees a new spec_hash, and every replica rolls to
one serving the new config while the load generator keeps sending requests: none fails."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controller.ports import LABEL_SPEC_HASH
from lab.lab import Lab, LabSettings
from lab.loadgen import LoadGenerator
from tests.support.controller_process import ControllerProcess, running_controller, running_lab, wait_for

pytestmark = pytest.mark.timeout(1080)  # booted nodes: minutes each on a shared machine

INTERVALS = {"sample": "0.5s", "evaluate": "1s", "step": "0.5s", "reconcile": "3s", "replicate": "2s", "gc": "60s"}
CONFIG = "/www/config.txt"  # busybox httpd serves /www: GET /config.txt answers the file


def _policy(lab: Lab) -> str:
    return lab.policy_yaml(**{"  service_port: 80\n": f"  service_port: 80\n  mounts: {{{CONFIG}: copy}}\n"})


@pytest.fixture
def flab(tmp_path: Path) -> Iterator[Lab]:
    with running_lab(tmp_path / "lab", LabSettings(boot_delay=1.0, intervals=INTERVALS), policy=_policy) as lab:
        _mount_config(lab, "config=ON-PREM-1\n")
        yield lab


@pytest.fixture
def fcontroller(flab: Lab) -> Iterator[ControllerProcess]:
    with running_controller(flab) as c:
        yield c


def _mount_config(lab: Lab, text: str) -> None:
    """The on-prem container again, with a config file bind-mounted read-only (before the controller runs)."""
    assert lab.docker is not None
    config = lab.root / "config.txt"
    config.write_text(text)
    config.chmod(0o644)
    old = lab.onprem_container
    old.reload()
    port = int(old.attrs["HostConfig"]["PortBindings"]["80/tcp"][0]["HostPort"])
    old.remove(force=True)
    lab.onprem_container = lab.docker.containers.run(
        old.attrs["Config"]["Image"], old.attrs["Config"]["Cmd"], name=old.name, detach=True,
        labels=old.labels, ports={"80/tcp": ("127.0.0.1", port)}, hostname="onprem",
        healthcheck=old.attrs["Config"].get("Healthcheck"), volumes={str(config): {"bind": CONFIG, "mode": "ro"}})
    wait_for("the on-prem container with its config", lambda: text in _get(lab, "/config.txt")[1], 15)


def _get(lab: Lab, path: str) -> tuple[str, str]:
    """(server, body) of one request through the lab's HAProxy frontend."""
    try:
        r = httpx.get(f"http://127.0.0.1:{lab.frontend_port}{path}", timeout=5, trust_env=False)
    except httpx.HTTPError:
        return "", ""
    return r.headers.get("X-Served-By", ""), r.text if r.status_code == 200 else ""


def _cloud_answers(lab: Lab, n: int = 24) -> set[str]:
    """What the cloud replicas answer for the config file, over ``n`` requests (round robin)."""
    out = set()
    for _ in range(n):
        server, body = _get(lab, "/config.txt")
        if server.startswith(f"{lab.controller_id}-"):
            out.add(body)
    return out


def _running_hashes(lab: Lab) -> list[str]:
    return [str(r["Labels"].get(LABEL_SPEC_HASH, "")) for r in lab.replica_rows(running_only=True)]


def test_config_file_travels_and_an_edit_rolls_the_replicas_without_a_failed_request(
        flab: Lab, fcontroller: ControllerProcess) -> None:
    fcontroller.start(timeout=120)  # a loaded machine: the status process is slow to come up
    load = LoadGenerator(flab.url)
    try:
        load.set_clients(16)
        wait_for("two cloud replicas serving", lambda: len(flab.cloud_servers()) == 2, 420)
        assert _cloud_answers(flab) == {"config=ON-PREM-1\n"}  # identical to on-prem, not NO-CONFIG
        old = set(_running_hashes(flab))
        assert len(old) == 1 and "" not in old

        (flab.root / "config.txt").write_text("config=ON-PREM-2\n")  # edited in place, as ops do

        def rolled() -> bool:
            hashes = _running_hashes(flab)
            return len(hashes) >= 2 and not set(hashes) & old and len(flab.cloud_servers()) == 2

        wait_for("every cloud replica on the new spec", rolled, 480)
        time.sleep(1)
        answers = _cloud_answers(flab)
        stats = load.snapshot()
    finally:
        load.stop()
    assert answers == {"config=ON-PREM-2\n"}
    assert stats.failed == 0 and stats.retried == 0, (dict(stats.errors), stats.retried)
    assert stats.served_by_prefix(f"{flab.controller_id}-") > 0
    page = httpx.get(f"{flab.status_url}/v1/events?limit=1000", timeout=5, trust_env=False).json()
    [new] = set(_running_hashes(flab))
    rolls = [e["message"] for e in page["events"] if e["kind"] == "roll"]
    assert len(rolls) >= 2 and all(f"to spec {new[:12]}" in m for m in rolls), rolls
