"""Schemathesis against the status endpoint of a running `burstctl run` (the real daemon behind the real app,
served by uvicorn on loopback, on the lab): the schemathesis CLI reads the live /openapi.json and sends
generated requests to every operation, valid and invalid, with the right token, a wrong one and none. No
5xx, every answer conforms to the document (status code, content type, headers, body), invalid input is
rejected, and the controller is still running afterwards. The in-process variant over an in-memory source
is tests/controller/status/test_status_schema.py (PLATFORM); this one goes over the wire to the daemon.
CI runs 20 examples per operation and token; bench/reliability.py 200 (RELIABILITY_SCHEMA_EXAMPLES).
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

from lab.lab import Lab
from tests.reliability.harness import count, record, seed
from tests.support.controller_process import ControllerProcess

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = count("schema_examples", 20)
# positive_data_acceptance expects 2xx for any schema-valid request; a valid but unknown policy name is a
# documented 404, and a schema-valid request without the token a documented 401, so it does not apply here
EXCLUDED = "positive_data_acceptance"


def _run(lab: Lab, auth: str, report: Path) -> subprocess.CompletedProcess[str]:
    headers = {"right": ["-H", f"Authorization: Bearer {lab.token}"], "wrong": ["-H", "Authorization: Bearer nope"],
               "none": []}[auth]
    return subprocess.run(
        [str(ROOT / ".venv" / "bin" / "schemathesis"), "run", f"{lab.status_url}/openapi.json", "--checks", "all",
         "--exclude-checks", EXCLUDED, "-n", str(EXAMPLES), "--seed", str(seed()), "--generation-deterministic",
         "--request-timeout", "20", "--report", "har", "--report-har-path", str(report), "--no-color", *headers],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(lab.root), "NO_PROXY": "*", "SCHEMATHESIS_HOOKS": ""})


def test_schemathesis_against_the_live_daemon(rlab: Lab, rcontroller: ControllerProcess) -> None:
    rcontroller.start()
    statuses: Counter[str] = Counter()
    for auth in ("right", "wrong", "none"):
        report = rlab.root / f"schemathesis-{auth}.har"
        proc = _run(rlab, auth, report)
        assert proc.returncode == 0, f"token {auth}:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
        entries = json.loads(report.read_text())["log"]["entries"]
        statuses.update(str(e["response"]["status"]) for e in entries)
        assert rcontroller.proc is not None and rcontroller.proc.poll() is None, "the controller died"
    assert not [s for s in statuses if s.startswith("5")], statuses
    assert statuses["200"] and statuses["401"] and statuses["403"] and statuses["422"], statuses
    assert rcontroller.terminate() == 0
    assert "Traceback" not in rcontroller.log()
    print(f"schemathesis: {sum(statuses.values())} requests, by status {dict(statuses)}")
    record("schemathesis", requests=sum(statuses.values()), by_status=dict(statuses), server_errors=0,
           examples=EXAMPLES)
