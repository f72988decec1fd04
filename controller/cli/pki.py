"""`burstctl pki init`: create the controller's CA and its client certificate (and, for local
emulation, a server certificate for the local Docker Engine's TLS endpoint)."""

from __future__ import annotations

import argparse
import os

from adapters.pki import CertificateAuthority
from controller.config import add_config_argument, load_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pki", help="manage the controller's certificate authority for node Docker endpoints")
    psub = p.add_subparsers(dest="pki_command", metavar="ACTION")
    psub.required = True
    init = psub.add_parser("init", help="create the CA and certificates if missing")
    init.add_argument("--dir", help="where the CA lives (default: pki_dir of --config, else "
                                    "/var/lib/burst-controller/pki)")
    add_config_argument(init)
    init.add_argument("--server-ip", action="append", default=[],
                      help="also issue a node server certificate for this IP (repeatable)")
    init.set_defaults(func=_init)


def _init(args: argparse.Namespace) -> int:
    directory = args.dir
    if directory is None:
        directory = (load_config(args.config).pki_path if os.path.exists(args.config)
                     else "/var/lib/burst-controller/pki")
    ca = CertificateAuthority(directory)
    print(f"ca: {ca.ensure()}")
    client = ca.client_files()
    print(f"client: {client.cert}")
    if args.server_ip:
        server = ca.issue_files("node", server=True, ips=tuple(args.server_ip), dns=("localhost",))
        print(f"server: {server.cert}")
    return 0
