"""Node bootstrap UserData: valid cloud-init under 32 KB, a short-lived server certificate that really
serves mutual TLS for a node address, no long-lived secret (no cloud secret, no CA key, no password) and no
registry credential at all; Docker found wherever the image has it; the metadata block put back at every
engine start. tests/lab/emulator/test_booted_nodes.py boots it on real Debian machines."""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509
from ruamel.yaml import YAML

from adapters.docker_engine.bootstrap import PIN_BRIDGE_MAC, BootstrapSettings, NodeBootstrap
from adapters.pki import CertificateAuthority
from controller.errors import ConfigError
from controller.ports import TAG_CONTROLLER, LaunchSpec
from tests.fixtures_ecs import KEY_SECRET, REGION
from tests.support.net import free_port


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    authority = CertificateAuthority(tmp_path / "pki")
    authority.ensure()
    return authority


def test_rendered_user_data_is_small_valid_and_carries_no_long_lived_secret(ca: CertificateAuthority) -> None:
    boot = NodeBootstrap(BootstrapSettings(ca=ca, node_networks=("127.0.1.0/24",),
                                           insecure_registries=("10.0.0.1:5002",)))
    rendered_at = dt.datetime.now(dt.UTC)  # not at import: other modules' tests may run for minutes between
    text = boot.render("intent-42")
    assert len(text.encode()) < 32 * 1024
    assert text.startswith("#cloud-config\n")
    doc = YAML(typ="safe").load(text)
    files = {f["path"]: f for f in doc["write_files"]}
    assert files["/etc/docker/tls/server-key.pem"]["permissions"] == "0600"
    assert files["/etc/docker/tls/ca.pem"]["content"].strip() == ca.ca_cert_path.read_text().strip()
    dropin = files["/etc/systemd/system/docker.service.d/10-burst-tls.conf"]["content"]
    assert "--tlsverify" in dropin and "tcp://0.0.0.0:2376" in dropin
    # the engine wherever the distribution puts it (Debian 12's docker.io: /usr/sbin/dockerd, no /usr/bin one)
    assert "ExecStart=/usr/local/sbin/burst-dockerd " in dropin
    assert "/usr/sbin/dockerd" in files["/usr/local/sbin/burst-dockerd"]["content"]
    # the metadata block is part of every engine start (not a one-off rule), and fails the start if it cannot be
    assert "ExecStartPost=/bin/sh /usr/local/sbin/burst-block-metadata" in dropin
    assert "100.100.100.200" in files["/usr/local/sbin/burst-block-metadata"]["content"]
    assert json.loads(files["/etc/docker/daemon.json"]["content"]) == {"insecure-registries": ["10.0.0.1:5002"]}
    # no registry credential: the controller passes one with each pull, nothing rests on the node
    assert "docker login" not in text and "registry-token" not in text and "password" not in text.lower()
    assert not any("/run/burst" in f for f in files)

    cert = x509.load_pem_x509_certificate(files["/etc/docker/tls/server-cert.pem"]["content"].encode())
    assert cert.not_valid_after_utc - rendered_at <= dt.timedelta(days=7, minutes=1)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert len(sans.get_values_for_type(x509.IPAddress)) == 254

    ca_key = ca.ca_key_path.read_text()
    body = "".join(line for line in ca_key.splitlines() if "-----" not in line)
    flat = text.replace("\n", "").replace(" ", "")
    # PKCS#8 P-256: 48 base64 characters of shared ASN.1 header, then the private scalar, then the public
    # key (which the CA certificate carries, legitimately)
    assert ca_key.strip() not in text and body[48:88] not in flat
    assert KEY_SECRET not in text and "PRIVATE KEY" in text  # only the node's own key
    assert text.count("PRIVATE KEY-----") == 2  # BEGIN and END of one key


def test_registry_hosts_are_checked(ca: CertificateAuthority) -> None:
    boot = NodeBootstrap(BootstrapSettings(ca=ca, node_networks=("127.0.1.0/24",),
                                           insecure_registries=("evil host\nruncmd:",)))
    with pytest.raises(ConfigError) as info:
        boot.render("x")
    assert "is not host[:port]" in info.value.problems[0]
    plain = NodeBootstrap(BootstrapSettings(ca=ca, node_networks=("127.0.1.0/24",))).render("none")
    files = {f["path"]: f["content"] for f in YAML(typ="safe").load(plain)["write_files"]}
    assert json.loads(files["/etc/docker/daemon.json"]) == {}


