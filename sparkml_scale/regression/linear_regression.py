"""Linear regression (least squares, optional L2) solved from one Gram pass.

Objective (Spark MLlib's ``LinearRegression`` with ``solver="normal"``,
``elasticNetParam=0``)::

    f(beta, b) = 1/(2W) * sum_i w_i (y_i - x_i . beta - b)^2 + regParam/2 * sum_j p_j beta_j^2

solved exactly as MLlib's ``WeightedLeastSquares`` does (``standardizeLabel``
on): in the space where each feature is divided by its (population, weighted)
standard deviation ``sigma_j`` and the label by ``sigma_y``, the L2 penalty on
each scaled coefficient is ``regParam / sigma_y`` when ``standardization=True``
and ``regParam / (sigma_y sigma_j^2)`` when ``False``, i.e. in the original
space ``p_j = sigma_j^2 / sigma_y`` resp. ``1 / sigma_y`` in the objective
above; features with zero variance get coefficient 0.  With an intercept
the system is centred (the intercept is not penalised).

One Spark job computes every statistic the solution needs (``W``, ``X^T W X``,
``X^T W y``, ``sum w x``, ``sum w y``, ``sum w y^2``) with level-3 BLAS per
Arrow batch (:func:`sparkml_scale.core.gram.gram_pass`); the driver solves the
``d x d`` system by Cholesky (``scipy.linalg.cho_solve``), falling back to
the minimum-norm least-squares solution (``numpy.linalg.lstsq``, with a
warning) when it is singular.

Reference: Spark MLlib ``WeightedLeastSquares.scala`` and ``LinearRegression.scala``
(``mllib/src/main/scala/org/apache/spark/ml/optim``, ``.../ml/regression``).
"""
from __future__ import annotations

import logging
import math
import time
import warnings
from typing import Any, Dict, Optional

import numpy as np
import pyarrow as pa
from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.linalg import Vector
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import (
    HasAggregationDepth,
    HasFeaturesCol,
    HasFitIntercept,
    HasLabelCol,
    HasPredictionCol,
    HasRegParam,
    HasStandardization,
    HasWeightCol,
)
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from ..core.arrow import map_valid, vectors_to_block
from ..core.gram import gram_pass, probe_vectors
from ..core.linear import LinearModelMixin
from ..core.persistence import ParamsReadWrite
from ..core.lineage import RecordsLineage
from ..core.session import vector_arrow_udf
from ..core.schema import check_new_column, check_numeric_column, check_vector_column

__all__ = ["LinearRegression", "LinearRegressionModel", "LinearRegressionTrainingSummary", "MAX_NUM_FEATURES"]

log = logging.getLogger(__name__)

#: Most features the normal-equation solver accepts (MLlib's WeightedLeastSquares.MAX_NUM_FEATURES).
MAX_NUM_FEATURES = 4096


class _LinearRegressionParams(
    HasFeaturesCol,
    HasLabelCol,
    HasPredictionCol,
    HasRegParam,
    HasFitIntercept,
    HasStandardization,
    HasWeightCol,
    HasAggregationDepth,
):
    solver: "Param[str]" = Param(
        Params._dummy(),
        "solver",
        "solver: 'auto' or 'normal' (both solve the normal equations from one Gram pass)",
        typeConverter=TypeConverters.toString,
    )

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._setDefault(regParam=0.0, fitIntercept=True, standardization=True, solver="auto", aggregationDepth=2,
                         featuresCol="features", labelCol="label", predictionCol="prediction")

    def getSolver(self) -> str:
        return self.getOrDefault(self.solver)

    def _weight_col(self) -> Optional[str]:
        return self.getWeightCol() if self.isDefined(self.weightCol) and self.getWeightCol() else None

    def _validate_params(self) -> None:
        if not self.getRegParam() >= 0 or math.isinf(self.getRegParam()):
            raise ValueError(f"param 'regParam' must be finite and >= 0, got {self.getRegParam()}")
        if self.getSolver() not in ("auto", "normal"):
            raise ValueError(
                f"param 'solver' must be 'auto' or 'normal', got {self.getSolver()!r} "
                "(l-bfgs is not offered: the normal equations are exact and need one pass)"
            )
        if self.getAggregationDepth() < 1:
            raise ValueError(f"param 'aggregationDepth' must be >= 1, got {self.getAggregationDepth()}")


