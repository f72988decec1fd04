"""Field types and checks of the policy model, with messages that tell ops how to fix the value.

`policies.model` declares fields with these types; `policies.loader` reads the structured problems that
``fail`` attaches to a validation error to point at the exact YAML key or value.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from typing import Annotated, Any, NoReturn
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

__all__ = [
    "PROBLEM_ERROR_TYPE",
    "ContainerName",
    "DockerHost",
    "EnvName",
    "HaproxyName",
    "HaproxySocket",
    "HttpUrl",
    "ImageId",
    "InstanceType",
    "LoadBalancerId",
    "LocalProblem",
    "Platform",
    "PolicyName",
    "RegionId",
    "RegistryTarget",
    "SecurityGroupId",
    "SignalName",
    "UrlPath",
    "VSwitchId",
    "ZoneId",
    "cross_section_problems",
    "fail",
    "label_value",
    "no_duplicates",
]

PROBLEM_ERROR_TYPE = "policy_problem"

# (path relative to the model that found it, message, "key" or "value": which YAML node to point at)
LocalProblem = tuple[tuple[str | int, ...], str, str]


def fail(problems: list[LocalProblem]) -> NoReturn:
    """Raise one validation error carrying several located problems (a model validator can raise once)."""
    message = "; ".join(msg for _, msg, _ in problems)
    # the message is a template: braces in user values must not be read as placeholders
    raise PydanticCustomError(PROBLEM_ERROR_TYPE, message.replace("{", "(").replace("}", ")"),
                              {"problems": problems})


def no_duplicates(values: Iterable[str], path: tuple[str | int, ...]) -> list[LocalProblem]:
    seen: set[str] = set()
    out: list[LocalProblem] = []
    for i, value in enumerate(values):
        if value in seen:
            out.append(((*path, i), f"{value} is listed twice", "value"))
        seen.add(value)
    return out


def label_value(value: Any) -> Any:
    """Docker label values are strings; accept the unquoted numbers and booleans people write in YAML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


