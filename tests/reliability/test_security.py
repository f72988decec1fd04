"""Security of a running `burstctl run` on the lab, with distinctive secret values planted: the access key
secret (the emulator accepts only that key), the cloud registry password (basic auth, from a 0600 file), a
workload secret env value (the on-prem container's, named in workload.secret_env) and the status token.
None may appear in the logs, the status/events/history/metrics answers, any table of the state database,
the process arguments of the controller and of anything it spawns, or the user data it sent to ECS.
Also: the status endpoint listens on loopback, mutations answer 401/403 (token compared in constant time),
secret files readable by others are refused, the node Docker endpoint refuses clients without the
controller's certificate, and a rendered node bootstrap carries no long-lived secret."""

from __future__ import annotations

import ast
import base64
import contextlib
import datetime as dt
import inspect
import os
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import httpx
import psutil
import pytest
from cryptography import x509

from adapters.docker_engine.bootstrap import BootstrapSettings, NodeBootstrap
from adapters.pki import CertificateAuthority
from controller.config import load_config_text, parse_listen
from controller.status import app as status_module
from lab.emulator.rpc_wire import AccessKey
from lab.lab import Lab
from lab.loadgen import LoadGenerator
from lab.parts import LAB_LABEL, WORKLOAD_CMD
from tests.conftest import DOCKER_TLS_ENDPOINT, PKI_DIR
from tests.reliability.harness import Invariants, record, wait_for
from tests.support.controller_process import ControllerProcess

ROOT = Path(__file__).resolve().parents[2]
MARK = uuid.uuid4().hex[:8]
SECRETS = {
    "access key secret": f"AKSECRET-{MARK}-7f3c9e1d",
    "registry password": f"REGPASS-{MARK}-5b2a8c4e",
    "workload secret env": f"ENVSECRET-{MARK}-9d4f1a6b",
}
KEY_ID = f"LTAIrel{MARK}"


def _find(haystacks: dict[str, str], needles: dict[str, str]) -> list[str]:
    found = []
    for what, value in needles.items():
        for form in {value, quote(value, safe=""), base64.b64encode(value.encode()).decode()}:
            found += [f"{what} in {where}" for where, text in haystacks.items() if form in text]
    return found


def _plant(lab: Lab) -> Path:
    """The secrets into the lab: emulator key, registry password file, on-prem container env, policy, config."""
    assert lab.emulator is not None and lab.docker is not None
    lab.emulator.server.access_keys[KEY_ID] = AccessKey(KEY_ID, SECRETS["access key secret"])
    password = lab.root / "registry.password"
    password.write_text(SECRETS["registry password"] + "\n")
    password.chmod(0o600)
    cfg = lab.config_path.read_text()
    cfg = cfg.replace("auth: {type: none}", f"auth: {{type: basic, username: burst, password_file: {password}}}")
    lab.config_path.write_text(cfg)
    # the on-prem workload again, now with a secret in its environment
    old = lab.onprem_container
    old.reload()
    port = int(old.attrs["HostConfig"]["PortBindings"]["80/tcp"][0]["HostPort"])
    image = old.attrs["Config"]["Image"]
    old.remove(force=True)
    lab.onprem_container = lab.docker.containers.run(
        image, ["sh", "-c", WORKLOAD_CMD], name=f"burst-lab-onprem-{lab.id}", detach=True, hostname="onprem",
        labels={LAB_LABEL: lab.id, "app": f"web-{lab.id}"}, ports={"80/tcp": ("127.0.0.1", port)},
        environment={"API_TOKEN": SECRETS["workload secret env"], "PLAIN": "visible"})
    lab.policy_path.write_text(lab.policy_path.read_text().replace(
        "  service_port: 80\n", "  service_port: 80\n  secret_env: [API_TOKEN]\n"))
    lab.env = lambda: {**os.environ, "ALIBABA_CLOUD_ACCESS_KEY_ID": KEY_ID,  # type: ignore[method-assign]
                       "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRETS["access key secret"]}
    return password


def _process_args(pid: int) -> str:
    """The command lines of a process and its children; a child that exits after the listing is left out
    (checking is_running() first would leave that window open)."""
    proc = psutil.Process(pid)
    args = []
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):  # ZombieProcess included
            args.append(" ".join(p.cmdline()))
    return "\n".join(args)


