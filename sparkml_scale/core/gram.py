"""One-pass second-moment statistics of a vector column (the "Gram pass"), and the
covariance operator applied by map-reduce, for PCA and least squares.

:func:`gram_pass` accumulates, per Arrow batch of ``b`` rows, the weighted
scatter ``Z^T W Z`` of the (shifted) feature block with level-3 BLAS
(``dsyrk`` on the whole ``b x d`` block, never a rank-1 update per row) or a
sparse ``X^T X`` for CSR blocks, plus counts and sums, and optionally the
label moments ``X^T W y``, ``sum w y`` and ``sum w y^2``; partials are summed
by tree aggregation (:mod:`sparkml_scale.core.mapreduce`).

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

Bad rows never fail inside an executor: null vectors, vectors whose size
differs from the first row's, non-finite values, null/negative weights and
null labels are counted, and :meth:`GramStats.check` raises a clear Python
error on the driver naming the column.
"""
from __future__ import annotations

from typing import Iterator, Optional, Tuple

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from .arrow import VectorColumnError, lists_to_dense, numeric_to_numpy, vectors_to_block
from .mapreduce import tree_aggregate

__all__ = [
    "probe_vectors",
    "vector_input",
    "read_vectors",
    "GramStats",
    "gram_pass",
    "Moments",
    "moments_pass",
    "covariance_apply_pass",
    "restrict_columns",
    "DENSE_MIN_FILL",
]

#: Sparse input with a larger fraction of non-zeros (judged on the first row) is read dense.
DENSE_MIN_FILL = 0.5

# meta slots shared by the passes
_ROWS, _WSUM, _NULLS, _BADSIZE, _NONFINITE, _BADW, _BADY = range(7)
_NMETA = 7


def probe_vectors(df, features_col: str) -> Tuple[bool, Optional[int], Optional[np.ndarray]]:
    """Read the first non-null vector of ``df[features_col]`` (a tiny Spark job).

    Returns ``(dense, size, first)``: whether to read the column dense (dense
    vectors, or sparse ones more than :data:`DENSE_MIN_FILL` full), the vector
    size (``None`` when there is no non-null row) and the first vector as a
    float64 array when it is read dense (else ``None``).
    """
    from pyspark.ml.linalg import DenseVector

    first = df.select(features_col).filter(f"`{features_col}` IS NOT NULL").limit(1).collect()
    if not first:
        return True, None, None
    v = first[0][0]
    dense = isinstance(v, DenseVector) or v.numNonzeros() > DENSE_MIN_FILL * v.size
    return dense, int(v.size), (v.toArray().astype(np.float64) if dense else None)


def vector_input(features_col: str, dense: bool):
    """Column expression that carries ``features_col`` to Python: ``list<double>`` via
    ``vector_to_array`` when dense (about 6x faster through Arrow than the
    ``VectorUDT`` struct; nulls kept as nulls), else the struct itself."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    fc = F.col(f"`{features_col}`")
    if not dense:
        return fc.alias(features_col)
    return F.when(fc.isNull(), F.lit(None)).otherwise(vector_to_array(fc)).alias(features_col)


def read_vectors(arr, features_col: str, dense: bool, size: Optional[int]):
    """Decode one Arrow batch column made by :func:`vector_input`.

    Returns ``(X, valid, nulls, bad_size)``: ``X`` the non-null rows (``(m, d)``
    float64 ndarray when ``dense``, else CSR), ``valid`` a boolean mask of those
    rows in the batch (``None`` when all are valid), and the counts of null
    rows and of rows in a batch whose vector sizes do not all equal ``size``
    (such a batch yields ``X = None``).
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    nulls = arr.null_count
    valid = None
    if nulls:
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        arr = arr.filter(arr.is_valid())
    if len(arr) == 0:
        return None, valid, nulls, 0
    try:
        if dense:
            X = lists_to_dense(arr, features_col, size=size)
        else:
            X = vectors_to_block(arr, features_col, size=size, dense=False)
    except VectorColumnError:
        return None, valid, nulls, len(arr)
    return X, valid, nulls, 0


def _finite_blocks(batches, features_col: str, dense: bool, d: int, meta: np.ndarray):
    """Yield ``(batch, X, valid)`` for each batch whose vectors are usable; nulls, wrong
    sizes and non-finite values are counted in ``meta`` (and those batches skipped)."""
    for b in batches:
        X, valid, nulls, bad = read_vectors(b.column(0), features_col, dense, d)
        meta[_NULLS] += nulls
        meta[_BADSIZE] += bad
        if X is None:
            continue
        vals = X.data if sp.issparse(X) else X
        if not np.isfinite(vals).all():
            meta[_NONFINITE] += (~np.isfinite(vals)).sum()
            continue
        yield b, X, valid


