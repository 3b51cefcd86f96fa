"""Column names with dots, spaces and backticks work in every stage (fit, transform, summaries).

``F.col("a.b")`` reads field ``b`` of a struct ``a``; every stage must refer to its columns
through the quoting helper (``sparkml_scale.core.schema.col``).  Each test names every column
a stage reads or writes with such a name and checks the numbers against the same fit on plain
names.
"""
import functools

import numpy as np
import pytest
from pyspark.ml.linalg import Vectors, VectorUDT
from pyspark.sql import types as T

from sparkml_scale.classification import LogisticRegression, SGDLogisticRegression
from sparkml_scale.feature import PCA, FeatureHasher
from sparkml_scale.regression import LinearRegression

pytestmark = pytest.mark.connect

F, L, W = "feat.x`s", "the label.y", "w`.t"


@pytest.fixture(scope="module")
def frames(spark):
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    X = (X[:200, :6] - X[:200, :6].mean(0)) / X[:200, :6].std(0)
    y = y[:200].astype(float)
    w = 1.0 + (np.arange(200) % 3)
    rows = [(i, Vectors.dense(x), float(t), float(wi)) for i, (x, t, wi) in enumerate(zip(X, y, w))]

    def schema(f, lab, wt):
        return T.StructType([T.StructField("id", T.LongType()), T.StructField(f, VectorUDT()),
                             T.StructField(lab, T.DoubleType()), T.StructField(wt, T.DoubleType())])

    odd = spark.createDataFrame(rows, schema(F, L, W)).repartition(2).cache()
    plain = spark.createDataFrame(rows, schema("features", "label", "weight")).repartition(2).cache()
    yield odd, plain
    odd.unpersist()
    plain.unpersist()


def _vectors(df, col):
    return np.array([r[col].toArray() for r in df.orderBy("id").collect()])


def _doubles(df, col):
    return np.array([r[col] for r in df.orderBy("id").collect()])


def test_logistic_regression(frames):
    odd, plain = frames
    kw = dict(maxIter=20, regParam=0.01)
    m_odd = LogisticRegression(featuresCol=F, labelCol=L, weightCol=W, predictionCol="pred.a", probabilityCol="p`b",
                               rawPredictionCol="raw c", **kw).fit(odd)
    m = LogisticRegression(weightCol="weight", **kw).fit(plain)
    np.testing.assert_allclose(m_odd.coefficients.toArray(), m.coefficients.toArray(), rtol=1e-10)
    out = m_odd.transform(odd)
    np.testing.assert_allclose(_vectors(out, "p`b"), _vectors(m.transform(plain), "probability"), rtol=1e-10)
    np.testing.assert_array_equal(_doubles(out, "pred.a"), _doubles(m.transform(plain), "prediction"))
    assert set(out.columns) >= {"pred.a", "p`b", "raw c", F, L, W}
    s = m_odd.summary
    assert s.accuracy == pytest.approx(m.summary.accuracy)
    assert s.areaUnderROC == pytest.approx(m.summary.areaUnderROC)
    assert m_odd.evaluate(odd).weightedRecall == pytest.approx(m.evaluate(plain).weightedRecall)


def test_sgd_and_partial_fit(frames):
    odd, plain = frames
    kw = dict(epochs=2, batchSize=32)
    a = SGDLogisticRegression(featuresCol=F, labelCol=L, weightCol=W, **kw).fit(odd)
    b = SGDLogisticRegression(weightCol="weight", **kw).fit(plain)
    np.testing.assert_allclose(a.coefficients.toArray(), b.coefficients.toArray(), rtol=1e-10)
    a.partialFit(odd)
    b.partialFit(plain)
    np.testing.assert_allclose(a.coefficients.toArray(), b.coefficients.toArray(), rtol=1e-10)


def test_linear_regression(frames):
    odd, plain = frames
    a = LinearRegression(featuresCol=F, labelCol=L, weightCol=W, predictionCol="y.hat", regParam=0.1).fit(odd)
    b = LinearRegression(weightCol="weight", regParam=0.1).fit(plain)
    np.testing.assert_allclose(a.coefficients.toArray(), b.coefficients.toArray(), rtol=1e-10)
    np.testing.assert_allclose(_doubles(a.transform(odd), "y.hat"), _doubles(b.transform(plain), "prediction"),
                               rtol=1e-10)
    assert a.summary.r2 == pytest.approx(b.summary.r2)
    assert a.evaluate(odd).meanAbsoluteError == pytest.approx(b.evaluate(plain).meanAbsoluteError)
    assert a.summary.residuals.count() == 200


def test_pca(frames):
    odd, plain = frames
    a = PCA(k=2, inputCol=F, outputCol="pc.1`").fit(odd)
    b = PCA(k=2, inputCol="features", outputCol="pc").fit(plain)
    np.testing.assert_allclose(a.pc.toArray(), b.pc.toArray(), rtol=1e-10)
    out = a.transform(odd)
    np.testing.assert_allclose(_vectors(out, "pc.1`"), _vectors(b.transform(plain), "pc"), rtol=1e-10)
    back = a.inverseTransform(out, outputCol="re.x")
    np.testing.assert_allclose(_vectors(back, "re.x"), _vectors(b.inverseTransform(b.transform(plain)),
                                                                 "features_reconstructed"), rtol=1e-10)


def test_feature_hasher(spark):
    df = spark.createDataFrame([(1, "a", 2.0), (2, "b", 3.0)], "id long, `c.s` string, `n``x` double")
    out = FeatureHasher(inputCols=["c.s", "n`x"], outputCol="h.v", numFeatures=64).transform(df)
    rows = out.orderBy("id").collect()
    assert [r["h.v"].numNonzeros() for r in rows] == [2, 2]


def test_torch_estimator_and_model(frames):
    pytest.importorskip("torch")
    from sparkml_scale.torch import TorchEstimator
    from sparkml_scale.torch.models import mlp

    odd, _ = frames
    est = TorchEstimator(model=functools.partial(mlp, 6, [8], 2), featuresCol=F, labelCol=L, predictionCol="p.t",
                         numProc=1, epochs=1, batchSize=32, backend="auto")
    model = est.fit(odd)
    out = model.transform(odd)
    preds = _doubles(out, "p.t")
    assert len(preds) == 200 and set(np.unique(preds)) <= {0.0, 1.0}
