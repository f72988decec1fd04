"""`burstctl bake POLICY`: bake a node image for a policy's workload (controller/loop/bake.py): a builder node
boots with the policy's cloud settings and the controller's UserData, pulls the workload's image, becomes a
custom image (CreateImage), and is released; the image is recorded for the workload's spec hash and the
policy's newest --keep images are kept. One line per step, or one JSON object with --json."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from controller.config import DEFAULT_PATH, load_config
from controller.errors import ConfigError
from controller.loop.bake import BakeSettings
from policies.loader import load_policies


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bake", help="bake a node image with Docker and the policy's workload image",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("policy", metavar="POLICY", help="the policy's name (a file in the config's policies_dir)")
    p.add_argument("--config", default=str(DEFAULT_PATH), help=f"controller config (default {DEFAULT_PATH})")
    p.add_argument("--keep", type=int, default=None,
                   help="newest images of the policy to keep (default: the policy's bake.keep, 2 unless set)")
    p.add_argument("--boot-timeout", type=float, default=300.0, metavar="S",
                   help="seconds for the builder's Docker API to answer (default 300)")
    p.add_argument("--image-timeout", type=float, default=600.0, metavar="S",
                   help="seconds for the image to become Available (default 600)")
    p.add_argument("--json", action="store_true", help="print one JSON object with the result")
    p.set_defaults(func=run)


def _policy(cfg: Any, name: str) -> Any:
    files = sorted(Path(cfg.policies_dir).glob("*.y*ml"))
    result = load_policies([str(f) for f in files])
    if name in result.policies:
        return result.policies[name]
    problems = [str(p) for p in result.problems]
    known = ", ".join(sorted(result.policies)) or "none"
    why = f"burstctl bake: no valid policy {name!r} in {cfg.policies_dir} (valid: {known})"
    raise ConfigError(f"no valid policy {name!r}", [*problems, why])


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from controller.wiring import build_baker

    if args.keep is not None and args.keep < 1:
        raise ConfigError("--keep", ["burstctl bake: --keep must be at least 1"])
    cfg = load_config(args.config)
    policy = _policy(cfg, args.policy)
    keep = args.keep if args.keep is not None else policy.bake.keep  # the same number the daemon's bakes keep
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if args.json else \
        (lambda msg: print(msg, flush=True))
    settings = BakeSettings(keep=keep, boot_timeout=args.boot_timeout, image_timeout=args.image_timeout)
    baker, close = build_baker(cfg, settings=settings, say=say)
    # SIGTERM ends the bake like Ctrl-C: through its clean-up, which releases the builder
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = baker.bake(policy)
    finally:
        signal.signal(signal.SIGTERM, previous)
        close()
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in result.phases.items())
        print(f"{result.policy}: {result.image_id} for spec {result.spec_hash[:12]} ({steps})")
    return 0
