"""Shared fixtures. The real components (Docker Engine with its TLS endpoint, PostgreSQL) are started
by scripts/services.sh before pytest runs; their coordinates come from the environment it prints.
Per-test components (registries, HAProxy, the ECS emulator) are started by the fixture modules below."""

from __future__ import annotations

import os
from pathlib import Path

import docker
import pytest

from adapters.pki import TlsFiles

pytest_plugins: list[str] = ["tests.fixtures_replicas", "tests.fixtures_haproxy", "tests.fixtures_ecs", "tests.fixtures_registry", "tests.fixtures_prometheus", "tests.fixtures_ha"]

PKI_DIR = Path(os.environ.get("BURST_PKI_DIR", "/var/lib/burst-controller-dev/pki"))
DOCKER_TLS_ENDPOINT = os.environ.get("BURST_DOCKER_TLS_ENDPOINT", "tcp://127.0.0.1:2376")
# the project's private Docker Engine (scripts/services.sh), never the machine's own /var/run/docker.sock
DOCKER_HOST = os.environ.get("BURST_DOCKER_HOST", "unix:///var/lib/burst-controller-dev/docker.sock")


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    """The project's private Docker Engine over its unix socket (the on-prem host). Started by
    scripts/services.sh."""
    client = docker.DockerClient(base_url=DOCKER_HOST, timeout=120)
    client.ping()
    return client


@pytest.fixture(scope="session")
def node_tls() -> TlsFiles:
    """The controller's client certificate for node Docker endpoints (CA made by `burstctl pki init`)."""
    files = TlsFiles(ca=PKI_DIR / "ca.pem", cert=PKI_DIR / "controller-cert.pem", key=PKI_DIR / "controller-key.pem")
    for p in (files.ca, files.cert, files.key):
        assert p.exists(), f"{p} missing: run scripts/services.sh start"
    return files


@pytest.fixture(scope="session")
def busybox_image(docker_client: docker.DockerClient) -> str:
    from lab.localimage import ensure_busybox_image

    ensure_busybox_image(docker_client, "local/busybox:1")
    return "local/busybox:1"
