"""The dashboard in headless Chromium against a running controller: the LOOP engineer's daemon
(``ControllerService``) wired by controller/wiring.py to the lab (lab/lab.py): the ECS emulator over
the real SDK, real registries, HAProxy and Docker containers. Load on HAProxy makes the policy burst; the
page must chart the recorded samples, show the burst in the fleet table, and pause the policy with the
token (checked through /v1/status). Saves artifacts/dashboard.png. Then `burstctl history` exports the
samples the running daemon recorded and `burstctl simulate` replays them. Bounded under 60 s."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.cli.main import main
from controller.cli.run import ControllerService
from controller.config import load_config
from controller.sim.trace import load_trace
from controller.wiring import build_edges
from lab.lab import Lab, LabSettings
from lab.loadgen import LoadGenerator
from tests.support.browser import chromium_page, screenshot

pytestmark = pytest.mark.timeout(480)  # booted nodes: minutes on a shared machine


@pytest.fixture
def controller() -> Iterator[tuple[Lab, ControllerService]]:
    lab = Lab(settings=LabSettings(boot_delay=1.0))
    try:
        lab.start()
        cfg = load_config(lab.config_path)
        service = ControllerService(cfg, edges=build_edges(cfg, credentials=lab.credentials()))
        service.start()
        try:
            yield lab, service
        finally:
            service.shutdown()
    finally:
        lab.stop()  # removes the cloud containers, instances, HAProxy and registries it started
    assert lab.live_instances() == []


def _status(lab: Lab) -> dict[str, Any]:
    with httpx.Client(timeout=5, trust_env=False) as client:
        resp = client.get(lab.status_url + "/v1/status")
        resp.raise_for_status()
        return dict(resp.json())


def test_a_burst_shows_on_the_dashboard_and_the_pause_button_pauses(
        controller: tuple[Lab, ControllerService], tmp_path: Path) -> None:
    lab, service = controller
    load = LoadGenerator(lab.url)
    try:
        with chromium_page(viewport=(1300, 1250)) as (page, problems):
            page.goto(lab.status_url + "/")
            page.select_option("#range-select", "300")  # a short window: the run lasts seconds, not hours
            load.set_clients(16)  # HAProxy sessions above the lab policy's scale_out_above (6)
            web = page.locator('article.policy[data-policy="web"]')

            # the burst: an emulated ECS instance appears in the fleet table
            row = web.locator("table.fleet tbody tr").first
            row.wait_for(timeout=60_000)
            instance_id = row.get_attribute("data-instance")
            ecs_ids = {str(i.get("InstanceId") or i.get("id")) for i in lab.live_instances()}
            assert instance_id in ecs_ids, (instance_id, ecs_ids)
            assert row.locator("td").nth(1).inner_text() == "cn-hangzhou-h"
            assert row.locator("td").nth(2).inner_text() == "ecs.c6.large"
            # why: the scale-out with its reason in the event log, the current decision in the card
            scale_out = page.locator("#events-table tbody tr", has_text="scale-out").first
            scale_out.wait_for(timeout=10_000)
            assert "launching" in scale_out.inner_text()
            assert web.locator(".decision .direction").inner_text() in ("▲ Scale out", "● Hold")
            assert web.locator(".decision .reason").inner_text().strip()

            # let a replica serve, then refresh the chart (the window change refetches the history)
            # (booted nodes: ~30 s on a quiet machine, a margin of minutes for one shared with other suites)
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and "serving" not in web.locator("table.fleet").inner_text():
                time.sleep(0.25)
            page.select_option("#range-select", "900")
            page.select_option("#range-select", "300")
            page.wait_for_function(
                "() => Number(document.querySelector('article[data-policy=web] .chart-svg').dataset.points) > 3",
                timeout=15_000)
            deadline = time.monotonic() + 15  # the next sample after the first replica serves
            samples = service.store.samples("web", time.time() - 300)
            while time.monotonic() < deadline and not (samples and max(s.replicas for s in samples) >= 1):
                time.sleep(0.5)
                samples = service.store.samples("web", time.time() - 300)
            assert samples and max(s.replicas for s in samples) >= 1  # the daemon recorded the burst
            assert web.locator(".chart-svg path.series-load").get_attribute("d")
            assert web.locator(".chart-svg path.series-replicas").get_attribute("d")

            # pause with the token; the controller reports the policy paused
            web.locator('button[data-action="pause"]').click()
            page.fill("#token-input", lab.token)
            page.click("#token-confirm")
            page.locator("#toast").wait_for(state="visible", timeout=10_000)
            policy = _status(lab)["policies"][0]
            assert policy["name"] == "web" and policy["paused"] is True
            page.wait_for_function("() => document.querySelector('article[data-policy=web] .badge')"
                                   ".textContent.startsWith('paused')", timeout=10_000)
            page.locator("#events-table tbody tr", has_text="paused by an operator").first.wait_for(timeout=10_000)
            shot = screenshot(page, "dashboard.png")
            assert shot.stat().st_size > 20_000
        assert problems == []
    finally:
        load.stop()

    # the samples this daemon recorded, exported while it runs, replay in the simulator
    trace = tmp_path / "recorded.csv"
    assert main(["history", "--policy", "web", "--since", "10m", "--export", str(trace),
                 "--config", str(lab.config_path)]) == 0
    assert len(load_trace(trace).times) >= 10
    assert main(["simulate", "--policy", str(lab.policy_path), "--trace", str(trace), "--json",
                 "--interval", "1s", "--boot-delay", "2s"]) == 0
