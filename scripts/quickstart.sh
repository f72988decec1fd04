#!/usr/bin/env bash
# The README's first command: install what is needed and run the main job on the embedded default
# (local ECS emulator, local registries, local Docker Engine, SQLite). Stops what it started on exit.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh || exit 1
export BURST_SERVICES_STARTED; BURST_SERVICES_STARTED=$(mktemp)
scripts/services.sh start || { scripts/services.sh stop; exit 1; }
trap 'scripts/services.sh stop' EXIT
eval "$(scripts/services.sh env | sed 's/^/export /')"
.venv/bin/burstctl demo "$@"
