"""controller.yaml: the example config loads, and every kind of mistake is reported at its exact
FILE:LINE:COL; secret files readable by others are refused; secrets never show in error lines."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controller.config import load_config, load_config_text, parse_listen
from controller.errors import ConfigError
from controller.secret_files import cloud_credentials, read_secret_file, registry_password, status_token
from controller.service import forget_secrets, redact

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_secrets_between_tests() -> None:
    forget_secrets()


def problems(text: str, name: str = "/etc/burst-controller/controller.yaml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, name)
    return info.value.problems


def test_example_config_loads_with_the_contract_fields() -> None:
    cfg = load_config(REPO / "deploy" / "controller.yaml")
    assert cfg.controller_id == "dc1-burst"
    assert cfg.state.url == "sqlite:////var/lib/burst-controller/state.db"
    assert cfg.status.listen == "127.0.0.1:9180" and cfg.status.url == "http://127.0.0.1:9180"
    assert cfg.status.token_file == "/etc/burst-controller/status.token"
    assert cfg.policies_dir == "/etc/burst-controller/policies.d"
    assert cfg.onprem.docker_hosts == ("unix:///var/run/docker.sock",)
    assert cfg.cloud.region == "cn-hangzhou" and cfg.cloud.endpoint is None
    assert cfg.cloud.credentials.source == "env"
    assert cfg.intervals.sample == 15.0 and cfg.intervals.replicate == 300.0 and cfg.orphan_grace == 600.0
    assert cfg.log_format == "text"


def test_minimal_config_gets_defaults() -> None:
    cfg = load_config_text("controller_id: edge-1\n")
    assert cfg.cloud.node_networks == ()  # no bootstrap user data unless the VSwitch networks are named
    cfg = load_config_text("controller_id: edge-1\ncloud:\n  node_networks: [10.0.1.0/24, 'fd00:1::/120']\n")
    assert cfg.cloud.node_networks == ("10.0.1.0/24", "fd00:1::/120")
    assert cfg.status.listen == "127.0.0.1:9180"  # loopback unless configured otherwise
    assert cfg.intervals.evaluate == 30.0 and cfg.timeouts.boot == 600.0


BAD = """\
controller_id: DC1
state:
  url: mysql://db/x
status:
  listen: 0.0.0.0:99999
  tokn: abc
cloud:
  credentials: {source: file}
  endpoint: ftp://x
cloud_registry:
  auth: {type: basc}
intervals: {sample: 0s, gc: fast}
log_format: xml
onprem:
  docker_hosts: [/var/run/docker.sock]
