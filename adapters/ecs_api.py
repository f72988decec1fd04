"""The one door to the ECS API for ``adapters/ecs.py``: builds the aliyun ``AcsClient`` (SDK retries off,
no proxy, custom endpoint, credentials from a provider), times and logs each call, retries transient
failures with capped exponential backoff and jitter, and maps every SDK exception to the project's errors
in one function (``map_sdk_error``). No SDK type leaves this module and ``adapters/ecs.py``."""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
from aliyunsdkcore.acs_exception.exceptions import ClientException, ServerException
from aliyunsdkcore.auth.signers.signer import Signer
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.request import RpcRequest

from adapters.credentials import CredentialsProvider
from controller.errors import (
    AuthError,
    BurstError,
    CapacityError,
    NotFoundError,
    PermanentError,
    QuotaError,
    TransientError,
)

__all__ = ["EcsApi", "EcsApiSettings", "is_retryable", "map_sdk_error"]

logger = logging.getLogger(__name__)

_TRANSIENT_CODES = {
    "ServiceUnavailable", "InternalError", "UnknownError", "SDK.HttpError", "SDK.UnknownServerError",
    "OperationConflict", "LastTokenProcessing", "IncorrectInstanceStatus.Initializing",
}
_AUTH_CODES = {
    "InvalidAccessKeyId.NotFound", "InvalidAccessKeyId.Inactive", "InvalidAccessKeyId", "SignatureDoesNotMatch",
    "InvalidAccessKeySecret", "IncompleteSignature", "MissingAccessKeyId", "InvalidSecurityToken.Expired",
    "InvalidSecurityToken.Malformed", "InvalidSecurityToken.Mismatch", "Forbidden.RAM", "Forbidden",
    "NoPermission", "Forbidden.AccessKeyDisabled", "InvalidTimeStamp.Expired", "SDK.InvalidCredential",
}
_CAPACITY_CODES = {
    "OperationDenied.NoStock", "InvalidInstanceType.NotSupported", "InvalidInstanceType.ValueUnauthorized",
    "InvalidInstanceType.ValueNotSupported", "Zone.NotOnSale", "InvalidZoneId.NotSupported",
    "InvalidVSwitchId.IpNotEnough", "InvalidResourceType.NotSupported", "OperationDenied.NoSpotStock",
}
# query strings in SDK messages carry the SecurityToken of STS credentials: never let them through
_QUERY = re.compile(r"(/\?|url: /\?)[^\s'\")]*")
_TOKEN = re.compile(r"(SecurityToken['\"]?\s*[:=]\s*['\"]?)[^&'\"\s,}]+")


def _scrub(text: str) -> str:
    return _TOKEN.sub(r"\1<redacted>", _QUERY.sub(r"\1<query redacted>", text))


class _ScrubSdkLogs(logging.Filter):
    """The SDK logs request parameters (DEBUG) and failing URLs (ERROR); mask the STS token in both.
    Its ERROR line for every failed call is dropped: EcsApi logs each failure once, at the right level
    (a throttled call that is retried is not an error)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith(("ServerException occurred", "HttpError occurred")):
            return False
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        record.msg = _scrub(str(record.msg))
        return True


for _name in ("aliyunsdkcore.client", "aliyunsdkcore.http.http_response"):
    _sdk_logger = logging.getLogger(_name)
    if not any(isinstance(f, _ScrubSdkLogs) for f in _sdk_logger.filters):
        _sdk_logger.addFilter(_ScrubSdkLogs())


def is_retryable(code: str, http_status: int | None) -> bool:
    return code in _TRANSIENT_CODES or code.startswith(("Throttling", "ServiceUnavailable", "InternalError")) \
        or (http_status is not None and http_status >= 500)


def map_sdk_error(exc: Exception, action: str) -> BurstError:
    """The project's error for an SDK exception raised by ``action`` (the only such mapping)."""
    if isinstance(exc, ServerException):
        code = str(exc.get_error_code() or "Unknown")
        status = exc.get_http_status()
        request_id = exc.get_request_id()
        message = _scrub(str(exc.get_error_msg() or ""))[:300]
        text = f"ECS {action} failed: {code}: {message}"
        if is_retryable(code, status):
            return TransientError(text, code=code, request_id=request_id)
        if code in _AUTH_CODES or code.startswith(("InvalidAccessKeyId", "InvalidSecurityToken", "Forbidden")):
            return AuthError(text, code=code, request_id=request_id)
        if code in _CAPACITY_CODES or code.endswith(".NoStock"):
            return CapacityError(text, code=code, request_id=request_id)
        if code.startswith("QuotaExceed") or code.endswith(".QuotaExceed") or "Quota" in code.split(".")[0]:
            return QuotaError(text, code=code, request_id=request_id)
        if code.endswith(".NotFound") or status == 404:
            return NotFoundError(text, code=code, request_id=request_id)
        return PermanentError(text, code=code, request_id=request_id)
    if isinstance(exc, ClientException):
        code = str(exc.get_error_code() or "SDK.ClientError")
        message = _scrub(str(exc.get_error_msg() or ""))[:300]
        if code == "SDK.HttpError":  # connection refused/reset, read or connect timeout
            return TransientError(f"ECS {action}: no answer: {message}", code=code)
        if code == "SDK.InvalidCredential":
            return AuthError(f"ECS {action}: {message}", code=code)
        return PermanentError(f"ECS {action}: {code}: {message}", code=code)
    return PermanentError(f"ECS {action}: unexpected {type(exc).__name__}: {_scrub(str(exc))[:300]}")


