"""Workload capture on the real Docker Engine, and a replica started from the captured spec on an
emulated node (the local engine's mutual-TLS endpoint, published on the node's own 127.0.1.x address)."""

from __future__ import annotations

import json
import logging
import tempfile
import uuid
from pathlib import Path

import docker
import httpx
import pytest

from adapters.docker_engine.workload import (
    MAX_COPIED_BYTES,
    DockerWorkloadCapture,
    WorkloadDivergedError,
    WorkloadSelection,
)
from controller.errors import NotFoundError, NotPortableError
from controller.ports import LABEL_CONTROLLER, LABEL_NODE, LABEL_POLICY, LABEL_REPLICA
from controller.specs import canonical, secret_texts, spec_diff, spec_hash
from tests.conftest import DOCKER_HOST
from tests.fixtures_replicas import HTTPD_SCRIPT, TEST_LABEL, replica_labels
from tests.support.net import free_port

OURS = {LABEL_CONTROLLER, LABEL_POLICY, LABEL_REPLICA, LABEL_NODE}
SECRET = "s3cr3t-" + uuid.uuid4().hex


def _rich_workload(onprem, image: str, app: str, data_dir: str, **overrides):
    kwargs = dict(  # noqa: C408 - reads like the docker run options it mirrors
        entrypoint=["/bin/sh", "-c"],
        command=[HTTPD_SCRIPT],
        environment={"VERSION": "1", "API_TOKEN": SECRET, "EMPTY": ""},
        ports={"80/tcp": ("127.0.0.1", free_port()), "9100/tcp": None},
        labels={"app": app, "tier": "front"},
        user="0",
        working_dir="/www",
        healthcheck={"test": ["CMD", "wget", "-q", "-O-", "http://127.0.0.1/healthz"], "interval": 1_000_000_000,
                     "timeout": 1_000_000_000, "retries": 3, "start_period": 0},
        mem_limit="64m",
        nano_cpus=500_000_000,
        restart_policy={"Name": "on-failure", "MaximumRetryCount": 2},
        log_config=docker.types.LogConfig(type="json-file", config={"max-size": "1m", "max-file": "2"}),
        stop_signal="SIGQUIT",
        tmpfs={"/cache": "size=1m"},
        volumes={data_dir: {"bind": "/data", "mode": "ro"}},
    )
    kwargs.update(overrides)
    return onprem(image, **kwargs)


def _selection(app: str, **kw) -> WorkloadSelection:
    base = {"hosts": (DOCKER_HOST,), "selector": {"app": app}, "service_port": 80,
            "mounts": {"/data": "drop"}, "secret_env": frozenset({"API_TOKEN"}), "policy": "web"}
    base.update(kw)
    return WorkloadSelection(**base)


def test_capture_and_identical_replica(docker_client, onprem, pushed_busybox, nodes, node_runtime, run_id, caplog):
    caplog.set_level(logging.DEBUG)
    app = f"web-{run_id}"
    with tempfile.TemporaryDirectory() as data:
        original = _rich_workload(onprem, pushed_busybox, app, data)
        capture = DockerWorkloadCapture()
        spec = capture.capture(_selection(app))
        capture.close()

    assert "@sha256:" in spec.image and spec.image.startswith(pushed_busybox.rsplit(":", 1)[0])
    assert spec.secret_env == frozenset({"API_TOKEN"}) and spec.env["API_TOKEN"] == SECRET
    assert SECRET not in repr(spec) and spec.spec_hash == spec_hash(spec)
    assert spec.tmpfs == {"/cache": "size=1m"}  # the bind mount to /data was dropped, as the policy says

    node = nodes(1)[0]
    replica = node_runtime.start(node, spec, f"ctl-test-web-{run_id}", replica_labels(run_id))
    assert replica.address == node.address and replica.port == 80 and replica.state == "running"

    a = original.client.api.inspect_container(original.id)
    b = node_runtime.inspect(node, replica.id)
    ca, cb, ha, hb = a["Config"], b["Config"], a["HostConfig"], b["HostConfig"]
    assert b["Image"] == a["Image"]  # same image id: same digest
    for key in ("Cmd", "Entrypoint", "Env", "ExposedPorts", "User", "WorkingDir", "Healthcheck", "StopSignal"):
        assert cb[key] == ca[key], key
    assert {k: v for k, v in cb["Labels"].items() if k not in OURS} == ca["Labels"]
    assert cb["Labels"][LABEL_NODE] == node.instance_id
    for key in ("Memory", "NanoCpus", "RestartPolicy", "LogConfig", "Tmpfs"):
        assert hb[key] == ha[key], key
    assert [m["Destination"] for m in b["Mounts"] if m["Type"] == "bind"] == []
    assert hb["PortBindings"] == {"80/tcp": [{"HostIp": node.address, "HostPort": "80"}]}

    # it serves on the node's own address
    body = httpx.get(f"http://{node.address}:80/healthz", timeout=5, trust_env=False).text
    assert body.strip() == "ok"
    # secrets never reached the log
    assert SECRET not in caplog.text

    # idempotent by name: the same container comes back
    again = node_runtime.start(node, spec, f"ctl-test-web-{run_id}", replica_labels(run_id))
    assert again.id == replica.id


