"""Node bootstrap: renders ``deploy/node-bootstrap.yaml.tmpl`` (cloud-init) into the UserData of a launch.
Installs Docker unless the image has it, serves its API on tcp 2376 with mutual TLS (our CA, a short-lived
server certificate issued here; the CA key never leaves the controller) and keeps containers away from the
metadata service. It carries no registry credential: the controller passes a short-lived one with each pull
(``DockerNodeRuntime``). Called by the wiring's ``user_data`` edge before ``EcsComputePool.launch``.

Every instance of one RunInstances batch receives the same UserData, and a node's private IP is only known
after launch, so the server certificate names every address of the node networks (the VSwitch CIDRs)
rather than one IP: a /24 costs about 2 KB. Keep those networks small (at most ``MAX_NODE_ADDRESSES``)."""

from __future__ import annotations

import ipaddress
import json
import re
import string
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from adapters.pki import CertificateAuthority
from controller.errors import ConfigError

__all__ = [
    "DEFAULT_TEMPLATE",
    "MAX_NODE_ADDRESSES",
    "PIN_BRIDGE_MAC",
    "USER_DATA_LIMIT",
    "BootstrapSettings",
    "NodeBootstrap",
    "deploy_file",
]



def deploy_file(name: str) -> Path:
    """A file of ``deploy/`` the controller reads at run time: from the source checkout, or where
    deploy/install.sh puts it for an installed controller (``<prefix>/share/``, beside the venv); the
    checkout's path when neither exists (the error then names it)."""
    candidates = (Path(__file__).resolve().parents[2] / "deploy" / name, Path(sys.prefix).parent / "share" / name)
    return next((p for p in candidates if p.exists()), candidates[0])


DEFAULT_TEMPLATE = deploy_file("node-bootstrap.yaml.tmpl")
PIN_BRIDGE_MAC = deploy_file("pin-bridge-mac.sh")  # ${pin_bridge_mac}: docker0's MAC stays put
USER_DATA_LIMIT = 32 * 1024
MAX_NODE_ADDRESSES = 1024
_REGISTRY = re.compile(r"^[A-Za-z0-9.-]+(:\d{1,5})?$")


@dataclass
class BootstrapSettings:
    ca: CertificateAuthority
    node_networks: tuple[str, ...]  # CIDRs node private IPs come from (the VSwitches of the policy's zones)
    cert_days: int = 7
    docker_port: int = 2376
    template: Path = DEFAULT_TEMPLATE
    # registries the node's engine reaches over plain HTTP (the config's cloud_registry.insecure: a registry
    # inside the VPC without TLS); each host[:port]
    insecure_registries: tuple[str, ...] = ()


class NodeBootstrap:
    def __init__(self, settings: BootstrapSettings) -> None:
        self.settings = settings
        if not 1 <= settings.cert_days <= 30:
            problem = "bootstrap: cert_days must be within 1..30 (node certificates are short-lived)"
            raise ConfigError("node certificate validity", [problem])
        self._addresses = self._node_addresses(settings.node_networks)
        try:
            self._template = string.Template(settings.template.read_text())
            self._pin_script = _indent(PIN_BRIDGE_MAC.read_text())
        except OSError as exc:
            problem = f"{settings.template}: cannot read the node bootstrap template: {exc.strerror}"
            raise ConfigError(problem, [problem]) from None

    @staticmethod
    def _node_addresses(networks: Sequence[str]) -> tuple[str, ...]:
        out: list[str] = []
        for cidr in networks:
            try:
                net = ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ConfigError("node network", [f"bootstrap: node network {cidr!r}: {exc}"]) from None
            hosts = list(net.hosts()) if net.num_addresses > 2 else list(net)
            out += [str(ip) for ip in hosts]
            if len(out) > MAX_NODE_ADDRESSES:
                problem = (f"bootstrap: node networks hold more than {MAX_NODE_ADDRESSES} addresses; the node "
                           "certificate names each one and UserData is limited to 32 KB: use smaller VSwitches")
                raise ConfigError("node networks too large", [problem])
        if not out:
            raise ConfigError("no node network", ["bootstrap: name the VSwitch CIDR(s) nodes get addresses from"])
        return tuple(out)

    def render(self, launch_name: str) -> str:
        """The cloud-init document for one launch (the same for every instance of it)."""
        for host in self.settings.insecure_registries:
            if not _REGISTRY.match(host):
                raise ConfigError("registry host", [f"bootstrap: registry {host!r} is not host[:port]"])
        daemon = {"insecure-registries": list(self.settings.insecure_registries)} \
            if self.settings.insecure_registries else {}
        cert, key = self.settings.ca.issue_pem(f"burst-node {launch_name}", server=True, ips=self._addresses,
                                               days=self.settings.cert_days)
        text = self._template.substitute(
            launch_name=re.sub(r"[^A-Za-z0-9._:-]", "-", launch_name),
            cert_days=self.settings.cert_days,
            docker_port=self.settings.docker_port,
            ca_pem=_indent(self.settings.ca.ca_cert_path.read_text()),
            server_cert_pem=_indent(cert.decode()),
            server_key_pem=_indent(key.decode()),
            daemon_json=json.dumps(daemon),
            pin_bridge_mac=self._pin_script,
        )
        size = len(text.encode())
        if size > USER_DATA_LIMIT:
            problem = (f"bootstrap: the rendered UserData is {size} bytes; ECS accepts {USER_DATA_LIMIT} "
                       f"({len(self._addresses)} node addresses in the certificate: use smaller VSwitches)")
            raise ConfigError("UserData too large", [problem])
        return text


def _indent(pem: str, spaces: int = 6) -> str:
    return "\n".join(" " * spaces + line for line in pem.strip().splitlines())
