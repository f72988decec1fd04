"""The shipped Prometheus alert rules and Grafana dashboard (deploy/prometheus/, deploy/grafana/): promtool
checks the rules and runs their unit tests; every query of the dashboard names only series the controller
exports, and a real Prometheus accepts each one."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from wsgiref.simple_server import make_server

import httpx
import pytest
from prometheus_client import generate_latest, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

from controller import metrics
from tests.fixtures_prometheus import PrometheusProcess, prometheus  # noqa: F401 - the fixture
from tests.support.net import free_port
from tests.support.wait import wait_until

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


def _panel(title_start: str) -> list[str]:
    [panel] = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["title"].startswith(title_start)]
    return [t["expr"].replace("$__rate_interval", "1m").replace("$policy", ".*") for t in panel["targets"]]


def _query(prometheus: PrometheusProcess, promql: str) -> list[dict[str, Any]]:  # noqa: F811 - the fixture's type
    r = httpx.get(f"{prometheus.url}/api/v1/query", params={"query": promql}, trust_env=False, timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "success", (promql, r.text[:300])
    return list(r.json()["data"]["result"])


def test_the_shadow_panels_show_shadow_policies_only(prometheus: PrometheusProcess) -> None:  # noqa: F811
    """The controller's own registry, scraped by a real Prometheus, with one policy in shadow mode and one
    active, both scaling out: the shadow panels show the shadow policy's would-be replicas and decisions, and
    nothing of the active one."""
    port = free_port()
    httpd = make_server("127.0.0.1", port, make_wsgi_app(metrics.REGISTRY), ThreadingWSGIServer,
                        handler_class=_SilentHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True, name="controller-metrics").start()
    names = ("shadow-panel-web", "active-panel-web")
    try:
        for name, shadow, desired in zip(names, (1, 0), (2, 3), strict=True):
            metrics.POLICY_SHADOW.labels(name).set(shadow)
            metrics.DESIRED.labels(name).set(desired)
            metrics.DECISIONS.labels(name, "out").inc()
            metrics.DECISIONS.labels(name, "hold").inc()
        prometheus.scrape(f"127.0.0.1:{port}")
        prometheus.wait_value(f'burst_policy_shadow{{policy="{names[0]}",job="extra"}}', 1)
        time.sleep(2.5)  # two more scrapes, then a decision of each kind: a rate to show
        for name in names:
            metrics.DECISIONS.labels(name, "out").inc()
            metrics.DECISIONS.labels(name, "hold").inc()
        would_run, in_shadow = _panel("Shadow mode: replicas")
        [scaling, _events] = _panel("Shadow mode: would-be scaling")
        rows = wait_until("the shadow policy's scale-outs in the panel",
                          lambda: (rs := _query(prometheus, scaling)) and float(rs[0]["value"][1]) > 0 and rs, 20, 0.5)
        assert [(r["metric"]["policy"], r["metric"]["direction"]) for r in rows] == [(names[0], "out")], rows
        assert [(r["metric"]["policy"], r["value"][1]) for r in _query(prometheus, would_run)] == [(names[0], "2")]
        assert [(r["metric"]["policy"], r["value"][1]) for r in _query(prometheus, in_shadow)] == [(names[0], "1")]
    finally:
        prometheus.targets_file.write_text("[]")
        httpd.shutdown()
        httpd.server_close()
        for name in names:
            for gauge in (metrics.POLICY_SHADOW, metrics.DESIRED):
                gauge.remove(name)
            for direction in ("out", "hold"):
                metrics.DECISIONS.remove(name, direction)
