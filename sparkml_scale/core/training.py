"""The training input of every vector stage: one prologue, one bad-row counter, one wording.

Every fit reads the same ``(features, label, weight)`` columns and must reject the same bad
rows with the same message, whether it then caches numpy blocks for an iterative solver
(:mod:`sparkml_scale.core.blocks`) or sums statistics in one pass
(:mod:`sparkml_scale.core.gram`).  This module is that shared part:

- :class:`TrainingColumns`: which columns (and which params name them), the kind of label
  (none, any finite number, or class indices ``0..K-1``) and the first vector's probe
  (dense or sparse, size ``d``), read once on the driver;
- :meth:`TrainingColumns.select`: the columns as they travel to Python (dense vectors as the
  bytes of their values through the package's JVM function, :mod:`sparkml_scale.core.jvm`,
  about 1.9x faster than ``list<double>`` through ``vector_to_array``, itself about 6x faster
  through Arrow than the ``VectorUDT`` struct; ``vector_to_array`` where the session lacks the
  function; labels and weights as doubles), every name quoted;
- :func:`clean_blocks`: on the executors, per Arrow batch, the usable rows as numpy
  ``(X, y, w)``, while counting bad rows into a :class:`BadRows` vector: null vectors, vectors
  whose size is not the first row's (a batch holding one is skipped), NaN/inf features (the
  batch is skipped), null/NaN/inf/negative weights (zeroed), null/NaN/inf labels and labels
  that are not class indices (zeroed, not counted in the class totals);
- :meth:`BadRows.raise_for`: on the driver, one clear ``ValueError`` (``VectorColumnError``
  for vector problems) per condition, naming the column and its param.

Bad rows never raise inside an executor, so the user sees one Python error, never a task
failure with a JVM trace.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from .arrow import Block, VectorColumnError, bytes_to_dense, lists_to_dense, numeric_to_numpy, vectors_to_block

__all__ = ["TrainingColumns", "BadRows", "clean_blocks", "probe_vectors", "vector_input", "DENSE_MIN_FILL"]

#: Sparse input with a larger fraction of non-zeros (judged on the first row) is read dense.
DENSE_MIN_FILL = 0.5


def probe_vectors(df, features_col: str) -> Tuple[bool, Optional[int], Optional[np.ndarray]]:
    """Read the first non-null vector of ``df[features_col]`` (a tiny Spark job).

    Returns ``(dense, size, first)``: whether to read the column dense (dense vectors, or
    sparse ones more than :data:`DENSE_MIN_FILL` full), the vector size (``None`` when there
    is no non-null row) and the first vector as a float64 array when it is read dense (else
    ``None``).
    """
    return _probe(df, features_col)[:3]


def _probe(df, features_col: str):
    """:func:`probe_vectors` plus the first vector's stored values (``None`` without a row)."""
    from pyspark.ml.linalg import DenseVector

    from .schema import col

    c = col(features_col)
    first = df.select(c).filter(c.isNotNull()).limit(1).collect()
    if not first:
        return True, None, None, None
    v = first[0][0]
    dense = isinstance(v, DenseVector) or v.numNonzeros() > DENSE_MIN_FILL * v.size
    nnz = int(v.size) if isinstance(v, DenseVector) else len(v.indices)
    return dense, int(v.size), (v.toArray().astype(np.float64) if dense else None), nnz


