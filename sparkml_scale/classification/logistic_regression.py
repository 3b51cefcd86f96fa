"""Logistic regression, binomial and multinomial, a drop-in for MLlib's, on the stage template.

Objective (Spark MLlib's ``LogisticRegression``)::

    f(B, b) = 1/W * sum_i w_i * loss_i
              + regParam * ((1 - alpha) / 2 * ||B_s||_2^2 + alpha * ||B_s||_1)

with the binomial or multinomial (softmax, no pivot class) log-loss of
:mod:`sparkml_scale.core.linear_loss`, ``W = sum_i w_i``, ``alpha = elasticNetParam`` and
``B_s = B * std`` the coefficients in the standardized feature space (``std`` the unbiased
weighted standard deviation of each feature); with ``standardization=False`` the penalty
applies to ``B`` itself, as in MLlib.  Intercepts are never penalized; features with zero
variance get zero coefficients.  Multinomial results are reported as MLlib does: intercepts
centred to mean 0 and, without regularization, coefficients centred across classes (glmnet).

Solvers (param ``solver``): L-BFGS-B (:mod:`sparkml_scale.core.optim.lbfgs`) with one Spark
job per evaluation over cached numpy blocks (``"mapreduce"``) or one barrier stage iterating with
allreduce (``"allreduce"``; ``"auto"`` picks it when the cluster's slots and memory allow,
judged from a row count per input partition and the vector size, without reading the
features), or
mini-batch AdaGrad with parameter mixing (``"sgd"``, :mod:`sparkml_scale.core.optim.sgd`),
which also powers ``LogisticRegressionModel.partialFit``.  Every L-BFGS fit runs on the
columns that vary (zero-variance columns get zero coefficients anyway, see
``_logistic_problem.support_of``): with hashed features the optimizer's vectors, the
coefficients sent to the executors and the partial gradients have a few hundred entries, not
2^18.  A map-reduce binomial L2 fit with few such columns and cheap Hessians
(``_logistic_problem.wants_newton``) takes Newton steps (scipy's trust-exact, the Hessian from
the same pass as the gradient; scikit-learn's "newton-cholesky" for the same kind of problem):
5-10 Spark jobs where L-BFGS needs 20-40.  The allreduce fit reads the input
partitions straight into its barrier tasks (no cached block table, no second transfer): each
task converts its rows once (``clean_blocks``), the statistics (bad-row counts, class totals,
feature moments, the correlation matrix of the full preconditioner) are summed by allreduce,
every rank makes the driver's checks and builds the same objective, and L-BFGS runs in the
same stage; with bad rows no rank optimises and the driver raises the usual error
(:meth:`~sparkml_scale.core.stage.TrainingData.minimize_direct`).  Data path, checks and transform
come from the template (:mod:`sparkml_scale.core.stage`); this file holds the params, the
problem set-up and the model.

Reference: Spark MLlib ``LogisticRegression.scala`` (objective, intercept initialisation,
reporting); Byrd, Lu, Nocedal & Zhu (1995) for L-BFGS-B; Duchi, Hazan & Singer (2011) and
McDonald, Hall & Mann (2010) for AdaGrad with parameter mixing.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np
from pyspark import keyword_only
from pyspark.ml.linalg import DenseVector, Matrix, SparseMatrix, SparseVector, Vector, VectorUDT
from pyspark.sql import types as T

from ..core.display import detail
from ..core.linear import LinearModelMixin, compressed_matrix, compressed_vector
from ..core.linear_loss import BinomialLoss, MultinomialLoss, loss_for
from ..core.optim.lbfgs import NewtonSums, SupportSums
from ..core.optim.sgd import SGDState
from ..core.progress import FitProgress
from ..core.stage import TrainingData, VectorEstimator, VectorModel
from ..core.summary import (
    BinaryLogisticRegressionSummary,
    BinaryLogisticRegressionTrainingSummary,
    LogisticRegressionSummary,
    LogisticRegressionTrainingSummary,
)
from ._logistic_params import MAX_CLASSES, SOLVERS, _LogisticRegressionParams
from ._logistic_problem import build_objective, scatter_partial, support_of, wants_correlation, wants_newton

__all__ = [
    "LogisticRegression",
    "LogisticRegressionModel",
    "SGDLogisticRegression",
    "LogisticRegressionSummary",
    "LogisticRegressionTrainingSummary",
    "BinaryLogisticRegressionSummary",
    "BinaryLogisticRegressionTrainingSummary",
    "SOLVERS",
    "MAX_CLASSES",
]

log = logging.getLogger(__name__)

@dataclass
class _Fit:
    """What ``LogisticRegression._solve`` hands to ``_create_model``/``_training_summary``."""

    coef: np.ndarray  # (K, d)
    intercept: np.ndarray  # (K,)
    multinomial: bool
    num_classes: int
    history: List[float]
    count: int
    solver: str
    backend: Optional[str] = None
    sgd: Optional[SGDState] = None


class LogisticRegression(_LogisticRegressionParams, VectorEstimator):
    """Logistic regression (binomial or multinomial), a drop-in for
    ``pyspark.ml.classification.LogisticRegression``.

    Params (Spark's names and defaults): ``featuresCol`` ("features": vectors of float64, dense
    or sparse, all of size ``d``), ``labelCol`` ("label": numeric class indices 0.0 .. K-1;
    0.0/1.0 for ``family="binomial"``), ``predictionCol``, ``probabilityCol``,
    ``rawPredictionCol``, ``maxIter`` (100), ``regParam`` (0.0), ``elasticNetParam`` (0.0),
    ``tol`` (1e-6; stops when the gradient norm is at most ``tol`` times the objective, as
    MLlib), ``fitIntercept`` (True), ``standardization`` (True), ``threshold`` (0.5),
    ``thresholds``, ``weightCol`` (unset: all rows weigh 1), ``aggregationDepth`` (2),
    ``family`` ("auto": binomial for 2 classes, else multinomial; "binomial";
    "multinomial"), ``lower/upperBoundsOnCoefficients``, ``lower/upperBoundsOnIntercepts``
    (L2 only), ``maxBlockSizeInMB`` (0.0 = automatic, 2 MiB: the size of the cached numpy
    blocks the training rows are stacked into).  Extra params: ``solver`` ("auto",
    "mapreduce", "allreduce" or "sgd"; see the module docstring; the one used is
    ``summary.solverUsed``), ``batchSize`` (256 rows), ``stepSize`` (0.5, AdaGrad's base
    step in the standardized space) and ``epochs`` (5) for ``solver="sgd"`` and
    ``partialFit``, ``seed`` (42).  ``setInitialModel(model)`` warm-starts L-BFGS.

    The fitted coefficients equal MLlib's on the same data and params (see the module
    docstring for the objective).

    Raises
    ------
    ValueError
        missing columns, empty input, null feature vectors or vectors of different sizes
        (``VectorColumnError``, a ``ValueError`` subclass; also when the sizes differ between
        partitions), null/NaN/inf labels, labels other than 0/1 (``family="binomial"``) or
        than class indices 0..999, NaN/inf features, negative/NaN/null weights, a single
        class, params out of range, bounds with ``solver="sgd"`` -- each naming the column or
        param.
    TypeError
        a column of the wrong type (e.g. a string ``featuresCol``).
    """

    _input = "blocks"
    _labels = "classes"

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
        self._class_limit: Optional[int] = None
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

    # ------------------------------------------------------------------ template hooks
    def _num_classes(self) -> int:
        if self._class_limit is not None:  # partialFit: the model's classes
            return self._class_limit
        return 2 if self.getFamily() == "binomial" else MAX_CLASSES

    def _training_columns(self):
        cols = super()._training_columns()
        cols.binary = self._num_classes() == 2 and self.getFamily() != "multinomial"
        return cols

    def _validate_extra(self) -> None:
        super()._validate_extra()
        if self.getSolver() == "sgd" and self._has_bounds():
            raise ValueError("lowerBoundsOn*/upperBoundsOn* params are not supported with solver='sgd'")

    def _check_stats(self, stats) -> None:
        if self._class_limit is None and int((stats.label_counts > 0).sum()) < 2:
            only = int(np.argmax(stats.label_counts))
            raise ValueError(f"column {self.getLabelCol()!r} (labelCol) holds only label {only}: logistic "
                             "regression needs two classes or more")

    def _supports_direct(self) -> bool:
        return self.getSolver() in ("auto", "allreduce") and self._class_limit is None

    def _solve(self, data: TrainingData) -> _Fit:
        if data.direct:  # statistics, checks, set-up and L-BFGS in one barrier stage
            log.info("LogisticRegression: solver allreduce (%s)", data.execution.reason)
            (coef, intercept), history, nit, nfev, backend = data.minimize_direct(
                _DirectProblem(_picklable(self), data.cols))
            log.info("LogisticRegression: %d iterations, %d evaluations", nit, nfev)
            multinomial, num_classes, _ = _family(self, data.stats)
            return _Fit(coef, intercept, multinomial, num_classes, history, data.stats.count, "allreduce", backend)
        stats = data.stats
        multinomial, num_classes, K = _family(self, stats)
        solver = data.execution.kind
        log.info("LogisticRegression: solver %s (%s)", solver, data.execution.reason)
        if solver == "sgd":
            obj = build_objective(self, stats, K, num_classes, None)
            sgd = SGDState.from_objective(obj)
            history = data.sgd(sgd, loss_for(obj.multinomial).sums, self.getEpochs(), self.getBatchSize(),
                               self.getStepSize(), self.getSeed())
            coef, intercept = sgd.params()
            return _Fit(coef, intercept, multinomial, num_classes, history, stats.count, solver, sgd=sgd)
        obj, block_sums = _setup(self, stats, lambda fn: data.aggregate(fn, step="feature correlation pass"),
                                 newton=solver == "mapreduce")
        if getattr(block_sums, "hessian", False):
            log.info("LogisticRegression: Newton steps (binomial, L2, %d varying columns)", obj.d)
        x, history, nit, nfev, backend = data.minimize(obj, block_sums)
        log.info("LogisticRegression: %d iterations, %d evaluations", nit, nfev)
        coef, intercept = obj.finish(x)
        return _Fit(coef, intercept, multinomial, num_classes, history, stats.count, solver, backend)

    def _create_model(self, fit: _Fit) -> "LogisticRegressionModel":
        if fit.multinomial:
            model = LogisticRegressionModel._create_multinomial(fit.coef, fit.intercept)
        else:
            model = LogisticRegressionModel._create(fit.coef[0], float(fit.intercept[0]))
        model._sgd = fit.sgd
        return model

    def _training_summary(self, model, dataset, fit: _Fit, seconds: float):
        return LogisticRegressionTrainingSummary(
            objectiveHistory=fit.history, numInstances=fit.count, trainingSeconds=seconds, model=model,
            dataset=dataset, labelCol=self.getLabelCol(), weightCol=self._weight_col(),
            numClasses=fit.num_classes if fit.multinomial else 2, solverUsed=fit.solver,
            allreduceBackend=fit.backend)

def _family(est, stats):
    """``(multinomial, num_classes, K)`` of a fit from its class totals (``K``: rows of the
    coefficient matrix, 1 for binomial)."""
    present = np.flatnonzero(stats.label_counts > 0)
    num_classes = max(int(present[-1]) + 1, 2)
    family = est.getFamily()
    multinomial = family == "multinomial" or (family == "auto" and num_classes > 2)
    return multinomial, num_classes, (num_classes if multinomial else 1)


def _setup(est, stats, aggregate, newton: bool = False):
    """``(LBFGSObjective, block_sums)`` of an L-BFGS fit from the statistics;
    ``aggregate(partial)`` sums a partial over the data (the feature scatter matrix, one pass,
    when the full preconditioner is wanted).  ``newton``: take Newton steps where
    :func:`wants_newton` says they are cheap (``block_sums`` is then a
    :class:`~sparkml_scale.core.optim.lbfgs.NewtonSums`)."""
    _, num_classes, K = _family(est, stats)
    d = stats.num_features
    support = support_of(stats)
    if newton:
        obj = build_objective(est, stats, K, num_classes, None, support)
        if wants_newton(obj, stats):  # Newton's steps do not depend on a preconditioner: no scatter pass
            return obj, NewtonSums(loss_for(obj.multinomial), support)
    scatter = None
    if est.getMaxIter() > 0 and wants_correlation(est, K, d if support is None else len(support)):
        scatter = aggregate(scatter_partial(d, support))[0]
    obj = build_objective(est, stats, K, num_classes, scatter, support)
    sums = loss_for(obj.multinomial).sums
    return obj, (sums if support is None else SupportSums(sums, support, d))


class _ArrayView:
    def __init__(self, a):
        self._a = np.array(a, dtype=np.float64)

    def toArray(self) -> np.ndarray:
        return self._a


class _InitialArrays:
    """A warm-start model reduced to its arrays (picklable, for the barrier tasks)."""

    def __init__(self, m):
        self.coefficientMatrix = _ArrayView(m.coefficientMatrix.toArray())
        self.interceptVector = _ArrayView(m.interceptVector.toArray())


def _picklable(est: "LogisticRegression") -> "LogisticRegression":
    """A copy of ``est`` that pickles (the warm-start model reduced to its arrays)."""
    c = est.copy()
    if est._initial_model is not None:
        c._initial_model = _InitialArrays(est._initial_model)
    return c


class _DirectProblem:
    """The logistic-regression problem as the barrier tasks of the direct allreduce path build it
    (:meth:`~sparkml_scale.core.stage.TrainingData.minimize_direct`): ``check`` = the driver's
    checks of the cached-blocks path, ``setup`` = :func:`_setup`."""

    def __init__(self, est: "LogisticRegression", cols):
        self.est = est
        self.cols = cols
        self.max_iter = est.getMaxIter()

    def check(self, stats) -> None:
        from ..core.training import BadRows

        BadRows.raise_for(stats.meta, self.cols)
        self.est._check_stats(stats)

    def setup(self, stats, aggregate):
        return _setup(self.est, stats, aggregate)


class SGDLogisticRegression(LogisticRegression):
    """``LogisticRegression`` trained by mini-batch AdaGrad SGD (``solver='sgd'`` by default).

    For data too large to iterate L-BFGS over, or for online learning: the fitted
    ``LogisticRegressionModel`` continues training with ``partialFit(df)`` (e.g. from
    Structured Streaming's ``foreachBatch``).  Params as ``LogisticRegression``; the SGD ones
    are ``batchSize`` (256 rows), ``stepSize`` (0.5, AdaGrad's base step in the standardized
    space), ``epochs`` (5) and ``seed``.  Algorithm: :mod:`sparkml_scale.core.optim.sgd`
    (AdaGrad, Duchi et al. 2011, with iterative parameter mixing, McDonald et al. 2010).
    Bounds params are not supported.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self._setDefault(solver="sgd")
        self.setParams(**kwargs)


class LogisticRegressionModel(LinearModelMixin, _LogisticRegressionParams, VectorModel):
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
    largest probability (with ``thresholds``: the largest ``p / t``).  A column whose param is
    ``""`` is not produced; null vectors give nulls.  It runs as one vectorised Arrow UDF per
    batch (the template's :func:`~sparkml_scale.core.stage.map_vectors`).
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._B: Optional[np.ndarray] = None  # (K, d) when multinomial
        self._b: Optional[np.ndarray] = None  # (K,)
        self._sgd: Optional[SGDState] = None  # online-training state (solver='sgd' or after partialFit)

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
            m._sgd = SGDState.from_arrays(arrays)
        return m

    def copy(self, extra=None) -> "LogisticRegressionModel":
        that = super().copy(extra)
        that._B = None if self._B is None else self._B.copy()
        that._b = None if self._b is None else self._b.copy()
        that._sgd = None if self._sgd is None else self._sgd.copy()
        return that

    def setStepSize(self, value: float) -> "LogisticRegressionModel":
        """AdaGrad's step size for :meth:`partialFit` (param ``stepSize``)."""
        return self._set(stepSize=value)

    def setBatchSize(self, value: int) -> "LogisticRegressionModel":
        """Rows per mini-batch of :meth:`partialFit` (param ``batchSize``)."""
        return self._set(batchSize=value)

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
        B, b = self._matrix()
        est = LogisticRegression()
        self._copyValues(est)
        est._class_limit = self.numClasses
        if self._B is not None:
            est.setFamily("multinomial")
        with FitProgress(dataset.sparkSession, "LogisticRegressionModel.partialFit") as progress:
            return self._partial_fit(est, dataset, epochs, B, b, progress)

    def _partial_fit(self, est, dataset, epochs, B, b, progress):
        K, d = B.shape
        data = est._prepare(dataset, allow_empty=True, progress=progress)
        if data is None:  # an empty micro-batch changes nothing
            return self
        try:
            stats = data.stats
            if stats.num_features != d:
                raise ValueError(f"column {self.getFeaturesCol()!r} (featuresCol) has {stats.num_features} "
                                 f"features, the model has {d}")
            if self._sgd is None:
                obj = build_objective(est, stats, K, self.numClasses)
                self._sgd = SGDState.from_objective(obj)
                self._sgd.beta = B * stats.std
                self._sgd.b = b + B @ obj.mu
            data.sgd(self._sgd, loss_for(self._sgd.multinomial).sums, epochs, self.getBatchSize(),
                     self.getStepSize(), self.getSeed())
        finally:
            est._release(data)
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

    def evaluate(self, dataset) -> LogisticRegressionSummary:
        """Metrics of this model on ``dataset`` (needs ``featuresCol`` and ``labelCol``; weighted by
        ``weightCol`` when set), as MLlib's ``evaluate``: a :class:`LogisticRegressionSummary`
        whose metrics are computed by Spark jobs on first access.  Raises ``ValueError`` naming
        a missing column, ``TypeError`` for a column of the wrong type."""
        self._check_input_schema(dataset.schema)
        wcol = self._weight_col()
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
        return compressed_matrix(self._matrix()[0])

    @property
    def interceptVector(self) -> Vector:
        """``K`` intercepts (1 when binomial), compressed as MLlib's (sparse when that is smaller)."""
        return compressed_vector(self._matrix()[1])

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

    def _predict(self, X):
        """``(raw, probability, prediction)`` of a block (see the class docstring)."""
        B, b = self._matrix()
        threshold, thresholds = self._decision()
        if self._B is None:
            return BinomialLoss.predict(X, B, b, threshold)
        return MultinomialLoss.predict(X, B, b, thresholds)

    # single-vector helpers, as MLlib's model
    def predictRaw(self, value: Vector) -> DenseVector:
        return DenseVector(self._predict(value.toArray()[None, :])[0][0])

    def predictProbability(self, value: Vector) -> DenseVector:
        return DenseVector(self._predict(value.toArray()[None, :])[1][0])

    def predict(self, value: Vector) -> float:
        return float(self._predict(value.toArray()[None, :])[2][0])

    # ------------------------------------------------------------------ template hooks
    def _output_fields(self):
        return [(param, self.getOrDefault(param), T.DoubleType() if param == "predictionCol" else VectorUDT())
                for param in self._output_params if self.getOrDefault(param)]

    def _num_features(self) -> int:
        return self._matrix()[0].shape[1]

    def _block_predictor(self):
        B, b = self._matrix()
        threshold, thresholds = self._decision()
        wanted = [self._output_params.index(p) for p, _, _ in self._output_fields()]
        binomial = self._B is None

        def predict(X):
            out = BinomialLoss.predict(X, B, b, threshold) if binomial else MultinomialLoss.predict(X, B, b, thresholds)
            return [out[i] for i in wanted]

        return predict

    def _repr_fields(self):
        """``repr``: MLlib's ``LogisticRegressionModel: uid=..., numClasses=..., numFeatures=...``, then
        what the training recorded (solver, iterations, final objective; kept in the summary, so
        absent after a load, as MLlib's summary); the table adds the coefficients, intercepts and
        set params."""
        s = self._summary
        fields = [("numClasses", self.numClasses), ("numFeatures", self.numFeatures)]
        if s is not None:
            fields += [("solverUsed", s.solverUsed), ("totalIterations", s.totalIterations),
                       ("finalObjective", s.objectiveHistory[-1] if s.objectiveHistory else None)]
        if self._B is None:
            weights = [("coefficients", self.coefficients), ("intercept", self._intercept)]
        else:
            weights = [("coefficientMatrix", self._B), ("interceptVector", self._b)]
        return fields + [("family", detail("binomial" if self._B is None else "multinomial"))] + [
            (k, detail(v)) for k, v in weights] + [("params", detail(self._repr_params_text()))]
