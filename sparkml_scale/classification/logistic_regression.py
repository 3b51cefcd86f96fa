"""Logistic regression (binomial and multinomial) fitted by map-reduce over Arrow blocks.

Objective (the same as Spark MLlib's ``LogisticRegression``)::

    f(B, b) = 1/W * sum_i w_i * loss_i
              + regParam * ((1 - alpha) / 2 * ||B_s||_2^2 + alpha * ||B_s||_1)

binomial: ``loss_i = log(1 + exp(m_i)) - y_i m_i`` with ``m_i = x_i . beta + b``;
multinomial (``K`` classes, softmax without pivot class, as MLlib):
``loss_i = log(sum_k exp(m_ik)) - m_{i, y_i}`` with ``m_ik = x_i . B_k + b_k``.
``W = sum_i w_i``, ``alpha = elasticNetParam`` and ``B_s = B * std`` the
coefficients in the standardized feature space (``std`` the unbiased weighted
standard deviation of each feature).  With ``standardization=False`` the
penalty applies to ``B`` itself, as in MLlib.  Intercepts are never
penalized.  Features with zero variance get zero coefficients (as MLlib).
Multinomial results are reported as MLlib does: intercepts centred to mean 0,
and without regularization the coefficients centred across classes (glmnet).

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
from typing import Any, Dict, List, Optional

import numpy as np
from scipy.special import logsumexp
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
from ..core.session import vector_arrow_udf
from ..core.schema import check_new_column, check_numeric_column, check_vector_column

__all__ = [
    "LogisticRegression",
    "LogisticRegressionModel",
    "LogisticRegressionTrainingSummary",
    "BinaryLogisticRegressionTrainingSummary",
]

log = logging.getLogger(__name__)

#: Iterations over which the decrease of the objective is compared with ``tol`` (Breeze's 20).
STOP_WINDOW = 20
#: Most classes a multinomial fit accepts (labels 0 .. MAX_CLASSES - 1).
MAX_CLASSES = 1000


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
        "label distribution: 'auto' (binomial for 2 classes, else multinomial), 'binomial' or 'multinomial'",
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
        if self.getFamily() not in ("auto", "binomial", "multinomial"):
            raise ValueError(
                f"param 'family' must be 'auto', 'binomial' or 'multinomial', got {self.getFamily()!r}"
            )


class LogisticRegression(_LogisticRegressionParams, Estimator, ParamsReadWrite):
    """Binomial logistic regression, a drop-in for ``pyspark.ml.classification.LogisticRegression``.

    Params (Spark's names and defaults): ``featuresCol`` ("features", vector
    of float64, dense or sparse, size ``d``), ``labelCol`` ("label", numeric
    0/1), ``predictionCol``, ``probabilityCol``, ``rawPredictionCol``,
    ``maxIter`` (100), ``regParam`` (0.0), ``elasticNetParam`` (0.0),
    ``tol`` (1e-6; stops when the gradient norm is at most ``tol`` times the objective, as MLlib), ``fitIntercept`` (True),
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
        family = self.getFamily()
        slots = 2 if family == "binomial" else MAX_CLASSES
        data = make_blocks(dataset, fcol, lcol, wcol, num_label_slots=slots, depth=self.getAggregationDepth())
        try:
            stats = data.stats
            _check_stats(stats, fcol, lcol, wcol, family)
            present = np.flatnonzero(stats.label_counts > 0)
            num_classes = max(int(present[-1]) + 1, 2)
            multinomial = family == "multinomial" or (family == "auto" and num_classes > 2)
            K = num_classes if multinomial else 1
            coef, intercept, history = self._train(data.blocks, stats, K, num_classes)
        finally:
            data.unpersist()
        if multinomial:
            model = LogisticRegressionModel._create_multinomial(coef, intercept)
        else:
            model = LogisticRegressionModel._create(coef[0], float(intercept[0]))
        self._copyValues(model)
        model._summary = LogisticRegressionTrainingSummary(
            objectiveHistory=history,
            numInstances=stats.count,
            trainingSeconds=time.perf_counter() - t0,
            model=model,
            dataset=dataset,
            labelCol=lcol,
            weightCol=wcol,
            numClasses=num_classes if multinomial else 2,
        )
        return model

    def _train(self, blocks, stats, K: int, num_classes: int):
        """Fit ``K`` rows of coefficients (1: binomial logistic loss; ``K`` = numClasses:
        softmax without pivot class, as MLlib).  Returns ``(coef (K, d), intercept (K,), history)``."""
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
        pen2 = np.tile(pen2, K)
        pen1 = np.tile(pen1, K)
        depth = self.getAggregationDepth()
        nparts = stats.num_partitions
        multinomial = K > 1 or num_classes > 2

        # Optimise in the centred, scaled space (better conditioned; same optimum):
        # margins sum_j beta_s_kj * (x_j - mu_j) / std_j + b_c_k, centring applied implicitly so
        # sparse blocks stay sparse.  Without an intercept there is nothing to centre.
        mu = stats.mean if fit_b else np.zeros(d)
        mu_s = mu * inv_std
        nb = K if fit_b else 0

        def loss_grad_raw(beta_s: np.ndarray, b_c: np.ndarray):
            coef = beta_s * inv_std  # (K, d)
            b = b_c - coef @ mu  # (K,)
            kk = K

            def partial(batches):
                loss = 0.0
                g = np.zeros((kk, d))
                gb = np.zeros(kk)
                seen = False
                for X, y, w in iter_blocks(batches):
                    seen = True
                    M = np.asarray(X @ coef.T) + b  # (n, K)
                    if multinomial:
                        lse = logsumexp(M, axis=1)
                        yi = y.astype(np.int64)
                        loss += float(w @ (lse - M[np.arange(len(yi)), yi]))
                        R = np.exp(M - lse[:, None])
                        R[np.arange(len(yi)), yi] -= 1.0
                        R *= w[:, None]
                    else:
                        m = M[:, 0]
                        # log(1 + exp(m)) - y m, stable for large |m|
                        loss += float(w @ (np.logaddexp(0.0, m) - y * m))
                        R = (w * (_sigmoid(m) - y))[:, None]
                    g += np.asarray(X.T @ R).T
                    gb += R.sum(axis=0)
                if not seen:
                    return None
                return [np.array([loss]), gb, g]

            arrays, _ = tree_aggregate(blocks, partial, depth=depth, num_partitions=nparts)
            (lv, gb, g) = arrays
            return lv[0] / W, (g * inv_std - np.outer(gb, mu_s)) / W, gb / W

        # Variables: [beta_s (K*d), b (K if fitIntercept)] or with L1 [beta+ (K*d), beta- (K*d), b].
        use_l1 = l1 > 0
        n = K * d

        def unpack(x):
            beta = x[:n] - x[n : 2 * n] if use_l1 else x[:n]
            b = x[len(x) - nb :] if fit_b else np.zeros(K)
            return beta.reshape(K, d), b

        last = {}

        def objective(x):
            last["x"] = x.copy()
            beta, b = unpack(x)
            f, g, gb = loss_grad_raw(beta, b)
            bf = beta.ravel()
            f += 0.5 * l2 * float(np.sum(pen2 * bf * bf))
            g = g.ravel() + l2 * pen2 * bf
            if use_l1:
                f += l1 * float(np.sum(pen1 * (x[:n] + x[n : 2 * n])))
                grad = np.concatenate([g + l1 * pen1, -g + l1 * pen1])
            else:
                grad = g
            if fit_b:
                grad = np.concatenate([grad, gb])
            last["g"] = grad
            return f, grad

        # Start: zero coefficients; intercepts at the (smoothed, centred) log prior, as MLlib.
        counts = stats.label_counts[:num_classes]
        if not fit_b:
            b0 = np.zeros(K)
        elif multinomial:
            raw = np.log1p(counts)
            b0 = raw - raw.mean()
        else:
            p1 = counts[1] / W
            b0 = np.array([float(np.log(p1 / (1.0 - p1)))])
        nvar = (2 * n if use_l1 else n) + nb
        x0 = np.zeros(nvar)
        if fit_b:
            x0[nvar - nb :] = b0
        bounds = None
        if use_l1:
            bounds = [(0.0, None)] * (2 * n) + [(None, None)] * nb

        history: List[float] = []
        f0, _ = objective(x0)
        history.append(float(f0))

        from scipy.optimize import minimize

        tol = self.getTol()

        def callback(intermediate_result):
            # MLlib's (Breeze's default) convergence test: the norm of the (projected) gradient
            # is at most max(tol * f, 1e-8), or the objective fell by at most tol * |f0| over the
            # last STOP_WINDOW iterations.
            x = intermediate_result.x
            f = float(intermediate_result.fun)
            history.append(f)
            if "g" in last and np.array_equal(last["x"], x):
                g = last["g"]
                if bounds is not None:  # projected gradient: no descent below a bound of 0
                    g = g.copy()
                    at_bound = (x[: 2 * n] <= 0.0) & (g[: 2 * n] > 0.0)
                    g[: 2 * n][at_bound] = 0.0
                if np.linalg.norm(g) <= max(tol * f, 1e-8):
                    raise StopIteration
            if len(history) > STOP_WINDOW and max(history[-STOP_WINDOW:]) - f <= tol * abs(history[0]):
                raise StopIteration

        max_iter = self.getMaxIter()
        xs = x0
        if max_iter > 0:
            res = minimize(
                objective,
                x0,
                jac=True,
                method="L-BFGS-B",
                bounds=bounds,
                callback=callback,
                options={"maxiter": max_iter, "ftol": 0.0, "gtol": 1e-12, "maxfun": max_iter * 20 + 20,
                         "maxcor": 10},
            )
            log.info("LogisticRegression: L-BFGS-B %s after %d iterations (%d passes)", res.message, res.nit,
                     res.nfev)
            xs = res.x
        beta, b_c = unpack(xs)
        coef = beta * inv_std
        intercept = b_c - coef @ mu
        if multinomial:
            # Without regularization softmax coefficients are identifiable only up to a constant
            # per feature: MLlib (after glmnet) reports the class-mean-centred ones; the
            # intercepts are always centred.
            if lam == 0.0:
                coef = coef - coef.mean(axis=0, keepdims=True)
            if fit_b:
                intercept = intercept - intercept.mean()
        return coef, intercept, history


