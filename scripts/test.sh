#!/usr/bin/env bash
# The whole test suite, on the real components. The README's second quickstart command, and what
# .ci/run calls. Installs what is missing (apt-get update once), starts what the tests need, runs
# pytest, stops what it started. Extra arguments go to pytest. pytest's exit code 5 (no tests) fails.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh || exit 1
export BURST_SERVICES_STARTED; BURST_SERVICES_STARTED=$(mktemp)
scripts/services.sh start || { scripts/services.sh stop; exit 1; }
other=""
# on any exit (an interrupt included): no pytest of ours left running, then stop what was started
trap '[ -n "$other" ] && kill "$other" 2>/dev/null; scripts/services.sh stop' EXIT
eval "$(scripts/services.sh env | sed 's/^/export /')"
# The whole suite (no arguments) runs as two pytest processes at once: the lab-based end-to-end tests
# spend most of their time waiting (boots, drains, time-outs), the rest mostly computes; together they fit
# the CI budget on 2 cores. Each group runs its tests one at a time, as the lab tests assume. Booted-node
# tests without a lab (test_booted_nodes, test_bake's lab of its own, the systemd suite's machine) run with
# the other tests, which end first otherwise (measured: lab tests 24 min, the others 12 min, before the move).
LAB_TESTS=(tests/e2e/test_e2e.py tests/e2e/test_e2e_roll.py tests/controller/ha/test_ha_pair.py
           tests/e2e/test_node_faults.py
           tests/lab/test_demo_cli.py tests/controller/status/test_dashboard_e2e.py tests/reliability
           tests/deploy/test_bridge_mac.py tests/e2e/test_e2e_config_files.py tests/e2e/test_warm_pool_e2e.py)
fail_on_no_tests() { if [ "$1" = 5 ]; then echo "test.sh: pytest collected no tests ($2): failing" >&2; echo 1; else echo "$1"; fi; }
if [ $# -gt 0 ]; then
  .venv/bin/python -m pytest "$@"
  rc=$(fail_on_no_tests $? "pytest $*")
else
  tmp=$(mktemp -d)
  ignore=(); for t in "${LAB_TESTS[@]}"; do ignore+=(--ignore "$t"); done
  .venv/bin/python -m pytest -p no:cacheprovider --basetemp "$tmp/other" --durations=10 "${ignore[@]}" \
    > "$tmp/other.log" 2>&1 &
  other=$!
  echo "test.sh: the lab tests here; the other tests run at the same time (their output follows)"
  .venv/bin/python -m pytest -p no:cacheprovider --basetemp "$tmp/lab" --durations=10 "${LAB_TESTS[@]}"
  rc_lab=$(fail_on_no_tests $? "lab tests")
  wait "$other"
  rc_other=$(fail_on_no_tests $? "other tests")
  other=""
  echo "test.sh: ---------------- the other tests ----------------"
  cat "$tmp/other.log"
  rm -rf "$tmp"
  rc=$(( rc_lab != 0 ? rc_lab : rc_other ))
  echo "test.sh: lab tests exit $rc_lab, other tests exit $rc_other"
fi
if [ "$rc" = 0 ] && [ -z "${BURST_SKIP_LINT:-}" ] && [ $# = 0 ]; then
  echo "test.sh: lint-imports (layering contracts)"; .venv/bin/lint-imports --no-cache || rc=1
  echo "test.sh: mypy (type hints)"; .venv/bin/mypy controller adapters policies lab || rc=1
fi
exit $rc
