"""ECS emulator fixtures: a real HTTP emulator on a free loopback port, talked to by the real SDK.

``ecs_emulator`` (one per test), ``ecs_emulator_module`` (one per module, reset between tests is up to the
test), ``make_ecs_emulator(**kw)`` (custom config, stopped at teardown) and ``make_ecs_pool(emulator, **kw)``
(an ``EcsComputePool`` with fast backoff and short timeouts)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from adapters.aliyun.credentials import CloudCredentials, CredentialsProvider, StaticCredentials
from adapters.aliyun.ecs import EcsComputePool, EcsPoolSettings
from adapters.aliyun.ecs_api import EcsApiSettings
from lab.emulator.ecs import EcsEmulator
from lab.emulator.ecs_records import EcsConfig
from lab.emulator.faults import Faults

REGION = "cn-test"
KEY_ID, KEY_SECRET = "test-key", "test-secret-0123456789"


def new_emulator(boot_delay: float = 0.3, faults: Faults | None = None, seed: int | None = 7,
                 **config: Any) -> EcsEmulator:
    cfg = EcsConfig(boot_delay=boot_delay, stop_delay=config.pop("stop_delay", 0.2), **config)
    return EcsEmulator(access_keys={KEY_ID: KEY_SECRET, "local": "local-secret"}, config=cfg, faults=faults,
                       seed=seed)


def new_pool(emulator: EcsEmulator, *, key_id: str = KEY_ID, secret: str = KEY_SECRET,
             read_timeout: float = 3.0, max_attempts: int = 8, sleep: Callable[[float], None] | None = None,
             clock: Callable[[], float] | None = None, sold_out_ttl: float = 300.0,
             credentials: CredentialsProvider | None = None) -> EcsComputePool:
    api = EcsApiSettings(
        region=REGION,
        credentials=credentials or StaticCredentials(CloudCredentials(key_id, secret, source="test")),
        endpoint=emulator.url,
        connect_timeout=2.0,
        read_timeout=read_timeout,
        max_attempts=max_attempts,
        backoff_base=0.01,
        backoff_cap=0.05,
        rng=random.Random(3),
    )
    if sleep is not None:
        api.sleep = sleep
    pool = EcsPoolSettings(api=api, docker_endpoint_template=emulator.docker_endpoint, sold_out_ttl=sold_out_ttl)
    if clock is not None:
        pool.clock = clock
    return EcsComputePool(pool)


@pytest.fixture
def ecs_emulator() -> Iterator[EcsEmulator]:
    emu = new_emulator()
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture(scope="module")
def ecs_emulator_module() -> Iterator[EcsEmulator]:
    emu = new_emulator()
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture
def make_ecs_emulator() -> Iterator[Callable[..., EcsEmulator]]:
    started: list[EcsEmulator] = []

    def make(**kw: Any) -> EcsEmulator:
        emu = new_emulator(**kw)
        emu.start()
        started.append(emu)
        return emu

    yield make
    for emu in started:
        emu.stop()


@pytest.fixture
def make_ecs_pool() -> Iterator[Callable[..., EcsComputePool]]:
    pools: list[EcsComputePool] = []

    def make(emulator: EcsEmulator, **kw: Any) -> EcsComputePool:
        pool = new_pool(emulator, **kw)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()
