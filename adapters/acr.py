"""Alibaba Cloud Container Registry credentials: a temporary login from the Enterprise Edition API
GetAuthorizationToken (aliyun-python-sdk-cr, 2018-12-01, by InstanceId), cached and refreshed before
it expires. A ``CredentialSource`` for ``adapters.registry``; built by the wiring module and the CLI.
SDK exceptions are mapped to the project's errors in ``_sdk_error``; no secret is ever logged."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aliyunsdkcore.acs_exception.exceptions import ClientException, ServerException
from aliyunsdkcore.auth.credentials import AccessKeyCredential, StsTokenCredential
from aliyunsdkcore.client import AcsClient
from aliyunsdkcr.request.v20181201.GetAuthorizationTokenRequest import GetAuthorizationTokenRequest

from adapters.credentials import CredentialsProvider
from adapters.credentials import from_env as keys_from_env
from adapters.registryauth import Credentials, CredentialSource
from controller.errors import (
    AuthError,
    BurstError,
    ConfigError,
    NotFoundError,
    PermanentError,
    TransientError,
)

__all__ = ["AcrToken", "AcrTokenCredentials"]

logger = logging.getLogger(__name__)

REFRESH_MARGIN = 300.0  # seconds before ExpireTime a token is replaced (a layer push can take minutes)
_AUTH_CODES = ("InvalidAccessKeyId", "InvalidAccessKeySecret", "SignatureDoesNotMatch", "InvalidSecurityToken", "Forbidden",
               "NoPermission", "IncompleteSignature", "MissingAccessKeyId", "SDK.InvalidCredential")


class _RedactTokens(logging.Filter):
    """aliyunsdkcore logs whole response bodies at DEBUG, and this one is a registry password."""

    _FIELD = re.compile(r'("?AuthorizationToken"?\s*[:=]\s*"?)[^",}\s]+')

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "AuthorizationToken" in text:
            record.msg, record.args = self._FIELD.sub(r"\1<redacted>", text), None
        return True


_sdk_logger = logging.getLogger("aliyunsdkcore.client")
if not any(isinstance(f, _RedactTokens) for f in _sdk_logger.filters):
    _sdk_logger.addFilter(_RedactTokens())


@dataclass(frozen=True)
class AcrToken:
    credentials: Credentials
    expires: float  # epoch seconds

    def __repr__(self) -> str:
        return f"AcrToken(username={self.credentials.username!r}, expires={self.expires:.0f})"


class AcrTokenCredentials:
    """Registry credentials for the ACR instance's hosts from GetAuthorizationToken; other hosts are asked
    of ``fallback``. ``clock`` (epoch seconds) is injectable for the refresh tests."""

    def __init__(self, instance_id: str, region: str, hosts: Iterable[str], keys: CredentialsProvider, *,
                 endpoint: str | None = None, fallback: CredentialSource | None = None,
                 clock: Callable[[], float] = time.time, refresh_margin: float = REFRESH_MARGIN,
                 timeout: float = 10.0) -> None:
        if not instance_id or not region:
            raise ConfigError("ACR token credentials need an instance id and a region")
        self.instance_id = instance_id
        self.region = region
        self.hosts = frozenset(hosts)
        self._keys = keys
        self._endpoint = endpoint
        self._fallback = fallback
        self._clock = clock
        self._margin = refresh_margin
        self._timeout = timeout
        self._token: AcrToken | None = None
        self._lock = threading.Lock()
        self.fetches = 0  # how many tokens were requested (for status and tests)

    @classmethod
    def from_env(cls, instance_id: str, region: str, hosts: Iterable[str], *, endpoint: str | None = None,
                 fallback: CredentialSource | None = None) -> AcrTokenCredentials:
        """With the AccessKey from ALIBABA_CLOUD_ACCESS_KEY_ID/_SECRET (+ _SECURITY_TOKEN)."""
        keys = keys_from_env()
        if keys is None:
            raise ConfigError("ACR token: set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET")
        return cls(instance_id, region, hosts, keys, endpoint=endpoint, fallback=fallback)

    def __repr__(self) -> str:
        return f"AcrTokenCredentials(instance_id={self.instance_id!r}, hosts={sorted(self.hosts)})"

    def get(self, host: str) -> Credentials | None:
        if host not in self.hosts:
            return self._fallback.get(host) if self._fallback else None
        return self.token().credentials

    def rejected(self, host: str) -> None:
        if host in self.hosts:
            with self._lock:
                self._token = None  # the next request fetches a fresh one
        elif self._fallback:
            self._fallback.rejected(host)

    def token(self) -> AcrToken:
        """The current token, fetched again when it expires within the refresh margin."""
        with self._lock:
            if self._token is None or self._token.expires - self._margin <= self._clock():
                self._token = self._fetch()
            return self._token

    def _fetch(self) -> AcrToken:
        keys = self._keys.get()
        if keys.security_token:
            cred: object = StsTokenCredential(keys.access_key_id, keys.access_key_secret, keys.security_token)
        else:
            cred = AccessKeyCredential(keys.access_key_id, keys.access_key_secret)
        client = AcsClient(region_id=self.region, credential=cred, auto_retry=False, timeout=self._timeout,
                           connect_timeout=5, proxy={"http": None, "https": None})
        request = GetAuthorizationTokenRequest()
        request.set_InstanceId(self.instance_id)
        if self._endpoint:
            parts = urlsplit(self._endpoint if "://" in self._endpoint else f"http://{self._endpoint}")
            client.add_endpoint(self.region, "cr", parts.netloc)
            request.set_protocol_type(parts.scheme or "http")
        try:
            raw = client.do_action_with_exception(request)
        except (ServerException, ClientException) as exc:
            raise _sdk_error(exc, self.instance_id) from exc
        finally:
            client.session.close()
        self.fetches += 1
        try:
            body = json.loads(raw)
            if body.get("IsSuccess") is False:
                raise AuthError(f"ACR GetAuthorizationToken for {self.instance_id} failed: {body.get('Code')}",
                                code=str(body.get("Code")), request_id=body.get("RequestId"))
            token = AcrToken(Credentials(str(body["TempUsername"]), str(body["AuthorizationToken"])),
                             float(body["ExpireTime"]) / 1000.0)
        except (ValueError, KeyError, TypeError) as exc:
            raise PermanentError(f"ACR GetAuthorizationToken for {self.instance_id}: unexpected answer") from exc
        logger.info("ACR token obtained", extra={"instance": self.instance_id, "expires": token.expires,
                                                 "username": token.credentials.username})
        return token


def _sdk_error(exc: Exception, instance_id: str) -> BurstError:
    """The one place aliyun SDK exceptions of this module become ours (messages carry no secret)."""
    what = f"ACR GetAuthorizationToken for instance {instance_id}"
    if isinstance(exc, ServerException):
        code = str(exc.get_error_code() or "Unknown")
        status = exc.get_http_status() or 0
        request_id = exc.get_request_id()
        text = f"{what} failed: {code}"
        if code.startswith(("Throttling", "ServiceUnavailable", "InternalError")) or status >= 500:
            return TransientError(text, code=code, request_id=request_id)
        if code.startswith(_AUTH_CODES):
            return AuthError(f"{text}: check the AccessKey and its RAM permission cr:GetAuthorizationToken",
                             code=code, request_id=request_id)
        if status == 404 or "NOT_EXIST" in code.upper() or code.endswith("NotFound"):
            return NotFoundError(text, code=code, request_id=request_id)
        return PermanentError(text, code=code, request_id=request_id)
    if isinstance(exc, ClientException):
        code = str(exc.get_error_code() or "SDK.ClientError")
        if code == "SDK.HttpError":
            return TransientError(f"{what}: the API did not answer", code=code)
        if code == "SDK.InvalidCredential":
            return AuthError(f"{what}: invalid AccessKey", code=code)
        return PermanentError(f"{what}: {code}", code=code)
    return PermanentError(f"{what}: unexpected {type(exc).__name__}")  # pragma: no cover
