"""Alibaba Cloud Container Registry credentials: a temporary login from the Enterprise Edition API
GetAuthorizationToken (aliyun-python-sdk-cr, 2018-12-01, by InstanceId), cached and refreshed before
it expires. A ``CredentialSource`` for ``adapters.registry.client``; built by the wiring module and the CLI.
The call goes through ``adapters/aliyun/client.py`` (signing, timing, error mapping after ``ACR_CODES``); no
secret is ever logged."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aliyunsdkcr.request.v20181201.GetAuthorizationTokenRequest import GetAuthorizationTokenRequest

from adapters.aliyun.client import AliyunClient, AliyunSettings, ErrorCodes
from adapters.aliyun.credentials import CredentialsProvider
from adapters.aliyun.credentials import from_env as keys_from_env
from adapters.registry.auth import Credentials, CredentialSource
from controller.errors import AuthError, ConfigError, PermanentError
from controller.retry import Backoff

__all__ = ["ACR_CODES", "AcrToken", "AcrTokenCredentials"]

logger = logging.getLogger(__name__)

REFRESH_MARGIN = 300.0  # seconds before ExpireTime a token is replaced (a layer push can take minutes)
_AUTH_CODES = ("InvalidAccessKeyId", "InvalidAccessKeySecret", "SignatureDoesNotMatch", "InvalidSecurityToken", "Forbidden",
               "NoPermission", "IncompleteSignature", "MissingAccessKeyId", "SDK.InvalidCredential")
ACR_CODES = ErrorCodes(
    transient=lambda code, status: code.startswith(("Throttling", "ServiceUnavailable", "InternalError")),
    auth=lambda code, status: code.startswith(_AUTH_CODES),
    not_found=lambda code, status: "NOT_EXIST" in code.upper() or code.endswith("NotFound"),
    auth_hint=" (check the AccessKey and its RAM permission cr:GetAuthorizationToken)")


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
        # one attempt: the registry request that wants the token retries, and asks again
        self._client = AliyunClient(AliyunSettings(
            system="acr", product="cr", region=region, credentials=keys, codes=ACR_CODES, endpoint=endpoint,
            connect_timeout=5.0, read_timeout=timeout, pool_size=2, backoff=Backoff(1, 0.0, 0.0)))
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
        request = GetAuthorizationTokenRequest()
        request.set_InstanceId(self.instance_id)
        body = self._client.call(request, f"ACR GetAuthorizationToken for instance {self.instance_id}")
        self.fetches += 1
        try:
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
