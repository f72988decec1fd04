"""The controller's own configuration (``/etc/burst-controller/controller.yaml``): the model and its loader
with FILE:LINE:COL errors. The secret files it names are read by controller/secret_files.py.

Called by ``burstctl run`` (the daemon's wiring) and by the CLI commands that talk to a running controller.
"""

from __future__ import annotations

import ipaddress
import os
import re
import string
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from controller.errors import ConfigError
from controller.service import redact, register_secret
from policies.checks import DockerHost, HttpUrl, RegionId
from policies.loader import format_path
from policies.messages import locate_errors
from policies.units import Duration
from policies.yamltree import Document, Pos, parse_documents

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_PATH",
    "CloudConfig",
    "CloudRegistryConfig",
    "ControllerConfig",
    "HaConfig",
    "Intervals",
    "OnpremConfig",
    "StateConfig",
    "StatusConfig",
    "Timeouts",
    "add_config_argument",
    "default_config_path",
    "load_config",
    "load_config_text",
    "parse_listen",
]

DEFAULT_PATH = "/etc/burst-controller/controller.yaml"
CONFIG_ENV = "BURSTCTL_CONFIG"  # the one environment variable naming the config file, for every command


def default_config_path() -> str:
    """``$BURSTCTL_CONFIG`` if set, else /etc/burst-controller/controller.yaml: every command's ``--config``."""
    return os.environ.get(CONFIG_ENV) or DEFAULT_PATH


def add_config_argument(parser: Any, what: str = "controller config") -> None:
    parser.add_argument("--config", default=default_config_path(), metavar="FILE",
                        help=f"{what} (default: ${CONFIG_ENV}, else {DEFAULT_PATH}; now %(default)s)")
# Environment variables the Alibaba Cloud SDKs and CLI read (credentials.source: env).
ENV_KEY_ID = "ALIBABA_CLOUD_ACCESS_KEY_ID"
ENV_KEY_SECRET = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _absolute(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"'{value}' must be an absolute path (starting with /)")
    return value


AbsPath = Annotated[str, AfterValidator(_absolute)]


def parse_listen(value: str) -> tuple[str, int]:
    """``127.0.0.1:9180`` / ``[::1]:9180`` -> (host, port). Raises ValueError with a message for ops."""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"'{value}' is not HOST:PORT, like 127.0.0.1:9180")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"'{value}': the port must be a number from 1 to 65535")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"'{value}': listen on an IP address (127.0.0.1, ::1, 0.0.0.0) or localhost") from None
    return host, int(port)


def _listen(value: str) -> str:
    parse_listen(value)
    return value


def _masked(url: str) -> str:
    """The URL with its password replaced, for error messages."""
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


def _state_url(value: str) -> str:
    shown = _masked(value)
    scheme = urlsplit(value).scheme
    if scheme == "sqlite":
        if not value.startswith("sqlite:///") or value == "sqlite:///":
            raise ValueError(f"'{shown}': write sqlite:////absolute/path/state.db (four slashes)")
        return value
    if scheme in ("postgresql", "postgresql+psycopg", "postgres"):
        if not urlsplit(value).hostname and "host=" not in value:
            raise ValueError(f"'{shown}' names no database host: postgresql+psycopg://user:pass@host/db")
        return value
    raise ValueError(f"'{shown}' is not a state database URL: use sqlite:////var/lib/burst-controller/state.db "
                     "or postgresql+psycopg://user:password@host/dbname")


def _node_endpoint(value: str) -> str:
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as exc:
        raise ValueError(f"'{value}' is not a valid template: {exc}") from None
    unknown = fields - {"private_ip", "instance_id"}
    if unknown:
        raise ValueError(f"'{value}': unknown placeholder {{{min(unknown)}}}; use {{private_ip}} or {{instance_id}}")
    if not value.startswith("tcp://"):
        raise ValueError(f"'{value}': a node's Docker endpoint is tcp://HOST:2376 (always mutual TLS)")
    return value


