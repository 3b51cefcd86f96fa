"""Shared fixtures: one SparkSession for the whole run.

Three kinds of run (scripts/test.sh runs all of them, each in its own Python process, since
the kinds of session cannot share one):

- default: a classic ``local[2]`` session; tests marked ``cluster`` are skipped;
- ``SPARKML_SCALE_TEST_CONNECT=1``: a Spark Connect session (local server), for the tests
  marked ``connect``;
- ``SPARKML_SCALE_TEST_CLUSTER=1``: only the tests marked ``cluster``, on a real standalone
  cluster (``tests/cluster.py``: a master and two 1-core workers on 127.0.0.2/.3, started
  here) through a classic ``spark://`` session; with ``SPARKML_SCALE_TEST_CONNECT=1`` as well,
  through a Spark Connect server running on that cluster (the tests marked both).
"""
import os
import subprocess
import sys
import time

import pytest

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.join(ROOT, "tests") not in sys.path:  # test modules import helpers, lr_data, cluster from here
    sys.path.insert(0, os.path.join(ROOT, "tests"))

from helpers import CLUSTER, CONNECT  # noqa: E402


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """The running :class:`tests.cluster.StandaloneCluster` (cluster runs only)."""
    if not CLUSTER:
        pytest.skip("cluster tests run with SPARKML_SCALE_TEST_CLUSTER=1 (scripts/test.sh does)")
    from cluster import StandaloneCluster

    c = StandaloneCluster(workers=2, cores=1, memory="3g")
    c.fault_dir = str(tmp_path_factory.mktemp("cluster_faults"))
    c.start()
    yield c
    c.stop()


def cluster_conf(c) -> dict:
    """Session settings for the test cluster: two 1-core executors, this Python on every executor."""
    return {
        "spark.executor.cores": "1", "spark.cores.max": "2", "spark.executor.memory": "2g",
        "spark.pyspark.python": sys.executable, "spark.sql.shuffle.partitions": "4",
        "spark.default.parallelism": "2", "spark.driver.host": "127.0.0.1",
        "spark.executorEnv.PYTHONPATH": ROOT + os.pathsep + os.path.join(ROOT, "tests"), "spark.executorEnv.SPARKML_SCALE_FAULT_DIR": c.fault_dir,
    }


@pytest.fixture(scope="session")
def spark(request):
    from sparkml_scale.core.session import get_session

    conf = {"spark.sql.shuffle.partitions": "4", "spark.default.parallelism": "2"}
    if CLUSTER:
        c = request.getfixturevalue("cluster")
        if CONNECT:
            server = _start_connect_server(c)
            session = get_session("sparkml_scale-cluster-tests", remote=f"sc://127.0.0.1:{server.port}")
        else:
            session = get_session("sparkml_scale-cluster-tests", master=c.url, conf=cluster_conf(c))
        _wait_for_executors(session, 2)
        yield session
        session.stop()
        if CONNECT:
            server.stop()
        return
    if CONNECT:
        session = get_session("sparkml_scale-tests", remote="local[2]", conf=conf)
    else:
        session = get_session("sparkml_scale-tests", master="local[2]", conf=conf)
    yield session
    session.stop()


def _wait_for_executors(session, n, timeout=90):
    from sparkml_scale.core.cluster import live_task_slots

    deadline = time.monotonic() + timeout
    while (live_task_slots(session) or 0) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the cluster's {n} executors did not register in {timeout} s")
        time.sleep(0.5)


class _ConnectServer:
    def __init__(self, proc, port, log):
        self.proc, self.port, self.log = proc, port, log

    def stop(self):
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def _start_connect_server(c, timeout=120):
    """A Spark Connect server on the cluster, started from the pyspark install as
    ``sbin/start-connect-server.sh`` does (spark-submit of SparkConnectServer), in the foreground."""
    from cluster import free_port, spark_home

    port, ui = free_port(), free_port()
    args = [os.path.join(spark_home(), "bin", "spark-submit"), "--master", c.url,
            "--class", "org.apache.spark.sql.connect.service.SparkConnectServer",
            "--name", "sparkml_scale-cluster-connect",
            "--conf", f"spark.connect.grpc.binding.port={port}", "--conf", f"spark.ui.port={ui}",
            "--conf", "spark.sql.execution.arrow.pyspark.enabled=true",
            "--conf", "spark.sql.execution.arrow.pythonUDF.columnarInput.enabled=false",
            "--conf", "spark.scheduler.barrier.maxConcurrentTasksCheck.maxFailures=1"]
    for k, v in cluster_conf(c).items():
        args += ["--conf", f"{k}={v}"]
    args.append("spark-internal")
    log_path = os.path.join(c.root, "connect-server.log")
    env = dict(os.environ, SPARK_HOME=spark_home(), PYSPARK_PYTHON=sys.executable)
    env.pop("SPARK_REMOTE", None)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = _ConnectServer(proc, port, log_path)
    deadline = time.monotonic() + timeout
    import socket

    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the Connect server exited: {open(log_path, errors='replace').read()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"the Connect server did not listen in {timeout} s")
        time.sleep(0.5)


def pytest_collection_finish(session):
    """Start the selected tests' background work (``start_in_background(items)`` of their module,
    see :func:`helpers.background`), in module order, before the first test runs."""
    seen = []
    for item in session.items:
        mod = getattr(item, "module", None)
        if mod is not None and mod not in seen and hasattr(mod, "start_in_background"):
            seen.append(mod)
    for mod in seen:
        mod.start_in_background([i for i in session.items if getattr(i, "module", None) is mod])


def pytest_collection_modifyitems(config, items):
    if CLUSTER:
        reason = "not a cluster test (runs without SPARKML_SCALE_TEST_CLUSTER)"
        for item in items:
            if "cluster" not in item.keywords or (CONNECT and "connect" not in item.keywords):
                item.add_marker(pytest.mark.skip(reason=reason))
        return
    for item in items:
        if "cluster" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="cluster test: runs with SPARKML_SCALE_TEST_CLUSTER=1"))
        elif CONNECT and "connect" not in item.keywords:
            item.add_marker(pytest.mark.skip(reason="classic-only test (run without SPARKML_SCALE_TEST_CONNECT)"))
