"""Progress of long fits: tqdm bars on the driver (also for work inside barrier tasks), the switch
that turns them off, and Spark jobs named after the stage and step."""
import json
import re
import socket
import time
import urllib.request

import numpy as np
import pytest

from helpers import CONNECT, vector_frame
from sparkml_scale.core import progress as P


@pytest.fixture
def bars(monkeypatch):
    """Bars on, shown at once (no delay)."""
    monkeypatch.setattr(P, "DELAY_S", 0.0)
    with P.progress_bars(True):
        yield


@pytest.fixture(scope="module")
def data(spark):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(3000, 8))
    y = (X @ rng.normal(size=8) + rng.normal(size=3000) > 0).astype(float)
    return vector_frame(spark, X, y, parts=2)


def _counts(err: str, label: str):
    """The ``n/total`` counts the bar ``label`` printed, in order."""
    return [int(m) for m in re.findall(re.escape(label) + r":\s+\d+%\|[^|]*\|\s*(\d+)/\d+", err)]


def test_switch_env_and_override(monkeypatch):
    monkeypatch.setenv(P.ENV, "0")
    assert not P.progress_enabled()
    monkeypatch.setenv(P.ENV, "on")
    assert P.progress_enabled()
    with P.progress_bars(False):
        assert not P.progress_enabled()
    assert P.progress_enabled()
    monkeypatch.setenv(P.ENV, "maybe")
    with pytest.raises(ValueError, match="SPARKML_SCALE_PROGRESS"):
        P.progress_enabled()
    with pytest.raises(TypeError):
        P.set_progress("yes")
    monkeypatch.delenv(P.ENV)
    # default: on in a Jupyter kernel or on a terminal, else off (batch logs)
    monkeypatch.setattr(P, "_in_kernel", lambda: False)
    monkeypatch.setattr(P, "_isatty", lambda stream: False)
    assert not P.progress_enabled()
    monkeypatch.setattr(P, "_isatty", lambda stream: True)
    assert P.progress_enabled()
    monkeypatch.setattr(P, "_isatty", lambda stream: False)
    monkeypatch.setattr(P, "_in_kernel", lambda: True)
    assert P.progress_enabled()


@pytest.mark.parametrize("solver", ["mapreduce", pytest.param("allreduce", marks=pytest.mark.connect)])
def test_lbfgs_bar_counts_the_iterations(spark, data, bars, capsys, solver):
    from sparkml_scale.classification import LogisticRegression

    model = LogisticRegression(solver=solver, regParam=1e-3, tol=1e-12, maxIter=15).fit(data)
    err = capsys.readouterr().err
    # mapreduce takes Newton steps on this binomial L2 problem of 8 columns (wants_newton)
    counts = _counts(err, "LogisticRegression " + ("Newton" if solver == "mapreduce" else "L-BFGS"))
    iterations = model.summary.totalIterations
    assert iterations >= 3
    # allreduce: the iterations run inside the barrier stage, rank 0 reports them to the driver
    # (the last report may come after the bar closed, on a slow machine: at most one short)
    assert counts and iterations - 1 <= counts[-1] <= iterations, (counts, iterations, err[-500:])
    assert "objective=" in err
    if solver == "mapreduce":  # converged before maxIter: the bar ends complete, not at 60%
        assert "100%" in err and f"{iterations}/{iterations}" in err, err[-300:]


def test_sgd_and_partial_fit_bars(spark, data, bars, capsys):
    from sparkml_scale.classification import SGDLogisticRegression

    model = SGDLogisticRegression(epochs=4, batchSize=256).fit(data)
    err = capsys.readouterr().err
    assert _counts(err, "LogisticRegression SGD")[-1] == 4, err[-500:]
    assert "loss=" in err
    model.partialFit(data, epochs=2)
    assert _counts(capsys.readouterr().err, "LogisticRegressionModel.partialFit SGD")[-1] == 2


def test_randomized_pca_bar_counts_passes(spark, data, bars, capsys):
    from sparkml_scale.feature import PCA

    PCA(k=2, method="randomized", oversampling=1, maxIter=4, tol=0.0, inputCol="features").fit(data)
    assert _counts(capsys.readouterr().err, "PCA subspace iterations")[-1] == 4


def test_off_means_silent(spark, data, capsys, monkeypatch):
    from sparkml_scale.classification import LogisticRegression

    monkeypatch.setattr(P, "DELAY_S", 0.0)
    with P.progress_bars(False):
        LogisticRegression(maxIter=5).fit(data)
    assert "L-BFGS" not in capsys.readouterr().err


