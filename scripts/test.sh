#!/usr/bin/env bash
# Install the test dependencies and run the whole suite: first on a classic local[2]
# SparkSession, then the tests marked `connect` again under a Spark Connect session while the
# cluster tests run on a real standalone cluster, classic and through Spark Connect (the kinds of
# session cannot share one Python process).  Builds Horovod into .venv first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh dev
# Horovod is built from source for the installed torch (3-18 minutes, once per machine: the wheel
# is cached, see the script): the horovod-backend tests of TorchEstimator run in CI.
bash scripts/install_horovod.sh
# Fashion-MNIST (the CNN and data-set tests) is Debian's package dataset-fashion-mnist (30 MB).
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian's dataset-fashion-mnist (once per machine)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; } \
      >/tmp/sparkml_scale-apt.log 2>&1 || { cat /tmp/sparkml_scale-apt.log >&2; exit 1; }
  else
    echo "warning: /usr/share/datasets/fashion-mnist is missing and apt-get cannot run as $(id -un):" \
         "install dataset-fashion-mnist or its tests are skipped" >&2
  fi
fi
export PYTHONDONTWRITEBYTECODE=1
.venv/bin/python -m pytest -q --durations=30 "$@"
# The Connect run beside the two cluster runs, on a real standalone cluster (tests/cluster.py: a
# master and two 1-core workers on 127.0.0.2/.3), first from a classic spark:// session, then from
# a Spark Connect client through a Connect server on it: the cluster runs mostly wait on their
# executors, and nothing is shared (the local Connect server listens on 15002, the cluster and its
# Connect server on free ports).  The Connect run's output follows the cluster runs'.
connect_log=$(mktemp "${TMPDIR:-/tmp}/sparkml_scale-connect-tests.XXXXXX")
SPARKML_SCALE_TEST_CONNECT=1 .venv/bin/python -m pytest -q -m connect "$@" >"$connect_log" 2>&1 &
connect_pid=$!
cluster_rc=0
SPARKML_SCALE_TEST_CLUSTER=1 .venv/bin/python -m pytest -q -m cluster tests/test_cluster.py "$@" || cluster_rc=$?
SPARKML_SCALE_TEST_CLUSTER=1 SPARKML_SCALE_TEST_CONNECT=1 .venv/bin/python -m pytest -q -m "cluster and connect" \
  tests/test_cluster.py "$@" || cluster_rc=$?
connect_rc=0
wait "$connect_pid" || connect_rc=$?
echo "== tests marked connect, under Spark Connect (ran beside the cluster runs) =="
cat "$connect_log"
rm -f "$connect_log"
if [ "$connect_rc" != 0 ] || [ "$cluster_rc" != 0 ]; then
  echo "Connect run: exit $connect_rc; cluster runs: exit $cluster_rc (the last that failed)" >&2
  exit 1
fi
