"""PCA: parity with Spark MLlib and scikit-learn, randomized vs exact on wide sparse data,
transform/inverseTransform, persistence, bad input."""
import functools

import numpy as np
import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.linalg import Vectors, VectorUDT
from pyspark.sql import types as T

from helpers import CONNECT, vector_frame
from sparkml_scale.core.arrow import VectorColumnError
from sparkml_scale.feature import PCA, FeatureHasher, PCAModel

#: ``_vec_frame(spark, X, sparse=False)``: ``id, features`` in 3 partitions, cached.
_vec_frame = functools.partial(vector_frame, ids=True, parts=3)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    return load_digits().data.astype(np.float64)


@pytest.fixture(scope="module")
def digits_df(spark, digits):
    return _vec_frame(spark, digits)


def _collect(df, col, order="id"):
    return np.array([r[0].toArray() for r in df.orderBy(order).select(col).collect()])


def _match_signs(a, b):
    """b with each column's sign flipped to agree with a."""
    s = np.sign((a * b).sum(axis=0))
    s[s == 0] = 1
    return b * s


def _assert_same_as_mllib(spark, X, k, sparse=False):
    """Our exact PCA equals MLlib's on X: components with their signs, explained variance and
    the projections of transform (no sign matching anywhere)."""
    from pyspark.ml.feature import PCA as MLlibPCA

    df = _vec_frame(spark, X, sparse=sparse)
    ref = MLlibPCA(k=k, inputCol="features", outputCol="p").fit(df)
    ours = PCA(k=k, inputCol="features", outputCol="p").fit(df)
    assert ours.methodUsed == "exact"
    a, b = ref.pc.toArray(), ours.pc.toArray()
    assert b.shape == (X.shape[1], k)
    assert np.all((a * b).sum(axis=0) > 0.999), f"component signs differ from MLlib's: {np.sign((a * b).sum(axis=0))}"
    np.testing.assert_allclose(b, a, atol=1e-9)
    np.testing.assert_allclose(ours.explainedVariance.toArray(), ref.explainedVariance.toArray(), atol=1e-12)
    # transform: pc^T x without centring, as MLlib's PCAModel
    ya, yb = _collect(ref.transform(df), "p"), _collect(ours.transform(df), "p")
    np.testing.assert_allclose(yb, ya, atol=1e-10 * np.abs(ya).max())
    df.unpersist()


@pytest.mark.skipif(CONNECT, reason="MLlib reference fits run in the classic session")
@pytest.mark.parametrize("sparse", [False, True])
def test_exact_matches_mllib(spark, digits, sparse):
    _assert_same_as_mllib(spark, digits, 10, sparse=sparse)


def _unseen(name):
    from sklearn import datasets

    if name == "gaussian":
        rng = np.random.default_rng(2024)
        return rng.standard_normal((400, 12)) @ rng.standard_normal((12, 12)) + rng.normal(0, 5, 12)
    return getattr(datasets, f"load_{name}")().data.astype(np.float64)


@pytest.mark.skipif(CONNECT, reason="MLlib reference fits run in the classic session")
@pytest.mark.parametrize("name, k", [("iris", 4), ("wine", 13), ("breast_cancer", 10), ("gaussian", 12)])
def test_component_signs_match_mllib_on_other_data(spark, name, k):
    """MLlib takes U of LAPACK dgesdd on the covariance; ours does too, so the signs (and the
    projections users get) agree on data the method was not developed on (k = d for iris, wine
    and the Gaussian: MLlib's k == n branch)."""
    _assert_same_as_mllib(spark, _unseen(name), k)


@pytest.mark.connect
def test_centered_whitened_matches_sklearn(spark, digits, digits_df):
    from sklearn.decomposition import PCA as SkPCA

    sk = SkPCA(n_components=8, whiten=True).fit(digits)
    m = PCA(k=8, inputCol="features", outputCol="p", center=True, whiten=True).fit(digits_df)
    np.testing.assert_allclose(m.eigenvalues, sk.explained_variance_, rtol=1e-10)
    np.testing.assert_allclose(m.singularValues, sk.singular_values_, rtol=1e-10)
    np.testing.assert_allclose(m.mean.toArray(), sk.mean_, atol=1e-12)
    assert m.count == len(digits)
    Y = _collect(m.transform(digits_df), "p")
    np.testing.assert_allclose(_match_signs(sk.transform(digits), Y), sk.transform(digits), atol=1e-8)
    # inverseTransform undoes whitening and centring: the rank-8 reconstruction
    back = _collect(m.inverseTransform(m.transform(digits_df)), "features_reconstructed")
    np.testing.assert_allclose(back, sk.inverse_transform(sk.transform(digits)), atol=1e-8)


