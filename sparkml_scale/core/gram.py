"""One-pass second-moment statistics of a vector column (the "Gram pass"), and the
covariance operator applied by map-reduce, for PCA and least squares.

:func:`gram_pass` accumulates, per Arrow batch of ``b`` rows, the weighted
scatter ``Z^T W Z`` of the (shifted) feature block with level-3 BLAS
(``dsyrk`` on the whole ``b x d`` block, never a rank-1 update per row) or a
sparse ``X^T X`` for CSR blocks, plus counts and sums, and optionally the
label moments ``X^T W y``, ``sum w y`` and ``sum w y^2``; partials are summed
by tree aggregation (:mod:`sparkml_scale.core.mapreduce`).  A partial carries only the
upper triangle of its scatter (:func:`pack_upper`, ``d (d + 1) / 2`` values: half the bytes
to move and sum; exact, since the matrix is symmetric), and the shifted block of each batch
is written into one reused buffer per task.

Dense input is shifted by a reference row ``c`` (the first vector of the
data) before accumulation: the scatter about the mean is then
``S_c - W m_c m_c^T`` with ``m_c = mean - c`` small, which avoids most of the
cancellation of the textbook one-pass formula ``X^T X - W mu mu^T`` when the
mean is large next to the spread.  Sparse input is never shifted (it would
densify).

:func:`moments_pass` gives counts, column sums and sums of squares (mean,
variance, support) and :func:`covariance_apply_pass` computes ``X^T (X Q)``
for a ``d x l`` matrix ``Q`` restricted to a column support, for the
randomized eigensolver.

The rows are read and checked by :mod:`sparkml_scale.core.training` (the
prologue shared with the cached blocks of :mod:`sparkml_scale.core.blocks`):
bad rows never fail inside an executor; they are counted, and the driver
raises one clear Python error naming the column.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import replace
from typing import Iterator, Optional

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from .mapreduce import tree_aggregate
from .training import BadRows, TrainingColumns, clean_blocks

__all__ = [
    "GramStats",
    "gram_pass",
    "Moments",
    "moments_pass",
    "covariance_apply_pass",
    "restrict_columns",
    "pack_upper",
    "unpack_upper",
    "BATCH_BYTES",
]

#: Feature bytes per Arrow batch the passes ask Spark for (``maxRecordsPerBatch`` is lowered to
#: about this much for the pass, never raised).  Spark's default of 10,000 rows makes batches of
#: 63 MB at ``d = 784``: the JVM side of the transfer then costs about 40% more CPU (fresh
#: off-heap buffers per batch) than batches of a few MB, while ``dsyrk`` is as fast on 1,000
#: rows as on 10,000.
BATCH_BYTES = 8 << 20
_MIN_BATCH_ROWS = 256
_BATCH_CONF = "spark.sql.execution.arrow.maxRecordsPerBatch"


#: Passes running now, per session: ``[count, the value to restore]`` (threads of one session, e.g.
#: parallel tuning trials, share one lowered value; the last pass to end restores the user's).
_LOWERED: dict = {}
_LOWERED_LOCK = threading.Lock()


@contextmanager
def _batch_rows(df, cols: TrainingColumns):
    """Run the block's Spark jobs with Arrow batches of about :data:`BATCH_BYTES` of features
    (``spark.sql.execution.arrow.maxRecordsPerBatch`` lowered while any pass of the session runs,
    then restored; a smaller value already set is kept).  A runtime SQL setting, so it works
    through Spark Connect too; if it cannot be read or set the pass runs with the session's
    batches.  It changes how rows are batched, never a result."""
    per_row = cols.size * 8 if (cols.dense and cols.size) else max(int(cols.first_nnz or 1), 1) * 12
    rows = max(int(BATCH_BYTES // max(per_row, 1)), _MIN_BATCH_ROWS)
    spark = df.sparkSession
    key = id(spark)
    with _LOWERED_LOCK:
        entry = _LOWERED.get(key)
        if entry is None:
            try:
                old = spark.conf.get(_BATCH_CONF)
                if old is None or 0 < int(old) <= rows:
                    entry = None
                else:
                    spark.conf.set(_BATCH_CONF, str(rows))
                    entry = _LOWERED[key] = [0, old]
            except Exception:  # noqa: BLE001 - batching must never fail a pass
                entry = None
        if entry is not None:
            entry[0] += 1
    try:
        yield
    finally:
        if entry is not None:
            with _LOWERED_LOCK:
                entry[0] -= 1
                if entry[0] == 0:
                    _LOWERED.pop(key, None)
                    try:
                        spark.conf.set(_BATCH_CONF, entry[1])
                    except Exception:  # noqa: BLE001 - e.g. the session stopped meanwhile
                        pass


def restrict_columns(X, support: np.ndarray):
    """The columns ``support`` (sorted int64 indices) of a block, ``X[:, support]``: dense, or CSR
    with ``len(support)`` columns (scipy's column indexing, O(nnz + d): about 10x faster than
    matching every stored index against ``support`` by binary search)."""
    if not sp.issparse(X):
        return X[:, support]
    return sp.csr_matrix(X[:, support])


def pack_upper(S: np.ndarray) -> np.ndarray:
    """The upper triangle (diagonal included) of a square ``(d, d)`` array, row by row, as a
    ``(d (d + 1) / 2,)`` float64 array (what :func:`unpack_upper` reads)."""
    d = S.shape[0]
    return np.asarray(S)[np.triu_indices(d)].astype(np.float64, copy=False)


def unpack_upper(packed: np.ndarray, d: int) -> np.ndarray:
    """The symmetric ``(d, d)`` float64 array whose upper triangle :func:`pack_upper` packed.

    Raises ``ValueError`` if ``packed`` does not hold ``d (d + 1) / 2`` values."""
    packed = np.asarray(packed, dtype=np.float64)
    if packed.shape != (d * (d + 1) // 2,):
        raise ValueError(f"packed triangle of shape {packed.shape}, expected ({d * (d + 1) // 2},)")
    S = np.empty((d, d))
    iu = np.triu_indices(d)
    S[iu] = packed
    S.T[iu] = packed
    return S


def _symmetrize_upper(S: np.ndarray) -> np.ndarray:
    """A copy of ``S`` with its strictly lower triangle taken from the upper (dsyrk fills only the upper)."""
    S = np.array(S, copy=True)
    iu = np.triu_indices(S.shape[0], 1)
    S.T[iu] = S[iu]
    return S


class _Buffer:
    """One reusable float64 array for the shifted block of each batch: a fresh ``b x d`` array per
    batch would be new memory every time (``mmap``-backed for blocks of megabytes: page faults and
    zero-filling on every batch)."""

    def __init__(self):
        self._a: Optional[np.ndarray] = None

    def get(self, shape) -> np.ndarray:
        m, d = shape
        if self._a is None or self._a.shape[1] != d or self._a.shape[0] < m:
            self._a = np.empty((m, d))
        return self._a[:m]


class GramStats:
    """Weighted second moments of ``(x, y)`` from :func:`gram_pass`.

    Attributes
    ----------
    count : int  -- rows used.
    weight_sum : float  -- ``W = sum w`` (``count`` without weights).
    shift : (d,) float64  -- the reference row ``c`` subtracted before accumulation.
    sum_x : (d,) float64  -- ``sum w (x - c)``.
    scatter_c : (d, d) float64  -- ``sum w (x - c)(x - c)^T`` (symmetric).
    sum_y, sum_yy : float  -- ``sum w y``, ``sum w y^2`` (0 without a label).
    xy_c : (d,) float64  -- ``sum w (x - c) y``.
    """

    def __init__(self, arrays, shift: np.ndarray, with_label: bool):
        meta, sx, S, xy, yy = arrays
        self.meta = meta
        self.count = int(meta[BadRows.ROWS])
        self.weight_sum = float(meta[BadRows.WSUM])
        self.shift = shift
        self.sum_x = sx
        self.scatter_c = unpack_upper(S, len(sx)) if np.ndim(S) == 1 else _symmetrize_upper(S)
        self.xy_c = xy
        self.sum_y = float(yy[0])
        self.sum_yy = float(yy[1])
        self.with_label = with_label

    @property
    def num_features(self) -> int:
        return len(self.shift)

    @property
    def mean(self) -> np.ndarray:
        """Weighted mean of x, ``(d,)``."""
        return self.shift + self.sum_x / self.weight_sum

    def centered_scatter(self) -> np.ndarray:
        """``sum w (x - mean)(x - mean)^T``, ``(d, d)``."""
        m = self.sum_x / self.weight_sum
        return self.scatter_c - self.weight_sum * np.outer(m, m)

    def raw_scatter(self) -> np.ndarray:
        """``sum w x x^T``, ``(d, d)``."""
        c, s = self.shift, self.sum_x
        return self.scatter_c + np.outer(c, s) + np.outer(s, c) + self.weight_sum * np.outer(c, c)

    def raw_xy(self) -> np.ndarray:
        """``sum w x y``, ``(d,)``."""
        return self.xy_c + self.shift * self.sum_y


def gram_pass(df, cols: TrainingColumns, depth: int = 2, support: Optional[np.ndarray] = None) -> GramStats:
    """One Spark job: weighted Gram statistics of ``cols.features`` (and of the label when set).

    ``cols`` is probed already (:meth:`TrainingColumns.probe`).  ``support`` (sorted column
    indices, e.g. :attr:`Moments.support`) restricts the statistics to those columns (the
    others must hold only zeros): ``d`` becomes ``len(support)``.  Raises for bad rows and
    empty input as :meth:`BadRows.raise_for` (``VectorColumnError``/``ValueError`` naming the
    column).
    """
    d = cols.size
    first = cols.first
    if support is not None:
        support = np.asarray(support, dtype=np.int64)
        d = len(support)
        if first is not None:
            first = first[support]
    dense = cols.dense
    shift = first if (dense and first is not None) else np.zeros(d)
    ship_shift = shift if dense else None
    with_label = bool(cols.label)

    def partial(batches: Iterator[pa.RecordBatch]):
        from scipy.linalg.blas import dsyrk

        meta = BadRows.new()
        sx = np.zeros(d)
        S = np.zeros((d, d), order="F")
        xy = np.zeros(d)
        yy = np.zeros(2)
        buf = _Buffer()
        for X, y, w in clean_blocks(batches, cols, meta):
            if support is not None:
                X = restrict_columns(X, support)
            if sp.issparse(X):
                Xw = X if w is None else sp.diags(w) @ X
                S += (X.T @ Xw).toarray()
                sx += np.asarray(Xw.sum(axis=0)).ravel()
                if y is not None:
                    xy += Xw.T @ y
            else:
                Z = np.subtract(X, ship_shift, out=buf.get(X.shape))
                if w is None:
                    dsyrk(1.0, Z.T, beta=1.0, c=S, trans=0, lower=0, overwrite_c=1)
                    sx += Z.sum(axis=0)
                    if y is not None:
                        xy += Z.T @ y
                else:
                    dsyrk(1.0, (Z * np.sqrt(w)[:, None]).T, beta=1.0, c=S, trans=0, lower=0, overwrite_c=1)
                    sx += w @ Z
                    if y is not None:
                        xy += Z.T @ (w * y)
            if y is not None:
                wy = y if w is None else w * y
                yy[0] += wy.sum()
                yy[1] += wy @ y
        if not meta.any():
            return None
        return [meta, sx, pack_upper(S), xy, yy]  # the upper triangle only: half the bytes to reduce

    with _batch_rows(df, cols):
        arrays, _ = tree_aggregate(cols.select(df), partial, depth=depth)
    if arrays is None:
        arrays = [BadRows.new(), np.zeros(d), np.zeros(d * (d + 1) // 2), np.zeros(d), np.zeros(2)]
    BadRows.raise_for(arrays[0], cols)
    return GramStats(arrays, shift, with_label)


class Moments:
    """Per-column first and second moments from :func:`moments_pass`.

    ``count``; ``sum`` and ``sum_sq`` (``(d,)`` float64, about the shift ``c``);
    ``mean`` and ``variance`` (unbiased, ``/(n - 1)``); ``support`` (sorted int64
    indices of the columns with any non-zero value); ``num_partitions`` of the data.
    """

    def __init__(self, arrays, shift: np.ndarray):
        meta, s1, s2, nz = arrays
        self.meta = meta
        self.count = int(meta[BadRows.ROWS])
        n = max(self.count, 1)
        self.shift = shift
        m_c = s1 / n
        self.mean = shift + m_c
        self.variance = np.maximum(s2 - n * m_c * m_c, 0.0) / max(self.count - 1, 1)
        self.support = np.flatnonzero(nz > 0).astype(np.int64)
        self.num_partitions: Optional[int] = None

    @property
    def num_features(self) -> int:
        return len(self.mean)


def moments_pass(df, cols: TrainingColumns, depth: int = 2) -> Moments:
    """One Spark job: row count, column sums and sums of squares, and the non-zero support of
    ``cols.features`` (probed already).  Raises for bad rows and empty input as
    :meth:`BadRows.raise_for`."""
    d = cols.size
    dense = cols.dense
    shift = cols.first if (dense and cols.first is not None) else np.zeros(d)
    ship_shift = shift if dense else None
    feature_cols = replace(cols, label=None, weight=None)  # the features alone

    def partial(batches: Iterator[pa.RecordBatch]):
        meta = BadRows.new()
        s1 = np.zeros(d)
        s2 = np.zeros(d)
        nz = np.zeros(d)
        for X, _, _ in clean_blocks(batches, feature_cols, meta):
            if sp.issparse(X):
                s1 += np.asarray(X.sum(axis=0)).ravel()
                s2 += np.asarray(X.multiply(X).sum(axis=0)).ravel()
                nz[X.indices[X.data != 0]] = 1.0
            else:
                Z = X - ship_shift
                s1 += Z.sum(axis=0)
                s2 += np.einsum("ij,ij->j", Z, Z)
                nz += (X != 0).any(axis=0)
        if not meta.any():
            return None
        return [meta, s1, s2, nz]

    with _batch_rows(df, cols):
        arrays, nparts = tree_aggregate(feature_cols.select(df), partial, depth=depth)
    if arrays is None:
        arrays = [BadRows.new(), np.zeros(d), np.zeros(d), np.zeros(d)]
    BadRows.raise_for(arrays[0], feature_cols)
    mom = Moments(arrays, shift)
    mom.num_partitions = nparts
    return mom


def covariance_apply_pass(df, cols: TrainingColumns, support: np.ndarray, Q: np.ndarray, depth: int = 2,
                          num_partitions: Optional[int] = None) -> np.ndarray:
    """One Spark job: ``X_S^T (X_S Q)`` for the columns ``S = support`` of ``cols.features``.

    ``Q`` is ``(len(S), l)``; the result is ``(len(S), l)``.  Columns outside ``S`` hold only
    zeros (``S`` comes from :func:`moments_pass`, which also checked the rows), so restricting
    to ``S`` changes nothing but the size of what travels.  Sparse blocks stay CSR: the cost
    per block is two sparse-times-dense products.
    """
    s = len(support)
    full = s == cols.size
    Q = np.ascontiguousarray(Q, dtype=np.float64)
    l_ = Q.shape[1]
    feature_cols = replace(cols, label=None, weight=None)  # the features alone

    def partial(batches: Iterator[pa.RecordBatch]):
        acc = np.zeros((s, l_))
        seen = False
        for X, _, _ in clean_blocks(batches, feature_cols, BadRows.new()):
            if not full:
                X = restrict_columns(X, support)
            seen = True
            acc += X.T @ (X @ Q)
        return [acc] if seen else None

    with _batch_rows(df, cols):
        arrays, _ = tree_aggregate(feature_cols.select(df), partial, depth=depth, num_partitions=num_partitions)
    if arrays is None:
        return np.zeros((s, l_))
    return np.asarray(arrays[0])
