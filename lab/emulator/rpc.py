"""An Alibaba Cloud RPC-style API server for the local emulators: parses ``POST /?Action=...`` (parameters in
the query string and/or a form body), checks the signature exactly as the clients compute it (the RPC
HMAC-SHA1 one of aliyun-python-sdk-core, and the V3 ``ACS3-HMAC-SHA256`` one of the official generated SDKs,
see ``acs3.py``), answers errors in the real JSON shape, injects faults, counts calls, and dispatches to
handlers registered per (Version, Action), so ECS (2014-05-26) and SLB (2014-05-15) can share one server.
Used by ``lab/emulator/ecs.py`` and others.

Admin endpoints (JSON, loopback only by default): ``GET|POST|DELETE /_admin/faults``,
``GET|DELETE /_admin/calls``, ``GET /_admin/state``, plus whatever a product registers.
"""

from __future__ import annotations

import calendar
import hmac
import json
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from lab.emulator import acs3
from lab.emulator.faults import FaultBox, Faults
from lab.emulator.rpc_wire import AccessKey, ApiError, RpcRequest, new_request_id, sign, string_to_sign

__all__ = [
    "AccessKey",
    "AdminHandler",
    "ApiError",
    "Handler",
    "RpcRequest",
    "RpcServer",
    "new_request_id",
    "sign",
    "string_to_sign",
]

logger = logging.getLogger(__name__)

# Clock skew the real API tolerates on Timestamp, and how long a SignatureNonce stays "used".
_TIMESTAMP_SKEW_S = 15 * 60
_NONCE_CACHE = 200_000

Handler = Callable[[RpcRequest], dict[str, Any]]
AdminHandler = Callable[[Any], Any]  # JSON body (or None) -> JSON answer; ValueError -> 400


@dataclass(frozen=True)
class _Route:
    product: str
    handler: Handler


