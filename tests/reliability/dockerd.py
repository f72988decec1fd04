"""A private Docker Engine for the on-prem fault tests: its own data root, exec root (and so its own
containerd), pid file and unix socket under a temp dir, its own bridge, no iptables rules, vfs storage. It
can be stopped and started under a running controller without touching the shared engine that
scripts/services.sh started (restarting that one would kill everyone else's test containers).

Never ``--bridge=none``: with it dockerd deletes the host's ``docker0`` at start (moby's
removeDefaultBridgeInterface), which is the SHARED engine's bridge. The private engine gets a bridge of its
own (``rdk...``, created here, deleted in ``remove``); its containers use ``network_mode="none"`` anyway."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import docker

from adapters.docker_engine.client import docker_client

__all__ = ["PrivateDockerd"]

PIN_BRIDGE_MAC = Path(__file__).resolve().parents[2] / "deploy" / "pin-bridge-mac.sh"


class PrivateDockerd:
    def __init__(self) -> None:
        # short: the socket path must fit in sun_path (108 bytes)
        self.root = Path(tempfile.mkdtemp(prefix="rdk-", dir="/tmp"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.bridge = f"rdk{secrets.token_hex(4)}"  # at most 15 characters
        subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", f"10.213.{secrets.randbelow(250) + 1}.1/24", "dev", self.bridge],
                       check=True)
        subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True)
        # one MAC for the bridge's whole life, as on the shared engine (deploy/pin-bridge-mac.sh says why)
        subprocess.run(["sh", str(PIN_BRIDGE_MAC), self.bridge], check=True)

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 60.0) -> PrivateDockerd:
        exe = shutil.which("dockerd")
        assert exe, "dockerd is not installed: run scripts/services.sh install"
        self.starts += 1
        with (self.root / f"dockerd-{self.starts}.log").open("wb") as log:
            self.proc = subprocess.Popen(
                [exe, "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
                 "--pidfile", str(self.root / "docker.pid"), "-H", self.url, f"--bridge={self.bridge}",
                 "--iptables=false", "--ip-masq=false", "--storage-driver=vfs"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"private dockerd exited: {self.log()}"
            try:
                with self.client(timeout=5) as c:
                    c.ping()
                return self
            except Exception:  # noqa: BLE001 - the socket is not there yet (requests' or docker's error)
                time.sleep(0.2)
        raise AssertionError(f"private dockerd not answering after {timeout}s: {self.log()}")

    def client(self, timeout: int = 60) -> contextlib.closing[docker.DockerClient]:
        """``with engine.client() as c:`` (closed at the end)."""
        return contextlib.closing(docker_client(self.url, None, timeout=timeout))

    def log(self) -> str:
        try:
            return (self.root / f"dockerd-{self.starts}.log").read_text()[-2000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, as systemd would: dockerd stops its containers and exits."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def remove(self) -> None:
        """Stop, remove every container, and delete the whole tree (unmounting anything left under it)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                with self.client(timeout=10) as c:
                    for container in c.containers.list(all=True, ignore_removed=True):
                        with contextlib.suppress(docker.errors.NotFound):  # gone meanwhile: the rest still go
                            container.remove(force=True)
            except Exception:  # noqa: BLE001, S110 - best effort: the engine may be half-started or gone
                pass
        self.stop()
        with open("/proc/mounts", encoding="utf-8") as fh:
            mounts = [line.split()[1] for line in fh]
        for point in sorted((m for m in mounts if m.startswith(str(self.root))), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], check=False)
        shutil.rmtree(self.root, ignore_errors=True)
        if os.path.exists(self.root):
            subprocess.run(["rm", "-rf", str(self.root)], check=False)
        subprocess.run(["ip", "link", "del", self.bridge], check=False)
