"""The one door to Alibaba Cloud's RPC APIs (ECS, SLB, Container Registry) on aliyun-python-sdk-core: builds
the ``AcsClient`` (SDK retries off, no proxy, custom endpoint, requests signed with a credentials
provider's current keys), times every request (``controller.metrics.timed_call``), retries transient
failures (``controller.retry``) and maps SDK exceptions to the project's errors in one function
(``map_error``), after each API's codes (``ErrorCodes``). Used by ``adapters/aliyun/ecs_api.py``,
``adapters/aliyun/slb.py`` and ``adapters/aliyun/acr.py``; no SDK type leaves them."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
from aliyunsdkcore.acs_exception.exceptions import ClientException, ServerException
from aliyunsdkcore.auth.signers.signer import Signer
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.request import RpcRequest

from adapters.aliyun.credentials import CredentialsProvider
from controller.errors import (
    AuthError,
    BurstError,
    CapacityError,
    NotFoundError,
    PermanentError,
    QuotaError,
    TransientError,
)
from controller.metrics import timed_call
from controller.retry import Backoff, retry_call

__all__ = ["AliyunClient", "AliyunSettings", "ErrorCodes", "map_error", "scrub"]

logger = logging.getLogger(__name__)

# query strings in SDK messages carry the SecurityToken of STS credentials: never let them through
_QUERY = re.compile(r"(/\?|url: /\?)[^\s'\")]*")
_TOKEN = re.compile(r"(SecurityToken['\"]?\s*[:=]\s*['\"]?)[^&'\"\s,}]+")
_AUTHORIZATION_TOKEN = re.compile(r'("?AuthorizationToken"?\s*[:=]\s*"?)[^",}\s]+')  # an ACR registry password


def scrub(text: str) -> str:
    """``text`` without STS tokens or ACR registry passwords."""
    text = _TOKEN.sub(r"\1<redacted>", _QUERY.sub(r"\1<query redacted>", text))
    return _AUTHORIZATION_TOKEN.sub(r"\1<redacted>", text) if "AuthorizationToken" in text else text


class _ScrubSdkLogs(logging.Filter):
    """The SDK logs request parameters and whole answers (DEBUG) and failing URLs (ERROR); mask the STS token
    and ACR passwords in all of them. Its ERROR line for every failed call is dropped: ``AliyunClient``
    logs each failure once, at the right level (a throttled call that is retried is not an error)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith(("ServerException occurred", "HttpError occurred")):
            return False
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        record.msg = scrub(str(record.msg))
        return True


for _name in ("aliyunsdkcore.client", "aliyunsdkcore.http.http_response"):
    _sdk_logger = logging.getLogger(_name)
    if not any(isinstance(f, _ScrubSdkLogs) for f in _sdk_logger.filters):
        _sdk_logger.addFilter(_ScrubSdkLogs())


@dataclass(frozen=True)
class ErrorCodes:
    """How one API's error codes read: each predicate gets (code, HTTP status)."""

    transient: Callable[[str, int | None], bool]
    auth: Callable[[str, int | None], bool]
    not_found: Callable[[str, int | None], bool]
    capacity: Callable[[str, int | None], bool] = lambda code, status: False
    quota: Callable[[str, int | None], bool] = lambda code, status: False
    auth_hint: str = ""  # added to an AuthError's message: what to check


def map_error(exc: Exception, what: str, codes: ErrorCodes) -> BurstError:
    """The project's error for an SDK exception raised by ``what`` ("ECS RunInstances"): the only such
    mapping. Messages are cut short and scrubbed of tokens."""
    if isinstance(exc, ServerException):
        code = str(exc.get_error_code() or "Unknown")
        status = exc.get_http_status()
        request_id = exc.get_request_id()
        text = f"{what} failed: {code}: {scrub(str(exc.get_error_msg() or ''))[:300]}"
        if codes.transient(code, status) or (status is not None and status >= 500):
            return TransientError(text, code=code, request_id=request_id)
        if codes.auth(code, status):
            return AuthError(text + codes.auth_hint, code=code, request_id=request_id)
        if codes.capacity(code, status):
            return CapacityError(text, code=code, request_id=request_id)
        if codes.quota(code, status):
            return QuotaError(text, code=code, request_id=request_id)
        if codes.not_found(code, status) or status == 404:
            return NotFoundError(text, code=code, request_id=request_id)
        return PermanentError(text, code=code, request_id=request_id)
    if isinstance(exc, ClientException):
        code = str(exc.get_error_code() or "SDK.ClientError")
        message = scrub(str(exc.get_error_msg() or ""))[:300]
        if code == "SDK.HttpError":  # connection refused/reset, read or connect timeout
            return TransientError(f"{what}: no answer: {message}", code=code)
        if code == "SDK.InvalidCredential":
            return AuthError(f"{what}: {message}", code=code)
        return PermanentError(f"{what}: {code}: {message}", code=code)
    return PermanentError(f"{what}: unexpected {type(exc).__name__}: {scrub(str(exc))[:300]}")


