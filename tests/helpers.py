"""Test helpers shared by the test modules (import as ``from helpers import ...``; conftest.py puts
this folder on ``sys.path``).

- :data:`CONNECT`: whether this run uses a Spark Connect session (``SPARKML_SCALE_TEST_CONNECT=1``);
- :func:`vector_frame`: a DataFrame of feature vectors (dense or sparse), labels and weights;
- :func:`fashion_mnist_frames`: Fashion-MNIST splits as Parquet-backed ``array<float>`` DataFrames;
- :func:`assert_close`: the closeness rule of the parity tests (abs error where values are small,
  relative where large).
"""
from __future__ import annotations

import concurrent.futures
import os
from typing import Callable, Dict, Optional

import numpy as np

CONNECT = os.environ.get("SPARKML_SCALE_TEST_CONNECT") == "1"
CLUSTER = os.environ.get("SPARKML_SCALE_TEST_CLUSTER") == "1"

__all__ = ["CONNECT", "CLUSTER", "vector_frame", "fashion_mnist_frames", "assert_close"]


def vector_frame(spark, X, y=None, w=None, *, sparse: bool = False, parts: Optional[int] = 2, ids: bool = False,
                 features: str = "features", label: str = "label", weight: str = "weight", cache: bool = True):
    """DataFrame with ``features`` (``VectorUDT`` rows of ``X``, ``(n, d)``; sparse vectors of the
    non-zeros when ``sparse``), ``label`` (float of ``y``) and ``weight`` (float of ``w``) when given,
    and a leading ``id`` column (0..n-1) when ``ids``.  Repartitioned to ``parts`` (``None``: as
    created) and cached unless ``cache=False``."""
    from pyspark.ml.linalg import Vectors
    from pyspark.sql import types as T
    from pyspark.ml.linalg import VectorUDT

    X = np.asarray(X, dtype=np.float64)
    rows = []
    for i, r in enumerate(X):
        v = Vectors.sparse(len(r), {j: float(x) for j, x in enumerate(r) if x != 0}) if sparse else Vectors.dense(r)
        row = ((i,) if ids else ()) + (v,)
        if y is not None:
            row += (float(y[i]),)
        if w is not None:
            row += (float(w[i]),)
        rows.append(row)
    fields = ([T.StructField("id", T.LongType())] if ids else []) + [T.StructField(features, VectorUDT())]
    if y is not None:
        fields.append(T.StructField(label, T.DoubleType()))
    if w is not None:
        fields.append(T.StructField(weight, T.DoubleType()))
    df = spark.createDataFrame(rows, T.StructType(fields))
    if parts is not None:
        df = df.repartition(parts)
    return df.cache() if cache else df


def fashion_mnist_frames(spark, folder, splits, seed: int = 0, row_group_size: int = 2500,
                         float_labels: bool = False, cache: bool = False):
    """``{name: DataFrame}`` of Fashion-MNIST's training images: ``splits`` maps a name to a ``slice`` of a
    fixed permutation (``seed``); each frame has ``pixels`` (``array<float>``, 784 values in [0, 1]) and
    ``label`` (int, or double when ``float_labels``), read from a Parquet file written under ``folder``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sparkml_scale.datasets import load_fashion_mnist

    X, y = load_fashion_mnist(None, labels=True)
    order = np.random.default_rng(seed).permutation(len(y))
    X = (X / 255.0).astype(np.float32)
    out = {}
    for name, part in splits.items():
        idx = order[part]
        flat = pa.array(X[idx].ravel(), pa.float32())
        pixels = pa.ListArray.from_arrays(pa.array(np.arange(0, len(idx) * 784 + 1, 784, dtype=np.int32)), flat)
        labels = y[idx].astype(np.float64) if float_labels else y[idx]
        path = os.path.join(str(folder), f"{name}.parquet")
        pq.write_table(pa.table({"pixels": pixels, "label": pa.array(labels)}), path, row_group_size=row_group_size)
        out[name] = spark.read.parquet(path).cache() if cache else spark.read.parquet(path)
    return out


def assert_close(ours, theirs, tol: float = 1e-6, what: str = "mllib") -> None:
    """``|ours - theirs| / max(1, |theirs|) <= tol`` element-wise, with both arrays in the message."""
    ours, theirs = np.asarray(ours, float), np.asarray(theirs, float)
    assert ours.shape == theirs.shape, f"shapes differ: ours {ours.shape}, {what} {theirs.shape}"
    err = np.abs(ours - theirs) / np.maximum(1.0, np.abs(theirs))
    assert err.size == 0 or err.max() <= tol, f"max abs/rel error {err.max():.3g}\nours={ours}\n{what}={theirs}"



_BACKGROUND: Optional[concurrent.futures.ThreadPoolExecutor] = None
_BACKGROUND_JOBS: Dict[str, concurrent.futures.Future] = {}


def background(key: str, fn: Callable[[], object]) -> concurrent.futures.Future:
    """``fn()`` on the suite's one background thread (jobs run one at a time, in submission order),
    once per ``key``: the same Future for later calls with that key.

    For the tests that spend their time in processes of their own (the fault-injection job, the
    notebooks' kernels): conftest's ``pytest_collection_finish`` submits them when the run
    starts, so they overlap the rest of the suite, and the tests wait for ``.result()``.
    """
    global _BACKGROUND
    if key not in _BACKGROUND_JOBS:
        if _BACKGROUND is None:
            _BACKGROUND = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tests-background")
        _BACKGROUND_JOBS[key] = _BACKGROUND.submit(fn)
    return _BACKGROUND_JOBS[key]
