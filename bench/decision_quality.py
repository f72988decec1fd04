"""Decision quality of the shipped policy: `burstctl simulate` with the defaults on every trace in
/work/shared/traces (and synthetic daily / flash-crowd / noise traces), the policy next to HPA, step and
the oracle. Prints the table; exits 1 if a criterion of issue 2 fails on any trace.

    .venv/bin/python bench/decision_quality.py [--policy deploy/policies.d/web.yaml] [--traces DIR]
        [--no-synthetic] [--markdown]
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_traces import SHAPES, make

from controller.cli.simulate import KEYS, report_json
from controller.sim.simulator import criteria_failures, default_settings, simulate
from controller.sim.trace import Trace, load_trace
from policies.loader import load_policies

ROOT = Path(__file__).resolve().parent.parent


def _one(args: tuple[str, str, str | None]) -> tuple[str, dict, list[str], float]:
    policy_path, kind, where = args
    policy = next(iter(load_policies([policy_path]).policies.values()))
    trace: Trace = make(where) if kind == "synthetic" else load_trace(where)  # type: ignore[arg-type]
    t0 = time.process_time()
    report = simulate(policy, trace, default_settings(trace))
    return trace.name, report_json(report, policy.name, trace.name), criteria_failures(report), time.process_time() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default=str(ROOT / "deploy/policies.d/web.yaml"))
    ap.add_argument("--traces", default="/work/shared/traces")
    ap.add_argument("--no-synthetic", action="store_true")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown (for docs)")
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
        results = list(pool.map(_one, jobs))
    rows = []
    failed = False
    for name, out, failures, cpu in results:
        label = Path(name).name
        for run, figures in (("policy", out), ("hpa", out["baselines"]["hpa"]), ("step", out["baselines"]["step"])):
            rows.append([label, run] + [figures[k] for k in KEYS])
        rows.append([label, "oracle", "", "", out["oracle_instance_hours"], "", "", ""])
        verdict = "PASS" if not failures else "FAIL: " + "; ".join(failures)
        rows.append([label, "criteria", verdict, "", "", "", "", ""])
        failed |= bool(failures)
    header = ["trace", "run"] + list(KEYS)

    def fmt(v: object, col: int = 0) -> str:
        if isinstance(v, float):
            return f"{v:.4f}" if header[col] == "unserved_fraction" else f"{v:.1f}"
        return str(v)

    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for r in rows:
            print("| " + " | ".join(fmt(v, i) for i, v in enumerate(r)) + " |")
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"decision quality of {args.policy}", title_justify="left")
        for h in header:
            table.add_column(h.replace("_", " "), justify="left" if h in ("trace", "run") else "right")
        for r in rows:
            table.add_row(*[fmt(v, i) for i, v in enumerate(r)], end_section=r[1] == "criteria")
        Console(width=200).print(table)
    print("criteria: " + ("all met" if not failed else "NOT met on some trace"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
