"""`burstctl demo --once`, the README's main job, run as a user runs it (its own process, the embedded
default lab on the real components, its instances booted stock Debian 12 machines): one burst and drain with
the one-line summary (trigger -> serving phase by phase) and exit 0, and a demo
stopped by SIGTERM halfway that still removes everything it started (HAProxy and the registries run in
sessions of their own and would otherwise outlive it)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import docker
import psutil
import pytest

from controller.ports import LABEL_CONTROLLER

pytestmark = pytest.mark.timeout(720)  # booted nodes: minutes each on a shared machine

ROOT = Path(__file__).resolve().parents[2]
LAB_LABEL = "io.burst-controller.lab"
SUMMARY = re.compile(r"^demo: replicas launched 2, requests served by cloud replicas (\d+) of (\d+), failed requests 0, "
                     r"trigger to first cloud replica serving ([\d.]+)s \((decide [\d.]+s, launch [\d.]+s, "
                     r"boot [\d.]+s, bootstrap [\d.]+s, pull [\d.]+s, start [\d.]+s, admit [\d.]+s)\), "
                     r"load stop to drained ([\d.]+)s: OK$")
SCOPE = "io.burst-controller.ecs-emulator"  # the emulator's booted machines
VSWITCH = "vsw-lab"  # the lab's VSwitch (lab/parts.py)


def lab_things(client: docker.DockerClient) -> set[str]:
    """Processes of a lab (their command line names a burst-lab- directory) and lab containers."""
    procs = set()
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(p.info["cmdline"] or ())
        if "/burst-lab-" in cmdline:
            procs.add(f"pid {p.info['pid']}: {cmdline[:120]}")
    def listed(label: str) -> list[Any]:  # a container removed between the list and its inspect is left out
        return list(client.containers.list(all=True, filters={"label": label}, ignore_removed=True))

    containers = {f"container {c.name}" for c in listed(LAB_LABEL)}
    cloud = {f"container {c.name}" for c in listed(LABEL_CONTROLLER)
             if c.labels.get(LABEL_CONTROLLER, "").startswith("lab-")}  # shared-engine cloud replicas
    # booted machines of other emulators (the other tests' own, running beside these) are not the lab's: their
    # networks are named after another VSwitch than the lab's
    nets = client.networks.list(filters={"label": SCOPE})
    foreign = {n.attrs.get("Labels", {}).get(SCOPE) for n in nets if not n.name.endswith(f"-{VSWITCH}")}
    machines = {f"node {c.name}" for c in listed(SCOPE) if c.labels.get(SCOPE) not in foreign}
    networks = {f"network {n.name}" for n in nets if n.attrs.get("Labels", {}).get(SCOPE) not in foreign}
    return procs | containers | cloud | machines | networks


def demo(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "controller.cli.main", "demo", "--once", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_demo_once_bursts_drains_prints_its_summary_and_leaves_nothing(docker_client: docker.DockerClient) -> None:
    before = lab_things(docker_client)
    proc = demo()
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, (out, err[-3000:])
    line = out.strip().splitlines()[-1]
    match = SUMMARY.match(line)
    assert match, line
    cloud, total, first, phases, drained = match.groups()
    assert 0 < int(cloud) < int(total) and float(first) > 0 and float(drained) > 0
    # trigger -> serving phase by phase on a booted stock Debian 12 node: the phases add up to the whole
    secs = [float(x) for x in re.findall(r"([\d.]+)s", phases)]
    assert abs(sum(secs) - float(first)) < max(3.0, 0.1 * float(first)), line
    assert "boot" in phases and "pull" in phases and float(re.search(r"bootstrap ([\d.]+)s", phases)[1]) > 0
    assert "Traceback" not in err
    assert lab_things(docker_client) - before == set()


def test_demo_stopped_by_sigterm_removes_everything_it_started(docker_client: docker.DockerClient) -> None:
    before = lab_things(docker_client)
    proc = demo()
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    seen = []
    for line in proc.stderr:  # progress lines; the peak is when cloud replicas are on their way in
        seen.append(line)
        if "demo: peak" in line or time.monotonic() > deadline:
            break
    assert any("demo: peak" in s for s in seen), seen
    during = lab_things(docker_client) - before
    assert any("haproxy" in t for t in during) and any("docker-registry" in t for t in during), during
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    assert proc.wait(timeout=300) == 130, rest[-2000:]  # booted machines are removed before it exits
    assert "interrupted; cleaning up" in rest and "Traceback" not in rest
    assert lab_things(docker_client) - before == set()
