"""`burstctl history --policy NAME [--export CSV] [--since 24h]`: the load samples the daemon recorded for a
policy, read from the state database; exported as a trace that `burstctl simulate --trace` replays, so a
policy change can be tried on last week's real load before it is deployed."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from controller.config import add_config_argument, load_config
from controller.errors import BurstError
from controller.sim.trace import parse_timestamp
from controller.store.history import format_timestamp, read_samples, trace_rows, write_trace
from policies.units import parse_duration

__all__ = ["add_parser"]


def _since(text: str) -> float:
    """A duration back from now (``24h``, ``90m``, ``7d``) or a point in time (ISO 8601 or epoch seconds)."""
    try:
        if float(text) >= 1e9:  # a bare number this large is a point in time (epoch seconds), not a span
            return float(text)
    except ValueError:
        pass
    try:
        seconds = parse_duration(text)
    except ValueError:
        try:
            return parse_timestamp(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"'{text}' is neither a duration (like 24h, 90m, 7d) nor a time (like 2024-05-01 08:00:00)") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' must be longer than zero")
    return time.time() - seconds


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "history", help="export a policy's recorded load as a trace for `burstctl simulate`",
        description="Read the load samples the daemon recorded for a policy from the state database (opened "
                    "read-only; the controller may keep running) and write them as a trace: a CSV with a "
                    "'timestamp,value' header, UTC timestamps, one row per sample, failed samples left out. "
                    "Without --export, print a summary of the samples.",
        epilog="example: burstctl history --policy web --since 7d --export web.csv && "
               "burstctl simulate --policy /etc/burst-controller/policies.d/web.yaml --trace web.csv")
    p.add_argument("--policy", required=True, metavar="NAME", help="the policy whose samples to read")
    p.add_argument("--export", metavar="CSV", help="write the trace to this file ('-' for standard output)")
    p.add_argument("--since", type=_since, default=None, metavar="WHEN",
                   help="how far back: a duration (24h, 7d) or a time (ISO 8601, epoch seconds); default 24h")
    add_config_argument(p, "controller config naming the state database")
    p.add_argument("--state-url", metavar="URL",
                   help="read this database instead of the config's state.url (e.g. a backup: "
                        "sqlite:////var/backups/state.db)")
    p.set_defaults(func=_run)


def _atomic_write(path: str, rows: list[tuple[str, str]]) -> None:
    """Write next to the target and rename, so a failed export never leaves half a trace behind."""
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent if str(target.parent) else ".")
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            write_trace(rows, fh)
        os.replace(tmp, target)
    except OSError as exc:
        raise BurstError(f"cannot write {path}: {exc.strerror or exc}") from None


def _run(args: argparse.Namespace) -> int:
    url = args.state_url or load_config(args.config).state.url
    since = args.since if args.since is not None else time.time() - 86400.0
    found = read_samples(url, args.policy, since)
    rows, skipped = trace_rows(found.samples)
    first, last = found.samples[0].at, found.samples[-1].at
    span = f"{format_timestamp(first)} to {format_timestamp(last)} UTC"
    if args.export:
        if not rows:
            raise BurstError(f"all {skipped} samples of policy {args.policy} since {format_timestamp(since)} UTC "
                             "failed: nothing to export (see `burstctl events --policy ...` for why)")
        if args.export == "-":
            write_trace(rows, sys.stdout)
        else:
            _atomic_write(args.export, rows)
        note = f"; left out {skipped} failed sample(s)" if skipped else ""
        where = "standard output" if args.export == "-" else args.export
        print(f"exported {len(rows)} samples of policy {args.policy} ({span}) to {where}{note}", file=sys.stderr)
        return 0
    values = [float(v) for _, v in rows]
    print(f"policy {args.policy}: {len(found.samples)} samples, {span}")
    if values:
        q = statistics.quantiles(values, n=20) if len(values) > 1 else [values[0]] * 19
        print(f"  load: min {min(values):g}  median {statistics.median(values):g}  p95 {q[18]:g}  "
              f"max {max(values):g}")
    replicas = [s.replicas for s in found.samples]
    print(f"  cloud replicas: max {max(replicas)}, now {replicas[-1]}")
    if skipped:
        print(f"  failed samples: {skipped} (left out of an export)")
    print("export with: --export FILE.csv")
    return 0
