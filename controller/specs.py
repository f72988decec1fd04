"""Canonical form, stable hash and field-by-field difference of a WorkloadSpec.

Used by the workload capture (to stamp ``spec_hash`` and to check that several on-prem containers agree),
by the state codec, and by the rolling update (a replica whose hash differs from the captured one is
stale); ``secret_texts`` lists what must be registered for log redaction. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import fields, replace
from typing import Any

from controller.ports import CopiedFiles, WorkloadSpec

__all__ = ["canonical", "files_entries", "image_digest", "secret_texts", "spec_diff", "spec_hash", "with_hash"]

_HASHED_SECRET = "sha256:"
# a line of a secret file shorter than this is not registered for redaction on its own (it would mask
# ordinary words in every log line); the whole file always is
_MIN_SECRET_LINE = 8


def image_digest(image: str) -> str:
    """The ``sha256:...`` part of a digest reference; the whole string when it has none.

    The hash uses only the digest, so the on-prem reference and the cloud copy (same digest, another
    repository) hash alike.
    """
    _, sep, digest = image.rpartition("@")
    return digest if sep else image


def _secret_fingerprint(value: str) -> str:
    return _HASHED_SECRET + hashlib.sha256(b"burst-controller/secret-env\0" + value.encode()).hexdigest()


def _file_fingerprint(content: bytes, secret: bool) -> str:
    if secret:
        return _HASHED_SECRET + hashlib.sha256(b"burst-controller/secret-file\0" + content).hexdigest()
    return hashlib.sha256(content).hexdigest()


def files_entries(files: CopiedFiles) -> dict[str, str]:
    """Each entry of the archive by path: kind, mode, owner and a hash of its content (or link target).

    Modification times are left out: the same content with a newer mtime (the file copied again, another
    on-prem host) is the same replica. ``tarfile.ReadError`` if the archive is not a tar stream.
    """
    out: dict[str, str] = {}
    with tarfile.open(fileobj=io.BytesIO(files.archive), mode="r:") as tar:
        for member in tar:
            head = f"{member.mode:o} {member.uid}:{member.gid}"
            if member.isfile():
                reader = tar.extractfile(member)
                content = reader.read() if reader is not None else b""
                out[member.name] = f"file {head} {_file_fingerprint(content, files.secret)}"
            elif member.isdir():
                out[member.name] = f"dir {head}"
            elif member.issym() or member.islnk():
                out[member.name] = f"link {head} {member.linkname}"
            else:
                out[member.name] = f"other {head}"
    return out


def secret_texts(spec: WorkloadSpec) -> list[str]:
    """The values of the secret env keys and the text of the secret files (whole, and each line of at least
    ``_MIN_SECRET_LINE`` characters): what the daemon registers for log redaction once it has captured."""
    out = [spec.env[k] for k in sorted(spec.secret_env) if spec.env.get(k)]
    for files in spec.files:
        if not files.secret:
            continue
        with tarfile.open(fileobj=io.BytesIO(files.archive), mode="r:") as tar:
            for member in tar:
                reader = tar.extractfile(member) if member.isfile() else None
                text = reader.read().decode("utf-8", "replace").strip() if reader is not None else ""
                if text:
                    out.append(text)
                    out += [line.strip() for line in text.splitlines() if len(line.strip()) >= _MIN_SECRET_LINE]
    return out


def canonical(spec: WorkloadSpec) -> dict[str, Any]:
    """A JSON-ready dict of everything that makes the replica what it is; secret values only as hashes."""
    out: dict[str, Any] = {}
    for f in fields(spec):
        if f.name == "spec_hash":
            continue
        value: Any = getattr(spec, f.name)
        if f.name == "image":
            value = image_digest(value)
        elif f.name == "env":
            value = {k: (_secret_fingerprint(v) if k in spec.secret_env else v) for k, v in value.items()}
        elif f.name == "secret_env":
            value = sorted(value)
        elif f.name == "files":
            value = {files.dest: {"secret": files.secret, "entries": files_entries(files)} for files in value}
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def spec_hash(spec: WorkloadSpec) -> str:
    """sha256 (hex) of the canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(canonical(spec), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def with_hash(spec: WorkloadSpec) -> WorkloadSpec:
    return replace(spec, spec_hash=spec_hash(spec))


def _diff(prefix: str, a: Any, b: Any, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            _diff(f"{prefix}.{key}", a.get(key), b.get(key), out)
    elif a != b:
        out.append(prefix)


def spec_diff(a: WorkloadSpec, b: WorkloadSpec) -> list[str]:
    """Dotted paths of the fields that differ (``env.VERSION``, ``image``); never the values, so the
    result is safe to log even when a secret differs."""
    out: list[str] = []
    ca, cb = canonical(a), canonical(b)
    for key in ca:
        _diff(key, ca[key], cb[key], out)
    return out
