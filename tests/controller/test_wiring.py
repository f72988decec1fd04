"""The wiring builds the real adapters from the controller config: node bootstrap user data from
``cloud.node_networks`` and the cloud registry's auth (none, basic, ACR temporary tokens)."""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import docker
import pytest
from cryptography import x509

from adapters.aliyun.credentials import CloudCredentials
from adapters.aliyun.credentials import StaticCredentials as CloudKeys
from adapters.docker_engine.node_runtime import DockerNodeRuntime
from adapters.pki import CertificateAuthority
from controller import service, wiring
from controller.config import load_config_text
from controller.errors import AuthError
from controller.ports import Node, WorkloadSpec
from lab.emulator.cr import install_cr
from lab.emulator.rpc import RpcServer
from lab.emulator.rpc_wire import AccessKey
from lab.localregistry import LocalRegistry
from tests.conftest import PKI_DIR
from tests.fixtures_replicas import replica_labels


def _node_certs(text: str) -> list[x509.Certificate]:
    certs = [x509.load_pem_x509_certificate(("-----BEGIN CERTIFICATE-----" + block.split("-----END CERTIFICATE-----")[0]
                                             + "-----END CERTIFICATE-----").replace("\n      ", "\n").encode())
             for block in text.split("-----BEGIN CERTIFICATE-----")[1:]]
    return [c for c in certs if not c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca]


def test_node_networks_give_bootstrap_user_data_naming_their_addresses(tmp_path: Path) -> None:
    CertificateAuthority(tmp_path / "pki").ensure()
    cfg = load_config_text(f"controller_id: dc1\nstate_dir: {tmp_path}\ncloud:\n"
                           "  node_networks: [10.20.0.0/29, 10.20.1.0/30]\n", "c.yaml")
    text = wiring._user_data(cfg)(SimpleNamespace(name="web"), "r1")
    [cert] = _node_certs(text)
    ips = {str(ip) for ip in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
           .value.get_values_for_type(x509.IPAddress)}
    assert {f"10.20.0.{i}" for i in range(1, 7)} | {"10.20.1.1", "10.20.1.2"} <= ips
    assert "10.20.0.7" not in ips and "10.20.2.1" not in ips  # broadcast, other networks: not named
    assert cert.not_valid_after_utc - dt.datetime.now(dt.UTC) <= dt.timedelta(days=7, minutes=1)
    # none named: no user data (the emulator, or an image with the Docker TLS endpoint baked in)
    bare = load_config_text(f"controller_id: dc1\nstate_dir: {tmp_path}\n", "c.yaml")
    assert wiring._user_data(bare)(SimpleNamespace(name="web"), "r1") == ""


@pytest.fixture
def acr_api() -> Iterator[tuple[RpcServer, str]]:
    """The RPC emulator serving GetAuthorizationToken for instance cri-test: a temporary user and password
    (the test registry below accepts that pair only)."""
    server = RpcServer(access_keys={"ak-wiring": AccessKey("ak-wiring", "sk-wiring-secret")})
    password = f"acr-temp-{uuid.uuid4().hex[:12]}"
    install_cr(server, {"cri-test": lambda: ("cr_temp_user", password)}, ttl_s=3600)
    server.start()
    yield server, password
    server.stop()


def test_acr_auth_is_wired_for_replication_and_node_pulls(acr_api: tuple[RpcServer, str], tmp_path: Path,
                                                          docker_client: docker.DockerClient, pushed_busybox: str,
                                                          nodes: Callable[[int], list[Node]], run_id: str) -> None:
    server, password = acr_api
    (tmp_path / "pki").mkdir()
    for name in ("ca.pem", "controller-cert.pem", "controller-key.pem"):  # the controller's node client pair
        shutil.copy(PKI_DIR / name, tmp_path / "pki" / name)
    # the cloud registry accepts only ACR's temporary user, whose password it learns from the same login
    registry = LocalRegistry(tmp_path / "acr-registry", users={"cr_temp_user": password}).start()
    cfg = load_config_text(
        f"controller_id: dc1\nstate_dir: {tmp_path}\n"
        f"cloud:\n  region: cn-hangzhou\n  endpoint: {server.url}\n"
        f"cloud_registry:\n  url: {registry.address}\n  insecure: true\n  auth: {{type: acr, instance_id: cri-test}}\n",
        "c.yaml")
    edges = wiring.build_edges(cfg, credentials=CloudKeys(CloudCredentials("ak-wiring", "sk-wiring-secret")))
    repo = f"{registry.address}/wiring/acr-{run_id}"
    ref = ""
    service.forget_secrets()
    try:
        # replication logs in with the temporary token (the real SDK against the emulator's handler)
        # (registry to registry: the node's engine never sees the ACR reference, so its pull must log in)
        result = edges.registry.replicate(pushed_busybox, f"{repo}:1", None)
        assert result.digest.startswith("sha256:")
        assert server.calls()["calls"]["GetAuthorizationToken"] == 1
        # a node pulls by digest with the current token (the node has no such reference yet)
        ref = f"{repo}@{result.digest}"
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(ref)
        node = nodes(1)[0]
        spec = WorkloadSpec(image=ref, command=("sleep", "300"), spec_hash="h")
        anonymous = DockerNodeRuntime(wiring.node_tls(cfg))
        with pytest.raises(AuthError):  # the registry does want a login
            anonymous.start(node, spec, f"ctl-test-acr-anon-{run_id}", replica_labels(run_id))
        anonymous.close()
        c = edges.runtime.start(node, spec, f"ctl-test-acr-{run_id}", replica_labels(run_id))
        assert c.state == "running"
        assert server.calls()["calls"]["GetAuthorizationToken"] == 1  # the cached token, not a new login
        assert service.redact(f"password {password}") == "password ***"  # never shown in a log line
        edges.runtime.remove(node, c.id)
    finally:
        service.forget_secrets()
        edges.close()
        registry.stop()
        if ref:
            try:
                docker_client.images.remove(ref, noprune=True)  # the name only; the layers are busybox's
            except docker.errors.NotFound:
                pass
