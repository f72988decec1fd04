"""The dashboard's delivery over HTTP (no browser): the page and its assets are served by the status app
with a Content-Security-Policy that forbids remote sources, only the shipped files are reachable, the files
reference nothing outside the origin, they ship in the package, and the API document is unchanged."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

import httpx
import pytest
from setuptools import find_packages

from controller.status.app import StatusServer, create_app
from controller.status.dashboard import ASSETS
from tests.support.net import free_port
from tests.support.status_source import MemoryStatusSource

ROOT = Path(__file__).resolve().parents[3]
WEB = ROOT / "controller" / "status" / "web"


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    server = StatusServer(create_app(MemoryStatusSource(), "tok"), "127.0.0.1", free_port())
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=10, trust_env=False) as c:
            yield c
    finally:
        server.stop()


def _csp(resp: httpx.Response) -> dict[str, list[str]]:
    out = {}
    for part in resp.headers["content-security-policy"].split(";"):
        name, *values = part.split()
        out[name] = values
    return out


def test_the_page_is_served_at_the_root_with_a_strict_policy(client: httpx.Client) -> None:
    resp = client.get("/")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert "<title>burst-controller</title>" in resp.text
    csp = _csp(resp)
    assert csp["default-src"] == ["'none'"]
    for directive in ("script-src", "style-src", "connect-src"):
        assert csp[directive] == ["'self'"], directive  # no remote host, no 'unsafe-inline', no wildcard
    assert csp["frame-ancestors"] == ["'none'"]
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("name,media", [("dashboard.js", "text/javascript"), ("chart.js", "text/javascript"),
                                        ("dashboard.css", "text/css")])
def test_assets_are_served_with_their_type_and_revalidated_by_etag(client: httpx.Client, name: str, media: str) -> None:
    resp = client.get(f"/ui/{name}")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith(media)
    assert resp.content == (WEB / name).read_bytes()
    assert "content-security-policy" in resp.headers
    again = client.get(f"/ui/{name}", headers={"If-None-Match": resp.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


@pytest.mark.parametrize("path", ["/ui/nope.js", "/ui/index.html", "/ui/..%2Fstatus.py", "/ui/__init__.py",
                                  "/ui/../status.py"])
def test_nothing_but_the_shipped_assets_is_reachable(client: httpx.Client, path: str) -> None:
    resp = client.get(path)
    assert resp.status_code == 404
    assert "def " not in resp.text


def test_the_api_document_does_not_list_the_dashboard(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(p.startswith("/ui") for p in paths)
    assert "/v1/policies/{name}/history" in paths  # what the chart reads


def test_the_assets_reference_nothing_outside_the_origin() -> None:
    for name in ASSETS:
        text = (WEB / name).read_text()
        urls = re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", text)
        # the SVG namespace is an identifier, never fetched
        assert [u for u in urls if "www.w3.org/2000/svg" not in u] == [], name
        # text from the controller is never parsed as HTML or code
        assert not re.search(r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|eval\(|new Function", text), name
    html = (WEB / "index.html").read_text()
    assert "<script>" not in html and " style=" not in html  # nothing inline for the CSP to refuse


def test_the_assets_ship_in_the_package() -> None:
    """controller/status/web is a package (so setuptools finds it) and the package-data patterns match its files."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools_cfg = pyproject["tool"]["setuptools"]
    assert "controller.status.web" in find_packages(str(ROOT), include=setuptools_cfg["packages"]["find"]["include"])
    patterns = setuptools_cfg["package-data"]["*"]
    for name in ASSETS:
        assert (WEB / name).is_file(), name
        assert any(fnmatch(name, pattern) for pattern in patterns), f"{name} matches no package-data pattern"
