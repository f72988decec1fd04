"""The status HTTP endpoint: a FastAPI app over a ``StatusSource`` (implemented by the daemon), and a
uvicorn server that runs it in a background thread of the daemon.

Read-only routes need no token; ``POST /v1/policies/{name}/pause|resume|drain`` need
``Authorization: Bearer <token>`` (401 without, 403 when wrong, compared in constant time). Every input is
validated so that no request can produce a 5xx; a 503 means the state store is busy, not bad input.
"""

from __future__ import annotations

import hmac
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Annotated, Literal, Protocol, runtime_checkable

import uvicorn
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from controller import metrics
from controller.errors import BurstError, FencedError, NotFoundError, TransientError
from controller.status.dashboard import mount_dashboard
from controller.status.models import (
    POLICY_NAME_PATTERN,
    ActionResult,
    ControllerStatus,
    ErrorBody,
    EventPage,
    Health,
    MetricPoint,
    PolicyStatus,
    Readiness,
    SampleRow,
)

__all__ = ["HISTORY_PAGE", "HISTORY_SPAN", "MAX_EVENTS_PAGE", "StatusServer", "StatusSource", "create_app"]

logger = logging.getLogger(__name__)

MAX_EVENTS_PAGE = 1000
HISTORY_SPAN = 86_400.0  # seconds of history served: the dashboard's widest chart; an older `since` is cut here
HISTORY_PAGE = 5_000  # points in one history answer at most (`limit`); page on with `since` after the last
_MAX_CURSOR = 2**63 - 1  # the largest id SQLite and PostgreSQL BIGINT hold
_MAX_EPOCH = 1e11  # year ~5138: anything later is a typo, not a time


@runtime_checkable
class StatusSource(Protocol):
    """What the status endpoint asks the daemon. Implemented by the LOOP engineer's daemon.

    Methods are called from uvicorn's worker threads, concurrently with the control loop: they must be
    thread-safe. They may raise ``NotFoundError`` (unknown policy -> 404), ``FencedError`` (this controller
    is a standby -> 409) or ``TransientError``/``StateBusyError`` (-> 503).
    """

    def status(self) -> ControllerStatus: ...

    def events(self, *, cursor: int | None, limit: int, policy: str | None) -> EventPage:
        """Events oldest first. ``cursor=None``: the latest ``limit`` events; ``cursor=N``: up to ``limit``
        events with id > N. ``next_cursor`` is the id of the last event returned, or ``cursor`` when there
        is nothing newer (so a follower polls with it again), or None when there are no events at all."""

    def ready(self) -> tuple[bool, str]:
        """Whether the controller is ready, and why not (a standby answers False, "standby: ...")."""

    def pause(self, policy: str) -> None: ...

    def resume(self, policy: str) -> None: ...

    def drain(self, policy: str) -> None:
        """Scale this policy's cloud replicas to zero now (and keep them there until resumed)."""

    def history(self, policy: str, since: float, limit: int) -> list[MetricPoint]:
        """The policy's samples with ``at`` >= ``since``, oldest first, at most ``limit``."""

    def history_rows(self, *, after: int, since: float, limit: int) -> list[SampleRow]:
        """Every policy's samples with id > ``after`` and ``at`` >= ``since``: the newest ``limit``, oldest
        first (the status process keeps its own window of them, controller/status/history.py)."""


class _StatusCache:
    """Keeps the last status snapshot, and its JSON, for a short time: under a burst of readers
    (dashboards, scrapers, load tests) the state store is asked, and the document serialised, at most once
    per ``ttl`` instead of once per request."""

    def __init__(self, source: StatusSource, ttl: float) -> None:
        self._source, self._ttl = source, ttl
        self._lock = threading.Lock()
        self._value: ControllerStatus | None = None
        self._json: bytes = b""
        self._at = -math.inf

    def _refresh(self) -> None:
        now = time.monotonic()
        if self._value is None or now - self._at >= self._ttl:
            self._value = self._source.status()
            self._json = self._value.model_dump_json().encode()
            self._at = now

    def get(self) -> ControllerStatus:
        with self._lock:
            self._refresh()
            assert self._value is not None
            return self._value

    def json(self) -> bytes:
        with self._lock:
            self._refresh()
            return self._json

    def invalidate(self) -> None:
        with self._lock:
            self._value = None