class _ProviderSigner(Signer):
    """Signs each request with the provider's current keys (one snapshot per request, so a refresh
    between reading the key id and the secret cannot mix two key pairs, and rotated STS keys are used)."""

    def __init__(self, provider: CredentialsProvider) -> None:
        self._provider = provider

    def sign(self, region_id: str, request: Any) -> tuple[Any, str]:
        creds = self._provider.get()
        if creds.security_token:
            request.add_query_param("SecurityToken", creds.security_token)
        header = request.get_signed_header(region_id, creds.access_key_id, creds.access_key_secret)
        url = request.get_url(region_id, creds.access_key_id, creds.access_key_secret)
        return header, url


class _AcsClient(AcsClient):
    """PERF: the SDK decodes every answer's JSON only to read the RequestId it puts in the exception of an
    error answer; a 2xx answer is decoded once, by ``AliyunClient.call`` (a 100-instance page is ~2 ms a
    pass)."""

    def _get_server_exception(self, http_status: int, response_body: Any, endpoint: Any,
                              string_to_sign: Any) -> Any:
        if 200 <= http_status < 300:
            return None
        return super()._get_server_exception(http_status, response_body, endpoint, string_to_sign)


@dataclass
class AliyunSettings:
    system: str  # the API's name in metrics and messages: "ecs", "slb", "acr"
    product: str  # the SDK's product code, for a custom endpoint: "Ecs", "Slb", "cr"
    region: str
    credentials: CredentialsProvider
    codes: ErrorCodes
    backoff: Backoff
    endpoint: object | None = None  # "http://127.0.0.1:PORT", "host:port" or a URL object; None = the real API
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    pool_size: int = 16


class AliyunClient:
    """``call(request)``: the decoded JSON answer of an aliyun SDK ``RpcRequest``, retried, timed, mapped."""

    def __init__(self, settings: AliyunSettings) -> None:
        self.settings = settings
        self._name = settings.system.upper()
        self._https = False
        # the placeholder key is never used: _ProviderSigner replaces the SDK's signer right below, so the
        # secret lives only in the provider (fetched per request: a RAM role is not asked at start-up),
        # and the SDK's ALIYUN_ACCESS_KEY_* environment fallback cannot take over
        self.client = _AcsClient("-", "-", settings.region, auto_retry=False,
                                 connect_timeout=settings.connect_timeout, timeout=settings.read_timeout,
                                 proxy={"http": None, "https": None}, pool_size=settings.pool_size)
        self.client._signer = _ProviderSigner(settings.credentials)
        # PERF: requests would look for ~/.netrc credentials on every call (the signature is the only auth);
        # proxies and the CA bundle are set explicitly above and by the SDK, so nothing else changes
        self.client.session.trust_env = False
        if settings.endpoint:
            raw = str(settings.endpoint)  # also a pydantic HttpUrl from the config, which is not a str
            parts = urlsplit(raw if "://" in raw else f"http://{raw}")
            self._https = parts.scheme == "https"
            self.client.add_endpoint(settings.region, settings.product, parts.netloc)

    def call(self, request: RpcRequest, what: str | None = None) -> dict[str, Any]:
        """The decoded JSON answer; TransientError after ``backoff.attempts`` transient failures. ``what``
        names the call in messages (default: the API and the action)."""
        action = request.get_action_name()
        what = what or f"{self._name} {action}"
        if self._https:
            request.set_protocol_type("https")
        attempts = 0

        def attempt() -> dict[str, Any]:
            nonlocal attempts
            attempts += 1
            started = time.monotonic()
            with timed_call(self.settings.system, action):
                try:
                    body = self.client.do_action_with_exception(request)
                except (ServerException, ClientException) as exc:
                    raise map_error(exc, what, self.settings.codes) from exc
                answer: dict[str, Any] = orjson.loads(body)  # PERF: a 100-instance page is 100 KB
            logger.debug("%s ok in %.3fs (request %s)", what, time.monotonic() - started, answer.get("RequestId"),
                         extra={"action": action})
            return answer

        try:
            return retry_call(attempt, self.settings.backoff, what)
        except BurstError as error:
            # a permanent answer is the caller's to judge (a sold-out type is routine); giving up on a
            # transient one after every retry is worth a warning
            level = logging.WARNING if isinstance(error, TransientError) else logging.INFO
            logger.log(level, "%s failed after %d attempt(s): %s", what, attempts, error,
                       extra={"action": action, "code": error.code, "request_id": error.request_id})
            raise

    def close(self) -> None:
        self.client.session.close()
