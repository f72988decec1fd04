"""The state-database form of a WorkloadSpec: secret values encrypted under the state directory's key."""

from __future__ import annotations

import os

import pytest

from adapters.speccodec import SpecCodec
from controller.errors import IntegrityError, PermanentError
from controller.ports import WorkloadSpec
from controller.specs import with_hash

SECRET = "p4ss-w0rd-value"


def _spec() -> WorkloadSpec:
    return with_hash(WorkloadSpec(
        image="127.0.0.1:5000/web@sha256:" + "a" * 64, entrypoint=("/bin/sh", "-c"), command=("exec httpd",),
        env={"PATH": "/bin", "DB_PASSWORD": SECRET, "VERSION": "3"}, secret_env=frozenset({"DB_PASSWORD"}),
        service_port=8080, exposed_ports=("8080/tcp",), labels={"app": "web"}, user="nobody",
        healthcheck={"Test": ["CMD", "true"], "Interval": 1_000_000_000}, mem_limit=64 << 20,
        nano_cpus=500_000_000, restart_policy={"Name": "always", "MaximumRetryCount": 0},
        log_config={"Type": "json-file", "Config": {"max-size": "1m"}}, stop_signal="SIGQUIT",
        tmpfs={"/cache": "size=1m"}))


def test_round_trip_without_plain_secrets(tmp_path):
    codec = SpecCodec.in_state_dir(tmp_path)
    spec = _spec()
    text = codec.dumps(spec)
    assert SECRET not in text and '"VERSION": "3"' in text
    assert codec.loads(text) == spec
    key = tmp_path / "secrets" / "workload-spec.key"
    assert key.stat().st_mode & 0o777 == 0o600 and (tmp_path / "secrets").stat().st_mode & 0o777 == 0o700
    # another codec on the same state dir reads it (the daemon after a restart)
    assert SpecCodec.in_state_dir(tmp_path).loads(text) == spec


def test_wrong_key_or_altered_text_is_an_integrity_error(tmp_path):
    text = SpecCodec(tmp_path / "a.key").dumps(_spec())
    with pytest.raises(IntegrityError, match="DB_PASSWORD"):
        SpecCodec(tmp_path / "b.key").loads(text)
    with pytest.raises(IntegrityError, match="spec_hash"):
        SpecCodec(tmp_path / "a.key").loads(text.replace('"VERSION": "3"', '"VERSION": "4"'))


def test_a_key_readable_by_others_is_refused(tmp_path):
    codec = SpecCodec(tmp_path / "k.key")
    codec.dumps(_spec())
    os.chmod(tmp_path / "k.key", 0o644)
    with pytest.raises(PermanentError, match="chmod 600"):
        SpecCodec(tmp_path / "k.key").dumps(_spec())


def test_no_secrets_needs_no_key(tmp_path):
    spec = with_hash(WorkloadSpec(image="r/web@sha256:" + "b" * 64, env={"A": "1"}))
    codec = SpecCodec(tmp_path / "never.key")
    assert codec.loads(codec.dumps(spec)) == spec and not (tmp_path / "never.key").exists()
