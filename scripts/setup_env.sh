#!/usr/bin/env bash
# Create .venv (if missing) and install the package with the given extras.
# Usage: scripts/setup_env.sh EXTRAS    e.g. scripts/setup_env.sh data   or   dev
# pip's output (build warnings, index notices) goes to .venv/pip-install.log and is shown only
# when the install fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=${1:-dev}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv ($("$PY" -V 2>&1))"
  "$PY" -m venv .venv
fi
log=.venv/pip-install.log
start=$SECONDS
echo "setup: installing sparkml-scale[$extras] into .venv (the first time takes minutes; pip's log: $log)"
if ! { .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip \
       && .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "setup: pip install -e \".[$extras]\" failed (output above, also in $log)" >&2
  exit 1
fi
echo "setup: done in $((SECONDS - start)) s"
