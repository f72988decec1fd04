"""The daemon's /metrics after a burst (on fakes, served by the real status process): every series
docs/operations.md lists has samples (the outside-call ones aside: they come from the adapters' call wrapper),
`promtool check metrics` finds nothing, and a real Prometheus scrapes it."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from controller.status.process import StatusProcess
from tests.controller.test_daemon import Harness, wait_for, write_policy
from tests.fixtures_prometheus import PrometheusProcess, prometheus  # noqa: F401 - the fixture
from tests.support.net import free_port

ROOT = Path(__file__).resolve().parents[2]
OUTSIDE_CALLS = {"api_calls_total", "api_errors_total", "api_call_duration_seconds"}


def documented_series() -> set[str]:
    """The names the "### Metrics" section of docs/operations.md lists (before "plus the process metrics")."""
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text.split("### Metrics", 1)[1].split("plus the process metrics", 1)[0]
    return {m for m in re.findall(r"`([a-z_]+)(?:\{[a-z_,]*\})?`", section) if not m.endswith("_")}


def sampled(exposition: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name (without the burst_ prefix; a histogram's as NAME_count, NAME_sum, NAME_bucket) -> its
    samples."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            if s.name.startswith("burst_"):
                out.setdefault(s.name.removeprefix("burst_"), []).append((dict(s.labels), s.value))
    return out


def test_every_documented_series_moves_in_a_burst_and_prometheus_scrapes_it(
        tmp_path: Path, prometheus: PrometheusProcess) -> None:  # noqa: F811 - the fixture
    names = documented_series()
    assert {"decisions_total", "events_total", "spend_total", "tick_errors_total", "spent_today"} <= names, names
    h = Harness(tmp_path)
    proc: StatusProcess | None = None
    try:
        write_policy(h.dir, "mscrape")
        h.want["mscrape"] = 2
        d = h.daemon()
        wait_for("2 serving", lambda: h.serving(d, "mscrape") == 2)
        proc = StatusProcess(d, "scrape-token-0123456789abcdef", "127.0.0.1", free_port(), interval=0.1)
        proc.start()
        first = httpx.get(f"{proc.url}/metrics", trust_env=False, timeout=10).text  # the spend baseline
        h.want["mscrape"] = 0
        wait_for("drained", lambda: d.replica_counts("mscrape") == {})
        deadline = time.monotonic() + 30  # a fresh snapshot (0.1 s apart when quiet, later on a busy machine)
        text = first
        while text == first and time.monotonic() < deadline:
            time.sleep(0.2)
            text = httpx.get(f"{proc.url}/metrics", trust_env=False, timeout=10).text
        assert first != text

        during, got = sampled(first), sampled(text)
        missing = sorted(n for n in names - OUTSIDE_CALLS
                         if not any(seen.get(n) or seen.get(f"{n}_count") for seen in (during, got)))
        assert not missing, f"documented but no samples in a burst: {missing}"
        assert any(lab.get("policy") == "mscrape" and v == 2 for lab, v in during["replicas"])

        def value(name: str, **labels: str) -> float:
            return sum(v for lab, v in got[name] if all(lab.get(k) == x for k, x in labels.items()))

        assert value("decisions_total", policy="mscrape", direction="out") >= 1
        assert value("decisions_total", policy="mscrape", direction="in") >= 1
        assert value("events_total", kind="admit") >= 2
        assert value("image_replication_seconds_count", policy="mscrape") >= 1
        assert value("tick_duration_seconds_count", task="step") >= 1
        assert value("spent_today", policy="mscrape") > 0  # the two released instances' lifetimes
        assert value("spend_per_hour", policy="mscrape") == 0  # nothing held any more
        assert value("spend_total", policy="mscrape") > 0

        promtool = shutil.which("promtool")
        assert promtool, "promtool missing (Debian package prometheus)"
        lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True,
                              timeout=30, check=False)
        assert lint.returncode == 0 and not (lint.stdout + lint.stderr).strip(), lint.stdout + lint.stderr

        prometheus.scrape(proc.url.removeprefix("http://"))
        deadline = time.monotonic() + 30
        result: list[dict[str, object]] = []
        while time.monotonic() < deadline and not result:
            r = httpx.get(f"{prometheus.url}/api/v1/query", trust_env=False, timeout=5,
                          params={"query": 'burst_decisions_total{job="extra",policy="mscrape",direction="out"}'})
            result = r.json()["data"]["result"]
            time.sleep(0.3)
        assert result and float(result[0]["value"][1]) >= 1  # type: ignore[index]
        up = httpx.get(f"{prometheus.url}/api/v1/query", params={"query": 'up{job="extra"}'},
                       trust_env=False, timeout=5).json()["data"]["result"]
        assert up and up[0]["value"][1] == "1"
    finally:
        if proc is not None:
            proc.stop()
        h.close()