@pytest.mark.connect
def test_full_rank_inverse_is_identity(spark):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 5)) @ rng.normal(size=(5, 5)) + 10.0
    df = _vec_frame(spark, X, parts=2)
    m = PCA(k=5, inputCol="features", outputCol="p", center=True).fit(df)
    back = _collect(m.inverseTransform(m.transform(df), outputCol="x_hat"), "x_hat")
    np.testing.assert_allclose(back, X, atol=1e-9)
    pc = m.pc.toArray()
    np.testing.assert_allclose(pc.T @ pc, np.eye(5), atol=1e-12)
    np.testing.assert_allclose(m.explainedVariance.toArray().sum(), 1.0, atol=1e-12)


@pytest.mark.connect
def test_randomized_agrees_with_exact_dense(spark, digits, digits_df):
    exact = PCA(k=5, inputCol="features", outputCol="p", method="exact").fit(digits_df)
    rnd = PCA(k=5, inputCol="features", outputCol="p", method="randomized", seed=7).fit(digits_df)
    assert rnd.methodUsed == "randomized"
    np.testing.assert_allclose(rnd.eigenvalues, exact.eigenvalues, rtol=1e-3)
    np.testing.assert_allclose(rnd.explainedVariance.toArray(), exact.explainedVariance.toArray(), rtol=1e-3)
    a, b = exact.pc.toArray(), rnd.pc.toArray()
    np.testing.assert_allclose(np.abs((a * b).sum(axis=0)), 1.0, atol=1e-3)  # same directions


