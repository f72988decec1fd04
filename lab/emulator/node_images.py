"""The ECS emulator's node images: real Debian root file systems built from Debian's archive with
debootstrap, as a cloud's public images are, and booted as machines (systemd as PID 1, cloud-init's NoCloud
source carrying the launch's UserData) by ``lab.emulator.nodes``.

Each image is built once per machine and cached by content outside the checkout (``BURST_NODE_IMAGE_CACHE``,
default ``/var/cache/burst-controller/node-images``): the cache key is a hash of the recipe (suite, packages,
the build steps' version), so a changed recipe builds anew and an unchanged one never does. A suite's build
gives its stock image (systemd, cloud-init, no Docker), optionally a variant with Docker baked in, and the
region's package mirror for it: the .debs a stock node needs to install Docker (``docker.io`` and its
dependencies, as resolved against that very image), served to the nodes by the emulator at
``http://mirror.ecs-emulator.internal/`` like a cloud region's own mirror. Nodes need no internet.

Building needs root (debootstrap, chroot, mount) and Debian's ``debootstrap`` and ``apt-utils``."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import docker
from docker.errors import ImageNotFound

__all__ = ["IMAGES", "MIRROR_HOST", "NodeImage", "NodeImageCache", "SuiteRecipe", "image_by_id"]

logger = logging.getLogger(__name__)

BUILD_VERSION = 2  # bump when the build steps below change what an image contains
DEBIAN_ARCHIVE = os.environ.get("BURST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
MIRROR_HOST = "mirror.ecs-emulator.internal"  # the region's package mirror, as nodes resolve it
# what a cloud's public Debian image has beyond minbase: systemd, networking tools, an HTTPS client
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "iproute2", "ca-certificates", "curl", "iptables", "locales",
                 "procps", "kmod")


@dataclass(frozen=True)
class SuiteRecipe:
    suite: str  # bookworm, trixie
    version: str  # 12, 13
    baked: tuple[str, ...] = ()  # packages of the baked variant (empty: no baked variant)
    # what stock nodes may install from the region's mirror: Docker (the node bootstrap), and what the
    # controller's own install needs on a Debian machine (a venv, the Debian package's dependencies)
    mirror: tuple[str, ...] = ("docker.io", "python3-venv", "python3-pip")

    def key(self) -> str:
        blob = json.dumps({"recipe": asdict(self), "base": BASE_PACKAGES, "archive": DEBIAN_ARCHIVE,
                           "build": BUILD_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class NodeImage:
    """One image as DescribeImages lists it. ``variant`` is ``stock`` or ``docker``."""

    image_id: str
    recipe: SuiteRecipe
    variant: str
    os_name: str

    @property
    def docker_tag(self) -> str:
        return f"burst-node/{self.image_id.split('_x64')[0]}:{self.recipe.key()}"


BOOKWORM = SuiteRecipe("bookworm", "12", baked=("docker.io",))
TRIXIE = SuiteRecipe("trixie", "13")
IMAGES: tuple[NodeImage, ...] = (
    NodeImage("debian_12_x64_20G_alibase.vhd", BOOKWORM, "stock", "Debian  12 64 bit"),
    NodeImage("debian_12_docker_x64_20G_alibase.vhd", BOOKWORM, "docker", "Debian  12 64 bit with Docker"),
    NodeImage("debian_13_x64_20G_alibase.vhd", TRIXIE, "stock", "Debian  13 64 bit"),
)


def image_by_id(image_id: str) -> NodeImage | None:
    return next((i for i in IMAGES if i.image_id == image_id), None)


def _run(cmd: list[str], **kw: object) -> None:
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"{' '.join(cmd[:6])}... exited {done.returncode}:\n{tail}")
    logger.debug("%s: %.1fs", " ".join(cmd[:4]), time.monotonic() - started)


class NodeImageCache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or Path(os.environ.get("BURST_NODE_IMAGE_CACHE", "/var/cache/burst-controller/node-images"))

    def suite_dir(self, recipe: SuiteRecipe) -> Path:
        return self.root / f"{recipe.suite}-{recipe.key()}"

    def mirror_dir(self, recipe: SuiteRecipe) -> Path:
        return self.suite_dir(recipe) / "mirror"

    def tarball(self, image: NodeImage) -> Path:
        return self.suite_dir(image.recipe) / f"{image.variant}.tar"

    def is_built(self, recipe: SuiteRecipe) -> bool:
        return (self.suite_dir(recipe) / "meta.json").exists()

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # one build at a time per machine (CI and a developer may race)
            yield

    # ------------------------------------------------------------------ build

    def ensure_built(self, recipe: SuiteRecipe, say: Callable[[str], object] | None = None) -> Path:
        if self.is_built(recipe):
            return self.suite_dir(recipe)
        with self._lock():
            if self.is_built(recipe):
                return self.suite_dir(recipe)
            started = time.monotonic()
            (say or logger.info)(f"building the Debian {recipe.version} node images (debootstrap {recipe.suite}; "
                                 "once per machine, cached by content)")
            work = Path(tempfile.mkdtemp(prefix=f".build-{recipe.suite}-", dir=self.root))
            try:
                self._build(recipe, work)
                meta = {"recipe": asdict(recipe), "key": recipe.key(), "built_at": time.time(),
                        "seconds": round(time.monotonic() - started, 1)}
                (work / "meta.json").write_text(json.dumps(meta, indent=1))
                for stale in self.root.glob(f"{recipe.suite}-*"):  # an older recipe's build
                    shutil.rmtree(stale, ignore_errors=True)
                work.rename(self.suite_dir(recipe))
            finally:
                shutil.rmtree(work, ignore_errors=True)
            return self.suite_dir(recipe)

    def _build(self, recipe: SuiteRecipe, work: Path) -> None:
        rootfs = work / "rootfs"
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", recipe.suite,
              str(rootfs), DEBIAN_ARCHIVE])
        with _chroot(rootfs) as apt:
            # cloud-init with apt, not debootstrap --include: debootstrap misses the virtual
            # python3-cffi-backend-api-* packages and leaves python3-cryptography unconfigured
            apt("install", "-y", "--no-install-recommends", "cloud-init")
            mirror = work / "mirror"
            mirror.mkdir()
            if recipe.mirror:  # the closure a stock node installs, resolved against this image
                apt("install", "-y", "--no-install-recommends", "--download-only", *recipe.mirror)
                for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
                    shutil.move(str(deb), mirror / deb.name)
            apt("clean")
        _run(["sh", "-c", "apt-ftparchive packages . > Packages"], cwd=str(mirror))
        # the locale cloud-init sets (en_US.UTF-8) exists, as on a cloud's own images
        (rootfs / "etc/locale.gen").write_text("en_US.UTF-8 UTF-8\n")
        _run(["chroot", str(rootfs), "locale-gen"], env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        self._configure(rootfs, recipe)
        _tar(rootfs, work / "stock.tar")
        if recipe.baked:
            with _chroot(rootfs) as apt:
                apt("install", "-y", "--no-install-recommends", *recipe.baked)
                apt("clean")
            (rootfs / "etc/apt/sources.list").write_text(_sources(recipe))  # the chroot's own list was restored
            _tar(rootfs, work / "docker.tar")
        shutil.rmtree(rootfs, ignore_errors=True)

    @staticmethod
    def _configure(rootfs: Path, recipe: SuiteRecipe) -> None:
        """What makes the root file system a cloud image of the emulated region."""
        cfg = rootfs / "etc/cloud/cloud.cfg.d"
        cfg.mkdir(parents=True, exist_ok=True)
        (cfg / "90-ecs-emulator.cfg").write_text(
            "# the ECS emulator's data source: NoCloud, seeded with the launch's UserData and meta-data\n"
            "datasource_list: [ NoCloud, None ]\n")
        (rootfs / "etc/apt/sources.list").write_text(_sources(recipe))
        for extra in (rootfs / "etc/apt/sources.list.d").glob("*"):
            extra.unlink()
        (rootfs / "etc/machine-id").write_text("")  # a new one per machine, made by systemd at first boot
        with contextlib.suppress(FileNotFoundError):
            (rootfs / "etc/hostname").unlink()
        # a container has no consoles, no kernel modules to load, no clock to set
        wants = rootfs / "etc/systemd/system"
        for unit in ("getty@tty1.service", "serial-getty@ttyS0.service", "systemd-modules-load.service",
                     "console-getty.service", "systemd-timesyncd.service"):
            link = wants / unit
            with contextlib.suppress(FileExistsError):
                link.symlink_to("/dev/null")

    # ------------------------------------------------------------------ engine

    def ensure_imported(self, client: docker.DockerClient, image: NodeImage) -> str:
        """The image's tag in ``client``'s engine, importing the cached root file system if missing."""
        try:
            client.images.get(image.docker_tag)
            return image.docker_tag
        except ImageNotFound:
            pass
        self.ensure_built(image.recipe)
        repo, _, tag = image.docker_tag.rpartition(":")
        with self.tarball(image).open("rb") as fh:
            client.api.import_image_from_data(fh, repository=repo, tag=tag)
        client.images.get(image.docker_tag)
        for old in client.images.list(name=repo):  # an older recipe's import: its machines are gone or keep it
            if image.docker_tag not in old.tags:
                with contextlib.suppress(docker.errors.APIError):
                    client.images.remove(old.id)
        return image.docker_tag


def _sources(recipe: SuiteRecipe) -> str:
    return (f"# the region's package mirror (the ECS emulator serves it to its nodes)\n"
            f"deb [trusted=yes] http://{MIRROR_HOST}/debian-{recipe.suite} ./\n")


def _tar(rootfs: Path, out: Path) -> None:
    _run(["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(out), "."])


@contextlib.contextmanager
def _chroot(rootfs: Path) -> Iterator[Callable[..., None]]:
    """apt-get inside the root file system, with the host's resolver and Debian's archive, no daemons
    started by package scripts (policy-rc.d), /proc mounted while it runs."""
    resolv = rootfs / "etc/resolv.conf"
    sources = rootfs / "etc/apt/sources.list"
    saved_sources = sources.read_text() if sources.exists() else None
    policy = rootfs / "usr/sbin/policy-rc.d"
    with contextlib.suppress(FileNotFoundError):
        resolv.unlink()
    shutil.copy("/etc/resolv.conf", resolv)
    sources.write_text(f"deb {DEBIAN_ARCHIVE} {_suite_of(rootfs)} main\n")
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    _run(["mount", "-t", "proc", "proc", str(rootfs / "proc")])
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
    updated = False

    def apt(*args: str) -> None:
        nonlocal updated
        if not updated:
            _run(["chroot", str(rootfs), "apt-get", "update", "-qq"], env=env)
            updated = True
        _run(["chroot", str(rootfs), "apt-get", "-qq", *args], env=env)

    try:
        yield apt
    finally:
        subprocess.run(["umount", "-l", str(rootfs / "proc")], check=False)
        policy.unlink(missing_ok=True)
        resolv.unlink(missing_ok=True)
        if saved_sources is not None:
            sources.write_text(saved_sources)
        _run(["chroot", str(rootfs), "sh", "-c", "rm -rf /var/lib/apt/lists/*"])


def _suite_of(rootfs: Path) -> str:
    text = (rootfs / "etc/os-release").read_text()
    for line in text.splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip('"')
    raise RuntimeError(f"{rootfs}: no VERSION_CODENAME in /etc/os-release")
