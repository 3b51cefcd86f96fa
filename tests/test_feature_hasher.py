"""FeatureHasher: exact equality with pyspark.ml.feature.FeatureHasher, extensions, errors.

Runs classic by default; the tests marked ``connect`` also run under Spark Connect
(SPARKML_SCALE_TEST_CONNECT=1, see conftest.py).
"""
import math
from decimal import Decimal

import mmh3
import numpy as np
import pyarrow as pa
import pytest

from sparkml_scale.feature import FeatureHasher
from sparkml_scale.feature.hasher import hash_batch

pytestmark = pytest.mark.connect

NAN = float("nan")
INF = float("inf")

MIXED_SCHEMA = (
    "id long, i int, l long, d double, s string, b boolean, c double, f float, "
    "t tinyint, dec decimal(20,10)"
)
MIXED_ROWS = [
    (0, 1, 10, 2.5, "ab", True, 1.0, 0.5, 1, Decimal("1.5")),
    (1, None, -3, 0.0, "héllo wörld", False, 2.5, None, None, Decimal("0.0000000001")),
    (2, 3, None, NAN, None, None, 1e7, 1e10, -7, None),
    (3, -4, 1 << 40, None, "ab", True, 1e-4, -0.25, 0, Decimal("-123456789.0123456789")),
    (4, 0, 0, -0.0, "", False, NAN, NAN, 5, Decimal("0E-10")),
    (5, 7, 7, 1e23, "x=y", True, -0.0, INF, 3, Decimal("12")),
    (6, 2147483647, -(1 << 63), -INF, "Ab", None, 1e23, 3.4028235e38, -128, Decimal("9999999999.9999999999")),
    (7, None, None, None, None, None, None, None, None, None),
    (8, 1, 10, 2.5, "ab", True, 0.1, 0.1, 1, Decimal("0.1")),
    (9, 5, 123456789012, 1e-300, "ab", False, 123456789.123, 1e-40, 2, Decimal("1E-7")),
]
ALL_INPUTS = ["i", "l", "d", "s", "b", "c", "f", "t", "dec"]


def _spark_hasher_available(spark):
    from pyspark.ml.feature import FeatureHasher as SparkFeatureHasher

    try:
        df = spark.createDataFrame([(1, "a")], "x int, y string")
        SparkFeatureHasher(inputCols=["x", "y"], outputCol="v").transform(df).collect()
        return True
    except Exception:  # e.g. ML not available over this Connect server
        return False


@pytest.fixture(scope="module")
def mixed(spark):
    return spark.createDataFrame(MIXED_ROWS, MIXED_SCHEMA).cache()


@pytest.fixture(scope="module")
def spark_hasher(spark):
    if not _spark_hasher_available(spark):
        pytest.skip("pyspark.ml.feature.FeatureHasher does not run in this session")
    from pyspark.ml.feature import FeatureHasher as SparkFeatureHasher

    return SparkFeatureHasher


def _vectors(df, col, order="id"):
    return [r[col] for r in df.orderBy(order).select(col).collect()]


def _assert_same_vectors(ours, theirs):
    assert len(ours) == len(theirs)
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert a.size == b.size, k
        np.testing.assert_array_equal(a.indices, b.indices, err_msg=f"row {k}")
        # bit-exact values: NaN == NaN, and 0.0 / -0.0 told apart
        assert a.values.tobytes() == b.values.tobytes(), (k, a, b)


