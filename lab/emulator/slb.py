"""Server Load Balancer (CLB/SLB, Version 2014-05-15) actions for the local Alibaba RPC emulator: load
balancers with their default server group, so the real aliyun-python-sdk-slb can be driven against it.
Used by the SLB adapter's tests and by the emulator command; registered on the same ``RpcServer`` as ECS.

Actions: CreateLoadBalancer, DeleteLoadBalancer, DescribeLoadBalancerAttribute, AddBackendServers,
SetBackendServers, RemoveBackendServers, DescribeHealthStatus. ``BackendServers`` is a JSON array string
of at most 20 entries, as the real API takes it.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lab.emulator.rpc import RpcServer
from lab.emulator.rpc_wire import ApiError, RpcRequest

__all__ = ["SLB_VERSION", "SlbState", "install_slb"]

SLB_VERSION = "2014-05-15"
_MAX_SERVERS_PER_CALL = 20
_TYPES = ("ecs", "eni", "eci")


@dataclass
class _Backend:
    server_id: str
    weight: int
    type: str = "ecs"
    description: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"ServerId": self.server_id, "Weight": self.weight, "Type": self.type,
                "Description": self.description}


@dataclass
class _LoadBalancer:
    id: str
    name: str
    region: str
    address: str
    backends: dict[str, _Backend] = field(default_factory=dict)  # by ServerId, in insertion order


class SlbState:
    """The load balancers. ``instance_exists`` (e.g. the ECS emulator's state) lets AddBackendServers
    refuse servers that are not instances, as the real API does; without it any id is accepted."""

    def __init__(self, instance_exists: Callable[[str], bool] | None = None) -> None:
        self.lock = threading.Lock()
        self.load_balancers: dict[str, _LoadBalancer] = {}
        self.instance_exists = instance_exists
        self._next_address = 1

    def create(self, region: str, name: str = "") -> str:
        with self.lock:
            lb_id = "lb-" + uuid.uuid4().hex[:20]
            address = f"127.0.2.{self._next_address % 250 + 1}"
            self._next_address += 1
            self.load_balancers[lb_id] = _LoadBalancer(lb_id, name or lb_id, region, address)
            return lb_id

    def get(self, lb_id: str) -> _LoadBalancer:
        lb = self.load_balancers.get(lb_id)
        if lb is None:
            raise ApiError("InvalidLoadBalancerId.NotFound", f"The specified LoadBalancerId {lb_id} does not exist.")
        return lb

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"load_balancers": [
                {"LoadBalancerId": lb.id, "Name": lb.name, "RegionId": lb.region, "Address": lb.address,
                 "BackendServers": [b.as_json() for b in lb.backends.values()]}
                for lb in self.load_balancers.values()]}


def _servers(req: RpcRequest, need_weight: bool) -> list[_Backend]:
    raw = req.require("BackendServers")
    try:
        items = json.loads(raw)
    except ValueError:
        items = None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ApiError("InvalidParameter", 'The parameter "BackendServers" must be a JSON array of objects.')
    if not items:
        raise ApiError("InvalidParameter", 'The parameter "BackendServers" must not be empty.')
    if len(items) > _MAX_SERVERS_PER_CALL:
        raise ApiError("InvalidParameter", f'The parameter "BackendServers" accepts at most '
                       f"{_MAX_SERVERS_PER_CALL} servers, got {len(items)}.")
    out = []
    for item in items:
        server_id = str(item.get("ServerId") or "")
        if not server_id:
            raise ApiError("InvalidParameter", "ServerId is mandatory for each backend server.")
        kind = str(item.get("Type") or "ecs")
        if kind not in _TYPES:
            raise ApiError("InvalidParameter", f"Type {kind!r} is not valid.")
        weight_raw = item.get("Weight", 100 if not need_weight else None)
        if weight_raw is None:
            weight = -1  # SetBackendServers without a weight keeps the current one
        else:
            try:
                weight = int(weight_raw)
            except (TypeError, ValueError):
                raise ApiError("InvalidParameter.Weight", f"Weight {weight_raw!r} is not an integer.") from None
            if not 0 <= weight <= 100:
                raise ApiError("InvalidParameter.Weight", f"Weight {weight} is not within 0..100.")
        out.append(_Backend(server_id, weight, kind, str(item.get("Description") or "")))
    return out


def _answer(lb: _LoadBalancer) -> dict[str, Any]:
    return {"LoadBalancerId": lb.id, "BackendServers": {"BackendServer": [b.as_json() for b in lb.backends.values()]}}


class _Handlers:
    def __init__(self, state: SlbState) -> None:
        self.state = state

    def create_load_balancer(self, req: RpcRequest) -> dict[str, Any]:
        lb_id = self.state.create(req.region or "cn-hangzhou", req.get("LoadBalancerName") or "")
        lb = self.state.load_balancers[lb_id]
        return {"LoadBalancerId": lb_id, "LoadBalancerName": lb.name, "Address": lb.address,
                "AddressIPVersion": "ipv4", "NetworkType": "vpc"}

    def delete_load_balancer(self, req: RpcRequest) -> dict[str, Any]:
        with self.state.lock:
            self.state.get(req.require("LoadBalancerId"))
            del self.state.load_balancers[req.require("LoadBalancerId")]
        return {}

    def describe_attribute(self, req: RpcRequest) -> dict[str, Any]:
        with self.state.lock:
            lb = self.state.get(req.require("LoadBalancerId"))
            return {**_answer(lb), "LoadBalancerName": lb.name, "LoadBalancerStatus": "active", "RegionId": lb.region,
                    "Address": lb.address, "AddressType": "intranet", "NetworkType": "vpc",
                    "ListenerPorts": {"ListenerPort": []}}

    def add_backend_servers(self, req: RpcRequest) -> dict[str, Any]:
        servers = _servers(req, need_weight=False)
        with self.state.lock:
            lb = self.state.get(req.require("LoadBalancerId"))
            for s in servers:
                if self.state.instance_exists is not None and not self.state.instance_exists(s.server_id):
                    raise ApiError("InvalidBackendServers.ServerIdNotExist",
                                   f"The specified ServerId {s.server_id} does not exist.")
            for s in servers:
                # the server already in the group keeps its entry (the call is a no-op for it)
                lb.backends.setdefault(s.server_id, s)
            return _answer(lb)

    def set_backend_servers(self, req: RpcRequest) -> dict[str, Any]:
        servers = _servers(req, need_weight=True)
        with self.state.lock:
            lb = self.state.get(req.require("LoadBalancerId"))
            missing = [s.server_id for s in servers if s.server_id not in lb.backends]
            if missing:
                raise ApiError("BackendServer.NotExist", f"The backend servers {', '.join(missing)} are not in "
                               "the load balancer.")
            for s in servers:
                current = lb.backends[s.server_id]
                if s.weight >= 0:
                    current.weight = s.weight
                if s.description:
                    current.description = s.description
            return _answer(lb)

    def remove_backend_servers(self, req: RpcRequest) -> dict[str, Any]:
        servers = _servers(req, need_weight=False)
        with self.state.lock:
            lb = self.state.get(req.require("LoadBalancerId"))
            missing = [s.server_id for s in servers if s.server_id not in lb.backends]
            if missing:
                raise ApiError("BackendServer.NotExist", f"The backend servers {', '.join(missing)} are not in "
                               "the load balancer.")
            for s in servers:
                del lb.backends[s.server_id]
            return _answer(lb)

    def describe_health_status(self, req: RpcRequest) -> dict[str, Any]:
        # no listener health checks are emulated: a server's status says only whether it takes traffic
        with self.state.lock:
            lb = self.state.get(req.require("LoadBalancerId"))
            return {"BackendServers": {"BackendServer": [
                {"ServerId": b.server_id, "ServerHealthStatus": "normal" if b.weight > 0 else "unavailable",
                 "ListenerPort": 0, "Protocol": "tcp", "ServerIp": ""} for b in lb.backends.values()]}}


def install_slb(server: RpcServer, state: SlbState) -> None:
    """Register the SLB actions, its state and an admin endpoint creating load balancers on ``server``."""
    h = _Handlers(state)
    for action, fn in {
        "CreateLoadBalancer": h.create_load_balancer,
        "DeleteLoadBalancer": h.delete_load_balancer,
        "DescribeLoadBalancerAttribute": h.describe_attribute,
        "AddBackendServers": h.add_backend_servers,
        "SetBackendServers": h.set_backend_servers,
        "RemoveBackendServers": h.remove_backend_servers,
        "DescribeHealthStatus": h.describe_health_status,
    }.items():
        server.register("Slb", SLB_VERSION, action, fn)
    server.register_state("slb", state.snapshot)
    server.register_admin("POST", "/_admin/slb/load-balancers",
                          lambda body: {"LoadBalancerId": state.create(str((body or {}).get("region", "cn-hangzhou")),
                                                                       str((body or {}).get("name", "")))})
