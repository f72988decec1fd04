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

from aliyunsdkcore.request import RpcRequest
from aliyunsdkslb.request.v20140515.AddBackendServersRequest import AddBackendServersRequest
from aliyunsdkslb.request.v20140515.DescribeLoadBalancerAttributeRequest import (
    DescribeLoadBalancerAttributeRequest,
)
from aliyunsdkslb.request.v20140515.RemoveBackendServersRequest import RemoveBackendServersRequest
from aliyunsdkslb.request.v20140515.SetBackendServersRequest import SetBackendServersRequest

from adapters.aliyun.client import AliyunClient, AliyunSettings, ErrorCodes
from adapters.aliyun.credentials import CredentialsProvider
from controller.errors import PermanentError
from controller.ports import Server
from controller.retry import Backoff

__all__ = ["BATCH", "SLB_CODES", "SlbLoadBalancer", "SlbSettings"]

logger = logging.getLogger(__name__)

BATCH = 20  # servers per Add/Set/RemoveBackendServers call (the API's limit)
_TRANSIENT = ("Throttling", "ServiceUnavailable", "InternalError", "SDK.HttpError", "SDK.UnknownServerError",
              "OperationFailed.ConfigLocked", "BackendServer.configuring", "Operation.Conflict",
              "SystemBusy", "UnknownError")
_AUTH = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidAccessKeySecret", "IncompleteSignature",
         "MissingAccessKeyId", "InvalidSecurityToken", "Forbidden", "NoPermission", "InvalidTimeStamp",
         "SDK.InvalidCredential")
SLB_CODES = ErrorCodes(transient=lambda code, status: code.startswith(_TRANSIENT),
                       auth=lambda code, status: code.startswith(_AUTH),
                       not_found=lambda code, status: code.endswith(("NotFound", "NotExist")))


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
        self._client = AliyunClient(AliyunSettings(
            system="slb", product="Slb", region=settings.region, credentials=settings.credentials,
            codes=SLB_CODES, endpoint=settings.endpoint, connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            backoff=Backoff(settings.max_attempts, settings.backoff_base, settings.backoff_cap,
                            sleep=settings.sleep, rng=settings.rng)))

    def close(self) -> None:
        self._client.close()

    def _call(self, request: RpcRequest) -> dict[str, Any]:
        return self._client.call(request)

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
