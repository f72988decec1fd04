"""Container Registry (Enterprise Edition, 2018-12-01) actions for the local Alibaba RPC emulator: just
GetAuthorizationToken, answering the real shape (TempUsername, AuthorizationToken, ExpireTime in ms) from
logins the caller provides, so tests can drive the real aliyun-python-sdk-cr against it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from lab.emulator.rpc import RpcServer
from lab.emulator.rpc_wire import ApiError, RpcRequest

__all__ = ["CR_VERSION", "install_cr"]

CR_VERSION = "2018-12-01"


def install_cr(server: RpcServer, logins: Mapping[str, Callable[[], tuple[str, str]]], ttl_s: float = 3600.0,
               clock: Callable[[], float] | None = None) -> None:
    """Serve GetAuthorizationToken: ``logins[instance_id]()`` gives the (username, password) the registry
    accepts; the token expires ``ttl_s`` after issue on ``clock`` (the server's by default)."""
    now = clock or server.clock

    def get_authorization_token(req: RpcRequest) -> dict[str, Any]:
        instance = req.require("InstanceId")
        login = logins.get(instance)
        if login is None:
            raise ApiError("INSTANCE_NOT_EXIST", f"The instance {instance} does not exist.", 404)
        user, password = login()
        return {"IsSuccess": True, "Code": "success", "TempUsername": user, "AuthorizationToken": password,
                "ExpireTime": int((now() + ttl_s) * 1000)}

    server.register("cr", CR_VERSION, "GetAuthorizationToken", get_authorization_token)
