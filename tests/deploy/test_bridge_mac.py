"""deploy/pin-bridge-mac.sh on real Linux bridges, and what it prevents on the real Docker Engine: requests to a
published port stalling while other containers start and stop on the same bridge (docs/replicas.md, "The
Docker bridge's MAC address"). Needs root (CAP_NET_ADMIN), as the services the suite starts."""

from __future__ import annotations

import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from lab.parts import WORKLOAD_CMD
from tests.support.net import free_port, wait_port

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "pin-bridge-mac.sh"
LABEL = "io.burst-controller.test.bridge-mac"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def mac(dev: str) -> str:
    return Path(f"/sys/class/net/{dev}/address").read_text().strip()


def assign_type(dev: str) -> int:
    return int(Path(f"/sys/class/net/{dev}/addr_assign_type").read_text())


class Bridge:
    """A bridge of the test's own, with veth ports of chosen MAC addresses; removed at the end."""

    def __init__(self) -> None:
        self.name = f"bmt{secrets.token_hex(4)}"
        self.ports: list[str] = []
        ip("link", "add", self.name, "type", "bridge")
        ip("link", "set", self.name, "up")

    def add_port(self, address: str) -> str:
        port = f"bmp{secrets.token_hex(4)}"
        ip("link", "add", port, "address", address, "type", "veth", "peer", "name", port + "p")
        ip("link", "set", port, "master", self.name)
        ip("link", "set", port, "up")
        self.ports.append(port)
        return port

    def remove_port(self, port: str) -> None:
        ip("link", "del", port)
        self.ports.remove(port)

    def close(self) -> None:
        for port in list(self.ports):
            self.remove_port(port)
        ip("link", "del", self.name)


@pytest.fixture
def bridge() -> Iterator[Bridge]:
    br = Bridge()
    yield br
    br.close()


def pin(dev: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(SCRIPT), dev], check=False, capture_output=True, text=True, timeout=15)


def test_an_unpinned_bridge_takes_the_lowest_port_mac_so_container_churn_changes_it(bridge: Bridge) -> None:
    """The kernel behaviour the script exists for: without a set address, a new port with a lower MAC
    changes the bridge's MAC, and removing it changes it again."""
    bridge.add_port("02:99:00:00:00:10")
    assert mac(bridge.name) == "02:99:00:00:00:10"
    low = bridge.add_port("02:11:00:00:00:01")
    assert mac(bridge.name) == "02:11:00:00:00:01"
    bridge.remove_port(low)
    assert mac(bridge.name) == "02:99:00:00:00:10"


def test_a_pinned_bridge_keeps_its_mac_through_port_churn(bridge: Bridge) -> None:
    bridge.add_port("02:99:00:00:00:10")
    done = pin(bridge.name)
    assert done.returncode == 0, done.stderr
    assert assign_type(bridge.name) == 3  # NET_ADDR_SET
    pinned = mac(bridge.name)
    assert pinned == "02:99:00:00:00:10"  # the address it had: pinning itself changes nothing
    low = bridge.add_port("02:11:00:00:00:01")
    assert mac(bridge.name) == pinned
    bridge.remove_port(low)
    bridge.remove_port(bridge.ports[0])
    assert mac(bridge.name) == pinned
    again = pin(bridge.name)  # idempotent
    assert again.returncode == 0 and mac(bridge.name) == pinned


def test_not_a_bridge_is_refused_with_a_clear_message() -> None:
    done = pin("lo")
    assert done.returncode == 1 and "lo is not a bridge" in done.stderr


def test_the_shared_engine_bridge_is_pinned_and_published_ports_never_stall_during_container_churn(
        docker_client: docker.DockerClient, busybox_image: str) -> None:
    """The bug this fixes, end to end: 8 clients keep requesting the on-prem-like container through its
    published loopback port while 2 other containers start and stop on the engine's bridge, four times over.
    Before the bridge's MAC was pinned, 2 of 6 such cycles left every in-flight request without an answer for 10 s."""
    # the engine's default bridge: burst0 for the private engine scripts/services.sh runs
    br = docker_client.networks.get("bridge").attrs["Options"].get("com.docker.network.bridge.name", "docker0")
    assert assign_type(br) == 3, f"{br}'s MAC is not pinned: scripts/services.sh start pins it"
    before = mac(br)
    port = free_port()
    onprem = docker_client.containers.run(busybox_image, ["sh", "-c", WORKLOAD_CMD], detach=True,
                                          labels={LABEL: "onprem"}, ports={"80/tcp": ("127.0.0.1", port)})
    stop = threading.Event()
    lock = threading.Lock()
    outcomes: list[tuple[float, str]] = []

    def client() -> None:
        with httpx.Client(timeout=5.0, trust_env=False) as c:
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    r = c.get(f"http://127.0.0.1:{port}/cgi-bin/work")
                    what = "ok" if r.status_code == 200 and r.text.strip() == "served" else f"HTTP {r.status_code}"
                except httpx.HTTPError as exc:
                    what = type(exc).__name__
                with lock:
                    outcomes.append((time.monotonic() - t0, what))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(8)]
    try:
        wait_port("127.0.0.1", port)
        for t in threads:
            t.start()
        for cycle in range(4):
            others = [docker_client.containers.run(busybox_image, ["sh", "-c", WORKLOAD_CMD], detach=True,
                                                   labels={LABEL: "churn"},
                                                   ports={"80/tcp": (f"127.0.{60 + cycle}.{k + 2}", free_port())})
                      for k in range(2)]
            time.sleep(1.5)
            for c in others:
                c.stop(timeout=2)
                c.remove(force=True)
            time.sleep(1.5)
    finally:
        stop.set()
        for t in threads:
            if t.is_alive():
                t.join(10)
        onprem.reload()  # state at the end, before the clean-up removes it
        for c in docker_client.containers.list(all=True, filters={"label": LABEL}):
            c.remove(force=True)
    failed = [o for o in outcomes if o[1] != "ok"]
    assert len(outcomes) > 50 and failed == [], (len(outcomes), failed[:5])
    assert mac(br) == before
    assert onprem.status == "running"  # it served to the end