PolicyName = Annotated[str, Path(pattern=POLICY_NAME_PATTERN, max_length=40,
                                 description="policy name (a DNS label)")]
_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in ((404, "unknown policy"), (409, "this controller is a standby"),
                       (503, "state store busy, retry"))
}
# What the protocol guard in front of the app (controller/status/guard.py) answers on any route, before the
# app sees the request: documented on every operation, so a client (and schemathesis) knows them.
_PLAIN = {"text/plain": {"schema": {"type": "string"}}}
_GUARD_REFUSALS: dict[int | str, dict[str, object]] = {
    414: {"description": "request target (path and query) over the guard's limit", "content": _PLAIN},
    421: {"model": ErrorBody, "description": "unknown Host header (status.allowed_hosts adds names)"},
    431: {"description": "too many or too large header fields", "content": _PLAIN},
}
_AUTH_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorBody, "description": "no bearer token"},
    403: {"model": ErrorBody, "description": "wrong token"},
    **_ERRORS,
}


def create_app(source: StatusSource, token: str | None, *, registry: CollectorRegistry | None = None,
               status_ttl: float = 0.5, version: str = "",
               metrics_text: Callable[[], bytes] | None = None) -> FastAPI:
    """The status app. ``token`` None disables the mutating routes (they answer 503 saying so).
    ``metrics_text``: where ``/metrics`` comes from when the app runs outside the daemon's process (the
    status process serves the exposition the daemon rendered into its snapshot)."""
    app = FastAPI(
        title="burst-controller status",
        version=version or "1",
        description="What the burst controller is doing and why; pause, resume or drain a policy.",
        # FastAPI's /docs and /redoc pages load their JavaScript from a public CDN: no page here runs code
        # from elsewhere (broken offline, a supply-chain risk in an operator's browser). /openapi.json stays.
        docs_url=None, redoc_url=None, responses=_GUARD_REFUSALS,
    )
    cache = _StatusCache(source, status_ttl)
    expected = token.encode() if token else None
    bearer = HTTPBearer(auto_error=False, description="the token in the controller's status.token_file")
    reg = registry if registry is not None else metrics.REGISTRY
    scrape_lock = threading.Lock()

    def _error(status_code: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)

    @app.exception_handler(NotFoundError)
    async def _not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return _error(404, exc.message)

    @app.exception_handler(FencedError)
    async def _fenced(_: Request, exc: FencedError) -> JSONResponse:
        return _error(409, exc.message)

    @app.exception_handler(TransientError)
    async def _busy(_: Request, exc: TransientError) -> JSONResponse:
        return _error(503, f"try again: {exc.message}", {"Retry-After": "1"})

    @app.exception_handler(BurstError)
    async def _burst(request: Request, exc: BurstError) -> JSONResponse:
        logger.error("status request failed", extra={"path": request.url.path, "error": str(exc)})
        return _error(500, exc.message)

    class _AuthFailed(Exception):
        def __init__(self, code: int, detail: str) -> None:
            self.code, self.detail = code, detail

    @app.exception_handler(_AuthFailed)
    async def _auth(_: Request, exc: _AuthFailed) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Bearer realm="burst-controller"'} if exc.code == 401 else None
        return _error(exc.code, exc.detail, headers)

    # Plain default (not Annotated) because `bearer` is local and annotations here are strings.
    def require_token(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        if expected is None:
            raise TransientError("mutations are disabled: no status token is configured "
                                 "(status.token_file or status.token in controller.yaml)")
        if creds is None or not creds.credentials:
            raise _AuthFailed(401, "missing bearer token: send 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(creds.credentials.encode("utf-8", "surrogateescape"), expected):
            raise _AuthFailed(403, "wrong bearer token")

    @app.get("/healthz", response_model=Health, tags=["probes"], summary="the process is alive")
    async def healthz() -> Health:
        return Health()

    @app.get("/readyz", response_model=Readiness, tags=["probes"],
             responses={503: {"model": Readiness, "description": "not ready (or a standby), with the reason"}})
    def readyz() -> JSONResponse:
        ok, reason = source.ready()
        role: Literal["active", "standby"] | None
        try:
            role = cache.get().role
        except BurstError:
            role = None
        body = Readiness(ready=ok, reason=reason, role=role)
        return JSONResponse(body.model_dump(), status_code=200 if ok else 503)

    # The models are already validated: the routes send their JSON directly (response_model only documents
    # them), which is what lets the endpoint answer well over 1,000 requests/s.
    @app.get("/v1/status", response_model=ControllerStatus, tags=["status"], responses=_ERRORS)
    def get_status() -> Response:
        return Response(cache.json(), media_type="application/json")

    @app.get("/v1/policies/{name}", response_model=PolicyStatus, tags=["status"], responses=_ERRORS)
    def get_policy(name: PolicyName) -> Response:
        for p in cache.get().policies:
            if p.name == name:
                return Response(p.model_dump_json(), media_type="application/json")
        raise NotFoundError(f"no policy named {name!r}")

    @app.get("/v1/policies/{name}/history", response_model=list[MetricPoint], tags=["status"],
             responses=_ERRORS)
    def get_history(name: PolicyName,
                    since: Annotated[float, Query(ge=0, le=_MAX_EPOCH, allow_inf_nan=False,
                                                  description="epoch seconds; default: the last hour; at "
                                                              "most the last 24 hours are served")] = 0.0,
                    limit: Annotated[int, Query(ge=1, le=HISTORY_PAGE,
                                                description="points at most, oldest first; a full page: ask "
                                                            "again with since after the last point")] = HISTORY_PAGE,
                    ) -> list[MetricPoint]:
        now = time.time()
        return source.history(name, max(since or now - 3600, now - HISTORY_SPAN), limit)

    @app.get("/v1/events", response_model=EventPage, tags=["status"], responses=_ERRORS)
    def get_events(
        cursor: Annotated[int | None, Query(ge=0, le=_MAX_CURSOR,
                                            description="return events after this id; omit for the latest")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_EVENTS_PAGE)] = 100,
        policy: Annotated[str | None, Query(pattern=POLICY_NAME_PATTERN, max_length=40,
                                            description="only this policy's events")] = None,
    ) -> Response:
        page = source.events(cursor=cursor, limit=limit, policy=policy)
        return Response(page.model_dump_json(), media_type="application/json")

    @app.get("/metrics", tags=["status"], response_class=PlainTextResponse,
             summary="Prometheus exposition of the controller's metrics")
    def get_metrics() -> Response:
        if metrics_text is not None:
            return Response(metrics_text(), media_type=CONTENT_TYPE_LATEST)
        with scrape_lock:
            try:
                metrics.observe_status(cache.get())
            except BurstError as exc:  # counters are still worth serving when the state store is busy
                logger.warning("metrics: status snapshot unavailable", extra={"error": str(exc)})
            body = generate_latest(reg)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    def _mutation(action: Literal["pause", "resume", "drain"], call: Callable[[str], None],
                  done: str) -> Callable[..., ActionResult]:
        def handler(name: PolicyName) -> ActionResult:
            if cache.get().role == "standby":
                raise FencedError("this controller is a standby: send the request to the active controller")
            call(name)
            cache.invalidate()
            logger.info("operator %s of policy %s", action, name, extra={"policy": name, "action": action})
            return ActionResult(policy=name, action=action, message=done.format(name=name))
        return handler

    for action, call, done in (
        ("pause", source.pause, "policy {name} paused: no decisions until resumed; replicas stay as they are"),
        ("resume", source.resume, "policy {name} resumed"),
        ("drain", source.drain, "policy {name} draining: its cloud replicas are being drained to zero"),
    ):
        app.add_api_route(f"/v1/policies/{{name}}/{action}", _mutation(action, call, done),  # type: ignore[arg-type]
                          methods=["POST"], response_model=ActionResult, tags=["control"],
                          dependencies=[Depends(require_token)],
                          summary=f"{action} a policy (bearer token)", responses=_AUTH_ERRORS,
                          name=action)
    mount_dashboard(app)  # the operator dashboard at / (controller/status/dashboard.py, controller/status/web/)
    return app


class StatusServer:
    """Runs the app with uvicorn in a daemon thread; ``start`` returns once the socket listens."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 9180) -> None:
        self.host, self.port = host, port
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                                lifespan="off", timeout_graceful_shutdown=2, backlog=2048)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="status-http", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise TransientError(f"status endpoint could not listen on {self.host}:{self.port}")
            if time.monotonic() > deadline:
                raise TransientError(f"status endpoint did not start on {self.host}:{self.port} in {timeout}s")
            time.sleep(0.01)
        logger.info("status endpoint listening on %s", self.url)

    def stop(self, timeout: float = 5.0) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
