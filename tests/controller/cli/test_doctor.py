"""`burstctl doctor`, `burstctl config validate` and `burstctl --version` against real components: the ECS
emulator over the real SDK (RunInstances DryRun=true must answer DryRunOperation and create nothing), a real
HAProxy (at level admin, and one at level operator), a real registry, a CA made by `burstctl pki init`."""

from __future__ import annotations

from pathlib import Path

import pytest
from ruamel.yaml import YAML

from adapters.pki import CertificateAuthority
from controller import __version__
from controller.cli.main import main
from lab.emulator.ecs import EcsEmulator
from lab.localregistry import LocalRegistry
from tests.controller.fakes import policy_dict
from tests.fixtures_ecs import KEY_ID, KEY_SECRET
from tests.fixtures_haproxy import HaproxyProcess, start_haproxy


def _write(path: Path, data: object) -> None:
    with path.open("w") as fh:
        YAML().dump(data, fh)


@pytest.fixture
def setup(tmp_path: Path, ecs_emulator: EcsEmulator, dst_registry: LocalRegistry,
          haproxy: HaproxyProcess, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", KEY_SECRET)
    policies = tmp_path / "policies.d"
    policies.mkdir()
    policy = policy_dict("web")
    policy["traffic"] = {"haproxy": {"socket": str(haproxy.socket), "backend": "web"}}
    policy["registry"] = {"target": f"{dst_registry.address}/team/web"}
    policy["workload"]["hosts"] = [f"unix://{tmp_path}/no-docker.sock"]
    _write(policies / "web.yaml", policy)
    CertificateAuthority(tmp_path / "pki").client_files()
    cfg = tmp_path / "controller.yaml"
    _write(cfg, {"controller_id": "doc1", "state_dir": str(tmp_path), "pki_dir": str(tmp_path / "pki"),
                 "policies_dir": str(policies), "status": {"token": "doctor-token-0123456789"},
                 "onprem": {"docker_hosts": [f"unix://{tmp_path}/no-docker.sock"]},
                 "cloud": {"region": "cn-hangzhou", "endpoint": ecs_emulator.url},
                 "cloud_registry": {"url": dst_registry.address, "insecure": True}})
    return cfg


def _lines(out: str) -> dict[str, str]:
    """what -> its status word, from `STATUS what: detail` lines."""
    return {line[6:].split(": ", 1)[0]: line[:5].strip() for line in out.splitlines() if line[:5].strip() in
            ("ok", "FAIL", "warn")}


def test_doctor_one_line_per_check_and_non_zero_on_a_failure(
        setup: Path, tmp_path: Path, ecs_emulator: EcsEmulator, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BURSTCTL_CONFIG", str(setup))  # the one variable naming the config
    rc = main(["doctor"])
    out = capsys.readouterr().out
    status = _lines(out)
    assert status["policies"] == "ok"
    assert status[f"on-prem docker unix://{tmp_path}/no-docker.sock"] == "FAIL"  # nothing listens there
    haproxy_line = next(k for k in status if k.startswith("haproxy "))
    assert status[haproxy_line] == "ok" and "level admin" in out
    assert status[next(k for k in status if k.startswith("cloud registry "))] == "ok"
    assert status["ecs cn-hangzhou DescribeInstances"] == "ok"
    assert status["ecs cn-hangzhou RunInstances DryRun (web)"] == "ok" and "DryRun accepted" in out
    assert status["node networks"] == "ok"
    assert status[f"node CA {tmp_path / 'pki'}"] == "ok"
    assert rc == 1 and "1 check(s) failed" in out, out
    assert ecs_emulator.state.instances == {}  # the dry run created nothing

    # a readable CA key and a wrong secret: each its own FAIL line
    (tmp_path / "pki" / "ca-key.pem").chmod(0o644)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "wrong-secret")
    rc = main(["doctor"])
    out = capsys.readouterr().out
    status = _lines(out)
    assert status[f"node CA {tmp_path / 'pki'}"] == "FAIL" and "want 0600" in out
    assert status["ecs cn-hangzhou DescribeInstances"] == "FAIL"
    assert status["ecs cn-hangzhou RunInstances DryRun (web)"] == "FAIL"
    assert status[haproxy_line] == "ok"
    assert rc == 1


def test_doctor_refuses_a_socket_below_admin(tmp_path: Path) -> None:
    from adapters.preflight import haproxy_admin
    from controller.errors import PermanentError

    hp = start_haproxy(tmp_path)
    try:
        operator = tmp_path / "operator.sock"
        hp_cfg = hp.dir / "haproxy.cfg"
        hp_cfg.write_text(hp_cfg.read_text().replace(
            "expose-fd listeners", f"expose-fd listeners\n    stats socket {operator} mode 600 level operator"))
        hp.reload()
        assert "level admin" in haproxy_admin(str(hp.socket), "web")
        with pytest.raises(PermanentError, match="level operator, not admin"):
            haproxy_admin(str(operator), "web")
    finally:
        hp.stop()


def test_config_validate_and_version(setup: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "validate", "--config", str(setup)]) == 0
    assert "valid (controller_id doc1; 1 policy in" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("controller_id: doc1\nstate:\n  url: sqlite:////tmp/x.db\n   extra: 1\n")
    assert main(["config", "validate", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:4:" in err and "hint:" in err
    (tmp_path / "policies.d" / "broken.yaml").write_text("name: broken\n\tworkload: {}\n")
    assert main(["config", "validate", "--config", str(setup)]) == 2
    assert "broken.yaml:2:1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"burstctl {__version__}"
