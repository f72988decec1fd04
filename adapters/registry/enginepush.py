"""Pushes an image that exists only in the local Docker Engine (no on-prem registry) to the destination
registry through the Docker SDK, and returns the manifest digest the registry now serves, which is what
cloud nodes will pull. Called by adapters.registry.replication.Replicator for ``docker-daemon:`` sources."""

from __future__ import annotations

import logging
from typing import Any

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound

from adapters.registry.client import RegistryClient
from adapters.registry.imageref import ImageRef, LocalImageRef
from controller.errors import (
    AuthError,
    BurstError,
    IntegrityError,
    NotFoundError,
    PermanentError,
    TransientError,
)
from controller.ports import CopyResult, ProgressCallback

__all__ = ["push_local_image", "pushed_digest"]

logger = logging.getLogger(__name__)

_AUTH_HINTS = ("unauthorized", "authentication required", "no basic auth credentials", "denied")
_TRANSIENT_HINTS = ("connection refused", "timeout", "i/o timeout", "connection reset", "eof", "503", "502")


def pushed_digest(engine: docker.DockerClient, source: LocalImageRef, target: ImageRef) -> str | None:
    """The digest the engine recorded when it last pushed ``source`` to ``target``'s repository."""
    try:
        attrs = engine.images.get(source.name).attrs
    except ImageNotFound as exc:
        raise NotFoundError(f"image {source.name} not found in the local Docker Engine") from exc
    except (DockerException, requests.RequestException) as exc:
        raise _engine_error(exc, "inspect") from exc
    prefix = f"{target.host}/{target.repository}@"
    for entry in attrs.get("RepoDigests") or []:
        if str(entry).startswith(prefix):
            return str(entry)[len(prefix):]
    return None


def push_local_image(engine: docker.DockerClient, registry: RegistryClient, source: LocalImageRef,
                     target: ImageRef, progress: ProgressCallback | None = None,
                     listener: Any = None) -> CopyResult:
    """Tag ``source`` as ``target`` in the engine and push it; the pushed manifest digest is returned
    after checking the registry serves it."""
    if target.tag is None:
        raise PermanentError(f"destination {target} needs a tag to push a local image to")
    repo = f"{target.host}/{target.repository}"
    try:
        image = engine.images.get(source.name)
        image.tag(repo, target.tag)
        creds = registry.options.credentials.get(target.host)
        auth = {"username": creds.username, "password": creds.password} if creds else None
        stream = engine.api.push(repo, tag=target.tag, stream=True, decode=True, auth_config=auth)
        digest, counts, sizes = _follow(stream, target, progress, listener)
    except ImageNotFound as exc:
        raise NotFoundError(f"image {source.name} not found in the local Docker Engine") from exc
    except (DockerException, requests.RequestException) as exc:
        raise _engine_error(exc, f"push to {target.host}") from exc
    served = registry.head_manifest(target)
    if served != digest:
        raise IntegrityError(f"{target} serves {served} after the engine pushed {digest}")
    return CopyResult(digest, counts["copied"], counts["skipped"], counts["mounted"], sum(sizes.values()))


def _follow(stream: Any, target: ImageRef, progress: ProgressCallback | None,
            listener: Any) -> tuple[str, dict[str, int], dict[str, int]]:
    counts = {"copied": 0, "skipped": 0, "mounted": 0}
    sizes: dict[str, int] = {}  # layer id -> bytes the engine reported sending (uncompressed)
    digest: str | None = None
    for event in stream:
        if "error" in event:
            raise _push_error(str(event.get("error")), target)
        layer = str(event.get("id") or "")
        status = str(event.get("status") or "")
        detail = event.get("progressDetail") or {}
        if status == "Pushing" and detail.get("total"):
            sizes[layer] = int(detail.get("current", 0))
            if progress is not None:
                progress(layer, int(detail.get("current", 0)), int(detail["total"]))
        kind = "copied" if status == "Pushed" else "skipped" if status == "Layer already exists" else \
            "mounted" if status.startswith("Mounted from") else None
        if kind:
            counts[kind] += 1
            if kind != "copied":
                sizes.pop(layer, None)
            if listener is not None:
                listener(layer, sizes.get(layer, 0), kind)
        aux = event.get("aux")
        if isinstance(aux, dict) and aux.get("Digest"):
            digest = str(aux["Digest"])
    if digest is None:
        raise PermanentError(f"the Docker Engine finished pushing to {target} without reporting a digest")
    return digest, counts, sizes


def _push_error(message: str, target: ImageRef) -> BurstError:
    low = message.lower()
    short = message[:200]
    if any(h in low for h in _AUTH_HINTS):
        return AuthError(f"registry {target.host} refused the push of {target.repository}: {short}")
    if any(h in low for h in _TRANSIENT_HINTS):
        return TransientError(f"push to {target.host} failed: {short}")
    return PermanentError(f"push to {target.host} failed: {short}")


def _engine_error(exc: Exception, what: str) -> BurstError:
    if isinstance(exc, requests.RequestException):
        return TransientError(f"local Docker Engine unreachable during {what}: {type(exc).__name__}")
    if isinstance(exc, APIError) and exc.status_code is not None and exc.status_code >= 500:
        return TransientError(f"local Docker Engine failed {what}: {exc.explanation or exc}"[:300])
    return PermanentError(f"local Docker Engine refused {what}: {exc}"[:300])