"""


def test_every_problem_at_its_line_and_column() -> None:
    f = "/etc/burst-controller/controller.yaml"
    got = problems(BAD)
    assert got == [
        (f"{f}:1:16: controller_id: 'DC1' is not a valid controller id: 1 to 32 lowercase letters, digits and "
        "dashes (not at the start or end); it is written into every ECS tag and container label"),
        (f"{f}:3:8: state.url: 'mysql://db/x' is not a state database URL: use "
        "sqlite:////var/lib/burst-controller/state.db or postgresql+psycopg://user:password@host/dbname"),
        f"{f}:5:11: status.listen: '0.0.0.0:99999': the port must be a number from 1 to 65535",
        f"{f}:6:3: status.tokn: unknown field 'tokn'; did you mean 'token'?",
        f"{f}:8:3: cloud.credentials.path: required field 'path' is missing",
        f"{f}:9:13: cloud.endpoint: 'ftp://x' is not an http(s) URL: write it like http://127.0.0.1:9090",
        f"{f}:11:9: cloud_registry.auth: unknown type 'basc': expected one of none, basic, acr; did you mean 'basic'?",
        f"{f}:12:21: intervals.sample: must be greater than 0, got '0s'",
        (f"{f}:12:29: intervals.gc: 'fast' is not a duration: use a number with a unit, like 90s, 5m, 1h30m "
        "(units ms, s, m, h, d, w)"),
        f"{f}:13:13: log_format: expected one of text, json; got 'xml'",
        f"{f}:15:18: onprem.docker_hosts[0]: '/var/run/docker.sock' needs a scheme: write unix:///var/run/docker.sock",
    ]


@pytest.mark.parametrize(("text", "expected"), [
    ("", "c.yaml:1:1: the file is empty"),
    ("- a\n- b\n", "c.yaml:1:1: the controller config is a mapping"),
    ("controller_id: x\n  bad: indent\n", "c.yaml:2:6: YAML syntax error"),
    ("controller_id: x\ncontroller_id: y\n", "c.yaml:2:1: controller_id: duplicate key 'controller_id'"),
    ("controller_id: x\n---\nstate: {}\n", "c.yaml:2:1: the controller config is one YAML document"),
    ("state: {}\n", "c.yaml:1:1: controller_id: required field 'controller_id' is missing"),
    ("controller_id: x\nstate_dir: var/lib\n", "c.yaml:2:12: state_dir: 'var/lib' must be an absolute path"),
    ("controller_id: x\ncloud: {node_docker_endpoint: 'tcp://{ip}:2376'}\n",
     "c.yaml:2:31: cloud.node_docker_endpoint: 'tcp://{ip}:2376': unknown placeholder {ip}"),
    ("controller_id: x\ncloud: {node_networks: [10.0.1.0/24, 10.0.2.7/24]}\n",
     "c.yaml:2:38: cloud.node_networks[1]: '10.0.2.7/24' has host bits set: did you mean 10.0.2.0/24?"),
    ("controller_id: x\ncloud: {node_networks: [vsw-abc]}\n",
     "c.yaml:2:25: cloud.node_networks[0]: 'vsw-abc' is not a network in CIDR notation"),
    ("controller_id: x\ncloud: {node_networks: [10.0.1.5]}\n",
     "c.yaml:2:25: cloud.node_networks[0]: '10.0.1.5' is an address, not a network"),
    ("controller_id: x\nstatus: {listen: 'example.com:80'}\n",
     "c.yaml:2:18: status.listen: 'example.com:80': listen on an IP address"),
    ("controller_id: x\nstatus: {allowed_hosts: [ok.example.net, '*.example.net']}\n",
     "c.yaml:2:42: status.allowed_hosts[1]: '*.example.net' is not a host name: write the bare name"),
    ("controller_id: x\nstatus: {allowed_hosts: ['status.example.net:9180']}\n",
     "c.yaml:2:26: status.allowed_hosts[0]: 'status.example.net:9180' is not a host name"),
    ("controller_id: x\nstatus: {allowed_hosts: [bad_name.example]}\n",
     "c.yaml:2:26: status.allowed_hosts[0]: 'bad_name.example' is not a DNS name"),
])
def test_single_mistakes(text: str, expected: str) -> None:
    got = problems(text, "c.yaml")
    assert got[0].startswith(expected), got


def test_allowed_hosts_are_normalised() -> None:
    got = load_config_text("controller_id: x\nstatus: {allowed_hosts: [Status.Example.NET., '[::1]', 10.0.0.5]}\n")
    assert got.status.allowed_hosts == ("status.example.net", "::1", "10.0.0.5")


def test_secrets_never_appear_in_problems() -> None:
    text = ("controller_id: x\nstate: {url: 'postgresql://burst:S3cretPassw0rd@:5432/burst'}\n"
            "status: {token: 1234567890123}\n")
    got = "\n".join(problems(text, "c.yaml"))
    assert "S3cretPassw0rd" not in got and "1234567890123" not in got
    assert "c.yaml:2:14: state.url: 'postgresql://burst:***@:5432/burst' names no database host" in got


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert info.value.problems == [f"{tmp_path / 'nope.yaml'}: no such file (pass --config PATH)"]
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"controller_id: caf\xe9\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(bad)


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9180") == ("127.0.0.1", 9180)
    assert parse_listen("[::1]:9180") == ("::1", 9180)
    for bad in ("9180", ":9180", "127.0.0.1:0", "127.0.0.1:x"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def _secret(path: Path, text: str, mode: int = 0o600) -> str:
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_secret_files_must_be_private(tmp_path: Path) -> None:
    token = _secret(tmp_path / "status.token", "tok-0123456789abcdef\n")
    assert read_secret_file(token, "status token") == "tok-0123456789abcdef"
    assert redact("Bearer tok-0123456789abcdef") == "Bearer ***"  # registered for redaction
    os.chmod(token, 0o644)
    with pytest.raises(ConfigError) as info:
        read_secret_file(token, "status token")
    assert info.value.problems == [
        f"{token}: the status token file is accessible by other users (mode 0644); run: chmod 600 {token}"]
    os.chmod(token, 0o620)
    with pytest.raises(ConfigError, match="accessible by other users"):
        read_secret_file(token, "status token")
    with pytest.raises(ConfigError, match="not found"):
        read_secret_file(str(tmp_path / "missing"), "status token")
    empty = _secret(tmp_path / "empty", "\n")
    with pytest.raises(ConfigError, match="is empty"):
        read_secret_file(empty, "status token")


def test_systemd_credentials_directory_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    _secret(creds / "status.token", "from-systemd-credential-0123")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    # the configured path does not exist for the service's dynamic user: LoadCredential handed it over
    cfg = load_config_text("controller_id: x\nstatus: {token_file: /etc/burst-controller/status.token}\n")
    assert status_token(cfg) == "from-systemd-credential-0123"


def test_cloud_credentials_and_registry_password(tmp_path: Path) -> None:
    env_cfg = load_config_text("controller_id: x\n")
    with pytest.raises(ConfigError, match="ALIBABA_CLOUD_ACCESS_KEY_ID"):
        cloud_credentials(env_cfg, environ={})
    assert cloud_credentials(env_cfg, environ={"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAIid",
                                               "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "envSecretValue123"}) == (
        "LTAIid", "envSecretValue123")
    assert redact("secret=envSecretValue123") == "secret=***"
    creds = _secret(tmp_path / "ak", "# Alibaba Cloud\naccess_key_id = LTAIfile\naccess_key_secret = 'fileSecret456'\n")
    pw = _secret(tmp_path / "pw", "registryPassw0rd\n")
    cfg = load_config_text(f"controller_id: x\ncloud: {{credentials: {{source: file, path: {creds}}}}}\n"
                           f"cloud_registry: {{auth: {{type: basic, username: u, password_file: {pw}}}}}\n")
    assert cloud_credentials(cfg) == ("LTAIfile", "fileSecret456")
    assert registry_password(cfg) == "registryPassw0rd"
    assert redact("fileSecret456 registryPassw0rd") == "*** ***"
    os.chmod(creds, 0o640)
    with pytest.raises(ConfigError, match="accessible by other users"):
        cloud_credentials(cfg)
    role = load_config_text("controller_id: x\ncloud: {credentials: {source: ram_role, role_name: burst}}\n")
    assert cloud_credentials(role) is None
