"""LogisticRegression solvers (mapreduce vs allreduce), the barrier runner, warm start,
thresholds, bounds, null vectors, and glmnet's reference values."""
import os

import numpy as np
import pytest
from pyspark.ml.linalg import DenseMatrix, Vectors, VectorUDT
from pyspark.sql import types as T

from helpers import CONNECT, vector_frame
from lr_data import frame as _frame
from lr_data import load as _load
from sparkml_scale.classification import LogisticRegression
from sparkml_scale.core.allreduce import run_barrier
from sparkml_scale.core.cluster import python_memory_per_task, task_slots

classic_only = pytest.mark.skipif(CONNECT, reason="MLlib reference fits run in the classic session")


@pytest.fixture(scope="module")
def cancer_df(spark):
    X, y = _load("breast_cancer")
    return _frame(spark, X, y, 1.0 + (np.arange(len(y)) % 2), parts=3)


@pytest.fixture(scope="module")
def iris_df(spark):
    X, y = _load("iris")
    return _frame(spark, X, y, 1.0 + (np.arange(len(y)) % 3))


class _Conf:
    def __init__(self, d):
        self.d = d

    def get(self, k, default=None):
        return self.d.get(k, default)


class _Spark:
    def __init__(self, **d):
        self.conf = _Conf({k.replace("_", "."): v for k, v in d.items()})


def test_task_slots_from_configuration():
    assert task_slots(_Spark(spark_master="local[3]")) == 3
    assert task_slots(_Spark(spark_master="local[*]")) == (os.cpu_count() or 1)
    assert task_slots(_Spark(spark_master="local")) == 1
    assert task_slots(_Spark(spark_master="local-cluster[2,2,1024]")) == 4
    assert task_slots(_Spark(spark_master="local[4]", spark_task_cpus="2")) == 2
    yarn = dict(spark_master="yarn", spark_executor_instances="5", spark_executor_cores="4")
    assert task_slots(_Spark(**yarn)) == 20
    assert task_slots(_Spark(spark_master="yarn", spark_dynamicAllocation_enabled="true")) is None
    assert task_slots(_Spark(spark_master="k8s://x")) is None
    # standalone without live executors to read: spark.cores.max
    assert task_slots(_Spark(spark_master="spark://h:7077", spark_cores_max="6", spark_task_cpus="2")) == 3
    assert task_slots(_Spark(spark_master="spark://h:7077")) is None
    # memory budget: pyspark memory per core when set, else the overhead per core
    assert python_memory_per_task(_Spark(spark_master="yarn", spark_executor_cores="2",
                                         spark_executor_pyspark_memory="4g"), 8) == 2 << 30
    assert python_memory_per_task(_Spark(spark_master="yarn", spark_executor_memory="8g"), 8) == (8 << 30) // 10


@pytest.mark.connect
@pytest.mark.parametrize("backend", ["spark", "gloo"])
def test_run_barrier_allreduce_sums_over_ranks(spark, backend):
    if backend == "gloo":
        pytest.importorskip("torch")

    def task(batches, comm):
        s, n = 0.0, 0
        for b in batches:
            ids = b.column(0).to_numpy()
            s += float(ids.sum())
            n += len(ids)
        total = comm.allreduce([np.array([s, n]), np.full((2, 3), comm.rank + 1.0)])
        code = {"gloo": 1, "spark": 2, "local": 0}[comm.backend]
        return [total[0], total[1], np.array([comm.rank, comm.world, code], dtype=np.float64)]

    out = run_barrier(spark.range(0, 1000, numPartitions=4), 2, task, backend=backend)
    assert len(out) == 2
    for rank, (tot, mat, info) in enumerate(out):
        np.testing.assert_array_equal(tot, [499500.0, 1000.0])
        np.testing.assert_array_equal(mat, np.full((2, 3), 3.0))
        assert info.tolist() == [rank, 2, {"gloo": 1, "spark": 2}[backend]]
    with pytest.raises(ValueError, match="backend"):
        run_barrier(spark.range(4), 1, task, backend="mpi")


def _coefs(model):
    return np.column_stack([model.coefficientMatrix.toArray(), model.interceptVector.toArray()])


