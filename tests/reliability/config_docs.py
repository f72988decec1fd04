"""Generated controller configs for fuzzing ``controller.config.load_config_text`` (tests/reliability/
test_bad_input.py, bench/reliability.py): the shipped deploy/controller.yaml and a lab-like config, broken
the ways people and tools break YAML (the policy fuzzer's text and structure mutations, reused from
tests/support/policy_docs.py, plus config-specific values), and the promise every result must keep."""

from __future__ import annotations

import random
import re
from functools import cache
from typing import Any

from ruamel.yaml import YAML

from controller.config import ControllerConfig, load_config_text
from controller.errors import ConfigError
from controller.service import forget_secrets
from tests.support.policy_docs import ROOT, dump, mutate_data, mutate_text

__all__ = ["SEEDS", "check_config", "generated_config"]

_LAB = """\
controller_id: lab-abc123
state:
  url: sqlite:////tmp/lab/state.db
state_dir: /var/lib/burst-controller-dev
status:
  listen: 127.0.0.1:9180
  token: s3cret-status-token-value
policies_dir: /tmp/lab/policies
onprem:
  docker_hosts: ["unix:///var/run/docker.sock", "tcp://10.0.0.5:2376"]
  docker_tls: {ca: /etc/b/ca.pem, cert: /etc/b/cert.pem, key: /etc/b/key.pem}
  registry: 127.0.0.1:5001
cloud:
  region: cn-hangzhou
  endpoint: http://127.0.0.1:9300
  credentials: {source: file, path: /etc/burst-controller/ecs.credentials}
  node_docker_endpoint: "tcp://{private_ip}:2376"
cloud_registry:
  url: 127.0.0.1:5002
  insecure: true
  auth: {type: basic, username: burst, password_file: /etc/burst-controller/registry.password}
intervals: {sample: 0.5s, evaluate: 1s, step: 0.5s, reconcile: 3s, replicate: 60s, gc: 60s}
timeouts: {launch: 30s, boot: 30s, start: 30s}
ha: {enabled: false}
orphan_grace: 20s
log_format: json
log_level: DEBUG
"""
SEEDS = [(ROOT / "deploy" / "controller.yaml").read_text(), _LAB]
_VALUES: list[Any] = [
    "0.0.0.0:9180", "[::1]:9180", "127.0.0.1:99999", "localhost", ":80", "sqlite://", "postgresql+psycopg://u:pw@h/d",
    "mysql://x", "http://", "tcp://{private_ip}", "tcp://{nope}:2376", "{", "env", "file", "ram_role", "acr", "basic",
    "5s", "-5s", "0s", "1e9s", "90", "forever", "text", "json", "TRACE", "ab", "a" * 100, "UPPER_ID", "--x", -1, 0,
    2**63, 1.5, True, None, [], {}, ["unix:///x"], {"source": "file"}, {"type": "basic", "username": "u"},
]
_TOKEN = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): \S")


@cache
def seed_data() -> list[Any]:
    yaml = YAML(typ="safe", pure=True)
    return [yaml.load(text) for text in SEEDS]


def _mutate_config(data: Any, rng: random.Random) -> Any:
    data = mutate_data(data, rng)
    if isinstance(data, dict) and rng.random() < 0.5:  # a config-specific wrong value somewhere known
        section = rng.choice(["status", "state", "cloud", "cloud_registry", "intervals", "onprem", "timeouts", "ha"])
        inner = data.get(section)
        if isinstance(inner, dict) and inner:
            inner[rng.choice([*inner, "token", "listen", "url", "auth", "credentials"])] = rng.choice(_VALUES)
        else:
            data[section] = rng.choice(_VALUES)
    return data


def generated_config(rng: random.Random) -> str:
    kind = rng.randrange(10)
    if kind < 4:
        return mutate_text(rng.choice(SEEDS), rng)
    if kind < 9:
        return dump(_mutate_config(rng.choice(seed_data()), rng))
    return "".join(rng.choice(":-[]{}#&*!|>'\"%@`,? \t\nabc019") for _ in range(rng.randint(0, 200)))


def _token_of(text: str) -> str | None:
    """The inline status token of a document, when there is one (it must never show in a problem)."""
    try:
        data = YAML(typ="safe", pure=True).load(text)
    except Exception:  # noqa: BLE001 - unparsable documents carry no token we could name
        return None
    status = data.get("status") if isinstance(data, dict) else None
    token = status.get("token") if isinstance(status, dict) else None
    return str(token) if isinstance(token, (str, int)) and not isinstance(token, bool) and len(str(token)) >= 8 \
        else None


def check_config(text: str, filename: str = "fuzz.yaml") -> str:
    """Load ``text``; any exception other than ConfigError, or a problem that is not FILE:LINE:COL: ...
    inside the document, fails. Returns "valid" or "rejected"."""
    lines = text.count("\n") + 2
    try:
        try:
            cfg = load_config_text(text, filename)
        except ConfigError as exc:
            assert exc.problems, f"ConfigError without problems: {exc}"
            token = _token_of(text)
            for problem in exc.problems:
                m = _TOKEN.match(problem)
                assert m and m["file"] == filename, f"not FILE:LINE:COL: {problem!r}"
                assert 1 <= int(m["line"]) <= lines and int(m["col"]) >= 1, problem
                assert "Traceback" not in problem and "\n" not in problem.rstrip("\n"), problem
                assert token is None or token not in problem, f"the status token shows in {problem!r}"
            return "rejected"
        assert isinstance(cfg, ControllerConfig)
        return "valid"
    finally:
        forget_secrets()  # each document registers its own; keep the redaction list from growing
