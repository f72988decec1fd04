"""The shipped Prometheus alert rules and Grafana dashboard (deploy/prometheus/, deploy/grafana/): promtool
checks the rules and runs their unit tests; every query of the dashboard names only series the controller
exports, and a real Prometheus accepts each one."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest

from controller import metrics
from tests.fixtures_prometheus import PrometheusProcess, prometheus  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "burst-controller.rules.yml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "burst-controller.rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "burst-controller.json"
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
             "gauge": ("",), "info": ("",), "summary": ("", "_count", "_sum")}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool missing (Debian package prometheus)"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False, cwd=RULES.parent)


def exported() -> set[str]:
    """Every series name the controller's registry exports (a family's TYPE line, with its type's suffixes)."""
    names = set()
    for line in generate_latest(metrics.REGISTRY).decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            name = name.removesuffix("_total") if kind == "counter" else name
            names.update(name + suffix for suffix in _SUFFIXES.get(kind, ("",)))
    return names


def dashboard_queries() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in doc["templating"]["list"] if v.get("type") == "query"]
    return exprs


def test_rules_pass_promtool_check_and_their_unit_tests() -> None:
    check = promtool("check", "rules", str(RULES))
    assert check.returncode == 0 and "SUCCESS: 6 rules found" in check.stdout, check.stdout + check.stderr
    run = promtool("test", "rules", str(RULES_TEST))
    assert run.returncode == 0 and "SUCCESS" in run.stdout, run.stdout + run.stderr
    names = {m for m in re.findall(r"alert: (\w+)", RULES.read_text())}
    assert names == {"BurstControllerDown", "BurstTickErrors", "BurstNotServing", "BurstBudgetExhausted",
                     "BurstUnknownInstances", "BurstReplicasUnhealthy"}
    for name in names - {"BurstControllerDown"}:  # each rule's firing is tested (the rest are up/absent)
        assert f"alertname: {name}" in RULES_TEST.read_text(), name


def test_rule_series_are_exported() -> None:
    wanted = set(re.findall(r"\bburst_[a-z_]+", RULES.read_text()))
    assert wanted and not wanted - exported(), wanted - exported()


def test_every_dashboard_query_names_exported_series(prometheus: PrometheusProcess) -> None:  # noqa: F811
    names = exported()
    queries = dashboard_queries()
    assert len(queries) >= 10
    for expr in queries:
        used = set(re.findall(r"\bburst_[a-z_]+", expr))
        assert used, f"no burst_ series in {expr!r}"
        assert not used - names, f"{expr!r} names series the controller does not export: {used - names}"
        if expr.startswith("label_values("):
            continue
        promql = expr.replace("$__rate_interval", "1m").replace("$policy", ".*")
        r = httpx.get(f"{prometheus.url}/api/v1/query", params={"query": promql}, trust_env=False, timeout=10)
        assert r.status_code == 200 and r.json()["status"] == "success", (expr, r.text[:300])


@pytest.mark.parametrize("bad", ["burst_no_such_series", "sum(burst_spend_this_hour)"])
def test_the_check_would_see_an_unknown_series(bad: str) -> None:
    assert set(re.findall(r"\bburst_[a-z_]+", bad)) - exported()
