"""Cloud credentials: environment, a 0600 file (a readable one is refused), the RAM role through a real
metadata HTTP server on loopback, their order, and a repr that never shows the secret."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from adapters.aliyun.credentials import (
    ENV_KEY_ID,
    ENV_KEY_SECRET,
    ENV_TOKEN,
    RamRoleCredentials,
    StaticCredentials,
    from_env,
    from_file,
    resolve_credentials,
)
from controller.errors import AuthError, ConfigError, TransientError
from controller.ports import Owner
from lab.emulator.ecs import EcsEmulator
from lab.emulator.rpc_wire import AccessKey

SECRET = "file-secret-abcdef0123456789"


def write(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_file_must_be_private(tmp_path: Path) -> None:
    body = f"# cloud keys\naccess_key_id = LTAIfile\naccess_key_secret = {SECRET}\n"
    loose = write(tmp_path / "loose", body, 0o644)
    with pytest.raises(ConfigError) as info:
        from_file(loose)
    assert "0644" in info.value.problems[0] and "chmod 600" in info.value.problems[0]
    assert SECRET not in str(info.value.problems)
    with pytest.raises(ConfigError):
        from_file(write(tmp_path / "group", body, 0o640))
    good = from_file(write(tmp_path / "good", body, 0o600)).get()
    assert (good.access_key_id, good.access_key_secret, good.security_token) == ("LTAIfile", SECRET, None)
    assert SECRET not in repr(good) and SECRET not in str(good) and "LTAIfile" in repr(good)
    with pytest.raises(ConfigError) as info:
        from_file(write(tmp_path / "half", "access_key_id = x\n", 0o600))
    assert "access_key_secret" in info.value.problems[0]
    with pytest.raises(ConfigError):
        from_file(tmp_path / "missing")


def test_env_and_the_order_of_sources(tmp_path: Path) -> None:
    env = {ENV_KEY_ID: "LTAIenv", ENV_KEY_SECRET: "env-secret-0123456789", ENV_TOKEN: "tok"}
    creds = from_env(env)
    assert creds is not None and creds.get().security_token == "tok"
    assert from_env({}) is None
    with pytest.raises(ConfigError) as info:
        from_env({ENV_KEY_ID: "LTAIenv"})
    assert ENV_KEY_SECRET in info.value.problems[0]
    path = write(tmp_path / "c", f"access_key_id = LTAIfile\naccess_key_secret = {SECRET}\n", 0o600)
    assert resolve_credentials("auto", path=str(path), environ=env).get().access_key_id == "LTAIenv"
    assert resolve_credentials("auto", path=str(path), environ={}).get().access_key_id == "LTAIfile"
    fallback = resolve_credentials("auto", environ={}, metadata_url="http://127.0.0.1:9")
    assert isinstance(fallback, RamRoleCredentials)
    with pytest.raises(ConfigError):
        resolve_credentials("env", environ={})
    with pytest.raises(ConfigError):
        resolve_credentials("nope")


class _Metadata:
    """A tiny instance-metadata service on loopback (hardened mode: session token required)."""

    def __init__(self, role: str, key: AccessKey, ttl: float = 3600) -> None:
        self.role, self.key, self.ttl = role, key, ttl
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self) -> None:
                ok = self.path == "/latest/api/token" and self.headers.get("X-aliyun-ecs-metadata-token-ttl-seconds")
                self._send(200 if ok else 400, "session-token" if ok else "")

            def do_GET(self) -> None:
                if self.headers.get("X-aliyun-ecs-metadata-token") != "session-token":
                    return self._send(403, "")
                base = "/latest/meta-data/ram/security-credentials/"
                if self.path == base:
                    return self._send(200, outer.role)
                if self.path != base + outer.role:
                    return self._send(404, "")
                outer.fetches += 1
                expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + outer.ttl))
                return self._send(200, json.dumps({
                    "AccessKeyId": outer.key.id, "AccessKeySecret": outer.key.secret,
                    "SecurityToken": outer.key.security_token, "Expiration": expires,
                    "LastUpdated": "2026-01-01T00:00:00Z", "Code": "Success"}))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def metadata() -> Iterator[_Metadata]:
    md = _Metadata("burst-role", AccessKey("STS.key", "sts-secret-0123456789", "sts-token-" + "q" * 30))
    yield md
    md.close()


def test_ram_role_from_the_metadata_service(metadata: _Metadata, ecs_emulator: EcsEmulator,
                                            make_ecs_pool) -> None:  # type: ignore[no-untyped-def]
    now = [time.time()]
    provider = RamRoleCredentials(None, metadata.url, clock=lambda: now[0])
    creds = provider.get()
    assert creds.access_key_id == "STS.key" and creds.source == "ram-role burst-role"
    assert provider.get() is creds and metadata.fetches == 1  # cached while valid
    now[0] += 3600 - 200  # inside the refresh margin
    assert provider.get() is not creds and metadata.fetches == 2
    assert "sts-secret" not in repr(provider) + repr(provider.get())
    # the STS keys sign real SDK calls, the token travels with them
    ecs_emulator.server.access_keys["STS.key"] = metadata.key
    pool = make_ecs_pool(ecs_emulator, credentials=provider)
    assert pool.list(Owner("dc1")) == []
    provider.close()


def test_ram_role_errors(metadata: _Metadata) -> None:
    with pytest.raises(AuthError):
        RamRoleCredentials("other-role", metadata.url).get()
    with pytest.raises(TransientError):
        RamRoleCredentials("burst-role", "http://127.0.0.1:9", timeout=0.5).get()


def test_static_repr_is_redacted() -> None:
    from adapters.aliyun.credentials import CloudCredentials

    creds = StaticCredentials(CloudCredentials("LTAIx", "static-secret-0123456789", "tok-0123456789", source="env"))
    text = repr(creds) + str(creds.get()) + creds.describe()
    assert "static-secret" not in text and "tok-0123456789" not in text and "LTAIx" in text
