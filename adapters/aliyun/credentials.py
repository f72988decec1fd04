"""Alibaba Cloud credentials for the ECS adapter: the standard environment variables, a 0600 credentials
file, or the instance's RAM role through the metadata service (short-lived STS keys, refreshed before
they expire). The secret never appears in a repr, a log line or an error. Built by the wiring module from
``cloud.credentials`` and handed to ``adapters.aliyun.ecs.EcsComputePool``."""

from __future__ import annotations

import calendar
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx

from controller.errors import AuthError, ConfigError, TransientError

__all__ = [
    "ENV_KEY_ID",
    "ENV_KEY_SECRET",
    "ENV_TOKEN",
    "METADATA_URL",
    "CloudCredentials",
    "CredentialsProvider",
    "RamRoleCredentials",
    "StaticCredentials",
    "from_env",
    "from_file",
    "resolve_credentials",
]

logger = logging.getLogger(__name__)

ENV_KEY_ID = "ALIBABA_CLOUD_ACCESS_KEY_ID"
ENV_KEY_SECRET = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"
ENV_TOKEN = "ALIBABA_CLOUD_SECURITY_TOKEN"
METADATA_URL = "http://100.100.100.200"
_ROLE_PATH = "/latest/meta-data/ram/security-credentials/"
_REFRESH_MARGIN_S = 300.0  # refresh STS keys this long before they expire


def _register_secret(value: str | None) -> None:
    # the service's log redaction, when it is loaded (it masks the value in every later log line)
    try:
        from controller.service import register_secret
    except ImportError:  # pragma: no cover - the service module is part of the package
        return
    register_secret(value)


@dataclass(frozen=True)
class CloudCredentials:
    """One set of keys. ``repr``/``str`` show the key id and source, never the secret or the token."""

    access_key_id: str
    access_key_secret: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False)
    expiration: float | None = None  # epoch seconds, for STS keys
    source: str = "static"

    def __repr__(self) -> str:
        token = ", security_token=<redacted>" if self.security_token else ""
        return (f"CloudCredentials(access_key_id={self.access_key_id!r}, access_key_secret=<redacted>{token}, "
                f"source={self.source!r})")

    __str__ = __repr__


class CredentialsProvider(Protocol):
    def get(self) -> CloudCredentials:
        """Current credentials (refreshed if they are about to expire)."""

    def describe(self) -> str:
        """Where the credentials come from, for status and logs (no secret)."""


class StaticCredentials:
    """Credentials that do not change (environment variables or a file)."""

    def __init__(self, credentials: CloudCredentials) -> None:
        self._credentials = credentials
        _register_secret(credentials.access_key_secret)
        _register_secret(credentials.security_token)

    def get(self) -> CloudCredentials:
        return self._credentials

    def describe(self) -> str:
        return f"{self._credentials.source} (access key id {self._credentials.access_key_id})"

    def __repr__(self) -> str:
        return f"StaticCredentials({self._credentials!r})"


def from_env(environ: Mapping[str, str] | None = None) -> StaticCredentials | None:
    """Credentials from ALIBABA_CLOUD_ACCESS_KEY_ID/_SECRET (+ _SECURITY_TOKEN), or None when unset."""
    env = os.environ if environ is None else environ
    key_id, secret = env.get(ENV_KEY_ID, ""), env.get(ENV_KEY_SECRET, "")
    if not key_id and not secret:
        return None
    if not key_id or not secret:
        missing = ENV_KEY_ID if not key_id else ENV_KEY_SECRET
        problem = f"environment: {missing} is not set (set both {ENV_KEY_ID} and {ENV_KEY_SECRET})"
        raise ConfigError("cloud credentials incomplete", [problem])
    return StaticCredentials(CloudCredentials(key_id, secret, env.get(ENV_TOKEN) or None, source="env"))


