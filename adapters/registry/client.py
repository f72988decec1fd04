"""An OCI distribution / Docker Registry v2 HTTP client on httpx: manifests, blob existence, mounts,
streamed blob reads and uploads, with auth, retries and the mapping of registry errors to
``controller.errors`` in one place (``_error_for``). Used by ``adapters.registry.replication``."""

from __future__ import annotations

import hashlib
import json
import logging
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import httpcore._sync.http11 as _httpcore_http11
import httpx

from adapters.registry.auth import Authenticator, CredentialSource, StaticCredentials
from adapters.registry.imageref import ImageRef, is_loopback
from controller.errors import (
    AuthError,
    BurstError,
    IntegrityError,
    NotFoundError,
    PermanentError,
    TransientError,
)
from controller.metrics import timed_call
from controller.retry import Backoff, retry_call

__all__ = [
    "INDEX_TYPES",
    "MANIFEST_TYPES",
    "Manifest",
    "RegistryClient",
    "RegistryOptions",
    "pull_scope",
    "push_scope",
]

logger = logging.getLogger(__name__)

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPES = (OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
_ACCEPT = ", ".join(MANIFEST_TYPES)
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_BACKOFF_CAP = 30.0  # seconds: the longest wait between two attempts, a Retry-After included

# httpcore reads HTTP/1.1 bodies 64 KiB at a time, each read one trip through h11 and the copy generator.
# A blob copy is a byte pump: 1 MiB reads cut the copying process's CPU by ~40% on the benchmark, which
# matters on a 2-core host shared with the registries. It is httpcore's own (class-level) knob and only
# changes the size asked of recv(), for every httpx client in the process.
READ_SIZE = 1 << 20
if getattr(_httpcore_http11.HTTP11Connection, "READ_NUM_BYTES", READ_SIZE) < READ_SIZE:
    _httpcore_http11.HTTP11Connection.READ_NUM_BYTES = READ_SIZE


@dataclass(frozen=True)
class RegistryOptions:
    """How to reach registries. Plain HTTP is used only for loopback hosts and ``insecure_hosts``."""

    credentials: CredentialSource = field(default_factory=StaticCredentials)
    insecure_hosts: frozenset[str] = frozenset()
    ca_file: str | None = None  # extra trust for private registries' certificates
    timeout: float = 60.0
    retries: int = 4  # attempts for one request (or one blob) before giving up
    backoff: float = 0.25  # first retry delay's ceiling in seconds; doubles each time, with jitter
    concurrency: int = 6  # blobs copied at once (what skopeo does too), so a typical image starts all at once
    chunk_size: int | None = None  # set to force chunked (PATCH) uploads of this part size
    verify_digests: bool = True  # hash streamed bytes ourselves (the destination verifies too)


@dataclass(frozen=True)
class Manifest:
    data: bytes  # exactly as served: re-serialising would change the digest
    media_type: str
    digest: str

    def document(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.data)
        except ValueError as exc:
            raise IntegrityError(f"manifest {self.digest} is not JSON") from exc
        if not isinstance(doc, dict):
            raise IntegrityError(f"manifest {self.digest} is not a JSON object")
        return doc

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


@dataclass(frozen=True)
class _Request:
    """One request as ``RegistryClient.request`` was asked for it, sent again on each attempt."""

    method: str
    host: str
    url: httpx.URL
    scope: str  # the token scope it needs
    operation: str  # the metrics' name for it: "GET manifest", "PUT upload"
    what: str  # for messages: "manifest web:v1"
    ok: tuple[int, ...]
    headers: dict[str, str] | None
    content: bytes | Iterator[bytes] | None
    stream: bool
    replayable: bool  # no body, or one in memory: it can be sent again


def pull_scope(repo: str) -> str:
    return f"repository:{repo}:pull"


def push_scope(repo: str, mount_from: str | None = None) -> str:
    scope = f"repository:{repo}:pull,push"
    return f"{scope} repository:{mount_from}:pull" if mount_from and mount_from != repo else scope


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class RegistryClient:
    """One HTTP connection pool for every registry; thread-safe (the replication workers share it)."""

    def __init__(self, options: RegistryOptions | None = None, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.options = options or RegistryOptions()
        verify: ssl.SSLContext | bool = True
        if self.options.ca_file:
            verify = ssl.create_default_context(cafile=self.options.ca_file)
        pool = max(8, self.options.concurrency * 2 + 2)
        self._http = httpx.Client(
            verify=verify, timeout=httpx.Timeout(self.options.timeout, connect=10.0),
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
            follow_redirects=True,  # blob GETs may redirect to storage (S3/OSS)
        )
        self._auth = Authenticator(self.options.credentials, self._http, clock=clock)
        self._backoff = Backoff(self.options.retries, self.options.backoff, _BACKOFF_CAP, sleep=sleep)

    def close(self) -> None:
        self._http.close()

    def base_url(self, host: str) -> str:
        plain = is_loopback(host) or host in self.options.insecure_hosts
        return f"{'http' if plain else 'https'}://{host}"

    # ------------------------------------------------------------------ requests, retries, errors

    def request(self, method: str, host: str, path: str, scope: str, *, what: str,
                ok: tuple[int, ...] = (200,), params: Any = None, headers: dict[str, str] | None = None,
                content: bytes | Iterator[bytes] | None = None, stream: bool = False) -> httpx.Response:
        """Send with auth, retrying transient failures when ``content`` can be replayed. A response whose
        status is not in ``ok`` (nor 404 for HEAD) is mapped to a BurstError."""
        url = httpx.URL(path if path.startswith(("http://", "https://")) else self.base_url(host) + path)
        if params:  # merged by hand: httpx 0.28 replaces an upload Location's own query (_state) instead
            url = url.copy_merge_params(params)
        req = _Request(method, host, url, scope, f"{method} {_target(url.path)}", what, ok, headers, content,
                       stream, replayable=content is None or isinstance(content, bytes))
        backoff = replace(self._backoff, attempts=self.options.retries if req.replayable else 1)
        return retry_call(lambda: self._send(req), backoff, f"registry {host}: {what}")

    def _send(self, req: _Request) -> httpx.Response:
        """One attempt: the request, and once more with fresh credentials if the registry challenges them."""
        authz = self._auth.header(req.host, req.scope)  # TransientError when the token service is down: retried
        resp = self._send_once(req, authz, challengeable=req.replayable)
        if resp is None:  # challenged: the registry told us how to authenticate
            resp = self._send_once(req, self._auth.header(req.host, req.scope), challengeable=False)
            assert resp is not None  # not challengeable: an answer or an error
        return resp

    def _send_once(self, req: _Request, authz: str | None, *, challengeable: bool) -> httpx.Response | None:
        """One request, timed, its answer mapped; None when a 401 challenge says to send it again."""
        headers = dict(req.headers or {})
        if authz:
            headers["Authorization"] = authz
        with timed_call("registry", req.operation):
            try:
                resp = self._http.send(self._http.build_request(req.method, req.url, headers=headers,
                                                                content=req.content), stream=req.stream)
            except httpx.TransportError as exc:
                raise _transport_error(exc, req.host, req.what) from exc
            if resp.status_code in req.ok or (req.method == "HEAD" and resp.status_code == 404):
                return resp
            if req.stream:
                resp.read()
            resp.close()
            if resp.status_code == 401:
                if challengeable and self._auth.challenged(req.host, resp.headers.get("www-authenticate"),
                                                           req.scope, authz):
                    return None
                self._auth.forget(req.host)
            raise _error_for(resp, req.host, req.what, self._auth.username(req.host))

    @property
    def retry_backoff(self) -> Backoff:
        """The backoff of every request, for a retry loop of the caller's own (a blob copy, which opens a
        fresh upload session for each attempt)."""
        return self._backoff

    # ------------------------------------------------------------------ manifests

    def get_manifest(self, ref: ImageRef, reference: str | None = None) -> Manifest:
        reference = reference or ref.reference
        what = f"manifest {ref.repository}:{reference}" if ":" not in reference else \
            f"manifest {ref.repository}@{reference}"
        resp = self.request("GET", ref.host, f"/v2/{ref.repository}/manifests/{reference}",
                            pull_scope(ref.repository), what=what, headers={"Accept": _ACCEPT})
        data = resp.content
        digest = sha256_digest(data)
        if reference.startswith("sha256:") and reference != digest:
            raise IntegrityError(f"{what} on {ref.host}: content hashes to {digest}")
        served = resp.headers.get("docker-content-digest")
        if served and served.startswith("sha256:") and served != digest:
            raise IntegrityError(f"{what} on {ref.host}: registry says {served}, content hashes to {digest}")
        media_type = resp.headers.get("content-type", "").split(";")[0].strip()
        if media_type not in MANIFEST_TYPES:  # some registries answer application/json: trust the document
            try:
                media_type = str(json.loads(data).get("mediaType") or media_type)
            except (ValueError, AttributeError):
                pass
        if media_type not in MANIFEST_TYPES:
            raise PermanentError(f"{what} on {ref.host}: unsupported manifest type {media_type!r} "
                                 "(Docker schema 2, OCI manifests and indexes are supported)")
        return Manifest(data, media_type, digest)

    def head_manifest(self, ref: ImageRef, reference: str | None = None) -> str | None:
        """The digest ``reference`` resolves to, or None when absent."""
        reference = reference or ref.reference
        resp = self.request("HEAD", ref.host, f"/v2/{ref.repository}/manifests/{reference}",
                            pull_scope(ref.repository), what=f"manifest {ref.repository}:{reference}",
                            headers={"Accept": _ACCEPT})
        if resp.status_code == 404:
            return None
        digest = resp.headers.get("docker-content-digest")
        if digest:
            return digest
        return self.get_manifest(ref, reference).digest  # a registry that omits the header

    def put_manifest(self, ref: ImageRef, reference: str, manifest: Manifest) -> None:
        resp = self.request("PUT", ref.host, f"/v2/{ref.repository}/manifests/{reference}",
                            push_scope(ref.repository), what=f"manifest {ref.repository}:{reference}",
                            ok=(200, 201, 202), content=manifest.data,
                            headers={"Content-Type": manifest.media_type})
        stored = resp.headers.get("docker-content-digest")
        if stored and stored != manifest.digest:
            raise IntegrityError(f"{ref.host} stored manifest {ref.repository}:{reference} as {stored}, "
                                 f"expected {manifest.digest}")

    # ------------------------------------------------------------------ blobs

    def blob_exists(self, host: str, repo: str, digest: str) -> bool:
        resp = self.request("HEAD", host, f"/v2/{repo}/blobs/{digest}", pull_scope(repo),
                            what=f"blob {repo}@{digest}")
        return resp.status_code == 200

    def mount_blob(self, host: str, repo: str, digest: str, from_repo: str) -> str | None:
        """Cross-repository mount; None when mounted, else the upload location the registry opened."""
        resp = self.request("POST", host, f"/v2/{repo}/blobs/uploads/", push_scope(repo, from_repo),
                            what=f"mount of {digest} into {repo}", ok=(201, 202),
                            params={"mount": digest, "from": from_repo}, content=b"")
        if resp.status_code == 201:
            return None
        return self._location(resp, host)

    def start_upload(self, host: str, repo: str) -> str:
        resp = self.request("POST", host, f"/v2/{repo}/blobs/uploads/", push_scope(repo),
                            what=f"upload into {repo}", ok=(202,), content=b"")
        return self._location(resp, host)

    def cancel_upload(self, host: str, repo: str, location: str) -> None:
        try:
            self.request("DELETE", host, location, push_scope(repo), what="upload cancel", ok=(200, 202, 204, 404))
        except BurstError as exc:  # best effort: the registry purges stale uploads itself
            logger.info("upload cancel failed", extra={"registry": host, "error": str(exc)})

    @contextmanager
    def open_blob(self, host: str, repo: str, digest: str) -> Iterator[httpx.Response]:
        resp = self.request("GET", host, f"/v2/{repo}/blobs/{digest}", pull_scope(repo),
                            what=f"blob {repo}@{digest}", stream=True)
        try:
            yield resp
        finally:
            resp.close()

    def put_blob(self, host: str, repo: str, location: str, digest: str, size: int,
                 body: Iterator[bytes]) -> None:
        """Monolithic upload: one PUT streaming ``body`` (``size`` bytes) and closing the session."""
        self.request("PUT", host, location, push_scope(repo), what=f"upload of {digest} into {repo}",
                     ok=(201, 204), params={"digest": digest}, content=body,
                     headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"})

    def patch_blob(self, host: str, repo: str, location: str, start: int, length: int,
                   body: Iterator[bytes]) -> str:
        """One chunk of a chunked upload; returns the location for the next one."""
        resp = self.request("PATCH", host, location, push_scope(repo), what=f"upload chunk into {repo}",
                            ok=(202, 204), content=body,
                            headers={"Content-Length": str(length), "Content-Type": "application/octet-stream",
                                     "Content-Range": f"{start}-{start + length - 1}"})
        return self._location(resp, host)

    def finish_upload(self, host: str, repo: str, location: str, digest: str) -> None:
        self.request("PUT", host, location, push_scope(repo), what=f"upload of {digest} into {repo}",
                     ok=(201, 204), params={"digest": digest}, content=b"",
                     headers={"Content-Type": "application/octet-stream"})

    def _location(self, resp: httpx.Response, host: str) -> str:
        location = resp.headers.get("location")
        if not location:
            raise PermanentError(f"registry {host} opened an upload without a Location header")
        return str(resp.url.join(location))


def _retry_after(resp: httpx.Response) -> float | None:
    try:
        return float(resp.headers["retry-after"])
    except (KeyError, ValueError):
        return None


def _transport_error(exc: httpx.TransportError, host: str, what: str) -> BurstError:
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return PermanentError(f"registry {host}: TLS certificate not trusted ({what}); configure its CA, "
                              "or list the host as insecure if it is a lab registry")
    return TransientError(f"registry {host} unreachable during {what}: {type(exc).__name__}: {exc}"[:300])


def _error_for(resp: httpx.Response, host: str, what: str, username: str | None) -> BurstError:
    """The one place registry answers become our errors (message short, no secrets, code kept)."""
    code, detail = None, ""
    try:
        errors = resp.json().get("errors") or []
        if errors:
            code = str(errors[0].get("code") or "") or None
            detail = str(errors[0].get("message") or "")[:200]
    except (ValueError, AttributeError, json.JSONDecodeError):
        pass
    status = resp.status_code
    suffix = f": {detail}" if detail else ""
    request_id = resp.headers.get("x-acs-request-id") or resp.headers.get("x-request-id")
    if status == 401:
        if username:
            msg = f"registry {host} rejected the credentials of user {username!r} ({what})"
        else:
            msg = f"registry {host} requires credentials for {what} and none are configured for it"
        return AuthError(msg, code=code or "UNAUTHORIZED", request_id=request_id)
    if status == 403:
        return AuthError(f"registry {host} denied {what}{suffix}", code=code or "DENIED", request_id=request_id)
    if status == 413:
        return PermanentError(f"registry {host} refused {what}: request too large", code="TOO_LARGE",
                              request_id=request_id)
    if status == 404:
        return NotFoundError(f"{what} not found on {host}", code=code, request_id=request_id)
    if code in ("DIGEST_INVALID", "SIZE_INVALID"):
        return IntegrityError(f"registry {host} rejected {what}: content does not match its digest{suffix}",
                              code=code, request_id=request_id)
    if status in _TRANSIENT_STATUS:
        return TransientError(f"registry {host} answered HTTP {status} to {what}{suffix}", code=code,
                              request_id=request_id, retry_after=_retry_after(resp))
    return PermanentError(f"registry {host} refused {what}: HTTP {status}{suffix}", code=code,
                          request_id=request_id)


def _target(path: str) -> str:
    """What a registry request reaches, for the metrics' operation label: never a repository or digest."""
    if "/blobs/uploads" in path:
        return "upload"
    if "/blobs/" in path:
        return "blob"
    if "/manifests/" in path:
        return "manifest"
    return "other"
