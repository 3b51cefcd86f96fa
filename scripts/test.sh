#!/usr/bin/env bash
# Install the test dependencies and run the whole suite: first on a classic local[2]
# SparkSession, then the tests marked `connect` again under a Spark Connect session
# (the two kinds of session cannot share one Python process).  Builds Horovod into .venv first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh dev
# Horovod is built from source for the installed torch (3-18 minutes, once per machine: the wheel
# is cached, see the script): the horovod-backend tests of TorchEstimator run in CI.
bash scripts/install_horovod.sh
export PYTHONDONTWRITEBYTECODE=1
.venv/bin/python -m pytest -q "$@"
SPARKML_SCALE_TEST_CONNECT=1 .venv/bin/python -m pytest -q -m connect "$@"
