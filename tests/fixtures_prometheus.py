"""A real Prometheus (Debian's 2.42) per test module: our own config on a free loopback port, scraping every
second a small exporter the fixture serves on loopback (prometheus_client), whose gauges the test sets, and
any loopback target a test adds (``PrometheusProcess.scrape``, job ``extra``, through a file_sd file)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from wsgiref.simple_server import WSGIServer, make_server

import httpx
import pytest
from prometheus_client import CollectorRegistry, Gauge, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

from tests.support.net import free_port, wait_port

__all__ = ["PrometheusProcess"]

_CONFIG = """\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: exporter
    static_configs:
      - targets: ['127.0.0.1:{exporter}']
  - job_name: extra
    file_sd_configs:
      - files: ['{targets}']
        refresh_interval: 1s
"""


@dataclass
class PrometheusProcess:
    url: str
    load: Gauge  # burst_test_load{instance_group=...}: set it, Prometheus scrapes it within ~1 s
    exporter_port: int
    targets_file: Path

    def scrape(self, target: str) -> None:
        """Have Prometheus scrape ``target`` (``127.0.0.1:PORT``, path /metrics) every second as job ``extra``."""
        assert target.startswith("127."), "tests scrape loopback only"
        self.targets_file.write_text(json.dumps([{"targets": [target]}]))

    def wait_value(self, query: str, expected: float, timeout: float = 20.0) -> None:
        """Until Prometheus answers ``query`` with ``expected`` (the exporter got scraped)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            r = httpx.get(f"{self.url}/api/v1/query", params={"query": query}, trust_env=False, timeout=5)
            result = r.json().get("data", {}).get("result", [])
            if result:
                last = float(result[0]["value"][1])
                if abs(last - expected) < 1e-9:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"prometheus never answered {query} = {expected} (last {last})")


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusProcess]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus missing: run scripts/services.sh install (Debian package prometheus)"
    registry = CollectorRegistry()
    load = Gauge("burst_test_load", "load the test sets", ["group"], registry=registry)
    exporter_port = free_port()
    httpd: WSGIServer = make_server("127.0.0.1", exporter_port, make_wsgi_app(registry),
                                    ThreadingWSGIServer, handler_class=_SilentHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True, name="test-exporter").start()
    workdir = Path(tempfile.mkdtemp(prefix="bc-prom-"))
    targets_file = workdir / "targets.json"
    targets_file.write_text("[]")
    (workdir / "prometheus.yml").write_text(_CONFIG.format(exporter=exporter_port, targets=targets_file))
    port = free_port()
    log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - outlives this block, closed in finally
    proc = subprocess.Popen(
        [binary, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port("127.0.0.1", port, timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # ready = TSDB open and rules loaded
            try:
                if httpx.get(f"http://127.0.0.1:{port}/-/ready", trust_env=False, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        yield PrometheusProcess(url=f"http://127.0.0.1:{port}", load=load, exporter_port=exporter_port,
                                targets_file=targets_file)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        httpd.shutdown()
        httpd.server_close()
        shutil.rmtree(workdir, ignore_errors=True)
