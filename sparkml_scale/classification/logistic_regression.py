"""Binomial logistic regression fitted by map-reduce over Arrow blocks.

Objective (the same as Spark MLlib's ``LogisticRegression``)::

    f(beta, b) = 1/W * sum_i w_i * (log(1 + exp(m_i)) - y_i * m_i)
                 + regParam * ((1 - alpha) / 2 * ||beta_s||_2^2 + alpha * ||beta_s||_1)

with ``m_i = x_i . beta + b``, ``W = sum_i w_i``, ``alpha = elasticNetParam`` and
``beta_s = beta * std`` the coefficients in the standardized feature space
(``std`` the unbiased weighted standard deviation of each feature).  With
``standardization=False`` the penalty applies to ``beta`` itself, as in
MLlib.  The intercept is never penalized.  Features with zero variance get a
zero coefficient (as MLlib).

Each loss/gradient evaluation is one Spark job: every partition computes its
partial sums with numpy BLAS on cached blocks (dense ``X @ beta`` and
``X.T @ r`` or their CSR equivalents), the partials are summed by tree
aggregation, and the driver runs L-BFGS-B from ``scipy.optimize`` (L1 via the
usual split ``beta = beta+ - beta-`` with bounds ``>= 0``).

Reference: Spark MLlib ``LogisticRegression`` (``mllib/src/main/scala/org/apache/
spark/ml/classification/LogisticRegression.scala``) for the objective and the
intercept initialisation; Byrd, Lu, Nocedal & Zhu (1995) for L-BFGS-B.
"""
from __future__ import annotations

import logging
import time
from typing import Any, List, Optional

import numpy as np
import pyarrow as pa
from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.linalg import DenseMatrix, DenseVector, Vector, VectorUDT
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import (
    HasAggregationDepth,
    HasElasticNetParam,
    HasFeaturesCol,
    HasFitIntercept,
    HasLabelCol,
    HasMaxIter,
    HasPredictionCol,
    HasProbabilityCol,
    HasRawPredictionCol,
    HasRegParam,
    HasStandardization,
    HasThreshold,
    HasTol,
    HasWeightCol,
)
from pyspark.sql import types as T

from ..core.arrow import dense_to_vectors, vectors_to_block
from ..core.blocks import iter_blocks, make_blocks
from ..core.mapreduce import tree_aggregate
from ..core.linear import LinearModelMixin
from ..core.persistence import ParamsReadWrite
from ..core.session import ensure_vector_udf_support
from ..core.schema import check_new_column, check_numeric_column, check_vector_column

__all__ = ["LogisticRegression", "LogisticRegressionModel", "BinaryLogisticRegressionTrainingSummary"]

log = logging.getLogger(__name__)


class _LogisticRegressionParams(
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
):
    family = Param(
        Params._dummy(),
        "family",
        "label distribution: 'auto' or 'binomial' (multinomial is not supported yet)",
        typeConverter=TypeConverters.toString,
    )

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._setDefault(
            maxIter=100,
            regParam=0.0,
            elasticNetParam=0.0,
            tol=1e-6,
            fitIntercept=True,
            standardization=True,
            threshold=0.5,
            aggregationDepth=2,
            family="auto",
        )

    def getFamily(self) -> str:
        return self.getOrDefault(self.family)

    def _validate_params(self) -> None:
        if self.getMaxIter() < 0:
            raise ValueError(f"param 'maxIter' must be >= 0, got {self.getMaxIter()}")
        if not (self.getRegParam() >= 0):
            raise ValueError(f"param 'regParam' must be >= 0, got {self.getRegParam()}")
        if not (0.0 <= self.getElasticNetParam() <= 1.0):
            raise ValueError(f"param 'elasticNetParam' must be in [0, 1], got {self.getElasticNetParam()}")
        if not (self.getTol() >= 0):
            raise ValueError(f"param 'tol' must be >= 0, got {self.getTol()}")
        if not (0.0 <= self.getThreshold() <= 1.0):
            raise ValueError(f"param 'threshold' must be in [0, 1], got {self.getThreshold()}")
        if self.getAggregationDepth() < 1:
            raise ValueError(f"param 'aggregationDepth' must be >= 1, got {self.getAggregationDepth()}")
        if self.getFamily() not in ("auto", "binomial"):
            raise ValueError(
                f"param 'family' must be 'auto' or 'binomial' (multinomial is not supported yet), "
                f"got {self.getFamily()!r}"
            )


