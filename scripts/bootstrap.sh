#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine: the system packages (when missing) and the
# package itself with its test extras into ./.venv.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh install
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
if ! .venv/bin/python -c "import controller, pytest, fastapi" 2>/dev/null || [ pyproject.toml -nt .venv/.installed ]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/pip install -q -e '.[test]'
  touch .venv/.installed
fi
