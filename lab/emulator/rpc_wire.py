"""The Alibaba Cloud RPC wire as the local emulators read it: the error an action answers (``ApiError``), the
access keys it accepts, the RPC signature (HMAC-SHA1 over the sorted, percent-encoded parameters, as
aliyun-python-sdk-core computes it) and ``RpcRequest``, one request's parameters with typed, validated
getters that answer the real API's error codes. The server is lab/emulator/rpc.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

__all__ = ["AccessKey", "ApiError", "RpcRequest", "new_request_id", "sign", "string_to_sign"]

_SIGNING_PARAMS = ("Signature",)  # the parameters left out of the string to sign


class ApiError(Exception):
    """An error answer: ``{"RequestId","HostId","Code","Message","Recommend"}`` with ``status``."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class AccessKey:
    """A key pair the server accepts; with ``security_token`` the request must carry that STS token."""

    id: str
    secret: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False)


def new_request_id() -> str:
    return str(uuid.uuid4()).upper()


def _pct(value: str) -> str:
    # RFC 3986: only A-Za-z0-9-_.~ stay; space -> %20, '*' -> %2A, '/' -> %2F (what the SDK produces)
    return quote(value, safe="~")


def string_to_sign(method: str, params: Mapping[str, str]) -> str:
    """The StringToSign of an RPC request: ``METHOD&%2F&`` + pct(sorted canonical query)."""
    canonical = "&".join(
        f"{_pct(k)}={_pct(v)}" for k, v in sorted(params.items()) if k not in _SIGNING_PARAMS
    )
    return f"{method.upper()}&%2F&{_pct(canonical)}"


def sign(secret: str, text: str) -> str:
    digest = hmac.new((secret + "&").encode(), text.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


@dataclass
class RpcRequest:
    """One parsed API call, with typed accessors that answer the real API's parameter errors."""

    action: str
    version: str
    region: str
    params: dict[str, str]
    request_id: str
    access_key_id: str
    host: str
    response_delay: float = 0.0  # set by a handler: delay the answer (simulate a timeout after acting)

    def get(self, name: str, default: str | None = None) -> str | None:
        value = self.params.get(name)
        return default if value is None or value == "" else value

    def require(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise ApiError("MissingParameter",
                           f'The input parameter "{name}" that is mandatory for processing this request '
                           "is not supplied.")
        return value

    def get_int(self, name: str, default: int | None = None, lo: int | None = None,
                hi: int | None = None) -> int:
        raw = self.get(name)
        if raw is None:
            if default is None:
                self.require(name)
            assert default is not None
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ApiError(f"InvalidParameter.{name}", f'The specified parameter "{name}" is not valid: '
                           f"{raw!r} is not an integer.") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ApiError(f"InvalidParameter.{name}", f'The specified parameter "{name}" is out of range: '
                           f"{value} not within {lo}..{hi}.")
        return value

    def get_bool(self, name: str, default: bool = False) -> bool:
        raw = self.get(name)
        if raw is None:
            return default
        if raw.lower() in ("true", "1"):
            return True
        if raw.lower() in ("false", "0"):
            return False
        raise ApiError(f"InvalidParameter.{name}", f'The specified parameter "{name}" must be true or false.')

    def repeat(self, prefix: str, limit: int) -> list[str]:
        """Values of ``prefix.1 .. prefix.N`` in N order (the SDK's RepeatList flattening)."""
        found: dict[int, str] = {}
        for key, value in self.params.items():
            head, _, index = key.rpartition(".")
            if head == prefix and index.isdigit():
                found[int(index)] = value
        if len(found) > limit:
            raise ApiError(f"InvalidParameter.{prefix}", f'The parameter "{prefix}.N" accepts at most {limit} '
                           f"values, got {len(found)}.")
        return [found[i] for i in sorted(found)]

    def json_list(self, name: str, limit: int) -> list[str] | None:
        raw = self.get(name)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ApiError(f"InvalidParameter.{name}", f'The parameter "{name}" must be a JSON array of '
                           "strings.")
        if len(value) > limit:
            raise ApiError(f"InvalidParameter.{name}", f'The parameter "{name}" accepts at most {limit} values.')
        return value

    def tags(self, prefix: str = "Tag", limit: int = 20) -> list[tuple[str, str | None]]:
        """``Tag.N.Key`` / ``Tag.N.Value`` pairs in N order; a missing value is None."""
        keys: dict[int, str] = {}
        values: dict[int, str] = {}
        for key, value in self.params.items():
            parts = key.split(".")
            if len(parts) == 3 and parts[0] == prefix and parts[1].isdigit():
                if parts[2] == "Key":
                    keys[int(parts[1])] = value
                elif parts[2] == "Value":
                    values[int(parts[1])] = value
        if len(keys) > limit:
            raise ApiError("InvalidTagCount", f"At most {limit} tags are allowed, got {len(keys)}.")
        out: list[tuple[str, str | None]] = []
        for n in sorted(keys):
            k = keys[n]
            if not k or k.startswith(("aliyun", "acs:")) or len(k) > 128:
                raise ApiError("InvalidTagKey.Malformed", f"The tag key {k!r} is not valid.")
            out.append((k, values.get(n)))
        return out
