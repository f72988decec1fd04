"""The Debian package of the controller (deploy/debian/), built here with Debian's own tooling
(deploy/build-deb.sh: dpkg-buildpackage, debhelper, dh-virtualenv; offline, the dependencies from the wheels
the systemd suite uses), then installed with apt on a clean, booted Debian 12 machine (the ECS emulator's
stock node image: systemd 252 as PID 1, python3 for cloud-init, no Docker, no internet). There: `burstctl
--version` prints the package's version, the unit is in /lib/systemd/system and `systemd-analyze verify`
passes on it, the user and the config's owners and modes are those of deploy/install.sh; pointed at the
emulator, the service starts and serves; `apt-get remove` stops it and keeps the state directory (a marker
file and the state database) and the edited config; installing again brings the service back on them; a
purge removes the package's config and still keeps the state.

The tests run in order on the one machine."""

from __future__ import annotations

import re
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.emulator.node_images import IMAGES
from tests.fixtures_ecs import KEY_ID, KEY_SECRET, REGION
from tests.support.booted import REPO, UNIT, Machine, booted_machine, wheelhouse
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(900)  # a build and a booted machine: minutes when loaded

STOCK_12 = IMAGES[0].image_id
ETC = "/etc/burst-controller"
STATE = "/var/lib/burst-controller"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
APT = "DEBIAN_FRONTEND=noninteractive apt-get -y -q"


def _wait(what: str, check: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    return wait_until(what, check, timeout, every, retry=(AssertionError, ValueError))


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    wheels = wheelhouse(tmp_path_factory.mktemp("wheels"))
    started = time.monotonic()
    build = ["bash", str(REPO / "deploy/build-deb.sh"), "--wheels", str(wheels), "--out", str(out)]
    done = subprocess.run(build, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    [package] = out.glob("burst-controller_*.deb")
    size = package.stat().st_size / 1e6
    print(f"deb: {package.name} built in {time.monotonic() - started:.0f}s, {size:.0f} MB")
    assert not (REPO / "debian").exists() and not (REPO / "build").exists()  # the checkout is left as it was
    return package


@pytest.fixture(scope="module")
def machine(deb: Path) -> Iterator[Machine]:
    with booted_machine(STOCK_12, "#cloud-config\n{}\n", tag="debian-package") as m:
        m.put_tree("/root", {deb.name: deb.read_bytes()})
        yield m


def _dpkg_deb(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], capture_output=True, text=True, check=True).stdout.strip()


def _field(deb: Path, name: str) -> str:
    return _dpkg_deb("-f", str(deb), name)


def test_the_package_says_what_it_is_and_holds_the_deploy_files(deb: Path, tmp_path: Path) -> None:
    assert _field(deb, "Package") == "burst-controller" and _field(deb, "Version") == VERSION
    depends = _field(deb, "Depends")
    assert "python3.11" in depends and "systemd" in depends and "libc6 (>= 2." in depends, depends
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True)
    for shipped, there in (("deploy/burst-controller.service", "lib/systemd/system/burst-controller.service"),
                           ("deploy/burst-controller.sysusers", "usr/lib/sysusers.d/burst-controller.conf"),
                           ("deploy/controller.yaml", "etc/burst-controller/controller.yaml"),
                           ("deploy/node-bootstrap.yaml.tmpl",
                            "opt/burst-controller/share/node-bootstrap.yaml.tmpl"),
                           ("deploy/grafana/burst-controller.json",
                            "opt/burst-controller/share/grafana/burst-controller.json")):
        assert (tmp_path / there).read_bytes() == (REPO / shipped).read_bytes(), there
    venv = tmp_path / "opt/burst-controller/venv"
    assert (venv / "bin/burstctl").read_text().startswith("#!/opt/burst-controller/venv/bin/python\n")
    assert (venv / "bin/python3.11").readlink() == Path("/usr/bin/python3.11")  # Debian's interpreter
    # the config and the examples are dpkg's conffiles: an edited one is kept on upgrade and remove
    conffiles = _dpkg_deb("-I", str(deb), "conffiles").split()
    assert f"{ETC}/controller.yaml" in conffiles and f"{ETC}/policies.d/web.yaml.example" in conffiles, conffiles


