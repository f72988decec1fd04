"""Decision quality of the shipped policy: `burstctl simulate` with the defaults on every trace in
/work/shared/traces and on synthetic families generated with fixed seeds (a daily cycle with lighter
weekends, flash crowds, per-minute noise, four weeks with a deep weekly dip, regime shifts), the policy next to
HPA, step scaling and the oracle, with its ratios to HPA. Then, so over-fitting shows, `burstctl tune`'s
time-ordered validation on each trace: parameters fitted on the first half, the policy as shipped and as
tuned scored on the second half only, next to HPA there. Last, the noise floor of each synthetic family
(bench/noise_floor.py): what no policy can beat there.

Two bars: issue 2's (a lower penalized cost than HPA, no more launches, not dominated by a baseline; exit 1
if it fails anywhere) and issue 17's (penalized cost and launches at most half of HPA's, no more load
unserved than HPA), reported per trace.

    .venv/bin/python bench/decision_quality.py [--policy deploy/policies.d/web.yaml] [--traces DIR]
        [--no-synthetic] [--no-tune] [--markdown]
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from noise_floor import Floor, noise_floor
from synthetic_traces import SHAPES, make

from controller.sim.simulator import Outcome, criteria_failures, default_settings, simulate
from controller.sim.trace import Trace, load_trace
from controller.sim.tuning import score, tune
from policies.loader import load_policies

ROOT = Path(__file__).resolve().parent.parent
HEADER = ["trace", "run", "unserved", "instance-hours", "launches", "penalized cost", "cost / HPA",
          "launches / HPA"]


def _trace(kind: str, where: str) -> Trace:
    return make(where) if kind == "synthetic" else load_trace(where)


def _row(label: str, run: str, o: Outcome, hpa: Outcome) -> list[Any]:
    return [label, run, o.unserved_fraction, o.instance_hours, o.launches, o.penalized_cost,
            o.penalized_cost / hpa.penalized_cost if hpa.penalized_cost else float("nan"),
            o.launches / hpa.launches if hpa.launches else float("nan")]


def issue17_failures(p: Outcome, hpa: Outcome) -> list[str]:
    """Issue 17's bar: penalized cost and launches at most half of HPA's, no more load unserved."""
    out = []
    if p.penalized_cost > 0.5 * hpa.penalized_cost:
        out.append(f"cost {p.penalized_cost / hpa.penalized_cost:.2f} of HPA's")
    if p.launches > 0.5 * hpa.launches:
        out.append(f"launches {p.launches / hpa.launches:.2f} of HPA's")
    if p.unserved_fraction > hpa.unserved_fraction:
        out.append(f"unserved {p.unserved_fraction:.4f} > HPA's {hpa.unserved_fraction:.4f}")
    return out


def _simulate(args: tuple[str, str, str]) -> tuple[str, list[list[Any]], list[str], list[str], float]:
    policy_path, kind, where = args
    policy = next(iter(load_policies([policy_path]).policies.values()))
    trace = _trace(kind, where)
    t0 = time.process_time()
    report = simulate(policy, trace, default_settings(trace))
    label = Path(trace.name).name
    rows = [_row(label, run, o, report.hpa) for run, o in (("policy", report.policy), ("hpa", report.hpa),
                                                            ("step", report.step))]
    rows.append([label, "oracle", "", report.oracle_instance_hours, "", "", "", ""])
    return (label, rows, criteria_failures(report), issue17_failures(report.policy, report.hpa),
            time.process_time() - t0)


def _validate(args: tuple[str, str, str]) -> tuple[str, list[list[Any]], str, list[str]]:
    policy_path, kind, where = args
    policy = next(iter(load_policies([policy_path]).policies.values()))
    trace = _trace(kind, where)
    s = default_settings(trace)
    result = tune(policy, trace, s, 0.5)
    sc = score(result, policy, trace, s)
    label = Path(trace.name).name
    changes = ", ".join(f"{k} {result.before[k]:g}->{v:g}" for k, v in result.after.items()
                        if v != result.before[k]) or "unchanged"
    rows = [_row(label, run, o, sc.hpa) for run, o in (("shipped", sc.before), ("tuned", sc.after),
                                                        ("hpa", sc.hpa))]
    return label, rows, changes, issue17_failures(sc.after, sc.hpa)


def _fmt(v: object, col: int) -> str:
    if isinstance(v, float):
        if HEADER[col] == "unserved":
            return f"{v:.4f}"
        return f"{v:.2f}" if "/" in HEADER[col] else f"{v:.1f}"
    return str(v)


def _print(title: str, rows: list[list[Any]], notes: dict[str, str], markdown: bool) -> None:
    if markdown:
        print(f"\n**{title}**\n")
        print("| " + " | ".join(HEADER) + " |")
        print("|" + "---|" * len(HEADER))
        for r in rows:
            print("| " + " | ".join(_fmt(v, i) for i, v in enumerate(r)) + " |")
        for label, note in notes.items():
            print(f"\n- {label}: {note}")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for h in HEADER:
        table.add_column(h, justify="left" if h in ("trace", "run") else "right")
    for k, r in enumerate(rows):
        last = k + 1 == len(rows) or rows[k + 1][0] != r[0]
        table.add_row(*[_fmt(v, i) for i, v in enumerate(r)], end_section=last)
    console = Console(width=200)
    console.print(table)
    for label, note in notes.items():
        console.print(f"  {label}: {note}", highlight=False, soft_wrap=True)


def _print_floors(floors: list[Floor], markdown: bool) -> None:
    """bench/noise_floor.py's figures: what no policy can beat on each synthetic family."""
    title = ("the noise floor: the least penalized cost / HPA's of a policy that knew the load's whole course "
             "in advance, all but its per-minute noise (bench/noise_floor.py)")
    head = ["trace", "HPA unserved", "least cost / HPA", "its unserved", "least cost / HPA with unserved <= HPA's",
            "its unserved", "rule"]
    rows = [[f.trace, f"{f.hpa_unserved:.5f}", f"{f.best_ratio:.2f}", f"{f.best_unserved:.5f}", f"{f.ratio:.2f}",
             f"{f.unserved:.5f}", f.rule] for f in floors]
    if markdown:
        print(f"\n**{title}**\n")
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        print(f"\n{title}")
        print("  ".join(head))
        for r in rows:
            print("  ".join(r))
    out = [f.trace for f in floors if f.ratio > 0.5]
    print(f"\nno policy can meet issue 17's bar on: {', '.join(out) or 'none'} (even the floor costs more than "
          "half of HPA's there without leaving more load unserved than HPA)")


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--policy", default=str(ROOT / "deploy/policies.d/web.yaml"))
    ap.add_argument("--traces", default="/work/shared/traces")
    ap.add_argument("--no-synthetic", action="store_true")
    ap.add_argument("--no-tune", action="store_true", help="skip the fit-on-the-first-half validation")
    ap.add_argument("--markdown", action="store_true", help="print the tables as Markdown (for docs)")
    args = ap.parse_args()
    loaded = load_policies([args.policy])
    if loaded.problems:
        for p in loaded.problems:
            print(p, file=sys.stderr)
        return 2
    jobs = [(args.policy, "file", str(p)) for p in sorted(Path(args.traces).glob("*.csv"))]
    if not args.no_synthetic:
        jobs += [(args.policy, "synthetic", shape) for shape in SHAPES]
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_simulate, jobs))
        validated = [] if args.no_tune else list(pool.map(_validate, jobs))
        floors = [] if args.no_synthetic else list(pool.map(noise_floor, SHAPES))
    rows: list[list[Any]] = []
    notes: dict[str, str] = {}
    failed = False
    met17 = 0
    for label, trace_rows, failures, bar17, cpu in results:
        rows += trace_rows
        failed |= bool(failures)
        met17 += not bar17
        notes[label] = ("issue 2: " + ("PASS" if not failures else "FAIL: " + "; ".join(failures))
                        + "; issue 17: " + ("met" if not bar17 else "not met: " + ", ".join(bar17))
                        + f" ({cpu:.1f} s cpu)")
    _print(f"decision quality of {args.policy}", rows, notes, args.markdown)
    if validated:
        vrows: list[list[Any]] = []
        vnotes: dict[str, str] = {}
        for label, trace_rows, changes, bar17 in validated:
            vrows += trace_rows
            vnotes[label] = f"fitted: {changes}; tuned on the second half, issue 17: " + (
                "met" if not bar17 else "not met: " + ", ".join(bar17))
        _print("fitted on the first half, scored on the second half only", vrows, vnotes, args.markdown)
    if floors:
        _print_floors(floors, args.markdown)
    print(f"issue 2's criteria: {'all met' if not failed else 'NOT met on some trace'}; "
          f"issue 17's bar met on {met17} of {len(results)} traces")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
