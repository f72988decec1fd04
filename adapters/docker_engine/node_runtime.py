"""Runs workload replicas on cloud nodes through each node's Docker Engine API over mutual TLS
(``DockerNodeRuntime``, the ``NodeRuntime`` port). Called by the controller's start/stop/reconcile steps.

Every container it makes carries the ownership labels plus the node's instance id (``LABEL_NODE``):
several emulated nodes share one engine, and listing must only return the node's own replicas. Copied
mounts (``WorkloadSpec.files``) go into a volume of the replica's own on the node, written through the
same API, and are bind-mounted read-only from there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import posixpath
import tarfile
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import docker
import requests
from docker.errors import DockerException, ImageNotFound, NotFound
from docker.types import Mount

from adapters.docker_engine.client import docker_client
from adapters.pki import TlsFiles
from controller.errors import (
    AuthError,
    BurstError,
    NotFoundError,
    PermanentError,
    TransientError,
)
from controller.metrics import timed_call
from controller.ports import (
    LABEL_CONTROLLER,
    LABEL_NODE,
    LABEL_POLICY,
    Container,
    CopiedFiles,
    Node,
    Owner,
    WorkloadSpec,
)

__all__ = ["DockerNodeRuntime", "RegistryCredentials", "map_docker_error"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
RegistryCredentials = Mapping[str, tuple[str, str]]  # registry host -> (username, password)
# registry auth failures reach us as 500s from the engine, recognisable only by their text
_AUTH_MARKERS = ("unauthorized", "authentication required", "no basic auth credentials", "access denied",
                 "incorrect username or password")
# host ports tried for the service port of the replicas on one node: service_port, +1, ...
_PORT_SPAN = 64
# the volume holding a replica's copied mounts, named on the replica so that removing it finds the volume
LABEL_FILES = "io.burst-controller.files-volume"
# where the throwaway container that writes the copied mounts sees the volume (absent from any image)
_FILES_AT = "/.burst-controller-files"


def map_docker_error(exc: Exception, what: str) -> BurstError:
    """The one place Docker SDK and transport exceptions of node endpoints become ours."""
    if isinstance(exc, (NotFound, ImageNotFound)):
        return NotFoundError(f"{what}: {_explain(exc)}")
    if isinstance(exc, requests.exceptions.SSLError):
        # our CA did not sign the node's certificate, or the node refused ours: retrying will not help
        return AuthError(f"{what}: mutual TLS with the node's Docker endpoint failed: {_short(exc)}")
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        return TransientError(f"{what}: node Docker endpoint unreachable: {_short(exc)}")
    if isinstance(exc, docker.errors.APIError):
        status = exc.status_code or 0
        text = _explain(exc)
        if status in (401, 403) or any(m in text.lower() for m in _AUTH_MARKERS):
            return AuthError(f"{what}: {text}")
        if "manifest unknown" in text or "not found: manifest" in text:
            return NotFoundError(f"{what}: {text}")
        if status >= 500:
            return TransientError(f"{what}: {text}")
        return PermanentError(f"{what}: {text}")
    if isinstance(exc, DockerException):
        return PermanentError(f"{what}: {_short(exc)}")
    return TransientError(f"{what}: {_short(exc)}")


def _status(exc: BaseException) -> int | None:
    """The HTTP status of the Engine API answer a mapped error came from."""
    return getattr(exc.__cause__, "status_code", None)


def _explain(exc: Exception) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    return _short(text)


def _short(value: object, limit: int = 300) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


class DockerNodeRuntime:
    """``NodeRuntime`` over the Docker Engine API of each node, always with the controller's client cert."""

    def __init__(
        self,
        tls: TlsFiles,
        registry_auth: RegistryCredentials | Callable[[], RegistryCredentials] | None = None,
        timeout: float = 60.0,
        pull_timeout: float = 600.0,
    ) -> None:
        self._tls = tls
        self._registry_auth = registry_auth
        self._timeout = timeout
        self._pull_timeout = pull_timeout
        self._clients: dict[str, docker.DockerClient] = {}
        self._lock = threading.Lock()
        # one start at a time per node: choosing a free host port and creating the container that publishes
        # it must not interleave with another replica's start on the same node (both would pick the same port)
        self._node_locks: dict[str, threading.Lock] = {}

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def _api(self, node: Node) -> docker.APIClient:
        if not node.docker_endpoint.startswith("tcp://"):
            raise PermanentError(f"node {node.instance_id}: Docker endpoint {node.docker_endpoint!r} is not "
                                 "tcp://host:port; nodes are only reached over mutual TLS")
        with self._lock:
            client = self._clients.get(node.docker_endpoint)
            if client is None:
                client = docker_client(node.docker_endpoint, self._tls, timeout=self._timeout)
                self._clients[node.docker_endpoint] = client
            return client.api

    @staticmethod
    def _call(operation: str, what: str, fn: Callable[[], T]) -> T:
        """Every request to a node's engine: timed (``operation``, an Engine API call name), its errors
        mapped (``what`` names it in messages)."""
        with timed_call("docker", operation):
            try:
                return fn()
            except (DockerException, requests.exceptions.RequestException) as exc:
                raise map_docker_error(exc, what) from exc

    # ------------------------------------------------------------------ NodeRuntime

    def ping(self, node: Node) -> None:
        """Whether the node's engine answers over mutual TLS (the 'booting -> starting' check)."""
        api = self._api(node)
        self._call("ping", f"node {node.instance_id}: ping", api.ping)

    def pull(self, node: Node, image: str) -> float | None:
        """Pull ``image`` (by digest) onto the node unless present: the seconds it took, None if present."""
        return self._pull(self._api(node), node, image)

    def has_image(self, node: Node, image: str) -> bool:
        api = self._api(node)
        try:
            self._call("inspect image", f"node {node.instance_id}: inspect {image}", lambda: api.inspect_image(image))
            return True
        except NotFoundError:
            return False

    def write_files(self, node: Node, image: str, files: Mapping[str, bytes]) -> None:
        """Overwrite files of the node's own file system (absolute paths -> content), through its engine only:
        a container of ``image`` (present on the node), created but never started, has each file's directory
        bound in and receives the files there (``put_archive``); then it is removed. Works for any image, even
        one without a shell. The baking of a node image uses it to leave no node-specific state behind."""
        api = self._api(node)
        where = f"node {node.instance_id}: write files"
        dirs = sorted({posixpath.dirname(p) for p in files})
        binds = {d: {"bind": f"/burst-host/{n}", "mode": "rw"} for n, d in enumerate(dirs)}
        created = self._call("create", where, lambda: api.create_container(
            image, command=["true"], entrypoint=[], host_config=api.create_host_config(binds=binds),
            labels={LABEL_NODE: node.instance_id}))
        container_id = str(created["Id"])
        try:
            for n, d in enumerate(dirs):
                buf = io.BytesIO()
                with tarfile.open(fileobj=buf, mode="w") as tar:
                    for path, body in files.items():
                        if posixpath.dirname(path) == d:
                            info = tarfile.TarInfo(posixpath.basename(path))
                            info.size, info.mode = len(body), 0o644
                            tar.addfile(info, io.BytesIO(body))
                self._put(api, where, container_id, f"/burst-host/{n}", buf.getvalue())
        finally:
            self._call("remove", where, lambda: api.remove_container(container_id, force=True, v=True))

    def _put(self, api: docker.APIClient, where: str, container_id: str, path: str, data: bytes) -> None:
        self._call("put archive", where, lambda: api.put_archive(container_id, path, data))

    def start(self, node: Node, workload: WorkloadSpec, name: str, labels: dict[str, str]) -> Container:
        api = self._api(node)
        pulled = None
        if self._inspect(api, name, f"node {node.instance_id}: replica {name}") is None:
            pulled = self._pull(api, node, workload.image)  # outside the node's lock: a pull can take minutes
        with self._lock:
            node_lock = self._node_locks.setdefault(node.instance_id, threading.Lock())
        with node_lock:
            container = self._start(api, node, workload, name, labels)
        return dataclasses.replace(container, pull_seconds=pulled) if pulled is not None else container

    def _start(self, api: docker.APIClient, node: Node, workload: WorkloadSpec, name: str,
               labels: dict[str, str]) -> Container:
        where = f"node {node.instance_id}: replica {name}"
        existing = self._inspect(api, name, where)
        if existing is None:
            host_port = self._free_port(api, node, workload.service_port)
            binds = self._put_files(api, node, workload, name, labels) if workload.files else {}
            config = self._container_config(api, node, workload, name, labels, host_port, binds)
            try:
                self._call("create", f"{where}: create", lambda: api.create_container(**config))
            except PermanentError as exc:
                if _status(exc) != 409:  # 409: a concurrent start made it; fall through and use it
                    raise
            existing = self._inspect(api, name, where)
            if existing is None:
                raise TransientError(f"{where}: created but not found right after")
            logger.info("created replica", extra={"node": node.instance_id, "replica": name,
                                                  "image": workload.image, "port": host_port})
        if not existing["State"].get("Running"):
            container_id = str(existing["Id"])
            try:
                self._call("start", f"{where}: start", lambda: api.start(container_id))
            except TransientError as exc:
                if "already allocated" in str(exc) or "address already in use" in str(exc):
                    # its host port was taken meanwhile (another controller process, or by hand): remove it so
                    # the retry creates it again on a free port
                    self._call("remove", f"{where}: remove", lambda: api.remove_container(container_id, force=True))
                raise
            existing = self._inspect(api, name, where) or existing
        return self._container(node, existing, workload.service_port)

    def list(self, node: Node, owner: Owner) -> list[Container]:
        api = self._api(node)
        filters = [f"{LABEL_CONTROLLER}={owner.controller_id}", f"{LABEL_NODE}={node.instance_id}"]
        if owner.policy:
            filters.append(f"{LABEL_POLICY}={owner.policy}")
        where = f"node {node.instance_id}: list"
        summaries = self._call("list", where, lambda: api.containers(all=True, filters={"label": filters}))
        out = []
        for summary in summaries:
            info = self._inspect(api, summary["Id"], where)
            if info is not None:  # removed between list and inspect
                out.append(self._container(node, info, None))
        return sorted(out, key=lambda c: c.name)

    def inspect(self, node: Node, container_id: str) -> dict[str, Any]:
        """The raw ``docker inspect`` of one container (diagnostics and the identity tests)."""
        info = self._inspect(self._api(node), container_id, f"node {node.instance_id}: inspect")
        if info is None:
            raise NotFoundError(f"node {node.instance_id}: no container {container_id}")
        return info

    def stop(self, node: Node, container_id: str, signal: str, timeout: float) -> None:
        """Send ``signal``, wait up to ``timeout`` seconds, then SIGKILL (what ``docker stop -s`` does; API
        1.41 has no signal on stop). The restart policy is switched off first, or a container whose own
        StopSignal differs from ``signal`` would be restarted by the engine after it exits."""
        api = self._api(node)
        where = f"node {node.instance_id}: stop {container_id[:12]}"
        info = self._inspect(api, container_id, where)
        if info is None or not info["State"].get("Running"):
            return
        self._call("update", f"{where}: update restart policy", lambda: api.update_container(
            container_id, restart_policy={"Name": "no", "MaximumRetryCount": 0}))
        try:
            self._call("kill", where, lambda: api.kill(container_id, signal=signal))
        except PermanentError as exc:
            if _status(exc) in (404, 409):  # gone or already stopped meanwhile
                return
            raise
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self._inspect(api, container_id, where)
            if info is None or not info["State"].get("Running"):
                logger.info("replica stopped by %s", signal, extra={"node": node.instance_id,
                                                                      "container": container_id[:12]})
                return
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        logger.warning("replica did not stop within %.0fs of %s; killing", timeout, signal,
                       extra={"node": node.instance_id, "container": container_id[:12]})
        try:
            self._call("kill", where, lambda: api.kill(container_id, signal="SIGKILL"))
        except PermanentError as exc:
            if _status(exc) not in (404, 409):
                raise
        self._call("wait", f"{where}: wait", lambda: api.wait(container_id, timeout=max(10, int(self._timeout))))

    def remove(self, node: Node, container_id: str) -> None:
        """Remove the container with its anonymous volumes, and the volume of its copied mounts."""
        api = self._api(node)
        where = f"node {node.instance_id}: remove {container_id[:12]}"
        info = self._inspect(api, container_id, where)
        volume = (((info or {}).get("Config") or {}).get("Labels") or {}).get(LABEL_FILES)
        with contextlib.suppress(NotFoundError):
            self._call("remove", where, lambda: api.remove_container(container_id, force=True, v=True))
        if volume:
            with contextlib.suppress(NotFoundError):
                self._call("remove volume", f"{where}: remove volume {volume}", lambda: api.remove_volume(volume))

    def _put_files(self, api: docker.APIClient, node: Node, w: WorkloadSpec, name: str,
                   labels: dict[str, str]) -> dict[str, dict[str, str]]:
        """Write the copied mounts into the volume ``<name>-files`` on the node and answer the binds that
        mount each one read-only at its destination.

        Docker 20.10 cannot mount a volume's subpath, so each mount is bound from its path under the
        volume's mountpoint on the node. The writing goes through a container created (never started)
        from the workload's image, which the node has just pulled: the Engine API extracts an archive into
        a created container's volume (``PUT /containers/{id}/archive``) without running anything.
        """
        where = f"node {node.instance_id}: replica {name}: copied mounts"
        volume, writer = f"{name}-files", f"{name}-files-writer"
        owned = {**labels, LABEL_NODE: node.instance_id}
        self._call("create volume", f"{where}: create volume",
                   lambda: api.create_volume(volume, driver="local", labels=owned))
        info = self._call("inspect volume", f"{where}: inspect volume", lambda: api.inspect_volume(volume))
        mountpoint = str(info["Mountpoint"]).rstrip("/")
        with contextlib.suppress(NotFoundError):  # left by a start that failed half-way
            self._call("remove", f"{where}: remove writer", lambda: api.remove_container(writer, force=True))
        host_config = api.create_host_config(
            mounts=[Mount(target=_FILES_AT, source=volume, type="volume", no_copy=True)], network_mode="none")
        self._call("create", f"{where}: create writer", lambda: api.create_container(
            image=w.image, name=writer, entrypoint=[_FILES_AT + "/none"], labels=owned, host_config=host_config))
        try:
            archive = _files_archive(w.files)
            self._call("put archive", f"{where}: write", lambda: api.put_archive(writer, _FILES_AT, archive))
        finally:
            with contextlib.suppress(NotFoundError):
                self._call("remove", f"{where}: remove writer", lambda: api.remove_container(writer, force=True))
        logger.info("copied mounts to the node", extra={"node": node.instance_id, "replica": name,
                                                        "mounts": [f.dest for f in w.files]})
        return {f"{mountpoint}/{i}/{_top(f)}": {"bind": f.dest, "mode": "ro"} for i, f in enumerate(w.files)}

    # ------------------------------------------------------------------ helpers

    def _inspect(self, api: docker.APIClient, ref: str, where: str) -> dict[str, Any] | None:
        try:
            return dict(self._call("inspect", where, lambda: api.inspect_container(ref)))
        except NotFoundError:
            return None

    def _auth_for(self, image: str) -> dict[str, str] | None:
        creds = self._registry_auth() if callable(self._registry_auth) else self._registry_auth
        if not creds:
            return None
        host = image.split("/", 1)[0]
        pair = creds.get(host)
        return {"username": pair[0], "password": pair[1]} if pair else None

    def _pull(self, api: docker.APIClient, node: Node, image: str) -> float | None:
        """Pull by digest unless present (a digest names immutable content, so present means identical);
        the seconds the pull took, None when the node had the image. The registry credential travels with
        the pull (X-Registry-Auth) and is never stored on the node."""
        where = f"node {node.instance_id}: pull {image}"
        if "@sha256:" not in image:
            raise PermanentError(f"{where}: replicas run by digest only (repo@sha256:...)")
        try:
            self._call("inspect image", where, lambda: api.inspect_image(image))
            return None
        except NotFoundError:
            pass
        repo, _, digest = image.partition("@")
        started = time.monotonic()

        def pull() -> None:
            for event in api.pull(repo, tag=digest, auth_config=self._auth_for(image), stream=True, decode=True):
                if isinstance(event, dict) and event.get("error"):
                    raise docker.errors.APIError(str(event["error"]), explanation=str(event["error"]))

        self._call("pull", where, pull)
        seconds = time.monotonic() - started
        logger.info("pulled image", extra={"node": node.instance_id, "image": image, "seconds": round(seconds, 2)})
        return seconds

    def _free_port(self, api: docker.APIClient, node: Node, service_port: int) -> int:
        """The lowest host port from ``service_port`` up not published by another replica on this node."""
        used: set[int] = set()
        filters = {"label": [f"{LABEL_NODE}={node.instance_id}"]}
        for summary in self._call("list", f"node {node.instance_id}: list ports",
                                  lambda: api.containers(all=True, filters=filters)):
            info = self._inspect(api, summary["Id"], "ports")
            for bindings in ((info or {}).get("HostConfig") or {}).get("PortBindings", {}).values():
                for b in bindings or ():
                    if b.get("HostIp") == node.address and b.get("HostPort"):
                        used.add(int(b["HostPort"]))
        for port in range(service_port, service_port + _PORT_SPAN):
            if port not in used:
                return port
        raise PermanentError(f"node {node.instance_id}: no free host port in "
                             f"{service_port}..{service_port + _PORT_SPAN - 1}")

    @staticmethod
    def _container_config(api: docker.APIClient, node: Node, w: WorkloadSpec, name: str,
                          labels: dict[str, str], host_port: int,
                          binds: dict[str, dict[str, str]]) -> dict[str, Any]:
        service = f"{w.service_port}/tcp"
        host_config = api.create_host_config(
            port_bindings={service: (node.address, host_port)},
            mem_limit=w.mem_limit or None,
            nano_cpus=w.nano_cpus or None,
            restart_policy=dict(w.restart_policy) if w.restart_policy else None,
            log_config=dict(w.log_config) if w.log_config else None,
            tmpfs=dict(w.tmpfs) if w.tmpfs else None,
            binds=binds or None,
        )
        exposed = list(w.exposed_ports)
        if service not in exposed:
            exposed.append(service)
        return {
            "image": w.image,
            "name": name,
            "command": list(w.command) if w.command is not None else None,
            "entrypoint": list(w.entrypoint) if w.entrypoint is not None else None,
            # secret values travel to the node's engine here and nowhere else
            "environment": [f"{k}={v}" for k, v in w.env.items()],
            "labels": {**w.labels, **labels, LABEL_NODE: node.instance_id,
                       **({LABEL_FILES: f"{name}-files"} if binds else {})},
            "user": w.user or "",
            "working_dir": w.working_dir,
            "healthcheck": dict(w.healthcheck) if w.healthcheck else None,
            "stop_signal": w.stop_signal,
            "ports": [(int(p.split("/")[0]), p.split("/")[1]) if "/" in p else int(p) for p in exposed],
            "host_config": host_config,
        }

    @staticmethod
    def _container(node: Node, info: Mapping[str, Any], service_port: int | None) -> Container:
        state = info.get("State") or {}
        labels = dict((info.get("Config") or {}).get("Labels") or {})
        address, port = node.address, 0
        for container_port, bindings in ((info.get("HostConfig") or {}).get("PortBindings") or {}).items():
            if service_port is not None and container_port != f"{service_port}/tcp":
                continue
            for b in bindings or ():
                if b.get("HostPort"):
                    address, port = b.get("HostIp") or node.address, int(b["HostPort"])
                    break
            if port:
                break
        return Container(
            id=str(info["Id"]),
            name=str(info.get("Name", "")).lstrip("/"),
            node_id=labels.get(LABEL_NODE, node.instance_id),
            state=str(state.get("Status", "unknown")),
            health=(state.get("Health") or {}).get("Status"),
            labels=labels,
            address=address,
            port=port,
        )


def _top(files: CopiedFiles) -> str:
    """The archive's one top-level entry: the last element of the mount's destination."""
    return files.dest.rstrip("/").rsplit("/", 1)[-1]


def _files_archive(files: tuple[CopiedFiles, ...]) -> bytes:
    """One tar of every copied mount, the i-th under ``i/`` (two mounts may end in the same name)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:", format=tarfile.PAX_FORMAT) as dst:
        for i, files_i in enumerate(files):
            folder = tarfile.TarInfo(str(i))
            folder.type, folder.mode = tarfile.DIRTYPE, 0o755
            dst.addfile(folder)
            with tarfile.open(fileobj=io.BytesIO(files_i.archive), mode="r:") as src:
                for member in src:
                    content = src.extractfile(member) if member.isfile() else None
                    member.name = f"{i}/{member.name}"
                    if member.islnk():  # a hard link names another entry of the same archive
                        member.linkname = f"{i}/{member.linkname}"
                    dst.addfile(member, content)
    return out.getvalue()
