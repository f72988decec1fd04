"""Schemathesis against the status endpoint of a running `burstctl run` (the real daemon behind the real app,
served by uvicorn on loopback, on the lab): its own /openapi.json drives generated requests to every
operation, valid and invalid, with the right token, a wrong one and none. No 5xx, every answer
documented in the schema (status code, content type, body), no unhandled input. The in-process variant over
an in-memory source is tests/controller/test_status_schema.py (PLATFORM); this one goes over the wire to the
daemon. CI runs 25 examples per operation and token; bench/reliability.py 300 (RELIABILITY_SCHEMA_EXAMPLES).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

from controller.lab import Lab
from tests.controller.test_e2e import ControllerProcess
from tests.reliability.harness import count, record, reliability_policy, reliability_settings

EXAMPLES = count("schema_examples", 25)
_answers: Counter[str] = Counter()


@pytest.fixture(scope="module")
def live_controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, ControllerProcess]]:
    lab = Lab(root=tmp_path_factory.mktemp("schema") / "lab", settings=reliability_settings()).start()
    controller = ControllerProcess(lab)
    try:
        lab.policy_path.write_text(reliability_policy(lab))
        controller.start()
        yield lab, controller
        assert controller.terminate() == 0
        assert "Traceback" not in controller.log()
    finally:
        if controller.proc is not None and controller.proc.poll() is None:
            controller.proc.kill()
            controller.proc.wait(10)
        lab.stop()


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    s = requests.Session()
    s.trust_env = False  # loopback only; no proxy or CA bundle from the environment
    yield s
    s.close()


@pytest.fixture(scope="module")
def status_schema(live_controller: tuple[Lab, ControllerProcess]) -> schemathesis.BaseSchema:
    lab, _ = live_controller
    return schemathesis.openapi.from_url(f"{lab.status_url}/openapi.json")


schema = schemathesis.pytest.from_fixture("status_schema")


@schema.parametrize()
@pytest.mark.parametrize("auth", ["right", "wrong", "none"])
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_no_server_error_and_only_documented_answers(case: schemathesis.Case, auth: str,
                                                     live_controller: tuple[Lab, ControllerProcess],
                                                     session: requests.Session) -> None:
    lab, controller = live_controller
    headers = {"right": {"Authorization": f"Bearer {lab.token}"}, "wrong": {"Authorization": "Bearer nope"},
               "none": {}}[auth]
    response = case.call(base_url=lab.status_url, headers=headers, session=session, timeout=30)
    _answers[f"{response.status_code}"] += 1
    assert response.status_code < 500, (case.method, case.formatted_path, case.query, response.text[:300])
    case.validate_response(response)
    assert controller.proc is not None and controller.proc.poll() is None, "the controller died"


def test_report(live_controller: tuple[Lab, ControllerProcess]) -> None:
    """Runs after the generated cases of this module: they reached the handlers and the token checks."""
    if not _answers:
        pytest.skip("run with the schemathesis cases of this module")
    assert _answers["200"] > 0 and _answers["401"] > 0 and _answers["403"] > 0, _answers
    record("schemathesis", requests=sum(_answers.values()), by_status=dict(_answers), server_errors=0)
