"""Registry auth against real registries: htpasswd (Basic) and bearer tokens from a loopback token
server (the ACR / Docker Hub challenge flow), token caching, clear errors for bad credentials, no secret in
logs or reprs, and ACR temporary tokens from the real aliyun SDK against the RPC emulator."""

from __future__ import annotations

import json
import logging
import time

import httpx
import pytest

from adapters.aliyun.acr import AcrTokenCredentials
from adapters.aliyun.credentials import CloudCredentials
from adapters.aliyun.credentials import StaticCredentials as CloudKeys
from adapters.registry.auth import Credentials, StaticCredentials, parse_challenge
from adapters.registry.client import RegistryClient, RegistryOptions
from adapters.registry.imageref import parse_registry_ref
from adapters.registry.replication import Replicator
from controller.errors import AuthError, NotFoundError, TransientError
from lab.emulator.cr import install_cr
from lab.emulator.rpc import RpcServer
from lab.emulator.rpc_wire import AccessKey
from tests.fixtures_registry import REGISTRY_USERS

MB = 1 << 20
PASSWORD = REGISTRY_USERS["alice"]


def replicator_for(host: str, user: str, password: str) -> Replicator:
    return Replicator(RegistryOptions(credentials=StaticCredentials({host: Credentials(user, password)}),
                                      backoff=0.01))


def test_challenge_parsing():
    c = parse_challenge('Bearer realm="https://dockerauth.cn-hangzhou.aliyuncs.com/auth",service="registry.aliyuncs.com:cn-hangzhou:26842",scope="repository:ns/app:pull"')
    assert c is not None and c.scheme == "bearer"
    assert c.params == {"realm": "https://dockerauth.cn-hangzhou.aliyuncs.com/auth",
                        "service": "registry.aliyuncs.com:cn-hangzhou:26842", "scope": "repository:ns/app:pull"}
    assert parse_challenge('Basic realm="x"').scheme == "basic"  # type: ignore[union-attr]


def test_tls_is_the_default_except_loopback_and_insecure_hosts():
    client = RegistryClient(RegistryOptions(insecure_hosts=frozenset({"lab-registry:5000"})))
    try:
        assert client.base_url("registry.cn-hangzhou.aliyuncs.com") == "https://registry.cn-hangzhou.aliyuncs.com"
        assert client.base_url("10.0.0.5:5000") == "https://10.0.0.5:5000"
        assert client.base_url("127.0.0.1:5000") == "http://127.0.0.1:5000"
        assert client.base_url("localhost:5000") == "http://localhost:5000"
        assert client.base_url("lab-registry:5000") == "http://lab-registry:5000"
    finally:
        client.close()
    assert parse_registry_ref("docker.io/busybox:1").host == "registry-1.docker.io"
    assert parse_registry_ref("docker.io/busybox:1").repository == "library/busybox"


def test_htpasswd_registry_copy_with_credentials_and_no_secret_in_logs(src_registry, auth_registry, src_pusher,
                                                                       repo_name, caplog):
    img = src_pusher.image(repo_name, "v1", [MB, MB], seed=101)
    r = replicator_for(auth_registry.address, "alice", PASSWORD)
    caplog.set_level(logging.DEBUG)
    try:
        result = r.replicate(f"{src_registry.address}/{repo_name}:v1", f"{auth_registry.address}/{repo_name}:v1")
        assert r.replicate(f"{src_registry.address}/{repo_name}:v1",
                           f"{auth_registry.address}/{repo_name}:v1").skipped_blobs == 3
    finally:
        r.close()
    assert result.digest == img.digest and result.copied_blobs == 3
    assert PASSWORD not in caplog.text
    assert PASSWORD not in repr(r.options) and PASSWORD not in repr(Credentials("alice", PASSWORD))
    # and the copy is really behind auth: anonymous reads are refused
    assert httpx.head(f"http://{auth_registry.address}/v2/{repo_name}/manifests/v1").status_code == 401


def test_htpasswd_bad_password_is_a_clear_auth_error(src_registry, auth_registry, src_pusher, repo_name):
    src_pusher.image(repo_name, "v1", [MB], seed=102)
    r = replicator_for(auth_registry.address, "alice", "wrong-password")
    try:
        with pytest.raises(AuthError) as err:
            r.replicate(f"{src_registry.address}/{repo_name}:v1", f"{auth_registry.address}/{repo_name}:v1")
    finally:
        r.close()
    msg = str(err.value)
    assert f"registry {auth_registry.address} rejected the credentials of user 'alice'" in msg
    assert "wrong-password" not in msg


def test_no_credentials_for_an_auth_registry_says_so(src_registry, auth_registry, src_pusher, repo_name):
    src_pusher.image(repo_name, "v1", [MB], seed=103)
    r = Replicator()
    try:
        with pytest.raises(AuthError, match=f"registry {auth_registry.address} requires credentials"):
            r.replicate(f"{src_registry.address}/{repo_name}:v1", f"{auth_registry.address}/{repo_name}:v1")
    finally:
        r.close()


def test_bearer_token_flow_caches_tokens_per_scope(src_registry, token_registry, token_server, src_pusher,
                                                   repo_name):
    img = src_pusher.image(repo_name, "v1", [MB, MB, MB], seed=111)
    before = len(token_server.issued)
    r = replicator_for(token_registry.address, "alice", PASSWORD)
    try:
        result = r.replicate(f"{src_registry.address}/{repo_name}:v1", f"{token_registry.address}/{repo_name}:v1")
        again = r.replicate(f"{src_registry.address}/{repo_name}:v1", f"{token_registry.address}/{repo_name}:v1")
        # same-registry copy inside the token registry: a mount needs push here AND pull on the source repo
        mounted = r.replicate(f"{token_registry.address}/{repo_name}:v1",
                              f"{token_registry.address}/{repo_name}-m:v1")
    finally:
        r.close()
    assert result.digest == again.digest == mounted.digest == img.digest
    assert result.copied_blobs == 4 and again.skipped_blobs == 4 and mounted.mounted_blobs == 4
    issued = token_server.issued[before:]
    # ~20 registry requests, but one token per distinct scope set (pull and push for the two repos)
    assert 1 <= len(issued) <= 5, issued
    assert f"repository:{repo_name}-m:pull,push repository:{repo_name}:pull" in issued  # the mount's token
    assert issued.count(f"repository:{repo_name}:pull") == 1