def restrict_columns(X, support: np.ndarray):
    """The columns ``support`` (sorted int64 indices) of a block: ``X[:, support]`` for dense,
    and for CSR a CSR with ``len(support)`` columns (entries outside ``support`` must be zeros;
    they are dropped to value 0)."""
    if not sp.issparse(X):
        return X[:, support]
    s = len(support)
    pos = np.minimum(np.searchsorted(support, X.indices), s - 1)
    hit = support[pos] == X.indices
    return sp.csr_matrix((np.where(hit, X.data, 0.0), pos.astype(np.int32), X.indptr), shape=(X.shape[0], s))


def _check_meta(meta: np.ndarray, features_col: str, size: Optional[int], label_col=None, weight_col=None) -> None:
    if meta[_NULLS]:
        raise VectorColumnError(
            f"column {features_col!r} holds {int(meta[_NULLS])} null vector(s); drop or impute them first"
        )
    if meta[_BADSIZE]:
        raise VectorColumnError(
            f"column {features_col!r} holds vectors of different sizes: the first row has size {size}, "
            f"{int(meta[_BADSIZE])} row(s) in batches with other sizes"
        )
    if meta[_NONFINITE]:
        raise ValueError(f"column {features_col!r} holds {int(meta[_NONFINITE])} NaN or infinite value(s)")
    if weight_col and meta[_BADW]:
        raise ValueError(
            f"column {weight_col!r} (weightCol) holds {int(meta[_BADW])} null, NaN, infinite or negative weight(s)"
        )
    if label_col and meta[_BADY]:
        raise ValueError(f"column {label_col!r} (labelCol) holds {int(meta[_BADY])} null, NaN or infinite label(s)")


def _weights_labels(b: pa.RecordBatch, valid, label_idx, weight_idx, meta):
    """Weights (bad ones counted and zeroed) and labels (bad ones counted and zeroed) of the valid rows."""
    m = b.num_rows if valid is None else int(valid.sum())
    if weight_idx is not None:
        w = numeric_to_numpy(b.column(weight_idx))
        if valid is not None:
            w = w[valid]
        bad = ~np.isfinite(w) | (w < 0)
        if bad.any():
            meta[_BADW] += bad.sum()
            w = np.where(bad, 0.0, w)
    else:
        w = None
    y = None
    if label_idx is not None:
        y = numeric_to_numpy(b.column(label_idx))
        if valid is not None:
            y = y[valid]
        bad = ~np.isfinite(y)
        if bad.any():
            meta[_BADY] += bad.sum()
            y = np.where(bad, 0.0, y)
    return m, w, y


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
        self.count = int(meta[_ROWS])
        self.weight_sum = float(meta[_WSUM])
        self.shift = shift
        self.sum_x = sx
        S = np.array(S, copy=True)
        iu = np.triu_indices(S.shape[0], 1)
        S.T[iu] = S[iu]  # dsyrk filled the upper triangle
        self.scatter_c = S
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


def gram_pass(
    df,
    features_col: str,
    label_col: Optional[str] = None,
    weight_col: Optional[str] = None,
    depth: int = 2,
    probe=None,
    support: Optional[np.ndarray] = None,
) -> GramStats:
    """One Spark job: weighted Gram statistics of ``df[features_col]`` (and label).

    ``probe`` is the result of :func:`probe_vectors` when the caller already has it.
    ``support`` (sorted column indices, e.g. :attr:`Moments.support`) restricts the
    statistics to those columns (the others must hold only zeros): ``d`` becomes
    ``len(support)``.
    Raises ``VectorColumnError``/``ValueError`` naming the column for null or
    mixed-size vectors, non-finite values, bad weights or labels, and
    ``ValueError`` for an empty DataFrame.
    """
    dense, d, first = probe if probe is not None else probe_vectors(df, features_col)
    if d is None:
        raise ValueError(f"column {features_col!r}: the DataFrame has no rows with a non-null vector")
    d_in = d
    if support is not None:
        support = np.asarray(support, dtype=np.int64)
        d = len(support)
        if first is not None:
            first = first[support]
    shift = first if (dense and first is not None) else np.zeros(d)
    cols = [vector_input(features_col, dense)]
    label_idx = weight_idx = None
    if label_col:
        label_idx = len(cols)
        cols.append(df[label_col].cast("double").alias("__y"))
    if weight_col:
        weight_idx = len(cols)
        cols.append(df[weight_col].cast("double").alias("__w"))
    ship_shift = shift if dense else None

    def partial(batches: Iterator[pa.RecordBatch]):
        from scipy.linalg.blas import dsyrk

        meta = np.zeros(_NMETA)
        sx = np.zeros(d)
        S = np.zeros((d, d), order="F")
        xy = np.zeros(d)
        yy = np.zeros(2)
        for b, X, valid in _finite_blocks(batches, features_col, dense, d_in, meta):
            if support is not None:
                X = restrict_columns(X, support)
            m, w, y = _weights_labels(b, valid, label_idx, weight_idx, meta)
            if sp.issparse(X):
                Xw = X if w is None else sp.diags(w) @ X
                S += (X.T @ Xw).toarray()
                sx += np.asarray(Xw.sum(axis=0)).ravel()
                if y is not None:
                    xy += Xw.T @ y
            else:
                Z = X - ship_shift
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
            meta[_ROWS] += m
            meta[_WSUM] += m if w is None else w.sum()
            if y is not None:
                wy = y if w is None else w * y
                yy[0] += wy.sum()
                yy[1] += wy @ y
        if not meta.any():
            return None
        return [meta, sx, S, xy, yy]

    arrays, _ = tree_aggregate(df.select(*cols), partial, depth=depth)
    if arrays is None:
        raise ValueError(f"column {features_col!r}: the DataFrame is empty")
    stats = GramStats(arrays, shift, bool(label_col))
    _check_meta(stats.meta, features_col, d_in, label_col, weight_col)
    if stats.count == 0:
        raise ValueError(f"column {features_col!r}: the DataFrame has no usable rows")
    return stats


