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

MLlib's other params are accepted so that code written for
``pyspark.ml.regression.LinearRegression`` runs unchanged: ``maxIter``, ``tol``
and ``maxBlockSizeInMB`` (the solver is direct and reads Arrow batches: no
iterations, no blocks), ``epsilon`` (used by the huber loss only), and
``elasticNetParam`` (any value in [0, 1] while ``regParam = 0``, where the
objective has no penalty).  Values this solver cannot honour raise a
``ValueError`` naming the param: ``loss="huber"``, ``solver="l-bfgs"``,
``elasticNetParam > 0`` with ``regParam > 0`` (L1 needs an iterative solver).

``LinearRegressionModel.write().format("pmml")`` exports the model as a PMML
4.4 ``RegressionModel`` (the document MLlib writes: fields ``field_0`` ...,
``target``, one ``RegressionTable``).

Reference: Spark MLlib ``WeightedLeastSquares.scala`` and ``LinearRegression.scala``
(``mllib/src/main/scala/org/apache/spark/ml/optim``, ``.../ml/regression``), and
``mllib/pmml/export/GeneralizedLinearPMMLModelExport.scala``.
"""
from __future__ import annotations

import logging
import math
import warnings
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from typing import Any, Optional

import numpy as np
from pyspark import keyword_only
from pyspark.ml.linalg import Vector, Vectors
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import (
    HasAggregationDepth,
    HasElasticNetParam,
    HasFeaturesCol,
    HasFitIntercept,
    HasLabelCol,
    HasLoss,
    HasMaxBlockSizeInMB,
    HasMaxIter,
    HasPredictionCol,
    HasRegParam,
    HasSolver,
    HasStandardization,
    HasTol,
    HasWeightCol,
)
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from .._version import __version__
from ..core.display import detail
from ..core.linear import LinearModelMixin
from ..core.params import Interval, Options
from ..core.persistence import ParamsWriter
from ..core.stage import StageParams, TrainingData, VectorEstimator, VectorModel
from ..core.summary import LinearRegressionSummary, LinearRegressionTrainingSummary

__all__ = [
    "LinearRegression",
    "LinearRegressionModel",
    "LinearRegressionSummary",
    "LinearRegressionTrainingSummary",
    "LinearRegressionModelWriter",
    "MAX_NUM_FEATURES",
]

log = logging.getLogger(__name__)

#: Most features the normal-equation solver accepts (MLlib's WeightedLeastSquares.MAX_NUM_FEATURES).
MAX_NUM_FEATURES = 4096


class _LinearRegressionParams(
    StageParams,
    HasFeaturesCol,
    HasLabelCol,
    HasPredictionCol,
    HasMaxIter,
    HasRegParam,
    HasTol,
    HasElasticNetParam,
    HasFitIntercept,
    HasStandardization,
    HasWeightCol,
    HasAggregationDepth,
    HasMaxBlockSizeInMB,
    HasSolver,
    HasLoss,
):
    """Params of :class:`LinearRegression` and its model: MLlib's names, defaults and docs."""

    _input_roles = (("featuresCol", "vector", False), ("labelCol", "numeric", False),
                    ("weightCol", "numeric", True))
    _output_params = ("predictionCol",)
    _param_constraints = {
        "regParam": Interval(float, 0.0, None),
        "solver": Options("auto", "normal", note="l-bfgs is not offered: the normal equations are exact and "
                                                  "need one pass"),
        "aggregationDepth": Interval(int, 1, None),
        "elasticNetParam": Interval(float, 0.0, 1.0),
        "epsilon": Interval(float, 1.0, None, closed="neither"),
        "maxIter": Interval(int, 0, None),
        "tol": Interval(float, 0.0, None),
        "maxBlockSizeInMB": Interval(float, 0.0, None),
    }
    solver: "Param[str]" = Param(
        Params._dummy(),
        "solver",
        "solver: 'auto' or 'normal' (both solve the normal equations from one Gram pass); "
        "MLlib's 'l-bfgs' is not offered",
        typeConverter=TypeConverters.toString,
    )
    loss: "Param[str]" = Param(
        Params._dummy(),
        "loss",
        "the loss function to be optimized: 'squaredError' (MLlib's 'huber' is not offered)",
        typeConverter=TypeConverters.toString,
    )
    epsilon: "Param[float]" = Param(
        Params._dummy(),
        "epsilon",
        "the shape parameter of the huber loss (> 1.0; only used when loss is 'huber', as in MLlib)",
        typeConverter=TypeConverters.toFloat,
    )

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._setDefault(regParam=0.0, fitIntercept=True, standardization=True, solver="auto", aggregationDepth=2,
                         featuresCol="features", labelCol="label", predictionCol="prediction", maxIter=100,
                         tol=1e-6, elasticNetParam=0.0, loss="squaredError", epsilon=1.35, maxBlockSizeInMB=0.0)

    def getEpsilon(self) -> float:
        return self.getOrDefault(self.epsilon)

    def _validate_extra(self) -> None:
        en = self.getElasticNetParam()
        if en > 0 and self.getRegParam() > 0:
            raise ValueError(
                f"param 'elasticNetParam' = {en} with regParam = {self.getRegParam()} asks for an L1 penalty, "
                "which this LinearRegression does not offer (L2 only: set elasticNetParam=0.0; MLlib fits L1 with "
                "an iterative OWL-QN solver)"
            )
        if self.getLoss() != "squaredError":
            if self.getLoss() == "huber":
                raise ValueError("param 'loss' = 'huber' is not supported: this LinearRegression fits "
                                 "loss='squaredError' only (MLlib fits huber with l-bfgs)")
            raise ValueError(f"param 'loss' must be 'squaredError', got {self.getLoss()!r}")


