"""Copies one blob between registries: skip if present, mount when both repositories share a registry,
otherwise stream it (GET chunks go straight into a monolithic PUT, or PATCH parts) while hashing, so a
layer is never held in memory and corrupt bytes never complete an upload. Called by adapters.registry.replication."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from adapters.registry.client import RegistryClient
from adapters.registry.imageref import ImageRef
from controller.errors import IntegrityError, PermanentError, TransientError
from controller.retry import retry_call

__all__ = ["COPIED", "MOUNTED", "SKIPPED", "Blob", "BlobCopier"]

logger = logging.getLogger(__name__)

COPIED, SKIPPED, MOUNTED = "copied", "skipped", "mounted"
FALLBACK_PART = 16 * 1024 * 1024  # chunked-upload part size when a registry refuses one big PUT
_PROGRESS_STEP = 1024 * 1024  # report progress at most once per MiB per blob


@dataclass(frozen=True, slots=True)
class Blob:
    digest: str
    size: int
    media_type: str = ""


def verified(raw: Iterator[bytes], blob: Blob, on_bytes: Callable[[int], None], verify: bool) -> Iterator[bytes]:
    """Pass chunks through, checking size and digest. The last chunk is held back until the digest is
    checked, so a destination never receives a complete corrupt body (the upload is aborted instead)."""
    algo, _, expected = blob.digest.partition(":")
    hasher = hashlib.new(algo) if verify and algo in ("sha256", "sha512") else None
    done = 0
    for chunk in raw:
        if not chunk:
            continue
        done += len(chunk)
        if done > blob.size:
            raise IntegrityError(f"blob {blob.digest}: source sent more than the {blob.size} bytes it declares")
        if hasher is not None:
            hasher.update(chunk)
            if done == blob.size and hasher.hexdigest() != expected:
                raise IntegrityError(f"blob {blob.digest}: the bytes served hash to {algo}:{hasher.hexdigest()}; "
                                     "the source registry's copy is corrupt")
        on_bytes(len(chunk))
        yield chunk
    if done != blob.size:
        raise TransientError(f"blob {blob.digest}: stream ended after {done} of {blob.size} bytes")


class _Parts:
    """Splits one chunk stream into consecutive parts of exact lengths (for PATCH uploads)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._rest = b""

    def take(self, length: int) -> Iterator[bytes]:
        left = length
        while left > 0:
            chunk = self._rest or next(self._chunks, b"")
            self._rest = b""
            if not chunk:
                raise TransientError("blob stream ended inside an upload part")
            if len(chunk) > left:
                chunk, self._rest = chunk[:left], chunk[left:]
            left -= len(chunk)
            yield chunk


class BlobCopier:
    """Copies blobs from ``src`` to ``dst`` repositories; one per replication, shared by its workers."""

    def __init__(self, client: RegistryClient, src: ImageRef, dst: ImageRef,
                 progress: Callable[[str, int, int], None] | None = None) -> None:
        self._client = client
        self._src = src
        self._dst = dst
        self._progress = progress
        self._mountable = src.host == dst.host and src.repository != dst.repository
        self._chunked: int | None = client.options.chunk_size
        self._lock = threading.Lock()

    def copy(self, blob: Blob) -> str:
        """Make ``blob`` present at the destination; returns COPIED, SKIPPED or MOUNTED."""
        c, d = self._client, self._dst
        if c.blob_exists(d.host, d.repository, blob.digest):
            self._report(blob, blob.size)
            return SKIPPED
        location: str | None
        if self._mountable:
            location = c.mount_blob(d.host, d.repository, blob.digest, self._src.repository)
            if location is None:
                self._report(blob, blob.size)
                return MOUNTED
        else:
            location = c.start_upload(d.host, d.repository)
        session: list[str | None] = [location]  # None: the last one was interrupted, open a fresh one

        def attempt() -> str:
            while True:
                current = session[0]
                if current is None:
                    current = session[0] = c.start_upload(d.host, d.repository)
                try:
                    self._stream(blob, current)
                    return COPIED
                except (PermanentError, TransientError) as exc:
                    c.cancel_upload(d.host, d.repository, current)
                    session[0] = None
                    if isinstance(exc, TransientError) or exc.code != "TOO_LARGE" or self._chunked:
                        raise
                logger.info("registry refused a monolithic upload; using chunked uploads", extra={"registry": d.host})
                with self._lock:
                    self._chunked = FALLBACK_PART

        return retry_call(attempt, c.retry_backoff, f"blob copy of {blob.digest}")

    def _stream(self, blob: Blob, location: str) -> None:
        c, s, d = self._client, self._src, self._dst
        done = 0
        reported = 0

        def on_bytes(n: int) -> None:
            nonlocal done, reported
            done += n
            if done - reported >= _PROGRESS_STEP or done == blob.size:
                reported = done
                self._report(blob, done)

        with c.open_blob(s.host, s.repository, blob.digest) as resp:
            declared = resp.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) != blob.size:
                raise IntegrityError(f"blob {blob.digest}: source serves {declared} bytes, "
                                     f"the manifest declares {blob.size}")
            chunks = verified(resp.iter_raw(), blob, on_bytes, c.options.verify_digests)
            part = self._chunked
            if not part:
                c.put_blob(d.host, d.repository, location, blob.digest, blob.size, chunks)
                return
            parts = _Parts(chunks)
            offset = 0
            while offset < blob.size:
                length = min(part, blob.size - offset)
                location = c.patch_blob(d.host, d.repository, location, offset, length, parts.take(length))
                offset += length
            c.finish_upload(d.host, d.repository, location, blob.digest)

    def _report(self, blob: Blob, done: int) -> None:
        if self._progress is not None:
            self._progress(blob.digest, done, blob.size)