def test_unmapped_bind_mount_is_refused(onprem, pushed_busybox, run_id):
    app = f"web-{run_id}"
    with tempfile.TemporaryDirectory() as data:
        c = _rich_workload(onprem, pushed_busybox, app, data)
        with pytest.raises(NotPortableError) as err:
            DockerWorkloadCapture().capture(_selection(app, mounts={}))
    text = str(err.value)
    assert c.name in text and "/data" in text and data in text and "workload.mounts" in text


def test_named_volume_mapped_to_tmpfs(docker_client, onprem, pushed_busybox, run_id):
    app = f"web-{run_id}"
    volume = f"replicas-test-{run_id}"
    try:
        onprem(pushed_busybox, command=["sleep", "300"], labels={"app": app},
               volumes={volume: {"bind": "/state", "mode": "rw"}})
        with pytest.raises(NotPortableError, match=f"volume mount {volume} -> /state"):
            DockerWorkloadCapture().capture(_selection(app, mounts={}))
        spec = DockerWorkloadCapture().capture(_selection(app, mounts={"/state": "tmpfs"}))
        assert spec.tmpfs == {"/state": ""}
    finally:
        for c in docker_client.containers.list(all=True, filters={"label": f"{TEST_LABEL}.run={run_id}"}):
            c.remove(force=True)
        docker_client.volumes.get(volume).remove(force=True)


def test_local_only_image_needs_an_injected_digest(docker_client, onprem, busybox_image, pushed_busybox, run_id):
    # an image committed locally and never pushed: no RepoDigests
    base = onprem(busybox_image, command=["sleep", "300"])
    local = base.commit(repository=f"local/replicas-unpushed-{run_id}", tag="1")
    try:
        app = f"web-{run_id}"
        onprem(local.id, command=["sleep", "300"], labels={"app": app})
        with pytest.raises(NotPortableError, match="never pushed"):
            DockerWorkloadCapture().capture(_selection(app))
        # the registry step pushed it elsewhere and recorded the digest: capture accepts it
        injected = "127.0.0.1:5999/team/web@sha256:" + "a" * 64
        spec = DockerWorkloadCapture().capture(_selection(app), image=injected)
        assert spec.image == injected
        source = DockerWorkloadCapture().image_source(_selection(app))
        assert source.repo_digests == () and source.image_id == local.id
    finally:
        for c in docker_client.containers.list(all=True, filters={"label": f"{TEST_LABEL}.run={run_id}"}):
            c.remove(force=True)
        docker_client.images.remove(local.id, force=True)


def test_containers_must_agree(onprem, pushed_busybox, run_id):
    app = f"web-{run_id}"
    onprem(pushed_busybox, command=["sleep", "300"], labels={"app": app}, environment={"VERSION": "1", "API_TOKEN": "a"})
    onprem(pushed_busybox, command=["sleep", "300"], labels={"app": app}, environment={"VERSION": "1", "API_TOKEN": "a"})
    spec = DockerWorkloadCapture().capture(_selection(app))
    assert spec.env["VERSION"] == "1"
    odd = onprem(pushed_busybox, command=["sleep", "300"], labels={"app": app},
                 environment={"VERSION": "2", "API_TOKEN": "b"})
    with pytest.raises(WorkloadDivergedError) as err:
        DockerWorkloadCapture().capture(_selection(app))
    # compared with the first by name: either the odd one differs, or (when it sorts first) both others do
    diffs = err.value.differences
    assert len(diffs) in (1, 2) and odd.name in str(err.value)
    assert all(fields == ["env.API_TOKEN", "env.VERSION"] for fields in diffs.values())
    assert "b" not in str(err.value).split("differs in")[-1].replace("env.API_TOKEN", "")


def test_selection_by_name_and_nothing_found(onprem, pushed_busybox, run_id):
    c = onprem(pushed_busybox, command=["sleep", "300"])
    spec = DockerWorkloadCapture().capture(_selection("", selector={}, names=(c.name,)))
    assert spec.command == ("sleep", "300")
    with pytest.raises(NotFoundError, match="no running container"):
        DockerWorkloadCapture().capture(_selection(f"nothing-{run_id}"))