def _predict_block(X, B: np.ndarray, b: np.ndarray, threshold: float):
    """Raw predictions, probabilities (``(n, 2)`` or ``(n, K)``) and predictions (float64) of a block."""
    M = np.asarray(X @ B.T) + b
    if B.shape[0] == 1:
        m = M[:, 0]
        p = _sigmoid(m)
        return np.column_stack([-m, m]), np.column_stack([1.0 - p, p]), (p > threshold).astype(np.float64)
    P = np.exp(M - logsumexp(M, axis=1, keepdims=True))
    return M, P, np.argmax(P, axis=1).astype(np.float64)


def _sigmoid(m: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(m)


def _check_stats(stats, fcol: str, lcol: str, wcol: Optional[str], family: str = "binomial") -> None:
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
        if family == "binomial":
            raise ValueError(
                f"column {lcol!r} (labelCol) holds {stats.bad_labels} value(s) other than 0 and 1 "
                f"(or null/NaN); binomial logistic regression needs labels 0.0 and 1.0"
            )
        raise ValueError(
            f"column {lcol!r} (labelCol) holds {stats.bad_labels} value(s) that are not class indices "
            f"0.0, 1.0, ..., {MAX_CLASSES - 1}.0 (or null/NaN)"
        )
    if stats.weight_sum <= 0:
        raise ValueError(f"column {wcol!r} (weightCol): the weights sum to zero")
    present = int((stats.label_counts > 0).sum())
    if present < 2:
        only = int(np.argmax(stats.label_counts))
        raise ValueError(
            f"column {lcol!r} (labelCol) holds only label {only}: logistic regression needs two classes or more"
        )


class LogisticRegressionTrainingSummary:
    """Training summary, as MLlib's.

    Available at once: ``objectiveHistory`` (objective at the start and after each
    L-BFGS iteration), ``totalIterations``, ``numInstances``, ``trainingSeconds``.

    Computed on first access from the model's predictions on the training
    DataFrame (weighted by ``weightCol`` when set): ``predictions``,
    ``labels``, ``accuracy``, ``precisionByLabel``, ``recallByLabel``,
    ``fMeasureByLabel(beta=1.0)`` (lists indexed by label), ``weightedPrecision``,
    ``weightedRecall`` (one ``groupBy`` job for the confusion matrix), and for
    binomial models ``areaUnderROC`` (Spark's ``BinaryClassificationEvaluator``
    on the raw predictions, as MLlib's summary).  A label never predicted has
    precision 0 (MLlib's convention).
    """

    def __init__(self, objectiveHistory: List[float], numInstances: int, trainingSeconds: float,
                 model=None, dataset=None, labelCol: str = "label", weightCol: Optional[str] = None,
                 numClasses: int = 2):
        self.objectiveHistory = list(objectiveHistory)
        self.totalIterations = len(self.objectiveHistory)
        self.numInstances = numInstances
        self.trainingSeconds = trainingSeconds
        self._model = model
        self._dataset = dataset
        self._lcol = labelCol
        self._wcol = weightCol
        self._k = numClasses
        self._cm: Optional[np.ndarray] = None
        self._auc: Optional[float] = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(totalIterations={self.totalIterations}, "
            f"finalObjective={self.objectiveHistory[-1]:.6g})"
        )

    def _need_data(self):
        if self._model is None or self._dataset is None:
            raise RuntimeError("this summary has no training data attached (metrics need the fitted DataFrame)")

    @property
    def predictions(self):
        self._need_data()
        return self._model.transform(self._dataset)

    def _scored(self, raw: bool):
        m = self._model.copy()
        m._summary = None
        m.setPredictionCol("__sparkml_pred").setProbabilityCol("")
        m.setRawPredictionCol("__sparkml_raw" if raw else "")
        return m.transform(self._dataset)

    @property
    def confusionMatrix(self) -> np.ndarray:
        """Weighted counts, ``(K, K)`` float64: rows = true label, columns = prediction."""
        self._need_data()
        if self._cm is None:
            from pyspark.sql import functions as F

            w = F.col(f"`{self._wcol}`").cast("double") if self._wcol else F.lit(1.0)
            rows = (
                self._scored(raw=False)
                .select(F.col(f"`{self._lcol}`").cast("int").alias("y"), F.col("__sparkml_pred").cast("int").alias("p"),
                        w.alias("w"))
                .groupBy("y", "p").agg(F.sum("w").alias("w")).collect()
            )
            cm = np.zeros((self._k, self._k))
            for r in rows:
                cm[int(r["y"]), int(r["p"])] += float(r["w"])
            self._cm = cm
        return self._cm.copy()

    @property
    def labels(self) -> List[float]:
        return [float(k) for k in range(self._k)]

    @property
    def accuracy(self) -> float:
        cm = self.confusionMatrix
        return float(np.trace(cm) / cm.sum())

    @property
    def precisionByLabel(self) -> List[float]:
        cm = self.confusionMatrix
        col = cm.sum(axis=0)
        return [float(cm[k, k] / col[k]) if col[k] > 0 else 0.0 for k in range(self._k)]

    @property
    def recallByLabel(self) -> List[float]:
        cm = self.confusionMatrix
        row = cm.sum(axis=1)
        return [float(cm[k, k] / row[k]) if row[k] > 0 else 0.0 for k in range(self._k)]

    def fMeasureByLabel(self, beta: float = 1.0) -> List[float]:
        """F-beta of each label (a method, as pyspark's)."""
        out = []
        b2 = beta * beta
        for p, r in zip(self.precisionByLabel, self.recallByLabel):
            out.append((1 + b2) * p * r / (b2 * p + r) if b2 * p + r > 0 else 0.0)
        return out

    @property
    def weightedPrecision(self) -> float:
        share = self.confusionMatrix.sum(axis=1) / self.confusionMatrix.sum()
        return float(share @ np.array(self.precisionByLabel))

    @property
    def weightedRecall(self) -> float:
        share = self.confusionMatrix.sum(axis=1) / self.confusionMatrix.sum()
        return float(share @ np.array(self.recallByLabel))

    @property
    def areaUnderROC(self) -> float:
        """Area under the ROC curve of the training predictions (binomial models only)."""
        self._need_data()
        if self._model.isMultinomial:
            raise AttributeError("areaUnderROC is defined for binomial models only")
        if self._auc is None:
            from pyspark.ml.evaluation import BinaryClassificationEvaluator

            ev = BinaryClassificationEvaluator(rawPredictionCol="__sparkml_raw", labelCol=self._lcol,
                                               metricName="areaUnderROC")
            if self._wcol:
                ev.setWeightCol(self._wcol)
            self._auc = float(ev.evaluate(self._scored(raw=True)))
        return self._auc


#: The summary class of binomial models (MLlib's name).
BinaryLogisticRegressionTrainingSummary = LogisticRegressionTrainingSummary


class LogisticRegressionModel(LinearModelMixin, _LogisticRegressionParams, Model, ParamsReadWrite):
    """Fitted logistic regression, binomial or multinomial.

    Attributes: ``coefficientMatrix`` (``K x d`` DenseMatrix; ``1 x d`` when
    binomial), ``interceptVector`` (``K``), ``numFeatures``, ``numClasses``,
    ``summary`` / ``hasSummary``; binomial models also have ``coefficients``
    (DenseVector, size ``d``) and ``intercept`` (float), which raise
    ``AttributeError`` on a multinomial model, as MLlib's.

    ``transform`` appends ``rawPrediction``, ``probability`` and ``prediction``
    with Spark's column types.  Binomial: raw ``[-m, m]``, probability
    ``[1-p, p]``, prediction ``p > threshold``.  Multinomial: raw = the ``K``
    margins, probability = their softmax, prediction = the index of the
    largest probability.  A column whose param is ``""`` is not produced.  It
    runs as one vectorised Arrow UDF per batch.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._B: Optional[np.ndarray] = None  # (K, d) when multinomial
        self._b: Optional[np.ndarray] = None  # (K,)

    @classmethod
    def _create_multinomial(cls, coef: np.ndarray, intercept: np.ndarray) -> "LogisticRegressionModel":
        m = cls()
        m._B = np.ascontiguousarray(coef, dtype=np.float64)
        m._b = np.asarray(intercept, dtype=np.float64)
        m._coef = np.zeros(m._B.shape[1])
        return m

    @property
    def isMultinomial(self) -> bool:
        return self._B is not None

    def _matrix(self):
        """``(B (K, d), b (K,))``: one row for binomial models."""
        if self._B is not None:
            return self._B, self._b
        return self._coef[None, :], np.array([self._intercept])

    def _model_arrays(self) -> Dict[str, np.ndarray]:
        if self._B is None:
            return super()._model_arrays()
        return {"coefficientMatrix": self._B, "interceptVector": self._b}

    @classmethod
    def _from_arrays(cls, arrays: Dict[str, np.ndarray], metadata: Dict[str, Any]) -> "LogisticRegressionModel":
        if "coefficientMatrix" in arrays and "interceptVector" in arrays:
            return cls._create_multinomial(arrays["coefficientMatrix"], arrays["interceptVector"])
        return super()._from_arrays(arrays, metadata)

    def copy(self, extra=None) -> "LogisticRegressionModel":
        that = super().copy(extra)
        that._B, that._b = self._B, self._b
        return that

    @property
    def coefficients(self) -> DenseVector:
        if self._B is not None:
            raise AttributeError("Multinomial models contain a matrix of coefficients, use coefficientMatrix instead.")
        return DenseVector(self._coef)

    @property
    def intercept(self) -> float:
        if self._B is not None:
            raise AttributeError("Multinomial models contain a vector of intercepts, use interceptVector instead.")
        return self._intercept

    @property
    def coefficientMatrix(self) -> DenseMatrix:
        B, _ = self._matrix()
        return DenseMatrix(B.shape[0], B.shape[1], B.ravel().tolist(), isTransposed=True)

    @property
    def interceptVector(self) -> DenseVector:
        return DenseVector(self._matrix()[1])

    @property
    def numClasses(self) -> int:
        return 2 if self._B is None else int(self._B.shape[0])

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
        raw, _, _ = _predict_block(value.toArray()[None, :], *self._matrix(), self.getThreshold())
        return DenseVector(raw[0])

    def predictProbability(self, value: Vector) -> DenseVector:
        _, prob, _ = _predict_block(value.toArray()[None, :], *self._matrix(), self.getThreshold())
        return DenseVector(prob[0])

    def predict(self, value: Vector) -> float:
        return float(_predict_block(value.toArray()[None, :], *self._matrix(), self.getThreshold())[2][0])

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
        B, bvec = self._matrix()
        thr = self.getThreshold()
        d = B.shape[1]
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
            raw, prob, pred = _predict_block(X, B, bvec, thr)
            cols = []
            for k in kinds:
                if k == "rawPredictionCol":
                    cols.append(dense_to_vectors(raw))
                elif k == "probabilityCol":
                    cols.append(dense_to_vectors(prob))
                else:
                    cols.append(pa.array(pred))
            return pa.StructArray.from_arrays(cols, names=[f.name for f in ret.fields])

        udf = vector_arrow_udf(dataset.sparkSession, predict_batch, ret)
        tmp = "__sparkml_scale_lr_out"
        out = dataset.select("*", udf(F.col(fcol)).alias(tmp))
        return out.select(
            *[F.col(f"`{c}`") for c in dataset.columns],
            *[F.col(f"{tmp}.c{i}").alias(name) for i, (name, _) in enumerate(outputs)],
        )
