"""EcsComputePool through the real aliyun SDK against the ECS emulator: idempotent launches, batching,
fallback and the sold-out memory, spot fallback, convergence under injected faults with no duplicate
and no leak, adoption of a launch that timed out after creating, tolerant release, typed errors."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from adapters.aliyun.credentials import CloudCredentials, StaticCredentials
from controller.errors import AuthError, CapacityError, PermanentError, QuotaError, TransientError
from controller.ports import TAG_CONTROLLER, TAG_INTENT, TAG_POLICY, InstanceState, LaunchSpec, Owner
from lab.emulator.ecs import EcsEmulator
from lab.emulator.rpc_wire import AccessKey
from tests.fixtures_ecs import KEY_SECRET, REGION

SPEC = LaunchSpec(
    region=REGION,
    instance_types=("ecs.g7.large", "ecs.c7.large"),
    zones=(f"{REGION}-a", f"{REGION}-b"),
    image_id="img-1",
    security_group_id="sg-1",
    vswitches={f"{REGION}-a": "vsw-a", f"{REGION}-b": "vsw-b"},
    user_data="#cloud-config\n",
    tags={TAG_CONTROLLER: "dc1", TAG_POLICY: "web"},
)
OWNER = Owner("dc1", "web")


def run_calls(emu: EcsEmulator) -> int:
    return emu.calls().get("RunInstances", 0)


def test_replayed_intent_yields_the_same_instances(ecs_emulator, make_ecs_pool) -> None:  # type: ignore[no-untyped-def]
    pool = make_ecs_pool(ecs_emulator)
    launches = [pool.launch(SPEC, 3, "intent-1") for _ in range(5)]
    ids = [sorted(i.id for i in got) for got in launches]
    assert all(x == ids[0] for x in ids) and len(ids[0]) == 3
    assert len(ecs_emulator.live_instances()) == 3
    first = launches[0][0]
    assert first.tags[TAG_INTENT] == "intent-1" and first.tags[TAG_CONTROLLER] == "dc1"
    assert first.private_ip and first.private_ip.startswith("127.0.1.")
    assert first.docker_endpoint == ecs_emulator.docker_endpoint
    assert first.price_per_hour == pytest.approx(0.55)
    assert first.state in (InstanceState.PENDING, InstanceState.STARTING, InstanceState.RUNNING)
    # a fresh pool (a restarted controller) replaying the intent gets them too
    again = make_ecs_pool(ecs_emulator).launch(SPEC, 3, "intent-1")
    assert sorted(i.id for i in again) == ids[0]


def test_batches_of_100_and_paged_listing(make_ecs_emulator, make_ecs_pool) -> None:  # type: ignore[no-untyped-def]
    emu = make_ecs_emulator(address_pool="127.0.8.0/22")
    pool = make_ecs_pool(emu)
    got = pool.launch(SPEC, 250, "big")
    assert len({i.id for i in got}) == 250
    assert run_calls(emu) == 3
    other = dataclasses.replace(SPEC, tags={TAG_CONTROLLER: "dc1", TAG_POLICY: "api"})
    pool.launch(other, 5, "small")
    emu.server.reset_calls()
    listed = pool.list(OWNER)
    assert {i.id for i in listed} == {i.id for i in got}
    assert emu.calls()["DescribeInstances"] == 3
    assert len(pool.list(Owner("dc1"))) == 255
    assert pool.list(Owner("dc2")) == []
    emu.server.reset_calls()
    assert len(pool.get([i.id for i in got[:150]] + ["i-unknown"])) == 150
    assert emu.calls()["DescribeInstances"] == 2


def test_same_token_different_request_is_a_permanent_error(ecs_emulator, make_ecs_pool) -> None:  # type: ignore[no-untyped-def]
    pool = make_ecs_pool(ecs_emulator)
    pool.launch(SPEC, 3, "intent-x")
    with pytest.raises(PermanentError) as info:
        pool.launch(SPEC, 4, "intent-x")
    assert info.value.code == "IdempotentParameterMismatch"
    assert info.value.request_id
    assert len(ecs_emulator.live_instances()) == 3


def test_fallback_on_no_stock_and_the_sold_out_memory(ecs_emulator, make_ecs_pool) -> None:  # type: ignore[no-untyped-def]
    now = [1000.0]
    pool = make_ecs_pool(ecs_emulator, clock=lambda: now[0], sold_out_ttl=300)
    ecs_emulator.set_faults(sold_out=["ecs.g7.large"])
    got = pool.launch(SPEC, 2, "fb-1")
    assert {i.instance_type for i in got} == {"ecs.c7.large"}
    assert run_calls(ecs_emulator) == 3  # g7 in zone a, g7 in zone b, then c7 in zone a
    pool.launch(SPEC, 1, "fb-2")
    assert run_calls(ecs_emulator) == 4  # remembered: straight to c7
    ecs_emulator.set_faults(sold_out=[])
    now[0] += 301
    assert {i.instance_type for i in pool.launch(SPEC, 1, "fb-3")} == {"ecs.g7.large"}
    assert run_calls(ecs_emulator) == 5


def test_zone_and_quota_fallback_then_capacity_error(make_ecs_emulator, make_ecs_pool) -> None:  # type: ignore[no-untyped-def]
    emu = make_ecs_emulator(quotas={"ecs.g7.large": 1})
    emu.set_faults(sold_out=[f"{REGION}-a"])
    pool = make_ecs_pool(emu)
    got = pool.launch(SPEC, 1, "zq-1")
    assert [(i.instance_type, i.zone) for i in got] == [("ecs.g7.large", f"{REGION}-b")]
    emu.set_faults(sold_out=[f"{REGION}-a"], unsupported=["ecs.c7.large"])
    with pytest.raises(CapacityError) as info:
        pool.launch(SPEC, 1, "zq-2")  # g7@a remembered sold out, g7@b over quota, c7 unsupported
    assert "QuotaExceed.ElasticQuota" in str(info.value)
    assert info.value.code == "InvalidInstanceType.NotSupported" and info.value.request_id
    assert run_calls(emu) == 5
    with pytest.raises(CapacityError):
        pool.launch(SPEC, 1, "zq-3")  # every offering is remembered: no call at all
    assert run_calls(emu) == 5
    assert len(emu.live_instances()) == 1


def test_quota_everywhere_is_a_quota_error(make_ecs_emulator, make_ecs_pool) -> None:  # type: ignore[no-untyped-def]
    emu = make_ecs_emulator(quotas={"*": 0})
    with pytest.raises(QuotaError) as info:
        make_ecs_pool(emu).launch(SPEC, 1, "q-1")
    assert info.value.code == "QuotaExceed.ElasticQuota"


def test_spot_falls_back_to_on_demand(ecs_emulator, make_ecs_pool) -> None:  # type: ignore[no-untyped-def]
    pool = make_ecs_pool(ecs_emulator)
    spot = dataclasses.replace(SPEC, spot_strategy="SpotAsPriceGo")
    assert all(i.spot for i in pool.launch(spot, 2, "spot-1"))
    ecs_emulator.set_faults(sold_out=["spot"])
    fallback = pool.launch(spot, 2, "spot-2")
    assert not any(i.spot for i in fallback) and len(fallback) == 2
    strict = dataclasses.replace(spot, spot_fallback_on_demand=False)
    with pytest.raises(CapacityError) as info:
        pool.launch(strict, 1, "spot-3")
    assert info.value.code == "OperationDenied.NoStock"


def test_convergence_under_throttling_and_5xx(make_ecs_emulator, make_ecs_pool) -> None:  # type: ignore[no-untyped-def]
    emu = make_ecs_emulator(seed=11)
    pool = make_ecs_pool(emu, read_timeout=0.5, max_attempts=6)
    emu.set_faults(throttle_rate=0.3, error_rate=0.3, timeout_after_create_rate=0.1, timeout_delay_s=1.0)
    wanted = {f"intent-{n}": 12 for n in range(6)}
    for intent, count in wanted.items():
        spec = dataclasses.replace(SPEC, tags={**SPEC.tags, "burst-controller:replica-set": intent})
        for _ in range(30):  # the controller re-runs an unfinished intent until it has an outcome
            try:
                assert len(pool.launch(spec, count, intent)) == count
                break
            except TransientError:
                continue
        else:
            pytest.fail(f"{intent} never converged")
    errors = emu.server.calls()["errors"]
    assert sum(errors.get("RunInstances", {}).values()) > 0  # the faults really happened
    emu.set_faults(throttle_rate=0.0, error_rate=0.0, timeout_after_create_rate=0.0)
    live = emu.live_instances()
    assert len(live) == sum(wanted.values())  # zero duplicates
    per_intent = {i: sum(1 for x in live if x["tags"][TAG_INTENT] == i) for i in wanted}
    assert per_intent == wanted
    emu.set_faults(throttle_rate=0.3, error_rate=0.3)
    listed = []
    for _ in range(30):
        try:
            listed = pool.list(OWNER)
            pool.release([i.id for i in listed])
            break
        except TransientError:
            continue
    assert len(listed) == sum(wanted.values())
    assert emu.live_instances() == []  # zero leaks


def test_launch_that_timed_out_after_creating_is_adopted(ecs_emulator, make_ecs_pool) -> None:  # type: ignore[no-untyped-def]
    ecs_emulator.set_faults(timeout_after_create=1, timeout_delay_s=3.0)
    impatient = make_ecs_pool(ecs_emulator, read_timeout=0.4, max_attempts=1)
    with pytest.raises(TransientError) as info:
        impatient.launch(SPEC, 3, "slow-intent")
    assert info.value.code == "SDK.HttpError"
    created = ecs_emulator.live_instances()
    assert len(created) == 3  # the cloud did buy them
    found = impatient.list(OWNER)  # reconcile sees them by tags
    assert {i.id for i in found} == {i["id"] for i in created}
    assert {i.tags[TAG_INTENT] for i in found} == {"slow-intent"}
    adopted = impatient.launch(SPEC, 3, "slow-intent")  # re-running the intent adopts them
    assert {i.id for i in adopted} == {i["id"] for i in created}
    assert len(ecs_emulator.live_instances()) == 3 and run_calls(ecs_emulator) == 2


def test_retry_inside_one_launch_keeps_the_token(ecs_emulator, make_ecs_pool) -> None:  # type: ignore[no-untyped-def]
    ecs_emulator.set_faults(timeout_after_create=1, timeout_delay_s=3.0)
    pool = make_ecs_pool(ecs_emulator, read_timeout=0.4, max_attempts=3)
    got = pool.launch(SPEC, 2, "retry-intent")
    assert len(got) == 2 and len(ecs_emulator.live_instances()) == 2
    assert run_calls(ecs_emulator) == 2


def test_release_tolerates_gone_instances(ecs_emulator, make_ecs_pool) -> None:  # type: ignore[no-untyped-def]
    pool = make_ecs_pool(ecs_emulator)
    ids = [i.id for i in pool.launch(SPEC, 5, "rel")]
    pool.release(ids[:2])
    pool.release(ids + ["i-neverexisted000000000"])  # running ones need Force: the pool always forces
    assert ecs_emulator.live_instances() == []
    pool.release(ids)
    pool.release([])
    assert pool.get(ids) == []


def test_backoff_is_capped_exponential_with_jitter(ecs_emulator, make_ecs_pool) -> None:  # type: ignore[no-untyped-def]
    slept: list[float] = []
    pool = make_ecs_pool(ecs_emulator, sleep=slept.append, max_attempts=6)
    ecs_emulator.set_faults(throttle_rate=1.0, actions=["DescribeInstances"])
    with pytest.raises(TransientError) as info:
        pool.list(OWNER)
    assert info.value.code == "Throttling" and info.value.request_id
    assert ecs_emulator.calls()["DescribeInstances"] == 6 and len(slept) == 5
    ceilings = [min(0.05, 0.01 * 2 ** n) for n in range(5)]
    assert all(c / 2 <= s <= c for s, c in zip(slept, ceilings, strict=True))


def test_rejected_credentials_are_an_auth_error(ecs_emulator, make_ecs_pool) -> None:  # type: ignore[no-untyped-def]
    for kwargs, code in (({"secret": "wrong-secret-value"}, "InvalidAccessKeySecret"),
                         ({"key_id": "unknown-key"}, "InvalidAccessKeyId.NotFound")):
        pool = make_ecs_pool(ecs_emulator, **kwargs)
        ecs_emulator.server.reset_calls()
        with pytest.raises(AuthError) as info:
            pool.list(OWNER)
        assert info.value.code == code and info.value.request_id
        assert ecs_emulator.calls()["DescribeInstances"] == 1  # not retried


def test_untagged_launch_is_refused(ecs_emulator, make_ecs_pool) -> None:  # type: ignore[no-untyped-def]
    pool = make_ecs_pool(ecs_emulator)
    with pytest.raises(PermanentError):
        pool.launch(dataclasses.replace(SPEC, tags={}), 1, "untagged")
    assert run_calls(ecs_emulator) == 0


def test_secret_never_in_logs(ecs_emulator, make_ecs_pool, caplog) -> None:  # type: ignore[no-untyped-def]
    token = "sts-token-" + "z" * 40
    sts_secret = "sts-secret-9876543210"
    ecs_emulator.server.access_keys["sts-key"] = AccessKey("sts-key", sts_secret, token)
    caplog.set_level(logging.DEBUG)
    pool = make_ecs_pool(ecs_emulator)
    pool.launch(SPEC, 2, "log-intent")
    ecs_emulator.set_faults(throttle_rate=0.5)
    try:
        pool.list(OWNER)
    except TransientError:
        pass
    ecs_emulator.set_faults(throttle_rate=0.0)
    errors = []
    for kwargs in ({"secret": "wrong-secret-value"}, {"key_id": "nobody"}):
        try:
            make_ecs_pool(ecs_emulator, **kwargs).list(OWNER)
        except AuthError as exc:
            errors.append(f"{exc!r} {exc}")
    creds = StaticCredentials(CloudCredentials("sts-key", sts_secret, token, source="test"))
    sts = make_ecs_pool(ecs_emulator, credentials=creds)
    assert len(sts.list(OWNER)) == 2  # the STS token was sent (this key requires it) ...
    text = caplog.text + "".join(errors) + repr(creds) + str(creds.get()) + repr(sts.api.settings)
    assert "DescribeInstances" in caplog.text  # the SDK's debug lines were captured
    for secret in (KEY_SECRET, "wrong-secret-value", sts_secret, token):
        assert secret not in text  # ... and never logged


def test_concurrent_launches_of_one_intent_buy_once(ecs_emulator, make_ecs_pool) -> None:  # type: ignore[no-untyped-def]
    from concurrent.futures import ThreadPoolExecutor

    pools = [make_ecs_pool(ecs_emulator) for _ in range(4)]  # e.g. a controller and its restarted self
    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(lambda n: pools[n % 4].launch(SPEC, 7, f"race-{n % 2}"), range(8)))
    by_intent = {f"race-{k}": {frozenset(i.id for i in r) for n, r in enumerate(results) if n % 2 == k}
                 for k in (0, 1)}
    assert all(len(sets) == 1 for sets in by_intent.values())  # every caller got the same instances
    assert len(ecs_emulator.live_instances()) == 14