@pytest.mark.parametrize("num_features", [16, 1 << 18])
@pytest.mark.parametrize(
    "categorical",
    [None, ["c"], ["i", "l", "d", "c", "f", "t", "dec", "s", "b", "not_an_input"]],
)
def test_equals_spark(spark, mixed, spark_hasher, num_features, categorical):
    kw = dict(inputCols=ALL_INPUTS, outputCol="v", numFeatures=num_features)
    if categorical is not None:
        kw["categoricalCols"] = categorical
    with pytest.warns(UserWarning, match="not_an_input") if categorical and "not_an_input" in categorical else _nullctx():
        ours = FeatureHasher(**kw).transform(mixed)
    theirs = spark_hasher(**kw).transform(mixed)
    _assert_same_vectors(_vectors(ours, "v"), _vectors(theirs, "v"))
    assert ours.schema["v"].metadata == theirs.schema["v"].metadata == {"ml_attr": {"num_attrs": num_features}}
    assert ours.columns == theirs.columns


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_double_categorical_java_tostring(spark, spark_hasher):
    """Double.toString texts: 1.0, 2.5, 1.0E7, 1.0E-4, and JDK-specific digit strings."""
    values = [1.0, 2.5, 1e7, 1e-4, 0.001, 9999999.0, 1e23, 2e23, 5e-324, -0.0, NAN, INF, 0.1 + 0.2]
    rng = np.random.default_rng(0)
    values += list(rng.standard_normal(50) * 10.0 ** rng.integers(-12, 12, 50))
    df = spark.createDataFrame([(k, float(v)) for k, v in enumerate(values)], "id long, c double")
    df = df.withColumn("cf", df["c"].cast("float"))
    kw = dict(inputCols=["c", "cf"], categoricalCols=["c", "cf"], outputCol="v")
    ours = FeatureHasher(**kw).transform(df)
    theirs = spark_hasher(**kw).transform(df)
    _assert_same_vectors(_vectors(ours, "v"), _vectors(theirs, "v"))
    # the documented terms themselves
    n = 1 << 18
    first = _vectors(ours, "v")
    for k, text in [(0, "1.0"), (1, "2.5"), (2, "1.0E7"), (3, "1.0E-4")]:
        expected = mmh3.hash(f"c={text}".encode(), 42, signed=True) % n
        assert expected in first[k].indices


def test_summation_order_and_explicit_zeros(spark, spark_hasher):
    # numFeatures=1: every column collides; Spark sums in column order, so
    # (1e16 + 1.0) + -1e16 == 0.0 (not 1.0), and the 0.0 stays an explicit entry.
    df = spark.createDataFrame(
        [(0, 1e16, 1.0, -1e16, None), (1, -0.0, None, None, None), (2, 0.0, 0.0, 0.0, "a")],
        "id long, a double, b double, c double, s string",
    )
    kw = dict(inputCols=["a", "b", "c", "s"], outputCol="v", numFeatures=1)
    ours = _vectors(FeatureHasher(**kw).transform(df), "v")
    theirs = _vectors(spark_hasher(**kw).transform(df), "v")
    _assert_same_vectors(ours, theirs)
    assert ours[0].indices.tolist() == [0] and ours[0].values.tobytes() == np.array([0.0]).tobytes()
    assert np.signbit(ours[1].values[0])  # a lone -0.0 stays -0.0


def test_array_of_strings(spark):
    df = spark.createDataFrame(
        [(0, ["a", "b", "a", None], "a"), (1, None, None), (2, [], "b")],
        "id long, tags array<string>, s string",
    )
    n = 1 << 18
    out = _vectors(FeatureHasher(inputCols=["tags", "s"], outputCol="v").transform(df), "v")

    def idx(term):
        return mmh3.hash(term.encode(), 42, signed=True) % n

    expected0 = {idx("tags=a"): 2.0, idx("tags=b"): 1.0}
    expected0[idx("s=a")] = expected0.get(idx("s=a"), 0.0) + 1.0
    assert dict(zip(out[0].indices.tolist(), out[0].values.tolist())) == expected0
    assert out[0].indices.tolist() == sorted(expected0)
    assert out[1].indices.size == 0 and out[1].size == n
    assert dict(zip(out[2].indices.tolist(), out[2].values.tolist())) == {idx("s=b"): 1.0}


