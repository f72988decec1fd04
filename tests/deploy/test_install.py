"""deploy/install.sh staged into a temporary DESTDIR: the virtual environment with burstctl, the unit (which
then passes `systemd-analyze verify` against the staged tree), the sysusers.d file, the config (0640 in a 0750
directory), a 0600 token and the example policies; a second run keeps what ops changed."""

from __future__ import annotations

import os
import site
import stat
import subprocess
from pathlib import Path

from controller.config import load_config
from tests.deploy.systemd_root import prepare_root, verify

REPO = Path(__file__).resolve().parents[2]


def _install(dest: Path) -> subprocess.CompletedProcess[str]:
    # --no-deps: the dependencies come from the registry on a real install; here the test venv supplies them
    env = {**os.environ, "DESTDIR": str(dest), "PYTHON": "/usr/bin/python3", "PIP_INSTALL_ARGS": "--no-deps"}
    return subprocess.run(["bash", str(REPO / "deploy/install.sh")], capture_output=True, text=True, env=env,
                          timeout=300, check=False)


def test_install_into_destdir_is_complete_and_idempotent(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    first = _install(dest)
    assert first.returncode == 0, first.stdout + first.stderr
    etc = dest / "etc/burst-controller"
    burstctl = dest / "opt/burst-controller/venv/bin/burstctl"
    assert os.access(burstctl, os.X_OK)
    # the installed entry point runs (dependencies borrowed from the test venv, see _install)
    env = {**os.environ, "PYTHONPATH": site.getsitepackages()[0]}
    ran = subprocess.run([str(burstctl), "status", "--help"], capture_output=True, text=True, env=env,
                         timeout=120, check=False, cwd=tmp_path)
    assert ran.returncode == 0 and "--json" in ran.stdout, ran.stderr
    # the installed package finds the node bootstrap template and the script it embeds (installed beside the
    # venv, not in the checkout) and renders UserData with them
    share = dest / "opt/burst-controller/share"
    assert (share / "node-bootstrap.yaml.tmpl").read_text() == (REPO / "deploy/node-bootstrap.yaml.tmpl").read_text()
    assert os.access(share / "pin-bridge-mac.sh", os.X_OK)
    for shipped in ("prometheus/burst-controller.rules.yml", "grafana/burst-controller.json"):
        assert (share / shipped).read_text() == (REPO / "deploy" / shipped).read_text(), shipped
    version = subprocess.run([str(burstctl), "--version"], capture_output=True, text=True, env=env, timeout=120,
                             check=False, cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("burstctl "), version.stderr
    python = dest / "opt/burst-controller/venv/bin/python"
    probe = ("import adapters.docker_engine.bootstrap as b; from adapters.pki import CertificateAuthority; import sys, pathlib; "
             "ca = CertificateAuthority(pathlib.Path(sys.argv[1])); ca.ensure(); "
             "text = b.NodeBootstrap(b.BootstrapSettings(ca=ca, node_networks=('10.0.0.0/28',))).render('x'); "
             "print(b.__file__, b.DEFAULT_TEMPLATE, 'burst-pin-bridge-mac' in text)")
    ran = subprocess.run([str(python), "-c", probe, str(tmp_path / "pki")], capture_output=True, text=True, env=env,
                         timeout=120, check=False, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    module, template, embedded = ran.stdout.split()
    assert module.startswith(str(dest)) and template == str(share / "node-bootstrap.yaml.tmpl") and embedded == "True"
    unit = dest / "etc/systemd/system/burst-controller.service"
    assert unit.read_text() == (REPO / "deploy/burst-controller.service").read_text()
    cfg = load_config(etc / "controller.yaml")
    assert cfg.controller_id == "dc1-burst"
    token = etc / "status.token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text().strip()) == 64
    # modes here; the owners (root:burst-controller, the token the user's) only on a real install, which
    # tests/deploy/test_systemd_service.py does on a booted machine
    assert stat.S_IMODE(etc.stat().st_mode) == 0o750
    assert stat.S_IMODE((etc / "controller.yaml").stat().st_mode) == 0o640
    sysusers = dest / "etc/sysusers.d/burst-controller.conf"
    assert sysusers.read_text() == (REPO / "deploy/burst-controller.sysusers").read_text()
    examples = sorted(p.name for p in (etc / "policies.d").iterdir())
    assert examples and all(n.endswith(".yaml.example") for n in examples)  # none loaded before it is edited
    assert not list((etc / "policies.d").glob("*.yaml"))

    # the staged unit verifies against the staged tree (its ExecStart now exists)
    prepare_root(dest, unit)
    result = verify(dest, unit.name)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr

    # a second run upgrades in place and keeps what ops changed
    (etc / "controller.yaml").write_text("controller_id: edited-by-ops\n")
    old_token = token.read_text()
    second = _install(dest)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "exists, kept" in second.stdout
    assert (etc / "controller.yaml").read_text() == "controller_id: edited-by-ops\n"
    assert token.read_text() == old_token and stat.S_IMODE(token.stat().st_mode) == 0o600
    assert not (REPO / "build").exists()  # the checkout is left clean


def test_refuses_to_install_for_real_without_root(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # as root, run it as nobody instead; the check must fire before anything is written
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash", str(REPO / "deploy/install.sh")]
    else:
        cmd = ["bash", str(REPO / "deploy/install.sh")]
    env = {k: v for k, v in os.environ.items() if k != "DESTDIR"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=False, cwd="/")
    assert result.returncode != 0 and "run as root" in result.stderr