def test_planted_secrets_never_leak(rlab: Lab, rcontroller: ControllerProcess) -> None:
    _plant(rlab)
    inv = Invariants(rlab)
    load = LoadGenerator(rlab.url)
    rcontroller.start()
    assert rcontroller.proc is not None
    try:
        load.set_clients(16)
        wait_for("a cloud replica serving", lambda: len(rlab.cloud_servers()) >= 1, 120, 0.3)
        # the secret did travel where it must: into the replica's environment on the node
        [container, *_] = [c for c in rlab.cloud_containers() if c.status == "running"]
        assert f"API_TOKEN={SECRETS['workload secret env']}" in container.attrs["Config"]["Env"]
        args_running = _process_args(rcontroller.proc.pid)
        load.set_clients(1)
        wait_for(f"a full drain ({inv.leaks()})", lambda: not inv.leaks(), 90, 0.3)
        args_running += "\n" + _process_args(rcontroller.proc.pid)
        url = rlab.status_url
        answers = {path: httpx.get(f"{url}{path}", timeout=10, trust_env=False).text
                   for path in ("/v1/status", "/v1/events?limit=1000", "/v1/policies/web",
                                "/v1/policies/web/history?since=1", "/metrics", "/openapi.json", "/readyz")}
        assert rcontroller.terminate() == 0
    finally:
        load.stop()
    assert rlab.emulator is not None
    user_data = {f"user data of launch {k}": base64.b64decode(v).decode(errors="replace")
                 for k, v in rlab.emulator.state.user_data.items()}
    logs = {f"controller log {i}": (rlab.root / f"controller-{i}.log").read_text()
            for i in range(1, rcontroller.starts + 1)}
    haystacks = {**logs, **{f"GET {p}": t for p, t in answers.items()}, **user_data,
                 "state database (every table)": inv.journal.dump(), "process arguments": args_running}
    needles = {**SECRETS, "status token": rlab.token}
    assert _find(haystacks, needles) == []
    # the search can find things: the events and the logs do name the workload and the launches
    assert "launch" in answers["/v1/events?limit=1000"] and "launched" in "".join(logs.values())
    assert len(inv.journal.tables()) >= 6
    record("security_leaks", searched=sorted(haystacks), secrets=sorted(needles), found=0,
           tables=len(inv.journal.tables()))


def test_status_endpoint_listens_on_loopback_and_guards_mutations(rlab: Lab, rcontroller: ControllerProcess) -> None:
    # the default when nothing is configured
    cfg = load_config_text("controller_id: dc1-burst\n", "c.yaml")
    assert parse_listen(cfg.status.listen)[0] == "127.0.0.1"
    rcontroller.start()
    assert rcontroller.proc is not None
    listening = [c.laddr for c in psutil.Process(rcontroller.proc.pid).net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening), listening
    url = f"{rlab.status_url}/v1/policies/web"
    for action in ("pause", "resume", "drain"):
        none = httpx.post(f"{url}/{action}", timeout=10, trust_env=False)
        assert none.status_code == 401 and none.headers["www-authenticate"].startswith("Bearer")
        for wrong in ("wrong", rlab.token[:-1], rlab.token + "x", rlab.token.upper() if rlab.token.upper() != rlab.token
                      else "X" * len(rlab.token)):
            r = httpx.post(f"{url}/{action}", headers={"Authorization": f"Bearer {wrong}"}, timeout=10, trust_env=False)
            assert r.status_code == 403, (action, r.status_code)
        assert httpx.post(f"{url}/{action}", headers={"Authorization": f"Basic {rlab.token}"}, timeout=10,
                          trust_env=False).status_code == 401
    assert httpx.get(f"{rlab.status_url}/v1/status", timeout=10, trust_env=False).json()["policies"][0]["paused"] is False
    ok = httpx.post(f"{url}/pause", headers={"Authorization": f"Bearer {rlab.token}"}, timeout=10, trust_env=False)
    assert ok.status_code == 200  # the right token works: the refusals above were about the token
    assert rcontroller.terminate() == 0


def test_the_token_is_compared_in_constant_time() -> None:
    """The comparison in the status app is hmac.compare_digest, and no == / != touches the token."""
    tree = ast.parse(inspect.getsource(status_module))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and n.func.attr == "compare_digest" and getattr(n.func.value, "id", "") == "hmac"]
    assert calls, "hmac.compare_digest is not used"
    [require] = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "require_token"]
    for node in ast.walk(require):
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
            names = {getattr(x, "id", None) or getattr(x, "attr", None) for x in ast.walk(node)}
            assert not names & {"expected", "credentials", "token"}, ast.unparse(node)


