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
from pyspark.ml.linalg import DenseMatrix, DenseVector, Matrix, SparseMatrix, SparseVector, Vector, VectorUDT
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import (
    HasAggregationDepth,
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
    HasStandardization,
    HasThreshold,
    HasTol,
    HasWeightCol,
    HasSeed,
)
from pyspark.sql import types as T
import scipy.sparse as sp

from ..core.allreduce import python_memory_per_task, run_barrier, task_slots, wait_for_slots
from ..core.arrow import VectorColumnError, dense_to_vectors, map_valid, vectors_to_block
from ..core.blocks import iter_blocks, make_blocks
from ..core.mapreduce import tree_aggregate
from ..core.linear import LinearModelMixin
from ..core.persistence import ParamsReadWrite
from ..core.lineage import RecordsLineage
from ..core.session import vector_arrow_udf
from ..core.schema import check_new_column, check_numeric_column, check_vector_column

__all__ = [
    "LogisticRegression",
    "LogisticRegressionModel",
    "LogisticRegressionSummary",
    "LogisticRegressionTrainingSummary",
    "BinaryLogisticRegressionSummary",
    "BinaryLogisticRegressionTrainingSummary",
]

log = logging.getLogger(__name__)

#: Iterations over which the decrease of the objective is compared with ``tol`` (Breeze's 20).
STOP_WINDOW = 20
#: Values of the ``solver`` param.
SOLVERS = ("auto", "mapreduce", "allreduce", "sgd")
#: Most classes a multinomial fit accepts (labels 0 .. MAX_CLASSES - 1).
MAX_CLASSES = 1000
#: Largest ``(numClasses x numFeatures)^2`` (float64 entries) for which an L2 fit computes the
#: feature correlation matrix (one extra pass over the cached blocks) and preconditions
#: L-BFGS with the Cholesky factor of the start's Hessian; larger problems use the diagonal one.
FULL_PRECONDITIONER_ENTRIES = 1 << 20


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
    HasSeed,
    HasMaxBlockSizeInMB,
):
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
        "'mapreduce' (one tree-aggregated Spark job per evaluation) or 'allreduce' (one barrier stage)",
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

    def getSolver(self) -> str:
        return self.getOrDefault(self.solver)

    def getBatchSize(self) -> int:
        return self.getOrDefault(self.batchSize)

    def getStepSize(self) -> float:
        return self.getOrDefault(self.stepSize)

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

    def _weight_col(self) -> Optional[str]:
        return self.getWeightCol() if self.isDefined(self.weightCol) and self.getWeightCol() else None

    def _check_schema(self, schema: T.StructType) -> None:
        check_vector_column(schema, self.getFeaturesCol(), "featuresCol")
        check_numeric_column(schema, self.getLabelCol(), "labelCol")
        if self._weight_col():
            check_numeric_column(schema, self._weight_col(), "weightCol")

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
        if not (self.getMaxBlockSizeInMB() >= 0 and np.isfinite(self.getMaxBlockSizeInMB())):
            raise ValueError(f"param 'maxBlockSizeInMB' must be >= 0 (0: automatic), got {self.getMaxBlockSizeInMB()}")
        if self.getAggregationDepth() < 1:
            raise ValueError(f"param 'aggregationDepth' must be >= 1, got {self.getAggregationDepth()}")
        if self.getSolver() not in SOLVERS:
            raise ValueError(f"param 'solver' must be one of {', '.join(map(repr, SOLVERS))}, got {self.getSolver()!r}")
        for name in ("batchSize", "epochs"):
            if self.getOrDefault(name) < 1:
                raise ValueError(f"param {name!r} must be >= 1, got {self.getOrDefault(name)}")
        if not (self.getOrDefault("stepSize") > 0 and np.isfinite(self.getOrDefault("stepSize"))):
            raise ValueError(f"param 'stepSize' must be > 0, got {self.getOrDefault('stepSize')}")
        if self.isSet(self.thresholds):
            t = np.asarray(self.getOrDefault(self.thresholds), dtype=np.float64)
            if t.size < 2 or np.any(~np.isfinite(t)) or np.any(t < 0) or (t == 0).sum() > 1:
                raise ValueError(
                    f"param 'thresholds' must hold >= 2 finite values >= 0 with at most one 0, got {t.tolist()}"
                )
        if self._has_bounds():
            if self.getRegParam() > 0 and self.getElasticNetParam() > 0:
                raise ValueError("bound-constrained fitting (lowerBoundsOn*/upperBoundsOn*) supports L2 only: "
                                 "set elasticNetParam=0 or regParam=0")
            if self._has_intercept_bounds() and not self.getFitIntercept():
                raise ValueError("lowerBoundsOnIntercepts/upperBoundsOnIntercepts need fitIntercept=True")
        if self.getFamily() not in ("auto", "binomial", "multinomial"):
            raise ValueError(
                f"param 'family' must be 'auto', 'binomial' or 'multinomial', got {self.getFamily()!r}"
            )