def test_bar_waits_for_slow_fits(capsys):
    """The default delay: work of well under DELAY_S seconds prints no bar; slower work does."""
    assert P.DELAY_S >= 1
    with P.progress_bars(True), P.FitProgress(None, "Quick") as p:
        p.bar("thing", total=3)
        p.advance(3)
    assert "Quick thing" not in capsys.readouterr().err
    with P.progress_bars(True), P.FitProgress(None, "Slow") as p:
        p.bar("thing", total=3)
        time.sleep(P.DELAY_S + 0.2)
        p.advance(3)
    assert "Slow thing" in capsys.readouterr().err


@pytest.mark.skipif(CONNECT, reason="job descriptions are read from the classic session's UI")
def test_spark_jobs_are_named_after_the_stage_and_step(spark, data):
    from sparkml_scale.classification import LogisticRegression
    from sparkml_scale.feature import PCA

    sc = spark.sparkContext
    if not sc.uiWebUrl:
        pytest.skip("Spark UI disabled")
    sc.setJobDescription("the user's own description")
    LogisticRegression(solver="mapreduce", maxIter=4, regParam=0.01).fit(data)
    PCA(k=2, inputCol="features").fit(data)
    assert sc.getLocalProperty("spark.job.description") == "the user's own description"  # restored
    sc.setJobDescription(None)
    url = f"{sc.uiWebUrl}/api/v1/applications/{sc.applicationId}/jobs"
    deadline = time.time() + 20
    while True:  # the UI's listener catches up asynchronously
        names = {j.get("description") for j in json.load(urllib.request.urlopen(url, timeout=10))}
        wanted = {"LogisticRegression: checking rows and writing training blocks to local disk",
                  "LogisticRegression: Newton iteration 2", "PCA: Gram pass"}
        if wanted <= names or time.time() > deadline:
            break
        time.sleep(0.5)
    assert wanted <= names, sorted(n for n in names if n)


def test_mllib_summaries_still_work_after_our_fits(spark, data):
    """Spark 4.3: a classic SparkSession.addTag makes MLlib's training summaries unserializable for
    the rest of the session; our fits must not do that to the user's MLlib models."""
    from pyspark.ml.classification import LogisticRegression as MLlibLR

    from sparkml_scale.classification import LogisticRegression

    LogisticRegression(maxIter=3).fit(data)
    assert 0.5 < MLlibLR(maxIter=5).fit(data).summary.accuracy <= 1.0


@pytest.mark.connect
def test_tags_are_removed_after_the_fit(spark, data):
    from sparkml_scale.classification import LogisticRegression

    LogisticRegression(maxIter=3).fit(data)
    assert not [t for t in spark.getTags() if t.startswith("sparkml_scale")]


def test_channel_takes_only_its_own_reports():
    got = []
    ch = P.ProgressChannel("127.0.0.1", got.append)
    try:
        host, port, token = ch.address.rsplit(":", 2)
        with socket.create_connection((host, int(port))) as s:  # a stranger: wrong token, dropped
            s.sendall(b'{"token": "nope", "loss": 1}\n')
        P.report(ch.address, loss=0.5, epoch=1)
        P.report(ch.address, loss=0.25, epoch=2)
        deadline = time.time() + 5
        while len(got) < 2 and time.time() < deadline:
            time.sleep(0.05)
        assert got == [{"loss": 0.5, "epoch": 1}, {"loss": 0.25, "epoch": 2}]
    finally:
        ch.close()
    P.report("127.0.0.1:1:x", loss=1.0)  # nobody listens: no error, and no retry later
    assert P._senders["127.0.0.1:1:x"] is None


@pytest.mark.skipif(CONNECT, reason="the torch test runs classic (TorchDistributor in local mode)")
def test_torch_epochs_reported_from_the_training_process(spark, bars, capsys):
    pytest.importorskip("torch")
    import functools

    from pyspark.ml.linalg import Vectors
    from sklearn.datasets import load_digits

    from sparkml_scale.torch import TorchEstimator
    from sparkml_scale.torch.models import mlp

    X, y = load_digits(return_X_y=True)
    df = spark.createDataFrame([(Vectors.dense(x / 16.0), float(t)) for x, t in zip(X[:600], y[:600])],
                               ["features", "label"])
    model = TorchEstimator(model=functools.partial(mlp, 64, [16], 10), numProc=1, epochs=3, batchSize=64,
                           validationFraction=0.2).fit(df)
    err = capsys.readouterr().err
    assert len(model.history) == 3
    assert _counts(err, "TorchEstimator epochs")[-1] == 3, err[-800:]
    assert "val_loss=" in err
