"""Registry fixtures: real docker-registry processes on free loopback ports with filesystem storage in
tmp dirs (anonymous, htpasswd, and token auth with a loopback token server), stopped at the end.
Registered in tests/conftest.py ``pytest_plugins``."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab.localregistry import LocalRegistry, TokenAuth
from tests.support.ociimage import ImagePusher
from tests.support.tokenserver import TokenServer

REGISTRY_USERS = {"alice": "alice-registry-pw"}


@pytest.fixture(scope="session")
def src_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """The on-prem registry (anonymous)."""
    reg = LocalRegistry(tmp_path_factory.mktemp("registry-src")).start()
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def dst_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """The cloud registry (anonymous)."""
    reg = LocalRegistry(tmp_path_factory.mktemp("registry-dst")).start()
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """A registry with htpasswd (Basic) auth; users in REGISTRY_USERS."""
    reg = LocalRegistry(tmp_path_factory.mktemp("registry-htpasswd"), users=REGISTRY_USERS).start()
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
    server = TokenServer(tmp_path_factory.mktemp("token-server"), REGISTRY_USERS).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory, token_server: TokenServer) -> Iterator[LocalRegistry]:
    """A registry with bearer-token auth (realm/service/scope challenge) served by ``token_server``."""
    auth = TokenAuth(realm=token_server.realm, service=token_server.service, issuer=token_server.issuer,
                     rootcertbundle=token_server.cert_path)
    reg = LocalRegistry(tmp_path_factory.mktemp("registry-token"), token=auth).start()
    yield reg
    reg.stop()


@pytest.fixture
def make_registry(tmp_path: Path) -> Iterator[Callable[..., LocalRegistry]]:
    """A factory of fresh registries for one test (all stopped after it)."""
    started: list[LocalRegistry] = []

    def make(**kwargs: object) -> LocalRegistry:
        reg = LocalRegistry(tmp_path / f"registry-{len(started)}", **kwargs).start()  # type: ignore[arg-type]
        started.append(reg)
        return reg

    yield make
    for reg in started:
        reg.stop()


@pytest.fixture
def repo_name() -> str:
    """A repository name of its own for each test, so session registries can be shared."""
    return f"t/{uuid.uuid4().hex[:10]}"


@pytest.fixture
def src_pusher(src_registry: LocalRegistry) -> Iterator[ImagePusher]:
    pusher = ImagePusher(f"http://{src_registry.address}")
    yield pusher
    pusher.close()
