"""Image references: ``host[:port]/repo[:tag][@digest]`` for registries, and ``docker-daemon:NAME`` or a
name without a registry host for images that live only in the local Docker Engine. Used by the
replication adapter and `burstctl replicate`."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from controller.errors import ConfigError

__all__ = ["ImageRef", "LocalImageRef", "is_loopback", "parse_image", "parse_registry_ref"]

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_REPO = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")


@dataclass(frozen=True, slots=True)
class ImageRef:
    """An image in a registry. ``host`` is how the API is reached (``registry-1.docker.io`` for Hub)."""

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``: the digest when there is one, else the tag."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str) -> ImageRef:
        return ImageRef(self.host, self.repository, None, digest)

    def __str__(self) -> str:
        text = f"{self.host}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


@dataclass(frozen=True, slots=True)
class LocalImageRef:
    """An image known only to the local Docker Engine (``docker-daemon:NAME`` or a host-less name)."""

    name: str  # as the engine knows it, e.g. "local/app:1"

    def __str__(self) -> str:
        return f"docker-daemon:{self.name}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (optionally with a port) is a loopback address, where plain HTTP is allowed."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _looks_like_host(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost"


def parse_image(text: str) -> ImageRef | LocalImageRef:
    """Parse a user-given reference. ``docker-daemon:NAME`` and names without a registry host (first
    component with no dot, colon or ``localhost``) mean the local engine; Docker Hub must be spelled
    ``docker.io/...``, because the on-prem side of this tool has no business with Hub by accident."""
    raw = text.strip()
    if raw.startswith("docker-daemon:"):
        name = raw[len("docker-daemon:"):]
        if not name:
            raise ConfigError(f"image reference {text!r}: empty name after docker-daemon:")
        return LocalImageRef(name)
    body = raw.removeprefix("docker://")
    first = body.split("/", 1)[0]
    if "/" not in body or not _looks_like_host(first):
        _split_name(body, text)  # validates
        return LocalImageRef(body)
    return parse_registry_ref(body)


def parse_registry_ref(text: str) -> ImageRef:
    """Parse ``host[:port]/repo[:tag][@digest]`` (an optional ``docker://`` prefix is accepted)."""
    body = text.removeprefix("docker://")
    host, _, rest = body.partition("/")
    if not rest or not _looks_like_host(host):
        raise ConfigError(f"image reference {text!r}: expected HOST[:PORT]/REPOSITORY[:TAG][@DIGEST]")
    repository, tag, digest = _split_name(rest, text)
    if host == DOCKER_HUB:
        host = DOCKER_HUB_API
        if "/" not in repository:
            repository = f"library/{repository}"
    return ImageRef(host, repository, tag, digest)


def _split_name(rest: str, text: str) -> tuple[str, str | None, str | None]:
    name, _, digest = rest.partition("@")
    tag: str | None = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, _, tag = name.rpartition(":")
        if not _TAG.match(tag):
            raise ConfigError(f"image reference {text!r}: invalid tag {tag!r}")
    if not _REPO.match(name):
        raise ConfigError(f"image reference {text!r}: invalid repository name {name!r} "
                          "(lower-case letters, digits and . _ - separators)")
    if digest and not _DIGEST.match(digest):
        raise ConfigError(f"image reference {text!r}: invalid digest {digest!r}")
    return name, tag, digest or None
