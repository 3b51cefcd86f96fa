"""Shared state of fitted linear models: coefficients, intercept, summary, persistence."""
from __future__ import annotations

from typing import Any, Dict

import numpy as np
from pyspark.ml.linalg import DenseVector

__all__ = ["LinearModelMixin"]


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