class LinearRegression(RecordsLineage, _LinearRegressionParams, Estimator, ParamsReadWrite):
    """Least-squares linear regression with optional L2 penalty, fitted from one Gram pass.

    A drop-in for :class:`pyspark.ml.regression.LinearRegression` with
    ``solver="normal"`` and ``elasticNetParam=0``: same params and defaults
    (``featuresCol``, ``labelCol``, ``predictionCol``, ``regParam``=0.0,
    ``fitIntercept``=True, ``standardization``=True, ``weightCol``,
    ``solver``="auto", ``aggregationDepth``=2) and the same coefficients (see
    the module docstring for the objective).

    Input: ``featuresCol`` (``VectorUDT``, dense or sparse, size ``d <= 4096``),
    numeric ``labelCol``, optional numeric non-negative ``weightCol``.

    Raises (naming the column or param): ``TypeError`` for a non-vector feature
    column or a non-numeric label/weight; ``ValueError`` for missing columns,
    null vectors, vectors of different sizes, NaN/inf features or labels, null
    labels, negative/null weights, an empty DataFrame, ``d > 4096``, or
    ``regParam > 0`` with a constant label and no intercept (MLlib's rule).
    """

    @keyword_only
    def __init__(self, *, featuresCol: str = "features", labelCol: str = "label",
                 predictionCol: str = "prediction", regParam: float = 0.0, fitIntercept: bool = True,
                 standardization: bool = True, weightCol: Optional[str] = None, solver: str = "auto",
                 aggregationDepth: int = 2) -> None:
        super().__init__()
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, featuresCol: str = "features", labelCol: str = "label",
                  predictionCol: str = "prediction", regParam: float = 0.0, fitIntercept: bool = True,
                  standardization: bool = True, weightCol: Optional[str] = None, solver: str = "auto",
                  aggregationDepth: int = 2) -> "LinearRegression":
        return self._set(**self._input_kwargs)

    def setFeaturesCol(self, value: str) -> "LinearRegression":
        return self._set(featuresCol=value)

    def setLabelCol(self, value: str) -> "LinearRegression":
        return self._set(labelCol=value)

    def setPredictionCol(self, value: str) -> "LinearRegression":
        return self._set(predictionCol=value)

    def setRegParam(self, value: float) -> "LinearRegression":
        return self._set(regParam=value)

    def setFitIntercept(self, value: bool) -> "LinearRegression":
        return self._set(fitIntercept=value)

    def setStandardization(self, value: bool) -> "LinearRegression":
        return self._set(standardization=value)

    def setWeightCol(self, value: str) -> "LinearRegression":
        return self._set(weightCol=value)

    def setSolver(self, value: str) -> "LinearRegression":
        return self._set(solver=value)

    def setAggregationDepth(self, value: int) -> "LinearRegression":
        return self._set(aggregationDepth=value)

    def _fit(self, dataset: DataFrame) -> "LinearRegressionModel":
        self._validate_params()
        fcol, lcol, wcol = self.getFeaturesCol(), self.getLabelCol(), self._weight_col()
        check_vector_column(dataset.schema, fcol, "featuresCol")
        check_numeric_column(dataset.schema, lcol, "labelCol")
        if wcol:
            check_numeric_column(dataset.schema, wcol, "weightCol")
        t0 = time.perf_counter()
        probe = probe_vectors(dataset, fcol)
        if probe[1] is None:
            raise ValueError(f"column {fcol!r} (featuresCol): the DataFrame is empty (no non-null vector)")
        if probe[1] > MAX_NUM_FEATURES:
            raise ValueError(
                f"column {fcol!r} (featuresCol) has {probe[1]} features; the normal-equation solver takes at most "
                f"{MAX_NUM_FEATURES} (as MLlib's)"
            )
        g = gram_pass(dataset, fcol, lcol, wcol, depth=self.getAggregationDepth(), probe=probe)
        if g.weight_sum <= 0:
            raise ValueError(f"column {wcol!r} (weightCol): the weights sum to zero")
        coef, intercept = _solve(g, self.getRegParam(), self.getFitIntercept(), self.getStandardization(), lcol)
        model = LinearRegressionModel._create(coef, intercept)
        self._copyValues(model)
        model._summary = LinearRegressionTrainingSummary(
            model, dataset, lcol, wcol, float(g.sum_y / g.weight_sum), g.count, time.perf_counter() - t0
        )
        return model


