"""`burstctl node user-data`: print the UserData the controller sends with a launch (the node bootstrap,
with a fresh short-lived server certificate, exactly as a launch would carry it), so ops can boot a node by
hand when debugging an image: `burstctl node user-data --pki-dir DIR --network CIDR > user-data`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adapters.docker_engine.bootstrap import BootstrapSettings, NodeBootstrap
from adapters.pki import CertificateAuthority
from controller.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("node", help="node bootstrap tools (the UserData a launch carries)")
    psub = p.add_subparsers(dest="node_command", metavar="ACTION")
    psub.required = True
    u = psub.add_parser("user-data", help="print the cloud-init UserData a launch would carry",
                        description="Renders the node bootstrap as a launch does: the CA certificate, a server "
                        "certificate and key valid --cert-days for every address of the node networks, the Docker "
                        "drop-in and the metadata block. It holds the node key: treat it as a secret.")
    u.add_argument("--pki-dir", required=True, help="the controller's CA directory (STATE_DIR/pki)")
    u.add_argument("--network", action="append", required=True, metavar="CIDR",
                   help="a VSwitch CIDR node addresses come from (repeatable)")
    u.add_argument("--insecure-registry", action="append", default=[], metavar="HOST:PORT",
                   help="a registry the node's engine reaches over plain HTTP (repeatable)")
    u.add_argument("--cert-days", type=int, default=7, help="server certificate validity (1..30, default 7)")
    u.add_argument("--name", default="manual", help="the launch name written into the document")
    u.set_defaults(func=_user_data)


def _user_data(args: argparse.Namespace) -> int:
    pki = Path(args.pki_dir)
    if not (pki / "ca.pem").exists() or not (pki / "ca-key.pem").exists():
        problem = f"--pki-dir {pki}: no CA there (ca.pem, ca-key.pem); create one with `burstctl pki init --dir {pki}`"
        raise ConfigError("no CA", [problem])
    boot = NodeBootstrap(BootstrapSettings(ca=CertificateAuthority(pki), node_networks=tuple(args.network),
                                           cert_days=args.cert_days,
                                           insecure_registries=tuple(args.insecure_registry)))
    sys.stdout.write(boot.render(args.name))
    return 0