def test_signed(spark, mixed):
    kw = dict(inputCols=["i", "d", "s", "b", "c"], categoricalCols=["c"], outputCol="v")
    unsigned = _vectors(FeatureHasher(**kw).transform(mixed), "v")
    fh = FeatureHasher(signed=True, **kw)
    assert fh.getSigned() is True
    signed1 = _vectors(fh.transform(mixed), "v")
    signed2 = _vectors(fh.transform(mixed), "v")
    _assert_same_vectors(signed1, signed2)  # deterministic
    saw_negative = False
    for u, s in zip(unsigned, signed1):
        np.testing.assert_array_equal(u.indices, s.indices)
        np.testing.assert_array_equal(np.abs(u.values), np.abs(s.values))
        saw_negative |= bool((s.values < 0).any())
    assert saw_negative
    # sign = sign of MurmurHash3 x86_32 (seed 0) of the same term
    row0 = dict(zip(signed1[0].indices.tolist(), signed1[0].values.tolist()))
    for term in ["s=ab", "b=true", "c=1.0"]:
        i = mmh3.hash(term.encode(), 42, signed=True) % (1 << 18)
        assert row0[i] == (1.0 if mmh3.hash(term.encode(), 0, signed=True) >= 0 else -1.0)
    i = mmh3.hash(b"d", 42, signed=True) % (1 << 18)
    assert row0[i] == 2.5 * (1.0 if mmh3.hash(b"d", 0, signed=True) >= 0 else -1.0)


def test_params_and_defaults():
    fh = FeatureHasher()
    assert fh.getNumFeatures() == 1 << 18
    assert fh.getSigned() is False
    assert fh.getOutputCol() == fh.uid + "__output"
    fh.setInputCols(["a", "b"]).setOutputCol("o").setNumFeatures(8).setCategoricalCols(["a"]).setSigned(True)
    assert (fh.getInputCols(), fh.getOutputCol(), fh.getNumFeatures()) == (["a", "b"], "o", 8)
    assert fh.getCategoricalCols() == ["a"] and fh.getSigned() is True
    fh.setParams(numFeatures=32)
    assert fh.getNumFeatures() == 32
    with pytest.raises(TypeError):
        FeatureHasher(["a"])  # keyword only


