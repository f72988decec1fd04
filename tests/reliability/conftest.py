"""Fixtures of the reliability suite, built on the LOOP engineer's harness: the lab (controller/lab.py: ECS
emulator, registries, HAProxy, on-prem workload) and ``ControllerProcess`` (``burstctl run`` as its own
process, from tests/controller/test_e2e.py). The lab's policy gets a spend cap that binds before
replicas.max (tests/reliability/harness.py), and a shorter reconcile interval."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.lab import Lab
from tests.controller.test_e2e import ControllerProcess
from tests.reliability.harness import reliability_policy, reliability_settings


@pytest.fixture
def rlab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(root=tmp_path / "lab", settings=reliability_settings()).start()
    lab.policy_path.write_text(reliability_policy(lab))
    try:
        yield lab
    finally:
        lab.stop()


@pytest.fixture
def rcontroller(rlab: Lab) -> Iterator[ControllerProcess]:
    c = ControllerProcess(rlab)
    try:
        yield c
    finally:
        if c.proc is not None and c.proc.poll() is None:
            c.proc.kill()
            c.proc.wait(10)
