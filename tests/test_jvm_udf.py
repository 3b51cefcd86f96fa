"""The package's JVM function (sparkml_scale/core/jvm.py): vectors to Python as float64 bytes.

The committed jar must be built from the committed Java source; the bytes must decode to the
same doubles as ``vector_to_array`` (dense, sparse, null rows); fits must give the same
results (to rounding) and the same bad-row errors with the function and without it (``vector_to_array``,
the fallback of sessions that lack the jar); a session where the class cannot be loaded must
fall back, not fail.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from sparkml_scale.core import jvm
from sparkml_scale.core.arrow import VectorColumnError, bytes_to_dense
from sparkml_scale.core.session import is_connect

from helpers import vector_frame


def test_committed_jar_is_built_from_the_committed_source():
    assert jvm.jar_digest() == jvm.source_digest(), (
        "jvm/src changed without a rebuild: run bash scripts/build_udf_jar.sh and commit the jar")


def _bytes_column(rows, large=False):
    return pa.array([None if r is None else np.asarray(r, "<f8").tobytes() for r in rows],
                    pa.large_binary() if large else pa.binary())


@pytest.mark.parametrize("large", [False, True])
def test_bytes_to_dense_reads_rows_as_one_array(large):
    X = np.arange(12, dtype=np.float64).reshape(4, 3) / 7
    arr = _bytes_column(list(X), large)
    np.testing.assert_array_equal(bytes_to_dense(arr, size=3), X)
    np.testing.assert_array_equal(bytes_to_dense(arr.slice(1, 2), size=3), X[1:3])  # a slice keeps its offset
    np.testing.assert_array_equal(bytes_to_dense(pa.chunked_array([arr.slice(0, 1), arr.slice(1)])), X)
    assert bytes_to_dense(arr.slice(0, 0), size=3).shape == (0, 3)


def test_bytes_to_dense_copies_misaligned_values():
    X = np.array([[1.5, -2.0], [3.25, 4.0]])
    # a first value of 4 bytes shifts the others off 8-byte alignment
    arr = pa.array([b"\0\0\0\0"] + [r.tobytes() for r in X], pa.binary()).slice(1)
    out = bytes_to_dense(arr, size=2)
    assert out.flags.aligned
    np.testing.assert_array_equal(out, X)


def test_bytes_to_dense_names_the_column_for_bad_rows():
    with pytest.raises(VectorColumnError, match=r"'f' holds vectors of different sizes \(2 and 3\)"):
        bytes_to_dense(_bytes_column([[1.0, 2.0], [1.0, 2.0, 3.0]]), "f")
    with pytest.raises(VectorColumnError, match=r"'f' holds vectors of size 2, expected 3"):
        bytes_to_dense(_bytes_column([[1.0, 2.0]]), "f", size=3)
    with pytest.raises(VectorColumnError, match=r"'f' holds 1 null vector"):
        bytes_to_dense(_bytes_column([[1.0], None]), "f")
    with pytest.raises(VectorColumnError, match="not a whole number of doubles"):
        bytes_to_dense(pa.array([b"\0" * 12], pa.binary()), "f")


@pytest.mark.connect
def test_function_gives_the_doubles_of_vector_to_array(spark):
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import Vectors, VectorUDT
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    name = jvm.vector_bytes_function(spark)
    assert name == jvm.FUNCTION
    vecs = [Vectors.dense([1.0, -0.0, 1e-310, np.pi]), Vectors.sparse(4, [1, 3], [2.5, -7.0]), None,
            Vectors.dense([np.nan, np.inf, -np.inf, 2.0 ** 60])]
    df = spark.createDataFrame([(i, v) for i, v in enumerate(vecs)],
                               T.StructType([T.StructField("id", T.LongType()), T.StructField("v", VectorUDT())]))
    arrays = F.when(F.col("v").isNull(), F.lit(None)).otherwise(vector_to_array("v"))  # it refuses nulls
    rows = df.select("id", F.call_function(name, "v").alias("b"), arrays.alias("a")).orderBy("id").collect()
    for r, v in zip(rows, vecs):
        if v is None:
            assert r.b is None and r.a is None
            continue
        got = np.frombuffer(r.b, "<f8")
        assert got.tobytes() == v.toArray().astype("<f8").tobytes()   # bit for bit (-0.0, subnormal, NaN)
        np.testing.assert_array_equal(got, np.asarray(r.a))


def _with_bytes(spark, on: bool, fn):
    old = spark.conf.get(jvm.ENABLE_CONF, None)
    spark.conf.set(jvm.ENABLE_CONF, "true" if on else "false")
    try:
        return fn()
    finally:
        if old is None:
            spark.conf.unset(jvm.ENABLE_CONF)
        else:
            spark.conf.set(jvm.ENABLE_CONF, old)


@pytest.mark.connect
def test_fits_are_identical_with_and_without_the_function(spark):
    from sparkml_scale.classification import LogisticRegression
    from sparkml_scale.core.training import TrainingColumns
    from sparkml_scale.feature import PCA

    rng = np.random.default_rng(11)
    X = rng.normal(size=(600, 7)) * rng.uniform(0.1, 30, size=7) + 5.0
    y = (X @ rng.normal(size=7) + rng.normal(size=600) > X.mean(0) @ rng.normal(size=7)).astype(float)
    df = vector_frame(spark, X, y, parts=3)
    try:
        def fits():
            cols = TrainingColumns(features="features").probe(df)
            pca = PCA(k=3, inputCol="features").fit(df)
            lr = LogisticRegression(regParam=0.01, maxIter=30).fit(df)
            return cols.bytes_function, pca.pc.toArray(), pca.explainedVariance.toArray(), lr.coefficients.toArray()

        on = _with_bytes(spark, True, fits)
        off = _with_bytes(spark, False, fits)
        assert on[0] == jvm.FUNCTION and off[0] is None
        # the same doubles reach Python; BLAS may round differently on buffers at other addresses
        # (its kernels peel unaligned heads), so the results agree to rounding, not bit for bit
        for what, a, b in zip(["pc", "explainedVariance", "coefficients"], on[1:], off[1:]):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14, err_msg=what)
    finally:
        df.unpersist()


@pytest.mark.connect
@pytest.mark.parametrize("on", [True, False], ids=["bytes", "vector_to_array"])
def test_bad_rows_raise_the_same_errors_both_ways(spark, on):
    from pyspark.ml.linalg import Vectors, VectorUDT
    from pyspark.sql import types as T

    from sparkml_scale.feature import PCA

    schema = T.StructType([T.StructField("f", VectorUDT())])
    base = [(Vectors.dense([1.0, 2.0, 3.0]),), (Vectors.dense([2.0, 1.0, 0.0]),), (Vectors.dense([0.0, 5.0, 1.0]),)]
    cases = [
        (base + [(None,)], r"'f' \(inputCol\).*1 null"),
        (base + [(Vectors.dense([1.0, 2.0]),)], r"'f' \(inputCol\).*size"),
        (base + [(Vectors.dense([1.0, float("nan"), 2.0]),)], r"'f' \(inputCol\).*(NaN|finite)"),
    ]
    for rows, pattern in cases:
        df = spark.createDataFrame(rows, schema).repartition(1)
        with pytest.raises(ValueError, match=pattern):
            _with_bytes(spark, on, lambda: PCA(k=2, inputCol="f").fit(df))


def test_a_session_without_the_class_falls_back(spark, monkeypatch):
    from sparkml_scale.feature import PCA

    monkeypatch.setattr(jvm, "JAVA_CLASS", "sparkmlscale.NoSuchFunction")
    other = spark if is_connect(spark) else spark.newSession()
    if is_connect(spark):
        monkeypatch.setattr(jvm, "_REGISTERED", type(jvm._REGISTERED)())
    assert jvm._register(other) is False
    assert jvm.vector_bytes_function(other) is None
    X = np.random.default_rng(2).normal(size=(50, 4))
    df = vector_frame(other, X, parts=2)
    try:
        m = PCA(k=2, inputCol="features").fit(df)
        assert m.pc.toArray().shape == (4, 2)
    finally:
        df.unpersist()
