"""A booted Debian machine for the deploy tests: one instance of the ECS emulator (a node image booted with
systemd as PID 1 on the private Docker Engine, cloud-init's NoCloud source carrying the UserData), alone on a
VSwitch of its own whose gateway serves the region's package mirror; the machine reaches nothing else. Used by
tests/deploy/test_systemd_service.py (install.sh and the service) and tests/deploy/test_debian_package.py
(the Debian package).

Also the checkout's sources as the machine gets them, and the project's dependencies as wheels, built once per
pyproject.toml and Python version in a cache beside the node images."""

from __future__ import annotations

import contextlib
import hashlib
import io
import ipaddress
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from adapters.docker_engine.client import docker_client
from controller.ports import TAG_CONTROLLER, LaunchSpec
from lab.emulator.ecs import EcsEmulator
from lab.emulator.ecs_state import EcsConfig
from lab.emulator.node_images import NodeImageCache, image_by_id
from tests.fixtures_ecs import KEY_ID, KEY_SECRET, REGION, new_pool
from tests.support.wait import wait_until

__all__ = ["DOCKER_HOST", "REPO", "UNIT", "Machine", "booted_machine", "source_files", "wheelhouse"]

REPO = Path(__file__).resolve().parents[2]
DOCKER_HOST = os.environ.get("BURST_DOCKER_HOST", "unix:///var/lib/burst-controller-dev/docker.sock")
UNIT = "burst-controller.service"
SOURCES = ("pyproject.toml", "README.md", "controller", "adapters", "policies", "lab", "deploy", "docs")


