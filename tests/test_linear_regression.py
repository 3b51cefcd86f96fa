"""LinearRegression: parity with MLlib's normal solver on real data, summary, Pipeline with PCA,
persistence, bad input."""
import functools
import os
import warnings

import numpy as np
import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.linalg import Vectors, VectorUDT
from pyspark.sql import types as T

from helpers import CONNECT, assert_close, vector_frame
from sparkml_scale.core.arrow import VectorColumnError
from sparkml_scale.feature import PCA
from sparkml_scale.regression import LinearRegression, LinearRegressionModel

SCHEMA = T.StructType(
    [
        T.StructField("id", T.LongType()),
        T.StructField("features", VectorUDT()),
        T.StructField("label", T.DoubleType()),
        T.StructField("w", T.DoubleType()),
    ]
)


#: ``_frame(spark, X, y, w=None, sparse=False)``: ``id, features, label[, w]`` in 3 partitions, cached.
_frame = functools.partial(vector_frame, ids=True, weight="w", parts=3)


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
        assert_close(np.append(ours.coefficients.toArray(), ours.intercept),
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
    assert_close(ours.coefficients.toArray(), ref.coefficients.toArray())
    assert_close([ours.intercept], [ref.intercept])
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


@pytest.mark.connect
def test_mllib_params_accepted_and_unsupported_values_named(spark, diabetes_df):
    """MLlib's params (maxIter, tol, elasticNetParam, loss, epsilon, maxBlockSizeInMB) are accepted
    with MLlib's defaults, kept by the model, and values this solver cannot honour raise a
    ValueError naming the param before any Spark job."""
    lr = LinearRegression(regParam=0.0)
    assert (lr.getMaxIter(), lr.getTol(), lr.getElasticNetParam(), lr.getLoss(), lr.getEpsilon(),
            lr.getMaxBlockSizeInMB()) == (100, 1e-6, 0.0, "squaredError", 1.35, 0.0)
    base = lr.fit(diabetes_df)
    other = LinearRegression(maxIter=5, tol=1e-3, elasticNetParam=0.7, epsilon=2.0, maxBlockSizeInMB=1.0,
                             solver="normal").fit(diabetes_df)  # no penalty: elasticNetParam changes nothing
    np.testing.assert_array_equal(other.coefficients.toArray(), base.coefficients.toArray())
    assert other.getMaxIter() == 5 and other.getMaxBlockSizeInMB() == 1.0 and other.scale == 1.0
    bad = [
        (dict(loss="huber"), "'loss' = 'huber'"),
        (dict(loss="absolute"), "'loss'"),
        (dict(regParam=0.1, elasticNetParam=0.5), "'elasticNetParam' = 0.5"),
        (dict(elasticNetParam=1.5), "'elasticNetParam' must be in"),
        (dict(epsilon=1.0), "'epsilon'"),
        (dict(maxIter=-1), "'maxIter'"),
        (dict(tol=-1e-3), "'tol'"),
        (dict(maxBlockSizeInMB=-1.0), "'maxBlockSizeInMB'"),
        (dict(solver="l-bfgs"), "'solver'"),
    ]
    for kw, msg in bad:
        with pytest.raises(ValueError, match=msg):
            LinearRegression(**kw).fit(diabetes_df)
    with pytest.raises(ValueError, match="'loss'"):
        LinearRegression().setLoss("huber").fit(diabetes_df)
    with pytest.raises(TypeError, match="keyword"):
        LinearRegression().setParams("vector")


@pytest.mark.connect
def test_model_repr_predict_and_summary_repr(spark, diabetes, diabetes_df):
    X, y, _ = diabetes
    m = LinearRegression(regParam=0.01).fit(diabetes_df)
    assert repr(m) == f"LinearRegressionModel: uid={m.uid}, numFeatures=10"  # MLlib's toString
    x = X[7]
    expect = float(x @ m.coefficients.toArray() + m.intercept)
    assert m.predict(Vectors.dense(x)) == pytest.approx(expect, rel=1e-12)
    assert m.predict(Vectors.sparse(10, {j: float(v) for j, v in enumerate(x)})) == pytest.approx(expect, rel=1e-12)
    with pytest.raises(ValueError, match="size 3.*numFeatures = 10"):
        m.predict(Vectors.dense([1.0, 2.0, 3.0]))
    s = m.summary
    text = repr(s)
    assert text.startswith("LinearRegressionTrainingSummary(r2=") and f"numInstances={len(y)}" in text, text
    assert f"r2={s.r2:.6g}" in text and f"rootMeanSquaredError={s.rootMeanSquaredError:.6g}" in text
    assert s.degreesOfFreedom == len(y) - 11
    resid = np.array([r[0] for r in s.residuals.collect()])
    assert resid.shape == (len(y),)
    np.testing.assert_allclose(np.sqrt(np.mean(resid ** 2)), s.rootMeanSquaredError, rtol=1e-10)


@pytest.mark.skipif(CONNECT, reason="MLlib reference fits run in the classic session")
def test_evaluate_matches_mllib_on_held_out_rows(spark, diabetes):
    from pyspark.ml.regression import LinearRegression as MLlibLinear

    X, y, _ = diabetes
    train, test = _frame(spark, X[:300], y[:300]), _frame(spark, X[300:], y[300:], parts=2)
    ref = MLlibLinear(solver="normal", regParam=0.05).fit(train)
    ours = LinearRegression(regParam=0.05).fit(train)
    a, b = ours.evaluate(test), ref.evaluate(test)
    assert type(a).__name__ == "LinearRegressionSummary"
    assert a.numInstances == b.numInstances == len(y) - 300
    assert a.degreesOfFreedom == b.degreesOfFreedom
    for name in ("r2", "r2adj", "rootMeanSquaredError", "meanSquaredError", "meanAbsoluteError", "explainedVariance"):
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-8), name
    assert repr(a) == (f"LinearRegressionSummary(r2={b.r2:.6g}, rootMeanSquaredError={b.rootMeanSquaredError:.6g}, "
                       f"numInstances={len(y) - 300})")
    # evaluate on the training rows gives the training summary's metrics
    again = ours.evaluate(train)
    assert again.r2 == pytest.approx(ours.summary.r2, rel=1e-12)
    assert again.rootMeanSquaredError == pytest.approx(ours.summary.rootMeanSquaredError, rel=1e-12)
    with pytest.raises(TypeError, match="DataFrame"):
        ours.evaluate([1, 2])
    with pytest.raises(ValueError, match="'label'.*1 null"):
        ours.evaluate(test.selectExpr("id", "features", "IF(id = 10, NULL, label) AS label")).r2


