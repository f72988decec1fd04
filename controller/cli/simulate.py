"""`burstctl simulate --policy FILE --trace CSV ...`: replay a load trace through a policy's decision engine
with a simulated clock and fleet, next to the HPA and step-scaling baselines and the oracle.
The model is in controller/sim/simulator.py; the text, JSON, PNG and HTML outputs are built here."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from typing import Any

from controller.errors import ConfigError
from controller.sim.simulator import (
    Outcome,
    Report,
    criteria_failures,
    default_settings,
    metric_view,
    simulate,
    with_warm_pool,
)
from controller.sim.trace import load_trace
from policies.units import format_duration, parse_duration

__all__ = ["add_parser", "capacities", "price_per_replica_hour", "report_json", "verdict"]

KEYS = ("unserved_fraction", "overload_minutes", "instance_hours", "launches", "max_replicas", "penalized_cost")


def _duration(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' must be longer than zero")
    return seconds


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' must be a number above zero")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"'{text}' must be a number, zero or more")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate", help="replay a load trace through a policy, next to the HPA and step baselines",
        description="Replay a load trace (CSV: timestamp,demand) through the policy's decision engine with a "
                    "simulated clock and fleet. On-prem serves up to X load units; each cloud replica adds Y "
                    "once booted. Prints unserved demand, instance-hours and cost for the policy, the HPA and "
                    "step baselines, and the oracle's instance-hours. See docs/decisions.md.")
    p.add_argument("--policy", required=True, metavar="FILE", help="policy file (YAML)")
    p.add_argument("--name", metavar="NAME", help="which policy, when FILE holds several")
    p.add_argument("--trace", required=True, metavar="CSV", help="load trace: timestamp,demand rows")
    p.add_argument("--column", metavar="NAME|N",
                   help="the value column of a CSV with several: its header name, or its number (the "
                        "timestamp is column 1)")
    p.add_argument("--onprem-capacity", type=_positive, metavar="X",
                   help="load units on-prem serves (default: 100 when the policy's metric is a CPU percentage "
                        "of on-prem, else the trace's 75th percentile)")
    p.add_argument("--replica-capacity", type=_positive, metavar="Y",
                   help="load units one cloud replica serves (default: X / strategy.onprem_replicas when the "
                        "strategy says it, else X / 10)")
    p.add_argument("--boot-delay", type=_duration, default=120.0, metavar="DURATION",
                   help="launch to serving (default 120s)")
    p.add_argument("--baked-boot", type=_duration, default=None, metavar="DURATION",
                   help="launch to serving on a baked node image (default: none baked, every cold node takes "
                        "--boot-delay)")
    p.add_argument("--warm-boot", type=_duration, default=40.0, metavar="DURATION",
                   help="start to serving for a warm node of the policy's warm pool (default 40s)")
    p.add_argument("--warm-pool", type=int, default=None, metavar="N",
                   help="warm pool size instead of the policy's warm_pool.size (0: none)")
    p.add_argument("--drain-time", type=_duration, default=30.0, metavar="DURATION",
                   help="drained to gone: still billing and holding budget (default 30s)")
    p.add_argument("--interval", type=_duration, default=60.0, metavar="DURATION",
                   help="how often the policy is evaluated (default 60s)")
    p.add_argument("--unserved-penalty", type=_non_negative, default=10.0, metavar="P",
                   help="cost of one replica-hour of demand turned away, in instance-hours (default 10)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--plot", metavar="PNG", help="write a PNG of demand, capacity and replicas over time")
    p.add_argument("--report", metavar="HTML",
                   help="write a self-contained HTML report with an interactive chart (no network needed)")
    p.set_defaults(func=_run)


def _load_policy(path: str, name: str | None) -> Any:
    from policies.loader import load_policies

    result = load_policies([path])
    if result.problems:
        raise ConfigError(f"{path}: invalid policy", [str(problem) for problem in result.problems])
    if not result.policies:
        raise ConfigError(f"{path}: no policy in the file", [f"{path}:1:1: no policy in the file"])
    if name is not None:
        if name not in result.policies:
            raise ConfigError(f"{path}: no policy named {name}",
                              [f"{path}: no policy named {name!r} (found {', '.join(sorted(result.policies))})"])
        return result.policies[name]
    if len(result.policies) > 1:
        raise ConfigError(f"{path}: several policies",
                          [(f"{path}: holds {len(result.policies)} policies "
                            f"({', '.join(sorted(result.policies))}); choose one with --name")])
    return next(iter(result.policies.values()))


# metric sources whose value is a percentage of the on-prem capacity: on-prem saturates at 100
_PERCENT_OF_ONPREM = ("host_cpu", "workload_cpu")


def capacities(policy: Any, trace: Any, onprem: float | None, replica: float | None) -> tuple[float, float, str]:
    """X and Y for the run, from the flags, else from what the policy says, else from the trace; and a
    note of where each came from."""
    source = str(policy.metric.source)
    if onprem is not None:
        x, x_from = onprem, "--onprem-capacity"
    elif source in _PERCENT_OF_ONPREM:
        x, x_from = 100.0, f"the metric ({source}) is a percentage of on-prem capacity"
    else:
        x, x_from = trace.percentile(75.0), "the trace's 75th percentile: pass --onprem-capacity to set it"
    onprem_replicas = getattr(policy.strategy, "onprem_replicas", None)
    if replica is not None:
        y, y_from = replica, "--replica-capacity"
    elif onprem_replicas:
        y, y_from = x / float(onprem_replicas), f"X / strategy.onprem_replicas {float(onprem_replicas):g}"
    else:
        y, y_from = x / 10.0, "X / 10: pass --replica-capacity to set it"
    return x, y, f"X={x:g} ({x_from}), Y={y:g} ({y_from})"


def price_per_replica_hour(policy: Any) -> float:
    """What one replica-hour costs at the policy's prices: its first instance type's price per hour, shared by
    the replicas one instance holds."""
    from controller.loop.budget import per_node

    price = float(policy.budget.prices.get(policy.cloud.instance_types[0], 0.0))
    return price / per_node(policy)


def verdict(report: Report) -> str:
    """One line: does the policy pass against the baselines (a lower penalized cost than HPA, no more
    launches, not dominated by either baseline on unserved demand and instance-hours), and if not, why."""
    failures = criteria_failures(report)
    p = report.policy
    if not failures:
        return (f"verdict: PASS: penalized cost {p.penalized_cost:.1f} below HPA's {report.hpa.penalized_cost:.1f} "
                f"(step {report.step.penalized_cost:.1f}), no more launches than HPA, neither baseline better on "
                "both unserved demand and instance-hours")
    return "verdict: FAIL: " + "; ".join(failures)


def _outcome_json(o: Outcome, price: float = 0.0) -> dict[str, float | int]:
    d = o.as_dict()
    out: dict[str, float | int] = {k: d[k] for k in KEYS}
    out["replicas_launched"] = d["replicas_launched"]
    out["warm_starts"], out["warm_node_hours"] = d["warm_starts"], d["warm_node_hours"]
    out["cost"] = o.instance_hours * price
    for k, v in out.items():
        if isinstance(v, float):
            out[k] = round(v, 6)
    return out


def report_json(report: Report, policy_name: str, trace_name: str, price: float = 0.0,
                metric_reads: str | None = None) -> dict[str, Any]:
    """The --json object: the policy's figures at the top level, the baselines under ``baselines``; ``cost``
    is instance-hours at ``price`` per replica-hour (the policy's budget.prices); ``settings.metric_reads``
    what the policy's metric reads in the model (``simulator.metric_view``)."""
    s = report.settings
    out: dict[str, Any] = {"policy": policy_name, "trace": trace_name}
    out.update(_outcome_json(report.policy, price))
    out["baselines"] = {"hpa": _outcome_json(report.hpa, price), "step": _outcome_json(report.step, price)}
    out["oracle_instance_hours"] = round(report.oracle_instance_hours, 6)
    out["price_per_replica_hour"] = price
    out["verdict"] = verdict(report)
    out["settings"] = {"onprem_capacity": s.onprem_capacity, "replica_capacity": s.replica_capacity,
                       "boot_delay": s.boot_delay, "drain_time": s.drain_time, "interval": s.interval,
                       "unserved_penalty": s.unserved_penalty, "steps": report.steps,
                       "baked_boot": s.baked_boot, "warm_boot": s.warm_boot, "warm_pool": s.warm_size,
                       "warm_max_age": s.warm_max_age, "disk_fraction": round(s.disk_fraction, 6)}
    return out


def _print_table(report: Report, policy_name: str, trace_name: str, price: float, source: str) -> None:
    from rich.table import Table

    from controller.cli.output import wide_console

    s = report.settings
    table = Table(title=f"{policy_name} on {trace_name}", title_justify="left")
    table.add_column("run")
    for key in KEYS:
        table.add_column(key.replace("_", " "), justify="right")
    table.add_column("cost", justify="right")
    for label, o in (("policy " + policy_name, report.policy), ("hpa", report.hpa), ("step", report.step)):
        table.add_row(label, f"{o.unserved_fraction:.4f}", f"{o.overload_minutes:.0f}", f"{o.instance_hours:.1f}",
                      str(o.launches), str(o.max_replicas), f"{o.penalized_cost:.1f}",
                      f"{o.instance_hours * price:.2f}")
    table.add_row("oracle", "0", "0", f"{report.oracle_instance_hours:.1f}", "", "", "",
                  f"{report.oracle_instance_hours * price:.2f}")
    console = wide_console()
    console.print(table)
    if s.warm_size or s.baked_boot is not None:
        o = report.policy
        console.print(f"warm pool {s.warm_size} (start {format_duration(s.warm_boot)}), baked boot "
                      f"{format_duration(s.baked_boot) if s.baked_boot is not None else 'none'}: {o.warm_starts} of "
                      f"{o.replicas_launched} replicas started warm, {o.warm_node_hours:.1f} stopped node-hours "
                      f"at {s.disk_fraction:.3f} of an instance-hour", highlight=False, soft_wrap=True)
    console.print(f"{source}; boot {format_duration(s.boot_delay)}, every {format_duration(s.interval)}, "
                  f"drain {format_duration(s.drain_time)}, penalty {s.unserved_penalty:g}; {report.steps} steps; "
                  f"cost at {price:g} per replica-hour "
                  "(budget.prices, the policy's currency)", highlight=False, soft_wrap=True)
    console.print(verdict(report), highlight=False, soft_wrap=True)


def _run(args: argparse.Namespace) -> int:
    policy = _load_policy(args.policy, args.name)
    trace = load_trace(args.trace, column=args.column)
    x, y, source = capacities(policy, trace, args.onprem_capacity, args.replica_capacity)
    source += f"; the policy's metric reads {metric_view(policy)[1]}"
    settings = default_settings(trace, x, y, args.boot_delay, args.interval, args.unserved_penalty,
                                args.drain_time)
    settings = with_warm_pool(dataclasses.replace(settings, baked_boot=args.baked_boot, warm_boot=args.warm_boot),
                              policy)
    if args.warm_pool is not None:
        settings = dataclasses.replace(settings, warm_size=max(0, args.warm_pool))
    price = price_per_replica_hour(policy)
    if settings.onprem_capacity <= 0 or settings.replica_capacity <= 0:
        raise ConfigError("zero capacity", [(f"{args.trace}: the trace's 75th percentile is 0, so the default "
                                             "capacities are 0: pass --onprem-capacity and --replica-capacity")])
    record = bool(args.plot or args.report)
    report = simulate(policy, trace, settings, record=record)
    if args.plot:
        from controller.sim.plot import write_png

        write_png(report, args.plot, f"{policy.name} on {args.trace}")
    if args.report:
        from controller.sim.report import write_html

        write_html(report, args.report, policy.name, args.trace, notes=[source, verdict(report)])
    if args.json:
        json.dump(report_json(report, policy.name, args.trace, price, metric_view(policy)[1]), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_table(report, policy.name, args.trace, price, source)
        for path in (args.plot, args.report):
            if path:
                print(f"wrote {path}")
    return 0
