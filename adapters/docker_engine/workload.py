"""Captures the runnable spec of the on-prem containers a policy selects (Docker SDK), so cloud replicas
are identical. Called by the controller's replication/launch steps and by ``burstctl`` diagnostics.

What is copied and what is refused is documented in docs/replicas.md.
"""

from __future__ import annotations

import logging
import re
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import docker
import requests
from docker.errors import DockerException, NotFound

from adapters.docker_engine.client import docker_client
from adapters.pki import TlsFiles
from controller.errors import (
    AuthError,
    BurstError,
    NotFoundError,
    NotPortableError,
    PermanentError,
    TransientError,
)
from controller.ports import (
    LABEL_CONTROLLER,
    LABEL_NODE,
    LABEL_POLICY,
    LABEL_REPLICA,
    LABEL_SPEC_HASH,
    CopiedFiles,
    WorkloadSpec,
)
from controller.specs import files_entries, spec_diff, with_hash

__all__ = [
    "MAX_COPIED_BYTES",
    "CapturedContainer",
    "DockerWorkloadCapture",
    "ImageSource",
    "WorkloadDivergedError",
    "WorkloadSelection",
    "selection_from_policy",
]

logger = logging.getLogger(__name__)

MOUNT_DROP = "drop"
MOUNT_TMPFS = "tmpfs"
MOUNT_COPY = "copy"
MOUNT_COPY_SECRET = "copy-secret"
# what the copied mounts of a workload may weigh together, counted as the tar archives the on-prem engine
# sends (content plus a 512-byte header a file, padded to 512): config files, not data
MAX_COPIED_BYTES = 1024 * 1024
_CHUNK = 64 * 1024
# ownership labels are set per replica, never copied from what was captured
_OUR_LABELS = frozenset({LABEL_CONTROLLER, LABEL_POLICY, LABEL_REPLICA, LABEL_SPEC_HASH, LABEL_NODE})
_ANONYMOUS_VOLUME = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class WorkloadSelection:
    """Which on-prem containers make up a workload, and how to treat what does not travel.

    ``selector`` and ``names`` are a union: a container is selected when all selector labels match OR its
    name is listed. ``mounts`` maps a non-portable mount's destination to "drop", "tmpfs", "copy" or
    "copy-secret".
    """

    hosts: tuple[str, ...]
    selector: dict[str, str] = field(default_factory=dict)
    names: tuple[str, ...] = ()
    service_port: int = 80
    mounts: dict[str, str] = field(default_factory=dict)
    secret_env: frozenset[str] = frozenset()
    policy: str = ""  # for error messages only


def selection_from_policy(policy: Any) -> WorkloadSelection:
    """Build the selection from a loaded policy (``policy.workload.*``)."""
    w = policy.workload
    return WorkloadSelection(
        hosts=tuple(w.hosts), selector=dict(w.selector or {}), names=tuple(w.names or ()),
        service_port=int(w.service_port), mounts=dict(w.mounts or {}),
        secret_env=frozenset(w.secret_env or ()), policy=str(policy.name),
    )


@dataclass(frozen=True)
class ImageSource:
    """The image the workload runs, as the on-prem engine knows it.

    ``repo_digests`` is empty for an image that was built locally and never pushed: the registry
    replication pushes such an image and records its digest, which is then passed to ``capture``.
    """

    host: str
    image_id: str  # sha256:... (the local image id, not a registry digest)
    reference: str  # what the container was started from ("web:1.4", "local/busybox:1")
    repo_digests: tuple[str, ...]


@dataclass(frozen=True)
class CapturedContainer:
    host: str
    id: str
    name: str
    spec: WorkloadSpec


class WorkloadDivergedError(PermanentError):
    """The selected on-prem containers do not run the same spec; ``differences`` names the fields."""

    def __init__(self, message: str, differences: dict[str, list[str]]) -> None:
        super().__init__(message)
        self.differences = differences


def _map_error(exc: Exception, what: str) -> BurstError:
    """The one place Docker SDK / transport exceptions of the on-prem side become ours."""
    if isinstance(exc, NotFound):
        return NotFoundError(f"{what}: {exc.explanation or exc}")
    if isinstance(exc, requests.exceptions.SSLError):
        return AuthError(f"{what}: TLS handshake with the Docker host failed: {exc}")
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        return TransientError(f"{what}: Docker host unreachable: {exc}")
    if isinstance(exc, docker.errors.APIError):
        status = exc.status_code or 0
        if status in (401, 403):
            return AuthError(f"{what}: {exc.explanation}")
        if status >= 500:
            return TransientError(f"{what}: {exc.explanation}")
        return PermanentError(f"{what}: {exc.explanation}")
    return PermanentError(f"{what}: {exc}")


