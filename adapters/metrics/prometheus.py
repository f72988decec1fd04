"""``PrometheusMetricsSource``: a PromQL query against a Prometheus server's HTTP API (httpx), as a
``MetricsSource``. Built by the daemon's wiring for ``metric.source: prometheus``; called by the sampler.

The query must give one number: a scalar, or a vector/matrix with exactly one series (wrap it in
``sum(...)``/``avg(...)`` otherwise). ``$window`` in the query is replaced by the policy's window in
seconds (``avg_over_time(x[$window])``). ``mode="instant"`` asks ``/api/v1/query`` and keeps its own
history of answers; ``mode="range"`` asks ``/api/v1/query_range`` over the last ``horizon`` seconds at
``step`` and takes the history from Prometheus (useful right after a restart). The observation's age is
that of the point Prometheus returned (its evaluation time; within ``step`` for range queries); a target
that stopped being scraped drops out of the answer after Prometheus's lookback (5m), which gives ok=False.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Literal

import httpx

from adapters.metrics.window import DEFAULT_HORIZON, SampleWindow
from policies.types import Observation

__all__ = ["PrometheusMetricsSource", "PrometheusQueryError"]

logger = logging.getLogger(__name__)


class PrometheusQueryError(Exception):
    """Internal: why a query gave no usable number (becomes Observation.error)."""


def _seconds(window: float) -> str:
    return f"{max(1, round(window))}s"


class PrometheusMetricsSource:
    def __init__(self, url: str, query: str, *, mode: Literal["instant", "range"] = "instant",
                 horizon: float = DEFAULT_HORIZON, step: float = 15.0, timeout: float = 5.0,
                 headers: dict[str, str] | None = None) -> None:
        if mode not in ("instant", "range"):
            raise ValueError(f"mode must be instant or range, not {mode!r}")
        if not query.strip():
            raise ValueError("the Prometheus query is empty")
        self.url = url.rstrip("/")
        self.query_text = query
        self.mode = mode
        self.step = step
        self.name = "prometheus"
        self._window = SampleWindow(horizon)
        # trust_env off: HTTP(S)_PROXY must not reroute a datacenter-local Prometheus
        self._http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers, trust_env=False)

    def _get(self, path: str, params: dict[str, str]) -> Any:
        try:
            resp = self._http.get(path, params=params)
        except httpx.TimeoutException:
            raise PrometheusQueryError(f"{self.url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise PrometheusQueryError(f"{self.url}: {exc or type(exc).__name__}") from None
        try:
            body = resp.json()
        except ValueError:
            raise PrometheusQueryError(f"{self.url}{path}: HTTP {resp.status_code}, not a Prometheus API answer") from None
        if not isinstance(body, dict) or body.get("status") != "success":
            kind = body.get("errorType", "error") if isinstance(body, dict) else "error"
            detail = body.get("error", "") if isinstance(body, dict) else ""
            raise PrometheusQueryError(f"query failed ({kind}): {str(detail)[:300]}")
        return body.get("data") or {}

    @staticmethod
    def _one_series(data: Any, key: str) -> Any:
        kind, result = data.get("resultType"), data.get("result")
        if kind == "scalar":
            return [result]
        if kind not in ("vector", "matrix") or not isinstance(result, list):
            raise PrometheusQueryError(f"the query returned a {kind}, not a number")
        if len(result) != 1:
            labels = ", ".join(str(r.get("metric", {})) for r in result[:3])
            raise PrometheusQueryError(
                f"the query returned {len(result)} series{' (' + labels + ')' if labels else ''}; "
                "it must give one number: aggregate it, e.g. sum(...) or avg(...)")
        return result[0].get(key) if kind == "vector" else result[0].get("values")

    @staticmethod
    def _number(pair: Any) -> tuple[float, float]:
        try:
            at, raw = float(pair[0]), float(pair[1])
        except (TypeError, ValueError, IndexError):
            raise PrometheusQueryError(f"unexpected sample {pair!r}") from None
        if math.isnan(raw) or math.isinf(raw):
            raise PrometheusQueryError(f"the query gave {raw} (no data in the window, or a division by zero)")
        return at, raw

    def _instant(self, query: str, now: float) -> tuple[float, float, tuple[tuple[float, float], ...]]:
        data = self._get("/api/v1/query", {"query": query, "time": f"{now:.3f}"})
        series = self._one_series(data, "value")
        at, value = self._number(series if data.get("resultType") == "vector" else series[0])
        self._window.add(at, value)
        return at, value, self._window.history()

    def _range(self, query: str, now: float) -> tuple[float, float, tuple[tuple[float, float], ...]]:
        params = {"query": query, "start": f"{now - self._window.horizon:.3f}", "end": f"{now:.3f}",
                  "step": _seconds(self.step)}
        data = self._get("/api/v1/query_range", params)
        values = self._one_series(data, "values")
        if not values:
            raise PrometheusQueryError("the query returned no samples in the range")
        points = [self._number(v) for v in values]
        at, value = points[-1]
        return at, value, tuple(points[:-1])

    def query(self, window: float) -> Observation:
        now = time.time()
        query = self.query_text.replace("$window", _seconds(window))
        try:
            at, value, history = (self._instant if self.mode == "instant" else self._range)(query, now)
        except PrometheusQueryError as exc:
            logger.warning("prometheus query failed", extra={"url": self.url, "error": str(exc)})
            return Observation(value=None, age=0.0, source=self.name, ok=False, error=str(exc),
                               history=self._window.history())
        return Observation(value=value, age=max(0.0, now - at), source=self.name, history=history)

    def close(self) -> None:
        self._http.close()
