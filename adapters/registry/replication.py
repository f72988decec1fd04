"""Image replication (the ImageRegistry port): copies an image, manifest list or OCI index from one
registry to another by digest, only what is missing, layers in parallel, tags moved last; images that
live only in the local Docker Engine are pushed through it. Called by the daemon and `burstctl replicate`."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adapters.registry.blobcopy import COPIED, MOUNTED, SKIPPED, Blob, BlobCopier
from adapters.registry.client import Manifest, RegistryClient, RegistryOptions, sha256_digest
from adapters.registry.imageref import ImageRef, LocalImageRef, parse_image, parse_registry_ref
from controller.errors import ConfigError, IntegrityError, NotFoundError, PermanentError
from controller.ports import CopyResult, ProgressCallback

if TYPE_CHECKING:
    import docker

__all__ = ["BlobListener", "Replicator", "platform_matches"]

logger = logging.getLogger(__name__)

_NON_DISTRIBUTABLE = ("foreign", "nondistributable")
BlobListener = Callable[[str, int, str], None]  # (digest, size, COPIED|SKIPPED|MOUNTED) when a blob is done


def platform_matches(wanted: str, platform: dict[str, Any] | None) -> bool:
    """``linux/amd64`` matches any variant; ``linux/arm/v7`` only that variant."""
    if not platform:
        return False
    parts = wanted.split("/")
    have = [str(platform.get("os", "")), str(platform.get("architecture", "")), str(platform.get("variant", ""))]
    return all(w == h for w, h in zip(parts, have, strict=False)) and len(parts) <= 3


@dataclass
class _Plan:
    """Everything one replication writes: blobs, then child manifests, then the top manifest."""

    top: Manifest
    children: list[Manifest]
    blobs: list[Blob]
    source_digest: str = ""  # the source's top digest when a platform filter rewrote the index


class _Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_kind = {COPIED: 0, SKIPPED: 0, MOUNTED: 0}
        self.bytes_copied = 0

    def add(self, kind: str, size: int) -> None:
        with self.lock:
            self.by_kind[kind] += 1
            if kind == COPIED:
                self.bytes_copied += size


class Replicator:
    """Implements ``controller.ports.ImageRegistry`` over the registry HTTP API (and the Docker Engine
    for local-only images). Thread-safe; one instance serves the daemon's whole life."""

    def __init__(self, options: RegistryOptions | None = None, *,
                 docker_factory: Callable[[], docker.DockerClient] | None = None) -> None:
        self.options = options or RegistryOptions()
        self.client = RegistryClient(self.options)
        self._docker_factory = docker_factory
        self._docker: docker.DockerClient | None = None
        # (src digest, platforms, dst) -> dst digest, for filtered indexes whose digest changes in the copy
        self._known: dict[tuple[str, tuple[str, ...], str], str] = {}

    def close(self) -> None:
        self.client.close()
        if self._docker is not None:
            self._docker.close()

    # ------------------------------------------------------------------ the port

    def has(self, ref: str) -> bool:
        return self.client.head_manifest(parse_registry_ref(ref)) is not None

    def replicate(self, src: str, dst: str, platforms: Sequence[str] | None = None,
                  progress: ProgressCallback | None = None, listener: BlobListener | None = None) -> CopyResult:
        """Copy ``src`` to ``dst`` (only what is missing) and return the digest now at ``dst``."""
        source = parse_image(src)
        target = _destination(dst, source)
        started = time.perf_counter()
        if isinstance(source, LocalImageRef):
            from adapters.registry.enginepush import push_local_image

            result = push_local_image(self._engine(), self.client, source, target, progress, listener)
        else:
            result = self._copy(source, target, tuple(platforms or ()), progress, listener)
        result = CopyResult(result.digest, result.copied_blobs, result.skipped_blobs, result.mounted_blobs,
                            result.bytes_copied, round(time.perf_counter() - started, 4))
        logger.info("image replicated", extra={"src": src, "dst": dst, "digest": result.digest,
                                               "copied": result.copied_blobs, "bytes": result.bytes_copied})
        return result

    def ensure(self, src: str, dst: str, platforms: Sequence[str] | None = None) -> str:
        """Make sure ``dst`` holds ``src``; the digest at ``dst``. When it already does this costs two
        HEAD requests (or an image inspect and one HEAD for a local-engine image)."""
        source = parse_image(src)
        target = _destination(dst, source)
        wanted = tuple(platforms or ())
        if isinstance(source, LocalImageRef):
            from adapters.registry.enginepush import pushed_digest

            digest = pushed_digest(self._engine(), source, target)
            if digest and self.client.head_manifest(target) == digest:
                return digest
        else:
            src_digest = self.client.head_manifest(source)
            if src_digest is None:
                raise NotFoundError(f"image {source} not found on {source.host}")
            expected = self._known.get((src_digest, wanted, str(target)), src_digest)
            if self.client.head_manifest(target) == expected:
                return expected
        return self.replicate(src, dst, wanted).digest

    # ------------------------------------------------------------------ registry to registry

    def _copy(self, src: ImageRef, dst: ImageRef, platforms: tuple[str, ...],
              progress: ProgressCallback | None, listener: BlobListener | None) -> CopyResult:
        plan = self._plan(src, platforms)
        if dst.digest and dst.digest != plan.top.digest:
            raise IntegrityError(f"destination asks for {dst.digest} but the source resolves to {plan.top.digest}")
        if self.client.head_manifest(dst) == plan.top.digest:
            # Already there. The registry accepted that manifest only once every blob it names was in
            # the repository, so the blobs need no HEAD each: this is the cheap warm path.
            for blob in plan.blobs:
                if progress is not None:
                    progress(blob.digest, blob.size, blob.size)
                if listener is not None:
                    listener(blob.digest, blob.size, SKIPPED)
            return CopyResult(plan.top.digest, skipped_blobs=len(plan.blobs))
        counters = _Counters()
        copier = BlobCopier(self.client, src, dst, progress)

        def one(blob: Blob) -> None:
            kind = copier.copy(blob)
            counters.add(kind, blob.size)
            if listener is not None:
                listener(blob.digest, blob.size, kind)

        # Largest first: the long pole starts at once, small blobs fill the other workers.
        ordered = sorted(plan.blobs, key=lambda b: -b.size)
        if len(ordered) <= 1 or self.options.concurrency <= 1:
            for blob in ordered:
                one(blob)
        else:
            with ThreadPoolExecutor(min(self.options.concurrency, len(ordered)), "blobcopy") as pool:
                futures: list[Future[None]] = [pool.submit(one, b) for b in ordered]
                _, pending = wait(futures, return_when=FIRST_EXCEPTION)
                for f in pending:  # first failure wins; blobs not started yet are not attempted
                    f.cancel()
                for f in futures:
                    if not f.cancelled():
                        f.result()
        # Children by digest before the top manifest; the tag moves last, when everything is in place.
        for child in plan.children:
            self.client.put_manifest(dst, child.digest, child)
        self.client.put_manifest(dst, dst.tag or plan.top.digest, plan.top)
        if plan.source_digest:
            self._known[(plan.source_digest, platforms, str(dst))] = plan.top.digest
        return CopyResult(plan.top.digest, counters.by_kind[COPIED], counters.by_kind[SKIPPED],
                          counters.by_kind[MOUNTED], counters.bytes_copied)

    def _plan(self, src: ImageRef, platforms: tuple[str, ...]) -> _Plan:
        top = self.client.get_manifest(src)
        if not top.is_index:
            if platforms:
                self._check_single_platform(src, top, platforms)
            return _Plan(top, [], _image_blobs(top))
        doc = top.document()
        entries = [e for e in doc.get("manifests") or [] if isinstance(e, dict)]
        chosen = entries if not platforms else \
            [e for e in entries if any(platform_matches(p, e.get("platform")) for p in platforms)]
        if not chosen:
            offered = sorted({_platform_text(e.get("platform")) for e in entries})
            raise NotFoundError(f"image {src} offers no platform matching {', '.join(platforms)} "
                                f"(it has {', '.join(offered) or 'none'})")
        children = [self.client.get_manifest(src, str(e["digest"])) for e in chosen]
        blobs: dict[str, Blob] = {}
        for child in children:
            if child.is_index:
                raise PermanentError(f"image {src}: nested indexes are not supported")
            for b in _image_blobs(child):
                blobs.setdefault(b.digest, b)
        plan = _Plan(top, children, list(blobs.values()))
        if len(chosen) != len(entries):
            # A subset is a new index (children keep their digests); the registry rejects an index
            # that names manifests it does not hold, so the original bytes cannot be kept.
            filtered = dict(doc, manifests=chosen)
            data = json.dumps(filtered, indent=3).encode()
            plan = _Plan(Manifest(data, top.media_type, sha256_digest(data)), children, plan.blobs, top.digest)
        return plan

    def _check_single_platform(self, src: ImageRef, top: Manifest, platforms: tuple[str, ...]) -> None:
        doc = top.document()
        config = doc.get("config") or {}
        if not str(config.get("mediaType", "")).endswith(("container.image.v1+json", "config.v1+json")):
            return
        with self.client.open_blob(src.host, src.repository, str(config["digest"])) as resp:
            try:
                cfg = json.loads(resp.read())
            except ValueError:
                return
        have = {"os": cfg.get("os"), "architecture": cfg.get("architecture"), "variant": cfg.get("variant")}
        if not any(platform_matches(p, have) for p in platforms):
            raise NotFoundError(f"image {src} is {_platform_text(have)} only, not {', '.join(platforms)}")

    def _engine(self) -> docker.DockerClient:
        if self._docker is None:
            if self._docker_factory is None:
                from adapters.docker_engine.client import docker_client

                self._docker = docker_client("unix:///var/run/docker.sock")
            else:
                self._docker = self._docker_factory()
        return self._docker