class Moments:
    """Per-column first and second moments from :func:`moments_pass`.

    ``count``; ``sum`` and ``sum_sq`` (``(d,)`` float64, about the shift ``c``);
    ``mean`` and ``variance`` (unbiased, ``/(n - 1)``); ``support`` (sorted int64
    indices of the columns with any non-zero value); ``num_partitions`` of the data.
    """

    def __init__(self, arrays, shift: np.ndarray):
        meta, s1, s2, nz = arrays
        self.meta = meta
        self.count = int(meta[_ROWS])
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


def moments_pass(df, features_col: str, depth: int = 2, probe=None) -> Moments:
    """One Spark job: row count, column sums and sums of squares, and the non-zero support."""
    dense, d, first = probe if probe is not None else probe_vectors(df, features_col)
    if d is None:
        raise ValueError(f"column {features_col!r}: the DataFrame has no rows with a non-null vector")
    shift = first if (dense and first is not None) else np.zeros(d)
    ship_shift = shift if dense else None

    def partial(batches: Iterator[pa.RecordBatch]):
        meta = np.zeros(_NMETA)
        s1 = np.zeros(d)
        s2 = np.zeros(d)
        nz = np.zeros(d)
        for _, X, _ in _finite_blocks(batches, features_col, dense, d, meta):
            if sp.issparse(X):
                s1 += np.asarray(X.sum(axis=0)).ravel()
                s2 += np.asarray(X.multiply(X).sum(axis=0)).ravel()
                nz[X.indices[X.data != 0]] = 1.0
            else:
                Z = X - ship_shift
                s1 += Z.sum(axis=0)
                s2 += np.einsum("ij,ij->j", Z, Z)
                nz += (X != 0).any(axis=0)
            meta[_ROWS] += X.shape[0]
        if not meta.any():
            return None
        return [meta, s1, s2, nz]

    arrays, nparts = tree_aggregate(df.select(vector_input(features_col, dense)), partial, depth=depth)
    if arrays is None:
        raise ValueError(f"column {features_col!r}: the DataFrame is empty")
    mom = Moments(arrays, shift)
    mom.num_partitions = nparts
    _check_meta(mom.meta, features_col, d)
    if mom.count == 0:
        raise ValueError(f"column {features_col!r}: the DataFrame has no usable rows")
    return mom


def covariance_apply_pass(
    df,
    features_col: str,
    dense: bool,
    d: int,
    support: np.ndarray,
    Q: np.ndarray,
    depth: int = 2,
    num_partitions: Optional[int] = None,
) -> np.ndarray:
    """One Spark job: ``X_S^T (X_S Q)`` for the columns ``S = support`` of the data.

    ``Q`` is ``(len(S), l)``; the result is ``(len(S), l)``.  Columns outside
    ``S`` hold only zeros (``S`` comes from :func:`moments_pass`), so restricting
    to ``S`` changes nothing but the size of what travels.  Sparse blocks stay
    CSR: the cost per block is two sparse-times-dense products.
    """
    s = len(support)
    full = s == d
    Q = np.ascontiguousarray(Q, dtype=np.float64)
    l_ = Q.shape[1]

    def partial(batches: Iterator[pa.RecordBatch]):
        acc = np.zeros((s, l_))
        seen = False
        for b in batches:
            X, _, _, _ = read_vectors(b.column(0), features_col, dense, d)
            if X is None:
                continue
            if not full:
                X = restrict_columns(X, support)
            seen = True
            acc += X.T @ (X @ Q)
        return [acc] if seen else None

    arrays, _ = tree_aggregate(
        df.select(vector_input(features_col, dense)), partial, depth=depth, num_partitions=num_partitions
    )
    if arrays is None:
        return np.zeros((s, l_))
    return np.asarray(arrays[0])