def test_bearer_bad_password_names_the_registry(src_registry, token_registry, token_server, src_pusher, repo_name):
    src_pusher.image(repo_name, "v1", [MB], seed=112)
    r = replicator_for(token_registry.address, "alice", "nope")
    try:
        with pytest.raises(AuthError, match=f"registry {token_registry.address}: token service refused user 'alice'"):
            r.replicate(f"{src_registry.address}/{repo_name}:v1", f"{token_registry.address}/{repo_name}:v1")
    finally:
        r.close()


def test_token_expiry_uses_the_injected_clock(token_registry, token_server, repo_name):
    now = [1000.0]
    client = RegistryClient(RegistryOptions(credentials=StaticCredentials(
        {token_registry.address: Credentials("alice", PASSWORD)})), clock=lambda: now[0])
    ref = parse_registry_ref(f"{token_registry.address}/{repo_name}:none")
    try:
        start = len(token_server.issued)
        assert client.head_manifest(ref) is None
        assert client.head_manifest(ref) is None
        assert len(token_server.issued) - start == 1  # cached
        now[0] += token_server.expires_in  # past expiry (minus the safety margin)
        assert client.head_manifest(ref) is None
        assert len(token_server.issued) - start == 2
    finally:
        client.close()


# --------------------------------------------------------------------------- ACR temporary tokens


@pytest.fixture
def acr_api():
    server = RpcServer(access_keys={"ak-test": AccessKey("ak-test", "sk-test")})
    issued = []

    def login() -> tuple[str, str]:
        issued.append(1)
        return "cr_temp_user", "acr-temp-token"

    now = [time.time()]  # the API's clock and the credentials' clock: moved together by the tests
    install_cr(server, {"cri-test": login}, ttl_s=3600, clock=lambda: now[0])
    server.start()
    yield server, issued, now
    server.stop()


def acr_credentials(server, host, clock, key="ak-test", secret="sk-test", instance="cri-test"):
    keys = CloudKeys(CloudCredentials(key, secret))
    return AcrTokenCredentials(instance, "cn-hangzhou", [host], keys, endpoint=server.url, clock=clock)


def test_acr_token_from_the_real_sdk_logs_in_and_refreshes_before_expiry(acr_api, make_registry, src_registry,
                                                                         src_pusher, repo_name, caplog):
    server, issued, now = acr_api
    registry = make_registry(users={"cr_temp_user": "acr-temp-token"})
    creds = acr_credentials(server, registry.address, lambda: now[0])
    img = src_pusher.image(repo_name, "v1", [MB], seed=121)
    caplog.set_level(logging.DEBUG)
    r = Replicator(RegistryOptions(credentials=creds))
    try:
        result = r.replicate(f"{src_registry.address}/{repo_name}:v1", f"{registry.address}/{repo_name}:v1")
        assert result.digest == img.digest
        assert creds.fetches == 1  # one token for the whole copy
        now[0] += 3600 - 200  # inside the 300 s refresh margin
        assert creds.get(registry.address) == Credentials("cr_temp_user", "acr-temp-token")
        assert creds.fetches == 2 and len(issued) == 2
        assert creds.get("other-registry:5000") is None  # not an ACR host: not asked of the API
        assert creds.fetches == 2
    finally:
        r.close()
    assert "acr-temp-token" not in caplog.text and "sk-test" not in caplog.text
    assert "acr-temp-token" not in repr(creds.token()) and "sk-test" not in repr(creds)
    assert server.calls()["calls"]["GetAuthorizationToken"] == 2


def test_acr_sdk_errors_are_mapped(acr_api):
    server, _, _ = acr_api
    with pytest.raises(AuthError, match="InvalidAccessKeyId.NotFound"):
        acr_credentials(server, "h", lambda: 0.0, key="unknown").token()
    with pytest.raises(AuthError, match="InvalidAccessKeySecret|SignatureDoesNotMatch"):
        acr_credentials(server, "h", lambda: 0.0, secret="wrong").token()
    with pytest.raises(NotFoundError, match="cri-missing"):
        acr_credentials(server, "h", lambda: 0.0, instance="cri-missing").token()
    server.faults.update({"error_rate": 1.0})
    with pytest.raises(TransientError):
        acr_credentials(server, "h", lambda: 0.0).token()


def test_cli_with_an_acr_token(acr_api, make_registry, src_registry, src_pusher, repo_name, capsys, monkeypatch):
    from controller.cli.main import main

    server, _, _ = acr_api
    registry = make_registry(users={"cr_temp_user": "acr-temp-token"})
    img = src_pusher.image(repo_name, "v1", [MB], seed=122)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "ak-test")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "sk-test")
    rc = main(["replicate", f"{src_registry.address}/{repo_name}:v1", f"{registry.address}/{repo_name}:v1",
               "--dst-acr-instance", "cri-test", "--acr-region", "cn-hangzhou", "--acr-endpoint", server.url,
               "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert json.loads(out)["digest"] == img.digest
    assert server.calls()["calls"]["GetAuthorizationToken"] == 1