def _cidr(value: str) -> str:
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"'{value}' is not a network in CIDR notation (e.g. 10.0.1.0/24)") from None
    if "/" not in value:
        raise ValueError(f"'{value}' is an address, not a network: write the VSwitch CIDR, e.g. {net.supernet(8)}")
    try:
        ipaddress.ip_network(value)
    except ValueError:  # host bits set: almost always a typo for the VSwitch's network
        raise ValueError(f"'{value}' has host bits set: did you mean {net}?") from None
    return value


Cidr = Annotated[str, AfterValidator(_cidr)]


def _controller_id(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?", value):
        raise ValueError(f"'{value}' is not a valid controller id: 1 to 32 lowercase letters, digits and dashes "
                         "(not at the start or end); it is written into every ECS tag and container label")
    return value


ControllerId = Annotated[str, AfterValidator(_controller_id)]


class StateConfig(_Section):
    url: Annotated[str, AfterValidator(_state_url)] = "sqlite:////var/lib/burst-controller/state.db"


def _token(value: str) -> str:
    if len(value) < 16:
        raise ValueError("a token needs at least 16 characters; generate one with: openssl rand -hex 32")
    return value


def _host_name(value: str) -> str:
    """A name the status endpoint answers to (``status.allowed_hosts``): a DNS name or an IP address, without
    a port (the listen port is implied) or a wildcard (which would let any name through again)."""
    name = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        ipaddress.ip_address(name)
        return name.lower()
    except ValueError:
        pass
    if "*" in value or ":" in value or "/" in value:
        raise ValueError(f"'{value}' is not a host name: write the bare name or address, like status.example.net "
                         "(no port, no wildcard, no scheme)")
    labels = value.rstrip(".").split(".")
    if len(value) > 253 or not all(re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", lb) for lb in labels):
        raise ValueError(f"'{value}' is not a DNS name (letters, digits and dashes, dot-separated labels of 1 to "
                         "63 characters)")
    return value.rstrip(".").lower()


class StatusConfig(_Section):
    listen: Annotated[str, AfterValidator(_listen)] = "127.0.0.1:9180"
    allowed_hosts: tuple[Annotated[str, AfterValidator(_host_name)], ...] = Field(
        default=(), description="Host names the endpoint answers to besides its listen address and localhost "
                                "(a request naming any other gets 421)")
    token_file: AbsPath | None = "/etc/burst-controller/status.token"
    token: Annotated[str, AfterValidator(_token)] | None = Field(default=None,
                                                                 description="inline token (prefer token_file)")

    @property
    def url(self) -> str:
        """Where a client on this machine reaches the endpoint (a wildcard address means loopback)."""
        host, port = parse_listen(self.listen)
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class DockerTls(_Section):
    ca: AbsPath
    cert: AbsPath
    key: AbsPath


class OnpremConfig(_Section):
    docker_hosts: tuple[DockerHost, ...] = ("unix:///var/run/docker.sock",)
    docker_tls: DockerTls | None = Field(default=None, description="client certificate for tcp:// Docker hosts")
    registry: str | None = Field(default=None, description="on-prem registry host:port (optional)")

    @model_validator(mode="after")
    def _hosts(self) -> OnpremConfig:
        if not self.docker_hosts:
            raise ValueError("docker_hosts: name at least one Docker host, like unix:///var/run/docker.sock")
        return self


class EnvCredentials(_Section):
    source: Literal["env"]


class FileCredentials(_Section):
    source: Literal["file"]
    path: AbsPath


class RamRoleCredentials(_Section):
    source: Literal["ram_role"]
    role_name: str = Field(..., min_length=1, max_length=64)


Credentials = Annotated[EnvCredentials | FileCredentials | RamRoleCredentials, Field(discriminator="source")]


class CloudConfig(_Section):
    region: RegionId = "cn-hangzhou"
    endpoint: HttpUrl | None = Field(default=None, description="ECS API endpoint; null = the real API")
    credentials: Credentials = EnvCredentials(source="env")
    node_docker_endpoint: Annotated[str, AfterValidator(_node_endpoint)] = "tcp://{private_ip}:2376"
    node_networks: tuple[Cidr, ...] = Field(
        default=(),
        description="CIDRs of the policies' VSwitches: the node bootstrap's server certificate names their "
                    "addresses; empty = no bootstrap user data (the emulator, or an image with Docker TLS baked in)")


class NoAuth(_Section):
    type: Literal["none"]


class BasicAuth(_Section):
    type: Literal["basic"]
    username: str = Field(..., min_length=1)
    password_file: AbsPath


class AcrAuth(_Section):
    type: Literal["acr"]
    instance_id: str = Field(..., min_length=1)


RegistryAuth = Annotated[NoAuth | BasicAuth | AcrAuth, Field(discriminator="type")]


class CloudRegistryConfig(_Section):
    url: str = Field(default="registry.cn-hangzhou.aliyuncs.com", min_length=1,
                     description="registry host[:port]; repositories come from each policy's registry.target")
    insecure: bool = False
    auth: RegistryAuth = NoAuth(type="none")


PositiveDuration = Annotated[Duration, Field(gt=0)]


class Intervals(_Section):
    sample: PositiveDuration = 15.0
    evaluate: PositiveDuration = 30.0
    reconcile: PositiveDuration = 60.0
    replicate: PositiveDuration = 300.0
    gc: PositiveDuration = 300.0
    step: PositiveDuration = 2.0  # how often each replica's lifecycle advances (boot checks, health, drain)


class Timeouts(_Section):
    launch: PositiveDuration = 300.0
    boot: PositiveDuration = 600.0
    start: PositiveDuration = 300.0


class HaConfig(_Section):
    """Active/standby pair (docs/ha.md): two controllers with the same controller_id and state database; a
    lease in the database decides which one acts (controller/ha/leader.py)."""
    enabled: bool = False
    lease_ttl: PositiveDuration = 10.0  # a lease not renewed this long is taken over by the standby
    renew_every: PositiveDuration = 2.0  # the active renews, the standby tries to acquire (at most every 1 s)

    @model_validator(mode="after")
    def _renewal(self) -> HaConfig:
        if self.renew_every * 2 > self.lease_ttl * 0.9:
            raise ValueError(f"renew_every ({self.renew_every:g}s) must be at most {self.lease_ttl * 0.45:g}s "
                             f"(45% of lease_ttl {self.lease_ttl:g}s): one missed renewal must not lose the lease")
        return self


class ControllerConfig(_Section):
    controller_id: ControllerId = Field(..., description="identity in every ECS tag, container label, LB server")
    state: StateConfig = StateConfig()
    state_dir: AbsPath = "/var/lib/burst-controller"
    pki_dir: AbsPath | None = Field(default=None, description="the CA for node Docker endpoints: ca.pem and "
                                    "ca-key.pem, plus the controller's client pair; default STATE_DIR/pki")
    status: StatusConfig = StatusConfig()
    policies_dir: AbsPath = "/etc/burst-controller/policies.d"
    onprem: OnpremConfig = OnpremConfig()
    cloud: CloudConfig = CloudConfig()
    cloud_registry: CloudRegistryConfig = CloudRegistryConfig()
    intervals: Intervals = Intervals()
    timeouts: Timeouts = Timeouts()
    orphan_grace: Duration = 600.0
    ha: HaConfig = HaConfig()
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @property
    def pki_path(self) -> str:
        """Where the node CA lives (``pki_dir``, else ``state_dir``/pki)."""
        return self.pki_dir or f"{self.state_dir}/pki"

    @model_validator(mode="after")
    def _register(self) -> ControllerConfig:
        # inline secrets are known the moment the file is read; file-held ones when read (read_secret_file)
        register_secret(self.status.token)
        password = urlsplit(self.state.url).password
        register_secret(password)
        return self


# --------------------------------------------------------------------------- loading

def _problem(line: str) -> ConfigError:
    """A ConfigError of one problem line, whose message is that line (for logs and `str(exc)`)."""
    return ConfigError(line, [line])


def _position(doc: Document, path: tuple[str | int, ...], anchor: str) -> Pos:
    """The key or value node of ``path``, else the nearest enclosing node that is in the file."""
    if path and anchor == "value" and path in doc.values:
        return doc.values[path]
    for cut in range(len(path), 0, -1):
        sub = path[:cut]
        if sub in doc.keys:
            return doc.keys[sub]
        if sub in doc.values:
            return doc.values[sub]
    return doc.start


def _register_raw_secrets(data: dict[str, Any]) -> None:
    """Secrets in a document that may fail validation: registered first so no problem line shows them."""
    status = data.get("status")
    if isinstance(status, dict) and isinstance(status.get("token"), (str, int)):
        register_secret(str(status["token"]))
    state = data.get("state")
    if isinstance(state, dict) and isinstance(state.get("url"), str):
        try:
            register_secret(urlsplit(state["url"]).password)
        except ValueError:
            pass  # an unparsable URL is reported by the validator


def load_config_text(text: str, filename: str = "<string>") -> ControllerConfig:
    """Parse and validate controller.yaml text. Raises ConfigError with FILE:LINE:COL: field: message lines."""
    docs, yaml_problems = parse_documents(text)
    problems = [f"{filename}:{p.pos.line}:{p.pos.col}: "
                f"{'.'.join(map(str, p.path)) + ': ' if p.path else ''}{p.message}" for p in yaml_problems]
    if problems:
        raise ConfigError(f"{filename}: invalid YAML", problems)
    if not docs or docs[0].data is None:
        raise _problem(f"{filename}:1:1: the file is empty: start from deploy/controller.yaml (controller_id is required)")
    if len(docs) > 1:
        text_lines = text.splitlines()
        marker = next((i + 1 for i in range(min(docs[1].start.line, len(text_lines)) - 1, -1, -1)
                       if text_lines[i].startswith("---")), docs[1].start.line)
        raise _problem(f"{filename}:{marker}:1: the controller config is one YAML document; remove this '---'")
    doc = docs[0]
    if not isinstance(doc.data, dict):
        raise _problem(f"{filename}:{doc.start.line}:{doc.start.col}: the controller config is a mapping of "
             "`key: value` lines (controller_id, state, status, ...)")
    _register_raw_secrets(doc.data)
    try:
        return ControllerConfig.model_validate(doc.data)
    except ValidationError as exc:
        # the policy loader's translation of pydantic errors (messages, 'did you mean', union tags)
        located = locate_errors(ControllerConfig, doc.data, [dict(e) for e in exc.errors(include_url=False)])
        lines: dict[str, tuple[int, int]] = {}
        for shown, where, anchor, message in located:
            pos = _position(doc, where, anchor)
            message = message.replace("\r", "\\r").replace("\n", "\\n")  # one problem, one line
            line = redact(f"{filename}:{pos.line}:{pos.col}: {format_path(shown) or '(top level)'}: {message}")
            lines.setdefault(line, (pos.line, pos.col))
        ordered = sorted(lines, key=lambda text: lines[text])
        raise ConfigError(f"{filename}: {len(ordered)} problem(s)", ordered) from None


def load_config(path: str | os.PathLike[str] = DEFAULT_PATH) -> ControllerConfig:
    """Read and validate the controller config file."""
    name = os.fspath(path)
    try:
        text = Path(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _problem(f"{name}: no such file (pass --config PATH)") from None
    except PermissionError:
        folder = os.path.dirname(os.path.abspath(name))
        raise _problem(f"{name}: cannot read: permission denied for user {current_user()}; the service reads it through "
                       f"its group: chgrp {SERVICE_GROUP} {folder} {name} && chmod 0750 {folder} && "
                       f"chmod 0640 {name}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _problem(f"{name}: cannot read: {exc}") from None
    return load_config_text(text, name)


SERVICE_GROUP = "burst-controller"  # the unit's User= and Group= (deploy/burst-controller.sysusers)


def current_user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())