class _ProviderSigner(Signer):
    """Signs each request with the provider's current keys (one snapshot per request, so a refresh
    between reading the key id and the secret cannot mix two key pairs)."""

    def __init__(self, provider: CredentialsProvider) -> None:
        self._provider = provider

    def sign(self, region_id: str, request: Any) -> tuple[Any, str]:
        creds = self._provider.get()
        if creds.security_token:
            request.add_query_param("SecurityToken", creds.security_token)
        header = request.get_signed_header(region_id, creds.access_key_id, creds.access_key_secret)
        url = request.get_url(region_id, creds.access_key_id, creds.access_key_secret)
        return header, url


@dataclass
class EcsApiSettings:
    region: str
    credentials: CredentialsProvider
    endpoint: object | None = None  # "http://127.0.0.1:PORT", "host:port" or a URL object; None = the real API
    connect_timeout: float = 5.0
    read_timeout: float = 30.0  # per call; the SDK's own table would wait 86 s for RunInstances
    max_attempts: int = 6
    backoff_base: float = 0.5
    backoff_cap: float = 20.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    pool_size: int = 16


class _AcsClient(AcsClient):
    """PERF: the SDK decodes every answer's JSON only to read the RequestId it puts in the exception of an
    error answer; a 2xx answer is decoded once, by ``EcsApi.call`` (a 100-instance page is ~2 ms a pass)."""

    def _get_server_exception(self, http_status: int, response_body: Any, endpoint: Any,
                              string_to_sign: Any) -> Any:
        if 200 <= http_status < 300:
            return None
        return super()._get_server_exception(http_status, response_body, endpoint, string_to_sign)


class EcsApi:
    """``call(request)`` with retries; ``request`` is an aliyunsdkecs request object."""

    def __init__(self, settings: EcsApiSettings) -> None:
        self.settings = settings
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
            self.client.add_endpoint(settings.region, "Ecs", parts.netloc)

    def call(self, request: RpcRequest) -> dict[str, Any]:
        """The decoded JSON answer; TransientError after ``max_attempts`` transient failures."""
        action = request.get_action_name()
        if self._https:
            request.set_protocol_type("https")
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                body = self.client.do_action_with_exception(request)
            except (ServerException, ClientException) as exc:
                error = map_sdk_error(exc, action)
                elapsed = time.monotonic() - started
                if not isinstance(error, TransientError) or attempt >= self.settings.max_attempts:
                    # a permanent answer is the caller's to judge (a sold-out type is routine); giving up
                    # on a transient one after every retry is worth a warning
                    level = logging.WARNING if isinstance(error, TransientError) else logging.INFO
                    logger.log(level, "ECS %s failed after %d attempt(s): %s", action, attempt, error,
                               extra={"action": action, "code": error.code, "request_id": error.request_id})
                    raise error from exc
                delay = self._backoff(attempt)
                logger.info("ECS %s transient failure (%s, %.2fs), retry %d in %.2fs", action, error.code,
                            elapsed, attempt, delay, extra={"action": action, "request_id": error.request_id})
                self.settings.sleep(delay)
                continue
            answer: dict[str, Any] = orjson.loads(body)  # PERF: a 100-instance page is 100 KB
            logger.debug("ECS %s ok in %.3fs (request %s)", action, time.monotonic() - started,
                         answer.get("RequestId"), extra={"action": action})
            return answer

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.settings.backoff_cap, self.settings.backoff_base * 2 ** (attempt - 1))
        return ceiling / 2 + self.settings.rng.uniform(0, ceiling / 2)  # "equal jitter"

    def close(self) -> None:
        self.client.session.close()
