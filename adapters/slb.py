"""Alibaba Cloud SLB/CLB as the ``LoadBalancer`` port (``SlbLoadBalancer``), on aliyun-python-sdk-slb
(2014-05-15): AddBackendServers, SetBackendServers (weight 0 drains), RemoveBackendServers,
DescribeLoadBalancerAttribute; at most 20 servers a call. Called by the controller's admit/drain steps
when a policy's traffic goes through an SLB instead of HAProxy.

SLB addresses a backend by ECS instance id (``Server.instance_id``) in the load balancer's default server
group; the port is the listener's backend port, so it must equal the workload's service port, and one
replica per node is what SLB can address. The server name travels in the backend's Description.

SLB exposes no per-server session count: a drained server (weight 0) reports 1 session until
``drain_period`` seconds have passed since the drain, then 0; with no period it reports 1 until the
controller's drain timeout ends the wait. Documented in docs/replicas.md.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aliyunsdkcore.acs_exception.exceptions import ClientException, ServerException
from aliyunsdkcore.auth.signers.signer import Signer
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.request import RpcRequest
from aliyunsdkslb.request.v20140515.AddBackendServersRequest import AddBackendServersRequest
from aliyunsdkslb.request.v20140515.DescribeLoadBalancerAttributeRequest import (
    DescribeLoadBalancerAttributeRequest,
)
from aliyunsdkslb.request.v20140515.RemoveBackendServersRequest import RemoveBackendServersRequest
from aliyunsdkslb.request.v20140515.SetBackendServersRequest import SetBackendServersRequest

from adapters.credentials import CredentialsProvider
from controller.errors import AuthError, BurstError, NotFoundError, PermanentError, TransientError
from controller.ports import Server

__all__ = ["BATCH", "SlbLoadBalancer", "SlbSettings", "map_slb_error"]

logger = logging.getLogger(__name__)

BATCH = 20  # servers per Add/Set/RemoveBackendServers call (the API's limit)
_TRANSIENT = ("Throttling", "ServiceUnavailable", "InternalError", "SDK.HttpError", "SDK.UnknownServerError",
              "OperationFailed.ConfigLocked", "BackendServer.configuring", "Operation.Conflict",
              "SystemBusy", "UnknownError")
_AUTH = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidAccessKeySecret", "IncompleteSignature",
         "MissingAccessKeyId", "InvalidSecurityToken", "Forbidden", "NoPermission", "InvalidTimeStamp",
         "SDK.InvalidCredential")


def map_slb_error(exc: Exception, action: str) -> BurstError:
    """The one place SDK exceptions of SLB calls become ours."""
    if isinstance(exc, ServerException):
        code = str(exc.get_error_code() or "Unknown")
        status = exc.get_http_status()
        text = f"SLB {action} failed: {code}: {str(exc.get_error_msg() or '')[:300]}"
        rid = exc.get_request_id()
        if code.startswith(_TRANSIENT) or (status is not None and status >= 500):
            return TransientError(text, code=code, request_id=rid)
        if code.startswith(_AUTH):
            return AuthError(text, code=code, request_id=rid)
        if code.endswith(("NotFound", "NotExist")) or status == 404:
            return NotFoundError(text, code=code, request_id=rid)
        return PermanentError(text, code=code, request_id=rid)
    if isinstance(exc, ClientException):
        code = str(exc.get_error_code() or "SDK.ClientError")
        text = f"SLB {action}: {code}: {str(exc.get_error_msg() or '')[:300]}"
        if code == "SDK.HttpError":  # refused, reset, timed out
            return TransientError(text, code=code)
        if code == "SDK.InvalidCredential":
            return AuthError(text, code=code)
        return PermanentError(text, code=code)
    return PermanentError(f"SLB {action}: unexpected {type(exc).__name__}: {str(exc)[:300]}")


class _ProviderSigner(Signer):
    """Signs each request with the provider's current keys, so rotated STS keys are picked up."""

    def __init__(self, provider: CredentialsProvider) -> None:
        self._provider = provider

    def sign(self, region_id: str, request: Any) -> tuple[Any, str]:
        creds = self._provider.get()
        if creds.security_token:
            request.add_query_param("SecurityToken", creds.security_token)
        return (request.get_signed_header(region_id, creds.access_key_id, creds.access_key_secret),
                request.get_url(region_id, creds.access_key_id, creds.access_key_secret))


@dataclass
class SlbSettings:
    region: str
    credentials: CredentialsProvider
    endpoint: str | None = None  # "http://127.0.0.1:PORT" or "host:port"; None = the real regional API
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    max_attempts: int = 5
    backoff_base: float = 0.5
    backoff_cap: float = 10.0
    drain_period: float | None = None  # see the module docstring
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)