@pytest.mark.connect
def test_solvers_agree_binomial_weighted(spark, cancer_df):
    kw = dict(regParam=0.01, weightCol="w", tol=1e-10, maxIter=500)
    mr = LogisticRegression(solver="mapreduce", **kw).fit(cancer_df)
    ar = LogisticRegression(solver="allreduce", **kw).fit(cancer_df)
    assert mr.summary.solverUsed == "mapreduce" and mr.summary.allreduceBackend is None
    assert ar.summary.solverUsed == "allreduce" and ar.summary.allreduceBackend in ("gloo", "spark")
    np.testing.assert_allclose(_coefs(ar), _coefs(mr), rtol=1e-6, atol=1e-6)
    # auto on local[2] has the slots and memory for allreduce
    auto = LogisticRegression(**kw).fit(cancer_df)
    assert auto.summary.solverUsed == "allreduce"


@pytest.mark.slow  # 22 s; the binomial agreement test and the conformance cases cover both solvers by default
def test_solvers_agree_multinomial_elastic_net_and_sparse(spark, iris_df):
    kw = dict(regParam=0.01, elasticNetParam=0.5, weightCol="w", tol=1e-10, maxIter=500)
    mr = LogisticRegression(solver="mapreduce", **kw).fit(iris_df)
    ar = LogisticRegression(solver="allreduce", **kw).fit(iris_df)
    assert ar.numClasses == 3
    np.testing.assert_allclose(_coefs(ar), _coefs(mr), rtol=1e-6, atol=1e-6)
    # sparse input stays CSR in the barrier tasks
    X, y = _load("digits")
    sdf = vector_frame(spark, X[:600], y[:600] % 2, sparse=True)
    kw = dict(regParam=0.01, tol=1e-10, maxIter=200)
    mr = LogisticRegression(solver="mapreduce", **kw).fit(sdf)
    ar = LogisticRegression(solver="allreduce", **kw).fit(sdf)
    np.testing.assert_allclose(_coefs(ar), _coefs(mr), rtol=1e-6, atol=1e-6)


def test_warm_start_from_initial_model(spark, cancer_df):
    kw = dict(regParam=0.01, weightCol="w", tol=1e-8)
    first = LogisticRegression(**kw).fit(cancer_df)
    again = LogisticRegression(**kw).setInitialModel(first).fit(cancer_df)
    assert again.summary.totalIterations <= 2 < first.summary.totalIterations
    np.testing.assert_allclose(_coefs(again), _coefs(first), rtol=1e-5, atol=1e-6)
    # a start of the wrong shape is refused by name
    X, y = _load("iris")
    small = LogisticRegression(maxIter=2).fit(_frame(spark, X, (y > 0).astype(float)))
    with pytest.raises(ValueError, match="initialModel"):
        LogisticRegression(**kw).setInitialModel(small).fit(cancer_df)
    with pytest.raises(TypeError, match="initialModel"):
        LogisticRegression().setInitialModel("model")


@classic_only
def test_bounds_match_mllib(spark, cancer_df):
    from pyspark.ml.classification import LogisticRegression as MLlibLR

    d = 30
    kw = dict(regParam=0.01, weightCol="w", tol=1e-12, maxIter=2000,
              lowerBoundsOnCoefficients=DenseMatrix(1, d, [0.0] * d),
              upperBoundsOnIntercepts=Vectors.dense([0.5]))
    ref = MLlibLR(**kw).fit(cancer_df)
    ours = LogisticRegression(**kw).fit(cancer_df)
    assert ours.coefficients.toArray().min() >= 0.0 and ours.intercept <= 0.5 + 1e-12
    np.testing.assert_allclose(ours.coefficients.toArray(), ref.coefficients.toArray(), atol=1e-4)
    assert abs(ours.intercept - ref.intercept) <= 1e-4
    with pytest.raises(ValueError, match="L2 only"):
        LogisticRegression(elasticNetParam=0.5, regParam=0.1,
                           lowerBoundsOnCoefficients=DenseMatrix(1, d, [0.0] * d)).fit(cancer_df)
    with pytest.raises(ValueError, match="lowerBoundsOnCoefficients"):
        LogisticRegression(lowerBoundsOnCoefficients=DenseMatrix(1, 3, [0.0] * 3)).fit(cancer_df)


