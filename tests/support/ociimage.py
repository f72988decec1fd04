"""Builds real multi-layer images of random data straight through the registry HTTP API (plain httpx,
independent of the code under test): each layer is a gzip'd tar holding one random file, with a config
whose diff_ids match. Used by the registry tests and bench/replication.py."""

from __future__ import annotations

import hashlib
import json
import random
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CHUNK = 1 << 20


@dataclass
class PushedImage:
    digest: str
    media_type: str
    layers: list[tuple[str, int]] = field(default_factory=list)  # (digest, size)
    config: tuple[str, int] = ("", 0)

    @property
    def blobs(self) -> list[tuple[str, int]]:
        return [self.config, *self.layers]


class _Layer:
    """Streams a gzip(tar(one random file)) layer, hashing compressed and uncompressed bytes."""

    def __init__(self, size: int, seed: int, level: int = 0) -> None:
        self.size, self.seed, self.level = size, seed, level
        self.digest = self.diff_id = ""
        self.length = 0

    def chunks(self) -> Iterator[bytes]:
        rng = random.Random(self.seed)
        comp = zlib.compressobj(self.level, zlib.DEFLATED, 31)
        outer, inner = hashlib.sha256(), hashlib.sha256()
        info = tarfile.TarInfo(f"data/{self.seed}.bin")
        info.size, info.mode = self.size, 0o644
        pad = (-self.size) % 512
        pieces: Iterator[bytes] = iter([info.tobuf(format=tarfile.USTAR_FORMAT)])

        def raw() -> Iterator[bytes]:
            yield from pieces
            left = self.size
            while left:
                n = min(CHUNK, left)
                yield rng.randbytes(n)
                left -= n
            yield b"\0" * (pad + 1024)

        for block in raw():
            inner.update(block)
            out = comp.compress(block)
            if out:
                outer.update(out)
                self.length += len(out)
                yield out
        out = comp.flush()
        outer.update(out)
        self.length += len(out)
        yield out
        self.digest, self.diff_id = "sha256:" + outer.hexdigest(), "sha256:" + inner.hexdigest()


class ImagePusher:
    """Pushes blobs and manifests to one registry at ``base`` (e.g. http://127.0.0.1:5001)."""

    def __init__(self, base: str, auth: tuple[str, str] | None = None) -> None:
        self.http = httpx.Client(base_url=base, auth=auth, timeout=120)

    def close(self) -> None:
        self.http.close()

    def blob(self, repo: str, data: bytes) -> tuple[str, int]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        loc = self._start(repo)
        r = self.http.put(httpx.URL(loc).copy_merge_params({"digest": digest}), content=data)
        assert r.status_code == 201, r.text
        return digest, len(data)

    def layer(self, repo: str, size: int, seed: int) -> tuple[str, int, str]:
        """Stream a random layer of ``size`` payload bytes; returns (digest, blob size, diff_id)."""
        layer = _Layer(size, seed)
        loc = self._start(repo)
        r = self.http.patch(loc, content=layer.chunks(), headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 202, r.text
        r = self.http.put(httpx.URL(r.headers["location"]).copy_merge_params({"digest": layer.digest}), content=b"")
        assert r.status_code == 201, r.text
        return layer.digest, layer.length, layer.diff_id

    def image(self, repo: str, tag: str | None, layer_sizes: list[int], *, seed: int = 1, oci: bool = False,
              arch: str = "amd64", variant: str | None = None) -> PushedImage:
        layers = [self.layer(repo, size, seed * 1000 + i) for i, size in enumerate(layer_sizes)]
        config = {"architecture": arch, "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                  "rootfs": {"type": "layers", "diff_ids": [d for _, _, d in layers]}, "created": "2024-01-01T00:00:00Z"}
        if variant:
            config["variant"] = variant
        cfg = self.blob(repo, json.dumps(config).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST if oci else DOCKER_MANIFEST,
            "config": {"mediaType": OCI_CONFIG if oci else DOCKER_CONFIG, "digest": cfg[0], "size": cfg[1]},
            "layers": [{"mediaType": OCI_LAYER if oci else DOCKER_LAYER, "digest": d, "size": n}
                       for d, n, _ in layers],
        }
        data = json.dumps(manifest, indent=3).encode()
        digest = self.manifest(repo, tag, data, manifest["mediaType"])
        return PushedImage(digest, manifest["mediaType"], [(d, n) for d, n, _ in layers], cfg)

    def index(self, repo: str, tag: str, images: list[tuple[PushedImage, dict[str, str]]],
              oci: bool = False) -> str:
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX if oci else DOCKER_LIST,
               "manifests": [{"mediaType": img.media_type, "digest": img.digest,
                              "size": len(self.http.get(f"/v2/{repo}/manifests/{img.digest}",
                                                        headers={"Accept": img.media_type}).content),
                              "platform": platform} for img, platform in images]}
        return self.manifest(repo, tag, json.dumps(doc, indent=2).encode(), doc["mediaType"])

    def manifest(self, repo: str, ref: str | None, data: bytes, media_type: str) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r = self.http.put(f"/v2/{repo}/manifests/{ref or digest}", content=data,
                          headers={"Content-Type": media_type})
        assert r.status_code == 201, r.text
        assert r.headers["docker-content-digest"] == digest
        return digest

    def _start(self, repo: str) -> str:
        r = self.http.post(f"/v2/{repo}/blobs/uploads/")
        assert r.status_code == 202, r.text
        return str(r.headers["location"])
