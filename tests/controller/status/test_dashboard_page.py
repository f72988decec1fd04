"""The dashboard page in headless Chromium against the status app over an in-memory StatusSource (the
controller-backed run is test_dashboard_e2e.py): what the page shows, the token dialog (wrong token -> 403
shown, right token -> the action reaches the source), text from the controller never run as HTML, and the
banner when the controller cannot be reached. Bounded: about 10 s."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from controller.status.app import StatusServer, create_app
from tests.support.browser import chromium_page
from tests.support.net import free_port
from tests.support.status_source import MemoryStatusSource

pytestmark = pytest.mark.timeout(60)

TOKEN = "dashboard-test-token-0123456789"
XSS = '<img src="/nope" onerror="window.__pwned = 1">'


@pytest.fixture
def served() -> Iterator[tuple[MemoryStatusSource, StatusServer]]:
    source = MemoryStatusSource(events=30)
    source.add_event("web", f"message with markup {XSS}")
    server = StatusServer(create_app(source, TOKEN, status_ttl=0.0), "127.0.0.1", free_port())
    server.start()
    try:
        yield source, server
    finally:
        server.stop()


def test_the_page_shows_each_policy_and_acts_with_the_token(served: tuple[MemoryStatusSource, StatusServer]) -> None:
    source, server = served
    source.policies["api"] = source.policies["api"].model_copy(update={"mode": "shadow"})
    with chromium_page() as (page, problems):
        page.goto(server.url + "/")
        web = page.locator('article.policy[data-policy="web"]')
        web.locator("table.fleet tbody tr").first.wait_for(timeout=10_000)
        page.wait_for_function("() => Number(document.querySelector("
                               "'article[data-policy=web] .chart-svg').dataset.points) > 0", timeout=10_000)

        # what the source said is what ops read
        assert web.locator(".decision .reason").inner_text() == "cpu 81% > 75% for 2m"
        assert "Scale out" in web.locator(".decision .direction").inner_text()
        assert web.locator("table.fleet tbody tr").count() == 2
        assert web.locator("table.fleet tbody tr").first.locator("td").first.inner_text() == "i-web0"
        assert "1 booting" in web.locator(".replica-chips").inner_text()
        assert "DescribeInstances throttled" in web.locator(".errors").inner_text()
        assert "replicas.max: must be >= min" in page.locator("#policy-errors-list").inner_text()
        api = page.locator('article.policy[data-policy="api"]')
        assert api.count() == 1
        # a policy in shadow mode says so: badge, and a decision in the conditional
        assert api.locator(".badge").inner_text() == "shadow" and web.locator(".badge").inner_text() == "active"
        assert "Would scale out" in api.locator(".decision .direction").inner_text()
        assert "nothing launched or drained" in api.locator(".decision .desired").inner_text()
        assert "Would" not in web.locator(".decision .direction").inner_text()
        assert web.locator(".key-capacity").is_visible()  # the source reports capacity
        label = web.locator(".chart-svg").get_attribute("aria-label") or ""
        assert "samples" in label and "replicas now 1" in label
        # the window fits the data by default: the source's 10 minutes of samples fill it (not a 3-hour sliver)
        assert page.locator("#range-select").input_value() == "0"
        assert re.search(r"Chart of the last (9|10|11) minutes", label), label

        # markup in an event message is shown as text, never run
        page.locator("#events-table tbody tr").first.wait_for()
        assert XSS in page.locator("#events-table").inner_text()
        assert page.evaluate("() => window.__pwned") is None

        # a wrong token: 403 said plainly in the dialog, nothing reached the source
        web.locator('button[data-action="pause"]').click()
        dialog = page.locator("#token-dialog")
        assert dialog.is_visible() and "Pause web" in page.locator("#token-title").inner_text()
        page.fill("#token-input", "not-the-token")
        page.click("#token-confirm")
        page.locator("#token-error").wait_for(state="visible")
        assert page.locator("#token-error").inner_text().startswith("403 Forbidden")
        assert source.calls == [] and dialog.is_visible()

        # the right token, not remembered: the policy pauses and the badge says so
        page.fill("#token-input", TOKEN)
        page.click("#token-confirm")
        page.locator("#toast").wait_for(state="visible")
        assert "paused" in page.locator("#toast").inner_text()
        assert source.calls == [("pause", "web")]
        page.wait_for_function("() => document.querySelector('article[data-policy=web] .badge')"
                               ".textContent.startsWith('paused')", timeout=10_000)
        assert web.locator('button[data-action="pause"]').is_disabled()
        assert page.evaluate("() => sessionStorage.length") == 0

        # resume, remembering the token for this tab only
        web.locator('button[data-action="resume"]').click()
        assert page.input_value("#token-input") == ""
        page.fill("#token-input", TOKEN)
        page.check("#token-remember")
        page.click("#token-confirm")
        page.wait_for_function("() => !document.querySelector('#token-dialog').open")
        assert source.calls[-1] == ("resume", "web")
        assert page.evaluate("() => Object.values(sessionStorage)") == [TOKEN]
        assert page.evaluate("() => localStorage.getItem('burst-controller.status-token')") is None
        page.locator("#forget-token").click()
        assert page.evaluate("() => sessionStorage.length") == 0

        # the controller goes away: the page says so instead of showing old figures as live
        server.stop()
        page.locator("#connection-banner").wait_for(state="visible", timeout=10_000)
        assert "Cannot reach the controller" in page.locator("#connection-banner").inner_text()

    expected = ("status of 403", "ERR_CONNECTION_REFUSED", "Failed to fetch")
    assert [p for p in problems if not any(e in p for e in expected)] == []
