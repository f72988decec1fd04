"""HostMetricsSource on this machine's real counters (psutil), checked against an independent reading."""

from __future__ import annotations

import multiprocessing
import os
import time

import psutil
import pytest

from adapters.metrics.host import HostMetricsSource


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_cpu_rises_with_a_busy_process_and_matches_psutil() -> None:
    src = HostMetricsSource("cpu")
    idle_ref = psutil.cpu_percent(interval=None)  # prime psutil's own counter at the same moment
    first = src.query(60)
    assert first.ok and first.source == "host_cpu" and 0.0 <= (first.value or 0) <= 100.0
    procs = [multiprocessing.Process(target=_spin, args=(1.5,)) for _ in range(psutil.cpu_count() or 1)]
    for p in procs:
        p.start()
    time.sleep(1.2)
    busy = src.query(1.0)  # the last second: the spinning processes
    reference = psutil.cpu_percent(interval=None)
    for p in procs:
        p.join()
    del idle_ref
    assert busy.ok and busy.value is not None
    assert busy.value > 80.0, busy  # every CPU spinning
    assert abs(busy.value - reference) < 20.0, (busy.value, reference)
    assert [t for t, _ in busy.history] == sorted(t for t, _ in busy.history)
    assert len(busy.history) == 1  # the first reading; the newest is the value itself


def test_memory_matches_psutil() -> None:
    obs = HostMetricsSource("memory").query(60)
    assert obs.ok and obs.source == "host_memory"
    assert obs.value == pytest.approx(psutil.virtual_memory().percent, abs=5.0)


def test_load_is_per_cpu_percent() -> None:
    obs = HostMetricsSource("load").query(60)
    expected = os.getloadavg()[0] / (psutil.cpu_count() or 1) * 100
    assert obs.ok and obs.value == pytest.approx(expected, abs=25.0)


def test_window_mean_and_bounded_history() -> None:
    src = HostMetricsSource("memory", horizon=0.5)
    for _ in range(4):
        src.query(60)
        time.sleep(0.2)
    obs = src.query(60)
    assert obs.ok
    assert all(t >= time.time() - 1.0 for t, _ in obs.history)  # older samples fell out of the horizon


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="cpu, memory or load"):
        HostMetricsSource("disk")  # type: ignore[arg-type]