class Machine:
    """A booted node seen from the host: commands through docker exec, files through put_archive."""

    def __init__(self, container: Any) -> None:
        self.container = container
        # the cloud around it: the emulator (ECS, and what a test installs on it) and its VSwitch, whose
        # gateway is where the machine reaches the emulator (port) and the mirror; set by booted_machine
        self.emu: Any = None
        self.gateway = ""
        self.port = 0
        self.cidr = ""
        # what tests/deploy/test_systemd_service.py adds: the SLB the burst policy routes to, the cloud
        # registry on the gateway, the on-prem workload's image
        self.slb: Any = None
        self.lb_id = ""
        self.registry = ""
        self.busybox_tar = b""

    def sh(self, cmd: str, *, check: bool = True, env: dict[str, str] | None = None) -> str:
        result = self.container.exec_run(["sh", "-c", cmd], environment=env or {})
        out = result.output.decode(errors="replace")
        if check and result.exit_code != 0:
            raise AssertionError(f"`{cmd}` exited {result.exit_code}:\n{out[-4000:]}")
        return out

    def rc(self, cmd: str) -> int:
        return int(self.container.exec_run(["sh", "-c", cmd]).exit_code)

    def put(self, path: str, text: str, *, owner: str = "root:root", mode: str = "0644") -> None:
        """Write a file as an operator would (install -o -g -m), through a staging copy in /root."""
        staged = f"/root/put-{random.randint(0, 1 << 30)}"
        self.put_tree("/", {staged.lstrip("/"): text.encode()})
        user, group = owner.split(":")
        self.sh(f"install -o {user} -g {group} -m {mode} {staged} {path} && rm {staged}")

    def put_tree(self, where: str, files: dict[str, bytes]) -> None:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, body in files.items():
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(body), 0o755 if name.endswith(".sh") else 0o644
                tar.addfile(info, io.BytesIO(body))
        assert self.container.put_archive(where, buf.getvalue())

    def show(self, *props: str) -> dict[str, str]:
        out = self.sh(f"systemctl show {UNIT} " + " ".join(f"-p {p}" for p in props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, since: str = "") -> str:
        cursor = f"--after-cursor='{since}'" if since else ""
        return self.sh(f"journalctl -u {UNIT} --no-pager -o cat {cursor}", check=False)

    def cursor(self) -> str:
        out = self.sh("journalctl -n 0 --show-cursor --no-pager", check=False)
        m = re.search(r"-- cursor: (\S+)", out)
        return m.group(1) if m else ""

    def status(self) -> dict[str, Any]:
        return dict(json.loads(self.sh("curl -sf --max-time 5 http://127.0.0.1:9180/v1/status")))

    def active_pid(self) -> int:
        """The main PID once the unit is active and its status endpoint answers (0 until then)."""
        s = self.show("ActiveState", "MainPID")
        if s.get("ActiveState") != "active" or s.get("MainPID", "0") == "0":
            return 0
        return int(s["MainPID"]) if self.rc("curl -sf --max-time 5 http://127.0.0.1:9180/readyz") == 0 else 0


@contextlib.contextmanager
def booted_machine(image_id: str, user_data: str, *, tag: str,
                   prepare: Callable[[EcsEmulator], None] | None = None) -> Iterator[Machine]:
    """One machine of ``image_id`` booted by an emulator of its own, up with cloud-init done. ``prepare`` sees
    the emulator before it starts (to install more of the cloud on its endpoint). Leaving removes the
    machine, its network and the emulator."""
    image = image_by_id(image_id)
    assert image is not None, image_id
    assert NodeImageCache().is_built(image.recipe), "node images not built: run scripts/services.sh start"
    client = docker_client(DOCKER_HOST, None, timeout=300)
    client.ping()
    cidr = f"10.215.{random.randint(1, 254)}.0/28"
    gateway = str(ipaddress.ip_network(cidr).network_address + 1)
    emu = EcsEmulator(host=gateway, access_keys={KEY_ID: KEY_SECRET},
                      config=EcsConfig(boot_delay=0.2, stop_delay=0.2, node_engine=DOCKER_HOST,
                                       vswitches={"vsw-t": cidr}))
    if prepare is not None:
        prepare(emu)
    emu.start()
    try:
        pool = new_pool(emu, read_timeout=30)
        spec = LaunchSpec(region=REGION, instance_types=("ecs.c6.large",), zones=("cn-test-a",), image_id=image_id,
                          security_group_id="sg-t", vswitches={"cn-test-a": "vsw-t"}, user_data=user_data,
                          tags={TAG_CONTROLLER: tag})
        [inst] = pool.launch(spec, 1, f"intent-{random.randint(0, 1 << 30)}")
        wait_until("the machine Running", lambda: pool.get([inst.id])[0].state.value == "running", 300, 1,
                   retry=(AssertionError, ValueError))
        m = Machine(client.containers.get(f"ecs-{inst.id}"))
        out = m.sh("cloud-init status --wait", check=False)
        assert "done" in out, out + m.sh("tail -n 40 /var/log/cloud-init-output.log", check=False)
        m.emu, m.gateway, m.port, m.cidr = emu, gateway, emu.server.port, cidr
        yield m
    finally:
        emu.stop()  # removes the machines it still runs (no state file): a failed test leaks nothing here
        client.close()


def source_files() -> dict[str, bytes]:
    """The checkout's sources as ``src/...`` paths (what deploy/install.sh and deploy/build-deb.sh read)."""
    files: dict[str, bytes] = {}
    for top in SOURCES:
        base = REPO / top
        paths = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for p in paths:
            if "__pycache__" in p.parts or p.suffix == ".pyc":
                continue
            files[f"src/{p.relative_to(REPO)}"] = p.read_bytes()
    return files


def wheelhouse(work: Path) -> Path:
    """The project's dependencies as wheels, and the build backend (setuptools, wheel) a pip install of the
    project needs; not the project itself. For the host's Python, 3.11 like Debian 12's. Built once per
    pyproject.toml and Python version, in a cache beside the node images (resolving them takes minutes on a
    loaded machine), from a copy of the source in ``work``: pip would leave build/ in the tree."""
    pyproject = (REPO / "pyproject.toml").read_bytes()
    key = hashlib.sha256(pyproject + sys.version.split()[0].encode()).hexdigest()[:16]
    out = NodeImageCache().root.parent / f"wheels-{key}"
    if not (out / "done").exists():
        for name, body in source_files().items():
            path = work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
        building = work / "wheels"
        pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "-w", str(building)]
        for args in ([str(work / "src")], ["setuptools>=77", "wheel"]):
            done = subprocess.run(pip + args, capture_output=True, text=True, timeout=1200, check=False)
            assert done.returncode == 0, done.stderr[-3000:]
        for own in building.glob("burst_controller-*.whl"):  # the project is built from its source
            own.unlink()
        (building / "done").write_text("")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(out, ignore_errors=True)
        shutil.move(str(building), out)
    return out