@pytest.mark.parametrize("which", ["cloud credentials", "registry password", "status token"])
def test_secret_files_readable_by_others_are_refused(rlab: Lab, which: str) -> None:
    secret = rlab.root / "secret"
    cfg = rlab.config_path.read_text()
    if which == "cloud credentials":
        secret.write_text(f"access_key_id = {KEY_ID}\naccess_key_secret = {SECRETS['access key secret']}\n")
        cfg = cfg.replace("credentials: {source: env}", f"credentials: {{source: file, path: {secret}}}")
    elif which == "registry password":
        secret.write_text(SECRETS["registry password"] + "\n")
        cfg = cfg.replace("auth: {type: none}", f"auth: {{type: basic, username: burst, password_file: {secret}}}")
    else:
        secret.write_text(uuid.uuid4().hex + "\n")
        cfg = cfg.replace(f"token_file: {rlab.root / 'status.token'}", f"token_file: {secret}")
    assert str(secret) in cfg
    secret.chmod(0o644)
    rlab.config_path.write_text(cfg)
    env = {k: v for k, v in rlab.env().items() if not k.startswith("ALIBABA_CLOUD")} \
        if which == "cloud credentials" else rlab.env()
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "controller.cli.main", "run", "--config", str(rlab.config_path)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the controller started with a {which} file of mode 0644: {err[-1500:]}")
    assert proc.returncode == 2, (proc.returncode, err[-2000:])
    assert "other users" in err and "chmod 600" in err, err
    assert "Traceback" not in err and SECRETS["access key secret"] not in err + out
    record("security_file_mode", which=which, refused=True, seconds=round(time.monotonic() - started, 1))


def test_node_docker_endpoint_refuses_clients_without_the_certificate(tmp_path: Path) -> None:
    host, port = DOCKER_TLS_ENDPOINT.removeprefix("tcp://").rsplit(":", 1)
    url = f"https://{host}:{port}/_ping"

    def ping(cert: tuple[Path, Path] | None) -> httpx.Response:
        ctx = ssl.create_default_context(cafile=str(PKI_DIR / "ca.pem"))
        if cert is not None:
            ctx.load_cert_chain(str(cert[0]), str(cert[1]))
        with httpx.Client(verify=ctx, timeout=10, trust_env=False) as client:
            return client.get(url)

    # with the controller's client certificate: answered (so the refusals below are about the certificate)
    good = ping((PKI_DIR / "controller-cert.pem", PKI_DIR / "controller-key.pem"))
    assert good.status_code == 200 and good.text == "OK"
    with pytest.raises(httpx.HTTPError):  # no certificate at all
        ping(None)
    other = CertificateAuthority(tmp_path / "other-ca")
    other.ensure("someone else's CA")
    files = other.client_files()
    with pytest.raises(httpx.HTTPError):  # a client certificate from another CA
        ping((files.cert, files.key))
    plain = httpx.get(f"http://{host}:{port}/_ping", timeout=10, trust_env=False)  # plain HTTP on the TLS port
    assert plain.status_code == 400 and "HTTPS" in plain.text, plain.text
    record("security_node_tls", with_cert=200, without_cert="refused", other_ca="refused", plain_http="refused")


def test_rendered_user_data_carries_no_long_lived_secret(tmp_path: Path) -> None:
    """No CA key, no planted secret, no registry credential of any lifetime (pulls carry their own), and only
    a short-lived node certificate."""
    ca = CertificateAuthority(tmp_path / "ca")
    ca.ensure()
    boot = NodeBootstrap(BootstrapSettings(ca=ca, node_networks=("127.0.1.0/26",), cert_days=7,
                                           insecure_registries=("127.0.0.1:5002",)))
    now = dt.datetime.now(dt.UTC)
    text = boot.render("launch-1")
    assert ca.ca_key_path.read_text().strip().splitlines()[1] not in text  # the CA key never leaves
    assert _find({"user data": text}, SECRETS) == []
    certs = [x509.load_pem_x509_certificate(("-----BEGIN CERTIFICATE-----" + block.split("-----END CERTIFICATE-----")[0]
                                             + "-----END CERTIFICATE-----").replace("\n      ", "\n").encode())
             for block in text.split("-----BEGIN CERTIFICATE-----")[1:]]
    node = [c for c in certs if not c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca]
    assert node and all(c.not_valid_after_utc - now <= dt.timedelta(days=7, minutes=1) for c in node)
    assert "docker login" not in text and "registry-token" not in text
