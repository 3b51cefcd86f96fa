"""LogisticRegression: multinomial family and elastic net, parity with MLlib on real data."""
import numpy as np
import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.linalg import Vectors

from helpers import CONNECT, assert_close
from lr_data import frame as _frame
from lr_data import load as _load
from sparkml_scale.classification import LogisticRegression, LogisticRegressionModel

pytestmark = pytest.mark.skipif(CONNECT, reason="MLlib reference fits run in the classic session")


@pytest.fixture(scope="module")
def iris_df(spark):
    X, y = _load("iris")
    return _frame(spark, X, y, 1.0 + (np.arange(len(y)) % 3))


@pytest.fixture(scope="module")
def wine_df(spark):
    X, y = _load("wine")
    return _frame(spark, X, y, 1.0 + (np.arange(len(y)) % 3))


@pytest.fixture(scope="module")
def cancer_df(spark):
    X, y = _load("breast_cancer")
    return _frame(spark, X, y, 1.0 + (np.arange(len(y)) % 2))


def _check(df, **kw):
    from pyspark.ml.classification import LogisticRegression as MLlibLR

    kw = dict(tol=1e-12, maxIter=3000, **kw)
    ref = MLlibLR(**kw).fit(df)
    ours = LogisticRegression(**kw).fit(df)
    assert ours.numClasses == ref.numClasses
    assert_close(ours.coefficientMatrix.toArray(), ref.coefficientMatrix.toArray(), tol=1e-4)
    assert_close(ours.interceptVector.toArray(), ref.interceptVector.toArray(), tol=1e-4)
    # never a worse optimum than MLlib's
    assert ours.summary.objectiveHistory[-1] <= ref.summary.objectiveHistory[-1] + 1e-9
    return ours, ref


MULTI = [
    (alpha, reg, std, wc)
    for alpha, reg in [(0.0, 0.1), (0.5, 0.01), (1.0, 0.1)]
    for std, wc in [(True, False), (False, True)]
] + [(0.0, 0.001, True, False)]


@pytest.mark.parametrize("alpha,reg,std,wc", MULTI)
def test_multinomial_matches_mllib_iris(iris_df, alpha, reg, std, wc):
    kw = dict(family="multinomial", elasticNetParam=alpha, regParam=reg, standardization=std)
    if wc:
        kw["weightCol"] = "w"
    _check(iris_df, **kw)


@pytest.mark.parametrize("alpha,reg", [(0.0, 0.01), (0.5, 0.001), (1.0, 0.1)])
def test_multinomial_matches_mllib_wine_auto_family(wine_df, alpha, reg):
    ours, _ = _check(wine_df, elasticNetParam=alpha, regParam=reg)  # family auto: 3 classes
    assert ours.isMultinomial and ours.coefficientMatrix.numRows == 3
    with pytest.raises(AttributeError, match="coefficientMatrix"):
        ours.coefficients


# The whole elastic-net grid (standardization off included) runs in tests/test_logistic_parity_grid.py.
@pytest.mark.parametrize("alpha,reg,std,wc", [(1.0, 0.01, True, True), (0.5, 0.1, True, False)])
def test_binomial_elastic_net_matches_mllib(cancer_df, alpha, reg, std, wc):
    kw = dict(elasticNetParam=alpha, regParam=reg, standardization=std)
    if wc:
        kw["weightCol"] = "w"
    ours, ref = _check(cancer_df, **kw)
    if alpha == 1.0 and reg == 0.1:
        assert (ours.coefficients.toArray() == 0.0).sum() > 10  # L1 gives exact zeros
        np.testing.assert_array_equal(ours.coefficients.toArray() == 0.0, ref.coefficients.toArray() == 0.0)


def test_multinomial_transform_and_persistence(spark, wine_df, tmp_path):
    from pyspark.ml.classification import LogisticRegression as MLlibLR

    kw = dict(regParam=0.01, tol=1e-12, maxIter=3000)
    ref = MLlibLR(**kw).fit(wine_df)
    model = Pipeline(stages=[LogisticRegression(**kw)]).fit(wine_df)
    path = str(tmp_path / "mn")
    model.write().overwrite().save(path)
    loaded = PipelineModel.load(path)
    stage = loaded.stages[0]
    assert isinstance(stage, LogisticRegressionModel) and stage.numClasses == 3
    np.testing.assert_array_equal(stage.coefficientMatrix.toArray(), model.stages[0].coefficientMatrix.toArray())
    got = loaded.transform(wine_df).orderBy("id").select("rawPrediction", "probability", "prediction").collect()
    exp = ref.transform(wine_df).orderBy("id").select("rawPrediction", "probability", "prediction").collect()
    np.testing.assert_allclose([r[1].toArray() for r in got], [r[1].toArray() for r in exp], atol=1e-4)
    assert [r[2] for r in got] == [r[2] for r in exp]
    np.testing.assert_allclose(np.array([r[1].toArray() for r in got]).sum(axis=1), 1.0, atol=1e-12)
    v = Vectors.dense(_load("wine")[0][0])
    np.testing.assert_allclose(stage.predictProbability(v).toArray(), ref.predictProbability(v).toArray(), atol=1e-4)
    assert stage.predict(v) == ref.predict(v)


def test_training_summary_matches_mllib(cancer_df, wine_df):
    from pyspark.ml.classification import LogisticRegression as MLlibLR

    for df, kw in ((cancer_df, dict(regParam=0.01, weightCol="w")), (wine_df, dict(regParam=0.01))):
        kw = dict(tol=1e-12, maxIter=3000, **kw)
        ref = MLlibLR(**kw).fit(df).summary
        ours = LogisticRegression(**kw).fit(df).summary
        assert ours.numInstances == df.count()
        assert abs(ours.accuracy - ref.accuracy) < 1e-12
        np.testing.assert_allclose(ours.precisionByLabel, ref.precisionByLabel, atol=1e-12)
        np.testing.assert_allclose(ours.recallByLabel, ref.recallByLabel, atol=1e-12)
        np.testing.assert_allclose(ours.fMeasureByLabel(), ref.fMeasureByLabel(), atol=1e-12)
        np.testing.assert_allclose(ours.fMeasureByLabel(0.5), ref.fMeasureByLabel(0.5), atol=1e-12)
        assert abs(ours.weightedPrecision - ref.weightedPrecision) < 1e-12
        assert abs(ours.weightedRecall - ref.weightedRecall) < 1e-12
        assert ours.labels == list(ref.labels)
        if "weightCol" in kw:
            assert abs(ours.areaUnderROC - ref.areaUnderROC) < 1e-6
            assert 0.95 < ours.areaUnderROC <= 1.0
        else:
            with pytest.raises(AttributeError, match="binomial"):
                ours.areaUnderROC