class LogisticRegression(_LogisticRegressionParams, Estimator, ParamsReadWrite):
    """Binomial logistic regression, a drop-in for ``pyspark.ml.classification.LogisticRegression``.

    Params (Spark's names and defaults): ``featuresCol`` ("features", vector
    of float64, dense or sparse, size ``d``), ``labelCol`` ("label", numeric
    0/1), ``predictionCol``, ``probabilityCol``, ``rawPredictionCol``,
    ``maxIter`` (100), ``regParam`` (0.0), ``elasticNetParam`` (0.0),
    ``tol`` (1e-6, relative change of the objective), ``fitIntercept`` (True),
    ``standardization`` (True), ``threshold`` (0.5), ``weightCol`` (unset: all
    rows weigh 1), ``aggregationDepth`` (2), ``family`` ("auto"/"binomial").

    The objective and optimizer are described in the module docstring; the
    fitted coefficients equal MLlib's on the same data and params.

    Raises
    ------
    ValueError
        missing columns, empty input, null feature vectors, labels other than
        0/1, NaN/inf features, negative/NaN weights, a single class, params
        out of range -- each naming the column or param.
    TypeError
        a column of the wrong type (e.g. a string ``featuresCol``).
    """

    @keyword_only
    def __init__(
        self,
        *,
        featuresCol: str = "features",
        labelCol: str = "label",
        predictionCol: str = "prediction",
        maxIter: int = 100,
        regParam: float = 0.0,
        elasticNetParam: float = 0.0,
        tol: float = 1e-6,
        fitIntercept: bool = True,
        threshold: float = 0.5,
        probabilityCol: str = "probability",
        rawPredictionCol: str = "rawPrediction",
        standardization: bool = True,
        weightCol: Optional[str] = None,
        aggregationDepth: int = 2,
        family: str = "auto",
    ) -> None:
        super().__init__()
        kwargs = self._input_kwargs
        self.setParams(**kwargs)

    @keyword_only
    def setParams(
        self,
        *,
        featuresCol: str = "features",
        labelCol: str = "label",
        predictionCol: str = "prediction",
        maxIter: int = 100,
        regParam: float = 0.0,
        elasticNetParam: float = 0.0,
        tol: float = 1e-6,
        fitIntercept: bool = True,
        threshold: float = 0.5,
        probabilityCol: str = "probability",
        rawPredictionCol: str = "rawPrediction",
        standardization: bool = True,
        weightCol: Optional[str] = None,
        aggregationDepth: int = 2,
        family: str = "auto",
    ) -> "LogisticRegression":
        kwargs = self._input_kwargs
        return self._set(**kwargs)

    # Setters as in pyspark.ml.classification.LogisticRegression.
    def setFeaturesCol(self, value: str) -> "LogisticRegression":
        return self._set(featuresCol=value)

    def setLabelCol(self, value: str) -> "LogisticRegression":
        return self._set(labelCol=value)

    def setPredictionCol(self, value: str) -> "LogisticRegression":
        return self._set(predictionCol=value)

    def setProbabilityCol(self, value: str) -> "LogisticRegression":
        return self._set(probabilityCol=value)

    def setRawPredictionCol(self, value: str) -> "LogisticRegression":
        return self._set(rawPredictionCol=value)

    def setMaxIter(self, value: int) -> "LogisticRegression":
        return self._set(maxIter=value)

    def setRegParam(self, value: float) -> "LogisticRegression":
        return self._set(regParam=value)

    def setElasticNetParam(self, value: float) -> "LogisticRegression":
        return self._set(elasticNetParam=value)

    def setTol(self, value: float) -> "LogisticRegression":
        return self._set(tol=value)

    def setFitIntercept(self, value: bool) -> "LogisticRegression":
        return self._set(fitIntercept=value)

    def setStandardization(self, value: bool) -> "LogisticRegression":
        return self._set(standardization=value)

    def setThreshold(self, value: float) -> "LogisticRegression":
        return self._set(threshold=value)

    def setWeightCol(self, value: str) -> "LogisticRegression":
        return self._set(weightCol=value)

    def setAggregationDepth(self, value: int) -> "LogisticRegression":
        return self._set(aggregationDepth=value)

    def setFamily(self, value: str) -> "LogisticRegression":
        return self._set(family=value)

    def _weight_col(self) -> Optional[str]:
        return self.getWeightCol() if self.isDefined(self.weightCol) and self.getWeightCol() else None

    def _check_schema(self, schema: T.StructType) -> None:
        check_vector_column(schema, self.getFeaturesCol(), "featuresCol")
        check_numeric_column(schema, self.getLabelCol(), "labelCol")
        if self._weight_col():
            check_numeric_column(schema, self._weight_col(), "weightCol")

    def _fit(self, dataset) -> "LogisticRegressionModel":
        self._validate_params()
        self._check_schema(dataset.schema)
        t0 = time.perf_counter()
        fcol, lcol, wcol = self.getFeaturesCol(), self.getLabelCol(), self._weight_col()
        data = make_blocks(dataset, fcol, lcol, wcol, num_label_slots=2, depth=self.getAggregationDepth())
        try:
            stats = data.stats
            _check_stats(stats, fcol, lcol, wcol)
            coef, intercept, history = self._train(data.blocks, stats)
        finally:
            data.unpersist()
        model = LogisticRegressionModel._create(coef, intercept)
        self._copyValues(model)
        model._summary = BinaryLogisticRegressionTrainingSummary(
            objectiveHistory=history,
            numInstances=stats.count,
            trainingSeconds=time.perf_counter() - t0,
        )
        return model

    def _train(self, blocks, stats):
        d = stats.num_features
        std = stats.std
        inv_std = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 0.0)
        W = stats.weight_sum
        fit_b = self.getFitIntercept()
        lam = self.getRegParam()
        alpha = self.getElasticNetParam()
        l2 = lam * (1.0 - alpha)
        l1 = lam * alpha
        # Penalty weights per scaled coefficient: 1 if standardization, else 1/std^2 (L2), 1/std (L1).
        if self.getStandardization():
            pen2 = np.ones(d)
            pen1 = np.ones(d)
        else:
            pen2 = inv_std**2
            pen1 = inv_std
        depth = self.getAggregationDepth()
        nparts = stats.num_partitions

        # Optimise in the centred, scaled space (better conditioned; same optimum):
        # m = sum_j beta_s_j * (x_j - mu_j) / std_j + b_c, centring applied implicitly so
        # sparse blocks stay sparse.  Without an intercept there is nothing to centre.
        mu = stats.mean if fit_b else np.zeros(d)
        mu_s = mu * inv_std

        def loss_grad_raw(beta_s: np.ndarray, b_c: float):
            coef = beta_s * inv_std
            b = b_c - float(coef @ mu)

            def partial(batches):
                loss = 0.0
                g = np.zeros(d)
                gb = 0.0
                seen = False
                for X, y, w in iter_blocks(batches):
                    seen = True
                    m = X @ coef + b
                    # log(1 + exp(m)) - y m, stable for large |m|
                    loss += float(w @ (np.logaddexp(0.0, m) - y * m))
                    r = w * (_sigmoid(m) - y)
                    g += X.T @ r
                    gb += float(r.sum())
                if not seen:
                    return None
                return [np.array([loss, gb]), g]

            arrays, _ = tree_aggregate(blocks, partial, depth=depth, num_partitions=nparts)
            (lb, g) = arrays
            return lb[0] / W, (g * inv_std - mu_s * lb[1]) / W, lb[1] / W

        # Variables: [beta_s (d), b (1 if fitIntercept)] or with L1 [beta+ (d), beta- (d), b].
        use_l1 = l1 > 0

        def unpack(x):
            if use_l1:
                beta = x[:d] - x[d : 2 * d]
            else:
                beta = x[:d]
            b = x[-1] if fit_b else 0.0
            return beta, b

        def objective(x):
            beta, b = unpack(x)
            f, g, gb = loss_grad_raw(beta, b)
            f += 0.5 * l2 * float(np.sum(pen2 * beta * beta))
            g = g + l2 * pen2 * beta
            if use_l1:
                f += l1 * float(np.sum(pen1 * (x[:d] + x[d : 2 * d])))
                grad = np.concatenate([g + l1 * pen1, -g + l1 * pen1])
            else:
                grad = g
            if fit_b:
                grad = np.append(grad, gb)
            return f, grad

        # Start: zero coefficients; intercept at the log-odds of the prior (as MLlib).
        p1 = stats.label_counts[1] / W
        b0 = float(np.log(p1 / (1.0 - p1))) if fit_b else 0.0
        nvar = (2 * d if use_l1 else d) + (1 if fit_b else 0)
        x0 = np.zeros(nvar)
        if fit_b:
            x0[-1] = b0
        bounds = None
        if use_l1:
            bounds = [(0.0, None)] * (2 * d) + ([(None, None)] if fit_b else [])

        history: List[float] = []
        f0, _ = objective(x0)
        history.append(float(f0))

        from scipy.optimize import minimize

        tol = self.getTol()

        def callback(intermediate_result):
            # Convergence as MLlib (Breeze): relative change of the objective below ``tol``.
            f = float(intermediate_result.fun)
            prev = history[-1]
            history.append(f)
            if abs(prev - f) <= tol * max(abs(f), 1e-300):
                raise StopIteration

        max_iter = self.getMaxIter()
        if max_iter == 0:
            beta, b_c = unpack(x0)
            return beta * inv_std, float(b_c), history
        res = minimize(
            objective,
            x0,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            callback=callback,
            options={"maxiter": max_iter, "ftol": 0.0, "gtol": 1e-12, "maxfun": max_iter * 20 + 20, "maxcor": 10},
        )
        log.info("LogisticRegression: L-BFGS-B %s after %d iterations (%d passes)", res.message, res.nit, res.nfev)
        beta, b_c = unpack(res.x)
        coef = beta * inv_std
        return coef, float(b_c - coef @ mu), history


