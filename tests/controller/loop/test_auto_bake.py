"""The automatic bake's trigger rule (controller/loop/auto_bake.py) on the real state store (SQLite and
PostgreSQL), with a stand-in for the Baker (what a bake does on the cloud is tests/controller/loop/test_bake.py's):
a new spec hash starts one bake, the same one none, a changed one another; a failure is an event and is not
retried for that spec; a bake interrupted by a stop stays pending and runs again at the next start, at most
MAX_ATTEMPTS times; one bake at a time; nothing without ``bake.auto``, in shadow mode, or for a spec baked
by hand; the policy's ``bake`` section is validated with file, line and field. The daemon's own bake on
booted nodes is part of tests/e2e/test_warm_pool_e2e.py."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.errors import PermanentError
from controller.loop.auto_bake import MAX_ATTEMPTS, AutoBake
from controller.loop.bake import BakeResult, BakeSettings
from controller.store.models import IntentKind, IntentState, NodeImageRow
from controller.store.state import StateStore
from policies.loader import load_policies
from tests.controller.fakes import make_policy, policy_dict


class StandInBaker:
    """Records each bake; fails when told; ``hold`` blocks it (through the settings' sleep, as the Baker's
    waits do) until released."""

    def __init__(self) -> None:
        self.baked: list[str] = []
        self.fail: Exception | None = None
        self.hold = threading.Event()
        self.settings: BakeSettings | None = None

    def make(self, settings: BakeSettings) -> StandInBaker:
        self.settings = settings
        return self

    def bake(self, policy: Any) -> BakeResult:
        assert self.settings is not None
        while self.hold.is_set():
            self.settings.sleep(0.05)
        if self.fail is not None:
            raise self.fail
        spec = policy.description  # this stand-in's spec hash: what the test says it is
        self.baked.append(spec)
        return BakeResult(policy=policy.name, image_id=f"m-{len(self.baked)}", spec_hash=spec,
                          workload_image=f"reg/web@sha256:{spec}", base_image_id=policy.cloud.image_id,
                          builder=f"i-builder{len(self.baked)}")


def policy(spec: str, **bake: Any) -> Any:
    return make_policy(description=spec, bake={"auto": True, "keep": 2, **bake})


def settle(auto: AutoBake) -> None:
    deadline = time.monotonic() + 10
    while auto.busy:
        assert time.monotonic() < deadline, "the bake thread did not end"
        time.sleep(0.01)


def bakes(store: StateStore, state: str | None = None) -> list[Any]:
    return [i for i in store.intents(policy="web", kind=IntentKind.BAKE) if state is None or i.state == state]


def events(store: StateStore, kind: str) -> list[str]:
    rows, _ = store.events(limit=100)
    return [e.message for e in rows if e.kind == kind]


@pytest.fixture
def baker() -> StandInBaker:
    return StandInBaker()


@pytest.fixture
def auto(store: StateStore, baker: StandInBaker) -> Any:
    a = AutoBake(store, None, "ctl", boot_timeout=123, make_baker=baker.make)
    yield a
    a.close(5)


def test_a_new_spec_hash_bakes_once_and_a_changed_one_again(store: StateStore, auto: AutoBake,
                                                            baker: StandInBaker) -> None:
    assert auto.consider(policy("aaa"), "aaa") is not None
    settle(auto)
    assert auto.consider(policy("aaa"), "aaa") is None  # same spec: no second bake
    settle(auto)
    assert auto.consider(policy("bbb"), "bbb") is not None  # changed spec: one more
    settle(auto)
    assert auto.consider(policy("bbb"), "bbb") is None
    assert baker.baked == ["aaa", "bbb"]
    done = bakes(store, IntentState.DONE)
    assert sorted(i.target for i in done) == ["aaa", "bbb"] and len(bakes(store)) == 2
    assert baker.settings is not None and baker.settings.keep == 2 and baker.settings.boot_timeout == 123
    assert len(events(store, "bake-started")) == 2


def test_a_failed_bake_is_an_event_and_is_not_retried_for_that_spec(store: StateStore, auto: AutoBake,
                                                                    baker: StandInBaker) -> None:
    baker.fail = PermanentError("image m-x of builder i-y is CreateFailed")
    auto.consider(policy("aaa"), "aaa")
    settle(auto)
    [failed] = bakes(store, IntentState.FAILED)
    assert failed.target == "aaa" and "CreateFailed" in (failed.error or "")
    assert any("CreateFailed" in m and "aaa" in m for m in events(store, "bake-failed"))
    baker.fail = None
    assert auto.consider(policy("aaa"), "aaa") is None  # at most one bake per spec hash
    assert auto.consider(policy("bbb"), "bbb") is not None  # a new spec is baked again
    settle(auto)
    assert baker.baked == ["bbb"]


def test_one_bake_at_a_time_and_a_stop_leaves_it_pending_for_the_next_start(store: StateStore,
                                                                           baker: StandInBaker) -> None:
    first = AutoBake(store, None, "ctl", make_baker=baker.make)
    baker.hold.set()
    assert first.consider(policy("aaa"), "aaa") is not None
    assert first.consider(policy("bbb"), "bbb") is None  # one at a time: bbb waits for a later replicate
    first.close(5)  # the daemon stops mid-bake
    assert not first.busy and baker.baked == []
    [pending] = bakes(store, IntentState.PENDING)
    assert pending.target == "aaa" and pending.attempts == 1
    baker.hold.clear()
    second = AutoBake(store, None, "ctl", make_baker=baker.make)  # the next start resumes it
    try:
        assert second.consider(policy("aaa"), "aaa") == pending.id
        settle(second)
        assert baker.baked == ["aaa"] and [i.attempts for i in bakes(store, IntentState.DONE)] == [2]
    finally:
        second.close(5)


def test_an_intent_interrupted_too_often_is_given_up_as_an_event(store: StateStore, baker: StandInBaker) -> None:
    baker.hold.set()
    for _ in range(MAX_ATTEMPTS):
        a = AutoBake(store, None, "ctl", make_baker=baker.make)
        a.consider(policy("aaa"), "aaa")
        a.close(5)
    last = AutoBake(store, None, "ctl", make_baker=baker.make)
    assert last.consider(policy("aaa"), "aaa") is None
    [failed] = bakes(store, IntentState.FAILED)
    assert failed.attempts == MAX_ATTEMPTS and any("gave up" in m for m in events(store, "bake-failed"))
    last.close(5)


def test_nothing_without_auto_in_shadow_mode_or_for_a_spec_baked_by_hand(store: StateStore, auto: AutoBake,
                                                                        baker: StandInBaker) -> None:
    assert auto.consider(make_policy(), "aaa") is None  # bake.auto defaults to false
    assert auto.consider(policy("aaa", auto=False), "aaa") is None
    shadow = make_policy(bake={"auto": True}, mode="shadow")
    assert auto.consider(shadow, "aaa") is None
    p = policy("ccc")
    store.record_node_image(NodeImageRow(image_id="m-hand", policy="web", spec_hash="ccc", workload_image="x",
                                         base_image_id=p.cloud.image_id, builder_instance="i-b", created_at=1.0))
    assert auto.consider(p, "ccc") is None
    assert auto.consider(p, "") is None  # the workload not captured yet
    assert bakes(store) == [] and baker.baked == []


def test_a_baker_that_cannot_be_built_fails_the_bake_as_an_event(store: StateStore) -> None:
    auto = AutoBake(store, None, "ctl")  # no edges: this controller cannot make images
    try:
        auto.consider(policy("aaa"), "aaa")
        settle(auto)
        [failed] = bakes(store, IntentState.FAILED)
        assert "cannot make node images" in (failed.error or "")
        assert events(store, "bake-failed")
    finally:
        auto.close(5)


def test_the_bake_section_is_validated_with_file_line_and_field(tmp_path: Path) -> None:
    good = {**policy_dict(), "bake": {"auto": True, "keep": 1}}
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(good, sort_keys=False))
    loaded = load_policies([tmp_path / "good.yaml"])
    assert loaded.problems == [] and loaded.policies["web"].bake.auto is True
    bad = {**policy_dict(), "bake": {"auto": True, "keep": 0, "every": "1h"}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad, sort_keys=False))
    lines = [str(p) for p in load_policies([tmp_path / "bad.yaml"]).problems]
    assert any("bad.yaml:" in s and "bake.keep" in s and "at least 1" in s for s in lines), lines
    assert any("bad.yaml:" in s and "bake.every" in s and "unknown field" in s for s in lines), lines
