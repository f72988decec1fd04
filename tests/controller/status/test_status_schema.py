"""Schemathesis against the status endpoint's own OpenAPI document: generated requests to every operation
(valid and invalid parameters, with the right token so mutations run) must never produce a 5xx.
The example count is bounded for CI; BURST_SCHEMATHESIS_EXAMPLES raises it for a full run."""

from __future__ import annotations

import os

import schemathesis
from hypothesis import HealthCheck, settings

from controller.status.app import create_app
from tests.support.status_source import MemoryStatusSource

TOKEN = "t0ken-for-the-status-tests-0123456789"
EXAMPLES = int(os.environ.get("BURST_SCHEMATHESIS_EXAMPLES", "10"))

schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(MemoryStatusSource(), TOKEN, status_ttl=0.0))


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case) -> None:
    response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code < 500, (case.method, case.formatted_path, case.query, response.text[:300])
    case.validate_response(response, checks=[schemathesis.checks.not_a_server_error])
