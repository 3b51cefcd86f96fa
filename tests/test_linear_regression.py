"""LinearRegression: parity with MLlib's normal solver on real data, summary, Pipeline with PCA,
persistence, bad input."""
import os
import warnings

import numpy as np
import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.linalg import Vectors, VectorUDT
from pyspark.sql import types as T

from sparkml_scale.core.arrow import VectorColumnError
from sparkml_scale.feature import PCA
from sparkml_scale.regression import LinearRegression, LinearRegressionModel

CONNECT = os.environ.get("SPARKML_SCALE_TEST_CONNECT") == "1"
SCHEMA = T.StructType(
    [
        T.StructField("id", T.LongType()),
        T.StructField("features", VectorUDT()),
        T.StructField("label", T.DoubleType()),
        T.StructField("w", T.DoubleType()),
    ]
)


def _frame(spark, X, y, w=None, sparse=False, parts=3):
    w = np.ones(len(y)) if w is None else w
    rows = []
    for i, (r, t, wi) in enumerate(zip(X, y, w)):
        v = Vectors.sparse(len(r), {j: float(x) for j, x in enumerate(r) if x != 0}) if sparse else Vectors.dense(r)
        rows.append((i, v, float(t), float(wi)))
    return spark.createDataFrame(rows, SCHEMA).repartition(parts).cache()


@pytest.fixture(scope="module")
def diabetes():
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True, scaled=False)
    w = 1.0 + (np.arange(len(y)) % 3)
    return X, y, w


@pytest.fixture(scope="module")
def diabetes_df(spark, diabetes):
    X, y, w = diabetes
    return _frame(spark, X, y, w)


def _close(ours, theirs, tol=1e-6):
    ours, theirs = np.asarray(ours, float), np.asarray(theirs, float)
    err = np.abs(ours - theirs) / np.maximum(1.0, np.abs(theirs))
    assert err.max() <= tol, f"max abs/rel error {err.max():.3g}\nours={ours}\nmllib={theirs}"


GRID = [
    dict(regParam=reg, standardization=std, fitIntercept=fi, **({"weightCol": "w"} if wc else {}))
    for reg in (0.0, 0.1, 1.0)
    for std in (True, False)
    for fi in (True, False)
    for wc in (False, True)
]


@pytest.mark.slow  # 21 s; parity with MLlib stays checked by test_sparse_input_and_predictions_match_mllib
@pytest.mark.skipif(CONNECT, reason="MLlib reference fits run in the classic session")
def test_matches_mllib_normal_solver(diabetes_df):
    from pyspark.ml.regression import LinearRegression as MLlibLinear

    for kw in GRID:
        ref = MLlibLinear(solver="normal", **kw).fit(diabetes_df)
        ours = LinearRegression(**kw).fit(diabetes_df)
        _close(np.append(ours.coefficients.toArray(), ours.intercept),
               np.append(ref.coefficients.toArray(), ref.intercept))
        if "weightCol" not in kw:
            # MLlib's weighted r2 uses an unbiased-variance SST; unweighted metrics agree
            assert abs(ours.summary.r2 - ref.summary.r2) < 1e-10
            assert abs(ours.summary.rootMeanSquaredError - ref.summary.rootMeanSquaredError) < 1e-8
            assert abs(ours.summary.meanAbsoluteError - ref.summary.meanAbsoluteError) < 1e-8
        else:
            assert abs(ours.summary.meanSquaredError - ref.summary.meanSquaredError) < 1e-6


@pytest.mark.skipif(CONNECT, reason="MLlib reference fits run in the classic session")
def test_sparse_input_and_predictions_match_mllib(spark, diabetes):
    from pyspark.ml.regression import LinearRegression as MLlibLinear

    X, y, _ = diabetes
    Xs = np.where(np.abs(X) < np.median(np.abs(X), axis=0), 0.0, X)  # about half zeros
    df = _frame(spark, Xs, y, sparse=True)
    ref = MLlibLinear(solver="normal", regParam=0.05).fit(df)
    ours = LinearRegression(regParam=0.05).fit(df)
    _close(ours.coefficients.toArray(), ref.coefficients.toArray())
    _close([ours.intercept], [ref.intercept])
    a = [r[0] for r in ours.transform(df).orderBy("id").select("prediction").collect()]
    b = [r[0] for r in ref.transform(df).orderBy("id").select("prediction").collect()]
    np.testing.assert_allclose(a, b, rtol=1e-9)


