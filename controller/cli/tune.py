"""`burstctl tune POLICY --history TRACE [--report]`: fit a policy's strategy parameters to a recorded load
(a trace from `burstctl history --export`), fitted on the earlier part and scored on the later part, never
the other way; prints the before/after on the held-back part and writes the tuned policy. The fitting is in
controller/sim/tuning.py."""

from __future__ import annotations

import argparse
import os
import tempfile
from io import StringIO
from pathlib import Path
from typing import Any

from controller.cli.simulate import _duration, _load_policy, _non_negative, _positive, capacities
from controller.errors import BurstError, ConfigError
from controller.sim.simulator import Outcome, default_settings
from controller.sim.trace import load_trace
from controller.sim.tuning import TuneResult, score, tune
from policies.units import format_duration

__all__ = ["add_parser", "schema_line", "write_tuned"]

SCHEMA_MARK = "# yaml-language-server: $schema="
SHIPPED_SCHEMA = Path(__file__).resolve().parents[2] / "deploy" / "policy.schema.json"


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"'{text}' must be between 0 and 1 (the share of the history fitted on)")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune", help="fit a policy's strategy parameters to a recorded load, validated on its later part",
        description="Fit the strategy parameters of POLICY to a recorded load (a trace from `burstctl history "
                    "--export`, or any timestamp,value CSV): candidates are simulated on the earlier part of the "
                    "history only, and the policy as given and the tuned one are then scored on the later part, "
                    "next to HPA. Writes the tuned policy (with its $schema line). See docs/decisions.md.",
        epilog="example: burstctl history --policy web --since 14d --export web.csv && "
               "burstctl tune /etc/burst-controller/policies.d/web.yaml --history web.csv")
    p.add_argument("policy", metavar="POLICY", help="policy file (YAML)")
    p.add_argument("--history", required=True, metavar="TRACE", help="recorded load: timestamp,value rows")
    p.add_argument("--name", metavar="NAME", help="which policy, when POLICY holds several")
    p.add_argument("--column", metavar="NAME|N", help="the value column of a CSV with several")
    p.add_argument("--fit-share", type=_fraction, default=0.5, metavar="F",
                   help="share of the history (from its start) fitted on; the rest is held back (default 0.5)")
    p.add_argument("--output", metavar="FILE",
                   help="where to write the tuned policy (default: POLICY with .tuned before its suffix)")
    p.add_argument("--report", action="store_true", help="also print every candidate tried on the fitting part")
    p.add_argument("--onprem-capacity", type=_positive, metavar="X", help="as for `burstctl simulate`")
    p.add_argument("--replica-capacity", type=_positive, metavar="Y", help="as for `burstctl simulate`")
    p.add_argument("--boot-delay", type=_duration, default=120.0, metavar="DURATION", help="default 120s")
    p.add_argument("--drain-time", type=_duration, default=30.0, metavar="DURATION", help="default 30s")
    p.add_argument("--interval", type=_duration, default=60.0, metavar="DURATION", help="default 60s")
    p.add_argument("--unserved-penalty", type=_non_negative, default=10.0, metavar="P", help="default 10")
    p.set_defaults(func=_run)


