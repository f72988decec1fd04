#!/usr/bin/env bash
# The whole test suite, on the real components. The README's second quickstart command, and what
# .ci/run calls. Installs what is missing (apt-get update once), starts what the tests need, runs
# pytest, stops what it started. Extra arguments go to pytest. pytest's exit code 5 (no tests) fails.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh || exit 1
export BURST_SERVICES_STARTED; BURST_SERVICES_STARTED=$(mktemp)
scripts/services.sh start || { scripts/services.sh stop; exit 1; }
trap 'scripts/services.sh stop' EXIT
eval "$(scripts/services.sh env | sed 's/^/export /')"
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" = 5 ]; then echo "test.sh: pytest collected no tests: failing" >&2; rc=1; fi
if [ "$rc" = 0 ] && [ -z "${BURST_SKIP_LINT:-}" ] && [ $# = 0 ]; then
  echo "test.sh: lint-imports (layering contracts)"; .venv/bin/lint-imports --no-cache || rc=1
  echo "test.sh: mypy (type hints)"; .venv/bin/mypy controller adapters policies || rc=1
fi
exit $rc