def _sigmoid(m: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(m)


def _check_stats(stats, fcol: str, lcol: str, wcol: Optional[str]) -> None:
    if stats.null_vectors:
        raise ValueError(f"column {fcol!r} (featuresCol) holds {stats.null_vectors} null vector(s)")
    if stats.count == 0:
        raise ValueError("the input DataFrame is empty: LogisticRegression needs at least one row")
    if stats.nonfinite_features:
        raise ValueError(
            f"column {fcol!r} (featuresCol) holds {stats.nonfinite_features} NaN or infinite value(s)"
        )
    if stats.bad_weights:
        raise ValueError(
            f"column {wcol!r} (weightCol) holds {stats.bad_weights} negative, NaN or null weight(s)"
        )
    if stats.bad_labels:
        raise ValueError(
            f"column {lcol!r} (labelCol) holds {stats.bad_labels} value(s) other than 0 and 1 "
            f"(or null/NaN); binomial logistic regression needs labels 0.0 and 1.0"
        )
    if stats.weight_sum <= 0:
        raise ValueError(f"column {wcol!r} (weightCol): the weights sum to zero")
    present = int((stats.label_counts > 0).sum())
    if present < 2:
        only = int(np.argmax(stats.label_counts))
        raise ValueError(
            f"column {lcol!r} (labelCol) holds only label {only}: logistic regression needs both classes"
        )


class BinaryLogisticRegressionTrainingSummary:
    """Training summary: ``objectiveHistory`` (objective at the start and after each
    L-BFGS iteration), ``totalIterations``, ``numInstances``, ``trainingSeconds``."""

    def __init__(self, objectiveHistory: List[float], numInstances: int, trainingSeconds: float):
        self.objectiveHistory = list(objectiveHistory)
        self.totalIterations = len(self.objectiveHistory)
        self.numInstances = numInstances
        self.trainingSeconds = trainingSeconds

    def __repr__(self) -> str:
        return (
            f"BinaryLogisticRegressionTrainingSummary(totalIterations={self.totalIterations}, "
            f"finalObjective={self.objectiveHistory[-1]:.6g})"
        )


class LogisticRegressionModel(LinearModelMixin, _LogisticRegressionParams, Model, ParamsReadWrite):
    """Fitted binomial logistic regression.

    Attributes: ``coefficients`` (DenseVector, size ``numFeatures``),
    ``intercept`` (float), ``coefficientMatrix`` (1 x d), ``interceptVector``,
    ``numFeatures``, ``numClasses`` (2), ``summary`` / ``hasSummary``.

    ``transform`` appends ``rawPrediction`` (vector ``[-m, m]``),
    ``probability`` (vector ``[1-p, p]``) and ``prediction`` (double 0/1,
    ``p > threshold``) -- Spark's column types; a column whose param is set to
    ``""`` is not produced.  It runs as one vectorised Arrow UDF per batch.
    """

    @property
    def coefficientMatrix(self) -> DenseMatrix:
        return DenseMatrix(1, len(self._coef), self._coef.tolist(), isTransposed=True)

    @property
    def interceptVector(self) -> DenseVector:
        return DenseVector([self._intercept])

    @property
    def numClasses(self) -> int:
        return 2

    def setFeaturesCol(self, value: str) -> "LogisticRegressionModel":
        return self._set(featuresCol=value)

    def setPredictionCol(self, value: str) -> "LogisticRegressionModel":
        return self._set(predictionCol=value)

    def setProbabilityCol(self, value: str) -> "LogisticRegressionModel":
        return self._set(probabilityCol=value)

    def setRawPredictionCol(self, value: str) -> "LogisticRegressionModel":
        return self._set(rawPredictionCol=value)

    def setThreshold(self, value: float) -> "LogisticRegressionModel":
        return self._set(threshold=value)

    # single-vector helpers, as MLlib's model
    def predictRaw(self, value: Vector) -> DenseVector:
        m = float(value.dot(self._coef)) + self._intercept
        return DenseVector([-m, m])

    def predictProbability(self, value: Vector) -> DenseVector:
        p = float(_sigmoid(np.array([float(value.dot(self._coef)) + self._intercept]))[0])
        return DenseVector([1.0 - p, p])

    def predict(self, value: Vector) -> float:
        return 1.0 if self.predictProbability(value)[1] > self.getThreshold() else 0.0

    def _outputs(self):
        return [
            (name, param)
            for name, param in (
                (self.getRawPredictionCol(), "rawPredictionCol"),
                (self.getProbabilityCol(), "probabilityCol"),
                (self.getPredictionCol(), "predictionCol"),
            )
            if name
        ]

    def transformSchema(self, schema: T.StructType) -> T.StructType:
        check_vector_column(schema, self.getFeaturesCol(), "featuresCol")
        fields = list(schema.fields)
        for name, param in self._outputs():
            check_new_column(schema, name, param)
            dt = T.DoubleType() if param == "predictionCol" else VectorUDT()
            fields.append(T.StructField(name, dt, False))
        return T.StructType(fields)

    def _transform(self, dataset):
        from pyspark.sql import functions as F

        self._validate_params()
        self.transformSchema(dataset.schema)
        outputs = self._outputs()
        if not outputs:
            return dataset
        coef = self._coef
        b = self._intercept
        thr = self.getThreshold()
        d = len(coef)
        fcol = self.getFeaturesCol()
        kinds = [param for _, param in outputs]
        ret = T.StructType(
            [
                T.StructField(f"c{i}", T.DoubleType() if k == "predictionCol" else VectorUDT(), False)
                for i, k in enumerate(kinds)
            ]
        )

        def predict_batch(vectors: pa.Array) -> pa.Array:
            X = vectors_to_block(vectors, fcol, size=d)
            m = X @ coef + b
            p = _sigmoid(np.asarray(m).ravel())
            cols = []
            for k in kinds:
                if k == "rawPredictionCol":
                    cols.append(dense_to_vectors(np.column_stack([-m, m])))
                elif k == "probabilityCol":
                    cols.append(dense_to_vectors(np.column_stack([1.0 - p, p])))
                else:
                    cols.append(pa.array((p > thr).astype(np.float64)))
            return pa.StructArray.from_arrays(cols, names=[f.name for f in ret.fields])

        ensure_vector_udf_support(dataset.sparkSession)
        udf = F.arrow_udf(predict_batch, ret)
        tmp = "__sparkml_scale_lr_out"
        out = dataset.select("*", udf(F.col(fcol)).alias(tmp))
        return out.select(
            *[F.col(f"`{c}`") for c in dataset.columns],
            *[F.col(f"{tmp}.c{i}").alias(name) for i, (name, _) in enumerate(outputs)],
        )