def vector_input(features_col: str, dense: bool, bytes_function: Optional[str] = None):
    """Column expression that carries ``features_col`` to Python: when dense, the bytes of
    each vector's values through the JVM function ``bytes_function`` if given
    (:func:`sparkml_scale.core.jvm.vector_bytes_function`), else ``list<double>`` via
    ``vector_to_array``; when sparse, the ``VectorUDT`` struct.  Nulls stay nulls."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    from .schema import col

    fc = col(features_col)
    if not dense:
        return fc.alias("__features")
    if bytes_function:
        return F.call_function(bytes_function, fc).alias("__features")
    return F.when(fc.isNull(), F.lit(None)).otherwise(vector_to_array(fc)).alias("__features")


class BadRows:
    """The bad-row counter: a float64 vector with one slot per condition, summed over
    partitions like any partial result.  Slots: :attr:`ROWS` (rows used), :attr:`WSUM` (their
    weight), :attr:`NULLS`, :attr:`BADSIZE`, :attr:`NONFINITE`, :attr:`BADW`, :attr:`BADY`
    (null/NaN/inf labels), :attr:`BADCLASS` (finite labels that are not class indices)."""

    ROWS, WSUM, NULLS, BADSIZE, NONFINITE, BADW, BADY, BADCLASS = range(8)
    SIZE = 8

    @staticmethod
    def new() -> np.ndarray:
        return np.zeros(BadRows.SIZE)

    @staticmethod
    def raise_for(meta: np.ndarray, cols: "TrainingColumns", weight_sum: Optional[float] = None) -> None:
        """Raise the error of the first condition counted in ``meta`` (see the module docstring),
        then for no usable row (``empty``) and for weights summing to zero."""
        f, fp = cols.features, cols.features_param
        if meta[BadRows.NULLS]:
            raise VectorColumnError(
                f"column {f!r} ({fp}) holds {int(meta[BadRows.NULLS])} null vector(s); drop or impute them first")
        if meta[BadRows.BADSIZE]:
            raise VectorColumnError(
                f"column {f!r} ({fp}) holds vectors of different sizes: the first row has size {cols.size}, "
                f"{int(meta[BadRows.BADSIZE])} row(s) in batches with other sizes")
        if meta[BadRows.NONFINITE]:
            raise ValueError(f"column {f!r} ({fp}) holds {int(meta[BadRows.NONFINITE])} NaN or infinite value(s)")
        if cols.weight and meta[BadRows.BADW]:
            raise ValueError(f"column {cols.weight!r} (weightCol) holds {int(meta[BadRows.BADW])} null, NaN, "
                             "infinite or negative weight(s)")
        if cols.label and meta[BadRows.BADY]:
            raise ValueError(f"column {cols.label!r} (labelCol) holds {int(meta[BadRows.BADY])} null, NaN or "
                             "infinite label(s)")
        if cols.label and meta[BadRows.BADCLASS]:
            n = int(meta[BadRows.BADCLASS])
            if cols.num_classes == 2 and cols.binary:
                raise ValueError(f"column {cols.label!r} (labelCol) holds {n} value(s) other than 0 and 1; "
                                 "binomial logistic regression needs labels 0.0 and 1.0")
            raise ValueError(f"column {cols.label!r} (labelCol) holds {n} value(s) that are not class indices "
                             f"0.0, 1.0, ..., {cols.num_classes - 1}.0")
        if meta[BadRows.ROWS] == 0:
            raise ValueError(f"column {f!r} ({fp}): the DataFrame is empty (no row with a non-null vector)")
        W = meta[BadRows.WSUM] if weight_sum is None else weight_sum
        if cols.weight and W <= 0:
            raise ValueError(f"column {cols.weight!r} (weightCol): the weights sum to zero")


@dataclass
class TrainingColumns:
    """The training columns of a fit and how to read them.

    ``features`` (a ``VectorUDT`` column, named by param ``features_param``), ``label``
    (``None``: unsupervised), ``weight`` (``None``: every row weighs 1); ``labels``:
    ``"real"`` (any finite number) or ``"classes"`` (integers ``0 .. num_classes - 1``;
    ``binary`` words the error for 0/1 labels).  ``dense``, ``size`` and ``first`` come from
    :func:`probe_vectors` (:meth:`probe`).
    """

    features: str
    features_param: str = "featuresCol"
    label: Optional[str] = None
    weight: Optional[str] = None
    labels: str = "real"
    num_classes: int = 2
    binary: bool = False
    dense: bool = True
    size: Optional[int] = None
    first: Optional[np.ndarray] = None
    #: Stored values of the first vector (its size when dense), from :meth:`probe`.
    first_nnz: Optional[int] = None
    #: SQL name of the vector-to-bytes JVM function dense vectors are read through (``None``:
    #: ``vector_to_array``), set by :meth:`probe` (:mod:`sparkml_scale.core.jvm`).
    bytes_function: Optional[str] = None

    def probe(self, df) -> "TrainingColumns":
        """Read the first vector (one tiny Spark job); ``ValueError`` when there is none.  Dense
        input is then read through the JVM vector-to-bytes function where the session has it."""
        from .jvm import vector_bytes_function

        self.dense, self.size, self.first, self.first_nnz = _probe(df, self.features)
        if self.size is None:
            raise ValueError(f"column {self.features!r} ({self.features_param}): the DataFrame is empty "
                             "(no row with a non-null vector)")
        self.bytes_function = vector_bytes_function(df.sparkSession) if self.dense else None
        return self

    def select(self, df):
        """``df`` reduced to the columns :func:`clean_blocks` reads: features (0), then label
        and weight as doubles when set."""
        from .schema import col

        cols = [vector_input(self.features, self.dense, self.bytes_function)]
        if self.label:
            cols.append(col(self.label).cast("double").alias("__label"))
        if self.weight:
            cols.append(col(self.weight).cast("double").alias("__weight"))
        return df.select(*cols)


def _read_vectors(arr, cols: TrainingColumns, meta: np.ndarray):
    """``(X, valid)`` of one batch's feature column, or ``(None, valid)`` when the batch is
    unusable (nulls only, or a vector of another size)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    valid = None
    if arr.null_count:
        meta[BadRows.NULLS] += arr.null_count
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        arr = arr.filter(arr.is_valid())
    if len(arr) == 0:
        return None, valid
    try:
        if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
            return bytes_to_dense(arr, cols.features, size=cols.size), valid
        if cols.dense:
            return lists_to_dense(arr, cols.features, size=cols.size), valid
        return vectors_to_block(arr, cols.features, size=cols.size, dense=False), valid
    except VectorColumnError:
        meta[BadRows.BADSIZE] += len(arr)
        return None, valid