def _solve(g, lam: float, fit_intercept: bool, standardize: bool, lcol: str):
    """MLlib's WeightedLeastSquares (normal equations, standardized label) on Gram statistics."""
    W = g.weight_sum
    d = g.num_features
    y_bar = g.sum_y / W
    var_y = max(g.sum_yy / W - y_bar * y_bar, 0.0)
    sd_y = math.sqrt(var_y)
    cov_x = g.centered_scatter() / W
    sd_x = np.sqrt(np.maximum(np.diag(cov_x), 0.0))
    if sd_y == 0.0:
        if fit_intercept or y_bar == 0.0:
            return np.zeros(d), (y_bar if fit_intercept else 0.0)
        if lam > 0:
            raise ValueError(
                f"column {lcol!r} (labelCol) is constant and fitIntercept=False: the model cannot be regularized "
                "when labels are standardized (as MLlib); set regParam=0 or fitIntercept=True"
            )
        sd_y = abs(y_bar)
    live = np.flatnonzero(sd_x > 0)
    coef = np.zeros(d)
    if len(live):
        s = sd_x[live]
        if fit_intercept:
            A = cov_x[np.ix_(live, live)]
            xy = (g.xy_c - (g.sum_x / W) * g.sum_y) / W  # weighted covariance of x and y
        else:
            A = g.raw_scatter()[np.ix_(live, live)] / W
            xy = g.raw_xy() / W
        A = A / np.outer(s, s)
        r = xy[live] / (s * sd_y)
        lam_eff = lam / sd_y  # MLlib: regParam / sigma_y in the scaled space
        pen = np.full(len(live), lam_eff) if standardize else lam_eff / (s * s)
        A = A + np.diag(pen)
        beta_s = _spd_solve(A, r)
        coef[live] = beta_s * sd_y / s
    intercept = float(y_bar - g.mean @ coef) if fit_intercept else 0.0
    return coef, intercept


def _spd_solve(A: np.ndarray, r: np.ndarray) -> np.ndarray:
    from scipy.linalg import LinAlgError, cho_factor, cho_solve

    try:
        c = cho_factor(A, lower=False, check_finite=True)
        if np.min(np.abs(np.diag(c[0]))) > 1e-12 * math.sqrt(max(np.max(np.abs(np.diag(A))), 1e-300)):
            return cho_solve(c, r)
    except LinAlgError:
        pass
    warnings.warn(
        "LinearRegression: the normal equations are singular (collinear features and regParam=0); "
        "returning the minimum-norm least-squares solution",
        UserWarning,
        stacklevel=4,
    )
    return np.linalg.lstsq(A, r, rcond=None)[0]