class LinearRegression(_LinearRegressionParams, VectorEstimator):
    """Least-squares linear regression with optional L2 penalty, fitted from one Gram pass.

    A drop-in for :class:`pyspark.ml.regression.LinearRegression` with
    ``solver="normal"`` and ``elasticNetParam=0``: same params and defaults
    (``featuresCol``, ``labelCol``, ``predictionCol``, ``maxIter``=100,
    ``regParam``=0.0, ``elasticNetParam``=0.0, ``tol``=1e-6,
    ``fitIntercept``=True, ``standardization``=True, ``solver``="auto",
    ``weightCol``, ``aggregationDepth``=2, ``loss``="squaredError",
    ``epsilon``=1.35, ``maxBlockSizeInMB``=0.0) and the same coefficients (see
    the module docstring for the objective and for the params that are
    accepted but have no effect).

    Input: ``featuresCol`` (``VectorUDT``, dense or sparse, size ``d <= 4096``),
    numeric ``labelCol``, optional numeric non-negative ``weightCol``.

    Raises (naming the column or param): ``TypeError`` for a non-vector feature
    column or a non-numeric label/weight; ``ValueError`` for missing columns,
    null vectors, vectors of different sizes, NaN/inf features or labels, null
    labels, negative/null weights, an empty DataFrame, ``d > 4096``,
    ``regParam > 0`` with a constant label and no intercept (MLlib's rule), and
    for param values this solver does not offer (``solver="l-bfgs"``,
    ``loss="huber"``, ``elasticNetParam > 0`` with ``regParam > 0``) or MLlib
    rejects (``elasticNetParam`` outside [0, 1], ``epsilon <= 1``, negative
    ``maxIter``/``tol``/``maxBlockSizeInMB``).
    """

    @keyword_only
    def __init__(self, *, featuresCol: str = "features", labelCol: str = "label",
                 predictionCol: str = "prediction", maxIter: int = 100, regParam: float = 0.0,
                 elasticNetParam: float = 0.0, tol: float = 1e-6, fitIntercept: bool = True,
                 standardization: bool = True, solver: str = "auto", weightCol: Optional[str] = None,
                 aggregationDepth: int = 2, loss: str = "squaredError", epsilon: float = 1.35,
                 maxBlockSizeInMB: float = 0.0) -> None:
        super().__init__()
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, featuresCol: str = "features", labelCol: str = "label",
                  predictionCol: str = "prediction", maxIter: int = 100, regParam: float = 0.0,
                  elasticNetParam: float = 0.0, tol: float = 1e-6, fitIntercept: bool = True,
                  standardization: bool = True, solver: str = "auto", weightCol: Optional[str] = None,
                  aggregationDepth: int = 2, loss: str = "squaredError", epsilon: float = 1.35,
                  maxBlockSizeInMB: float = 0.0) -> "LinearRegression":
        """Set the given params (keyword arguments only, as MLlib's)."""
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

    def setMaxIter(self, value: int) -> "LinearRegression":
        return self._set(maxIter=value)

    def setTol(self, value: float) -> "LinearRegression":
        return self._set(tol=value)

    def setElasticNetParam(self, value: float) -> "LinearRegression":
        return self._set(elasticNetParam=value)

    def setLoss(self, value: str) -> "LinearRegression":
        return self._set(loss=value)

    def setEpsilon(self, value: float) -> "LinearRegression":
        return self._set(epsilon=value)

    def setMaxBlockSizeInMB(self, value: float) -> "LinearRegression":
        return self._set(maxBlockSizeInMB=value)

    # ------------------------------------------------------------------ template hooks
    def _check_features(self, d: int) -> None:
        if d > MAX_NUM_FEATURES:
            raise ValueError(
                f"column {self.getFeaturesCol()!r} (featuresCol) has {d} features; the normal-equation solver "
                f"takes at most {MAX_NUM_FEATURES} (as MLlib's)"
            )

    def _solve(self, data: TrainingData):
        g = data.gram()
        coef, intercept = _solve(g, self.getRegParam(), self.getFitIntercept(), self.getStandardization(),
                                 self.getLabelCol())
        return coef, intercept, float(g.sum_y / g.weight_sum), g.count

    def _create_model(self, result) -> "LinearRegressionModel":
        return LinearRegressionModel._create(result[0], result[1])

    def _training_summary(self, model, dataset, result, seconds: float):
        return LinearRegressionTrainingSummary(model, dataset, y_bar=result[2], num_instances=result[3],
                                               seconds=seconds)


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