def _nanos(value: Any) -> int | None:
    return int(value) if value else None


def _tmpfs_options(mount: Mapping[str, Any]) -> str:
    opts = (mount.get("TmpfsOptions") or {})
    parts = []
    if opts.get("SizeBytes"):
        parts.append(f"size={int(opts['SizeBytes'])}")
    if opts.get("Mode"):
        parts.append(f"mode={int(opts['Mode']):o}")
    return ",".join(parts)


class DockerWorkloadCapture:
    """Reads containers on one or more on-prem Docker hosts. ``tls`` is used for tcp:// hosts."""

    def __init__(self, tls: TlsFiles | None = None, timeout: float = 30.0) -> None:
        self._tls = tls
        self._timeout = timeout
        self._clients: dict[str, docker.DockerClient] = {}

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def _client(self, host: str) -> docker.DockerClient:
        client = self._clients.get(host)
        if client is None:
            tls = self._tls if host.startswith("tcp://") else None
            client = docker_client(host, tls, timeout=self._timeout)
            self._clients[host] = client
        return client

    # ------------------------------------------------------------------ finding

    def _find(self, sel: WorkloadSelection) -> list[tuple[str, dict[str, Any]]]:
        """(host, inspect dict) of every selected running container, sorted by host then name."""
        found: list[tuple[str, dict[str, Any]]] = []
        for host in sel.hosts:
            api = self._client(host).api
            try:
                ids: set[str] = set()
                if sel.selector:
                    labels = [f"{k}={v}" for k, v in sorted(sel.selector.items())]
                    ids.update(c["Id"] for c in api.containers(filters={"label": labels, "status": "running"}))
                for name in sel.names:
                    try:
                        info = api.inspect_container(name)
                    except NotFound:
                        continue  # a listed name may live on another of the hosts
                    if info["State"].get("Running"):
                        ids.add(info["Id"])
                for cid in ids:
                    info = api.inspect_container(cid)
                    # our own replicas copy the workload's labels; where they share an engine with the
                    # on-prem containers (emulation, demo) they must never be taken for the workload
                    if LABEL_CONTROLLER not in ((info.get("Config") or {}).get("Labels") or {}):
                        found.append((host, info))
            except (DockerException, requests.exceptions.RequestException) as exc:
                raise _map_error(exc, f"listing workload containers on {host}") from exc
        if not found:
            what = []
            if sel.selector:
                what.append("labels " + ",".join(f"{k}={v}" for k, v in sorted(sel.selector.items())))
            if sel.names:
                what.append("names " + ",".join(sel.names))
            raise NotFoundError(f"policy {sel.policy or '?'}: no running container matches "
                                f"{' or '.join(what) or 'an empty selection'} on {', '.join(sel.hosts)}")
        return sorted(found, key=lambda hi: (hi[0], hi[1]["Name"]))

    def image_source(self, sel: WorkloadSelection) -> ImageSource:
        """The image of the first selected container (what the registry replication copies)."""
        host, info = self._find(sel)[0]
        return self._image_source(host, info)

    def _image_source(self, host: str, info: Mapping[str, Any]) -> ImageSource:
        try:
            image = self._client(host).api.inspect_image(info["Image"])
        except (DockerException, requests.exceptions.RequestException) as exc:
            raise _map_error(exc, f"inspecting image {info['Image']} on {host}") from exc
        return ImageSource(host=host, image_id=str(image["Id"]), reference=str(info["Config"]["Image"]),
                           repo_digests=tuple(image.get("RepoDigests") or ()))

    # ------------------------------------------------------------------ capture

    def capture_all(self, sel: WorkloadSelection, image: str | None = None) -> list[CapturedContainer]:
        """The spec of each selected container. ``image`` (a ``repo@sha256:...`` reference) overrides the
        RepoDigests lookup: the digest the registry replication recorded for a local-only image."""
        out = []
        for host, info in self._find(sel):
            spec = self._spec(sel, host, info, image)
            out.append(CapturedContainer(host=host, id=str(info["Id"]), name=str(info["Name"]).lstrip("/"),
                                         spec=spec))
        return out

    def capture(self, sel: WorkloadSelection, image: str | None = None) -> WorkloadSpec:
        """The one spec every selected container agrees on; WorkloadDivergedError names the differences."""
        captured = self.capture_all(sel, image)
        first = captured[0]
        differences: dict[str, list[str]] = {}
        for other in captured[1:]:
            if other.spec.spec_hash != first.spec.spec_hash:
                differences[f"{other.host}/{other.name}"] = spec_diff(first.spec, other.spec)
        if differences:
            detail = "; ".join(f"{name} differs in {', '.join(fields)}" for name, fields in differences.items())
            raise WorkloadDivergedError(
                f"policy {sel.policy or '?'}: the selected containers do not run the same spec "
                f"(compared with {first.host}/{first.name}): {detail}", differences)
        logger.info("captured workload", extra={"policy": sel.policy, "containers": len(captured),
                                                "image": first.spec.image, "spec_hash": first.spec.spec_hash})
        return first.spec

    def _digest_ref(self, host: str, info: Mapping[str, Any], name: str, image: str | None) -> str:
        if image is not None:
            if "@sha256:" not in image:
                raise PermanentError(f"container {name}: injected image {image!r} is not a digest reference "
                                     "(repo@sha256:...)")
            return image
        source = self._image_source(host, info)
        if not source.repo_digests:
            raise NotPortableError(
                f"container {name} on {host} runs image {source.reference} ({source.image_id[:19]}) that has "
                "no registry digest (RepoDigests is empty: it was built locally and never pushed). Replicate "
                "it to the cloud registry first (the registry step pushes local-only images and records the "
                "digest) and capture with that digest.")
        wanted_repo = source.reference.split("@")[0]
        head, sep, tag = wanted_repo.rpartition(":")
        if sep and "/" not in tag:  # a tag, not the port of a registry host
            wanted_repo = head
        for ref in source.repo_digests:  # prefer the repository the container was started from
            if ref.split("@")[0] == wanted_repo:
                return ref
        return source.repo_digests[0]

    def _spec(self, sel: WorkloadSelection, host: str, info: Mapping[str, Any], image: str | None) -> WorkloadSpec:
        name = str(info["Name"]).lstrip("/")
        config: Mapping[str, Any] = info.get("Config") or {}
        hc: Mapping[str, Any] = info.get("HostConfig") or {}
        where = f"container {name} on {host}"

        network_mode = str(hc.get("NetworkMode") or "")
        if network_mode.startswith("container:"):
            raise NotPortableError(f"{where}: shares the network of another container ({network_mode}); "
                                   "that cannot be reproduced on a cloud node")
        if hc.get("Devices"):
            raise NotPortableError(f"{where}: uses host devices "
                                   f"({', '.join(d.get('PathOnHost', '?') for d in hc['Devices'])})")

        tmpfs, files = self._mounts(sel, host, where, info)
        for path, opts in (hc.get("Tmpfs") or {}).items():
            tmpfs.setdefault(path, opts or "")

        env: dict[str, str] = {}
        for item in config.get("Env") or ():
            key, _, value = item.partition("=")
            env[key] = value

        exposed = set(config.get("ExposedPorts") or {})
        exposed.update((hc.get("PortBindings") or {}).keys())  # published ports are exposed ports too

        nano_cpus = _nanos(hc.get("NanoCpus"))
        if nano_cpus is None and hc.get("CpuQuota") and hc.get("CpuPeriod"):
            nano_cpus = int(hc["CpuQuota"]) * 1_000_000_000 // int(hc["CpuPeriod"])  # --cpu-quota form of --cpus

        restart = hc.get("RestartPolicy") or None
        log_config = hc.get("LogConfig") or None
        spec = WorkloadSpec(
            image=self._digest_ref(host, info, name, image),
            entrypoint=tuple(config["Entrypoint"]) if config.get("Entrypoint") else None,
            command=tuple(config["Cmd"]) if config.get("Cmd") else None,
            env=env,
            secret_env=frozenset(k for k in sel.secret_env if k in env),
            service_port=sel.service_port,
            exposed_ports=tuple(sorted(exposed)),
            labels={k: v for k, v in (config.get("Labels") or {}).items() if k not in _OUR_LABELS},
            user=config.get("User") or None,
            working_dir=config.get("WorkingDir") or None,
            healthcheck=dict(config["Healthcheck"]) if config.get("Healthcheck") else None,
            mem_limit=_nanos(hc.get("Memory")),
            nano_cpus=nano_cpus,
            restart_policy=dict(restart) if restart and restart.get("Name") not in (None, "", "no") else None,
            log_config={"Type": log_config.get("Type"), "Config": dict(log_config.get("Config") or {})}
            if log_config else None,
            stop_signal=config.get("StopSignal") or None,
            tmpfs=dict(sorted(tmpfs.items())),
            files=files,
        )
        return with_hash(spec)

    def _mounts(self, sel: WorkloadSelection, host: str, where: str,
                info: Mapping[str, Any]) -> tuple[dict[str, str], tuple[CopiedFiles, ...]]:
        """tmpfs mounts to reproduce and mounts whose content is copied; NotPortableError for a bind mount
        or volume the policy did not map."""
        tmpfs: dict[str, str] = {}
        files: list[CopiedFiles] = []
        try:
            image_config = self._client(host).api.inspect_image(info["Image"]).get("Config") or {}
        except (DockerException, requests.exceptions.RequestException) as exc:
            raise _map_error(exc, f"inspecting the image of {where}") from exc
        image_volumes = set(image_config.get("Volumes") or {})
        host_mounts = {m.get("Target"): m for m in (info.get("HostConfig") or {}).get("Mounts") or ()}
        for mount in sorted(info.get("Mounts") or (), key=lambda m: str(m.get("Destination"))):
            kind, dest = mount.get("Type"), str(mount.get("Destination"))
            if kind == "tmpfs":
                tmpfs[dest] = _tmpfs_options(host_mounts.get(dest) or {})
                continue
            if kind == "volume" and dest in image_volumes and _ANONYMOUS_VOLUME.match(str(mount.get("Name", ""))):
                continue  # declared by the image (VOLUME): the replica gets its own fresh one, as on-prem
            action = sel.mounts.get(dest)
            if action == MOUNT_DROP:
                logger.info("dropping mount %s of %s as the policy says", dest, where)
                continue
            if action == MOUNT_TMPFS:
                tmpfs[dest] = ""
                continue
            source = mount.get("Name") if kind == "volume" else mount.get("Source")
            if action in (MOUNT_COPY, MOUNT_COPY_SECRET):
                field_name = f"policy {sel.policy or '?'}: workload.mounts[\"{dest}\"]: {action}"
                if mount.get("RW"):
                    raise NotPortableError(
                        f"{field_name}: {where} can write to its {kind} mount {source} -> {dest}, and a copy "
                        "cannot follow what it writes; copy is for read-only mounts (mount it :ro on-prem, or "
                        "map it to tmpfs or drop)")
                used = sum(len(f.archive) for f in files)
                files.append(self._copy(host, str(info["Id"]), dest, action == MOUNT_COPY_SECRET,
                                        MAX_COPIED_BYTES - used, f"{field_name}: {where}"))
                continue
            raise NotPortableError(
                f"{where}: {kind} mount {source} -> {dest} cannot be copied to a cloud node; map it in the "
                f"policy (workload.mounts: {{{dest}: drop}}, {{{dest}: tmpfs}}, or {{{dest}: copy}} for "
                "read-only config files)")
        return tmpfs, tuple(files)

    def _copy(self, host: str, container_id: str, dest: str, secret: bool, room: int, what: str) -> CopiedFiles:
        """The content at ``dest`` in the running container as the engine's tar stream, refused beyond
        ``room`` bytes (what is left of MAX_COPIED_BYTES) without reading further."""
        chunks: list[bytes] = []
        size = 0
        try:
            stream, _stat = self._client(host).api.get_archive(container_id, dest, chunk_size=_CHUNK)
            for chunk in stream:
                size += len(chunk)
                if size > room:
                    stream.close()
                    raise NotPortableError(
                        f"{what}: the copied mounts take more than {MAX_COPIED_BYTES // 1024} KiB, the limit "
                        f"(counted as tar archives: content plus 512 bytes a file), at {dest}; copy is for "
                        "config files: bake larger content into the image, or map the mount to drop or tmpfs")
                chunks.append(chunk)
        except (DockerException, requests.exceptions.RequestException) as exc:
            raise _map_error(exc, f"{what}: reading {dest}") from exc
        files = CopiedFiles(dest=dest, archive=b"".join(chunks), secret=secret)
        top = dest.rstrip("/").rsplit("/", 1)[-1]
        try:
            names = list(files_entries(files))
        except tarfile.TarError as exc:
            raise PermanentError(f"{what}: the engine's archive of {dest} is not a tar stream: {exc}") from exc
        if not names or any(n != top and not n.startswith(top + "/") for n in names):
            raise PermanentError(f"{what}: the engine's archive of {dest} does not hold {top} alone")
        logger.debug("copied mount %s (%d bytes%s)", dest, len(files.archive), ", secret" if secret else "",
                    extra={"mount": dest})
        return files