class LinearRegressionTrainingSummary:
    """Metrics of the model on its training data, computed on first access (one Spark job).

    ``rootMeanSquaredError``, ``meanSquaredError``, ``meanAbsoluteError``,
    ``r2`` (``1 - SSE/SST``; SST about the mean, or about 0 when
    ``fitIntercept=False``, as MLlib's ``RegressionMetrics(throughOrigin)``),
    ``explainedVariance`` (``sum w (p - y_bar)^2 / W``), all weighted by
    ``weightCol``; ``numInstances``, ``objectiveHistory`` (``[0.0]``, as MLlib's
    normal solver), ``totalIterations`` (0), ``trainingSeconds``, ``predictions``.
    """

    def __init__(self, model, dataset, lcol, wcol, y_bar, n, seconds):
        self._model = model
        self._dataset = dataset
        self._lcol = lcol
        self._wcol = wcol
        self._y_bar = y_bar
        self.numInstances = n
        self.trainingSeconds = seconds
        self.objectiveHistory = [0.0]
        self.totalIterations = 0
        self._metrics: Optional[Dict[str, float]] = None

    @property
    def predictions(self) -> DataFrame:
        return self._model.transform(self._dataset)

    def _compute(self) -> Dict[str, float]:
        if self._metrics is None:
            from pyspark.sql import functions as F

            pcol = self._model.getPredictionCol() or "__prediction"
            m = self._model.copy().setPredictionCol(pcol)
            df = m.transform(self._dataset)
            y = F.col(f"`{self._lcol}`").cast("double")
            p = F.col(f"`{pcol}`")
            w = F.col(f"`{self._wcol}`").cast("double") if self._wcol else F.lit(1.0)
            c = self._y_bar if self._model.getFitIntercept() else 0.0
            r = df.select(
                F.sum(w).alias("W"),
                F.sum(w * (y - p) * (y - p)).alias("sse"),
                F.sum(w * F.abs(y - p)).alias("sae"),
                F.sum(w * (y - F.lit(c)) * (y - F.lit(c))).alias("sst"),
                F.sum(w * (p - F.lit(self._y_bar)) * (p - F.lit(self._y_bar))).alias("ssr"),
            ).collect()[0]
            W = r["W"]
            mse = r["sse"] / W
            self._metrics = {
                "mse": mse,
                "rmse": math.sqrt(mse),
                "mae": r["sae"] / W,
                "r2": 1.0 - r["sse"] / r["sst"] if r["sst"] > 0 else float("nan"),
                "ev": r["ssr"] / W,
            }
        return self._metrics

    @property
    def meanSquaredError(self) -> float:
        return self._compute()["mse"]

    @property
    def rootMeanSquaredError(self) -> float:
        return self._compute()["rmse"]

    @property
    def meanAbsoluteError(self) -> float:
        return self._compute()["mae"]

    @property
    def r2(self) -> float:
        return self._compute()["r2"]

    @property
    def explainedVariance(self) -> float:
        return self._compute()["ev"]


class LinearRegressionModel(LinearModelMixin, _LinearRegressionParams, Model, ParamsReadWrite):
    """Fitted linear regression: ``coefficients`` (DenseVector, size ``numFeatures``),
    ``intercept`` (float), ``summary``/``hasSummary``; ``transform`` adds
    ``predictionCol`` (double, ``x . coefficients + intercept``; null for a
    null vector) as one vectorised Arrow UDF per batch."""

    def setFeaturesCol(self, value: str) -> "LinearRegressionModel":
        return self._set(featuresCol=value)

    def setPredictionCol(self, value: str) -> "LinearRegressionModel":
        return self._set(predictionCol=value)

    def predict(self, value: Vector) -> float:
        return float(value.dot(self._coef)) + self._intercept

    def transformSchema(self, schema: T.StructType) -> T.StructType:
        check_vector_column(schema, self.getFeaturesCol(), "featuresCol")
        if not self.getPredictionCol():
            return schema
        check_new_column(schema, self.getPredictionCol(), "predictionCol")
        return T.StructType(list(schema.fields) + [T.StructField(self.getPredictionCol(), T.DoubleType(), True)])

    def _transform(self, dataset: DataFrame) -> DataFrame:
        from pyspark.sql import functions as F

        self.transformSchema(dataset.schema)
        if not self.getPredictionCol():
            return dataset
        coef, b = self._coef, self._intercept
        fcol = self.getFeaturesCol()
        d = len(coef)

        def predict_rows(vectors: pa.Array) -> pa.Array:
            return pa.array(np.asarray(vectors_to_block(vectors, fcol, size=d) @ coef + b, dtype=np.float64))

        def predict_batch(vectors: pa.Array) -> pa.Array:
            return map_valid(vectors, predict_rows)

        udf = vector_arrow_udf(dataset.sparkSession, predict_batch, T.DoubleType())
        return dataset.select("*", udf(F.col(f"`{fcol}`")).alias(self.getPredictionCol()))
