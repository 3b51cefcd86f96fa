"""Every public stage on a real Spark standalone cluster (``tests/cluster.py``).

A master and two 1-core workers on 127.0.0.2 and 127.0.0.3, each executor its own JVM with
its own Python workers, the driver in this process (``spark://`` master, two executors of
one core).  scripts/test.sh runs this module with ``SPARKML_SCALE_TEST_CLUSTER=1``, then
the tests also marked ``connect`` again from a Spark Connect client, through a Connect
server running on the same cluster (as on Databricks shared compute).

Order matters for one test: the job by ``spark-submit`` runs first, before this module's
session takes the cluster's two cores (an application waits for free cores).
"""
import functools
import glob
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from pyspark.ml.linalg import Vectors

from helpers import CONNECT, vector_frame

pytestmark = pytest.mark.cluster

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEATURES = "carrier,origin,dest,month,hour,distance"
WORKER_HOSTS = {"127.0.0.2", "127.0.0.3"}


def _has(module):
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def _horovod():
    from sparkml_scale.torch.launch import horovod_available

    return horovod_available()


@pytest.fixture(scope="session", autouse=True)
def job_output(cluster, tmp_path_factory):
    """The job of the README's "On a cluster" command, by spark-submit in client mode on the
    cluster, over 15,000 flights (a sample of the embedded data, as a Parquet table).

    Session-scoped and autouse, so it runs before the session fixture ``spark`` takes the
    cluster's two cores (another application would wait for free cores).  Not in Connect runs
    (the Connect server holds the cores)."""
    if CONNECT:
        return None
    import pandas as pd

    from sparkml_scale.datasets import flights_path

    tmp = tmp_path_factory.mktemp("job")
    data = str(tmp / "flights.parquet")
    flights = pd.read_csv(flights_path()).drop(columns=["time_hour"])
    flights.sample(15000, random_state=7).to_parquet(data, index=False)
    out = str(tmp / "run1")
    import sparkml_scale.cli as cli
    from cluster import spark_home

    cmd = [os.path.join(spark_home(), "bin", "spark-submit"), "--master", cluster.url, "--deploy-mode", "client",
           "--conf", "spark.sql.execution.arrow.pyspark.enabled=true",
           "--conf", "spark.executor.cores=1", "--conf", "spark.executor.memory=2g",
           cli.__file__, "train", "--input", data, "--label", "arr_delay > 15", "--features", FEATURES,
           "--categorical", "month,hour", "--output", out, "--max-iter", "20"]
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    return {"proc": proc, "out": out, "data": data, "seconds": time.monotonic() - t0,
            "apps": cluster.state().get("completedapps", [])}


