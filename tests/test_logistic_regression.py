"""LogisticRegression: parity with Spark MLlib on real data, transform, persistence, bad input."""
import numpy as np
import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.linalg import Vectors, VectorUDT
from pyspark.sql import types as T

from helpers import CONNECT, assert_close, vector_frame
from sparkml_scale.classification import LogisticRegression, LogisticRegressionModel


@pytest.fixture(scope="module")
def cancer():
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    return X, y


@pytest.fixture(scope="module")
def cancer_df(spark, cancer):
    X, y = cancer
    return vector_frame(spark, X, y)


@pytest.fixture(scope="module")
def cancer_mean_df(spark, cancer):
    # The ten "mean" features: the unpenalised maximum-likelihood estimate exists (not separable).
    X, y = cancer
    return vector_frame(spark, X[:, :10], y)


@pytest.fixture(scope="module")
def cancer_scaled_df(spark, cancer):
    from sklearn.preprocessing import StandardScaler

    X, y = cancer
    return vector_frame(spark, StandardScaler().fit_transform(X), y)


CASES = [
    ("cancer_mean_df", 0.0, True),
    ("cancer_mean_df", 0.0, False),
    ("cancer_df", 0.01, True),
    ("cancer_df", 0.1, True),
    ("cancer_scaled_df", 0.01, False),
    ("cancer_scaled_df", 0.05, True),
]


@pytest.mark.skipif(CONNECT, reason="MLlib reference fits run in the classic session")
@pytest.mark.parametrize("data,reg,std", CASES)
def test_matches_mllib(request, data, reg, std):
    from pyspark.ml.classification import LogisticRegression as MLlibLR

    df = request.getfixturevalue(data)
    kw = dict(regParam=reg, standardization=std, tol=1e-12, maxIter=1000)
    ref = MLlibLR(**kw).fit(df)
    ours = LogisticRegression(**kw).fit(df)
    assert_close(ours.coefficients.toArray(), ref.coefficients.toArray(), tol=1e-4)
    assert_close([ours.intercept], [ref.intercept], tol=1e-4)
    assert ours.summary.objectiveHistory[-1] <= ref.summary.objectiveHistory[-1] + 1e-9


@pytest.mark.skipif(CONNECT, reason="MLlib reference fits run in the classic session")
def test_weights_and_no_intercept_match_mllib(spark, cancer):
    from pyspark.ml.classification import LogisticRegression as MLlibLR
    from sklearn.preprocessing import StandardScaler

    X, y = cancer
    w = np.random.default_rng(0).uniform(0.2, 3.0, len(y))
    df = vector_frame(spark, StandardScaler().fit_transform(X[:, :10]), y, w)
    for fit_intercept in (True, False):
        kw = dict(regParam=0.02, tol=1e-12, maxIter=1000, weightCol="weight", fitIntercept=fit_intercept)
        ref = MLlibLR(**kw).fit(df)
        ours = LogisticRegression(**kw).fit(df)
        assert_close(ours.coefficients.toArray(), ref.coefficients.toArray(), tol=1e-4)
        assert_close([ours.intercept], [ref.intercept], tol=1e-4)


@pytest.mark.connect
def test_fit_transform_types_and_predictions(spark, cancer):
    from sklearn.preprocessing import StandardScaler
    from sklearn.linear_model import LogisticRegression as SkLR

    X, y = cancer
    Xs = StandardScaler().fit_transform(X)
    df = vector_frame(spark, Xs, y)
    model = LogisticRegression(regParam=0.1, standardization=False, tol=1e-10, maxIter=500).fit(df)
    # sklearn: C = 1 / (n * regParam) gives the same objective without standardization.
    sk = SkLR(C=1.0 / (len(y) * 0.1), tol=1e-10, max_iter=10000).fit(Xs, y)
    assert_close(model.coefficients.toArray(), sk.coef_[0], tol=1e-4, what="sklearn")
    assert_close([model.intercept], sk.intercept_, tol=1e-4, what="sklearn")
    assert model.numFeatures == 30 and model.numClasses == 2
    assert model.summary.totalIterations == len(model.summary.objectiveHistory) - 1 > 0
    assert np.all(np.diff(model.summary.objectiveHistory) <= 1e-12)

    out = model.transform(df)
    schema = out.schema
    assert isinstance(schema["rawPrediction"].dataType, VectorUDT)
    assert isinstance(schema["probability"].dataType, VectorUDT)
    assert isinstance(schema["prediction"].dataType, T.DoubleType)
    rows = out.select("features", "rawPrediction", "probability", "prediction").collect()
    feats = np.array([r.features.toArray() for r in rows])
    p = np.array([r.probability[1] for r in rows])
    expected = sk.predict_proba(feats)[:, 1]
    np.testing.assert_allclose(p, expected, atol=1e-5)
    raw = np.array([r.rawPrediction.toArray() for r in rows])
    np.testing.assert_allclose(raw[:, 0], -raw[:, 1])
    np.testing.assert_allclose(np.array([r.prediction for r in rows]), (p > 0.5).astype(float))
    assert model.predict(Vectors.dense(feats[0])) == rows[0].prediction