@classic_only
def test_thresholds_match_mllib(spark, iris_df):
    from pyspark.ml.classification import LogisticRegression as MLlibLR

    kw = dict(regParam=0.1, thresholds=[0.6, 0.1, 0.3])
    ref = MLlibLR(**kw).fit(iris_df)
    ours = LogisticRegression(**kw).fit(iris_df)
    p_ref = np.array([r[0] for r in ref.transform(iris_df).select("prediction").collect()])
    p_ours = np.array([r[0] for r in ours.transform(iris_df).select("prediction").collect()])
    np.testing.assert_array_equal(p_ours, p_ref)
    plain = np.array([r[0] for r in ours.copy({ours.thresholds: [1.0, 1.0, 1.0]}).transform(iris_df)
                     .select("prediction").collect()])
    assert (plain != p_ours).sum() > 0  # the thresholds changed some predictions
    with pytest.raises(ValueError, match="thresholds"):
        ours.copy({ours.thresholds: [0.5, 0.5]}).transform(iris_df).collect()
    with pytest.raises(ValueError, match="thresholds"):
        LogisticRegression(thresholds=[0.0, 0.0, 1.0]).fit(iris_df)


@pytest.mark.connect
def test_transform_passes_null_vectors_through(spark, cancer_df):
    model = LogisticRegression(maxIter=5).fit(cancer_df)
    schema = T.StructType([T.StructField("features", VectorUDT(), True)])
    df = spark.createDataFrame([(Vectors.dense([1.0] * 30),), (None,)], schema)
    rows = model.transform(df).collect()
    assert rows[0]["prediction"] in (0.0, 1.0) and rows[0]["probability"] is not None
    assert rows[1]["prediction"] is None and rows[1]["probability"] is None and rows[1]["rawPrediction"] is None


@pytest.mark.parametrize("solver", ["allreduce", "mapreduce"])
def test_glmnet_reference_values(spark, solver):
    """The glmnet (R) values scikit-learn's ``test_logistic_glmnet`` checks: alpha=0,
    lambda=1, standardize=F -> regParam=1, elasticNetParam=0, standardization=False."""
    a = np.arange(-4, 5, dtype=float)
    b = np.array([0, 0, 1, 0, 1, 1, 1, 0, 0], dtype=float)
    X = np.column_stack([a, b])
    kw = dict(regParam=1.0, standardization=False, tol=1e-12, maxIter=1000, solver=solver)
    y2 = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1], dtype=float)
    m = LogisticRegression(**kw).fit(_frame(spark, X, y2))
    np.testing.assert_allclose(m.intercept, 0.89230405539, rtol=1e-5)
    np.testing.assert_allclose(m.coefficients.toArray(), [0.44464569182, 0.01457563448], rtol=1e-5)
    y3 = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2], dtype=float)
    m = LogisticRegression(**kw).fit(_frame(spark, X, y3))
    np.testing.assert_allclose(m.interceptVector.toArray(), [-0.12004759652, 2.251747383e-01, -0.1051271418],
                               rtol=1e-5)
    np.testing.assert_allclose(
        m.coefficientMatrix.toArray(),
        [[-0.38023389305, -0.01226499932], [-8.164030176e-05, 4.734548012e-02], [0.3803155334, -0.0350804808]],
        rtol=1e-5, atol=1e-8,
    )


# ---------------------------------------------------------------- the direct allreduce path
@pytest.fixture
def no_blocks(monkeypatch):
    """Fail any fit that builds the cached block table (the direct path must not)."""
    import sparkml_scale.core.blocks as blocks

    def refuse(*a, **k):
        raise AssertionError("make_blocks called: the direct allreduce path must read the input partitions")

    monkeypatch.setattr(blocks, "make_blocks", refuse)