def clean_blocks(batches: Iterator[pa.RecordBatch], cols: TrainingColumns, meta: np.ndarray,
                 need_weights: bool = False, class_counts: Optional[np.ndarray] = None
                 ) -> Iterator[Tuple[Block, Optional[np.ndarray], Optional[np.ndarray]]]:
    """Per batch of :meth:`TrainingColumns.select`'s columns, the usable rows as
    ``(X (m, d) float64 ndarray or CSR, y (m,) or None, w (m,) or None)``, counting bad rows
    into ``meta`` (a :class:`BadRows` vector) as the module docstring says.

    ``w`` is ``None`` without a weight column unless ``need_weights`` (then ones).  With
    ``labels="classes"``, ``class_counts`` (``(num_classes,)``) gets the weighted count of
    each class.  ``meta``'s ``ROWS`` and ``WSUM`` are updated for the rows yielded.
    """
    K = cols.num_classes
    label_idx = 1 if cols.label else None
    weight_idx = (2 if cols.label else 1) if cols.weight else None
    for b in batches:
        X, valid = _read_vectors(b.column(0), cols, meta)
        if X is None:
            continue
        vals = X.data if sp.issparse(X) else X
        bad_x = ~np.isfinite(vals)
        if bad_x.any():
            meta[BadRows.NONFINITE] += bad_x.sum()
            continue
        m = X.shape[0]
        w = None
        if weight_idx is not None:
            w = numeric_to_numpy(b.column(weight_idx))
            if valid is not None:
                w = w[valid]
            bad = ~np.isfinite(w) | (w < 0)
            if bad.any():
                meta[BadRows.BADW] += bad.sum()
                w = np.where(bad, 0.0, w)
        elif need_weights:
            w = np.ones(m)
        y = None
        if label_idx is not None:
            y = numeric_to_numpy(b.column(label_idx))
            if valid is not None:
                y = y[valid]
            bad = ~np.isfinite(y)
            if bad.any():
                meta[BadRows.BADY] += bad.sum()
                y = np.where(bad, 0.0, y)
            if cols.labels == "classes":
                ok = ~bad & (y >= 0) & (y < K) & (y == np.floor(y))
                meta[BadRows.BADCLASS] += (~ok & ~bad).sum()
                if class_counts is not None:
                    wk = np.ones(m) if w is None else w
                    class_counts += np.bincount(y[ok].astype(np.int64), weights=wk[ok], minlength=K)[:K]
        meta[BadRows.ROWS] += m
        meta[BadRows.WSUM] += m if w is None else float(w.sum())
        yield X, y, w
