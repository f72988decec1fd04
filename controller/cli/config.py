"""`burstctl config validate`: check controller.yaml (and the policies its ``policies_dir`` holds) without
starting anything. Exit 0 when valid; otherwise one FILE:LINE:COL line per problem and exit 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from controller.config import add_config_argument, load_config
from controller.errors import ConfigError
from controller.secret_files import status_token
from policies.loader import load_policies


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="check the controller config")
    psub = p.add_subparsers(dest="config_command", metavar="ACTION")
    psub.required = True
    validate = psub.add_parser(
        "validate", help="check controller.yaml and the policies in its policies_dir",
        description="Check the controller config: its fields, the status token file, and every policy file of "
                    "policies_dir. Exit 0 when all are valid; otherwise print one line per problem "
                    "(FILE:LINE:COL: field.path: message) and exit 2.")
    add_config_argument(validate)
    validate.set_defaults(func=_validate)


def _validate(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)  # ConfigError: printed by the CLI, exit 2
    problems: list[str] = []
    try:
        status_token(cfg)  # the token file: present, not empty, mode 0600
    except ConfigError as exc:
        problems += exc.problems
    policies = 0
    if Path(cfg.policies_dir).is_dir():
        result = load_policies([cfg.policies_dir])
        problems += [str(p) for p in result.problems if "no *.yaml or *.yml files" not in str(p)]
        policies = len(result.policies)
    else:
        problems.append(f"{args.config}: policies_dir: {cfg.policies_dir} is not a directory")
    if problems:
        raise ConfigError(f"{args.config}: {len(problems)} problem(s)", problems)
    print(f"{args.config}: valid (controller_id {cfg.controller_id}; {policies} "
          f"polic{'y' if policies == 1 else 'ies'} in {cfg.policies_dir})")
    sys.stdout.flush()
    return 0
