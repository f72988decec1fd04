"""Alibaba Cloud's V3 request signature (``ACS3-HMAC-SHA256``), server side: what the official generated SDKs
(alibabacloud-ecs20140526 on alibabacloud-tea-openapi) send by default. ``rpc.RpcServer`` verifies it beside
the RPC HMAC-SHA1 signature of aliyun-python-sdk-core.

The request carries the action and version as headers (``x-acs-action``, ``x-acs-version``), with
``x-acs-date``, ``x-acs-signature-nonce``, ``x-acs-content-sha256`` (hex SHA-256 of the body), ``host`` and
``Authorization: ACS3-HMAC-SHA256 Credential=ID,SignedHeaders=a;b;c,Signature=HEX``. The canonical request is
exactly what ``alibabacloud_tea_openapi.utils.Utils.get_authorization`` builds::

    METHOD \\n PATH \\n CANONICAL_QUERY \\n CANONICAL_HEADERS \\n SIGNED_HEADERS \\n HEX_SHA256(BODY)

CANONICAL_QUERY: the query parameters sorted by name, ``name=pct(value)`` joined with ``&`` (values
percent-encoded as RFC 3986, only ``A-Za-z0-9-_.~`` kept; the SDK leaves names as they are).
CANONICAL_HEADERS: for each signed header, sorted, ``name:value\\n`` (lower-case name, values trimmed; several
values of one header sorted and joined with ``,``). StringToSign: ``ACS3-HMAC-SHA256\\n`` + hex SHA-256 of the
canonical request. Signature: hex HMAC-SHA256 of it, keyed by the access key secret (no ``&``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

__all__ = ["ALGORITHM", "Authorization", "SignatureRefused", "V3Request", "canonical_request",
           "parse_authorization", "sign", "string_to_sign", "verify"]

ALGORITHM = "ACS3-HMAC-SHA256"
# headers that must be covered by the signature whenever they are sent (all x-acs-* ones as well)
_MUST_SIGN = ("host", "content-type")


class SignatureRefused(Exception):
    """A refusal in the API's terms: ``rpc.RpcServer`` answers it as ``ApiError(code, message)`` (400)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Authorization:
    algorithm: str
    access_key_id: str
    signed_headers: tuple[str, ...]
    signature: str


@dataclass(frozen=True)
class V3Request:
    """What the server received: ``headers`` by lower-case name, every value of each."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, Sequence[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name)
        return values[0].strip() if values else None


def parse_authorization(value: str) -> Authorization:
    """``ACS3-HMAC-SHA256 Credential=ID,SignedHeaders=a;b,Signature=HEX``; IncompleteSignature if malformed."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise SignatureRefused("InvalidSignatureMethod", f"Specified signature method {algorithm!r} is not supported "
                       f"(the emulator verifies {ALGORITHM} and the RPC HMAC-SHA1 signature).")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, item = part.strip().partition("=")
        if sep:
            fields[name] = item
    missing = [n for n in ("Credential", "SignedHeaders", "Signature") if not fields.get(n)]
    if missing:
        raise SignatureRefused("IncompleteSignature", "The request signature does not conform to Aliyun standards: "
                       f"the Authorization header has no {missing[0]}.")
    signed = tuple(fields["SignedHeaders"].split(";"))
    return Authorization(algorithm, fields["Credential"], signed, fields["Signature"])


def _pct(value: str) -> str:
    return quote(value, safe="~")


def canonical_query(query: Mapping[str, str]) -> str:
    return "&".join(f"{key}={_pct(query[key])}" for key in sorted(query))


def canonical_request(req: V3Request, signed_headers: Sequence[str], payload_hash: str) -> str:
    headers = "".join(
        f"{name}:{','.join(sorted(v.strip() for v in req.headers.get(name, ())))}\n" for name in signed_headers
    )
    return (f"{req.method.upper()}\n{req.path or '/'}\n{canonical_query(req.query)}\n{headers}\n"
            f"{';'.join(signed_headers)}\n{payload_hash}")


def string_to_sign(canonical: str) -> str:
    return f"{ALGORITHM}\n{hashlib.sha256(canonical.encode()).hexdigest()}"


def sign(secret: str, text: str) -> str:
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def check_signed_headers(req: V3Request, auth: Authorization) -> tuple[str, ...]:
    """The signed header names, in canonical (sorted, lower-case) order; IncompleteSignature when a header
    that must be signed is sent unsigned or a signed one is absent."""
    names = tuple(sorted({n.strip().lower() for n in auth.signed_headers if n.strip()}))
    for name in req.headers:
        if (name.startswith("x-acs-") or name in _MUST_SIGN) and name not in names:
            raise SignatureRefused("IncompleteSignature", "The request signature does not conform to Aliyun standards: "
                           f"header {name!r} is sent but not in SignedHeaders.")
    for name in names:
        if name not in req.headers:
            raise SignatureRefused("IncompleteSignature", "The request signature does not conform to Aliyun standards: "
                           f"SignedHeaders names {name!r}, which the request does not carry.")
    return names


def verify(req: V3Request, auth: Authorization, secret: str) -> None:
    """SignatureDoesNotMatch (400, with the server's string-to-sign after a colon) unless ``auth`` signs
    ``req`` with ``secret``."""
    names = check_signed_headers(req, auth)
    payload_hash = hashlib.sha256(req.body).hexdigest()
    sent_hash = req.header("x-acs-content-sha256")
    if sent_hash is not None and sent_hash.lower() != payload_hash:
        raise SignatureRefused("SignatureDoesNotMatch", "x-acs-content-sha256 is not the SHA-256 of the body. "
                       f"server body hash is:{payload_hash}")
    text = string_to_sign(canonical_request(req, names, payload_hash))
    if not hmac.compare_digest(sign(secret, text), auth.signature.lower()):
        raise SignatureRefused("SignatureDoesNotMatch", "Specified signature is not matched with our calculation. "
                       f"server string to sign is:{text}")
