"""Training data as cached numpy blocks.

Iterative fits read their data many times.  :func:`make_blocks` converts the
``(features, label, weight)`` columns once into one binary row per Arrow batch
(a dense ``(n, d)`` float64 matrix or CSR parts, plus label and weight vectors)
and caches that DataFrame; every later pass only decodes raw buffers
(``numpy.frombuffer``) instead of converting vectors again.

Bad rows never raise inside an executor: null vectors and rows with a null
label/weight are counted, a vector-size mismatch is reported as a message, and
the driver turns those into a clear Python error (see :func:`block_stats`).
"""
from __future__ import annotations

from typing import Iterator, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from .arrow import Block, VectorColumnError, numeric_to_numpy, vectors_to_block
from .mapreduce import decode_arrays, encode_arrays, tree_aggregate

__all__ = ["make_blocks", "iter_blocks", "block_stats", "BlockStats"]

BLOCK_SCHEMA = "payload binary, error string, nulls long"
_BLOCK_ARROW = pa.schema([("payload", pa.binary()), ("error", pa.string()), ("nulls", pa.int64())])


def _encode_block(X: Block, y: np.ndarray, w: np.ndarray) -> bytes:
    n, d = X.shape
    if sp.issparse(X):
        meta = np.array([1, n, d], dtype=np.int64)
        return encode_arrays([meta, X.data, X.indices, X.indptr, y, w])
    meta = np.array([0, n, d], dtype=np.int64)
    return encode_arrays([meta, X, y, w])


def _decode_block(payload: bytes) -> Tuple[Block, np.ndarray, np.ndarray]:
    arrays = decode_arrays(payload)
    kind, n, d = (int(v) for v in arrays[0])
    if kind == 1:
        data, indices, indptr, y, w = arrays[1:]
        return sp.csr_matrix((data, indices, indptr), shape=(n, d)), y, w
    X, y, w = arrays[1:]
    return X, y, w


def make_blocks(df, features_col: str, label_col: Optional[str] = None, weight_col: Optional[str] = None):
    """Return a cached DataFrame of numpy blocks built from ``df``.

    Rows whose feature vector is null are dropped and counted in the ``nulls``
    column; a null label or weight becomes NaN (caught by :func:`block_stats`).
    The caller should ``unpersist()`` the result when done.
    """
    cols = [features_col]
    if label_col:
        cols.append(label_col)
    if weight_col:
        cols.append(weight_col)
    sel = df.select(*cols)

    def to_blocks(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        size = None
        for b in batches:
            if b.num_rows == 0:
                continue
            feats = b.column(0)
            nulls = feats.null_count
            if nulls:
                keep = feats.is_valid()
                b = b.filter(keep)
                feats = b.column(0)
            err = None
            payload = b""
            try:
                X = vectors_to_block(feats, features_col, size=size)
                if b.num_rows:
                    size = X.shape[1]
                y = numeric_to_numpy(b.column(1)) if label_col else np.zeros(b.num_rows)
                w = numeric_to_numpy(b.column(len(cols) - 1)) if weight_col else np.ones(b.num_rows)
                if b.num_rows:
                    payload = _encode_block(X, y, w)
            except VectorColumnError as exc:
                err = str(exc)
            yield pa.RecordBatch.from_arrays(
                [pa.array([payload], pa.binary()), pa.array([err], pa.string()), pa.array([nulls], pa.int64())],
                schema=_BLOCK_ARROW,
            )

    return sel.mapInArrow(to_blocks, BLOCK_SCHEMA).persist()


def iter_blocks(batches: Iterator[pa.RecordBatch]) -> Iterator[Tuple[Block, np.ndarray, np.ndarray]]:
    """Decode the block rows of one partition: yields ``(X, y, w)``."""
    for b in batches:
        for payload in b.column(0).to_pylist():
            if payload:
                yield _decode_block(payload)


class BlockStats:
    """Weighted column statistics of the blocks, computed in one pass.

    Attributes: ``count`` (rows), ``weight_sum``, ``mean`` (d,), ``std`` (d,)
    (unbiased, as Spark's ``Summarizer``), ``label_counts`` (weighted counts of
    labels 0..K-1 for ``K = num_label_slots``), ``num_partitions``, ``num_features``.
    """

    def __init__(self, arrays: List[np.ndarray], num_partitions: int):
        (meta, s1, s2, label_counts) = arrays
        self.count = int(meta[0])
        self.weight_sum = float(meta[1])
        self.weight_sq_sum = float(meta[2])
        self.nonfinite_features = int(meta[3])
        self.bad_labels = int(meta[4])
        self.bad_weights = int(meta[5])
        self.num_features = len(s1)
        self.null_vectors = int(meta[7])
        self.label_counts = label_counts
        self.num_partitions = num_partitions
        W = self.weight_sum
        self.mean = s1 / W if W > 0 else np.zeros_like(s1)
        denom = W - self.weight_sq_sum / W if W > 0 else 0.0
        if denom > 0:
            var = (s2 - W * self.mean**2) / denom
        else:
            var = np.zeros_like(s1)
        self.std = np.sqrt(np.maximum(var, 0.0))


def block_stats(blocks, num_label_slots: int = 2, check_labels: bool = True) -> BlockStats:
    """One pass over the blocks: counts, weighted mean/std, label histogram, data checks.

    Labels are checked to be integers in ``[0, num_label_slots)`` when
    ``check_labels``; ``bad_labels`` counts the others (and NaN).  Also counts
    non-finite feature values and negative/NaN weights.  The first vector-size
    error from :func:`make_blocks` is raised here as ``VectorColumnError``.
    """
    K = num_label_slots

    def partial(batches):
        s1 = s2 = None
        meta = np.zeros(7)
        counts = np.zeros(K)
        for X, y, w in iter_blocks(batches):
            d = X.shape[1]
            if s1 is None:
                s1, s2 = np.zeros(d), np.zeros(d)
            bad_w = ~np.isfinite(w) | (w < 0)
            meta[5] += bad_w.sum()
            w = np.where(bad_w, 0.0, w)
            if sp.issparse(X):
                meta[3] += (~np.isfinite(X.data)).sum()
                s1 += X.T @ w
                s2 += X.multiply(X).T @ w
            else:
                meta[3] += (~np.isfinite(X)).sum()
                s1 += w @ X
                s2 += w @ (X * X)
            meta[0] += len(y)
            meta[1] += w.sum()
            meta[2] += (w * w).sum()
            if check_labels:
                ok = np.isfinite(y) & (y >= 0) & (y < K) & (y == np.floor(y))
                meta[4] += (~ok).sum()
                counts += np.bincount(y[ok].astype(np.int64), weights=w[ok], minlength=K)[:K]
        if s1 is None:
            return None
        return [meta, s1, s2, counts]

    checks = blocks.selectExpr("coalesce(sum(nulls), 0) AS nulls", "first(error, true) AS error").collect()[0]
    if checks["error"] is not None:
        raise VectorColumnError(checks["error"])
    arrays, nparts = tree_aggregate(blocks, partial, depth=1)
    if arrays is None:
        arrays = [np.zeros(7), np.zeros(0), np.zeros(0), np.zeros(K)]
    arrays[0] = np.append(arrays[0], checks["nulls"])
    return BlockStats(arrays, nparts)
