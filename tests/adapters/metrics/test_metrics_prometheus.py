"""PrometheusMetricsSource against a real Prometheus scraping a loopback exporter the test controls."""

from __future__ import annotations

import time

from adapters.metrics.prometheus import PrometheusMetricsSource
from tests.fixtures_prometheus import PrometheusProcess
from tests.support.net import free_port


def test_instant_query_follows_the_exporter(prometheus: PrometheusProcess) -> None:
    prometheus.load.labels("web").set(42.5)
    prometheus.wait_value('burst_test_load{group="web"}', 42.5)
    src = PrometheusMetricsSource(prometheus.url, 'sum(burst_test_load{group="web"})')
    try:
        first = src.query(60)
        assert first.ok and first.value == 42.5 and first.source == "prometheus"
        assert 0 <= first.age < 5
        prometheus.load.labels("web").set(77.0)
        prometheus.wait_value('burst_test_load{group="web"}', 77.0)
        second = src.query(60)
        assert second.value == 77.0
        assert [v for _, v in second.history] == [42.5]  # the earlier answer, oldest first
    finally:
        src.close()


def test_window_placeholder_and_range_mode_history(prometheus: PrometheusProcess) -> None:
    prometheus.load.labels("api").set(10.0)
    prometheus.wait_value('burst_test_load{group="api"}', 10.0)
    time.sleep(2.5)  # a few scrapes at 10
    prometheus.load.labels("api").set(30.0)
    prometheus.wait_value('burst_test_load{group="api"}', 30.0)
    time.sleep(1.5)
    src = PrometheusMetricsSource(prometheus.url, 'max_over_time(burst_test_load{group="api"}[$window])',
                                  mode="range", horizon=60, step=1)
    try:
        obs = src.query(30)
        assert obs.ok, obs.error
        assert obs.value == 30.0
        assert obs.age <= 2.0
        values = [v for _, v in obs.history]
        assert 10.0 in values  # the history comes from Prometheus itself
        times = [t for t, _ in obs.history]
        assert times == sorted(times)
    finally:
        src.close()


def test_several_series_is_a_clear_failure(prometheus: PrometheusProcess) -> None:
    prometheus.load.labels("a").set(1)
    prometheus.load.labels("b").set(2)
    prometheus.wait_value('burst_test_load{group="b"}', 2)
    src = PrometheusMetricsSource(prometheus.url, 'burst_test_load{group=~"a|b"}')
    try:
        obs = src.query(60)
        assert not obs.ok and obs.value is None
        assert "returned 2 series" in (obs.error or "") and "sum(" in (obs.error or "")
    finally:
        src.close()


def test_bad_promql_and_no_data_and_down_server(prometheus: PrometheusProcess) -> None:
    bad = PrometheusMetricsSource(prometheus.url, "sum(burst_test_load{")
    nothing = PrometheusMetricsSource(prometheus.url, "burst_test_load{group=\"nobody\"}")
    down = PrometheusMetricsSource(f"http://127.0.0.1:{free_port()}", "up", timeout=2)
    try:
        b = bad.query(60)
        assert not b.ok and "bad_data" in (b.error or "")
        n = nothing.query(60)
        assert not n.ok and "returned 0 series" in (n.error or "")
        d = down.query(60)
        assert not d.ok and d.value is None and "127.0.0.1" in (d.error or "")
    finally:
        for s in (bad, nothing, down):
            s.close()


def test_scalar_and_nan(prometheus: PrometheusProcess) -> None:
    scalar = PrometheusMetricsSource(prometheus.url, "scalar(vector(3))")
    nan = PrometheusMetricsSource(prometheus.url, "vector(0) / vector(0)")
    try:
        s = scalar.query(60)
        assert s.ok and s.value == 3.0
        n = nan.query(60)
        assert not n.ok and "nan" in (n.error or "").lower()
    finally:
        scalar.close()
        nan.close()