def _destination(dst: str, source: ImageRef | LocalImageRef) -> ImageRef:
    target = parse_image(dst)
    if isinstance(target, LocalImageRef):
        raise ConfigError(f"destination {dst!r} must name a registry: HOST[:PORT]/REPOSITORY[:TAG]")
    if target.tag is None and target.digest is None:
        tag = source.tag if isinstance(source, ImageRef) else source.name.rsplit(":", 1)[-1] \
            if ":" in source.name.rsplit("/", 1)[-1] else "latest"
        target = ImageRef(target.host, target.repository, tag or "latest", None)
    return target


def _image_blobs(manifest: Manifest) -> list[Blob]:
    doc = manifest.document()
    if doc.get("schemaVersion") != 2:
        raise PermanentError(f"manifest {manifest.digest}: only schema version 2 is supported")
    out: list[Blob] = []
    for desc in [doc.get("config")] + list(doc.get("layers") or []):
        if not isinstance(desc, dict) or "digest" not in desc:
            raise IntegrityError(f"manifest {manifest.digest}: a descriptor has no digest")
        media = str(desc.get("mediaType", ""))
        if desc.get("urls") and any(k in media for k in _NON_DISTRIBUTABLE):
            continue  # foreign layers are fetched from their URLs by the runtime, never pushed
        out.append(Blob(str(desc["digest"]), int(desc.get("size", 0)), media))
    return out


def _platform_text(p: dict[str, Any] | None) -> str:
    if not p:
        return "unknown"
    return "/".join(str(x) for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x)