class SlbLoadBalancer:
    """``LoadBalancer`` where ``backend`` is the SLB instance id (``traffic.slb.load_balancer_id``)."""

    def __init__(self, settings: SlbSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._drained_at: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._client = AcsClient("-", "-", settings.region, auto_retry=False,
                                 connect_timeout=settings.connect_timeout, timeout=settings.read_timeout,
                                 proxy={"http": None, "https": None})
        self._client._signer = _ProviderSigner(settings.credentials)  # keys only in the provider
        self._https = False
        if settings.endpoint:
            parts = urlsplit(settings.endpoint if "://" in settings.endpoint else f"http://{settings.endpoint}")
            self._https = parts.scheme == "https"
            self._client.add_endpoint(settings.region, "Slb", parts.netloc)

    def close(self) -> None:
        return None

    # ------------------------------------------------------------------ API door

    def _call(self, request: RpcRequest) -> dict[str, Any]:
        action = request.get_action_name()
        if self._https:
            request.set_protocol_type("https")
        for attempt in range(1, self.settings.max_attempts + 1):
            try:
                body = self._client.do_action_with_exception(request)
                answer: dict[str, Any] = json.loads(body)
                return answer
            except (ServerException, ClientException) as exc:
                error = map_slb_error(exc, action)
                if not isinstance(error, TransientError) or attempt == self.settings.max_attempts:
                    raise error from exc
                delay = min(self.settings.backoff_cap, self.settings.backoff_base * 2 ** (attempt - 1))
                delay *= 0.5 + self.settings.rng.random() / 2
                logger.info("SLB %s transient failure (%s), retry %d in %.2fs", action, error.code, attempt, delay)
                self.settings.sleep(delay)
        raise AssertionError("unreachable")

    def _backends(self, lb_id: str) -> list[dict[str, Any]]:
        req = DescribeLoadBalancerAttributeRequest()
        req.set_LoadBalancerId(lb_id)
        answer = self._call(req)
        return list((answer.get("BackendServers") or {}).get("BackendServer") or [])

    def _batched(self, request_type: type[RpcRequest], lb_id: str, entries: Sequence[dict[str, Any]]) -> None:
        for start in range(0, len(entries), BATCH):
            req = request_type()
            req.set_LoadBalancerId(lb_id)
            req.set_BackendServers(json.dumps(list(entries[start:start + BATCH])))
            self._call(req)

    def _find(self, lb_id: str, name: str) -> dict[str, Any] | None:
        return next((b for b in self._backends(lb_id) if b.get("Description") == name or b.get("ServerId") == name),
                    None)

    # ------------------------------------------------------------------ LoadBalancer

    def add(self, backend: str, server: Server) -> None:
        self.add_many(backend, [server])

    def add_many(self, backend: str, servers: Iterable[Server]) -> list[str]:
        """Add what is missing, 20 a call; returns the names added. Also the re-apply after a restart."""
        present = {b.get("ServerId"): b for b in self._backends(backend)}
        entries, added = [], []
        for s in servers:
            if not s.instance_id:
                raise PermanentError(f"SLB needs the ECS instance id of server {s.name}")
            existing = present.get(s.instance_id)
            if existing is not None:
                if existing.get("Description") not in ("", None, s.name):
                    raise PermanentError(f"SLB {backend}: instance {s.instance_id} already serves "
                                         f"{existing.get('Description')}; SLB takes one replica per node")
                continue
            weight = 100 if s.weight is None else s.weight  # SLB's own default: no on-prem server to match
            entries.append({"ServerId": s.instance_id, "Weight": str(weight), "Type": "ecs", "Description": s.name})
            added.append(s.name)
        self._batched(AddBackendServersRequest, backend, entries)
        if added:
            logger.info("SLB servers added", extra={"load_balancer": backend, "servers": added})
        return added

    def reapply(self, backend: str, servers: Iterable[Server]) -> list[str]:
        return self.add_many(backend, servers)

    def drain(self, backend: str, name: str) -> None:
        entry = self._find(backend, name)
        if entry is None:
            logger.info("drain of absent SLB server %s/%s: nothing to do", backend, name)
            return
        if int(entry.get("Weight", 0)) != 0:
            self._batched(SetBackendServersRequest, backend,
                          [{"ServerId": entry["ServerId"], "Weight": "0", "Type": entry.get("Type", "ecs")}])
        with self._lock:
            self._drained_at.setdefault((backend, name), self._clock())

    def sessions(self, backend: str, name: str) -> int:
        entry = self._find(backend, name)
        if entry is None:
            return 0
        with self._lock:
            drained_at = self._drained_at.get((backend, name))
        if int(entry.get("Weight", 0)) != 0 or drained_at is None:
            return 1  # unknown: assume busy (never cut what we cannot see)
        period = self.settings.drain_period
        return 0 if period is not None and self._clock() - drained_at >= period else 1

    def remove(self, backend: str, name: str) -> None:
        self.remove_many(backend, [name])

    def remove_many(self, backend: str, names: Iterable[str]) -> list[str]:
        wanted = set(names)
        entries = [{"ServerId": b["ServerId"], "Type": b.get("Type", "ecs")} for b in self._backends(backend)
                   if b.get("Description") in wanted or b.get("ServerId") in wanted]
        self._batched(RemoveBackendServersRequest, backend, entries)
        with self._lock:
            for n in wanted:
                self._drained_at.pop((backend, n), None)
        return [str(e["ServerId"]) for e in entries]

    def list(self, backend: str) -> list[Server]:
        out = []
        for b in self._backends(backend):
            weight = int(b.get("Weight", 0))
            out.append(Server(name=str(b.get("Description") or b["ServerId"]), address=str(b.get("ServerIp") or ""),
                              port=0, state="ready" if weight > 0 else "drain", weight=weight,
                              instance_id=str(b["ServerId"])))
        return out
