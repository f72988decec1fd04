"""Issue 7, full counts: runs the reliability suite (tests/reliability/) with the full counts and the load
bench, then prints the table of what was tried and what held (the table of docs/reliability.md).

    .venv/bin/python bench/reliability.py [--crash-points 50] [--fuzz 10000] [--schema-examples 200]
                                          [--seed N] [--skip-load] [-- extra pytest args]

CI runs the same tests with reduced counts (scripts/test.sh). Needs what the suite needs: the services of
scripts/services.sh, root (a private dockerd, a tmpfs). Exit status 1 if any test failed."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _table(rows: list[dict[str, Any]]) -> str:
    by: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by.setdefault(row["part"], []).append(row)
    out = ["| part | tried | held |", "|---|---|---|"]
    for r in by.get("crash", []):
        out.append(f"| 1 crash consistency | {r['kills']} SIGKILLs of `burstctl run` at seeded random points; states "
                   f"interrupted {r['interrupted']}; {r['launched']} instances launched | unknown instances "
                   f"{r['unknown']}, duplicate launches {r['duplicates']}, backends without container "
                   f"{r['stray_backends']}, {r['drains_interrupted']} interrupted drains all completed, max spend "
                   f"{r['max_spend']}/h <= cap {r['cap']}, max live {r['max_live']} <= {r['max']}, leaks {r['leaks']} |")
    for r in by.get("cloud_faults", []):
        out.append(f"| 2 cloud faults | {r['calls']} ECS calls, {r['faults']} answered with throttling/5xx/NoStock, "
                   f"2 s spikes, a RunInstances timing out after creating | converged to {r['wanted']} in "
                   f"{r['converged_s']} s, {r['launched']} instances launched in all, max live {r['max_live']}, "
                   f"max spend {r['max_spend']}/h <= {r['cap']}, duplicates {r['duplicates']}, leaks {r['leaks']} |")
    for r in by.get("onprem_faults", []):
        out.append(f"| 3 on-prem faults | private dockerd (metrics source) stopped and restarted, HAProxy reloaded, "
                   f"state DB locked {r['db_locked_s']} s, state DB disk full {r['disk_full_s']} s | metric error "
                   f"in status after {r['metric_down_reported_s']} s, metric back {r['metric_back_s']} s after the "
                   f"engine, servers restored {r['servers_restored_s']} s after the reload, not ready while the "
                   f"store failed, writes resumed, scale-ins on missing data {r['scale_ins_on_missing_data']}; "
                   f"scale-in once idle {r['scale_in_s']} s |")
    for r in by.get("fuzz", []):
        out.append(f"| 4 bad input (hypothesis) | {r['policies']} policy files ({r['policies_valid']} valid), "
                   f"{r['configs']} controller configs ({r['configs_valid']} valid) | exceptions "
                   f"{r['exceptions']}, every problem FILE:LINE:COL, slowest {r['slowest_ms']} ms |")
    for r in by.get("schemathesis", []):
        out.append(f"| 4 bad input (schemathesis) | {r['requests']} generated requests to the live daemon's "
                   f"endpoint ({r['examples']} examples per operation x 3 tokens) | by status {r['by_status']}: "
                   f"no 5xx, all answers as documented |")
    for r in by.get("load", []):
        capacity = (f"; at capacity {r['capacity_rate']} req/s, p99 {r['capacity_p99_ms']} ms, "
                    f"{r['capacity_errors']} errors, tick x{r['capacity_ratio']}") if "capacity_rate" in r else ""
        out.append(f"| 5 load | {r['replicas']} replicas ({r['instances']} emulator instances), status clients "
                   f"{r['clients']} ({r.get('mix', 'mixed')}) at {r.get('target_rate', 'full')} req/s, loaded phases "
                   f"alternating with quiet ones | worst loaded phase {r['rate']} req/s, p50 {r['p50_ms']} ms, p99 "
                   f"{r['p99_ms']} ms, {r['errors']} errors; tick medians {r['tick_quiet_ms']} ms quiet, "
                   f"{r['tick_loaded_ms']} ms loaded: x{r['ratio']} (per phase {r.get('round_ratios', '?')}, noise "
                   f"floor {r.get('noise', '?')}); {r.get('builds_beside_a_round', '?')} of {r.get('builds', '?')} "
                   f"snapshot builds beside a step round{capacity} |")
    sec = by.get("security_leaks", [])
    modes = by.get("security_file_mode", [])
    tls = by.get("security_node_tls", [])
    if sec or modes or tls:
        held = []
        if sec:
            held.append(f"{sec[0]['found']} of {len(sec[0]['secrets'])} planted secrets found in "
                        f"{len(sec[0]['searched'])} places ({sec[0]['tables']} tables)")
        if modes:
            held.append(f"0644 files refused: {', '.join(m['which'] for m in modes if m['refused'])}")
        if tls:
            held.append(f"node Docker endpoint: no cert {tls[0]['without_cert']}, other CA {tls[0]['other_ca']}")
        out.append("| 6 security | planted access key secret, registry password, workload secret env, status "
                   "token; 401/403; loopback bind; file modes; node mTLS; user data | " + "; ".join(held) + " |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crash-points", type=int, default=50)
    ap.add_argument("--fuzz", type=int, default=10_000, help="documents of each kind (policies, configs)")
    ap.add_argument("--schema-examples", type=int, default=200)
    ap.add_argument("--seed", type=int, default=20240607)
    ap.add_argument("--skip-load", action="store_true")
    ap.add_argument("pytest_args", nargs="*")
    args = ap.parse_args()
    report = Path(tempfile.mkstemp(prefix="reliability-", suffix=".jsonl")[1])
    env = {**os.environ, "RELIABILITY_REPORT": str(report), "RELIABILITY_SEED": str(args.seed),
           "RELIABILITY_CRASH_POINTS": str(args.crash_points), "RELIABILITY_FUZZ_POLICIES": str(args.fuzz),
           "RELIABILITY_FUZZ_CONFIGS": str(args.fuzz),
           "RELIABILITY_FUZZ_CONFIGS_SEEDED": str(args.fuzz), "RELIABILITY_SCHEMA_EXAMPLES": str(args.schema_examples)}
    started = time.monotonic()
    tests = subprocess.run([sys.executable, "-m", "pytest", "tests/reliability", "-q", "-s", "-p", "no:cacheprovider",
                            "--timeout", "7200", *args.pytest_args], cwd=ROOT, env=env, check=False)
    if not args.skip_load:
        subprocess.run([sys.executable, "bench/reliability_load.py"], cwd=ROOT, env=env, check=False)
    rows = [json.loads(line) for line in report.read_text().splitlines() if line.strip()]
    report.unlink()
    print(f"\nreliability: seed {args.seed}, {time.monotonic() - started:.0f} s, tests "
          f"{'PASSED' if tests.returncode == 0 else 'FAILED'}\n")
    print(_table(rows))
    return 0 if tests.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
