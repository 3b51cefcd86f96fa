"""Shared state of fitted linear models: coefficients, intercept, summary, persistence, and
Spark's compressed forms of coefficient matrices and vectors."""
from __future__ import annotations

from typing import Any, Dict

import numpy as np
from pyspark.ml.linalg import DenseMatrix, DenseVector, Matrix, SparseMatrix, SparseVector, Vector

__all__ = ["LinearModelMixin", "compressed_matrix", "compressed_vector"]


class LinearModelMixin:
    """Mix into a ``pyspark.ml.Model`` (before ``Model`` in the bases): holds ``coefficients``
    (float64, ``(d,)``), ``intercept`` and an optional training summary, and saves them as
    arrays ``coefficients``/``intercept`` through :class:`~sparkml_scale.core.persistence.ParamsReadWrite`."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._coef = np.zeros(0)
        self._intercept = 0.0
        self._summary = None

    @classmethod
    def _create(cls, coef: np.ndarray, intercept: float):
        m = cls()
        m._coef = np.asarray(coef, dtype=np.float64)
        m._intercept = float(intercept)
        return m

    def _model_arrays(self) -> Dict[str, np.ndarray]:
        return {"coefficients": self._coef, "intercept": np.array([self._intercept])}

    @classmethod
    def _from_arrays(cls, arrays: Dict[str, np.ndarray], metadata: Dict[str, Any]):
        from .persistence import ModelLoadError

        try:
            return cls._create(arrays["coefficients"].astype(np.float64), float(arrays["intercept"][0]))
        except (KeyError, IndexError):
            raise ModelLoadError(f"saved {cls.__name__} data lacks coefficients/intercept") from None

    def copy(self, extra=None):
        that = super().copy(extra)
        that._coef = self._coef.copy()
        that._intercept = self._intercept
        that._summary = self._summary
        return that

    @property
    def coefficients(self) -> DenseVector:
        return DenseVector(self._coef)

    @property
    def intercept(self) -> float:
        return self._intercept

    @property
    def numFeatures(self) -> int:
        return int(len(self._coef))

    @property
    def hasSummary(self) -> bool:
        return self._summary is not None

    @property
    def summary(self):
        if self._summary is None:
            raise RuntimeError(f"No training summary available for this {type(self).__name__}")
        return self._summary


def compressed_matrix(B: np.ndarray) -> Matrix:
    """Spark's ``Matrix.compressed`` of the row-major ``B``: dense if that is no larger than
    the smaller sparse layout (12 bytes a value and index, 4 a pointer, 3 array headers), else
    CSC if no larger than CSR, else CSR (``isTransposed``)."""
    rows, cols = B.shape
    nnz = int(np.count_nonzero(B))
    dense = 8 * rows * cols + 12
    csc = 12 * nnz + 4 * (cols + 1) + 36
    csr = 12 * nnz + 4 * (rows + 1) + 36
    if dense <= min(csc, csr):
        return DenseMatrix(rows, cols, B.ravel().tolist(), isTransposed=True)
    major = B if csr < csc else B.T  # CSR of B, or CSR of B^T = CSC of B
    ptr = np.concatenate([[0], np.cumsum(np.count_nonzero(major, axis=1))]).astype(int)
    r, c = np.nonzero(major)
    return SparseMatrix(rows, cols, ptr.tolist(), c.tolist(), major[r, c].tolist(), isTransposed=int(csr < csc))


def compressed_vector(v: np.ndarray) -> Vector:
    """Spark's ``Vector.compressed``: sparse when ``1.5 * (nnz + 1) < size``."""
    nz = np.flatnonzero(v)
    if 1.5 * (len(nz) + 1.0) < len(v):
        return SparseVector(len(v), nz.tolist(), v[nz].tolist())
    return DenseVector(v)