def test_spec_hash_tracks_drift_but_not_the_repository():
    from dataclasses import replace

    from controller.ports import WorkloadSpec

    a = WorkloadSpec(image="10.0.0.1:5000/web@sha256:" + "1" * 64, env={"V": "1", "K": "x"},
                     secret_env=frozenset({"K"}))
    moved = replace(a, image="registry.cn-hangzhou.aliyuncs.com/team/web@sha256:" + "1" * 64)
    assert spec_hash(moved) == spec_hash(a)
    assert spec_hash(replace(a, env={"V": "2", "K": "x"})) != spec_hash(a)
    assert spec_hash(replace(a, env={"V": "1", "K": "y"})) != spec_hash(a)  # a rotated secret is drift too
    assert spec_diff(a, replace(a, env={"V": "1", "K": "y"})) == ["env.K"]


# --------------------------------------------------------------------------- copied mounts (workload.mounts: copy)

SECRET_LINE = "db_password=" + uuid.uuid4().hex


def _config_tree(root: Path) -> dict[str, Path]:
    """A config file, a config directory, and a secret file of the same name as the config file."""
    (root / "conf.d").mkdir()
    (root / "conf.d" / "a.conf").write_text("alpha=1\n")
    (root / "conf.d" / "b.conf").write_text("beta=2\n")
    (root / "config.txt").write_text("config=ON-PREM-1\n")
    (root / "secret").mkdir()
    (root / "secret" / "config.txt").write_text(f"[db]\n{SECRET_LINE}\n")
    (root / "secret" / "config.txt").chmod(0o600)
    return {"/www/config.txt": root / "config.txt", "/www/conf.d": root / "conf.d",
            "/www/private/config.txt": root / "secret" / "config.txt"}


COPY_MOUNTS = {"/www/config.txt": "copy", "/www/conf.d": "copy", "/www/private/config.txt": "copy-secret"}


def _files_workload(onprem, image: str, app: str, binds: dict[str, Path], mode: str = "ro"):
    return onprem(image, entrypoint=["/bin/sh", "-c"], command=[HTTPD_SCRIPT], labels={"app": app},
                  volumes={str(src): {"bind": dest, "mode": mode} for dest, src in binds.items()})


