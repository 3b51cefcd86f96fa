#!/usr/bin/env bash
# Create .venv (if missing) and install the package with the given extras.
# Usage: scripts/setup_env.sh EXTRAS    e.g. scripts/setup_env.sh data   or   dev
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[${1:-dev}]"