class LogisticRegression(RecordsLineage, _LogisticRegressionParams, Estimator, ParamsReadWrite):
    """Binomial logistic regression, a drop-in for ``pyspark.ml.classification.LogisticRegression``.

    Params (Spark's names and defaults): ``featuresCol`` ("features", vector
    of float64, dense or sparse, size ``d``), ``labelCol`` ("label", numeric
    0/1), ``predictionCol``, ``probabilityCol``, ``rawPredictionCol``,
    ``maxIter`` (100), ``regParam`` (0.0), ``elasticNetParam`` (0.0),
    ``tol`` (1e-6; stops when the gradient norm is at most ``tol`` times the objective, as MLlib), ``fitIntercept`` (True),
    ``standardization`` (True), ``threshold`` (0.5), ``weightCol`` (unset: all
    rows weigh 1), ``aggregationDepth`` (2), ``family`` ("auto"/"binomial"),
    ``maxBlockSizeInMB`` (0.0 = automatic, 2 MiB: the size of the cached numpy blocks
    the training rows are stacked into).

    The objective and optimizer are described in the module docstring; the
    fitted coefficients equal MLlib's on the same data and params.

    Raises
    ------
    ValueError
        missing columns, empty input, null feature vectors or vectors of
        different sizes (``VectorColumnError``, a ``ValueError`` subclass; also
        when the sizes differ between partitions), null/NaN/inf labels, labels
        other than 0/1 (``family="binomial"``) or than class indices 0..999,
        NaN/inf features, negative/NaN/null weights, a single class, params
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
        thresholds: Optional[List[float]] = None,
        lowerBoundsOnCoefficients=None,
        upperBoundsOnCoefficients=None,
        lowerBoundsOnIntercepts=None,
        upperBoundsOnIntercepts=None,
        solver: str = "auto",
        batchSize: int = 256,
        stepSize: float = 0.5,
        epochs: int = 5,
        seed: int = 42,
        maxBlockSizeInMB: float = 0.0,
    ) -> None:
        super().__init__()
        self._initial_model: Optional["LogisticRegressionModel"] = None
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
        thresholds: Optional[List[float]] = None,
        lowerBoundsOnCoefficients=None,
        upperBoundsOnCoefficients=None,
        lowerBoundsOnIntercepts=None,
        upperBoundsOnIntercepts=None,
        solver: str = "auto",
        batchSize: int = 256,
        stepSize: float = 0.5,
        epochs: int = 5,
        seed: int = 42,
        maxBlockSizeInMB: float = 0.0,
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

    def setSolver(self, value: str) -> "LogisticRegression":
        return self._set(solver=value)

    def setBatchSize(self, value: int) -> "LogisticRegression":
        return self._set(batchSize=value)

    def setStepSize(self, value: float) -> "LogisticRegression":
        return self._set(stepSize=value)

    def setEpochs(self, value: int) -> "LogisticRegression":
        return self._set(epochs=value)

    def setMaxBlockSizeInMB(self, value: float) -> "LogisticRegression":
        return self._set(maxBlockSizeInMB=value)

    def setSeed(self, value: int) -> "LogisticRegression":
        return self._set(seed=value)

    def setThresholds(self, value: List[float]) -> "LogisticRegression":
        return self._set(thresholds=value)

    def setLowerBoundsOnCoefficients(self, value) -> "LogisticRegression":
        return self._set(lowerBoundsOnCoefficients=value)

    def setUpperBoundsOnCoefficients(self, value) -> "LogisticRegression":
        return self._set(upperBoundsOnCoefficients=value)

    def setLowerBoundsOnIntercepts(self, value) -> "LogisticRegression":
        return self._set(lowerBoundsOnIntercepts=value)

    def setUpperBoundsOnIntercepts(self, value) -> "LogisticRegression":
        return self._set(upperBoundsOnIntercepts=value)

    def setInitialModel(self, model: Optional["LogisticRegressionModel"]) -> "LogisticRegression":
        """Warm start: begin the optimization at ``model``'s coefficients and intercepts
        (a fitted ``LogisticRegressionModel`` of this package or of pyspark with the same
        number of features and classes; ``None`` clears it).  Not saved with the estimator."""
        if model is not None and not hasattr(model, "coefficientMatrix"):
            raise TypeError(f"initialModel must be a fitted LogisticRegressionModel, got {type(model).__name__}")
        self._initial_model = model
        return self

    def _initial_arrays(self, K: int, d: int):
        m = self._initial_model
        B = np.asarray(m.coefficientMatrix.toArray(), dtype=np.float64)
        b = np.asarray(m.interceptVector.toArray(), dtype=np.float64)
        if B.shape != (K, d) or b.shape != (K,):
            raise ValueError(
                f"initialModel has {B.shape[0]} x {B.shape[1]} coefficients, this fit needs {K} x {d} "
                f"({'multinomial' if K > 1 else 'binomial'}, numFeatures {d})"
            )
        return B, b

    def _fit(self, dataset) -> "LogisticRegressionModel":
        self._validate_params()
        self._check_schema(dataset.schema)
        t0 = time.perf_counter()
        fcol, lcol, wcol = self.getFeaturesCol(), self.getLabelCol(), self._weight_col()
        family = self.getFamily()
        slots = 2 if family == "binomial" else MAX_CLASSES
        data = make_blocks(dataset, fcol, lcol, wcol, num_label_slots=slots, depth=self.getAggregationDepth(),
                           block_bytes=int(self.getMaxBlockSizeInMB() * (1 << 20)))
        try:
            stats = data.stats
            _check_stats(stats, fcol, lcol, wcol, family)
            present = np.flatnonzero(stats.label_counts > 0)
            num_classes = max(int(present[-1]) + 1, 2)
            multinomial = family == "multinomial" or (family == "auto" and num_classes > 2)
            K = num_classes if multinomial else 1
            solver, world, why = self._choose_solver(dataset.sparkSession, stats)
            scatter = None
            if solver != "sgd" and self.getMaxIter() > 0 and self._wants_correlation(K, stats.num_features):
                scatter = _scatter(data.blocks, stats.num_features, self.getAggregationDepth(), stats.num_partitions)
            obj = self._objective(stats, K, num_classes, scatter)
            log.info("LogisticRegression: solver %s (%s)", solver, why)
            backend = None
            sgd = None
            if solver == "sgd":
                sgd = _SGDState.from_objective(obj)
                history = _sgd_epochs(data.blocks, sgd, self.getEpochs(), self.getBatchSize(), self.getStepSize(),
                                      self.getSeed(), self.getAggregationDepth(), stats.num_partitions)
                coef, intercept = sgd.params()
            elif solver == "allreduce":
                x, history, nit, nfev, backend = _fit_allreduce(data.blocks, obj, world, stats.num_partitions)
            else:
                x, history, nit, nfev = _fit_mapreduce(data.blocks, obj, self.getAggregationDepth(),
                                                       stats.num_partitions)
            if solver != "sgd":
                log.info("LogisticRegression: %d iterations, %d evaluations", nit, nfev)
                coef, intercept = obj.finish(x)
        finally:
            data.unpersist()
        if multinomial:
            model = LogisticRegressionModel._create_multinomial(coef, intercept)
        else:
            model = LogisticRegressionModel._create(coef[0], float(intercept[0]))
        model._sgd = sgd
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
            solverUsed=solver,
            allreduceBackend=backend,
        )
        return model

    def _choose_solver(self, spark, stats):
        """``(solver, barrier tasks, reason)`` for this fit (see the ``solver`` param)."""
        solver = self.getSolver()
        if solver in ("mapreduce", "sgd"):
            if solver == "sgd" and self._has_bounds():
                raise ValueError("lowerBoundsOn*/upperBoundsOn* params are not supported with solver='sgd'")
            return solver, 0, f"solver={solver!r}"
        nparts = stats.num_partitions
        if solver == "allreduce":
            # One barrier task per slot at most: Spark refuses a larger barrier stage (SPARK-24819),
            # and in Spark 4.x that refusal shuts the SparkContext down.
            slots = wait_for_slots(spark, 1)  # as many tasks as there are slots now, at least one
            if not slots:
                raise ValueError(
                    "param 'solver' is 'allreduce' but "
                    + ("no executor task slots are registered" if slots == 0 else
                       "the cluster's task slots cannot be told (dynamic allocation, or no "
                       "spark.executor.instances/spark.executor.cores and no reachable driver UI)")
                    + ": its barrier stage needs all its tasks running at once; use solver='mapreduce' "
                    "(or 'auto')")
            world = max(1, min(nparts, slots))
            return "allreduce", world, f"solver='allreduce', {world} barrier task(s) of {slots} slot(s)"
        slots = task_slots(spark)
        world = max(1, min(nparts, slots) if slots else nparts)
        per_row = (stats.nnz / max(stats.count, 1)) * 12.0 if stats.sparse else stats.num_features * 8.0
        need = int(2 * (per_row + 16) * stats.count / world)  # blocks + their concatenation
        if slots is None:
            return "mapreduce", 0, "auto: task slots unknown (dynamic allocation or no executor settings)"
        budget = python_memory_per_task(spark, slots)
        if need > budget:
            return "mapreduce", 0, f"auto: ~{need >> 20} MiB per task exceeds the ~{budget >> 20} MiB Python budget"
        return "allreduce", world, f"auto: {world} barrier task(s) of {slots} slot(s), ~{need >> 20} MiB per task"

    def _wants_correlation(self, K: int, d: int) -> bool:
        """Whether this fit preconditions with the feature correlation matrix (L2 only, no bounds,
        ``(K d)^2 <= FULL_PRECONDITIONER_ENTRIES``)."""
        l1 = self.getRegParam() * self.getElasticNetParam()
        return l1 == 0 and not self._has_bounds() and (K * d) ** 2 <= FULL_PRECONDITIONER_ENTRIES

    def _objective(self, stats, K: int, num_classes: int, scatter=None) -> "_Objective":
        """The problem in the optimizer's space, as a picklable :class:`_Objective`; ``scatter``
        (``sum_i w_i x_i x_i^T``, ``(d, d)``) turns on the full preconditioner."""
        d = stats.num_features
        std = stats.std
        inv_std = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 0.0)
        fit_b = self.getFitIntercept()
        lam = self.getRegParam()
        alpha = self.getElasticNetParam()
        if self.getStandardization():
            pen2 = np.ones(d)
            pen1 = np.ones(d)
        else:  # MLlib: the penalty applies to the unscaled coefficients
            pen2 = inv_std**2
            pen1 = inv_std
        bounds = self._coefficient_bounds(K, d)
        # Centring (below) makes intercept bounds non-box constraints: no centring then.
        centre = fit_b and not self._has_intercept_bounds()
        mu = stats.mean if centre else np.zeros(d)
        counts = stats.label_counts[:num_classes]
        if not fit_b:
            b0 = np.zeros(K)
        elif K > 1:
            raw = np.log1p(counts)
            b0 = raw - raw.mean()
        else:
            p1 = counts[1] / stats.weight_sum
            b0 = np.array([float(np.log(p1 / (1.0 - p1)))])
        init = None
        if getattr(self, "_initial_model", None) is not None:
            init = self._initial_arrays(K, d)
        # Curvature of the mean log-loss per class at the start (class priors p: p (1 - p)), the
        # scale of the data part of the Hessian's diagonal in the standardized space.
        prior = counts / max(float(counts.sum()), 1e-300)
        if K == 1:
            prior = prior[1:2]
        prior = np.clip(prior, 1e-3, 1.0)
        curvature = prior * (1.0 - prior) if K == 1 else np.diag(prior) - np.outer(prior, prior)
        corr = None
        if scatter is not None:
            # Weighted second moments of the standardized (centred when fitting an intercept) features.
            W = stats.weight_sum
            corr = (scatter / W - np.outer(mu, mu)) * np.outer(inv_std, inv_std)
        return _Objective(
            K=K, d=d, inv_std=inv_std, std=std, mu=mu, fit_b=fit_b, l1=lam * alpha, l2=lam * (1.0 - alpha),
            pen1=np.tile(pen1, K), pen2=np.tile(pen2, K), multinomial=K > 1 or num_classes > 2,
            W=stats.weight_sum, b0=b0, init=init, coef_bounds=bounds, tol=self.getTol(),
            max_iter=self.getMaxIter(), centre_result=lam == 0.0, curvature=curvature, corr=corr,
        )

class _Objective:
    """Penalised objective and L-BFGS-B driver in the optimizer's space (picklable: it runs
    on the driver for map-reduce and on every barrier task for allreduce).

    Variables: ``[u (K*d), b_c (K if fitIntercept)]``, or with L1
    ``[u+ (K*d), u- (K*d), b_c]`` (``u = u+ - u-``, both bounded below by 0), where
    ``u = beta_s * D``: ``beta_s = coef * std`` are the coefficients in the standardized
    space (as MLlib optimizes) and ``b_c = b + coef . mu`` the centred intercepts (margins
    are ``sum_j beta_s_j (x_j - mu_j) / std_j + b_c``, so sparse blocks stay sparse).

    ``D`` is a diagonal preconditioner: ``D_j = sqrt((h + l2 pen2_j) / (h + l2))`` with
    ``h = p (1 - p)`` the log-loss curvature at the class prior.  With
    ``standardization=True`` every ``pen2_j`` is 1 and ``D = 1`` (MLlib's own space).  With
    ``standardization=False`` the L2 penalty in the standardized space is
    ``l2 beta_s_j^2 / std_j^2``, whose weights span the squared ratio of the feature scales
    (1e10 on breast_cancer): the Hessian's diagonal then does too, and L-BFGS (ours and
    MLlib's) stalls far from the optimum within maxIter.  ``D`` equalizes that diagonal, so
    the conditioning no longer depends on the feature scales.

    With ``corr`` (the ``(d, d)`` second moments of the standardized features; L2 fits
    without bounds) the preconditioner is full: ``u = L^T vec(beta_s)`` with ``L`` the
    Cholesky factor of the Hessian at the start, ``(A kron corr + l2 diag(pen2)) / c``
    (``A = p (1 - p)`` binomial, ``diag(p) - p p^T`` multinomial, ``c = mean(diag(A)) + l2``),
    so that strongly correlated features (breast_cancer's radius, perimeter and area) and
    the softmax's coupled classes do not slow L-BFGS down either.  ``sums(coef, b)`` must
    return the raw weighted sums ``(loss, d loss / d b (K,), d loss / d coef (K, d))``.
    """

    def __init__(self, *, K, d, inv_std, std, mu, fit_b, l1, l2, pen1, pen2, multinomial, W, b0, init,
                 coef_bounds, tol, max_iter, centre_result, curvature=None, corr=None):
        self.K, self.d = K, d
        A = np.eye(K) * 0.25 if curvature is None else np.atleast_2d(np.asarray(curvature, dtype=np.float64))
        h = np.repeat(np.diag(A), d)
        self.D = np.sqrt((h + l2 * pen2) / (h + l2))
        # ``corr`` is given only for L2 fits without bounds (``LogisticRegression._wants_correlation``).
        self.L = None if corr is None else _cholesky_start(corr, A, l2, pen2)
        self.inv_std, self.mu = inv_std, mu
        self.fit_b, self.l1, self.l2 = fit_b, l1, l2
        self.pen1, self.pen2 = pen1, pen2
        self.multinomial = multinomial
        self.W = W
        self.tol, self.max_iter = tol, max_iter
        self.centre_result = centre_result
        self.bounded = coef_bounds is not None
        self.use_l1 = l1 > 0
        n = self.n = K * d
        self.nb = K if fit_b else 0
        nvar = (2 * n if self.use_l1 else n) + self.nb
        lo = np.full(nvar, -np.inf)
        hi = np.full(nvar, np.inf)
        if self.use_l1:
            lo[: 2 * n] = 0.0
        if coef_bounds is not None:
            lbB, ubB, lbb, ubb = coef_bounds
            scale = np.tile(std, K)
            ok = scale > 0
            lo[:n][ok] = (lbB.ravel() * scale * self.D)[ok]
            hi[:n][ok] = (ubB.ravel() * scale * self.D)[ok]
            if fit_b:
                lo[nvar - K :] = lbb
                hi[nvar - K :] = ubb
        self.lo, self.hi = lo, hi
        x0 = np.zeros(nvar)
        if fit_b:
            x0[nvar - self.nb :] = b0
        if init is not None:
            coef0, b_init = init
            beta0 = self._to_u(coef0 * std)
            if self.use_l1:
                x0[:n], x0[n : 2 * n] = np.maximum(beta0, 0.0), np.maximum(-beta0, 0.0)
            else:
                x0[:n] = beta0
            if fit_b:
                x0[nvar - K :] = b_init + coef0 @ mu
        self.x0 = np.clip(x0, lo, hi)  # MLlib moves the start inside the bounds

    def _to_u(self, beta: np.ndarray) -> np.ndarray:
        """Standardized-space coefficients ``(K, d)`` -> the optimizer's variables ``(K*d,)``."""
        if self.L is None:
            return beta.ravel() * self.D
        return self.L.T @ beta.ravel()

    def _grad_u(self, g: np.ndarray) -> np.ndarray:
        """A gradient with respect to ``beta_s`` ``(K*d,)`` -> with respect to ``u``."""
        if self.L is None:
            return g / self.D
        from scipy.linalg import solve_triangular

        return solve_triangular(self.L, g, lower=True)

    def _grad_beta(self, gu: np.ndarray) -> np.ndarray:
        """A gradient with respect to ``u`` ``(K*d,)`` -> with respect to ``beta_s`` (for the stop test)."""
        if self.L is None:
            return gu * self.D
        return self.L @ gu

    def unpack(self, x: np.ndarray):
        n = self.n
        u = x[:n] - x[n : 2 * n] if self.use_l1 else x[:n]
        b = x[len(x) - self.nb :] if self.fit_b else np.zeros(self.K)
        if self.L is None:
            return (u / self.D).reshape(self.K, self.d), b
        from scipy.linalg import solve_triangular

        return solve_triangular(self.L, u, lower=True, trans="T").reshape(self.K, self.d), b

    def value_grad(self, x: np.ndarray, sums):
        n = self.n
        beta, b_c = self.unpack(x)
        coef = beta * self.inv_std
        loss, gb, g = sums(coef, b_c - coef @ self.mu)
        W = self.W
        f = loss / W
        g = (g * self.inv_std - np.outer(gb, self.mu * self.inv_std)) / W
        bf = beta.ravel()
        f += 0.5 * self.l2 * float(np.sum(self.pen2 * bf * bf))
        g = g.ravel() + self.l2 * self.pen2 * bf
        if self.use_l1:
            f += self.l1 * float(np.sum(self.pen1 * (x[:n] + x[n : 2 * n]) / self.D))
            grad = np.concatenate([g + self.l1 * self.pen1, -g + self.l1 * self.pen1]) / np.tile(self.D, 2)
        else:
            grad = self._grad_u(g)
        if self.fit_b:
            grad = np.concatenate([grad, gb / W])
        return f, grad

    def minimize(self, sums):
        """L-BFGS-B from ``x0`` with MLlib's (Breeze's) stop rule; returns ``(x, history, nit, nfev)``."""
        from scipy.optimize import minimize

        last: Dict[str, np.ndarray] = {}
        box = bool(np.isfinite(self.lo).any() or np.isfinite(self.hi).any())

        def fun(x):
            f, g = self.value_grad(x, sums)
            last["x"], last["g"] = x.copy(), g
            return f, g

        history: List[float] = [float(fun(self.x0)[0])]
        tol = self.tol
        n = self.n

        def to_beta(g):
            if self.use_l1:
                return np.concatenate([g[:n] * self.D, g[n : 2 * n] * self.D, g[2 * n :]])
            return np.concatenate([self._grad_beta(g[:n]), g[n:]])

        def callback(intermediate_result):
            # The norm of the (projected) gradient is at most max(tol * f, 1e-8), or the objective
            # fell by at most tol * |f0| over the last STOP_WINDOW iterations.
            x = intermediate_result.x
            f = float(intermediate_result.fun)
            history.append(f)
            log.info("LogisticRegression: iteration %d objective %.10g", len(history) - 1, f)
            if np.array_equal(last.get("x"), x):
                g = last["g"]
                if box:  # projected gradient: no descent through an active bound
                    g = np.where(((x <= self.lo) & (g > 0)) | ((x >= self.hi) & (g < 0)), 0.0, g)
                if np.linalg.norm(to_beta(g)) <= max(tol * f, 1e-8):  # in the standardized space
                    raise StopIteration
            if len(history) > STOP_WINDOW and max(history[-STOP_WINDOW:]) - f <= tol * abs(history[0]):
                raise StopIteration

        if self.max_iter == 0:
            return self.x0, history, 0, 1
        bounds = list(zip(np.where(np.isfinite(self.lo), self.lo, None), np.where(np.isfinite(self.hi), self.hi, None))) if box else None
        res = minimize(fun, self.x0, jac=True, method="L-BFGS-B", bounds=bounds, callback=callback,
                       options={"maxiter": self.max_iter, "ftol": 0.0, "gtol": 1e-12,
                                "maxfun": self.max_iter * 20 + 20, "maxcor": 10})
        return res.x, history, int(res.nit), int(res.nfev) + 1

    def finish(self, x: np.ndarray):
        """``(coef (K, d), intercept (K,))`` in the original space, reported as MLlib does."""
        beta, b_c = self.unpack(x)
        coef = beta * self.inv_std
        intercept = b_c - coef @ self.mu
        if self.multinomial and not self.bounded:
            # Without regularization softmax coefficients are identifiable only up to a constant
            # per feature: MLlib (after glmnet) reports the class-mean-centred ones; the
            # intercepts are always centred.
            if self.centre_result:
                coef = coef - coef.mean(axis=0, keepdims=True)
            if self.fit_b:
                intercept = intercept - intercept.mean()
        return coef, intercept


def _cholesky_start(corr: np.ndarray, A: np.ndarray, l2: float, pen2: np.ndarray):
    """Lower Cholesky factor of ``(A kron corr + l2 diag(pen2)) / c``, the Hessian at the start
    in the standardized space, with ``c = mean(diag(A)) + l2`` (its diagonal with
    standardization on; then uncorrelated features give ``L = I``, MLlib's own space); rows of
    constant features (zero in ``corr``) get 1 on the diagonal, and a small ridge keeps it positive definite (the softmax
    is flat along ``1 kron v`` without L2).  ``None`` when it still is not (then the diagonal
    preconditioner is used)."""
    H = np.kron(A, corr) + np.diag(l2 * pen2)
    n = H.shape[0]
    diag = np.diag(H).copy()
    scale = float(diag.max(initial=0.0))
    if not np.isfinite(scale) or scale <= 0:
        return None
    dead = diag <= 1e-12 * scale
    H[dead, :] = 0.0
    H[:, dead] = 0.0
    c = float(np.mean(np.diag(A))) + l2
    H[np.arange(n), np.arange(n)] = np.where(dead, c, diag + 1e-6 * c)
    try:
        return np.linalg.cholesky(H / c)
    except np.linalg.LinAlgError:
        return None


def _scatter(blocks_df, d: int, depth: int, num_partitions: int) -> np.ndarray:
    """``sum_i w_i x_i x_i^T`` ``(d, d)`` over the cached training blocks (one Spark job)."""

    def partial(batches):
        S = np.zeros((d, d))
        for X, _, w in iter_blocks(batches):
            if X.shape[0] == 0:
                continue
            if sp.issparse(X):
                S += np.asarray((X.T @ sp.diags(w) @ X).todense())
            else:
                S += X.T @ (X * w[:, None])
        return [S]

    arrays, _ = tree_aggregate(blocks_df, partial, depth=depth, num_partitions=num_partitions)
    return arrays[0]


def _block_sums(blocks, coef: np.ndarray, b: np.ndarray, multinomial: bool) -> List[np.ndarray]:
    """Raw weighted sums ``[loss (1,), d/db (K,), d/dcoef (K, d)]`` over ``(X, y, w)`` blocks."""
    K, d = coef.shape
    loss = 0.0
    g = np.zeros((K, d))
    gb = np.zeros(K)
    for X, y, w in blocks:
        if X.shape[0] == 0:
            continue
        M = np.asarray(X @ coef.T) + b  # (n, K)
        if multinomial:
            lse = logsumexp(M, axis=1)
            yi = y.astype(np.int64)
            rows = np.arange(len(yi))
            loss += float(w @ (lse - M[rows, yi]))
            R = np.exp(M - lse[:, None])
            R[rows, yi] -= 1.0
            R *= w[:, None]
        else:
            m = M[:, 0]
            loss += float(w @ (np.logaddexp(0.0, m) - y * m))  # log(1 + e^m) - y m, stable
            R = (w * (_sigmoid(m) - y))[:, None]
        g += np.asarray(X.T @ R).T
        gb += R.sum(axis=0)
    return [np.array([loss]), gb, g]


def _concat_blocks(blocks, d: int):
    """One ``(X, y, w)`` from a partition's blocks (CSR if any block is sparse)."""
    Xs, ys, ws = [], [], []
    for X, y, w in blocks:
        Xs.append(X)
        ys.append(y)
        ws.append(w)
    if not Xs:
        return np.zeros((0, d)), np.zeros(0), np.zeros(0)
    if any(sp.issparse(X) for X in Xs):
        X = sp.vstack([sp.csr_matrix(X) for X in Xs], format="csr")
    else:
        X = np.vstack(Xs) if len(Xs) > 1 else np.array(Xs[0])
    return X, np.concatenate(ys), np.concatenate(ws)


def _fit_mapreduce(blocks_df, obj: _Objective, depth: int, num_partitions: int):
    """One tree-aggregated Spark job per loss/gradient evaluation; the optimizer runs on the driver."""
    multinomial = obj.multinomial

    def sums(coef, b):
        def partial(batches):
            return _block_sums(iter_blocks(batches), coef, b, multinomial)

        arrays, _ = tree_aggregate(blocks_df, partial, depth=depth, num_partitions=num_partitions)
        return float(arrays[0][0]), arrays[1], arrays[2]

    return obj.minimize(sums)


_BACKENDS = {0: "local", 1: "gloo", 2: "spark"}
_BACKEND_CODES = {v: k for k, v in _BACKENDS.items()}


def _fit_allreduce(blocks_df, obj: _Objective, world: int, num_partitions: int):
    """One barrier stage of ``world`` tasks: each decodes its blocks once, then every
    evaluation is a local gradient plus an allreduce; the optimizer runs on every rank."""
    d, multinomial = obj.d, obj.multinomial

    def task(batches, comm):
        t0 = time.perf_counter()
        data = _concat_blocks(iter_blocks(batches), d)
        t_load = time.perf_counter() - t0

        def sums(coef, b):
            total = comm.allreduce(_block_sums([data], coef, b, multinomial))
            return float(total[0][0]), total[1], total[2]

        x, history, nit, nfev = obj.minimize(sums)
        code = _BACKEND_CODES[comm.backend]
        return [x, np.asarray(history), np.array([nit, nfev, code, t_load, time.perf_counter() - t0])]

    results = run_barrier(blocks_df, world, task, num_partitions)
    x, history, info = results[0]
    for r in results[1:]:
        if r is not None and not np.array_equal(r[0], x):
            raise RuntimeError("allreduce solver: the ranks' iterates differ (non-deterministic reduction)")
    log.info("LogisticRegression allreduce: %d tasks, backend %s, load %.2f s, total %.2f s",
             world, _BACKENDS[int(info[2])], info[3], info[4])
    return x, list(history), int(info[0]), int(info[1]), _BACKENDS[int(info[2])]


class _SGDState:
    """State of AdaGrad mini-batch training in the optimizer's (scaled, centred) space:
    ``beta (K, d)``, ``b (K,)`` and their squared-gradient accumulators ``G``, ``Gb``; the
    frozen feature scaling ``mu``, ``inv_std`` and penalty weights; counters."""

    ARRAYS = ("beta", "b", "G", "Gb", "mu", "inv_std", "pen1", "pen2", "scalars")

    def __init__(self, beta, b, mu, inv_std, pen1, pen2, l1, l2, fit_b, multinomial, G=None, Gb=None,
                 epochs_done=0, steps=0):
        self.beta, self.b = np.array(beta, dtype=np.float64), np.array(b, dtype=np.float64)
        self.G = np.zeros_like(self.beta) if G is None else np.array(G, dtype=np.float64)
        self.Gb = np.zeros_like(self.b) if Gb is None else np.array(Gb, dtype=np.float64)
        self.mu, self.inv_std = mu, inv_std
        self.pen1, self.pen2 = pen1.reshape(self.beta.shape), pen2.reshape(self.beta.shape)
        self.l1, self.l2 = l1, l2
        self.fit_b, self.multinomial = fit_b, multinomial
        self.epochs_done, self.steps = epochs_done, steps

    @classmethod
    def from_objective(cls, obj: "_Objective") -> "_SGDState":
        beta, b = obj.unpack(obj.x0)
        return cls(beta, b, obj.mu, obj.inv_std, obj.pen1, obj.pen2, obj.l1, obj.l2, obj.fit_b, obj.multinomial)

    def params(self):
        """``(coef (K, d), intercept (K,))`` in the original space."""
        coef = self.beta * self.inv_std
        return coef, self.b - coef @ self.mu

    def penalty(self) -> float:
        return float(0.5 * self.l2 * np.sum(self.pen2 * self.beta**2) + self.l1 * np.sum(self.pen1 * np.abs(self.beta)))

    def copy(self) -> "_SGDState":
        return _SGDState.from_arrays(self.to_arrays())

    def to_arrays(self) -> Dict[str, np.ndarray]:
        scalars = np.array([self.l1, self.l2, float(self.fit_b), float(self.multinomial), self.epochs_done,
                            self.steps], dtype=np.float64)
        vals = dict(beta=self.beta, b=self.b, G=self.G, Gb=self.Gb, mu=self.mu, inv_std=self.inv_std,
                    pen1=self.pen1, pen2=self.pen2, scalars=scalars)
        return {f"sgd_{k}": np.array(v) for k, v in vals.items()}

    @classmethod
    def from_arrays(cls, arrays: Dict[str, np.ndarray]) -> "_SGDState":
        a = {k[4:]: np.asarray(v, dtype=np.float64) for k, v in arrays.items() if k.startswith("sgd_")}
        l1, l2, fit_b, multinomial, epochs_done, steps = a["scalars"].tolist()
        return cls(a["beta"], a["b"], a["mu"], a["inv_std"], a["pen1"], a["pen2"], l1, l2, bool(fit_b),
                   bool(multinomial), a["G"], a["Gb"], int(epochs_done), int(steps))


#: AdaGrad's denominator guard.
_ADAGRAD_EPS = 1e-8


def _sgd_epochs(blocks_df, st: _SGDState, epochs: int, batch_size: int, step: float, seed: int, depth: int,
                num_partitions: Optional[int]) -> List[float]:
    """Train ``st`` in place by iterative parameter mixing: per epoch one Spark job in which
    every partition runs AdaGrad (Duchi, Hazan & Singer 2011; L1 by its proximal step) over
    shuffled mini-batches of its rows, starting from the current parameters; the driver
    then averages the partitions' parameters and accumulators weighted by their weight
    sums (McDonald, Hall & Mann 2010).  Returns per epoch the mean mini-batch loss seen
    during the epoch plus the penalty at its end."""
    history: List[float] = []
    mu, inv_std, pen1, pen2 = st.mu, st.inv_std, st.pen1, st.pen2
    l1, l2, fit_b, multinomial = st.l1, st.l2, st.fit_b, st.multinomial
    mu_s = mu * inv_std
    for _ in range(epochs):
        beta0, b0, G0, Gb0 = st.beta, st.b, st.G, st.Gb
        epoch = st.epochs_done

        def partial(batches):
            from pyspark import TaskContext

            ctx = TaskContext.get()
            rng = np.random.default_rng([seed, epoch, ctx.partitionId() if ctx else 0])
            beta, b, G, Gb = beta0.copy(), b0.copy(), G0.copy(), Gb0.copy()
            wsum = lsum = 0.0
            nsteps = 0
            for X, y, w in iter_blocks(batches):
                order = rng.permutation(X.shape[0])
                for s in range(0, len(order), batch_size):
                    idx = np.sort(order[s : s + batch_size])
                    wb = w[idx]
                    W = float(wb.sum())
                    if W <= 0:
                        continue
                    coef = beta * inv_std
                    loss, gb, g = _block_sums([(X[idx], y[idx], wb)], coef, b - coef @ mu, multinomial)
                    g = (g * inv_std - np.outer(gb, mu_s)) / W + l2 * pen2 * beta
                    G += g * g
                    H = np.sqrt(G) + _ADAGRAD_EPS
                    beta = beta - step * g / H
                    if l1 > 0:
                        beta = np.sign(beta) * np.maximum(np.abs(beta) - step * l1 * pen1 / H, 0.0)
                    if fit_b:
                        gb = gb / W
                        Gb += gb * gb
                        b = b - step * gb / (np.sqrt(Gb) + _ADAGRAD_EPS)
                    wsum += W
                    lsum += float(loss[0])
                    nsteps += 1
            return [wsum * beta, wsum * b, wsum * G, wsum * Gb, np.array([wsum, lsum, nsteps])]

        arrays, num_partitions = tree_aggregate(blocks_df, partial, depth=depth, num_partitions=num_partitions)
        wsum, lsum, nsteps = arrays[4]
        st.epochs_done += 1
        if wsum <= 0:
            break
        st.beta, st.b, st.G, st.Gb = (a / wsum for a in arrays[:4])
        st.steps += int(nsteps)
        history.append(lsum / wsum + st.penalty())
    return history


def _predict_block(X, B: np.ndarray, b: np.ndarray, threshold: float, thresholds: Optional[np.ndarray] = None):
    """Raw predictions, probabilities (``(n, 2)`` or ``(n, K)``) and predictions (float64) of a block.

    Binomial: prediction ``p > threshold``; multinomial: ``argmax(p)``, or with
    ``thresholds`` ``argmax(p / t)`` (``t = 0`` wins wherever ``p > 0``), as MLlib."""
    M = np.asarray(X @ B.T) + b
    if B.shape[0] == 1:
        m = M[:, 0]
        p = _sigmoid(m)
        return np.column_stack([-m, m]), np.column_stack([1.0 - p, p]), (p > threshold).astype(np.float64)
    P = np.exp(M - logsumexp(M, axis=1, keepdims=True))
    if thresholds is None:
        return M, P, np.argmax(P, axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.where(thresholds > 0, P / np.where(thresholds > 0, thresholds, 1.0),
                          np.where(P > 0, np.inf, 0.0))
    return M, P, np.argmax(scaled, axis=1).astype(np.float64)


def _compressed_matrix(B: np.ndarray) -> Matrix:
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


def _compressed_vector(v: np.ndarray) -> Vector:
    """Spark's ``Vector.compressed``: sparse when ``1.5 * (nnz + 1) < size``."""
    nz = np.flatnonzero(v)
    if 1.5 * (len(nz) + 1.0) < len(v):
        return SparseVector(len(v), nz.tolist(), v[nz].tolist())
    return DenseVector(v)


def _sigmoid(m: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(m)


def _check_stats(stats, fcol: str, lcol: str, wcol: Optional[str], family: str = "binomial",
                 need_two_classes: bool = True) -> None:
    if stats.null_vectors:
        raise VectorColumnError(f"column {fcol!r} (featuresCol) holds {stats.null_vectors} null vector(s)")
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
    if present < 2 and need_two_classes:
        only = int(np.argmax(stats.label_counts))
        raise ValueError(
            f"column {lcol!r} (labelCol) holds only label {only}: logistic regression needs two classes or more"
        )


class LogisticRegressionSummary:
    """Metrics of a model on a DataFrame, as MLlib's ``LogisticRegressionSummary``: what
    ``model.evaluate(df)`` returns (and the base of the training summary).

    Computed on first access from the model's predictions on the DataFrame
    (weighted by ``weightCol`` when set): ``predictions``, ``labels``,
    ``accuracy``, ``precisionByLabel``, ``recallByLabel`` (= ``truePositiveRateByLabel``),
    ``falsePositiveRateByLabel``, ``fMeasureByLabel(beta=1.0)`` (lists indexed by label),
    ``weightedPrecision``, ``weightedRecall``, ``weightedFMeasure(beta=1.0)``,
    ``weightedTruePositiveRate``, ``weightedFalsePositiveRate`` (all from one ``groupBy``
    job for the confusion matrix), and for binomial models ``areaUnderROC`` (Spark's
    ``BinaryClassificationEvaluator`` on the raw predictions, as MLlib's summary).  A label
    never predicted has precision 0 (MLlib's convention).  Column names: ``labelCol``,
    ``featuresCol``, ``predictionCol``, ``probabilityCol``, ``weightCol``.
    """

    def __init__(self, model=None, dataset=None, labelCol: str = "label", weightCol: Optional[str] = None,
                 numClasses: int = 2):
        self._model = model
        self._dataset = dataset
        self._lcol = labelCol
        self._wcol = weightCol
        self._k = numClasses
        self._cm: Optional[np.ndarray] = None
        self._auc: Optional[float] = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(numClasses={self._k}, labelCol={self._lcol!r})"

    @property
    def labelCol(self) -> str:
        return self._lcol

    @property
    def weightCol(self) -> Optional[str]:
        return self._wcol

    @property
    def featuresCol(self) -> str:
        self._need_data()
        return self._model.getFeaturesCol()

    @property
    def predictionCol(self) -> str:
        self._need_data()
        return self._model.getPredictionCol()

    @property
    def probabilityCol(self) -> str:
        self._need_data()
        return self._model.getProbabilityCol()

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
    def truePositiveRateByLabel(self) -> List[float]:
        return self.recallByLabel

    @property
    def falsePositiveRateByLabel(self) -> List[float]:
        """Per label: weight of the other labels' rows predicted as it / weight of the other labels' rows."""
        cm = self.confusionMatrix
        total, row, col = cm.sum(), cm.sum(axis=1), cm.sum(axis=0)
        return [float((col[k] - cm[k, k]) / (total - row[k])) if total - row[k] > 0 else 0.0
                for k in range(self._k)]

    def _label_share(self) -> np.ndarray:
        cm = self.confusionMatrix
        return cm.sum(axis=1) / cm.sum()

    @property
    def weightedPrecision(self) -> float:
        return float(self._label_share() @ np.array(self.precisionByLabel))

    @property
    def weightedRecall(self) -> float:
        return float(self._label_share() @ np.array(self.recallByLabel))

    @property
    def weightedTruePositiveRate(self) -> float:
        return self.weightedRecall

    @property
    def weightedFalsePositiveRate(self) -> float:
        return float(self._label_share() @ np.array(self.falsePositiveRateByLabel))

    def weightedFMeasure(self, beta: float = 1.0) -> float:
        return float(self._label_share() @ np.array(self.fMeasureByLabel(beta)))

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


class LogisticRegressionTrainingSummary(LogisticRegressionSummary):
    """Training summary, as MLlib's: the metrics of :class:`LogisticRegressionSummary` on the
    training DataFrame, plus, available at once: ``objectiveHistory`` (objective at the start
    and after each L-BFGS iteration), ``totalIterations`` (``len(objectiveHistory) - 1``, as
    MLlib), ``numInstances``, ``trainingSeconds``, ``solverUsed`` ("mapreduce", "allreduce" or
    "sgd"), ``allreduceBackend`` ("gloo", "spark", "local" for a single task, or None).
    """

    def __init__(self, objectiveHistory: List[float], numInstances: int, trainingSeconds: float,
                 model=None, dataset=None, labelCol: str = "label", weightCol: Optional[str] = None,
                 numClasses: int = 2, solverUsed: str = "mapreduce", allreduceBackend: Optional[str] = None):
        super().__init__(model, dataset, labelCol, weightCol, numClasses)
        self.objectiveHistory = list(objectiveHistory)
        # MLlib counts the iterations after the initial point: history length - 1.
        self.totalIterations = max(len(self.objectiveHistory) - 1, 0)
        self.solverUsed = solverUsed
        self.allreduceBackend = allreduceBackend
        self.numInstances = numInstances
        self.trainingSeconds = trainingSeconds

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(totalIterations={self.totalIterations}, "
            f"finalObjective={self.objectiveHistory[-1]:.6g}, numInstances={self.numInstances}, "
            f"solverUsed={self.solverUsed!r})"
        )


#: The summary classes of binomial models (MLlib's names).
BinaryLogisticRegressionSummary = LogisticRegressionSummary
BinaryLogisticRegressionTrainingSummary = LogisticRegressionTrainingSummary


class SGDLogisticRegression(LogisticRegression):
    """``LogisticRegression`` trained by mini-batch AdaGrad SGD (``solver='sgd'`` by default).

    For data too large to iterate L-BFGS over, or for online learning: the fitted
    ``LogisticRegressionModel`` continues training with ``partialFit(df)`` (e.g. from
    Structured Streaming's ``foreachBatch``).  Params as ``LogisticRegression``; the
    SGD ones are ``batchSize`` (256 rows), ``stepSize`` (0.5, AdaGrad's base step in the
    standardized space), ``epochs`` (5) and ``seed``.  See ``_sgd_epochs`` for the
    algorithm (AdaGrad, Duchi et al. 2011, with iterative parameter mixing, McDonald
    et al. 2010).  Bounds params are not supported.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self._setDefault(solver="sgd")
        self.setParams(**kwargs)


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
        self._sgd: Optional[_SGDState] = None  # online-training state (solver='sgd' or after partialFit)

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
            out = super()._model_arrays()
        else:
            out = {"coefficientMatrix": self._B, "interceptVector": self._b}
        if self._sgd is not None:
            out.update(self._sgd.to_arrays())
        return out

    @classmethod
    def _from_arrays(cls, arrays: Dict[str, np.ndarray], metadata: Dict[str, Any]) -> "LogisticRegressionModel":
        if "coefficientMatrix" in arrays and "interceptVector" in arrays:
            m = cls._create_multinomial(arrays["coefficientMatrix"], arrays["interceptVector"])
        else:
            m = super()._from_arrays(arrays, metadata)
        if "sgd_beta" in arrays:
            m._sgd = _SGDState.from_arrays(arrays)
        return m

    def copy(self, extra=None) -> "LogisticRegressionModel":
        that = super().copy(extra)
        that._B = None if self._B is None else self._B.copy()
        that._b = None if self._b is None else self._b.copy()
        that._sgd = None if self._sgd is None else self._sgd.copy()
        return that

    def partialFit(self, dataset, epochs: int = 1) -> "LogisticRegressionModel":
        """Continue training this model on ``dataset`` (AdaGrad mini-batch SGD, see
        ``solver='sgd'``), in place; returns ``self`` (scikit-learn's ``partial_fit``).

        ``dataset`` has this model's ``featuresCol`` (``numFeatures`` wide),
        ``labelCol`` (class indices below ``numClasses``; one class per batch is fine)
        and ``weightCol`` if set.  ``epochs`` passes over it (one Spark job each).  The
        first call on a model fitted by L-BFGS freezes the feature scaling (mean, std)
        of that call's batch; later calls reuse it, as does a model fitted with
        ``solver='sgd'``.  An empty batch (streaming micro-batches can be empty) changes
        nothing.  Hyper-parameters (``regParam``, ``elasticNetParam``, ``stepSize``,
        ``batchSize``, ``seed``) are this model's params.  Usable from Structured
        Streaming's ``foreachBatch`` (classic sessions: under Spark Connect the function
        runs in a server-side process, so save the model there).  The training summary
        is dropped (it described the earlier fit).

        Raises ``ValueError`` for bad rows (as ``fit``), labels >= ``numClasses`` or a
        different number of features, naming the column.
        """
        if epochs < 1:
            raise ValueError(f"partialFit: 'epochs' must be >= 1, got {epochs}")
        self._validate_params()
        self._check_schema(dataset.schema)
        fcol, lcol, wcol = self.getFeaturesCol(), self.getLabelCol(), self._weight_col()
        B, b = self._matrix()
        K, d = B.shape
        data = make_blocks(dataset, fcol, lcol, wcol, num_label_slots=self.numClasses,
                           depth=self.getAggregationDepth())
        try:
            stats = data.stats
            if stats.count == 0 and not stats.null_vectors:
                return self
            _check_stats(stats, fcol, lcol, wcol, "binomial" if self._B is None else "multinomial",
                         need_two_classes=False)
            if stats.num_features != d:
                raise ValueError(f"column {fcol!r} (featuresCol) has {stats.num_features} features, "
                                 f"the model has {d}")
            if self._sgd is None:
                est = LogisticRegression()
                self._copyValues(est)
                obj = est._objective(stats, K, self.numClasses)
                self._sgd = _SGDState.from_objective(obj)
                self._sgd.beta = B * stats.std
                self._sgd.b = b + B @ obj.mu
            _sgd_epochs(data.blocks, self._sgd, epochs, self.getBatchSize(), self.getStepSize(), self.getSeed(),
                        self.getAggregationDepth(), stats.num_partitions)
        finally:
            data.unpersist()
        coef, intercept = self._sgd.params()
        if self._B is None:
            self._coef, self._intercept = coef[0].copy(), float(intercept[0])
        else:
            self._B, self._b = coef, intercept
        self._summary = None
        return self

    @property
    def coefficients(self) -> Vector:
        """Binomial models: the ``d`` coefficients, in MLlib's compressed form (a ``SparseVector``
        when that is smaller, e.g. after L1 or on hashed features, else a ``DenseVector``)."""
        if self._B is not None:
            raise AttributeError("Multinomial models contain a matrix of coefficients, use coefficientMatrix instead.")
        m = self.coefficientMatrix
        if isinstance(m, SparseMatrix):
            return SparseVector(m.numCols, m.rowIndices, m.values)
        return DenseVector(self._coef)

    def __repr__(self) -> str:
        return f"LogisticRegressionModel: uid={self.uid}, numClasses={self.numClasses}, numFeatures={self.numFeatures}"

    def evaluate(self, dataset) -> LogisticRegressionSummary:
        """Metrics of this model on ``dataset`` (needs ``featuresCol`` and ``labelCol``; weighted by
        ``weightCol`` when set), as MLlib's ``evaluate``: a :class:`LogisticRegressionSummary`
        whose metrics are computed by Spark jobs on first access.  Raises ``ValueError`` naming
        a missing column, ``TypeError`` for a column of the wrong type."""
        check_vector_column(dataset.schema, self.getFeaturesCol(), "featuresCol")
        check_numeric_column(dataset.schema, self.getLabelCol(), "labelCol")
        wcol = self._weight_col()
        if wcol:
            check_numeric_column(dataset.schema, wcol, "weightCol")
        return LogisticRegressionSummary(model=self, dataset=dataset, labelCol=self.getLabelCol(),
                                         weightCol=wcol, numClasses=self.numClasses)

    @property
    def intercept(self) -> float:
        if self._B is not None:
            raise AttributeError("Multinomial models contain a vector of intercepts, use interceptVector instead.")
        return self._intercept

    @property
    def coefficientMatrix(self) -> Matrix:
        """``K x d`` (``1 x d`` when binomial), in MLlib's compressed form: the smallest of dense
        and sparse row- or column-major storage (``Matrix.compressed`` in Spark)."""
        return _compressed_matrix(self._matrix()[0])

    @property
    def interceptVector(self) -> Vector:
        """``K`` intercepts (1 when binomial), compressed as MLlib's (sparse when that is smaller)."""
        return _compressed_vector(self._matrix()[1])

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

    def setThresholds(self, value: List[float]) -> "LogisticRegressionModel":
        return self._set(thresholds=value)

    def _decision(self):
        """``(threshold, thresholds or None)`` for :func:`_predict_block`; raises ``ValueError``
        when ``thresholds`` does not have one entry per class."""
        if not self.isSet(self.thresholds):
            return self.getThreshold(), None
        t = np.asarray(self.getOrDefault(self.thresholds), dtype=np.float64)
        if t.size != self.numClasses:
            raise ValueError(f"param 'thresholds' has {t.size} value(s), the model has {self.numClasses} classes")
        if self._B is None:  # binomial: p1 / t1 > p0 / t0  <=>  p1 > t1 / (t0 + t1)
            return float(t[1] / (t[0] + t[1])), None
        return self.getThreshold(), t

    # single-vector helpers, as MLlib's model
    def predictRaw(self, value: Vector) -> DenseVector:
        raw, _, _ = _predict_block(value.toArray()[None, :], *self._matrix(), *self._decision())
        return DenseVector(raw[0])

    def predictProbability(self, value: Vector) -> DenseVector:
        _, prob, _ = _predict_block(value.toArray()[None, :], *self._matrix(), *self._decision())
        return DenseVector(prob[0])

    def predict(self, value: Vector) -> float:
        return float(_predict_block(value.toArray()[None, :], *self._matrix(), *self._decision())[2][0])

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
            fields.append(T.StructField(name, dt, True))  # null where the features are null
        return T.StructType(fields)

    def _transform(self, dataset):
        from pyspark.sql import functions as F

        self._validate_params()
        self.transformSchema(dataset.schema)
        outputs = self._outputs()
        if not outputs:
            return dataset
        B, bvec = self._matrix()
        thr, thresholds = self._decision()
        d = B.shape[1]
        fcol = self.getFeaturesCol()
        kinds = [param for _, param in outputs]
        ret = T.StructType(
            [
                T.StructField(f"c{i}", T.DoubleType() if k == "predictionCol" else VectorUDT(), True)
                for i, k in enumerate(kinds)
            ]
        )

        def predict_rows(vectors: pa.Array) -> pa.Array:
            X = vectors_to_block(vectors, fcol, size=d)
            raw, prob, pred = _predict_block(X, B, bvec, thr, thresholds)
            cols = []
            for k in kinds:
                if k == "rawPredictionCol":
                    cols.append(dense_to_vectors(raw))
                elif k == "probabilityCol":
                    cols.append(dense_to_vectors(prob))
                else:
                    cols.append(pa.array(pred))
            return pa.StructArray.from_arrays(cols, names=[f.name for f in ret.fields])

        def predict_batch(vectors: pa.Array) -> pa.Array:
            return map_valid(vectors, predict_rows)

        udf = vector_arrow_udf(dataset.sparkSession, predict_batch, ret)
        tmp = "__sparkml_scale_lr_out"
        out = dataset.select("*", udf(F.col(fcol)).alias(tmp))
        return out.select(
            *[F.col(f"`{c}`") for c in dataset.columns],
            *[F.col(f"{tmp}.c{i}").alias(name) for i, (name, _) in enumerate(outputs)],
        )
