#!/usr/bin/env bash
# Install the test dependencies and run the whole suite: first on a classic local[2]
# SparkSession, then the tests marked `connect` again under a Spark Connect session
# (the two kinds of session cannot share one Python process).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh dev
export PYTHONDONTWRITEBYTECODE=1
.venv/bin/python -m pytest -q "$@"
SPARKML_SCALE_TEST_CONNECT=1 .venv/bin/python -m pytest -q -m connect "$@"
