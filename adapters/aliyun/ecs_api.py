"""The ECS API for ``adapters/aliyun/ecs.py``: its settings (timeouts, retries) and how its error codes read; the
client itself (signing, retries, timing, error mapping) is ``adapters/aliyun/client.py``'s ``AliyunClient``."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from adapters.aliyun.client import AliyunClient, AliyunSettings, ErrorCodes
from adapters.aliyun.credentials import CredentialsProvider
from controller.retry import Backoff

__all__ = ["ECS_CODES", "EcsApi", "EcsApiSettings"]

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

ECS_CODES = ErrorCodes(
    transient=lambda code, status: code in _TRANSIENT_CODES
    or code.startswith(("Throttling", "ServiceUnavailable", "InternalError")),
    auth=lambda code, status: code in _AUTH_CODES
    or code.startswith(("InvalidAccessKeyId", "InvalidSecurityToken", "Forbidden")),
    capacity=lambda code, status: code in _CAPACITY_CODES or code.endswith(".NoStock"),
    quota=lambda code, status: code.startswith("QuotaExceed") or code.endswith(".QuotaExceed")
    or "Quota" in code.split(".")[0],
    not_found=lambda code, status: code.endswith(".NotFound"),
)


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


class EcsApi(AliyunClient):
    """``call(request)`` with retries; ``request`` is an aliyunsdkecs request object."""

    def __init__(self, settings: EcsApiSettings) -> None:
        super().__init__(AliyunSettings(
            system="ecs", product="Ecs", region=settings.region, credentials=settings.credentials,
            codes=ECS_CODES, endpoint=settings.endpoint, connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout, pool_size=settings.pool_size,
            backoff=Backoff(settings.max_attempts, settings.backoff_base, settings.backoff_cap,
                            sleep=settings.sleep, rng=settings.rng)))