def test_pipeline_and_persistence(spark, mixed, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel

    fh = FeatureHasher(inputCols=["i", "s", "b", "c"], categoricalCols=["c"], outputCol="v", numFeatures=64, signed=True)
    expected = _vectors(fh.transform(mixed), "v")

    fh.save(str(tmp_path / "fh"))
    loaded = FeatureHasher.load(str(tmp_path / "fh"))
    assert loaded.uid == fh.uid
    assert (loaded.getInputCols(), loaded.getCategoricalCols(), loaded.getNumFeatures(), loaded.getSigned()) == (
        ["i", "s", "b", "c"], ["c"], 64, True,
    )
    _assert_same_vectors(_vectors(loaded.transform(mixed), "v"), expected)

    model = Pipeline(stages=[fh]).fit(mixed)
    _assert_same_vectors(_vectors(model.transform(mixed), "v"), expected)
    model.save(str(tmp_path / "pm"))
    reloaded = PipelineModel.load(str(tmp_path / "pm"))
    assert isinstance(reloaded.stages[0], FeatureHasher)
    _assert_same_vectors(_vectors(reloaded.transform(mixed), "v"), expected)


def test_errors(spark, mixed):
    from pyspark.sql import functions as F

    with pytest.raises(ValueError, match="'missing'"):
        FeatureHasher(inputCols=["i", "missing"], outputCol="v").transform(mixed)
    with pytest.raises(ValueError, match="numFeatures"):
        FeatureHasher(inputCols=["i"], outputCol="v", numFeatures=0).transform(mixed)
    with pytest.raises(ValueError, match="inputCols"):
        FeatureHasher(inputCols=[], outputCol="v").transform(mixed)
    with pytest.raises(ValueError, match="inputCols"):
        FeatureHasher(outputCol="v").transform(mixed)
    with pytest.raises(ValueError, match="'s'.*already exists"):
        FeatureHasher(inputCols=["i"], outputCol="s").transform(mixed)
    odd = mixed.select(
        "id",
        F.current_date().alias("day"),
        F.array(F.col("i")).alias("ints"),
        F.create_map(F.col("s"), F.col("i")).alias("m"),
    )
    for col in ["day", "ints", "m"]:
        with pytest.raises(TypeError, match=f"'{col}'"):
            FeatureHasher(inputCols=["id", col], outputCol="v").transform(odd)
        with pytest.raises(TypeError, match=f"'{col}'"):
            FeatureHasher(inputCols=["id", col], outputCol="v").transformSchema(odd.schema)


def test_transform_schema(mixed):
    from pyspark.ml.linalg import VectorUDT

    schema = FeatureHasher(inputCols=["i", "s"], outputCol="v", numFeatures=8).transformSchema(mixed.schema)
    assert schema.names == mixed.columns + ["v"]
    assert isinstance(schema["v"].dataType, VectorUDT)
    assert schema["v"].metadata == {"ml_attr": {"num_attrs": 8}}


def test_odd_column_names(spark):
    # Spark's own FeatureHasher cannot resolve these names (it calls col(name)).
    df = spark.createDataFrame([(0, "x", 1.5)], "id long, `a.b` string, `we``ird` double")
    out = _vectors(FeatureHasher(inputCols=["a.b", "we`ird"], outputCol="v").transform(df), "v")
    n = 1 << 18
    expected = {mmh3.hash("a.b=x".encode(), 42) % n: 1.0, mmh3.hash(b"we`ird", 42) % n: 1.5}
    assert dict(zip(out[0].indices.tolist(), out[0].values.tolist())) == expected


def test_hash_batch_in_process():
    """The Arrow batch function alone: sliced input, sorted indices, explicit zeros."""
    s = pa.array(["a", "b", None, "a", "c"])
    d = pa.array([0.0, 1.0, None, NAN, 2.0])
    tags = pa.array([["a", "a"], None, ["b", None], [], ["c"]])
    batch = pa.StructArray.from_arrays([s, d, tags], names=["c0", "c1", "c2"]).slice(1)
    n = 8
    plans = [("str", b"s=", None), ("num", None, (mmh3.hash(b"d", 42) % n, 1.0)), ("arr", b"t=", None)]
    csr = hash_batch(batch, plans, n)
    assert csr.shape == (4, n) and csr.has_sorted_indices

    def row(k):
        lo, hi = csr.indptr[k], csr.indptr[k + 1]
        return csr.indices[lo:hi].tolist(), csr.data[lo:hi].tolist()

    def idx(t):
        return mmh3.hash(t, 42) % n

    expected = {}
    for term, v in [(b"s=b", 1.0), (b"d", 1.0)]:
        expected[idx(term)] = expected.get(idx(term), 0.0) + v
    assert dict(zip(*row(0))) == expected
    assert dict(zip(*row(1))) == {idx(b"t=b"): 1.0}
    i1, v1 = row(2)
    assert len(i1) == 2 or idx(b"s=a") == idx(b"d")
    assert any(math.isnan(v) for v in v1)
    empty = hash_batch(pa.StructArray.from_arrays([pa.array([], pa.string())], names=["c0"]), plans[:1], n)
    assert empty.shape == (0, n)


def test_many_batches_and_term_cache(spark, spark_hasher, monkeypatch):
    """Small Arrow batches: the per-worker term cache grows, restarts, and stays exact."""
    from sparkml_scale.feature import hasher

    rng = np.random.default_rng(7)
    m = 600
    words = np.array([f"w{i}" for i in range(300)])
    rows = []
    for k in range(m):
        rows.append((
            k,
            None if k % 11 == 0 else str(words[rng.integers(0, 300)]),
            None if k % 7 == 0 else int(rng.integers(0, 50)),
            float(rng.standard_normal()),
            None if k % 5 == 0 else float(rng.integers(0, 20)) / 4,
        ))
    df = spark.createDataFrame(rows, "id long, w string, n int, x double, c double").repartition(3)
    kw = dict(inputCols=["w", "n", "x", "c"], categoricalCols=["n", "c"], outputCol="v", numFeatures=256)
    theirs = _vectors(spark_hasher(**kw).transform(df), "v")
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    old = spark.conf.get(key)
    spark.conf.set(key, "37")
    try:
        ours = _vectors(FeatureHasher(**kw).transform(df), "v")
    finally:
        spark.conf.set(key, old)
    _assert_same_vectors(ours, theirs)

    # in-process: a tiny cache limit turns the column's cache off; results do not change
    monkeypatch.setattr(hasher, "_CACHE_LIMIT", 20)
    hasher._TERM_CACHE.clear()
    plans = [("str", b"w=", None)]
    batches = [pa.StructArray.from_arrays([pa.array([str(w) for w in words[rng.integers(0, 300, 50)]])], names=["c0"])
               for _ in range(5)]
    cached = [hash_batch(b, plans, 64) for b in batches]
    assert hasher._TERM_CACHE[(b"w=", "string", 64, False)] is hasher._UNCACHED
    for b, got in zip(batches, cached):
        monkeypatch.setattr(hasher, "_CACHE_LIMIT", 1 << 14)
        hasher._TERM_CACHE.clear()
        fresh = hash_batch(b, plans, 64)
        assert len(hasher._TERM_CACHE[(b"w=", "string", 64, False)].values) <= 50
        assert (got != fresh).nnz == 0 and np.array_equal(got.indices, fresh.indices)


def _random_terms(rng, m, max_len):
    out = []
    for _ in range(m):
        k = int(rng.integers(0, max_len + 1))
        out.append("".join(chr(int(c)) for c in rng.choice([97, 98, 61, 233, 0x4E2D, 0x1F600, 48], k)))
    return out


@pytest.mark.parametrize("prefix", [b"", b"a", b"ab=", b"abc=", b"tailnum=", "héllo=".encode()])
def test_murmur3_32_equals_mmh3(prefix):
    """The numpy MurmurHash3 equals mmh3 (Spark's hashUnsafeBytes2) on every length mod 4."""
    from sparkml_scale.feature.hasher import murmur3_32

    rng = np.random.default_rng(11)
    raw = [bytes(rng.integers(0, 256, int(rng.integers(0, 40))).astype(np.uint8)) for _ in range(3000)]
    for arr in [pa.array(raw, pa.binary()), pa.array(raw, pa.binary()).slice(5, 700),
                pa.array(_random_terms(rng, 500, 12)), pa.array(["", "", ""])]:
        for seed in (42, 0):
            got = murmur3_32(arr, prefix, seed)
            want = [mmh3.hash(prefix + (v.encode() if isinstance(v, str) else v), seed, signed=True)
                    for v in arr.to_pylist()]
            assert got.dtype == np.int32 and got.tolist() == want
    assert murmur3_32(pa.array([], pa.binary()), prefix).shape == (0,)
    with pytest.raises(ValueError, match="nulls"):
        murmur3_32(pa.array([b"a", None]), prefix)


@pytest.mark.parametrize("cache_limit", [1 << 14, 100])
@pytest.mark.parametrize("signed", [False, True])
def test_hash_batch_many_distinct_values(monkeypatch, cache_limit, signed):
    """Batches with thousands of distinct strings and ints (the vectorised hash, the cache and,
    over its limit, the uncached path) give the terms' mmh3 indices and signs."""
    from sparkml_scale.feature import hasher

    monkeypatch.setattr(hasher, "_CACHE_LIMIT", cache_limit)
    hasher._TERM_CACHE.clear()
    rng = np.random.default_rng(5)
    n = 1 << 20
    vocab = _random_terms(rng, 4000, 40) + ["x" * 100, "y" * 65]  # long terms: one by one
    plans = [("str", b"s=", None), ("int", b"k=", None)]
    for _ in range(3):
        m = 3000
        strs = [None if rng.random() < 0.05 else vocab[int(rng.integers(0, len(vocab)))] for _ in range(m)]
        ints = [None if rng.random() < 0.05 else int(rng.integers(-(1 << 40), 1 << 40)) for _ in range(m)]
        csr = hash_batch([pa.array(strs), pa.array(ints, pa.int64())], plans, n, signed)
        for r in range(0, m, 7):
            want = {}
            for term in ([f"s={strs[r]}"] if strs[r] is not None else []) + (
                    [f"k={ints[r]}"] if ints[r] is not None else []):
                b = term.encode()
                v = -1.0 if signed and mmh3.hash(b, 0, signed=True) < 0 else 1.0
                i = mmh3.hash(b, 42, signed=True) % n
                want[i] = want.get(i, 0.0) + v
            lo, hi = csr.indptr[r], csr.indptr[r + 1]
            assert dict(zip(csr.indices[lo:hi].tolist(), csr.data[lo:hi].tolist())) == want
            assert csr.indices[lo:hi].tolist() == sorted(want)


def test_high_cardinality_equals_spark(spark, spark_hasher):
    """Thousands of distinct values per Arrow batch (the vectorised hash) match Spark exactly."""
    rng = np.random.default_rng(9)
    vocab = _random_terms(rng, 6000, 30)
    rows = [(k, None if k % 13 == 0 else vocab[int(rng.integers(0, len(vocab)))],
             None if k % 17 == 0 else int(rng.integers(-100000, 100000)), float(rng.standard_normal()))
            for k in range(12000)]
    df = spark.createDataFrame(rows, "id long, s string, k long, x double")
    kw = dict(inputCols=["s", "k", "x"], categoricalCols=["k"], outputCol="v", numFeatures=1 << 20)
    _assert_same_vectors(_vectors(FeatureHasher(**kw).transform(df), "v"),
                         _vectors(spark_hasher(**kw).transform(df), "v"))


def test_columnar_udf_input_setting_is_turned_off(spark, tmp_path):
    """Spark 4.3 defaults spark.sql.execution.arrow.pythonUDF.columnarInput.enabled to true, and
    then fails Arrow UDFs producing or reading vectors over Parquet/cached input; the stages
    turn it off in the session before running."""
    from sparkml_scale.core.session import COLUMNAR_UDF_INPUT
    from sparkml_scale.feature import PCA

    path = str(tmp_path / "src.parquet")
    spark.range(500).selectExpr("CAST(id % 7 AS STRING) AS a", "id * 0.5 AS x").write.parquet(path)
    try:
        spark.conf.set(COLUMNAR_UDF_INPUT, "true")
    except Exception:
        pytest.skip("this Spark has no columnar Arrow UDF input setting")
    src = spark.read.parquet(path)
    out = FeatureHasher(inputCols=["a", "x"], outputCol="features", numFeatures=32).transform(src).cache()
    assert out.count() == 500
    spark.conf.set(COLUMNAR_UDF_INPUT, "true")
    model = PCA(k=2, inputCol="features", outputCol="p").fit(out)
    spark.conf.set(COLUMNAR_UDF_INPUT, "true")
    rows = model.transform(out).cache().select("p").collect()
    assert len(rows) == 500 and all(r[0].size == 2 for r in rows)
    assert spark.conf.get(COLUMNAR_UDF_INPUT) == "false"
    out.unpersist()


def test_hashing_a_cached_dataframe_then_training(spark):
    """Spark 4.3.0 fed a cached table's columnar batches to the hasher's Arrow UDF even with the
    setting above off, and every action failed ("Unsupported data type UDT"); the stages now turn
    off the cache's vectorized reader too."""
    from sparkml_scale.classification import LogisticRegression
    from sparkml_scale.core.session import CACHE_VECTORIZED_READER

    spark.conf.set(CACHE_VECTORIZED_READER, "true")
    rng = np.random.default_rng(3)
    x = rng.random((300, 3))
    src = spark.createDataFrame([(float(a), float(b), float(c), float(a > 0.5)) for a, b, c in x],
                                ["a", "b", "c", "label"]).cache()
    out = FeatureHasher(inputCols=["a", "b", "c"], outputCol="features", numFeatures=16).transform(src)
    out.write.format("noop").mode("overwrite").save()
    assert out.filter("features IS NOT NULL").count() == 300
    model = LogisticRegression(maxIter=20).fit(out)
    assert model.summary.accuracy > 0.8
    assert spark.conf.get(CACHE_VECTORIZED_READER) == "false"
    src.unpersist()