@pytest.mark.connect
def test_matches_numpy_least_squares_and_sklearn_ridge(spark, diabetes, diabetes_df):
    from sklearn.linear_model import Ridge

    X, y, w = diabetes
    m = LinearRegression(weightCol="w").fit(diabetes_df)
    A = np.column_stack([X, np.ones(len(y))]) * np.sqrt(w)[:, None]
    sol = np.linalg.lstsq(A, y * np.sqrt(w), rcond=None)[0]
    np.testing.assert_allclose(m.coefficients.toArray(), sol[:-1], rtol=1e-8)
    np.testing.assert_allclose(m.intercept, sol[-1], rtol=1e-8)
    # standardization=False: plain ridge with alpha = n * regParam / sigma_y (MLlib's scaling)
    lam = 0.5
    r = LinearRegression(regParam=lam, standardization=False).fit(diabetes_df)
    sk = Ridge(alpha=len(y) * lam / np.std(y)).fit(X, y)
    np.testing.assert_allclose(r.coefficients.toArray(), sk.coef_, rtol=1e-7)
    np.testing.assert_allclose(r.intercept, sk.intercept_, rtol=1e-7)
    s = r.summary
    pred = sk.predict(X)
    np.testing.assert_allclose(s.rootMeanSquaredError, np.sqrt(np.mean((y - pred) ** 2)), rtol=1e-8)
    np.testing.assert_allclose(s.r2, 1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2), rtol=1e-8)
    assert s.numInstances == len(y)
    assert s.objectiveHistory == [0.0] and s.totalIterations == 0


@pytest.mark.connect
def test_constant_feature_and_constant_label(spark, diabetes):
    X, y, _ = diabetes
    Xc = np.column_stack([X, np.full(len(y), 5.0)])
    m = LinearRegression().fit(_frame(spark, Xc, y))
    base = LinearRegression().fit(_frame(spark, X, y))
    assert m.coefficients[10] == 0.0
    np.testing.assert_allclose(m.coefficients.toArray()[:10], base.coefficients.toArray(), rtol=1e-8)
    flat = _frame(spark, X, np.full(len(y), 3.0))
    c = LinearRegression(regParam=0.1).fit(flat)
    assert np.all(c.coefficients.toArray() == 0.0) and c.intercept == 3.0
    with pytest.raises(ValueError, match="'label'.*constant"):
        LinearRegression(regParam=0.1, fitIntercept=False).fit(flat)


@pytest.mark.connect
def test_collinear_features_warn_and_give_min_norm_solution(spark, diabetes):
    X, y, _ = diabetes
    Xd = np.column_stack([X[:, :3], X[:, 0] * 2.0])
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        m = LinearRegression().fit(_frame(spark, Xd, y))
    assert any("singular" in str(r.message) for r in rec)
    pred = Xd @ m.coefficients.toArray() + m.intercept
    ref = np.linalg.lstsq(np.column_stack([Xd, np.ones(len(y))]), y, rcond=None)[0]
    np.testing.assert_allclose(pred, np.column_stack([Xd, np.ones(len(y))]) @ ref, rtol=1e-6)


@pytest.mark.connect
def test_pipeline_pca_then_regression_save_load(spark, diabetes_df, tmp_path):
    pipe = Pipeline(stages=[
        PCA(k=5, inputCol="features", outputCol="pcs", center=True),
        LinearRegression(featuresCol="pcs", regParam=0.01),
    ])
    model = pipe.fit(diabetes_df)
    path = str(tmp_path / "pipe")
    model.write().overwrite().save(path)
    loaded = PipelineModel.load(path)
    assert isinstance(loaded.stages[1], LinearRegressionModel)
    np.testing.assert_array_equal(loaded.stages[1].coefficients.toArray(), model.stages[1].coefficients.toArray())
    a = [r[0] for r in model.transform(diabetes_df).orderBy("id").select("prediction").collect()]
    b = [r[0] for r in loaded.transform(diabetes_df).orderBy("id").select("prediction").collect()]
    np.testing.assert_allclose(a, b, rtol=1e-12)
    assert not loaded.stages[1].hasSummary


@pytest.mark.connect
def test_bad_input(spark, diabetes_df):
    """Param and schema checks and a few data checks; the catalogue is tests/test_bad_input.py."""
    with pytest.raises(ValueError, match="'regParam'"):
        LinearRegression(regParam=-1.0).fit(diabetes_df)
    with pytest.raises(ValueError, match="'solver'"):
        LinearRegression(solver="l-bfgs").fit(diabetes_df)
    with pytest.raises(ValueError, match="'nope'"):
        LinearRegression(labelCol="nope").fit(diabetes_df)
    with pytest.raises(TypeError, match="'label'"):
        LinearRegression(featuresCol="label").fit(diabetes_df)
    strs = diabetes_df.selectExpr("features", "CAST(label AS STRING) AS label")
    with pytest.raises(TypeError, match="'label'.*numeric"):
        LinearRegression().fit(strs)
    # null/NaN labels, negative weights, inf features, empty data: tests/test_bad_input.py
    mixed = spark.createDataFrame([(0, Vectors.dense([1.0]), 1.0, 1.0), (1, Vectors.dense([0.0, 1.0]), 2.0, 1.0)],
                                  SCHEMA).coalesce(1)
    with pytest.raises(VectorColumnError, match="'features'.*different sizes"):
        LinearRegression().fit(mixed)
    wide = spark.createDataFrame([(0, Vectors.sparse(5000, {1: 1.0}), 1.0, 1.0)], SCHEMA)
    with pytest.raises(ValueError, match="5000 features"):
        LinearRegression().fit(wide)
