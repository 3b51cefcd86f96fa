"""Mini-batch SGD (AdaGrad + parameter mixing), partialFit and Structured Streaming."""
import numpy as np
import pytest

from helpers import CONNECT, vector_frame
from sparkml_scale.classification import LogisticRegression, LogisticRegressionModel, SGDLogisticRegression


@pytest.fixture(scope="module")
def cancer(spark):
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    return X, y.astype(float), vector_frame(spark, X, y)


def _objective(model, X, y, reg, alpha=0.0):
    """Mean log-loss + MLlib's elastic-net penalty in the standardized space, computed in numpy."""
    B = model.coefficientMatrix.toArray()
    b = model.interceptVector.toArray()
    M = X @ B.T + b
    if B.shape[0] == 1:
        m = M[:, 0]
        loss = np.mean(np.logaddexp(0.0, m) - y * m)
    else:
        from scipy.special import logsumexp

        loss = np.mean(logsumexp(M, axis=1) - M[np.arange(len(y)), y.astype(int)])
    std = X.std(axis=0, ddof=1)
    Bs = B * std
    return loss + reg * (0.5 * (1 - alpha) * np.sum(Bs**2) + alpha * np.sum(np.abs(Bs))), loss


@pytest.mark.connect
def test_sgd_reaches_the_lbfgs_optimum(spark, cancer):
    X, y, df = cancer
    reg = 0.01
    exact = LogisticRegression(regParam=reg, tol=1e-10).fit(df)
    sgd = SGDLogisticRegression(regParam=reg, epochs=10).fit(df)
    assert isinstance(sgd, LogisticRegressionModel) and sgd.summary.solverUsed == "sgd"
    f_exact, ll_exact = _objective(exact, X, y, reg)
    f_sgd, ll_sgd = _objective(sgd, X, y, reg)
    assert f_exact <= f_sgd <= f_exact + 1e-2, (f_sgd, f_exact)
    assert abs(ll_sgd - ll_exact) <= 1e-2
    # the per-epoch history goes down overall
    h = sgd.summary.objectiveHistory
    assert len(h) == 10 and h[-1] < h[0]
    # same seed, same model
    again = SGDLogisticRegression(regParam=reg, epochs=10).fit(df)
    np.testing.assert_array_equal(again.coefficients.toArray(), sgd.coefficients.toArray())


@pytest.mark.slow  # 20 s; multinomial SGD also runs in the default suite as a conformance case (iris)
def test_sgd_multinomial_and_l1(spark):
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    y = y.astype(float)
    df = vector_frame(spark, X, y)
    reg = 0.01
    exact = LogisticRegression(regParam=reg, tol=1e-10).fit(df)
    sgd = LogisticRegression(solver="sgd", regParam=reg, epochs=30, batchSize=16).fit(df)
    assert sgd.numClasses == 3
    assert _objective(sgd, X, y, reg)[0] <= _objective(exact, X, y, reg)[0] + 1e-2
    kw = dict(regParam=0.05, elasticNetParam=1.0)
    lasso = LogisticRegression(solver="sgd", epochs=60, batchSize=16, **kw).fit(df)
    exact = LogisticRegression(tol=1e-10, **kw).fit(df)
    f_exact = _objective(exact, X, y, 0.05, 1.0)[0]
    assert f_exact - 1e-9 <= _objective(lasso, X, y, 0.05, 1.0)[0] <= f_exact + 1e-2


def test_partial_fit_continues_and_persists(spark, cancer, tmp_path):
    X, y, df = cancer
    reg = 0.01
    half = df.limit(200)
    model = SGDLogisticRegression(regParam=reg, epochs=1).fit(half)
    before = _objective(model, X, y, reg)[0]
    for _ in range(6):
        model.partialFit(df)
    after = _objective(model, X, y, reg)[0]
    assert after < before
    assert not model.hasSummary
    # state survives save/load: the loaded copy continues exactly as the original
    model.write().overwrite().save(str(tmp_path / "m"))
    loaded = LogisticRegressionModel.load(str(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.coefficients.toArray(), model.coefficients.toArray())
    model.partialFit(df)
    loaded.partialFit(df)
    np.testing.assert_allclose(loaded.coefficients.toArray(), model.coefficients.toArray(), rtol=1e-12)
    # an L-BFGS model can continue online too
    exact = LogisticRegression(regParam=reg, maxIter=3).fit(df)
    f3 = _objective(exact, X, y, reg)[0]
    exact.partialFit(df, epochs=3)
    assert _objective(exact, X, y, reg)[0] < f3
    # the SGD knobs are the model's own params: a smaller step moves the coefficients less
    c0 = exact.coefficients.toArray()
    small, default = exact.copy().setStepSize(1e-4).setBatchSize(64), exact.copy()
    assert (small.getStepSize(), small.getBatchSize()) == (1e-4, 64)
    small.partialFit(df)
    default.partialFit(df)
    assert 0 < np.abs(small.coefficients.toArray() - c0).max() < np.abs(default.coefficients.toArray() - c0).max()
    # bad batches are refused by name; empty batches change nothing
    with pytest.raises(ValueError, match="labelCol"):
        model.partialFit(df.selectExpr("features", "label + 2 AS label"))
    coef = model.coefficients.toArray().copy()
    model.partialFit(df.limit(0))
    np.testing.assert_array_equal(model.coefficients.toArray(), coef)
    with pytest.raises(ValueError, match="epochs"):
        model.partialFit(df, epochs=0)


@pytest.mark.skipif(CONNECT, reason="foreachBatch runs server-side under Spark Connect")
def test_partial_fit_from_structured_streaming(spark, cancer, tmp_path):
    """A file-source stream of Parquet micro-batches trains a model with foreachBatch."""
    X, y, df = cancer
    reg = 0.01
    src = tmp_path / "stream"
    order = np.random.default_rng(0).permutation(len(y))
    parts = np.array_split(order, 4)
    for i, idx in enumerate(parts):
        vector_frame(spark, X[idx], y[idx], parts=1).write.parquet(str(src / f"part{i}"))
    model = SGDLogisticRegression(regParam=reg, epochs=1).fit(vector_frame(spark, X[parts[0]], y[parts[0]]))
    seen = []

    def train(batch, batch_id):
        seen.append(batch.count())
        for _ in range(5):
            model.partialFit(batch)

    schema = spark.read.parquet(str(src / "part0")).schema
    for rnd in range(2):  # two rounds over the same files = two epochs of the stream
        q = (
            spark.readStream.schema(schema).option("maxFilesPerTrigger", 1).option("recursiveFileLookup", "true")
            .parquet(str(src)).writeStream.foreachBatch(train)
            .option("checkpointLocation", str(tmp_path / f"ckpt{rnd}")).trigger(availableNow=True).start()
        )
        q.awaitTermination(300)
        assert q.exception() is None
    assert sum(seen) == 2 * len(y) and len(seen) >= 2
    exact = LogisticRegression(regParam=reg, tol=1e-10).fit(df)
    f_exact, ll_exact = _objective(exact, X, y, reg)
    f_stream, ll_stream = _objective(model, X, y, reg)
    assert f_stream <= f_exact + 1e-2 and abs(ll_stream - ll_exact) <= 1e-2, (f_stream, f_exact)
