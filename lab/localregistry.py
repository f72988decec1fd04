"""Runs Debian's docker-registry (CNCF distribution 2.8) on a loopback port with filesystem storage, for
the demo, the tests and the benchmarks: anonymous, htpasswd or token auth. Start/stop only; the
registry itself is the real component."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from controller.errors import NotFoundError, TransientError

__all__ = ["LocalRegistry", "TokenAuth", "htpasswd_line"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenAuth:
    realm: str  # URL of the token server
    service: str
    issuer: str
    rootcertbundle: Path  # certificate(s) whose keys sign the tokens


def htpasswd_line(user: str, password: str) -> str:
    """An htpasswd entry with a bcrypt hash (the only kind the registry accepts)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # stdlib bcrypt via libcrypt; avoids a dependency for a test-only need

        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 5))
    return f"{user}:{hashed}\n"


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalRegistry:
    """One registry process. ``root`` holds its config, storage and log; ``address`` is host:port."""

    def __init__(self, root: Path, *, host: str = "127.0.0.1", port: int | None = None,
                 users: dict[str, str] | None = None, token: TokenAuth | None = None) -> None:
        self.root = Path(root)
        self.host = host
        self.port = port or _free_port(host)
        self.users = users
        self.token = token
        self.storage = self.root / "storage"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def blob_path(self, digest: str) -> Path:
        algo, _, hexd = digest.partition(":")
        return self.storage / "docker/registry/v2/blobs" / algo / hexd[:2] / hexd / "data"

    def _config(self) -> str:
        lines = [
            "version: 0.1",
            "log:", "  level: error", "  accesslog:", "    disabled: true",
            "storage:", "  filesystem:", f"    rootdirectory: {self.storage}",
            "  delete:", "    enabled: true",
            "  maintenance:", "    uploadpurging:", "      enabled: false",
            "http:", f"  addr: {self.address}",
            "health:", "  storagedriver:", "    enabled: false",
        ]
        if self.users is not None:
            path = self.root / "htpasswd"
            path.write_text("".join(htpasswd_line(u, p) for u, p in self.users.items()))
            lines += ["auth:", "  htpasswd:", "    realm: burst-test", f"    path: {path}"]
        elif self.token is not None:
            t = self.token
            lines += ["auth:", "  token:", f"    realm: {t.realm}", f"    service: {t.service}",
                      f"    issuer: {t.issuer}", f"    rootcertbundle: {t.rootcertbundle}"]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 15.0) -> Self:
        binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
        if not Path(binary).exists():
            raise NotFoundError("docker-registry not found: install Debian's docker-registry package")
        self.root.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(exist_ok=True)
        config = self.root / "config.yml"
        config.write_text(self._config())
        log = open(self.root / "registry.log", "ab")  # noqa: SIM115 - owned by the child process
        self._proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise TransientError(f"docker-registry exited ({self._proc.returncode}); see {self.root}/registry.log")
            try:
                urllib.request.urlopen(f"http://{self.address}/v2/", timeout=1).close()
            except urllib.error.HTTPError:
                pass  # 401 from an authenticated registry: it is up
            except OSError:
                time.sleep(0.05)
                continue
            # Whoever answered, it must be ours: a port taken between picking and binding makes the
            # registry exit at once with "address already in use" while the other listener answers.
            time.sleep(0.05)
            if self._proc.poll() is None:
                return self
        self.stop()
        raise TransientError(f"docker-registry on {self.address} did not answer within {timeout}s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