def test_copied_mounts_travel_to_the_replica(docker_client, onprem, pushed_busybox, nodes, node_runtime, run_id,
                                             caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    app = f"web-{run_id}"
    binds = _config_tree(tmp_path)
    _files_workload(onprem, pushed_busybox, app, binds)
    capture = DockerWorkloadCapture()
    sel = _selection(app, mounts=COPY_MOUNTS)
    spec = capture.capture(sel)

    assert [(f.dest, f.secret) for f in spec.files] == [
        ("/www/conf.d", False), ("/www/config.txt", False), ("/www/private/config.txt", True)]
    assert SECRET_LINE not in repr(spec) and SECRET_LINE not in repr(spec.files)
    assert SECRET_LINE not in json.dumps(canonical(spec))  # what the hash is made of holds a keyed hash only
    assert SECRET_LINE in secret_texts(spec) and "[db]" not in secret_texts(spec)  # short lines are not

    node = nodes(1)[0]
    name = f"ctl-test-web-{run_id}"
    replica = node_runtime.start(node, spec, name, replica_labels(run_id))

    def get(path: str) -> str:
        return httpx.get(f"http://{node.address}:{replica.port}{path}", timeout=5, trust_env=False).text

    assert get("/config.txt") == "config=ON-PREM-1\n"
    assert get("/conf.d/a.conf") == "alpha=1\n" and get("/conf.d/b.conf") == "beta=2\n"
    mounts = {m["Destination"]: m for m in node_runtime.inspect(node, replica.id)["Mounts"]}
    assert sorted(d for d, m in mounts.items() if m["Type"] == "bind") == sorted(COPY_MOUNTS)
    assert not any(mounts[d]["RW"] for d in COPY_MOUNTS)  # read-only, as on-prem
    # the secret file keeps its on-prem mode (0600, owner root), readable by the workload's root user
    script = "stat -c %a /www/private/config.txt; cat /www/private/config.txt"
    exec_id = docker_client.api.exec_create(replica.id, ["sh", "-c", script])
    assert docker_client.api.exec_start(exec_id).decode() == f"600\n[db]\n{SECRET_LINE}\n"
    volume = f"{name}-files"
    assert docker_client.volumes.get(volume).attrs["Labels"][LABEL_NODE] == node.instance_id
    assert not docker_client.containers.list(all=True, filters={"name": f"{name}-files-writer"})

    # the content is part of the spec hash: a new mtime alone is not drift, an edit is
    binds["/www/config.txt"].touch()
    assert capture.capture(sel).spec_hash == spec.spec_hash
    binds["/www/config.txt"].write_text("config=ON-PREM-2\n")
    edited = capture.capture(sel)
    assert spec_diff(spec, edited) == ["files./www/config.txt.entries.config.txt"]
    binds["/www/private/config.txt"].write_text("db_password=rotated-value\n")
    assert spec_diff(edited, capture.capture(sel)) == ["files./www/private/config.txt.entries.config.txt"]
    capture.close()
    assert SECRET_LINE not in caplog.text and "rotated-value" not in caplog.text

    # removing the replica removes the volume of its copied mounts
    node_runtime.remove(node, replica.id)
    with pytest.raises(docker.errors.NotFound):
        docker_client.volumes.get(volume)


def test_secret_files_are_registered_for_redaction_when_captured(onprem, pushed_busybox, run_id, tmp_path):
    from types import SimpleNamespace

    from controller import service
    from controller.wiring import _DockerWorkloads

    app = f"web-{run_id}"
    binds = _config_tree(tmp_path)
    _files_workload(onprem, pushed_busybox, app, binds)
    policy = SimpleNamespace(name="web", workload=SimpleNamespace(
        hosts=(DOCKER_HOST,), selector={"app": app}, names=(), service_port=80, mounts=COPY_MOUNTS, secret_env=()))
    service.forget_secrets()
    try:
        assert service.redact(f"line {SECRET_LINE}") == f"line {SECRET_LINE}"
        workloads = _DockerWorkloads(DockerWorkloadCapture())
        spec = workloads.capture(policy, "127.0.0.1:5999/team/web@sha256:" + "a" * 64)
        assert len(spec.files) == 3
        assert service.redact(f"line {SECRET_LINE}") == "line ***"
        assert service.redact("config=ON-PREM-1") == "config=ON-PREM-1"  # not a secret file
    finally:
        service.forget_secrets()


def test_copied_mounts_over_the_size_limit_are_refused(onprem, pushed_busybox, run_id, tmp_path):
    app = f"web-{run_id}"
    (tmp_path / "small.conf").write_text("x" * (MAX_COPIED_BYTES // 2))
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "data.bin").write_bytes(b"\0" * (MAX_COPIED_BYTES // 2))  # the two together: too much
    binds = {"/etc/app/small.conf": tmp_path / "small.conf", "/etc/app/big": tmp_path / "big"}
    c = _files_workload(onprem, pushed_busybox, app, binds)
    with pytest.raises(NotPortableError) as err:
        DockerWorkloadCapture().capture(_selection(app, mounts={"/etc/app/small.conf": "copy",
                                                                 "/etc/app/big": "copy-secret"}))
    text = str(err.value)
    assert text.startswith('policy web: workload.mounts["/etc/app/small.conf"]: copy: ')
    assert c.name in text and "more than 1024 KiB" in text
    # each alone fits
    spec = DockerWorkloadCapture().capture(_selection(app, mounts={"/etc/app/small.conf": "copy",
                                                                    "/etc/app/big": "drop"}))
    assert [f.dest for f in spec.files] == ["/etc/app/small.conf"]


def test_copy_of_a_writable_mount_is_refused(onprem, pushed_busybox, run_id, tmp_path):
    app = f"web-{run_id}"
    (tmp_path / "app.conf").write_text("a=1\n")
    c = _files_workload(onprem, pushed_busybox, app, {"/etc/app.conf": tmp_path / "app.conf"}, mode="rw")
    with pytest.raises(NotPortableError) as err:
        DockerWorkloadCapture().capture(_selection(app, mounts={"/etc/app.conf": "copy"}))
    text = str(err.value)
    assert text.startswith('policy web: workload.mounts["/etc/app.conf"]: copy: ')
    assert c.name in text and "read-only" in text


def test_spec_hash_tracks_copied_files():
    import io
    import tarfile
    from dataclasses import replace

    from controller.ports import CopiedFiles, WorkloadSpec

    def archive(content: bytes, mtime: int = 1) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w:") as tar:
            info = tarfile.TarInfo("app.conf")
            info.size, info.mtime, info.mode = len(content), mtime, 0o644
            tar.addfile(info, io.BytesIO(content))
        return out.getvalue()

    a = WorkloadSpec(image="r/web@sha256:" + "1" * 64, files=(CopiedFiles("/etc/app.conf", archive(b"x=1\n")),))
    assert spec_hash(replace(a, files=(CopiedFiles("/etc/app.conf", archive(b"x=1\n", mtime=2)),))) == spec_hash(a)
    b = replace(a, files=(CopiedFiles("/etc/app.conf", archive(b"x=2\n")),))
    assert spec_hash(b) != spec_hash(a) and spec_diff(a, b) == ["files./etc/app.conf.entries.app.conf"]
    secret = replace(a, files=(CopiedFiles("/etc/app.conf", archive(b"x=1\n"), secret=True),))
    assert spec_hash(secret) != spec_hash(a)  # marking it secret is a change of the replica too
    assert "x=1" not in json.dumps(canonical(secret)) and "x=1" not in repr(secret)
