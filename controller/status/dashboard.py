"""The operator dashboard: static HTML, CSS and JavaScript shipped in ``controller/status/web/`` and served by the
status app (``controller.status.app.create_app`` calls ``mount_dashboard``) at ``/`` and ``/ui/<file>``.

The page only talks to the status API of the same origin (``/v1/status``, ``/v1/events``, ``/v1/policies/
<name>/history`` and the pause/resume/drain POSTs), so it needs no build step, no CDN and no network. Its
responses carry a Content-Security-Policy that allows nothing but this origin: a stray remote script,
style, font or frame is refused by the browser, and no inline script can run.
"""

from __future__ import annotations

import hashlib
import logging
from importlib import resources

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response

__all__ = ["ASSETS", "CONTENT_SECURITY_POLICY", "mount_dashboard"]

logger = logging.getLogger(__name__)

# Everything from this origin only; no inline script; data: images only (the favicon placeholder).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Revalidate every load (cheap: ETag) so an upgraded controller never runs yesterday's script.
    "Cache-Control": "no-cache",
}

# The shipped files and their media types: an explicit list, so no request can name anything else.
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "chart.js": "text/javascript; charset=utf-8",
}


def _load_assets() -> dict[str, tuple[bytes, str]]:
    """Read the files once: (body, etag) by name. A missing file is a packaging bug, said loudly."""
    out: dict[str, tuple[bytes, str]] = {}
    root = resources.files("controller.status.web")
    for name in ASSETS:
        body = root.joinpath(name).read_bytes()
        out[name] = (body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
    return out


def mount_dashboard(app: FastAPI) -> None:
    """Add ``GET /`` (the page) and ``GET /ui/{name}`` (its assets) to the status app; kept out of the
    OpenAPI document, which describes the API only."""
    assets = _load_assets()

    def serve(name: str, request: Request) -> Response:
        body, etag = assets[name]
        headers = {**SECURITY_HEADERS, "ETag": etag}
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=ASSETS[name], headers=headers)

    @app.get("/", include_in_schema=False)
    def dashboard(request: Request) -> Response:
        return serve("index.html", request)

    @app.get("/ui/{name}", include_in_schema=False)
    def asset(name: str, request: Request) -> Response:
        if name not in assets or name == "index.html":
            raise HTTPException(status_code=404, detail=f"no dashboard file named {name!r}")
        return serve(name, request)