def from_file(path: str | os.PathLike[str]) -> StaticCredentials:
    """Credentials from a file of ``key = value`` lines (access_key_id, access_key_secret, optional
    security_token; the environment variable names work too). Refused unless only its owner can read it."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        problem = f"{p}: cannot read the cloud credentials file: {exc.strerror}"
        raise ConfigError(f"{p}: cannot read", [problem]) from None
    if st.st_mode & 0o077:
        mode = stat.S_IMODE(st.st_mode)
        problem = (f"{p}: mode {mode:04o} lets other users read the cloud secret; run `chmod 600 {p}` "
                   "(and consider rotating the key)")
        raise ConfigError(f"{p}: readable by others", [problem])
    values: dict[str, str] = {}
    for number, line in enumerate(p.read_text().splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith(("#", ";", "[")):
            continue
        key, sep, value = text.partition("=")
        if not sep:
            raise ConfigError(f"{p}:{number}: not key = value", [f"{p}:{number}: expected `key = value`"])
        values[key.strip().lower()] = value.strip().strip("'\"")
    key_id = values.get("access_key_id") or values.get(ENV_KEY_ID.lower(), "")
    secret = values.get("access_key_secret") or values.get(ENV_KEY_SECRET.lower(), "")
    token = values.get("security_token") or values.get(ENV_TOKEN.lower()) or None
    if not key_id or not secret:
        raise ConfigError(f"{p}: incomplete", [f"{p}: write access_key_id = ... and access_key_secret = ..."])
    return StaticCredentials(CloudCredentials(key_id, secret, token, source=f"file {p}"))


class RamRoleCredentials:
    """STS credentials of the instance's RAM role, from the metadata service (``metadata_url``).

    Uses the hardened mode (a session token from ``PUT /latest/api/token``) when the service offers it,
    the plain mode otherwise. Refreshes ``_REFRESH_MARGIN_S`` before the keys expire."""

    def __init__(self, role_name: str | None = None, metadata_url: str = METADATA_URL, timeout: float = 2.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.role_name = role_name
        self.metadata_url = metadata_url.rstrip("/")
        self._clock = clock
        self._lock = threading.Lock()
        self._current: CloudCredentials | None = None
        # trust_env off: an HTTP proxy from the environment must never see the metadata request
        self._http = httpx.Client(timeout=timeout, trust_env=False)

    def describe(self) -> str:
        return f"RAM role {self.role_name or '(the instance role)'} via {self.metadata_url}"

    def __repr__(self) -> str:
        return f"RamRoleCredentials(role_name={self.role_name!r}, metadata_url={self.metadata_url!r})"

    def get(self) -> CloudCredentials:
        with self._lock:
            cur = self._current
            if cur is None or (cur.expiration is not None
                               and cur.expiration - self._clock() < _REFRESH_MARGIN_S):
                self._current = cur = self._fetch()
            return cur

    def close(self) -> None:
        self._http.close()

    def _fetch(self) -> CloudCredentials:
        headers = {}
        try:
            resp = self._http.put(f"{self.metadata_url}/latest/api/token",
                                  headers={"X-aliyun-ecs-metadata-token-ttl-seconds": "300"})
            if resp.status_code == 200 and resp.text:
                headers["X-aliyun-ecs-metadata-token"] = resp.text.strip()
        except httpx.HTTPError:
            pass  # the plain mode below reports the failure if the service is truly unreachable
        try:
            role = self.role_name
            if not role:
                listing = self._http.get(f"{self.metadata_url}{_ROLE_PATH}", headers=headers)
                listing.raise_for_status()
                role = listing.text.strip().splitlines()[0] if listing.text.strip() else ""
                if not role:
                    raise AuthError("the instance has no RAM role attached (metadata lists none)")
            resp = self._http.get(f"{self.metadata_url}{_ROLE_PATH}{role}", headers=headers)
        except httpx.HTTPStatusError as exc:
            raise AuthError(f"metadata service: no RAM role credentials ({exc.response.status_code})") from None
        except httpx.HTTPError as exc:
            raise TransientError(f"metadata service {self.metadata_url} unreachable: {type(exc).__name__}") from None
        if resp.status_code == 404:
            raise AuthError(f"RAM role {role!r} is not attached to this instance")
        if resp.status_code != 200:
            raise TransientError(f"metadata service answered HTTP {resp.status_code} for RAM role {role!r}")
        try:
            body = resp.json()
            if body.get("Code") != "Success":
                raise AuthError(f"metadata service refused RAM role {role!r}: {body.get('Code')}")
            expiration = calendar.timegm(time.strptime(body["Expiration"], "%Y-%m-%dT%H:%M:%SZ"))
            creds = CloudCredentials(body["AccessKeyId"], body["AccessKeySecret"], body["SecurityToken"],
                                     float(expiration), source=f"ram-role {role}")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise TransientError(f"metadata service: malformed credentials document for RAM role {role!r}") \
                from None
        _register_secret(creds.access_key_secret)
        _register_secret(creds.security_token)
        logger.info("RAM role %s: STS credentials %s valid until %s", role, creds.access_key_id,
                    body["Expiration"])
        return creds


def resolve_credentials(source: str = "auto", *, path: str | None = None, role_name: str | None = None,
                        metadata_url: str = METADATA_URL,
                        environ: Mapping[str, str] | None = None) -> CredentialsProvider:
    """The provider for ``source`` (env | file | ram_role | auto). ``auto`` tries, in this order, the
    environment variables, the file ``path`` (if given), then the instance's RAM role."""
    if source == "env":
        found = from_env(environ)
        if found is None:
            raise ConfigError("cloud credentials missing", [f"environment: set {ENV_KEY_ID} and {ENV_KEY_SECRET}"])
        return found
    if source == "file":
        if not path:
            raise ConfigError("cloud credentials file not named", ["credentials: source file needs a path"])
        return from_file(path)
    if source == "ram_role":
        return RamRoleCredentials(role_name, metadata_url)
    if source == "auto":
        env_creds = from_env(environ)
        if env_creds is not None:
            return env_creds
        if path:
            return from_file(path)
        return RamRoleCredentials(role_name, metadata_url)
    raise ConfigError(f"unknown credentials source {source!r}", [
        f"credentials: source {source!r} is not one of env, file, ram_role, auto"])