def _show(value: Any, name: str) -> str:
    if name in ("keep", "level_halflife", "scale_in_window", "lookahead"):
        return format_duration(float(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _row(label: str, o: Outcome, hpa: Outcome) -> str:
    ratio = o.penalized_cost / hpa.penalized_cost if hpa.penalized_cost > 0 else float("nan")
    launches = o.launches / hpa.launches if hpa.launches else float("nan")
    return (f"  {label:<8} unserved {o.unserved_fraction:.4f}  instance-hours {o.instance_hours:9.1f}  "
            f"launches {o.launches:6d} ({launches:.2f} of HPA)  penalized cost {o.penalized_cost:9.1f} "
            f"({ratio:.2f} of HPA)")


def _print(result: TuneResult, history: str, report: bool) -> None:
    from datetime import UTC, datetime

    cut = datetime.fromtimestamp(result.split, UTC).strftime("%Y-%m-%d %H:%M:%S")
    changes = [f"{k} {_show(result.before[k], k)} -> {_show(result.after[k], k)}"
               for k in result.after if result.after[k] != result.before[k]]
    print(f"fitted on {history} before {cut} UTC; scored from {cut} UTC on (held back from the fit)")
    print("parameters: " + ("; ".join(changes) if changes else "unchanged (the policy's own values fit best)"))
    if report:
        print(f"candidates on the fitting part (HPA there: penalized cost {result.fit_hpa.penalized_cost:.1f}, "
              f"unserved {result.fit_hpa.unserved_fraction:.4f}):")
        for t in sorted(result.trials, key=lambda t: t.outcome.penalized_cost):
            params = ", ".join(f"{k} {_show(v, k)}" for k, v in t.params.items())
            note = "" if t.feasible else "  (misses the bar: more unserved than HPA, or over half its launches)"
            print(f"  {params}: penalized cost {t.outcome.penalized_cost:.1f}, unserved "
                  f"{t.outcome.unserved_fraction:.4f}, launches {t.outcome.launches}{note}")
    s = result.scores
    assert s is not None
    print("held-back part:")
    print(_row("before", s.before, s.hpa))
    print(_row("after", s.after, s.hpa))
    print(_row("hpa", s.hpa, s.hpa))


def schema_line(text: str, source: Path, output: Path) -> str:
    """The `$schema` comment for the written policy: the source's, re-pointed from the output's directory,
    else the shipped schema's."""
    for line in text.splitlines():
        if line.startswith(SCHEMA_MARK):
            ref = line[len(SCHEMA_MARK):].strip()
            if "://" in ref:
                return line
            target = (source.parent / ref).resolve()
            break
    else:
        target = SHIPPED_SCHEMA
    return SCHEMA_MARK + os.path.relpath(target, output.resolve().parent)


def write_tuned(source: Path, output: Path, name: str, params: dict[str, Any]) -> None:
    """Write ``source`` with the strategy fields of policy ``name`` set to ``params`` (comments kept), and
    the `$schema` line first."""
    from ruamel.yaml import YAML

    text = source.read_text(encoding="utf-8")
    line = schema_line(text, source, output)
    body = "\n".join(x for x in text.splitlines() if not x.startswith(SCHEMA_MARK)) + "\n"
    yaml = YAML()
    yaml.preserve_quotes = True
    docs = list(yaml.load_all(body))
    for doc in docs:
        if isinstance(doc, dict) and doc.get("name") == name:
            for key, value in params.items():
                doc["strategy"][key] = _yaml_value(key, value)
    out = StringIO()
    yaml.dump_all(docs, out)
    written = line + "\n" + out.getvalue().lstrip("\n")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.resolve().parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(written)
        os.replace(tmp, output)
    except OSError as exc:
        raise BurstError(f"cannot write {output}: {exc.strerror or exc}") from None


def _yaml_value(key: str, value: Any) -> Any:
    if key in ("keep", "level_halflife", "scale_in_window", "lookahead"):
        return format_duration(float(value))
    return value


def _run(args: argparse.Namespace) -> int:
    source = Path(args.policy)
    policy = _load_policy(args.policy, args.name)
    trace = load_trace(args.history, column=args.column)
    x, y, _ = capacities(policy, trace, args.onprem_capacity, args.replica_capacity)
    if x <= 0 or y <= 0:
        raise ConfigError("zero capacity", [(f"{args.history}: the default capacities are 0: pass "
                                             "--onprem-capacity and --replica-capacity")])
    s = default_settings(trace, x, y, args.boot_delay, args.interval, args.unserved_penalty, args.drain_time)
    output = Path(args.output) if args.output else source.with_name(f"{source.stem}.tuned{source.suffix}")
    result = tune(policy, trace, s, args.fit_share)
    score(result, policy, trace, s)
    _print(result, args.history, args.report)
    write_tuned(source, output, policy.name, result.after)
    from policies.loader import load_policies

    check = load_policies([str(output)])
    if check.problems:  # never leave a policy the daemon would refuse
        raise ConfigError(f"{output}: the tuned policy does not validate", [str(p) for p in check.problems])
    print(f"wrote {output}")
    return 0
