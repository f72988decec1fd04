"""The controller's CA: a real TLS handshake against the local Docker Engine's TLS endpoint."""

from __future__ import annotations

import os
import stat

import docker
import pytest
import requests

from adapters.docker_engine.client import docker_client
from adapters.pki import CertificateAuthority, TlsFiles
from tests.conftest import DOCKER_TLS_ENDPOINT


def test_ca_files_private_and_reused(tmp_path):
    ca = CertificateAuthority(tmp_path / "pki")
    first = ca.ensure().read_bytes()
    assert ca.ensure().read_bytes() == first
    assert stat.S_IMODE(os.stat(ca.ca_key_path).st_mode) == 0o600
    files = ca.client_files()
    assert stat.S_IMODE(os.stat(files.key).st_mode) == 0o600
    assert b"BEGIN CERTIFICATE" in files.cert.read_bytes()


def test_node_endpoint_accepts_controller_cert(node_tls):
    client = docker_client(DOCKER_TLS_ENDPOINT, node_tls, timeout=10)
    assert client.version()["ApiVersion"]


def test_node_endpoint_refuses_client_without_cert(node_tls):
    from docker.tls import TLSConfig

    client = docker.DockerClient(base_url=DOCKER_TLS_ENDPOINT, tls=TLSConfig(ca_cert=str(node_tls.ca), verify=True),
                                 timeout=10, version="1.41")
    client.api.trust_env = False
    with pytest.raises(requests.exceptions.SSLError, match="bad certificate|certificate required"):
        client.version()


def test_node_endpoint_refuses_cert_of_another_ca(tmp_path, node_tls):
    other = CertificateAuthority(tmp_path / "other")
    files = other.client_files()
    client = docker_client(DOCKER_TLS_ENDPOINT, TlsFiles(ca=node_tls.ca, cert=files.cert, key=files.key), timeout=10)
    with pytest.raises(requests.exceptions.SSLError, match="bad certificate|unknown ca"):
        client.version()