def _pmml_file(path):
    files = [f for f in os.listdir(path) if f.startswith("part-")]
    assert len(files) == 1, files
    with open(os.path.join(path, files[0]), encoding="utf-8") as fh:
        return fh.read()


def _pmml_tree(text):
    import xml.etree.ElementTree as ET

    root = ET.fromstring(text.encode("utf-8"))
    ns = {"p": root.tag[1:].split("}")[0]}
    table = root.find("p:RegressionModel/p:RegressionTable", ns)
    coef = [float(e.get("coefficient")) for e in table.findall("p:NumericPredictor", ns)]
    names = [e.get("name") for e in table.findall("p:NumericPredictor", ns)]
    fields = [e.get("name") for e in root.findall("p:DataDictionary/p:DataField", ns)]
    model = root.find("p:RegressionModel", ns)
    mining = [(e.get("name"), e.get("usageType")) for e in model.findall("p:MiningSchema/p:MiningField", ns)]
    return dict(ns=ns["p"], version=root.get("version"), intercept=float(table.get("intercept")), coef=coef,
                names=names, fields=fields, mining=mining,
                n_fields=root.find("p:DataDictionary", ns).get("numberOfFields"),
                model=(model.get("modelName"), model.get("functionName")),
                description=root.find("p:Header", ns).get("description"))


@pytest.mark.connect
def test_pmml_export_parses_and_carries_the_coefficients(spark, diabetes_df, tmp_path):
    m = LinearRegression(regParam=0.02).fit(diabetes_df)
    path = str(tmp_path / "lr_pmml")
    m.write().format("pmml").save(path)
    t = _pmml_tree(_pmml_file(path))
    assert t["ns"] == "http://www.dmg.org/PMML-4_4" and t["version"] == "4.4"
    assert t["coef"] == m.coefficients.toArray().tolist() and t["intercept"] == m.intercept  # exact round trip
    assert t["names"] == [f"field_{i}" for i in range(10)] and t["fields"][-1] == "target" and t["n_fields"] == "11"
    assert t["mining"][-1] == ("target", "target") and t["model"] == ("linear regression", "regression")
    with pytest.raises(FileExistsError, match="lr_pmml"):
        m.write().format("pmml").save(path)
    m.write().overwrite().format("PMML").save(path)
    assert _pmml_tree(_pmml_file(path))["coef"] == t["coef"]
    with pytest.raises(ValueError, match="'onnx'.*'internal' or 'pmml'"):
        m.write().format("onnx")
    # the default format still saves a loadable model
    m.write().format("internal").save(str(tmp_path / "lr_internal"))
    assert LinearRegressionModel.load(str(tmp_path / "lr_internal")).coefficients == m.coefficients


@pytest.mark.skipif(CONNECT, reason="MLlib reference fits run in the classic session")
def test_pmml_export_has_mllibs_layout(spark, diabetes_df, tmp_path):
    from pyspark.ml.regression import LinearRegression as MLlibLinear

    ours = LinearRegression(regParam=0.02).fit(diabetes_df)
    ref = MLlibLinear(solver="normal", regParam=0.02).fit(diabetes_df)
    ours.write().format("pmml").save(str(tmp_path / "ours"))
    ref.write().format("pmml").save(str(tmp_path / "mllib"))
    a, b = _pmml_tree(_pmml_file(str(tmp_path / "ours"))), _pmml_tree(_pmml_file(str(tmp_path / "mllib")))
    np.testing.assert_allclose(a.pop("coef"), b.pop("coef"), rtol=1e-6)
    assert a.pop("intercept") == pytest.approx(b.pop("intercept"), rel=1e-6)
    assert a == b