@pytest.mark.connect
def test_direct_allreduce_matches_mapreduce_weighted_binomial(spark, cancer_df, request):
    kw = dict(regParam=0.01, weightCol="w", tol=1e-10, maxIter=500)
    mr = LogisticRegression(solver="mapreduce", **kw).fit(cancer_df)
    request.getfixturevalue("no_blocks")
    ar = LogisticRegression(solver="allreduce", **kw).fit(cancer_df)
    auto = LogisticRegression(**kw).fit(cancer_df)  # local[2]: auto takes the direct path too
    assert ar.summary.solverUsed == auto.summary.solverUsed == "allreduce"
    assert ar.summary.numInstances == mr.summary.numInstances == cancer_df.count()
    np.testing.assert_allclose(_coefs(ar), _coefs(mr), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(_coefs(auto), _coefs(mr), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ar.summary.objectiveHistory[-1], mr.summary.objectiveHistory[-1], rtol=1e-9)


def test_direct_allreduce_multinomial_and_sparse(spark, iris_df, no_blocks):
    kw = dict(regParam=0.01, weightCol="w", tol=1e-10, maxIter=300)
    ar = LogisticRegression(solver="allreduce", **kw).fit(iris_df)
    assert ar.numClasses == 3 and ar.summary.solverUsed == "allreduce"
    X, y = _load("digits")
    X = np.where(X[:300] > 10, X[:300], 0.0)  # under half full: read as CSR
    y = y[:300]
    sdf = vector_frame(spark, X, y % 3, sparse=True, parts=3)
    kw2 = dict(regParam=0.05, tol=1e-10, maxIter=200)
    ars = LogisticRegression(solver="allreduce", **kw2).fit(sdf)
    assert ars.numClasses == 3
    dense = vector_frame(spark, X, y % 3, parts=3)
    ard = LogisticRegression(solver="allreduce", **kw2).fit(dense)
    np.testing.assert_allclose(_coefs(ars), _coefs(ard), rtol=1e-6, atol=1e-6)


def test_direct_allreduce_bad_rows_raise_on_the_driver(spark, no_blocks):
    X = np.array([[0.0, 1.0], [1.0, 0.5], [2.0, 1.5], [3.0, 0.0]])
    y = np.array([0.0, 1.0, 0.0, 1.0])
    lr = LogisticRegression(solver="allreduce", maxIter=5)
    nan = X.copy()
    nan[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"column 'features' \(featuresCol\) holds 1 NaN"):
        lr.fit(vector_frame(spark, nan, y))
    with pytest.raises(ValueError, match=r"column 'label' \(labelCol\) holds 1 value\(s\) that are not class"):
        lr.fit(vector_frame(spark, X, np.array([0.0, 1.0, 2.5, 1.0])))
    with pytest.raises(ValueError, match="holds only label 0"):
        lr.fit(vector_frame(spark, X, np.zeros(4)))
    with pytest.raises(ValueError, match=r"column 'weight' \(weightCol\) holds 1 null, NaN"):
        LogisticRegression(solver="allreduce", maxIter=5, weightCol="weight").fit(
            vector_frame(spark, X, y, np.array([1.0, -1.0, 1.0, 1.0])))
    schema = T.StructType([T.StructField("features", VectorUDT()), T.StructField("label", T.DoubleType())])
    nulls = spark.createDataFrame([(Vectors.dense([0.0, 1.0]), 0.0), (None, 1.0), (Vectors.dense([1.0, 0.0]), 1.0)],
                                  schema)
    from sparkml_scale.core.arrow import VectorColumnError

    with pytest.raises(VectorColumnError, match="holds 1 null vector"):
        lr.fit(nulls)


# ---------------------------------------------------------------- mapreduce blocks on local disks
def _store_files(spark):
    """The store files on this machine (local master: the executor's SPARK_LOCAL_DIRS)."""
    import glob

    import pyarrow as pa

    def where(batches):
        for _ in batches:
            pass
        yield pa.RecordBatch.from_pydict({"d": [os.environ.get("SPARK_LOCAL_DIRS", "")]})

    dirs = {r["d"].split(",")[0] for r in spark.range(1).mapInArrow(where, "d string").collect()}
    return sorted(f for d in dirs for f in glob.glob(os.path.join(d, "sparkml_scale-blocks", "*", "*")))


@pytest.mark.skipif(CONNECT, reason="reads the executors' local dirs (local master)")
def test_mapreduce_blocks_on_local_disk_read_again_when_missing_and_removed(spark, cancer_df):
    """solver='mapreduce' keeps its blocks in executor-local files (no block rows in the Spark
    cache); a partition whose file is gone is read again from the input, with the same sums;
    unpersist removes the files."""
    from sparkml_scale.core.blocks import LocalBlockStore, make_blocks
    from sparkml_scale.core.linear_loss import BinomialLoss
    from sparkml_scale.core.stage import TrainingData
    from sparkml_scale.core.training import TrainingColumns

    cols = TrainingColumns("features", label="label", weight="w", labels="classes").probe(cancer_df)
    cached = make_blocks(cancer_df, cols)
    stored = make_blocks(cancer_df, cols, store=LocalBlockStore(), block_bytes=4096)
    try:
        assert stored.df.count() == stored.stats.num_partitions == 3  # statistics rows only
        files = [f for f in _store_files(spark) if stored.store.key in f]
        assert len(files) == 3 and all(os.path.getsize(f) > 0 for f in files)
        np.testing.assert_array_equal(stored.stats.mean, cached.stats.mean)
        coef = np.linspace(-0.01, 0.01, cols.size)[None, :]
        b = np.array([0.1])

        def sums(data):
            return data.aggregate(lambda blocks: BinomialLoss().sums(blocks, coef, b))

        ref = sums(TrainingData(cancer_df, cols, 2, cached))
        first = sums(TrainingData(cancer_df, cols, 2, stored))
        for f in files[:2]:
            os.unlink(f)
        again = sums(TrainingData(cancer_df, cols, 2, stored))  # 2 partitions read from the input
        assert len([f for f in _store_files(spark) if stored.store.key in f]) == 3  # and written again
        for x, y, z in zip(ref, first, again):
            np.testing.assert_allclose(y, x, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(z, x, rtol=1e-12, atol=1e-12)
    finally:
        cached.unpersist()
        stored.unpersist()
    assert not [f for f in _store_files(spark) if stored.store.key in f]


@pytest.mark.skipif(CONNECT, reason="reads the executors' local dirs (local master)")
def test_mapreduce_fit_leaves_no_block_files(spark, cancer_df):
    before = _store_files(spark)
    mr = LogisticRegression(solver="mapreduce", regParam=0.01, weightCol="w", tol=1e-10, maxIter=500).fit(cancer_df)
    assert mr.summary.solverUsed == "mapreduce"
    assert _store_files(spark) == before


@pytest.fixture(scope="module")
def hashed_df(spark):
    """Hashed-like features: 2048 columns of which 40 occur, 6 per row, one of them a constant
    3.0 (zero variance), and 600 rows."""
    rng = np.random.default_rng(21)
    n, d = 600, 2048
    used = np.sort(rng.choice(d, 40, replace=False))
    X = np.zeros((n, d))
    for i in range(n):
        X[i, rng.choice(used[1:], 6, replace=False)] = rng.choice([1.0, 2.0, -1.0], size=6)
    X[:, used[0]] = 3.0
    beta = np.zeros(d)
    beta[used] = rng.normal(size=40)
    y = (X @ beta + rng.logistic(size=n) > 0).astype(float)
    return vector_frame(spark, X, y, sparse=True, parts=3), used


@pytest.mark.parametrize("solver", ["mapreduce", "allreduce"])
def test_hashed_features_fit_on_their_support_as_mllib(spark, hashed_df, solver, monkeypatch):
    """The optimizer sees only the 39 columns that vary (support_of); mapreduce takes Newton steps
    there (wants_newton), allreduce L-BFGS; both give MLlib's coefficients, zeros elsewhere."""
    from pyspark.ml.classification import LogisticRegression as MLlibLR

    import sparkml_scale.classification.logistic_regression as lr_mod
    from sparkml_scale.core.optim.lbfgs import NewtonSums

    df, used = hashed_df
    kw = dict(regParam=0.01, tol=1e-10, maxIter=300)
    kernels = []
    setup = lr_mod._setup

    def spy(*a, **k):
        obj, sums = setup(*a, **k)
        kernels.append((sums, obj))
        return obj, sums

    monkeypatch.setattr(lr_mod, "_setup", spy)
    ours = LogisticRegression(solver=solver, **kw).fit(df)
    ref = MLlibLR(**kw).fit(df)
    B = ours.coefficients.toArray()
    off = np.setdiff1d(np.arange(2048), used[1:])
    assert np.all(B[off] == 0.0)
    np.testing.assert_allclose(B, ref.coefficients.toArray(), rtol=1e-5, atol=1e-7)
    assert abs(ours.intercept - ref.intercept) < 1e-6
    assert ours.summary.objectiveHistory[-1] <= ref.summary.objectiveHistory[-1] * (1 + 1e-9)
    if solver == "mapreduce":  # set up on the driver (allreduce: inside the barrier tasks)
        (sums, obj), = kernels
        assert isinstance(sums, NewtonSums) and obj.d == 39 and obj.num_features == 2048
        np.testing.assert_array_equal(sums.support, used[1:])
        assert ours.summary.totalIterations <= 10 and ours.summary.totalIterations < ref.summary.totalIterations