class LinearRegressionModel(LinearModelMixin, _LinearRegressionParams, VectorModel):
    """Fitted linear regression: ``coefficients`` (DenseVector, size ``numFeatures``),
    ``intercept`` (float), ``scale`` (1.0: the squared-error loss is not rescaled),
    ``summary``/``hasSummary``, ``evaluate(df)``, ``predict(vector)``; ``transform`` adds
    ``predictionCol`` (double, ``x . coefficients + intercept``; null for a null vector) as
    one vectorised Arrow UDF per batch.  ``write().format("pmml")`` exports PMML 4.4.
    ``repr`` is MLlib's ``LinearRegressionModel: uid=..., numFeatures=...`` (plus the training r2 and
    RMSE once computed); ``_repr_html_`` a table for notebooks."""

    def setFeaturesCol(self, value: str) -> "LinearRegressionModel":
        return self._set(featuresCol=value)

    def setPredictionCol(self, value: str) -> "LinearRegressionModel":
        return self._set(predictionCol=value)

    @property
    def scale(self) -> float:
        """MLlib's huber scale; 1.0 for the squared-error loss (the only one fitted here)."""
        return 1.0

    def predict(self, value: Vector) -> float:
        """Prediction ``value . coefficients + intercept`` for one vector (dense or sparse, or a
        sequence of floats) of size ``numFeatures``; ``ValueError`` for another size."""
        if not isinstance(value, Vector):
            value = Vectors.dense([float(x) for x in value])
        if value.size != self.numFeatures:
            raise ValueError(f"predict: the vector has size {value.size}, the model numFeatures = {self.numFeatures}")
        return float(value.dot(self._coef)) + self._intercept

    def evaluate(self, dataset: DataFrame) -> LinearRegressionSummary:
        """Metrics of the model on ``dataset`` (a DataFrame with ``featuresCol``, ``labelCol`` and,
        if set, ``weightCol``), as MLlib's ``evaluate``: a :class:`LinearRegressionSummary` whose
        metrics are computed on first access.  Raises ``TypeError`` for a non-DataFrame or
        wrong-typed columns and ``ValueError`` for missing columns (naming them), before any job.
        """
        if not isinstance(dataset, DataFrame):
            raise TypeError(f"dataset must be a DataFrame but got {type(dataset).__name__}")
        self._check_input_schema(dataset.schema)
        return LinearRegressionSummary(self, dataset)

    def write(self) -> "LinearRegressionModelWriter":
        """Writer of this model: the package's format by default, PMML with ``.format("pmml")``."""
        return LinearRegressionModelWriter(self)

    def toPMML(self) -> str:
        """The model as a PMML 4.4 document (a ``RegressionModel``, as MLlib's PMML export):
        fields ``field_0`` ... ``field_{d-1}`` (continuous doubles) and ``target``, one
        ``RegressionTable`` with the intercept and a ``NumericPredictor`` per coefficient."""
        return _pmml_regression(self._coef, self._intercept)

    # ------------------------------------------------------------------ template hooks
    def _output_fields(self):
        name = self.getPredictionCol()
        return [("predictionCol", name, T.DoubleType())] if name else []

    def _num_features(self) -> int:
        return len(self._coef)

    def _block_predictor(self):
        coef, b = self._coef, self._intercept

        def predict(X):
            return [np.asarray(X @ coef + b, dtype=np.float64)]

        return predict

    def _repr_fields(self):
        """``repr``: MLlib's ``LinearRegressionModel: uid=..., numFeatures=...``, then the training
        summary's ``r2`` and ``rootMeanSquaredError`` once they are computed (a model's repr starts no
        Spark job); the table adds the coefficients, intercept and set params."""
        s = self._summary
        fields = [("numFeatures", self.numFeatures)]
        if s is not None and s._metrics is not None:
            fields += [("r2", s.r2), ("rootMeanSquaredError", s.rootMeanSquaredError)]
        return fields + [("coefficients", detail(self.coefficients)), ("intercept", detail(self._intercept)),
                         ("params", detail(self._repr_params_text()))]


