"""`burstctl doctor`: check, before a burst needs them, everything the controller will talk to, with the
credentials of its config: one line per check (``ok``, ``FAIL`` or ``warn``), exit 1 when one failed.

On-prem Docker Engines (the config's and the policies' workload hosts), each policy's HAProxy stats socket
at level admin with its backend, the cloud registry with its credentials (push to each policy's repository)
and the on-prem registry, the ECS credentials (a RunInstances with DryRun=true per policy, a
DescribeInstances per region), the node networks, and the node CA with its files' modes."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from adapters.aliyun.credentials import resolve_credentials
from adapters.aliyun.ecs_api import EcsApi, EcsApiSettings
from adapters.pki import TlsFiles
from adapters.preflight import (
    ca_files,
    docker_engine,
    ecs_describe,
    ecs_dry_run,
    haproxy_admin,
    registry_access,
)
from adapters.registry.auth import StaticCredentials
from controller.config import add_config_argument, load_config
from controller.errors import BurstError, ConfigError
from controller.wiring import registry_credentials
from policies.loader import load_policies


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check Docker, HAProxy, registries, ECS credentials, networks and the CA",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_argument(p)
    p.set_defaults(func=_doctor)


class _Report:
    def __init__(self) -> None:
        self.failed = 0

    def line(self, status: str, what: str, detail: str) -> None:
        print(f"{status:<5} {what}: {detail}", flush=True)

    def check(self, what: str, fn: Callable[[], str]) -> None:
        try:
            self.line("ok", what, fn())
        except BurstError as exc:
            self.failed += 1
            self.line("FAIL", what, _why(exc))
        except Exception as exc:  # noqa: BLE001 - a check must never stop the others
            self.failed += 1
            self.line("FAIL", what, f"{type(exc).__name__}: {exc}")


def _why(exc: BurstError) -> str:
    return "; ".join(exc.problems) if isinstance(exc, ConfigError) else str(exc)


def _doctor(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)  # invalid: the CLI prints its FILE:LINE:COL lines, exit 2
    report = _Report()
    result = load_policies([cfg.policies_dir]) if Path(cfg.policies_dir).is_dir() else None
    policies: list[Any] = list(result.policies.values()) if result is not None else []
    if result is None:
        report.failed += 1
        report.line("FAIL", "policies", f"{cfg.policies_dir} is not a directory")
    elif result.problems:
        report.failed += 1
        report.line("FAIL", "policies", f"{len(result.problems)} problem(s), first: {result.problems[0]} "
                                        "(burstctl config validate lists them)")
    else:
        report.line("ok", "policies", f"{len(policies)} valid in {cfg.policies_dir}")

    onprem_tls = None
    if cfg.onprem.docker_tls is not None:
        t = cfg.onprem.docker_tls
        onprem_tls = TlsFiles(ca=Path(t.ca), cert=Path(t.cert), key=Path(t.key))
    hosts = dict.fromkeys([*cfg.onprem.docker_hosts, *(h for p in policies for h in p.workload.hosts)])
    for host in hosts:
        report.check(f"on-prem docker {host}", partial(docker_engine, host, onprem_tls))

    for key in dict.fromkeys((str(p.traffic.haproxy.socket), str(p.traffic.haproxy.backend))
                             for p in policies if p.traffic.haproxy is not None):
        report.check(f"haproxy {key[0]} backend {key[1]}", partial(haproxy_admin, *key))

    c = cfg.cloud.credentials
    try:
        provider = resolve_credentials(c.source, path=getattr(c, "path", None),
                                       role_name=getattr(c, "role_name", None))
        provider.get()
    except BurstError as exc:
        report.failed += 1
        report.line("FAIL", f"cloud credentials ({c.source})", _why(exc))
        provider = None

    cloud_host = cfg.cloud_registry.url.split("/", 1)[0]
    if provider is not None:
        creds, _ = registry_credentials(cfg, provider)
        for repo in dict.fromkeys(str(p.registry.target).split("/", 1)[1] for p in policies
                                  if str(p.registry.target).split("/", 1)[0] == cloud_host):
            report.check(f"cloud registry {cloud_host}/{repo}", partial(
                registry_access, cloud_host, repo, creds, insecure=cfg.cloud_registry.insecure))
    if cfg.onprem.registry:
        report.check(f"on-prem registry {cfg.onprem.registry}", lambda: registry_access(
            str(cfg.onprem.registry), "library/burst-doctor", StaticCredentials(), insecure=True, push=False))

    if provider is not None:
        apis: dict[str, EcsApi] = {}
        for p in policies:
            region = p.cloud.region
            if region not in apis:
                apis[region] = EcsApi(EcsApiSettings(region=region, credentials=provider,
                                                     endpoint=cfg.cloud.endpoint, max_attempts=2,
                                                     read_timeout=15.0))
                report.check(f"ecs {region} DescribeInstances", partial(ecs_describe, apis[region]))
            zone = p.cloud.zones[0]
            report.check(f"ecs {region} RunInstances DryRun ({p.name})", partial(
                ecs_dry_run, apis[region], zone=zone, instance_type=p.cloud.instance_types[0],
                image_id=p.cloud.image_id, vswitch_id=p.cloud.vswitches.get(zone, ""),
                security_group_id=p.cloud.security_group))
        for api in apis.values():
            api.close()

    networks = list(cfg.cloud.node_networks)
    if networks:
        report.line("ok", "node networks", f"{', '.join(networks)}: node certificates name every address in them")
    elif cfg.cloud.endpoint is None:
        report.line("warn", "node networks", "cloud.node_networks is empty: nodes get no bootstrap, so their "
                    "image must have the Docker TLS endpoint baked in (docs/operations.md)")
    else:
        report.line("ok", "node networks", "none (an ECS endpoint is set: the emulator needs no node bootstrap)")

    report.check(f"node CA {cfg.pki_path}", lambda: ca_files(cfg.pki_path))
    print(f"{report.failed} check(s) failed" if report.failed else "all checks passed", flush=True)
    return 1 if report.failed else 0
