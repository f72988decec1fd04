"""Builds small real images on the local Docker Engine without any internet: a busybox rootfs
(from Debian's busybox-static) imported as an image. Used by `burstctl demo` and the tests to make the
on-prem workload; `busybox httpd` inside it is a ready HTTP server."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import docker
from docker.errors import ImageNotFound

from controller.errors import NotFoundError

__all__ = ["BUSYBOX_APPLETS", "ensure_busybox_image"]

BUSYBOX_APPLETS = ("sh", "httpd", "sleep", "cat", "echo", "ls", "wget", "sed", "mkdir", "env", "true",
                   "false", "kill", "ps", "nc", "date", "dd", "head", "printf", "grep", "rm", "touch", "hostname")


def _find_busybox() -> Path:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        p = Path(candidate)
        if p.exists():
            return p
    found = shutil.which("busybox")
    if not found:
        raise NotFoundError("busybox not found: install Debian's busybox-static")
    return Path(found)


def _rootfs_tar(busybox: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "tmp", "www", "etc", "proc", "sys", "dev"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(str(busybox), arcname="bin/busybox")
        for applet in BUSYBOX_APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname, link.mode = tarfile.SYMTYPE, "busybox", 0o777
            tar.addfile(link)
        for name, body in (("www/index.html", b"ok\n"), ("etc/passwd", b"root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"),
                           ("etc/group", b"root:x:0:\nnogroup:x:65534:\n")):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(body), 0o644
            tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def ensure_busybox_image(client: docker.DockerClient, ref: str = "local/busybox:1") -> str:
    """Import the busybox image as ``ref`` unless it exists; return its image id."""
    try:
        return str(client.images.get(ref).id)
    except ImageNotFound:
        pass
    repo, _, tag = ref.rpartition(":")
    client.api.import_image_from_data(_rootfs_tar(_find_busybox()), repository=repo, tag=tag,
                                      changes=['CMD ["/bin/sh"]', "ENV PATH=/bin"])
    return str(client.images.get(ref).id)
