"""Registry authentication: credentials per registry host, the WWW-Authenticate challenge (Basic, or
Bearer with realm/service/scope as ACR and Docker Hub use), and a token cache per scope until expiry.
Used by ``adapters.registry.client.RegistryClient``; nothing here ever logs a secret."""

from __future__ import annotations

import base64
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from controller.errors import AuthError, TransientError
from controller.metrics import timed_call

__all__ = [
    "Authenticator",
    "Challenge",
    "CredentialSource",
    "Credentials",
    "StaticCredentials",
    "parse_challenge",
]

logger = logging.getLogger(__name__)

# A token is dropped this long before it expires, so a request never leaves with a dying token.
TOKEN_MARGIN = 10.0
DEFAULT_TOKEN_TTL = 60.0  # the distribution spec's default when expires_in is absent


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


class CredentialSource(Protocol):
    """Where credentials for a registry host come from (static, or ACR temporary tokens)."""

    def get(self, host: str) -> Credentials | None: ...

    def rejected(self, host: str) -> None:
        """The registry refused what ``get`` returned: drop anything cached for ``host``."""


class StaticCredentials:
    """Fixed credentials per registry host (``host[:port]``)."""

    def __init__(self, by_host: Mapping[str, Credentials] | None = None) -> None:
        self._by_host = dict(by_host or {})

    def add(self, host: str, creds: Credentials) -> None:
        self._by_host[host] = creds

    def get(self, host: str) -> Credentials | None:
        return self._by_host.get(host)

    def rejected(self, host: str) -> None:
        return None

    def __repr__(self) -> str:
        return f"StaticCredentials(hosts={sorted(self._by_host)})"


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "basic" | "bearer"
    params: dict[str, str]


_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenge(header: str) -> Challenge | None:
    """Parse ``Bearer realm="...",service="...",scope="..."`` or ``Basic realm="..."``."""
    scheme, _, rest = header.strip().partition(" ")
    if not scheme:
        return None
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3)) for m in _PARAM.finditer(rest)}
    return Challenge(scheme.lower(), params)


@dataclass
class _Token:
    value: str
    expires: float  # on the authenticator's clock


class Authenticator:
    """Remembers how each host wants to be spoken to and caches bearer tokens per (host, scope).

    Thread-safe: the replication workers share one. ``clock`` is injectable for the expiry tests.
    """

    def __init__(self, credentials: CredentialSource, http: httpx.Client,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._credentials = credentials
        self._http = http
        self._clock = clock
        self._challenges: dict[str, Challenge] = {}
        self._tokens: dict[tuple[str, str], _Token] = {}
        self._flights: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def header(self, host: str, scope: str) -> str | None:
        """The Authorization header for a request needing ``scope`` ("" for none), or None (anonymous)."""
        challenge = self._challenges.get(host)
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            creds = self._credentials.get(host)
            return creds.basic() if creds else None
        if challenge.scheme == "bearer":
            return "Bearer " + self._token(host, challenge, scope)
        return None

    def challenged(self, host: str, www_authenticate: str | None, scope: str, sent: str | None) -> bool:
        """Record a 401's challenge; drop the token it refused (``sent``, the Authorization header the
        request carried). True if the scheme is one we speak."""
        challenge = parse_challenge(www_authenticate or "")
        if challenge is None or challenge.scheme not in ("basic", "bearer"):
            return False
        with self._lock:
            self._challenges[host] = challenge
            cached = self._tokens.get((host, scope))
            if cached is not None and sent == "Bearer " + cached.value:
                del self._tokens[(host, scope)]
        return True

    def forget(self, host: str) -> None:
        with self._lock:
            for k in [k for k in self._tokens if k[0] == host]:
                del self._tokens[k]
        self._credentials.rejected(host)

    def username(self, host: str) -> str | None:
        creds = self._credentials.get(host)
        return creds.username if creds else None

    def _token(self, host: str, challenge: Challenge, scope: str) -> str:
        key = (host, scope)
        with self._lock:
            cached = self._tokens.get(key)
            if cached and cached.expires > self._clock():
                return cached.value
            flight = self._flights.setdefault(key, threading.Lock())
        with flight:  # one fetch per scope at a time: parallel workers share the token it brings
            with self._lock:
                cached = self._tokens.get(key)
                if cached and cached.expires > self._clock():
                    return cached.value
            now = self._clock()
            value, ttl = self._fetch_token(host, challenge, scope)
            with self._lock:
                self._tokens[key] = _Token(value, now + max(ttl - TOKEN_MARGIN, ttl / 2))
            return value

    def _fetch_token(self, host: str, challenge: Challenge, scope: str) -> tuple[str, float]:
        realm = challenge.params.get("realm")
        if not realm:
            raise AuthError(f"registry {host} asked for a bearer token but named no token realm")
        params: list[tuple[str, str | int | float | bool | None]] = []
        if "service" in challenge.params:
            params.append(("service", challenge.params["service"]))
        params.extend(("scope", s) for s in scope.split(" ") if s)
        creds = self._credentials.get(host)
        headers = {}
        if creds:
            params.append(("account", creds.username))
            headers["Authorization"] = creds.basic()
        with timed_call("registry", "GET token"):
            try:
                resp = self._http.get(realm, params=params, headers=headers)
            except httpx.TransportError as exc:
                raise TransientError(f"registry {host}: token service {httpx.URL(realm).host} unreachable: "
                                     f"{type(exc).__name__}") from exc
            if resp.status_code in (401, 403):
                who = f"user {creds.username!r}" if creds else "anonymous access (no credentials configured)"
                raise AuthError(f"registry {host}: token service refused {who}: check the registry credentials",
                                code=str(resp.status_code))
            if resp.status_code >= 500 or resp.status_code == 429:
                raise TransientError(f"registry {host}: token service answered HTTP {resp.status_code}")
            if resp.status_code != 200:
                raise AuthError(f"registry {host}: token service answered HTTP {resp.status_code}")
            try:
                body = resp.json()
                token = body.get("token") or body.get("access_token")
                ttl = float(body.get("expires_in") or DEFAULT_TOKEN_TTL)
            except (ValueError, AttributeError) as exc:
                raise AuthError(f"registry {host}: token service returned no JSON token") from exc
        if not token:
            raise AuthError(f"registry {host}: token service returned no token")
        logger.debug("registry token issued", extra={"registry": host, "scope": scope, "ttl": ttl})
        return str(token), ttl