def test_installs_offline_on_a_clean_debian_12(machine: Machine, deb: Path) -> None:
    assert machine.rc("dpkg -s burst-controller >/dev/null 2>&1") != 0
    assert machine.rc("id burst-controller") != 0
    started = time.monotonic()
    out = machine.sh(f"{APT} install /root/{deb.name} 2>&1")
    print(f"deb: installed in {time.monotonic() - started:.0f}s")
    # nothing fetched: the machine had every dependency (apt "gets" only the .deb it was given)
    fetched = re.findall(r"^Get:\S* (\S+)", out, re.MULTILINE)
    assert "Need to get 0 B/" in out and fetched == [f"/root/{deb.name}"], out
    assert "no docker group on this machine; after installing Docker, run dpkg-reconfigure burst-controller" \
        in out, out
    status = machine.sh("dpkg-query -W -f '${Status} ${Version}' burst-controller")
    assert status == f"install ok installed {VERSION}"
    assert machine.sh("burstctl --version").strip() == f"burstctl {VERSION}"
    # the unit in its place, as shipped, neither enabled nor started before the config is edited
    unit = f"/lib/systemd/system/{UNIT}"
    assert machine.sh(f"cat {unit}") == (REPO / "deploy/burst-controller.service").read_text()
    assert machine.sh(f"systemctl is-enabled {UNIT}", check=False).strip() == "disabled"
    assert machine.show("ActiveState")["ActiveState"] == "inactive"
    verify = machine.container.exec_run(["systemd-analyze", "verify", UNIT])
    assert verify.exit_code == 0 and not verify.output.strip(), verify.output.decode()
    # the user and the owners and modes of deploy/install.sh
    assert "(burst-controller)" in machine.sh("id burst-controller")
    modes = machine.sh(f"stat -c '%n %U:%G %a' {ETC} {ETC}/controller.yaml {ETC}/status.token").splitlines()
    assert modes == [f"{ETC} root:burst-controller 750", f"{ETC}/controller.yaml root:burst-controller 640",
                     f"{ETC}/status.token burst-controller:burst-controller 600"], modes
    assert len(machine.sh(f"cat {ETC}/status.token").strip()) == 64
    examples = machine.sh(f"ls {ETC}/policies.d").split()
    assert examples and all(n.endswith(".yaml.example") for n in examples), examples


def test_the_service_starts_and_serves(machine: Machine) -> None:
    """The operator's edits (the cloud endpoint, here the emulator on the VSwitch gateway, and its AccessKey),
    then `burstctl config validate` and `systemctl enable --now`."""
    config = machine.sh(f"cat {ETC}/controller.yaml")
    for old, new in (("controller_id: dc1-burst", "controller_id: deb-test"),
                     ("region: cn-hangzhou", f"region: {REGION}"),
                     ("endpoint: null ", f"endpoint: http://{machine.gateway}:{machine.port}")):
        assert old in config, old
        config = config.replace(old, new)
    machine.put(f"{ETC}/controller.yaml", config, owner="root:burst-controller", mode="0640")
    machine.put(f"{ETC}/environment", f"ALIBABA_CLOUD_ACCESS_KEY_ID={KEY_ID}\n"
                f"ALIBABA_CLOUD_ACCESS_KEY_SECRET={KEY_SECRET}\n", mode="0600")
    assert "valid" in machine.sh("burstctl config validate 2>&1")
    started = time.monotonic()
    machine.sh(f"systemctl enable --now {UNIT}")
    pid = _wait("the unit active and ready", machine.active_pid, 300, 2)
    print(f"deb: service ready {time.monotonic() - started:.0f}s after `systemctl enable --now`")
    assert machine.sh(f"ps -o user= -p {pid}").strip() == "burst-controller"
    assert machine.status()["controller_id"] == "deb-test"
    assert machine.sh(f"stat -c '%U %a' {STATE}").split() == ["burst-controller", "700"]
    assert machine.rc(f"test -s {STATE}/state.db") == 0


def test_remove_stops_the_service_and_keeps_state_and_config(machine: Machine) -> None:
    machine.sh(f"echo kept > {STATE}/marker")
    config = machine.sh(f"sha256sum {ETC}/controller.yaml {ETC}/status.token {ETC}/environment")
    out = machine.sh(f"{APT} remove burst-controller 2>&1")
    assert machine.sh("dpkg-query -W -f '${Status}' burst-controller") == "deinstall ok config-files", out
    assert machine.show("ActiveState")["ActiveState"] in ("inactive", "failed")  # stopped by the prerm
    assert machine.rc("pgrep -u burst-controller") != 0
    for gone in (f"/lib/systemd/system/{UNIT}", "/usr/bin/burstctl", "/opt/burst-controller/venv"):
        assert machine.rc(f"test -e {gone}") != 0, gone
    assert machine.sh(f"cat {STATE}/marker").strip() == "kept"
    assert machine.rc(f"test -s {STATE}/state.db") == 0
    assert machine.sh(f"sha256sum {ETC}/controller.yaml {ETC}/status.token {ETC}/environment") == config
    assert "(burst-controller)" in machine.sh("id burst-controller")


def test_installing_again_brings_the_service_back_on_its_state(machine: Machine, deb: Path) -> None:
    machine.sh(f"{APT} install /root/{deb.name} 2>&1")
    _wait("the service active again", machine.active_pid, 300, 2)  # it was enabled: the postinst restarts it
    assert machine.status()["controller_id"] == "deb-test"
    assert machine.sh(f"cat {STATE}/marker").strip() == "kept"


def test_purge_removes_the_config_and_keeps_the_state(machine: Machine) -> None:
    out = machine.sh(f"{APT} purge burst-controller 2>&1")
    assert f"{STATE} kept" in out, out
    assert machine.rc("dpkg -s burst-controller >/dev/null 2>&1") != 0
    assert machine.rc("pgrep -u burst-controller") != 0
    for gone in (f"{ETC}/controller.yaml", f"{ETC}/status.token", f"{ETC}/policies.d"):
        assert machine.rc(f"test -e {gone}") != 0, gone
    # the operator's own file stays
    assert machine.sh(f"cat {ETC}/environment").startswith("ALIBABA_CLOUD_ACCESS_KEY_ID=")
    assert ETC not in machine.sh("dpkg-statoverride --list")
    assert machine.sh(f"cat {STATE}/marker").strip() == "kept"
    assert machine.rc(f"test -s {STATE}/state.db") == 0