@pytest.fixture(scope="module")
def hashed(spark):
    """2^18-column hashed sparse vectors (FeatureHasher over categorical + numeric columns)."""
    rng = np.random.default_rng(11)
    n = 3000
    a = rng.integers(0, 40, n)
    b = (a // 4 + rng.integers(0, 3, n)) % 25  # correlated with a
    c = rng.integers(0, 60, n)
    x = rng.gamma(2.0, 3.0, n) + a * 0.3
    rows = [(int(i), f"a{a[i]}", f"b{b[i]}", f"c{c[i]}", float(x[i])) for i in range(n)]
    df = spark.createDataFrame(rows, "id long, a string, b string, c string, x double")
    fh = FeatureHasher(inputCols=["a", "b", "c", "x"], outputCol="features")
    return fh.transform(df).select("id", "features").repartition(3).cache()


def _dense_reference(df, d):
    rows = df.orderBy("id").select("features").collect()
    idx = sorted({int(i) for r in rows for i in r[0].indices})
    X = np.zeros((len(rows), len(idx)))
    pos = {j: p for p, j in enumerate(idx)}
    for r_i, r in enumerate(rows):
        for j, v in zip(r[0].indices, r[0].values):
            X[r_i, pos[int(j)]] += v
    return X, np.array(idx)


@pytest.mark.connect
def test_randomized_on_wide_sparse_agrees_with_exact(spark, hashed):
    d = 1 << 18
    X, support = _dense_reference(hashed, d)
    cov = np.cov(X, rowvar=False)
    ref_eig = np.sort(np.linalg.eigvalsh(cov))[::-1]
    ref_total = np.trace(cov)

    auto = PCA(k=6, inputCol="features", outputCol="p").fit(hashed)
    assert auto.methodUsed == "exact"  # d = 2^18 but only ~130 non-zero columns
    rnd = PCA(k=6, inputCol="features", outputCol="p", method="randomized", oversampling=10, seed=1).fit(hashed)
    assert rnd.methodUsed == "randomized"
    for m in (auto, rnd):
        assert m.pc.numRows == d and m.pc.numCols == 6
        np.testing.assert_allclose(m.eigenvalues, ref_eig[:6], rtol=1e-3)
        np.testing.assert_allclose(m.explainedVariance.toArray(), ref_eig[:6] / ref_total, rtol=1e-3)
        pc = m.pc.toArray()
        outside = np.setdiff1d(np.arange(d), support)
        assert np.abs(pc[outside]).max() == 0.0
    np.testing.assert_allclose(auto.eigenvalues, ref_eig[:6], rtol=1e-9)
    # transform of sparse input: x . pc per component
    Y = _collect(rnd.transform(hashed), "p")
    assert Y.shape == (3000, 6)
    np.testing.assert_allclose(Y, X @ rnd.pc.toArray()[support], atol=1e-8)


@pytest.mark.connect
def test_pipeline_save_load(spark, digits_df, tmp_path):
    pipe = Pipeline(stages=[PCA(k=4, inputCol="features", outputCol="p", center=True)])
    model = pipe.fit(digits_df)
    path = str(tmp_path / "pca_pipe")
    model.write().overwrite().save(path)
    loaded = PipelineModel.load(path)
    stage = loaded.stages[0]
    assert isinstance(stage, PCAModel)
    assert stage.getK() == 4 and stage.getCenter() is True
    np.testing.assert_array_equal(stage.pc.toArray(), model.stages[0].pc.toArray())
    np.testing.assert_array_equal(stage.eigenvalues, model.stages[0].eigenvalues)
    np.testing.assert_allclose(_collect(loaded.transform(digits_df), "p"), _collect(model.transform(digits_df), "p"))
    est_path = str(tmp_path / "pca_est")
    PCA(k=3, inputCol="features", outputCol="q", method="randomized").save(est_path)
    est = PCA.load(est_path)
    assert est.getK() == 3 and est.getMethod() == "randomized"


@pytest.mark.connect
def test_null_vectors_pass_through_transform(spark, digits_df):
    m = PCA(k=2, inputCol="features", outputCol="p").fit(digits_df)
    df = spark.createDataFrame([(1, Vectors.dense(np.ones(64))), (2, None)], T.StructType([T.StructField("id", T.IntegerType()), T.StructField("features", VectorUDT())]))
    out = {r["id"]: r["p"] for r in m.transform(df).collect()}
    assert out[2] is None
    np.testing.assert_allclose(out[1].toArray(), np.ones(64) @ m.pc.toArray())


@pytest.mark.connect
def test_bad_input(spark, digits_df):
    """Param and schema checks; the data checks that need a Spark job are in tests/test_bad_input.py."""
    with pytest.raises(ValueError, match="'k'"):
        PCA(k=0, inputCol="features", outputCol="p").fit(digits_df)
    with pytest.raises(ValueError, match="'method'"):
        PCA(k=2, inputCol="features", outputCol="p", method="svd").fit(digits_df)
    with pytest.raises(ValueError, match="'nope'"):
        PCA(k=2, inputCol="nope", outputCol="p").fit(digits_df)
    with pytest.raises(TypeError, match="'id'"):
        PCA(k=2, inputCol="id", outputCol="p").fit(digits_df)
    with pytest.raises(ValueError, match="'id'.*already exists"):
        PCA(k=2, inputCol="features", outputCol="id").fit(digits_df)
    mixed = spark.createDataFrame(
        [(Vectors.dense([1.0, 2.0]),), (Vectors.dense([1.0, 2.0, 3.0]),)] * 3, ["features"]
    ).coalesce(1)
    with pytest.raises(VectorColumnError, match="'features'.*different sizes"):
        PCA(k=1, inputCol="features", outputCol="p", method="exact").fit(mixed)
    # null vectors, NaN, empty data, one row, k > d: tests/test_bad_input.py


class _Gram:
    """The part of GramStats that _covariance_svd reads, from an in-memory matrix."""

    def __init__(self, X):
        self.count = len(X)
        self.num_features = X.shape[1]
        self._S = (X - X.mean(0)).T @ (X - X.mean(0))

    def centered_scatter(self):
        return self._S.copy()


def test_covariance_svd_paths(monkeypatch, caplog):
    """Driver-side solver: LAPACK dgesdd's U (MLlib's), dgesvd if dgesdd does not converge (with a
    warning), and eigh with largest-entry-positive signs above EXACT_MAX_FEATURES."""
    import scipy.linalg

    from sparkml_scale.feature import pca as pca_mod

    rng = np.random.default_rng(8)
    X = rng.normal(size=(60, 6)) @ rng.normal(size=(6, 6))
    C = np.cov(X, rowvar=False)
    U, s, _ = scipy.linalg.svd(C, lapack_driver="gesdd")
    vec, eig, total = pca_mod._covariance_svd(_Gram(X), 3)
    np.testing.assert_allclose(vec, U[:, :3], atol=1e-12)  # the signs too
    np.testing.assert_allclose(eig, s[:3], rtol=1e-12)
    assert total == pytest.approx(s.sum(), rel=1e-12)

    real_svd = scipy.linalg.svd

    def no_gesdd(a, *args, lapack_driver="gesdd", **kw):
        if lapack_driver == "gesdd":
            raise np.linalg.LinAlgError("SVD did not converge")
        return real_svd(a, *args, lapack_driver=lapack_driver, **kw)

    monkeypatch.setattr(scipy.linalg, "svd", no_gesdd)
    with caplog.at_level("WARNING", logger=pca_mod.__name__):
        vec2, eig2, _ = pca_mod._covariance_svd(_Gram(X), 3)
    assert "dgesvd" in caplog.text
    np.testing.assert_allclose(eig2, s[:3], rtol=1e-10)
    np.testing.assert_allclose(np.abs((vec2 * U[:, :3]).sum(0)), 1.0, atol=1e-10)
    monkeypatch.undo()

    monkeypatch.setattr(pca_mod, "EXACT_MAX_FEATURES", 5)
    vec3, eig3, total3 = pca_mod._covariance_svd(_Gram(X), 3)
    np.testing.assert_allclose(eig3, s[:3], rtol=1e-10)
    assert total3 == pytest.approx(s.sum(), rel=1e-10)
    np.testing.assert_allclose(np.abs((vec3 * U[:, :3]).sum(0)), 1.0, atol=1e-10)
    assert np.all(vec3[np.argmax(np.abs(vec3), axis=0), np.arange(3)] > 0)


def test_packed_upper_triangle_roundtrip():
    from sparkml_scale.core.gram import pack_upper, unpack_upper

    A = np.random.default_rng(0).standard_normal((5, 5))
    S = A + A.T
    p = pack_upper(S)
    assert p.shape == (15,)
    np.testing.assert_array_equal(unpack_upper(p, 5), S)
    with pytest.raises(ValueError, match="expected"):
        unpack_upper(p, 4)


def test_exact_small_uneven_arrow_batches_match_one_batch(spark, digits, digits_df):
    """The reused shift buffer of the Gram pass is sliced for short last batches: many uneven
    Arrow batches per partition give the same components as the default batches."""
    ref = PCA(k=4, inputCol="features", outputCol="p", method="exact").fit(digits_df)
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    old = spark.conf.get(key)
    spark.conf.set(key, "97")
    try:
        m = PCA(k=4, inputCol="features", outputCol="p", method="exact").fit(digits_df)
    finally:
        spark.conf.set(key, old)
    np.testing.assert_allclose(m.pc.toArray(), ref.pc.toArray(), atol=1e-10)
    np.testing.assert_allclose(m.explainedVariance.toArray(), ref.explainedVariance.toArray(), atol=1e-12)
    np.testing.assert_allclose(m.mean.toArray(), digits.mean(axis=0), atol=1e-10)


def test_gram_pass_batch_size_scoped(spark, digits, monkeypatch):
    """The passes lower Arrow's maxRecordsPerBatch to about gram.BATCH_BYTES of features for their
    own jobs only: the session's value is restored after the fit (also after a failed one), a
    smaller value set by the user is kept, and the result does not depend on the batch size."""
    from sparkml_scale.core import gram

    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    df = _vec_frame(spark, digits)
    old = spark.conf.get(key)
    try:
        ref = PCA(k=5, inputCol="features", outputCol="p").fit(df)
        assert spark.conf.get(key) == old
        seen = []
        real = gram.tree_aggregate

        def spy(*args, **kwargs):
            seen.append(spark.conf.get(key))
            return real(*args, **kwargs)

        monkeypatch.setattr(gram, "tree_aggregate", spy)
        monkeypatch.setattr(gram, "BATCH_BYTES", 512 * 300)  # d = 64: 300 rows a batch, several per partition
        spark.conf.set(key, "10000")
        small = PCA(k=5, inputCol="features", outputCol="p").fit(df)
        assert seen == ["300"] and spark.conf.get(key) == "10000"
        np.testing.assert_allclose(small.pc.toArray(), ref.pc.toArray(), atol=1e-12)
        np.testing.assert_allclose(small.explainedVariance.toArray(), ref.explainedVariance.toArray(), atol=1e-14)
        spark.conf.set(key, "100")  # already smaller: kept
        seen.clear()
        PCA(k=5, inputCol="features", outputCol="p").fit(df)
        assert seen == ["100"] and spark.conf.get(key) == "100"
        spark.conf.set(key, "10000")
        monkeypatch.setattr(gram, "tree_aggregate", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
        with pytest.raises(RuntimeError, match="boom"):
            PCA(k=5, inputCol="features", outputCol="p").fit(df)
        assert spark.conf.get(key) == "10000"
    finally:
        spark.conf.set(key, old)
        df.unpersist()


def test_gram_pass_batch_size_shared_by_overlapping_passes(spark, digits, monkeypatch):
    """Two passes of one session that overlap (e.g. parallel tuning trials) share the lowered
    value; the user's value comes back when the last one ends, not before."""
    from sparkml_scale.core import gram
    from sparkml_scale.core.training import TrainingColumns

    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    df = _vec_frame(spark, digits)
    cols = TrainingColumns("features").probe(df)
    monkeypatch.setattr(gram, "BATCH_BYTES", 512 * 300)  # d = 64: 300 rows
    old = spark.conf.get(key)
    try:
        spark.conf.set(key, "10000")
        with gram._batch_rows(df, cols):
            lowered = spark.conf.get(key)
            with gram._batch_rows(df, cols):
                assert spark.conf.get(key) == lowered
            assert spark.conf.get(key) == lowered  # the outer pass still runs
        assert lowered == "300" and spark.conf.get(key) == "10000"
    finally:
        spark.conf.set(key, old)
        df.unpersist()