@pytest.mark.connect
def test_sparse_features_equal_dense(spark):
    rng = np.random.default_rng(1)
    n, d = 400, 12
    X = rng.normal(size=(n, d)) * (rng.uniform(size=(n, d)) < 0.3)
    y = (X @ rng.normal(size=d) + rng.normal(size=n) > 0).astype(float)
    dense = vector_frame(spark, X, y, parts=None, cache=False)
    sparse = vector_frame(spark, X, y, sparse=True, parts=None, cache=False)
    kw = dict(regParam=0.01, tol=1e-12, maxIter=500)
    a = LogisticRegression(**kw).fit(dense)
    b = LogisticRegression(**kw).fit(sparse)
    np.testing.assert_allclose(a.coefficients.toArray(), b.coefficients.toArray(), atol=1e-7)
    np.testing.assert_allclose(a.intercept, b.intercept, atol=1e-7)


@pytest.mark.connect
def test_pipeline_save_load(spark, cancer, tmp_path):
    X, y = cancer
    df = vector_frame(spark, X[:, :10], y)
    lr = LogisticRegression(regParam=0.05, maxIter=50)
    pipe = Pipeline(stages=[lr])
    pm = pipe.fit(df)
    path = str(tmp_path / "pm")
    pm.write().overwrite().save(path)
    loaded = PipelineModel.load(path)
    m0, m1 = pm.stages[0], loaded.stages[0]
    assert isinstance(m1, LogisticRegressionModel)
    np.testing.assert_array_equal(m0.coefficients.toArray(), m1.coefficients.toArray())
    assert m0.intercept == m1.intercept and m1.getRegParam() == 0.05 and m1.uid == m0.uid
    a = pm.transform(df).select("probability").collect()
    b = loaded.transform(df).select("probability").collect()
    assert a == b
    # estimator round trip
    lr.save(str(tmp_path / "lr"))
    lr2 = LogisticRegression.load(str(tmp_path / "lr"))
    assert lr2.getRegParam() == 0.05 and lr2.getMaxIter() == 50 and lr2.uid == lr.uid
    # no pickle anywhere in the saved model
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert b"\x80\x04\x95" not in f.read_bytes()[:3]


@pytest.mark.connect
@pytest.mark.parametrize(
    "mutate,exc,words",
    [
        (lambda df: df.withColumnRenamed("features", "f"), ValueError, ["features", "featuresCol"]),
        (lambda df: df.selectExpr("'a' AS features", "label"), TypeError, ["features", "vector"]),
        (lambda df: df.selectExpr("features", "CAST(label AS STRING) AS label"), TypeError, ["label"]),
        # fractional labels, one class, empty data: tests/test_bad_input.py
    ],
)
def test_bad_input(spark, cancer_small, mutate, exc, words):
    with pytest.raises(exc) as info:
        LogisticRegression(maxIter=5).fit(mutate(cancer_small))
    for w in words:
        assert w in str(info.value)


@pytest.fixture(scope="module")
def cancer_small(spark, cancer):
    X, y = cancer
    return vector_frame(spark, X[:60, :4], y[:60])


@pytest.mark.connect
def test_bad_values(spark):
    # NaN features, null vectors, negative weights, label 2 with family="binomial": tests/test_bad_input.py
    mixed = spark.createDataFrame(
        [(Vectors.dense([1.0, 2.0]), 1.0), (Vectors.dense([1.0, 2.0, 3.0]), 0.0)], ["features", "label"]
    ).coalesce(1)
    with pytest.raises(ValueError, match="features.*sizes"):
        LogisticRegression().fit(mixed)
    small = spark.createDataFrame(
        [(Vectors.dense([1.0]), 1.0, -1.0), (Vectors.dense([0.0]), 0.0, 1.0)], ["features", "label", "w"]
    )
    for bad in (dict(regParam=-1.0), dict(elasticNetParam=2.0), dict(maxIter=-1), dict(family="poisson")):
        with pytest.raises(ValueError, match=list(bad)[0]):
            LogisticRegression(**bad).fit(small)


@pytest.mark.slow  # every stage's CrossValidator use is checked by tests/test_conformance.py
@pytest.mark.skipif(CONNECT, reason="CrossValidator with Python-only stages is checked in the classic session")
def test_cross_validator(spark, cancer):
    from pyspark.ml.evaluation import BinaryClassificationEvaluator
    from pyspark.ml.tuning import CrossValidator, ParamGridBuilder
    from sklearn.preprocessing import StandardScaler

    X, y = cancer
    df = vector_frame(spark, StandardScaler().fit_transform(X[:, :10]), y)
    lr = LogisticRegression(maxIter=10)
    grid = ParamGridBuilder().addGrid(lr.regParam, [1.0, 0.001]).build()
    cv = CrossValidator(estimator=lr, estimatorParamMaps=grid, evaluator=BinaryClassificationEvaluator(),
                        numFolds=2, seed=3)
    cvm = cv.fit(df)
    assert len(cvm.avgMetrics) == 2 and cvm.avgMetrics[1] > cvm.avgMetrics[0] > 0.5
    assert cvm.bestModel.getRegParam() == 0.001


@pytest.mark.connect
def test_summary_metrics_on_training_data(spark, cancer):
    from sklearn.metrics import accuracy_score, roc_auc_score

    X, y = cancer
    df = vector_frame(spark, X[:, :10], y)
    model = LogisticRegression(regParam=0.01).fit(df)
    s = model.summary
    Xd = X[:, :10]
    m = Xd @ model.coefficients.toArray() + model.intercept
    assert abs(s.areaUnderROC - roc_auc_score(y, m)) < 1e-9
    assert abs(s.accuracy - accuracy_score(y, (m > 0).astype(float))) < 1e-12
    cm = s.confusionMatrix
    assert cm.shape == (2, 2) and cm.sum() == len(y)
    assert s.recallByLabel[1] == cm[1, 1] / cm[1].sum()
