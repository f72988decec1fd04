"""Canonical form, stable hash and field-by-field difference of a WorkloadSpec.

Used by the workload capture (to stamp ``spec_hash`` and to check that several on-prem containers agree),
by the state codec, and by the rolling update (a replica whose hash differs from the captured one is
stale). Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields, replace
from typing import Any

from controller.ports import WorkloadSpec

__all__ = ["canonical", "image_digest", "spec_diff", "spec_hash", "with_hash"]

_HASHED_SECRET = "sha256:"


def image_digest(image: str) -> str:
    """The ``sha256:...`` part of a digest reference; the whole string when it has none.

    The hash uses only the digest, so the on-prem reference and the cloud copy (same digest, another
    repository) hash alike.
    """
    _, sep, digest = image.rpartition("@")
    return digest if sep else image


def _secret_fingerprint(value: str) -> str:
    return _HASHED_SECRET + hashlib.sha256(b"burst-controller/secret-env\0" + value.encode()).hexdigest()


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
