"""`burstctl`: the command-line entry point. Parses arguments, dispatches to controller/cli/*.

Errors the project raises on purpose are printed as one clean message (exit 2 for bad input, 1 for
other failures); a traceback is shown only with BURSTCTL_DEBUG=1.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from controller import __version__
from controller.errors import BurstError, ConfigError

# Each name is a module in controller/cli/ with add_parser(subparsers); the order is the help order.
COMMANDS = [
    "pki",
    "node",
    "policy",
    "config",
    "doctor",
    "emulate",
    "status",
    "simulate",
    "tune",
    "history",
    "replicate",
    "bake",
    "run",
    "demo",
]

# Top-level words registered by a module under another name. Only the chosen command's module is imported
# (importing them all costs seconds of start-up: the daemon, FastAPI, SQLAlchemy, matplotlib...).
ALIASES = {"events": "status", "pause": "status", "resume": "status", "drain": "status"}


def _chosen_module(argv: Sequence[str]) -> str | None:
    """The command module for the first positional word of ``argv``, if it names one."""
    skip_next = False
    for word in argv:
        if skip_next:
            skip_next = False
            continue
        if word == "--log-level":
            skip_next = True
            continue
        if word.startswith("-"):
            continue
        name = ALIASES.get(word, word)
        return name if name in COMMANDS else None
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with ``argv`` naming a command, only that command's module is imported."""
    parser = argparse.ArgumentParser(
        prog="burstctl",
        description="Hybrid-cloud burst controller: replicate on-prem workloads to Alibaba Cloud ECS at peak.",
    )
    parser.add_argument("--version", action="version", version=f"burstctl {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("BURSTCTL_LOG_LEVEL", "WARNING"),
                        help="logging level (default WARNING; `run` defaults to INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    chosen = _chosen_module(argv) if argv is not None else None
    for name in [chosen] if chosen else COMMANDS:
        importlib.import_module(f"controller.cli.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(words)
    args = parser.parse_args(words)
    logging.basicConfig(level=str(args.log_level).upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    debug = os.environ.get("BURSTCTL_DEBUG") == "1"
    try:
        rc = args.func(args)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 2
    except BurstError as exc:
        if debug:
            raise
        print(f"burstctl {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # no tracebacks to users; BURSTCTL_DEBUG=1 shows one
        if debug:
            raise
        print(f"burstctl {args.command}: internal error: {type(exc).__name__}: {exc}"
              " (set BURSTCTL_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