class RpcServer:
    """The HTTP server. ``register`` actions, ``start()`` (returns the base URL), ``stop()``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        access_keys: Mapping[str, AccessKey] | None = None,
        faults: FaultBox | None = None,
        clock: Callable[[], float] = time.time,
        check_timestamp: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.access_keys = dict(access_keys or {"local": AccessKey("local", "local-secret")})
        self.faults = faults or FaultBox()
        self.clock = clock
        self.check_timestamp = check_timestamp
        self.stopping = threading.Event()
        self._routes: dict[tuple[str, str], _Route] = {}
        self._versions: dict[str, str] = {}
        self._admin: dict[tuple[str, str], AdminHandler] = {}
        self._state: dict[str, Callable[[], Any]] = {}
        self._lock = threading.Lock()
        self._calls: Counter[tuple[str, str]] = Counter()
        self._errors: Counter[tuple[str, str]] = Counter()
        self._nonces: OrderedDict[str, float] = OrderedDict()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._register_builtin_admin()

    # ------------------------------------------------------------------ registry

    def register(self, product: str, version: str, action: str, handler: Handler) -> None:
        self._routes[(version, action)] = _Route(product, handler)
        self._versions[version] = product

    def register_admin(self, method: str, path: str, handler: AdminHandler) -> None:
        self._admin[(method.upper(), path)] = handler

    def register_state(self, product: str, provider: Callable[[], Any]) -> None:
        self._state[product] = provider

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        server = self

        class _Handler(_RequestHandler):
            rpc = server

        self.stopping.clear()
        self._httpd = ThreadingHTTPServer((self.host, self.port), _Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"rpc-emulator:{self.port}", daemon=True)
        self._thread.start()
        logger.info("emulator listening on %s", self.url)
        return self.url

    def stop(self) -> None:
        self.stopping.set()  # wakes handlers sleeping on injected latency
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def serve_forever(self) -> None:
        """Run in the foreground (the CLI) until interrupted."""
        self.start()
        try:
            while not self.stopping.wait(0.5):
                pass
        finally:
            self.stop()

    # ------------------------------------------------------------------ counters

    def calls(self) -> dict[str, Any]:
        with self._lock:
            flat: Counter[str] = Counter()
            by_product: dict[str, dict[str, int]] = {}
            for (product, action), n in self._calls.items():
                flat[action] += n
                by_product.setdefault(product, {})[action] = n
            errors: dict[str, dict[str, int]] = {}
            for (action, code), n in self._errors.items():
                errors.setdefault(action, {})[code] = n
            return {"calls": dict(flat), "by_product": by_product, "errors": errors,
                    "total": sum(flat.values())}

    def reset_calls(self) -> None:
        with self._lock:
            self._calls.clear()
            self._errors.clear()

    def _count(self, product: str, action: str, code: str | None) -> None:
        with self._lock:
            self._calls[(product, action)] += 1
            if code:
                self._errors[(action, code)] += 1

    # ------------------------------------------------------------------ request handling

    def handle(self, method: str, params: dict[str, str], host: str,
               v3: acs3.V3Request | None = None) -> tuple[int, dict[str, Any], float]:
        """Answer one API call: (HTTP status, JSON body, seconds to delay the answer). ``v3``: the request as
        received, when it carries a V3 (``ACS3-HMAC-SHA256``) Authorization header."""
        request_id = new_request_id()
        action = params.get("Action", "")
        version = params.get("Version", "")
        product = self._versions.get(version, "Unknown")
        code: str | None = None
        delay = 0.0
        try:
            key_id = self._authenticate_v3(v3) if v3 is not None else self._authenticate(method, params)
            route = self._routes.get((version, action))
            if route is None:
                if version not in self._versions:
                    raise ApiError("InvalidVersion", f"Specified parameter Version {version!r} is not valid.")
                raise ApiError("InvalidAction.NotFound",
                               f"Specified api {action!r} is not found, please check your url and method.", 404)
            self._inject(action)
            req = RpcRequest(action=action, version=version, region=params.get("RegionId", ""),
                             params=params, request_id=request_id, access_key_id=key_id, host=host)
            body = route.handler(req)
            delay = req.response_delay
            status, answer = 200, {"RequestId": request_id, **body}
        except ApiError as exc:
            code = exc.code
            status, answer = exc.status, self.error_body(exc, request_id, host, product)
        except Exception:  # a handler bug must look like the real API's 500, not kill the connection
            logger.exception("emulator handler %s failed (request %s)", action, request_id)
            code = "InternalError"
            status, answer = 500, self.error_body(
                ApiError("InternalError", "The request processing has failed due to some unknown error, "
                         "exception or failure.", 500), request_id, host, product)
        self._count(product, action or "(none)", code)
        return status, answer, delay

    @staticmethod
    def error_body(exc: ApiError, request_id: str, host: str, product: str) -> dict[str, Any]:
        return {
            "RequestId": request_id,
            "HostId": host,
            "Code": exc.code,
            "Message": exc.message,
            "Recommend": f"https://api.aliyun.com/troubleshoot?q={exc.code}&product={product}"
                         f"&requestId={request_id}",
        }

    def _authenticate(self, method: str, params: dict[str, str]) -> str:
        for name in ("AccessKeyId", "Signature", "SignatureNonce", "Timestamp"):
            if not params.get(name):
                raise ApiError("IncompleteSignature" if name != "AccessKeyId" else "MissingAccessKeyId",
                               f"The request signature does not conform to Aliyun standards: {name} is missing.")
        if params.get("SignatureMethod", "HMAC-SHA1") != "HMAC-SHA1":
            raise ApiError("InvalidSignatureMethod", "Specified signature method is not supported.")
        key = self.access_keys.get(params["AccessKeyId"])
        if key is None:
            raise ApiError("InvalidAccessKeyId.NotFound", "Specified access key is not found.", 404)
        server_string = string_to_sign(method, params)
        if not hmac.compare_digest(sign(key.secret, server_string), params["Signature"]):
            # the SDK splits this message on ':' and compares part [1] with its own string-to-sign
            raise ApiError("SignatureDoesNotMatch", "Specified signature is not matched with our calculation. "
                           f"server string to sign is:{server_string}")
        if key.security_token is not None and params.get("SecurityToken") != key.security_token:
            raise ApiError("InvalidSecurityToken.Mismatch", "Specified SecurityToken is not valid for this key.")
        self._check_timestamp(params["Timestamp"])
        self._use_nonce(params["SignatureNonce"])
        return key.id

    def _authenticate_v3(self, req: acs3.V3Request) -> str:
        """The V3 signature: same refusals and statuses as the RPC one (unknown key 404
        InvalidAccessKeyId.NotFound, wrong secret 400 SignatureDoesNotMatch, stale date, reused nonce)."""
        try:
            auth = acs3.parse_authorization(req.header("authorization") or "")
            for name in ("x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256"):
                if not req.header(name):
                    raise acs3.SignatureRefused("IncompleteSignature", "The request signature does not conform "
                                                f"to Aliyun standards: header {name} is missing.")
            key = self.access_keys.get(auth.access_key_id)
            if key is None:
                raise ApiError("InvalidAccessKeyId.NotFound", "Specified access key is not found.", 404)
            acs3.verify(req, auth, key.secret)
        except acs3.SignatureRefused as exc:
            raise ApiError(exc.code, exc.message) from None
        if key.security_token is not None and req.header("x-acs-security-token") != key.security_token:
            raise ApiError("InvalidSecurityToken.Mismatch", "Specified SecurityToken is not valid for this key.")
        self._check_timestamp(req.header("x-acs-date") or "")
        self._use_nonce(req.header("x-acs-signature-nonce") or "")
        return key.id

    def _check_timestamp(self, value: str) -> None:
        if not self.check_timestamp:
            return
        try:
            stamp = calendar.timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%SZ"))
        except ValueError:
            raise ApiError("InvalidTimeStamp.Format", "Specified time stamp or date value is not well "
                           "formatted.") from None
        if abs(stamp - self.clock()) > _TIMESTAMP_SKEW_S:
            raise ApiError("InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")

    def _use_nonce(self, nonce: str) -> None:
        with self._lock:
            if nonce in self._nonces:
                raise ApiError("SignatureNonceUsed", "Specified signature nonce was used already.")
            self._nonces[nonce] = self.clock()
            while len(self._nonces) > _NONCE_CACHE:
                self._nonces.popitem(last=False)

    def _inject(self, action: str) -> None:
        faults = self.faults.get()
        if not faults.applies_to(action):
            return
        pause = faults.latency_s + (faults.spike_s if self.faults.roll(faults.spike_rate) else 0.0)
        if pause > 0:
            self.stopping.wait(pause)
        if self.faults.roll(faults.throttle_rate):
            raise ApiError("Throttling", "Request was denied due to request throttling.")
        if self.faults.roll(faults.error_rate):
            if self.faults.choice([True, False]):
                raise ApiError("InternalError", "The request processing has failed due to some unknown error, "
                               "exception or failure.", 500)
            raise ApiError("ServiceUnavailable", "The request has failed due to a temporary failure of the "
                           "server.", 503)

    # ------------------------------------------------------------------ admin

    def _register_builtin_admin(self) -> None:
        self.register_admin("GET", "/_admin/faults", lambda _b: self.faults.get().as_dict())
        self.register_admin("POST", "/_admin/faults", self._set_faults)
        self.register_admin("DELETE", "/_admin/faults", lambda _b: self.faults.reset().as_dict())
        self.register_admin("GET", "/_admin/calls", lambda _b: self.calls())
        self.register_admin("DELETE", "/_admin/calls", self._reset_calls_admin)
        self.register_admin("GET", "/_admin/state", lambda _b: {p: f() for p, f in self._state.items()})

    def _reset_calls_admin(self, _body: Any) -> dict[str, Any]:
        self.reset_calls()
        return self.calls()

    def _set_faults(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object of fault fields, e.g. {\"throttle_rate\": 0.3}")  # noqa: TRY004
        faults: Faults = self.faults.update(body)
        logger.info("faults now %s", faults.as_dict())
        return faults.as_dict()

    def handle_admin(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        handler = self._admin.get((method, path))
        if handler is None:
            known = sorted(f"{m} {p}" for m, p in self._admin)
            return 404, {"error": f"no admin endpoint {method} {path}", "known": known}
        try:
            payload = json.loads(body) if body.strip() else None
        except ValueError as exc:
            return 400, {"error": f"body is not JSON: {exc}"}
        try:
            return 200, handler(payload)
        except ValueError as exc:
            return 400, {"error": str(exc)}


class _RequestHandler(BaseHTTPRequestHandler):
    rpc: RpcServer
    protocol_version = "HTTP/1.1"  # keep-alive: the SDK pools connections
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    server_version = "AliyunEmulator/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        # the request line's query carries the caller's STS SecurityToken: log the path only
        text = format % args
        if self.path and "?" in self.path:
            text = text.replace(self.path, urlsplit(self.path).path)
        logger.debug("%s %s", self.address_string(), text)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        if split.path.startswith("/_admin/"):
            status, answer = self.rpc.handle_admin(method, split.path, body)
            self._send(status, answer)
            return
        if split.path != "/" or method == "DELETE":
            self._send(404, {"Code": "InvalidAction.NotFound", "Message": f"{method} {split.path} is not an API."})
            return
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        params = dict(query)
        ctype = self.headers.get("Content-Type", "")
        if body and "application/x-www-form-urlencoded" in ctype:
            params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        v3 = None
        if (self.headers.get("Authorization") or "").startswith("ACS3-"):
            # the V3 signature: action and version travel as headers; the signed query is the URL's only
            headers: dict[str, list[str]] = {}
            for name, value in self.headers.items():
                headers.setdefault(name.lower(), []).append(value)
            v3 = acs3.V3Request(method, split.path, query, headers, body)
            params["Action"] = v3.header("x-acs-action") or params.get("Action", "")
            params["Version"] = v3.header("x-acs-version") or params.get("Version", "")
        status, answer, delay = self.rpc.handle(method, params, self.headers.get("Host", self.rpc.host), v3)
        if delay > 0:
            self.rpc.stopping.wait(delay)
        self._send(status, answer)

    def _send(self, status: int, answer: Any) -> None:
        data = orjson.dumps(answer, option=orjson.OPT_NON_STR_KEYS)  # PERF: a 100-instance page is 100 KB; compact like the real API
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json;charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            if isinstance(answer, dict) and "RequestId" in answer:
                self.send_header("x-acs-request-id", str(answer["RequestId"]))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            # the client gave up (its timeout): what the real API sees too; the action already happened
            logger.debug("client went away before the answer")
