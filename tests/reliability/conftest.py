"""Fixtures of the reliability suite, built on the LOOP engineer's harness: the lab (lab/lab.py: ECS
emulator, registries, HAProxy, on-prem workload) and ``ControllerProcess`` (``burstctl run`` as its own
process, from tests/support/controller_process.py). The lab's policy gets a spend cap that binds before
replicas.max (tests/reliability/harness.py), and a shorter reconcile interval."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.lab import Lab
from tests.reliability.harness import reliability_policy, reliability_settings
from tests.support.controller_process import ControllerProcess, running_controller, running_lab


@pytest.fixture
def rlab(tmp_path: Path) -> Iterator[Lab]:
    with running_lab(tmp_path / "lab", reliability_settings(), policy=reliability_policy) as lab:
        yield lab


@pytest.fixture
def rcontroller(rlab: Lab) -> Iterator[ControllerProcess]:
    with running_controller(rlab) as c:
        yield c