def _matching(pattern: str, explain: Callable[[str], str]) -> AfterValidator:
    """A check that the whole string matches ``pattern``; ``explain(value)`` says how to write it."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(explain(value))
        return value

    return AfterValidator(check)


def _schema(pattern: str | None = None) -> WithJsonSchema:
    """Editors check the same shape as we do (anchored for JSON Schema)."""
    return WithJsonSchema({"type": "string", "pattern": f"^{pattern}$"} if pattern else {"type": "string"})


def _policy_name_problem(value: str) -> str:
    if len(value) > 40:
        return f"'{value}' is too long: a policy name has at most 40 characters"
    hint = value.lower().replace("_", "-").replace(" ", "-").replace(".", "-")
    return (f"'{value}' is not a valid policy name: use lowercase letters, digits and dashes "
            f"(not at the start or end), like '{hint.strip('-') or 'web'}'")


PolicyName = Annotated[str, _matching(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?", _policy_name_problem), _schema(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?")]


def _docker_host(value: str) -> str:
    scheme = value.split("://", 1)[0] if "://" in value else ""
    if scheme not in ("unix", "tcp", "ssh", "http", "https"):
        if value.startswith("/"):
            raise ValueError(f"'{value}' needs a scheme: write unix://{value}")
        if scheme == "":
            raise ValueError(f"'{value}' needs a scheme: write tcp://{value} (or unix:///path/to/docker.sock)")
        raise ValueError(f"'{value}': the scheme must be unix, tcp, ssh, http or https")
    rest = value.split("://", 1)[1]
    if not rest:
        raise ValueError(f"'{value}' names no socket or host")
    if scheme == "unix" and not rest.startswith("/"):
        raise ValueError(f"'{value}': a unix socket needs an absolute path, like unix:///var/run/docker.sock")
    return value


DockerHost = Annotated[str, AfterValidator(_docker_host),
                       WithJsonSchema({"type": "string", "pattern": "^(unix|tcp|ssh|https?)://"})]

ContainerName = Annotated[str, _matching(
    r"/?[a-zA-Z0-9][a-zA-Z0-9_.-]*",
    lambda v: f"'{v}' is not a Docker container name (letters, digits, _ . -)"),
    _schema()]
EnvName = Annotated[str, _matching(
    r"[A-Za-z_][A-Za-z0-9_]*",
    lambda v: f"'{v}' is not an environment variable name (letters, digits, _)"),
    _schema(r"[A-Za-z_][A-Za-z0-9_]*")]
HaproxyName = Annotated[str, _matching(
    r"[A-Za-z0-9_.:-]+",
    lambda v: f"'{v}' is not an HAProxy name (letters, digits, _ . : -)"),
    _schema(r"[A-Za-z0-9_.:-]+")]
ImageId = Annotated[str, _matching(
    r"[A-Za-z0-9_.:-]{1,128}",
    lambda v: f"'{v}' is not an ECS image id (like aliyun_3_x64_20G_alibase_20240819.vhd or m-xxx)"),
    _schema()]
InstanceType = Annotated[str, _matching(
    r"ecs\.[a-z0-9-]+\.[a-z0-9-]+",
    lambda v: f"'{v}' is not an ECS instance type: write it like ecs.c6.large"),
    _schema(r"ecs\.[a-z0-9-]+\.[a-z0-9-]+")]
Platform = Annotated[str, _matching(
    r"[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?",
    lambda v: f"'{v}' is not an image platform: write os/arch, like linux/amd64 or linux/arm64/v8"),
    _schema(r"[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?")]
RegionId = Annotated[str, _matching(
    r"[a-z]{2,}(-[a-z0-9]+)+",
    lambda v: f"'{v}' is not a region id: write it like cn-hangzhou"),
    _schema(r"[a-z]{2,}(-[a-z0-9]+)+")]
ZoneId = Annotated[str, _matching(
    r"[a-z]{2,}(-[a-z0-9]+)+",
    lambda v: f"'{v}' is not a zone id: write it like cn-hangzhou-h"),
    _schema(r"[a-z]{2,}(-[a-z0-9]+)+")]
SecurityGroupId = Annotated[str, _matching(
    r"sg-[A-Za-z0-9-]+",
    lambda v: f"'{v}' is not a security group id: it starts with sg-"),
    _schema(r"sg-[A-Za-z0-9-]+")]
VSwitchId = Annotated[str, _matching(
    r"vsw-[A-Za-z0-9-]+",
    lambda v: f"'{v}' is not a vSwitch id: it starts with vsw-"),
    _schema(r"vsw-[A-Za-z0-9-]+")]
LoadBalancerId = Annotated[str, _matching(
    r"lb-[A-Za-z0-9-]+",
    lambda v: f"'{v}' is not an SLB id: it starts with lb-"),
    _schema(r"lb-[A-Za-z0-9-]+")]
UrlPath = Annotated[str, _matching(
    r"/\S*",
    lambda v: f"'{v}' is not a URL path: it starts with / and has no spaces"),
    _schema(r"/\S*")]


def _haproxy_socket(value: str) -> str:
    if value.startswith("/") or (value.startswith("unix:///") and len(value) > 8):
        return value
    if value.startswith("tcp://"):
        host, _, port = value[6:].rpartition(":")
        if host and port.isdigit() and 0 < int(port) < 65536:
            return value
        raise ValueError(f"'{value}': write tcp://HOST:PORT, like tcp://127.0.0.1:9999")
    raise ValueError(f"'{value}' is not an HAProxy runtime API address: "
                     "give the socket's absolute path (/run/haproxy/admin.sock) or tcp://HOST:PORT")


HaproxySocket = Annotated[str, AfterValidator(_haproxy_socket),
                          WithJsonSchema({"type": "string", "pattern": "^(/|unix:///|tcp://)"})]


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"'{value}' is not an http(s) URL: write it like http://127.0.0.1:9090")
    try:
        _ = parts.port  # urlsplit checks the port only when asked
    except ValueError:
        raise ValueError(f"'{value}' has a bad port number") from None
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url), WithJsonSchema({"type": "string", "pattern": "^https?://"})]

_REPO_PATH = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")


def _registry_target(value: str) -> str:
    if "://" in value:
        raise ValueError(f"'{value}': drop the scheme, write host/path like registry.cn-hangzhou.aliyuncs.com/team/web")
    host, _, path = value.partition("/")
    if not path or not ("." in host or ":" in host or host == "localhost"):
        raise ValueError(f"'{value}' names no registry host: write host/path like "
                         "registry.cn-hangzhou.aliyuncs.com/team/web")
    if "@" in path or ":" in path:
        raise ValueError(f"'{value}': give the repository without a tag or digest "
                         "(the image is copied by digest, with its source tag)")
    if not _REPO_PATH.fullmatch(path):
        raise ValueError(f"'{value}': the repository path must be lowercase letters, digits and . _ - separators")
    return value


RegistryTarget = Annotated[str, AfterValidator(_registry_target),
                           WithJsonSchema({"type": "string", "pattern": "^[^/:]+(:[0-9]+)?/[a-z0-9._/-]+$"})]

# Linux signal names (the containers run on Linux whatever the controller host is)
_SIGNALS = frozenset(
    ["HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2", "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG", "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS"])


def _signal_name(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError("expected a signal name like SIGTERM")
    if isinstance(value, int) or value.strip().isdigit():
        raise ValueError(f"write the signal by name, like SIGTERM, not {value}")
    name = value.strip().upper()
    name = name.removeprefix("SIG")
    if name in ("KILL", "STOP"):
        raise ValueError(f"SIG{name} cannot be handled, so open requests would be cut: use the signal the "
                         "service stops gracefully on (usually SIGTERM); SIGKILL follows after stop_timeout anyway")
    if name not in _SIGNALS and not re.fullmatch(r"RTMIN(\+\d+)?|RTMAX(-\d+)?", name):
        close = difflib.get_close_matches(name, sorted(_SIGNALS), n=1)
        hint = f"; did you mean SIG{close[0]}?" if close else ""
        raise ValueError(f"'{value}' is not a signal name{hint}")
    return "SIG" + name


SignalName = Annotated[str, BeforeValidator(_signal_name), WithJsonSchema(
    {"type": "string", "pattern": "^([Ss][Ii][Gg])?[A-Za-z0-9+-]+$", "examples": ["SIGTERM", "SIGQUIT", "SIGINT"]})]


def _fmt(amount: float) -> str:
    return f"{amount:.4g}"


def cross_section_problems(policy: Any) -> list[LocalProblem]:
    """Checks that span sections. ``policy`` is a Policy or any object whose section attributes may be
    None (sections that failed on their own), so these checks also run on a partly invalid document."""
    problems: list[LocalProblem] = []
    cloud = getattr(policy, "cloud", None)
    budget = getattr(policy, "budget", None)
    replicas = getattr(policy, "replicas", None)
    schedule = getattr(policy, "schedule", None) or ()
    workload = getattr(policy, "workload", None)
    per_node = int(getattr(workload, "replicas_per_node", 1) or 1)
    traffic = getattr(policy, "traffic", None)
    if per_node > 1 and traffic is not None and getattr(traffic, "slb", None) is not None:
        problems.append((("workload", "replicas_per_node"),
                         (f"{per_node} replicas per instance need traffic.haproxy: an SLB backend is a whole "
                          "instance, so it cannot address several replicas on one"), "value"))
    warm = getattr(policy, "warm_pool", None)
    if per_node > 1 and warm is not None and warm.size:
        problems.append((("warm_pool", "size"),
                         (f"a warm pool keeps whole nodes of one replica each, but workload.replicas_per_node is "
                          f"{per_node}: set size: 0 or replicas_per_node: 1"), "value"))
    metric = getattr(policy, "metric", None)
    strategy = getattr(policy, "strategy", None)
    kind = getattr(strategy, "type", None)
    if metric is not None and metric.source == "haproxy" and kind in ("target", "predictive", "forecast"):
        stat = getattr(getattr(metric, "haproxy", None), "stat", "sessions")
        problems.append((("strategy", "type"),
                         (f"the {kind} strategy sizes the fleet from a utilisation (a percent of capacity), but "
                          f"metric.source haproxy reads the backend's {stat}, a count that replicas do not turn "
                          "into a percent: use type: threshold with its lines in " + stat + ", or a utilisation "
                          "metric (host_cpu, workload_cpu, or a prometheus query in percent)"), "value"))
    if cloud is not None and budget is not None:
        missing = [t for t in cloud.instance_types if t not in budget.prices]
        unused = [t for t in budget.prices if t not in cloud.instance_types]
        for itype in missing:
            close = difflib.get_close_matches(itype, unused, n=1)
            hint = f" (is {close[0]} a typo for it?)" if close else ""
            problems.append((("budget", "prices"), (f"no price for instance type {itype}{hint}: "
                                                   "every type in cloud.instance_types needs one"), "key"))
        prices = [budget.prices[t] for t in cloud.instance_types if t in budget.prices]
        if prices:
            cheapest = min(prices)
            if budget.max_per_hour < cheapest:
                problems.append((("budget", "max_per_hour"),
                                 (f"{_fmt(budget.max_per_hour)} per hour is below the cheapest instance type's "
                                 f"price ({_fmt(cheapest)}): not one replica could be launched"), "value"))
            elif replicas is not None and -(-replicas.min // per_node) * cheapest > budget.max_per_hour:
                least = -(-replicas.min // per_node) * cheapest  # whole instances of replicas_per_node each
                problems.append((("replicas", "min"),
                                 (f"{replicas.min} replicas cost at least {_fmt(least)} per hour, "
                                 f"above budget.max_per_hour ({_fmt(budget.max_per_hour)})"), "value"))
    if replicas is not None:
        for i, window in enumerate(schedule):
            floor = getattr(window, "min", None)
            if isinstance(floor, int) and floor > replicas.max:
                problems.append((("schedule", i, "min"),
                                 f"floor of {floor} replicas is above replicas.max ({replicas.max})", "value"))
    return problems
