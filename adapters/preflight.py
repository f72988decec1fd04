"""Preflight checks of the outside systems the controller needs, for ``burstctl doctor``: each function
asks one system one harmless question and returns a short description of the answer, or raises the
project's error saying what is wrong (never a vendor exception)."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

from aliyunsdkecs.request.v20140526.DescribeInstancesRequest import DescribeInstancesRequest
from aliyunsdkecs.request.v20140526.RunInstancesRequest import RunInstancesRequest
from cryptography import x509

from adapters.aliyun.ecs_api import EcsApi
from adapters.docker_engine.client import docker_client
from adapters.haproxy import RuntimeApi
from adapters.pki import TlsFiles
from adapters.registry.auth import CredentialSource
from adapters.registry.client import RegistryClient, RegistryOptions, push_scope
from controller.errors import BurstError, PermanentError, TransientError

__all__ = ["ca_files", "docker_engine", "ecs_describe", "ecs_dry_run", "haproxy_admin", "registry_access"]


def docker_engine(host: str, tls: TlsFiles | None = None) -> str:
    """The Docker Engine at ``host`` answers: its version."""
    try:
        client = docker_client(host, tls if host.startswith("tcp") else None, timeout=10)
        try:
            version = client.version()
        finally:
            client.close()
    except BurstError:
        raise
    except Exception as exc:  # docker-py raises many kinds; all mean "not reachable"
        raise TransientError(f"Docker Engine at {host} does not answer: {str(exc)[:200]}") from exc
    return f"Docker {version.get('Version', '?')} (API {version.get('ApiVersion', '?')})"


def haproxy_admin(socket: str, backend: str) -> str:
    """The runtime API at ``socket`` answers at level admin (adding and removing servers needs it) and has
    ``backend``; returns its servers and their weights."""
    api = RuntimeApi(socket, timeout=5.0)
    level = api.send("show cli level").strip()
    if level != "admin":
        raise PermanentError(f"HAProxy stats socket {socket} is at level {level or '?'}, not admin: add "
                             "`level admin` to its `stats socket` line")
    rows = api.stat(backend, 4)  # NotFoundError for a missing backend
    servers = ", ".join(f"{r.name} weight {r.weight}" for r in rows) or "no servers"
    return f"level admin, backend {backend}: {servers}"


def registry_access(host: str, repository: str, credentials: CredentialSource, *, insecure: bool = False,
                    push: bool = True) -> str:
    """The registry at ``host`` answers its API and accepts the credentials for ``repository`` (a push
    scope: what replication needs)."""
    options = RegistryOptions(credentials=credentials, insecure_hosts=frozenset({host} if insecure else ()),
                              timeout=10.0, retries=1)
    client = RegistryClient(options)
    try:
        scope = push_scope(repository) if push else f"repository:{repository}:pull"
        client.request("GET", host, "/v2/", scope, what=f"registry {host} API check")
    finally:
        client.close()
    return f"{host}: API answers, {'push' if push else 'pull'} access to {repository} accepted"


def ecs_dry_run(api: EcsApi, *, zone: str, instance_type: str, image_id: str, vswitch_id: str,
                security_group_id: str) -> str:
    """RunInstances with DryRun=true: the credentials may launch this instance (the API checks the
    request, the permissions and the offer, and creates nothing)."""
    req = RunInstancesRequest()
    req.set_DryRun(True)
    req.set_ZoneId(zone)
    req.set_InstanceType(instance_type)
    req.set_ImageId(image_id)
    if vswitch_id:
        req.set_VSwitchId(vswitch_id)
    if security_group_id:
        req.set_SecurityGroupId(security_group_id)
    req.set_Amount(1)
    req.set_InstanceChargeType("PostPaid")
    try:
        api.call(req)
    except BurstError as exc:
        if getattr(exc, "code", None) == "DryRunOperation":
            return f"RunInstances DryRun accepted ({instance_type} in {zone})"
        raise
    raise PermanentError("RunInstances with DryRun=true created instances or answered without DryRunOperation: "
                         "is the endpoint an ECS API?")


def ecs_describe(api: EcsApi) -> str:
    """DescribeInstances answers with these credentials: how many instances the account has in the region."""
    req = DescribeInstancesRequest()
    req.set_PageSize(1)
    answer = api.call(req)
    return f"DescribeInstances: {int(answer.get('TotalCount') or 0)} instance(s) in the region"


def ca_files(directory: str) -> str:
    """The node CA in ``directory``: ca.pem and ca-key.pem present, the key and the directory private
    (0600 / 0700), the certificate a CA that is valid now; the controller's client pair likewise when it
    exists."""
    root = Path(directory)
    problems: list[str] = []
    if not root.is_dir():
        raise PermanentError(f"{root} does not exist: run burstctl pki init (or set pki_dir to an existing CA)")
    if stat.S_IMODE(root.stat().st_mode) & 0o077:
        problems.append(f"{root} is mode {stat.S_IMODE(root.stat().st_mode):04o} (want 0700)")
    for name in ("ca-key.pem", "controller-key.pem"):
        key = root / name
        if key.exists() and stat.S_IMODE(key.stat().st_mode) & 0o077:
            problems.append(f"{key} is mode {stat.S_IMODE(key.stat().st_mode):04o} (want 0600: chmod 600 {key})")
    cert_path = root / "ca.pem"
    if not cert_path.exists() or not (root / "ca-key.pem").exists():
        problems.append(f"{root} has no ca.pem and ca-key.pem: run burstctl pki init")
    else:
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except ValueError as exc:
            raise PermanentError(f"{cert_path} is not a PEM certificate: {exc}") from None
        now = datetime.now(UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            problems.append(f"{cert_path} is not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d} to "
                            f"{cert.not_valid_after_utc:%Y-%m-%d})")
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            problems.append(f"{cert_path} is not a CA certificate (BasicConstraints CA:TRUE)")
    if problems:
        raise PermanentError("; ".join(problems))
    return f"{root}: ca.pem valid until {cert.not_valid_after_utc:%Y-%m-%d}, key files private"