def test_job_by_spark_submit_on_the_cluster(job_output):
    proc, out = job_output["proc"], job_output["out"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "AUC" in proc.stdout, proc.stdout
    report = json.load(open(os.path.join(out, "report.json")))
    assert 0.6 < report["holdout_auc"] < 0.8 and report["rows_read"] == 15000, report
    assert os.path.isdir(os.path.join(out, "model")) and glob.glob(os.path.join(out, "predictions", "*.parquet"))
    # it ran as an application of the cluster, not in local mode
    assert any(a.get("name") for a in job_output["apps"]), job_output["apps"]


# ---------------------------------------------------------------- data


@pytest.fixture(scope="module")
def cancer(spark):
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    # 4 partitions on 2 slots: a barrier stage must coalesce to the slots
    return vector_frame(spark, X, y, parts=4)


@pytest.fixture(scope="module")
def diabetes(spark):
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    return vector_frame(spark, X, y, parts=3, cache=False)


# ---------------------------------------------------------------- the stages


def test_session_runs_on_two_executors_on_two_hosts(spark):
    from sparkml_scale.core.cluster import live_task_slots, task_slots

    assert live_task_slots(spark) == 2 and task_slots(spark) == 2
    assert spark.conf.get("spark.master").startswith("spark://")


def _executor_host():
    """The ``--hostname`` of the executor JVM this Python worker runs under (found through /proc:
    BarrierTaskContext's task addresses are the executors' connection addresses as the driver
    sees them, all 127.0.0.1 on loopback)."""
    pid = os.getpid()
    while pid > 1:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().decode(errors="replace").split("\0")
        if "org.apache.spark.executor.CoarseGrainedExecutorBackend" in args:
            return args[args.index("--hostname") + 1]
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
    return "?"


@pytest.mark.connect
@pytest.mark.parametrize("backend", ["gloo", "spark"])
def test_barrier_stage_spans_both_executors(spark, backend):
    from sparkml_scale.core.allreduce import run_barrier

    def task(batches, comm):
        n = sum(b.num_rows for b in batches)
        host = _executor_host()
        total = comm.allreduce([np.array([float(n)])])[0]
        code = {"gloo": 1, "spark": 2}.get(comm.backend, 0)
        return [total, np.array([float(int(host.split(".")[-1])), code])]

    out = run_barrier(spark.range(1000).repartition(2), 2, task, backend=backend)
    assert [o[0][0] for o in out] == [1000.0, 1000.0]
    assert {f"127.0.0.{int(o[1][0])}" for o in out} == WORKER_HOSTS
    assert {o[1][1] for o in out} == {1.0 if backend == "gloo" else 2.0}


@pytest.mark.connect
def test_feature_hasher_equals_spark(spark):
    from pyspark.ml.feature import FeatureHasher as SparkHasher

    from sparkml_scale.feature import FeatureHasher

    rows = [(i, f"c{i % 7}", i % 3 == 0, float(i) / 3, None if i % 5 == 0 else f"x{i % 11}") for i in range(300)]
    df = spark.createDataFrame(rows, "id long, s string, b boolean, v double, n string").repartition(3)
    cols = ["s", "b", "v", "n"]
    ours = FeatureHasher(inputCols=cols, outputCol="f", numFeatures=64).transform(df).select("id", "f")
    theirs = SparkHasher(inputCols=cols, outputCol="g", numFeatures=64).transform(df).select("id", "g")
    got = {r["id"]: r["f"] for r in ours.collect()}
    want = {r["id"]: r["g"] for r in theirs.collect()}
    assert len(got) == 300 and got == want


@pytest.mark.connect
def test_pca_equals_mllib(spark, cancer):
    from pyspark.ml.feature import PCA as SparkPCA

    from sparkml_scale.core import jvm
    from sparkml_scale.core.training import TrainingColumns
    from sparkml_scale.feature import PCA

    # the executors on the workers read the vectors through the package's JVM function (the jar
    # reached them through spark.jars, or as a Connect session artifact), not vector_to_array
    assert TrainingColumns(features="features").probe(cancer).bytes_function == jvm.FUNCTION
    ours = PCA(k=3, inputCol="features", outputCol="p").fit(cancer)
    theirs = SparkPCA(k=3, inputCol="features", outputCol="q").fit(cancer)
    np.testing.assert_allclose(ours.pc.toArray(), theirs.pc.toArray(), atol=1e-8)
    np.testing.assert_allclose(ours.explainedVariance.toArray(), theirs.explainedVariance.toArray(), rtol=1e-9)


@pytest.mark.connect
def test_linear_regression_equals_mllib(spark, diabetes):
    from pyspark.ml.regression import LinearRegression as SparkLR

    from sparkml_scale.regression import LinearRegression

    ours = LinearRegression(regParam=0.1).fit(diabetes)
    theirs = SparkLR(regParam=0.1, solver="normal").fit(diabetes)
    np.testing.assert_allclose(ours.coefficients.toArray(), theirs.coefficients.toArray(), rtol=1e-6, atol=1e-6)
    assert ours.intercept == pytest.approx(theirs.intercept, rel=1e-8)


@pytest.fixture(scope="module")
def lr_fits(spark, cancer):
    from sparkml_scale.classification import LogisticRegression

    out = {}
    for solver in ("mapreduce", "allreduce", "auto"):
        out[solver] = LogisticRegression(solver=solver, regParam=0.01, maxIter=100, tol=1e-8).fit(cancer)
    return out


@pytest.mark.connect
def test_logistic_regression_solvers_agree_and_auto_picks_allreduce(lr_fits):
    ref = lr_fits["mapreduce"]
    assert ref.summary.solverUsed == "mapreduce"
    for solver in ("allreduce", "auto"):
        m = lr_fits[solver]
        # auto finds the two live slots (the driver's scheduler on a classic session, the driver
        # UI's REST API from a Connect client) and chooses the barrier solver
        assert m.summary.solverUsed == "allreduce", solver
        assert m.summary.allreduceBackend == "gloo", solver
        assert m.summary.objectiveHistory[-1] == pytest.approx(ref.summary.objectiveHistory[-1], rel=1e-9)
        np.testing.assert_allclose(m.coefficients.toArray(), ref.coefficients.toArray(), rtol=1e-5, atol=1e-6)
    assert ref.summary.accuracy > 0.95


def test_logistic_regression_sgd_and_partial_fit(spark, cancer, lr_fits):
    from pyspark.ml.feature import StandardScaler

    from sparkml_scale.classification import SGDLogisticRegression

    scaled = StandardScaler(inputCol="features", outputCol="z").fit(cancer).transform(cancer)
    sgd = SGDLogisticRegression(featuresCol="z", epochs=4, batchSize=64, stepSize=0.5, seed=3).fit(scaled)
    assert sgd.summary.solverUsed == "sgd" and sgd.summary.accuracy > 0.95
    before = sgd.coefficients.toArray().copy()
    more = sgd.partialFit(scaled)
    assert not np.allclose(more.coefficients.toArray(), before)
    assert more.evaluate(scaled).accuracy > 0.95


# ---------------------------------------------------------------- barrier stages that cannot run


@pytest.mark.connect
def test_barrier_larger_than_the_cluster_fails_fast_and_the_session_survives(spark, cancer):
    from sparkml_scale.core.allreduce import run_barrier

    t0 = time.monotonic()
    with pytest.raises(ValueError, match=r"3 task\(s\) cannot run on the 2 task slot"):
        run_barrier(spark.range(10), 3, lambda batches, comm: None)
    if _has("torch"):
        from sparkml_scale.torch import TorchEstimator
        from sparkml_scale.torch.models import mlp

        est = TorchEstimator(model=functools.partial(mlp, 30, [8], 2), numProc=3, epochs=1,
                             backend="torch_distributor")
        with pytest.raises(ValueError, match=r"'numProc' is 3 but the cluster has 2 task slot"):
            est.fit(cancer)
    assert time.monotonic() - t0 < 60
    # the session still works: another fit in it
    from sparkml_scale.classification import LogisticRegression

    assert LogisticRegression(solver="allreduce", maxIter=5).fit(cancer).summary.solverUsed == "allreduce"


# ---------------------------------------------------------------- torch


TORCH = pytest.mark.skipif(not _has("torch"), reason="torch not installed")


@pytest.fixture(scope="module")
def digits(spark):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    rows = [(Vectors.dense(x), float(t), i % 5 == 0) for i, (x, t) in enumerate(zip(X, y))]
    df = spark.createDataFrame(rows, ["features", "label", "holdout"]).repartition(2).cache()
    return df.filter("not holdout").drop("holdout"), df.filter("holdout").drop("holdout")


def _torch_est(**kw):
    from sparkml_scale.torch import TorchEstimator
    from sparkml_scale.torch.models import mlp

    base = dict(model=functools.partial(mlp, 64, [32], 10), numProc=2, batchSize=64, learningRate=3e-3, seed=5)
    base.update(kw)
    return TorchEstimator(**base)


def _accuracy(model, df):
    return model.transform(df).selectExpr("avg(cast(prediction = label as double))").first()[0]


@TORCH
@pytest.mark.connect
@pytest.mark.parametrize("backend", ["torch_distributor", pytest.param("horovod", marks=pytest.mark.skipif(
    not _horovod(), reason="horovod not installed (scripts/install_horovod.sh)"))])
def test_torch_estimator_on_two_executors_with_checkpoints(spark, digits, backend, tmp_path):
    train, test = digits
    ckpt = str(tmp_path / "ckpt")
    model = _torch_est(backend=backend, epochs=3, checkpointDir=ckpt).fit(train)
    assert sorted(os.path.basename(f) for f in glob.glob(ckpt + "/*.pt")) == [
        f"checkpoint-epoch000{i}.pt" for i in range(3)]
    assert _accuracy(model, test) > 0.8  # 3 epochs; a sanity bound (chance is 0.1)
    # TorchModel.transform on the executors equals the model applied here
    import torch

    rows = test.limit(50).collect()
    few = spark.createDataFrame(rows, test.schema)
    got = {tuple(r["features"]): r["prediction"] for r in model.transform(few).collect()}
    net = functools.partial(__import__("sparkml_scale.torch.models", fromlist=["mlp"]).mlp, 64, [32], 10)()
    net.load_state_dict(model.state_dict())
    net.eval()
    with torch.no_grad():
        want = net(torch.tensor(np.array([r["features"].toArray() for r in rows]), dtype=torch.float32)).argmax(1)
    assert [got[tuple(r["features"])] for r in rows] == [float(v) for v in want]


@TORCH
def test_checkpoint_dir_that_a_rank_cannot_write_is_a_clear_error(spark, digits, cluster, tmp_path):
    train, _ = digits
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    # nobody can write below a regular file (not even root): the driver's check says so first
    with pytest.raises(ValueError, match="checkpointDir"):
        _torch_est(backend="torch_distributor", epochs=1, checkpointDir=str(blocker / "ckpt")).fit(train)
    # one rank that cannot write (its probe fails, injected): the error names the param and the rank
    arm = os.path.join(cluster.fault_dir, "torch.checkpoint_dir.arm")
    with open(arm, "w") as f:
        f.write("2")
    try:
        t0 = time.monotonic()
        with pytest.raises(Exception, match="checkpointDir") as err:
            _torch_est(backend="torch_distributor", epochs=1, checkpointDir=str(tmp_path / "ckpt")).fit(train)
        assert "rank" in str(err.value) and "Traceback" not in str(err.value)
        assert not glob.glob(str(tmp_path / "ckpt" / "*.pt")), "training started"
        assert time.monotonic() - t0 < 120
    finally:
        for f in glob.glob(os.path.join(cluster.fault_dir, "torch.checkpoint_dir.*")):
            os.remove(f)


# ---------------------------------------------------------------- Delta, persistence across sessions


@pytest.mark.skipif(not _has("deltalake"), reason="deltalake not installed")
@pytest.mark.connect
def test_delta_write_read_and_lineage(spark, tmp_path):
    from sparkml_scale.classification import LogisticRegression
    from sparkml_scale.io import read_table, write_table

    path = str(tmp_path / "events")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = (x @ [1.0, -2.0, 0.5] + rng.normal(size=400) > 0).astype(float)
    df = spark.createDataFrame([(*map(float, r), float(t)) for r, t in zip(x, y)], "a double, b double, c double, label double")
    assert write_table(df.repartition(2), path).version == 0
    assert write_table(df.limit(100), path, mode="append").version == 1
    back, rec = read_table(spark, path, version=0)
    assert back.count() == 400 and rec.version == 0
    from pyspark.ml.feature import VectorAssembler

    feats = VectorAssembler(inputCols=["a", "b", "c"], outputCol="features").transform(back)
    model = LogisticRegression(maxIter=20).fit(feats)
    assert [(r["path"], r["version"]) for r in model.dataLineage] == [(path, 0)]


def test_pipeline_model_saved_by_the_job_loads_in_this_session(spark, job_output):
    """The job (another driver, another session) saved a PipelineModel: it loads here and
    predicts what the job predicted."""
    from pyspark.ml import PipelineModel

    assert job_output["proc"].returncode == 0
    model = PipelineModel.load(os.path.join(job_output["out"], "model"))
    preds = spark.read.parquet(os.path.join(job_output["out"], "predictions"))
    assert "prediction" in preds.columns and preds.count() > 1000
    rows = preds.limit(200).collect()
    keep = [c for c in preds.columns if c not in ("prediction", "probability")]
    sample = spark.createDataFrame([[r[c] for c in keep] for r in rows], preds.select(*keep).schema)
    again = model.transform(sample).select("probability", "prediction").collect()
    # the job stores P(label = 1) as a double
    np.testing.assert_allclose([r[0][1] for r in again], [r["probability"] for r in rows], rtol=1e-9)
    assert [r[1] for r in again] == [r["prediction"] for r in rows]


# ---------------------------------------------------------------- executors killed mid-fit


def _kill_an_executor_during(cluster, fit, wait_for):
    """Run ``fit()`` in a thread; once ``wait_for()`` is true, SIGKILL one executor JVM; return
    (result or exception, killed pid, whether the fit was still running at the kill)."""
    box = {}

    def run():
        try:
            box["result"] = fit()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            box["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 120
    while not wait_for() and t.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = cluster.executor_pids()
    running = t.is_alive()
    os.kill(pids[0], 9)
    t.join(600)
    return box, pids[0], running


def _wait_for_two_executors(spark, cluster, dead):
    from sparkml_scale.core.cluster import live_task_slots

    deadline = time.monotonic() + 90
    while True:
        pids = cluster.executor_pids()
        if len(pids) == 2 and dead not in pids and (live_task_slots(spark) or 0) >= 2:
            return
        assert time.monotonic() < deadline, "the killed executor was not replaced"
        time.sleep(0.5)


def test_executor_killed_during_a_mapreduce_fit_gives_the_failure_free_result(spark, cluster, cancer, lr_fits):
    from sparkml_scale.classification import LogisticRegression

    ref = lr_fits["mapreduce"]
    started = time.monotonic()
    box, dead, running = _kill_an_executor_during(
        cluster, lambda: LogisticRegression(solver="mapreduce", regParam=0.01, maxIter=100, tol=1e-8).fit(cancer),
        lambda: time.monotonic() - started > 4.0)
    assert running, "the fit ended before the kill"
    assert "error" not in box, box.get("error")
    m = box["result"]
    np.testing.assert_allclose(m.coefficients.toArray(), ref.coefficients.toArray(), rtol=1e-9, atol=1e-12)
    _wait_for_two_executors(spark, cluster, dead)


@TORCH
def test_executor_killed_during_torch_training_then_resume(spark, cluster, digits, tmp_path):
    from sparkml_scale.torch.launch import TrainingError

    train, _ = digits
    ckpt = str(tmp_path / "ckpt")
    # small batches: about half a second per epoch, so the kill lands mid-training
    slow = dict(backend="torch_distributor", epochs=6, batchSize=8)
    box, dead, running = _kill_an_executor_during(
        cluster, lambda: _torch_est(checkpointDir=ckpt, **slow).fit(train),
        lambda: os.path.exists(os.path.join(ckpt, "checkpoint-epoch0000.pt")))
    assert running, "training ended before the kill"
    assert isinstance(box.get("error"), (TrainingError, ValueError)), box
    msg = str(box["error"])
    assert "Traceback" not in msg and "\tat " not in msg, msg
    done = sorted(glob.glob(ckpt + "/*.pt"))
    assert 1 <= len(done) < 6, done
    _wait_for_two_executors(spark, cluster, dead)
    resumed = _torch_est(checkpointDir=ckpt, resumeFromCheckpoint=True, **slow).fit(train)
    straight = _torch_est(**slow).fit(train)
    assert [h["epoch"] for h in resumed.history] == list(range(6))
    for k, v in straight.state_dict().items():
        np.testing.assert_allclose(resumed.state_dict()[k].numpy(), v.numpy(), atol=1e-6, err_msg=k)