def test_size_limits(ca: CertificateAuthority) -> None:
    big = NodeBootstrap(BootstrapSettings(ca=ca, node_networks=("10.1.0.0/22",))).render("big")
    assert len(big.encode()) < 32 * 1024
    with pytest.raises(ConfigError):
        NodeBootstrap(BootstrapSettings(ca=ca, node_networks=("10.1.0.0/21",)))
    with pytest.raises(ConfigError):
        NodeBootstrap(BootstrapSettings(ca=ca, node_networks=("10.1.0.0/24",), cert_days=365))


def test_node_certificate_serves_mutual_tls_on_a_node_address(ca: CertificateAuthority) -> None:
    text = NodeBootstrap(BootstrapSettings(ca=ca, node_networks=("127.0.1.0/24",))).render("tls")
    files = {f["path"]: f["content"] for f in YAML(typ="safe").load(text)["write_files"]}
    tmp = ca.dir
    (tmp / "node.pem").write_text(files["/etc/docker/tls/server-cert.pem"])
    (tmp / "node.key").write_text(files["/etc/docker/tls/server-key.pem"])
    (tmp / "node-ca.pem").write_text(files["/etc/docker/tls/ca.pem"])
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tmp / "node-ca.pem"))
    server_ctx.load_cert_chain(tmp / "node.pem", tmp / "node.key")
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    address, port = "127.0.1.77", free_port()
    listener = socket.create_server((address, port))
    outcome: list[str] = []

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                outcome.append(tls.getpeercert()["subject"][0][0][1])
                tls.sendall(b"ok")
        except ssl.SSLError as exc:
            outcome.append(f"refused: {exc.reason}")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = ca.client_files()
    ctx = ssl.create_default_context(cafile=str(client.ca))
    ctx.load_cert_chain(client.cert, client.key)
    with socket.create_connection((address, port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=address) as tls:  # hostname = the node's IP
        assert tls.recv(2) == b"ok"
    thread.join(5)
    listener.close()
    assert outcome == ["controller"]


def test_user_data_reaches_the_instance(ca: CertificateAuthority, ecs_emulator, make_ecs_pool) -> None:  # type: ignore[no-untyped-def]
    text = NodeBootstrap(BootstrapSettings(ca=ca, node_networks=("127.0.1.0/24",))).render("ud")
    spec = LaunchSpec(region=REGION, instance_types=("ecs.g7.large",), zones=(f"{REGION}-a",), image_id="img",
                      security_group_id="sg", user_data=text, tags={TAG_CONTROLLER: "dc1"})
    make_ecs_pool(ecs_emulator).launch(spec, 2, "ud-intent")
    stored = list(ecs_emulator.state.user_data.values())
    assert [base64.b64decode(s).decode() for s in stored] == [text]


def test_node_pins_its_docker_bridge_mac_after_every_engine_start(ca: CertificateAuthority, tmp_path: Path) -> None:
    """Replicas come and go on a node's docker0; the node's copy of deploy/pin-bridge-mac.sh runs after each
    start of its Docker Engine (ExecStartPost), and that copy really pins a bridge (run here on a bridge of
    this test's own)."""
    text = NodeBootstrap(BootstrapSettings(ca=ca, node_networks=("127.0.1.0/24",))).render("pin")
    files = {f["path"]: f for f in YAML(typ="safe").load(text)["write_files"]}
    script = files["/usr/local/sbin/burst-pin-bridge-mac"]
    assert script["permissions"] == "0755"
    assert script["content"].strip() == PIN_BRIDGE_MAC.read_text().strip()
    dropin = files["/etc/systemd/system/docker.service.d/10-burst-tls.conf"]["content"]
    assert "ExecStartPost=-/bin/sh /usr/local/sbin/burst-pin-bridge-mac docker0" in dropin.splitlines()
    (tmp_path / "pin.sh").write_text(script["content"])
    bridge = f"bst{secrets.token_hex(4)}"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    try:
        done = subprocess.run(["sh", str(tmp_path / "pin.sh"), bridge], check=False, capture_output=True, text=True, timeout=15)
        assert done.returncode == 0, done.stderr
        assert Path(f"/sys/class/net/{bridge}/addr_assign_type").read_text().strip() == "3"  # NET_ADDR_SET
    finally:
        subprocess.run(["ip", "link", "del", bridge], check=False)
