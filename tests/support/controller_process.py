"""`burstctl run` as its own process against a lab (lab/lab.py), and the lab and controller fixtures
the end-to-end, roll, HA and reliability tests share: ``ControllerProcess``, ``running_lab``,
``running_controller`` and ``wait_for``."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from lab.lab import Lab, LabSettings

ROOT = Path(__file__).resolve().parents[2]


def wait_for(what: str, until: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if until():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class ControllerProcess:
    """`burstctl run --config ...` in a child process, logging to a file in the lab directory. ``config``,
    ``name``, ``port`` and ``env`` let several controllers share one lab (the HA pair)."""

    def __init__(self, lab: Lab, *, config: Path | None = None, name: str = "", port: int | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.lab = lab
        self.config = config or lab.config_path
        self.name = name
        self.port = port or lab.status_port
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.lab.root / f"controller-{self.name + '-' if self.name else ''}{self.starts}.log"

    def spawn(self) -> None:
        """Start it and return at once."""
        self.starts += 1
        with self.log_path.open("wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "controller.cli.main", "run", "--config", str(self.config)],
                cwd=ROOT, env={**self.lab.env(), **self.extra_env}, stdout=log, stderr=subprocess.STDOUT)

    def start(self, timeout: float = 180.0) -> None:
        """Start it and wait until /readyz answers 200 (at most ``timeout``: on a loaded shared machine the
        interpreter's start and imports alone have taken over 30 s; a quick start still returns at once)."""
        self.spawn()
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"controller exited: {self.log()}"
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"controller not ready in {timeout}s: {self.log()}")

    def log(self, tail: int = 3000) -> str:
        try:
            return self.log_path.read_text()[-tail:]
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 60.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise

    def kill_if_running(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def status(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/v1/status", timeout=5, trust_env=False).json())


@contextmanager
def running_lab(root: Path, settings: LabSettings, policy: Callable[[Lab], str] | None = None) -> Iterator[Lab]:
    """A started lab under ``root`` (its policy file rewritten by ``policy`` when given), stopped at the end."""
    lab = Lab(root=root, settings=settings).start()
    try:
        if policy is not None:
            lab.policy_path.write_text(policy(lab))
        yield lab
    finally:
        lab.stop()


@contextmanager
def running_controller(lab: Lab) -> Iterator[ControllerProcess]:
    """A ControllerProcess for ``lab`` (the test starts it), killed at the end if still running."""
    c = ControllerProcess(lab)
    try:
        yield c
    finally:
        c.kill_if_running()
