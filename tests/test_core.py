"""core: Arrow <-> numpy conversion, array payloads, tree aggregation, session, cheap import."""
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp
from pyspark.ml.linalg import Vectors

from sparkml_scale.core.arrow import (
    VECTOR_ARROW_TYPE,
    VectorColumnError,
    block_to_vectors,
    dense_to_vectors,
    lists_to_dense,
    numeric_to_numpy,
    vectors_to_block,
)
from sparkml_scale.core.mapreduce import decode_arrays, encode_arrays, tree_aggregate


def _struct(rows):
    """Spark's Arrow layout for a list of (type, size, indices, values)."""
    return pa.array(
        [None if r is None else dict(zip(["type", "size", "indices", "values"], r)) for r in rows],
        type=VECTOR_ARROW_TYPE,
    )


def test_dense_struct_to_block_and_back():
    arr = _struct([(1, None, None, [1.0, 2.0, 3.0]), (1, None, None, [4.0, 5.0, 6.0])])
    X = vectors_to_block(arr)
    assert isinstance(X, np.ndarray) and X.shape == (2, 3)
    np.testing.assert_array_equal(X, [[1, 2, 3], [4, 5, 6]])
    back = dense_to_vectors(X)
    assert back.type == VECTOR_ARROW_TYPE
    np.testing.assert_array_equal(vectors_to_block(back), X)


def test_mixed_and_sparse_struct_to_csr_keeps_values():
    arr = _struct([(0, 4, [1, 3], [5.0, -1.0]), (1, None, None, [1.0, 0.0, 2.0, 0.0]), (0, 4, [], [])])
    X = vectors_to_block(arr)
    assert sp.issparse(X) and X.shape == (3, 4)
    np.testing.assert_array_equal(X.toarray(), [[0, 5, 0, -1], [1, 0, 2, 0], [0, 0, 0, 0]])
    dense = vectors_to_block(arr, dense=True)
    np.testing.assert_array_equal(dense, X.toarray())
    back = block_to_vectors(X)
    np.testing.assert_array_equal(vectors_to_block(back).toarray(), X.toarray())


def test_sliced_arrays_respect_offsets():
    arr = _struct([(1, None, None, [9.0, 9.0]), (0, 2, [1], [7.0]), (1, None, None, [1.0, 2.0])]).slice(1)
    np.testing.assert_array_equal(vectors_to_block(arr).toarray(), [[0, 7], [1, 2]])
    lists = pa.array([[0.0, 0.0], [1.0, 2.0], [3.0, 4.0]]).slice(1)
    np.testing.assert_array_equal(lists_to_dense(lists), [[1, 2], [3, 4]])


def test_vector_errors_name_the_column():
    with pytest.raises(VectorColumnError, match="'feats'.*null"):
        vectors_to_block(_struct([(1, None, None, [1.0]), None]), column="feats")
    with pytest.raises(VectorColumnError, match="'feats'.*different sizes"):
        vectors_to_block(_struct([(1, None, None, [1.0]), (0, 3, [0], [1.0])]), column="feats")
    with pytest.raises(VectorColumnError, match="expected 5"):
        vectors_to_block(_struct([(1, None, None, [1.0])]), size=5)
    with pytest.raises(VectorColumnError, match="different sizes"):
        lists_to_dense(pa.array([[1.0], [1.0, 2.0]]))


def test_numeric_to_numpy_nulls_and_bools():
    np.testing.assert_array_equal(numeric_to_numpy(pa.array([1, None, 3])), [1.0, np.nan, 3.0])
    np.testing.assert_array_equal(numeric_to_numpy(pa.array([True, False])), [1.0, 0.0])


def test_encode_decode_roundtrip_and_rejects_garbage():
    arrays = [np.arange(6, dtype=np.float64).reshape(2, 3), np.array([1, 2], dtype=np.int32), np.zeros(0)]
    out = decode_arrays(encode_arrays(arrays))
    for a, b in zip(arrays, out):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="corrupt"):
        decode_arrays(b"\x00" * 4)
    bad = encode_arrays([np.zeros(2)]).replace(b"<f8", b"|O8")
    with pytest.raises(ValueError, match="not allowed"):
        decode_arrays(bad)


def _id_sums():
    """A partial for :func:`tree_aggregate`: ``[sum of ids, count]`` of a partition of ``spark.range``
    (``None`` when it has no row); nested, so that it is pickled by value, not by this module's name."""

    def partial(batches):
        total = np.zeros(2)
        for b in batches:
            ids = b.column(0).to_numpy()
            total += [ids.sum(), len(ids)]
        return [total] if total[1] else None

    return partial


@pytest.mark.connect
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_tree_aggregate_sums_over_many_partitions(spark, depth):
    df = spark.range(0, 1000, numPartitions=25)
    arrays, reached = tree_aggregate(df, _id_sums(), depth=depth, num_partitions=25)
    np.testing.assert_array_equal(arrays[0], [sum(range(1000)), 1000])
    if depth == 1:
        assert reached == 25
    else:
        assert reached < 25



@pytest.mark.connect
@pytest.mark.parametrize("inline_bytes", [None, 380])
def test_tree_aggregate_with_unknown_partition_count(spark, monkeypatch, inline_bytes):
    """Partition count unknown: one job brings the first partials (up to INLINE_BYTES) and the
    count; with a small budget the partials of the later partitions are summed by a tree over
    the persisted rows, and the sum is the same."""
    import sparkml_scale.core.mapreduce as mr

    if inline_bytes is not None:
        monkeypatch.setattr(mr, "INLINE_BYTES", inline_bytes)
    held = []
    real = mr.reduce_partials
    monkeypatch.setattr(mr, "reduce_partials", lambda df, depth, n=None: held.append(n) or real(df, depth, n))
    df = spark.range(0, 1000, numPartitions=25)
    arrays, parts = tree_aggregate(df, _id_sums(), depth=2)
    np.testing.assert_array_equal(arrays[0], [sum(range(1000)), 1000])
    assert parts == 25
    # a payload is 38 bytes: (pid + 1) * 38 <= 380 holds for pids 0..9, the other 15 go through the tree
    assert held == ([] if inline_bytes is None else [15])
    empty = spark.range(0, 10, numPartitions=3).filter("id < 0")
    assert tree_aggregate(empty, _id_sums(), depth=2) == (None, 3)

@pytest.mark.connect
def test_vectors_roundtrip_through_spark(spark):
    df = spark.createDataFrame([(Vectors.dense([1.0, 2.0]),), (Vectors.sparse(2, [1], [3.0]),)], ["v"])

    def ident(batches):
        for b in batches:
            X = vectors_to_block(b.column(0))
            yield pa.RecordBatch.from_arrays([block_to_vectors(X)], names=["v"])

    rows = df.mapInArrow(ident, df.schema).collect()
    assert [r.v.toArray().tolist() for r in rows] == [[1.0, 2.0], [0.0, 3.0]]


def test_import_is_cheap():
    code = (
        "import sys, sparkml_scale, sparkml_scale.feature, sparkml_scale.classification;"
        "assert 'torch' not in sys.modules;"
        "from pyspark.sql import SparkSession;"
        "assert SparkSession.getActiveSession() is None;"
        "import pyspark; assert pyspark.SparkContext._active_spark_context is None"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
