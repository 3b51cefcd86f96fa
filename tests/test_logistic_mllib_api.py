"""LogisticRegressionModel as a drop-in for MLlib's (issue 15, item 2): compressed
coefficient matrices, ``evaluate(df)``, the repr and ``maxBlockSizeInMB``.  pyspark's own
docstring examples run in tests/test_pyspark_doctests.py."""
import numpy as np
import pytest
from pyspark.ml.linalg import DenseMatrix, DenseVector, SparseMatrix, SparseVector

from lr_data import frame, load
from sparkml_scale.classification import LogisticRegression, LogisticRegressionModel
from sparkml_scale.core.linear import compressed_matrix as _compressed_matrix


@pytest.fixture(scope="module")
def iris(spark):
    X, y = load("iris")
    return frame(spark, X, y)


def test_coefficient_matrix_is_compressed_as_mllibs(spark, iris):
    """L1 leaves most of the 3 x 4 matrix zero: ours and MLlib's are the same sparse layout."""
    from pyspark.ml.classification import LogisticRegression as MLlibLR

    params = dict(regParam=0.1, elasticNetParam=1.0, family="multinomial")
    ours = LogisticRegression(**params).fit(iris)
    ref = MLlibLR(**params).fit(iris)
    a, b = ours.coefficientMatrix, ref.coefficientMatrix
    assert type(a) is type(b) is SparseMatrix
    assert bool(a.isTransposed) == bool(b.isTransposed)
    assert list(a.colPtrs) == list(b.colPtrs) and list(a.rowIndices) == list(b.rowIndices)
    np.testing.assert_allclose(a.values, b.values, atol=1e-4)
    assert type(ours.interceptVector) is type(ref.interceptVector)


@pytest.mark.parametrize("shape, nnz", [((1, 30), 30), ((1, 30), 3), ((3, 4), 3), ((10, 3), 2), ((4, 4), 16),
                                        ((2, 50), 0), ((7, 5), 12)])
def test_compressed_layout_matches_the_jvm(spark, shape, nnz):
    """Our ``_compressed_matrix`` picks the layout Spark's ``Matrix.compressed`` picks."""
    if not hasattr(spark, "sparkContext"):
        pytest.skip("needs the JVM of a classic session")
    rng = np.random.default_rng(nnz + shape[0])
    B = np.zeros(shape)
    B.flat[rng.choice(B.size, nnz, replace=False)] = rng.normal(size=nnz)
    jvm, gateway = spark.sparkContext._jvm, spark.sparkContext._gateway
    values = gateway.new_array(jvm.double, B.size)
    for i, v in enumerate(B.T.ravel()):  # column-major
        values[i] = float(v)
    jm = jvm.org.apache.spark.ml.linalg.Matrices.dense(shape[0], shape[1], values).compressed()
    ours = _compressed_matrix(B)
    np.testing.assert_array_equal(ours.toArray(), B)
    jsparse = jm.getClass().getSimpleName() == "SparseMatrix"
    assert isinstance(ours, SparseMatrix) == jsparse
    if jsparse:
        assert bool(ours.isTransposed) == bool(jm.isTransposed())


def test_binomial_coefficients_follow_the_matrix(iris, spark):
    X, y = load("breast_cancer")
    df = frame(spark, X, y)
    sparse = LogisticRegression(regParam=0.1, elasticNetParam=1.0).fit(df)
    dense = LogisticRegression(regParam=0.01).fit(df)
    assert isinstance(sparse.coefficients, SparseVector) and sparse.coefficients.numNonzeros() < 15
    np.testing.assert_array_equal(sparse.coefficients.toArray(), sparse.coefficientMatrix.toArray()[0])
    assert isinstance(dense.coefficients, DenseVector) and isinstance(dense.coefficientMatrix, DenseMatrix)


def test_evaluate_and_repr(spark):
    X, y = load("breast_cancer")
    train, test = frame(spark, X[::2], y[::2]), frame(spark, X[1::2], y[1::2])
    m = LogisticRegression(regParam=0.01, weightCol="w").fit(train)
    # MLlib's toString, then the training record (sparkml_scale.core.display; tests/test_display.py)
    assert repr(m).startswith(f"LogisticRegressionModel: uid={m.uid}, numClasses=2, numFeatures=30, solverUsed=")
    assert m.evaluate(train).accuracy == m.summary.accuracy
    ev = m.evaluate(test)
    p = np.array([r.prediction for r in m.transform(test).orderBy("id").collect()])
    assert ev.accuracy == pytest.approx(np.mean(p == y[1::2]))
    assert ev.areaUnderROC > 0.95 and len(ev.falsePositiveRateByLabel) == 2
    assert ev.weightedFMeasure() == pytest.approx(
        np.dot(np.bincount(y[1::2].astype(int)) / len(p), ev.fMeasureByLabel()))
    assert not hasattr(ev, "objectiveHistory") and "numClasses=2" in repr(ev)
    assert "totalIterations=" in repr(m.summary)
    with pytest.raises(ValueError, match="'nope'.*labelCol"):
        m.copy({m.labelCol: "nope"}).evaluate(test)


def test_max_block_size_in_mb(spark, iris):
    assert LogisticRegression().getMaxBlockSizeInMB() == 0.0
    default = LogisticRegression(regParam=0.01).fit(iris)
    tiny = LogisticRegression(regParam=0.01, maxBlockSizeInMB=1e-4).fit(iris)  # ~100-byte blocks: 1 row each
    np.testing.assert_allclose(tiny.coefficientMatrix.toArray(), default.coefficientMatrix.toArray(), atol=1e-8)
    assert LogisticRegressionModel.getMaxBlockSizeInMB(tiny) == 1e-4
    with pytest.raises(ValueError, match="maxBlockSizeInMB"):
        LogisticRegression(maxBlockSizeInMB=-1.0).fit(iris)