PMML_NAMESPACE = "http://www.dmg.org/PMML-4_4"


def _pmml_regression(coef: np.ndarray, intercept: float) -> str:
    """PMML 4.4 ``RegressionModel`` document of a linear model (the layout of MLlib's
    ``GeneralizedLinearPMMLModelExport``, description "linear regression")."""
    root = ET.Element("PMML", {"xmlns": PMML_NAMESPACE, "version": "4.4"})
    header = ET.SubElement(root, "Header", {"description": "linear regression"})
    ET.SubElement(header, "Application", {"name": "sparkml_scale", "version": __version__})
    ET.SubElement(header, "Timestamp").text = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    fields = [f"field_{i}" for i in range(len(coef))]
    dd = ET.SubElement(root, "DataDictionary", {"numberOfFields": str(len(fields) + 1)})
    for name in fields + ["target"]:
        ET.SubElement(dd, "DataField", {"name": name, "optype": "continuous", "dataType": "double"})
    model = ET.SubElement(root, "RegressionModel", {"modelName": "linear regression", "functionName": "regression"})
    schema = ET.SubElement(model, "MiningSchema")
    for name in fields:
        ET.SubElement(schema, "MiningField", {"name": name, "usageType": "active"})
    ET.SubElement(schema, "MiningField", {"name": "target", "usageType": "target"})
    table = ET.SubElement(model, "RegressionTable", {"intercept": repr(float(intercept))})
    for name, c in zip(fields, coef):
        ET.SubElement(table, "NumericPredictor", {"name": name, "coefficient": repr(float(c))})
    ET.indent(root, space="    ")
    return '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n' + ET.tostring(root, encoding="unicode")


class LinearRegressionModelWriter(ParamsWriter):
    """Writer of :class:`LinearRegressionModel` with MLlib's ``format``: ``"internal"`` (default:
    JSON metadata + numeric arrays, loadable by ``LinearRegressionModel.load``) or ``"pmml"``:
    ``path`` becomes a directory holding one text file with the PMML document
    (:meth:`LinearRegressionModel.toPMML`), as MLlib's ``write().format("pmml").save(path)``.
    ``overwrite()`` applies to both.  ``format`` raises ``ValueError`` for other formats."""

    FORMATS = ("internal", "pmml")

    def __init__(self, instance: "LinearRegressionModel"):
        super().__init__(instance)
        self.source = "internal"

    def format(self, source: str) -> "LinearRegressionModelWriter":
        if not isinstance(source, str) or source.lower() not in self.FORMATS:
            raise ValueError(f"format {source!r} is not supported for LinearRegressionModel: use 'internal' or 'pmml'")
        self.source = source.lower()
        return self

    def saveImpl(self, path: str) -> None:
        if self.source != "pmml":
            super().saveImpl(path)
            return
        spark = self.sparkSession
        # "overwrite" (ParamsWriter.save already refused an existing path unless overwrite())
        spark.createDataFrame([(self.instance.toPMML(),)], "value string").coalesce(1).write.mode(
            "overwrite").text(path)
