"""The status endpoint over HTTP: every route, the bearer token (401/403/200), 404, paging, standby, and
bad input that must never produce a 5xx. Runs the app under a real uvicorn on a loopback port."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from controller.errors import StateBusyError
from controller.status.app import StatusServer, create_app
from tests.support.net import free_port
from tests.support.status_source import MemoryStatusSource

TOKEN = "t0ken-for-the-status-tests-0123456789"


@pytest.fixture
def source() -> MemoryStatusSource:
    return MemoryStatusSource(events=250)


@pytest.fixture
def client(source: MemoryStatusSource) -> Iterator[httpx.Client]:
    server = StatusServer(create_app(source, TOKEN, status_ttl=0.0), "127.0.0.1", free_port())
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=10, trust_env=False) as c:
            yield c
    finally:
        server.stop()


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_probes(client: httpx.Client, source: MemoryStatusSource) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["ready"] is True and r.json()["role"] == "active"
    source.is_ready = (False, "reconciling with the cloud after start-up")
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["reason"] == "reconciling with the cloud after start-up"
    assert client.get("/healthz").status_code == 200  # alive while not ready


def test_status_document(client: httpx.Client) -> None:
    doc = client.get("/v1/status").json()
    assert doc["controller_id"] == "dc1-burst" and doc["role"] == "active"
    assert doc["policy_errors"] == ["/etc/p/bad.yaml:3:5: replicas.max: must be >= min"]
    web = next(p for p in doc["policies"] if p["name"] == "web")
    assert web["metric"] == {"value": 80.0, "age_seconds": 3.5, "source": "workload_cpu", "ok": True, "error": None}
    assert web["decision"]["direction"] == "out" and web["decision"]["reason"].startswith("cpu 81%")
    assert web["replicas"] == {"serving": 2, "booting": 1}
    assert web["spend_per_hour"] == 1.24 and web["budget_per_hour"] == 20.0
    assert web["last_errors"][0]["message"] == "DescribeInstances throttled"
    assert client.get("/v1/policies/web").json() == web
    r = client.get("/v1/policies/nope")
    assert r.status_code == 404 and "nope" in r.json()["detail"]


def test_events_paging(client: httpx.Client) -> None:
    latest = client.get("/v1/events", params={"limit": 10}).json()
    assert [e["id"] for e in latest["events"]] == list(range(241, 251))
    assert latest["next_cursor"] == 250
    # walk everything from the start, 100 at a time
    seen, cursor = [], 0
    while True:
        page = client.get("/v1/events", params={"cursor": cursor, "limit": 100}).json()
        if not page["events"]:
            assert page["next_cursor"] == cursor  # a follower polls again with the same cursor
            break
        seen += [e["id"] for e in page["events"]]
        cursor = page["next_cursor"]
    assert seen == list(range(1, 251))
    web = client.get("/v1/events", params={"policy": "web", "cursor": 0, "limit": 1000}).json()
    assert web["events"] and all(e["policy"] == "web" for e in web["events"])
    assert len(web["events"]) == 125


@pytest.mark.parametrize("params", [
    {"limit": 0}, {"limit": 1001}, {"limit": "x"}, {"limit": -5}, {"cursor": -1}, {"cursor": "abc"},
    {"cursor": str(2**64)}, {"cursor": "1e3"}, {"policy": "Bad_Name"}, {"policy": "x" * 41}, {"policy": ""},
])
def test_bad_event_parameters_are_422(client: httpx.Client, params: dict[str, object]) -> None:
    r = client.get("/v1/events", params=params)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][0] == "query"


@pytest.mark.parametrize("path", [
    "/v1/policies/Bad_Name", "/v1/policies/" + "a" * 41, "/v1/policies/web/history?since=nan",
    "/v1/policies/web/history?since=-1", "/v1/policies/web/history?since=inf", "/v1/policies/web/history?since=1e20",
])
def test_bad_names_and_times_are_4xx(client: httpx.Client, path: str) -> None:
    r = client.get(path)
    assert 400 <= r.status_code < 500, (path, r.status_code, r.text)


def test_history(client: httpx.Client) -> None:
    points = client.get("/v1/policies/web/history").json()
    assert points and {"at", "value", "capacity", "replicas"} <= set(points[0])
    assert client.get("/v1/policies/nope/history").status_code == 404


@pytest.mark.parametrize("action", ["pause", "resume", "drain"])
def test_mutations_need_the_token(client: httpx.Client, source: MemoryStatusSource, action: str) -> None:
    url = f"/v1/policies/web/{action}"
    r = client.post(url)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert client.post(url, headers={"Authorization": "Basic dXNlcjpwYXNz"}).status_code == 401
    assert client.post(url, headers={"Authorization": "Bearer"}).status_code == 401
    assert client.post(url, headers=auth("wrong")).status_code == 403
    assert client.post(url, headers=auth(TOKEN + "x")).status_code == 403
    assert client.post(url, headers=auth(TOKEN[:-1])).status_code == 403
    assert client.post(url, headers={"Authorization": b"Bearer \xc3\xa9\xff"}).status_code == 403
    assert source.calls == []  # nothing reached the controller
    r = client.post(url, headers=auth())
    assert r.status_code == 200 and r.json()["policy"] == "web" and r.json()["action"] == action
    assert source.calls == [(action, "web")]
    r = client.post(f"/v1/policies/nope/{action}", headers=auth())
    assert r.status_code == 404
    # an unauthenticated request learns nothing about names (401 before validation)
    assert client.post(f"/v1/policies/Bad_Name/{action}").status_code == 401
    assert client.post(f"/v1/policies/Bad_Name/{action}", headers=auth()).status_code == 422
    assert client.get(url).status_code == 405


def test_pause_shows_in_status_immediately(source: MemoryStatusSource) -> None:
    server = StatusServer(create_app(source, TOKEN, status_ttl=60.0), "127.0.0.1", free_port())
    server.start()
    try:
        with httpx.Client(base_url=server.url, trust_env=False) as c:
            assert c.get("/v1/policies/web").json()["paused"] is False  # now cached for 60 s
            assert c.post("/v1/policies/web/pause", headers=auth()).status_code == 200
            assert c.get("/v1/policies/web").json()["paused"] is True  # the mutation dropped the cache
    finally:
        server.stop()


def test_standby_is_read_only() -> None:
    source = MemoryStatusSource(role="standby")
    server = StatusServer(create_app(source, TOKEN), "127.0.0.1", free_port())
    server.start()
    try:
        with httpx.Client(base_url=server.url, trust_env=False) as c:
            r = c.get("/readyz")
            assert r.status_code == 503 and r.json()["reason"].startswith("standby") and r.json()["role"] == "standby"
            assert c.get("/v1/status").json()["role"] == "standby"
            r = c.post("/v1/policies/web/drain", headers=auth())
            assert r.status_code == 409 and "standby" in r.json()["detail"]
            assert c.post("/v1/policies/web/drain").status_code == 401  # still no token, still 401 first
    finally:
        server.stop()


def test_no_token_configured_disables_mutations(source: MemoryStatusSource) -> None:
    server = StatusServer(create_app(source, None), "127.0.0.1", free_port())
    server.start()
    try:
        with httpx.Client(base_url=server.url, trust_env=False) as c:
            r = c.post("/v1/policies/web/pause", headers=auth())
            assert r.status_code == 503 and "no status token" in r.json()["detail"]
            assert source.calls == []
    finally:
        server.stop()


class _BusySource(MemoryStatusSource):
    def status(self):  # type: ignore[no-untyped-def]
        raise StateBusyError("database is locked")


def test_busy_state_store_is_503_with_retry_after() -> None:
    server = StatusServer(create_app(_BusySource(), TOKEN), "127.0.0.1", free_port())
    server.start()
    try:
        with httpx.Client(base_url=server.url, trust_env=False) as c:
            r = c.get("/v1/status")
            assert r.status_code == 503 and r.headers["retry-after"] == "1" and "locked" in r.json()["detail"]
            m = c.get("/metrics")  # counters are still served
            assert m.status_code == 200 and "burst_api_calls_total" in m.text
    finally:
        server.stop()


def test_metrics_exposition_is_valid(client: httpx.Client) -> None:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'burst_replicas{policy="web",state="serving"} 2.0' in text
    assert 'burst_spend_per_hour{policy="web"} 1.24' in text
    assert 'burst_metric_value{policy="api"} 81.0' in text
    assert "burst_leader 1.0" in text
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: run scripts/services.sh install (Debian package prometheus)"
    lint = subprocess.run([promtool, "check", "metrics"], check=False, input=text, capture_output=True, text=True, timeout=30)
    # exit 0 and no output: parses, and no lint problem (names, units, help texts)
    assert lint.returncode == 0 and not (lint.stdout + lint.stderr).strip(), lint.stdout + lint.stderr


def test_openapi_document(client: httpx.Client) -> None:
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    for path in ("/healthz", "/readyz", "/v1/status", "/v1/events", "/metrics", "/v1/policies/{name}",
                 "/v1/policies/{name}/pause", "/v1/policies/{name}/resume", "/v1/policies/{name}/drain"):
        assert path in paths, path
    assert "HTTPBearer" in doc["components"]["securitySchemes"]
    assert paths["/v1/policies/{name}/drain"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in paths["/v1/status"]["get"]
    # no page that loads Swagger UI or ReDoc from a CDN: the document is for tools
    assert client.get("/docs").status_code == 404
    assert client.get("/redoc").status_code == 404


def test_binds_loopback_by_default() -> None:
    server = StatusServer(create_app(MemoryStatusSource(), TOKEN))
    assert server.host == "127.0.0.1" and server.port == 9180
