"""Images that exist only in the local Docker Engine: built here with the classic builder on top of the
busybox image, pushed through the engine to a real loopback registry; the digest returned is the one the
registry serves (what cloud nodes pull)."""

from __future__ import annotations

import os
import uuid

import httpx
import pytest

from adapters.registry.replication import Replicator
from controller.errors import NotFoundError
from tests.conftest import DOCKER_HOST

TEST_LABEL = "io.burst-controller.test"


@pytest.fixture
def engine_image(docker_client, busybox_image, tmp_path):
    """A 3-layer image (busybox + two COPY layers of random data) known only to the local engine."""
    (tmp_path / "a.bin").write_bytes(os.urandom(700_000))
    (tmp_path / "b.bin").write_bytes(os.urandom(300_000))
    (tmp_path / "Dockerfile").write_text(f"FROM {busybox_image}\nCOPY a.bin /data/a.bin\nCOPY b.bin /data/b.bin\n")
    name = f"local/regtest-{uuid.uuid4().hex[:8]}:1"
    docker_client.images.build(path=str(tmp_path), tag=name, labels={TEST_LABEL: "registry"}, rm=True)
    yield name
    base = name.split(":")[0].split("/")[-1]  # regtest-xxxx, in the local and the pushed names alike
    for image in docker_client.images.list(filters={"label": f"{TEST_LABEL}=registry"}):
        for tag in image.tags:
            if base in tag:
                docker_client.images.remove(tag)


def test_local_engine_image_is_pushed_and_its_registry_digest_recorded(docker_client, engine_image, dst_registry):
    from adapters.docker_engine.client import docker_client as make_client

    r = Replicator(docker_factory=lambda: make_client(DOCKER_HOST))
    dst = f"{dst_registry.address}/engine/{engine_image.split('/')[-1]}"
    try:
        cold = r.replicate(f"docker-daemon:{engine_image}", dst)
        served = httpx.head(f"http://{dst_registry.address}/v2/engine/{engine_image.split('/')[-1].replace(':', '/manifests/')}",
                            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
        assert served.headers["docker-content-digest"] == cold.digest
        assert cold.copied_blobs == 3 and cold.bytes_copied > 1_000_000
        # the engine remembers the digest: the warm path only asks the engine and one HEAD
        assert r.ensure(f"docker-daemon:{engine_image}", dst) == cold.digest
        warm = r.replicate(engine_image, dst)  # a host-less name means the local engine too
        assert warm.digest == cold.digest and warm.copied_blobs == 0 and warm.skipped_blobs == 3
        repo_digests = docker_client.images.get(engine_image).attrs["RepoDigests"]
        assert f"{dst.rsplit(':', 1)[0]}@{cold.digest}" in repo_digests
    finally:
        r.close()


def test_missing_local_image_is_not_found(dst_registry):
    from adapters.docker_engine.client import docker_client as make_client

    r = Replicator(docker_factory=lambda: make_client(DOCKER_HOST))
    try:
        with pytest.raises(NotFoundError, match="local/never-built:1 not found in the local Docker Engine"):
            r.replicate("docker-daemon:local/never-built:1", f"{dst_registry.address}/x/y:1")
    finally:
        r.close()
