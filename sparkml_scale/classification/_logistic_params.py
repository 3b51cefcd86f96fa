"""Params of LogisticRegression and LogisticRegressionModel: declarations, defaults and rules."""
from __future__ import annotations

from typing import Any, List

import numpy as np
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import (
    HasAggregationDepth,
    HasBatchSize,
    HasElasticNetParam,
    HasFeaturesCol,
    HasFitIntercept,
    HasLabelCol,
    HasMaxBlockSizeInMB,
    HasMaxIter,
    HasPredictionCol,
    HasProbabilityCol,
    HasRawPredictionCol,
    HasRegParam,
    HasSeed,
    HasSolver,
    HasStandardization,
    HasStepSize,
    HasThreshold,
    HasThresholds,
    HasTol,
    HasWeightCol,
)

from ..core.params import Interval, Options
from ..core.stage import StageParams

__all__ = ["SOLVERS", "MAX_CLASSES"]

#: Values of the ``solver`` param.
SOLVERS = ("auto", "mapreduce", "allreduce", "sgd")
#: Most classes a multinomial fit accepts (labels 0 .. MAX_CLASSES - 1).
MAX_CLASSES = 1000


class _LogisticRegressionParams(
    StageParams,
    HasFeaturesCol,
    HasLabelCol,
    HasPredictionCol,
    HasProbabilityCol,
    HasRawPredictionCol,
    HasMaxIter,
    HasRegParam,
    HasElasticNetParam,
    HasTol,
    HasFitIntercept,
    HasStandardization,
    HasThreshold,
    HasWeightCol,
    HasAggregationDepth,
    HasSeed,
    HasMaxBlockSizeInMB,
    HasSolver,
    HasThresholds,
    HasStepSize,
    HasBatchSize,
):
    """Params of :class:`LogisticRegression` and its model: Spark MLlib's (names, defaults), plus
    ``solver``, ``batchSize``, ``stepSize`` and ``epochs`` (see the estimator's docstring)."""

    _input_roles = (("featuresCol", "vector", False), ("labelCol", "numeric", False),
                    ("weightCol", "numeric", True))
    _output_params = ("rawPredictionCol", "probabilityCol", "predictionCol")
    _param_constraints = {
        "maxIter": Interval(int, 0, None),
        "regParam": Interval(float, 0.0, None),
        "elasticNetParam": Interval(float, 0.0, 1.0),
        "tol": Interval(float, 0.0, None),
        "threshold": Interval(float, 0.0, 1.0),
        "maxBlockSizeInMB": Interval(float, 0.0, None),
        "aggregationDepth": Interval(int, 1, None),
        "solver": Options(*SOLVERS),
        "batchSize": Interval(int, 1, None),
        "epochs": Interval(int, 1, None),
        "stepSize": Interval(float, 0.0, None, closed="neither"),
        "family": Options("auto", "binomial", "multinomial"),
    }

    family = Param(
        Params._dummy(),
        "family",
        "label distribution: 'auto' (binomial for 2 classes, else multinomial), 'binomial' or 'multinomial'",
        typeConverter=TypeConverters.toString,
    )

    solver = Param(
        Params._dummy(),
        "solver",
        "'auto' (allreduce when the cluster has the task slots and memory for it, else mapreduce), "
        "'mapreduce' (one tree-aggregated Spark job per L-BFGS evaluation, or per Newton step for "
        "binomial L2 fits of few varying columns), 'allreduce' (one barrier "
        "stage) or 'sgd' (mini-batch AdaGrad, one Spark job per epoch)",
        typeConverter=TypeConverters.toString,
    )
    batchSize = Param(
        Params._dummy(), "batchSize", "rows per mini-batch (solver='sgd' and partialFit)",
        typeConverter=TypeConverters.toInt,
    )
    stepSize = Param(
        Params._dummy(), "stepSize", "AdaGrad base step size (solver='sgd' and partialFit)",
        typeConverter=TypeConverters.toFloat,
    )
    epochs = Param(
        Params._dummy(), "epochs", "passes over the data (solver='sgd'; partialFit passes once per call by default)",
        typeConverter=TypeConverters.toInt,
    )
    thresholds = Param(
        Params._dummy(),
        "thresholds",
        "thresholds of the classes: the predicted class is the one with the largest p/t (MLlib's rule)",
        typeConverter=TypeConverters.toListFloat,
    )
    lowerBoundsOnCoefficients = Param(
        Params._dummy(), "lowerBoundsOnCoefficients",
        "lower bounds (numClasses or 1 rows x numFeatures matrix) of the coefficients; L2 only",
        typeConverter=TypeConverters.toMatrix,
    )
    upperBoundsOnCoefficients = Param(
        Params._dummy(), "upperBoundsOnCoefficients",
        "upper bounds (numClasses or 1 rows x numFeatures matrix) of the coefficients; L2 only",
        typeConverter=TypeConverters.toMatrix,
    )
    lowerBoundsOnIntercepts = Param(
        Params._dummy(), "lowerBoundsOnIntercepts", "lower bounds (numClasses or 1) of the intercepts",
        typeConverter=TypeConverters.toVector,
    )
    upperBoundsOnIntercepts = Param(
        Params._dummy(), "upperBoundsOnIntercepts", "upper bounds (numClasses or 1) of the intercepts",
        typeConverter=TypeConverters.toVector,
    )

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._setDefault(
            solver="auto",
            batchSize=256,
            stepSize=0.5,
            epochs=5,
            seed=42,
            maxIter=100,
            regParam=0.0,
            elasticNetParam=0.0,
            tol=1e-6,
            fitIntercept=True,
            standardization=True,
            threshold=0.5,
            aggregationDepth=2,
            family="auto",
            maxBlockSizeInMB=0.0,
        )

    def getFamily(self) -> str:
        return self.getOrDefault(self.family)

    def getEpochs(self) -> int:
        return self.getOrDefault(self.epochs)

    def getThresholds(self) -> List[float]:
        if self.isSet(self.thresholds):
            return self.getOrDefault(self.thresholds)
        t = self.getThreshold()
        return [1.0 - t, t]

    def getLowerBoundsOnCoefficients(self):
        return self.getOrDefault(self.lowerBoundsOnCoefficients)

    def getUpperBoundsOnCoefficients(self):
        return self.getOrDefault(self.upperBoundsOnCoefficients)

    def getLowerBoundsOnIntercepts(self):
        return self.getOrDefault(self.lowerBoundsOnIntercepts)

    def getUpperBoundsOnIntercepts(self):
        return self.getOrDefault(self.upperBoundsOnIntercepts)

    def _has_intercept_bounds(self) -> bool:
        return self.isSet(self.lowerBoundsOnIntercepts) or self.isSet(self.upperBoundsOnIntercepts)

    def _has_bounds(self) -> bool:
        return (self._has_intercept_bounds() or self.isSet(self.lowerBoundsOnCoefficients)
                or self.isSet(self.upperBoundsOnCoefficients))

    def _coefficient_bounds(self, K: int, d: int):
        """``(lower (K, d), upper (K, d), lower (K,), upper (K,))`` of the coefficients and
        intercepts (+-inf where unset), or ``None`` without bounds.  Raises ``ValueError``."""
        if not self._has_bounds():
            return None
        out = []
        for name, shape, fill in (("lowerBoundsOnCoefficients", (K, d), -np.inf),
                                  ("upperBoundsOnCoefficients", (K, d), np.inf),
                                  ("lowerBoundsOnIntercepts", (K,), -np.inf),
                                  ("upperBoundsOnIntercepts", (K,), np.inf)):
            p = self.getParam(name)
            if not self.isSet(p):
                out.append(np.full(shape, fill))
                continue
            v = self.getOrDefault(p).toArray()
            if v.shape != shape:
                raise ValueError(
                    f"param {name!r} has shape {v.shape}, the data needs {shape} "
                    f"({'numClasses' if K > 1 else '1'} x numFeatures for coefficients)"
                )
            out.append(np.asarray(v, dtype=np.float64))
        if np.any(out[0] > out[1]) or np.any(out[2] > out[3]):
            raise ValueError("lower bounds must not exceed upper bounds (lowerBoundsOn*/upperBoundsOn* params)")
        return tuple(out)

    def _validate_extra(self) -> None:
        if self.isSet(self.thresholds):
            t = np.asarray(self.getOrDefault(self.thresholds), dtype=np.float64)
            if t.size < 2 or np.any(~np.isfinite(t)) or np.any(t < 0) or (t == 0).sum() > 1:
                raise ValueError(
                    f"param 'thresholds' must hold >= 2 finite values >= 0 with at most one 0, got {t.tolist()}"
                )
        if self._has_bounds():
            if self.getRegParam() > 0 and self.getElasticNetParam() > 0:
                raise ValueError("bound-constrained fitting (lowerBoundsOn*/upperBoundsOn* params) supports L2 only: "
                                 "set elasticNetParam=0 or regParam=0")
            if self._has_intercept_bounds() and not self.getFitIntercept():
                raise ValueError("lowerBoundsOnIntercepts/upperBoundsOnIntercepts need fitIntercept=True")
