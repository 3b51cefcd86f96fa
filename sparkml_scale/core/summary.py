"""Evaluation summaries of the linear models, computed by Spark jobs on first access.

- :class:`LogisticRegressionSummary` / :class:`LogisticRegressionTrainingSummary` (and MLlib's
  binary aliases): classification metrics from one weighted confusion-matrix ``groupBy`` job,
  ROC AUC from Spark's ``BinaryClassificationEvaluator``;
- :class:`LinearRegressionSummary` / :class:`LinearRegressionTrainingSummary`: regression
  metrics from one aggregation job.

They mirror the summaries of ``pyspark.ml.classification`` and ``pyspark.ml.regression``
(names, properties, conventions such as a never-predicted label's precision 0), and read
their columns through quoted references (names with dots work).
"""
from __future__ import annotations

import math
import uuid
from typing import Dict, List, Optional

import numpy as np
from pyspark.sql import DataFrame

from .display import ReadableRepr, detail, lazy, lazy_attrs
from .schema import col

__all__ = [
    "LogisticRegressionSummary",
    "LogisticRegressionTrainingSummary",
    "BinaryLogisticRegressionSummary",
    "BinaryLogisticRegressionTrainingSummary",
    "LinearRegressionSummary",
    "LinearRegressionTrainingSummary",
]


class LogisticRegressionSummary(ReadableRepr):
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

            w = col(self._wcol).cast("double") if self._wcol else F.lit(1.0)
            rows = (
                self._scored(raw=False)
                .select(col(self._lcol).cast("int").alias("y"), F.col("__sparkml_pred").cast("int").alias("p"),
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
            from pyspark.sql import functions as F

            # Spark's evaluator parses column names: plain aliases keep dots and backticks out of it
            cols = [F.col("__sparkml_raw"), col(self._lcol).cast("double").alias("__sparkml_y")]
            ev = BinaryClassificationEvaluator(rawPredictionCol="__sparkml_raw", labelCol="__sparkml_y",
                                               metricName="areaUnderROC")
            if self._wcol:
                cols.append(col(self._wcol).cast("double").alias("__sparkml_w"))
                ev.setWeightCol("__sparkml_w")
            self._auc = float(ev.evaluate(self._scored(raw=True).select(*cols)))
        return self._auc

    def _repr_fields(self):
        """``numClasses``, ``accuracy`` and (binomial) ``areaUnderROC``; the table adds the columns and
        the weighted metrics.  Displaying a summary computes its metrics (Spark jobs, once: kept)."""
        fields = [("numClasses", self._k)]
        if self._model is not None and self._dataset is not None:
            fields += lazy_attrs(self, "accuracy", *([] if self._model.isMultinomial else ["areaUnderROC"]))
            fields += lazy_attrs(self, "weightedPrecision", "weightedRecall", table_only=True)
            fields.append(("weightedFMeasure", detail(lazy(self.weightedFMeasure))))
        return fields + [("labelCol", detail(self._lcol)), ("weightCol", detail(self._wcol))]


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

    def _repr_fields(self):
        """The training record (iterations, final objective, rows, solver) after ``numClasses``,
        then the metrics of :class:`LogisticRegressionSummary`."""
        fields = super()._repr_fields()
        final = self.objectiveHistory[-1] if self.objectiveHistory else None
        return fields[:1] + [
            ("totalIterations", self.totalIterations), ("finalObjective", final), ("numInstances", self.numInstances),
            ("solverUsed", self.solverUsed), ("allreduceBackend", detail(self.allreduceBackend)),
            ("trainingSeconds", detail(self.trainingSeconds)),
        ] + fields[1:]


#: The summary classes of binomial models (MLlib's names).
BinaryLogisticRegressionSummary = LogisticRegressionSummary
BinaryLogisticRegressionTrainingSummary = LogisticRegressionTrainingSummary


class LinearRegressionSummary(ReadableRepr):
    """Metrics of a :class:`LinearRegressionModel` on a DataFrame (MLlib's ``LinearRegressionSummary``),
    from ``model.evaluate(df)``; computed on first access (one Spark job for the metrics, one
    more for the label mean when the data is not the training data), then kept.

    ``rootMeanSquaredError``, ``meanSquaredError``, ``meanAbsoluteError``, ``r2``
    (``1 - SSE/SST``; SST about the label mean, or about 0 when
    ``fitIntercept=False``, as MLlib's ``RegressionMetrics(throughOrigin)``),
    ``r2adj``, ``explainedVariance`` (``sum w (p - y_bar)^2 / W``), all weighted by
    the model's ``weightCol``; ``numInstances`` (rows), ``degreesOfFreedom``
    (``numInstances - numFeatures - 1`` with an intercept, ``- 0`` without),
    ``predictions`` (the model's ``transform`` of the data), ``residuals``
    (one double column ``residuals = label - prediction``), ``predictionCol``,
    ``labelCol``, ``featuresCol``.

    Raises ``ValueError`` naming the column, when the metrics are computed, for
    null/NaN/infinite labels, null feature vectors or null/NaN/negative weights;
    the metrics of an empty DataFrame are NaN.
    """

    def __init__(self, model, dataset: DataFrame, y_bar: Optional[float] = None,
                 num_instances: Optional[int] = None):
        pcol = model.getPredictionCol() or f"prediction_{uuid.uuid4().hex[:12]}"
        self._model = model.copy().setPredictionCol(pcol)
        self._model._summary = None
        self._dataset = dataset
        self._lcol = model.getLabelCol()
        self._wcol = model._weight_col()
        self._y_bar = y_bar
        self._n = num_instances
        self._metrics: Optional[Dict[str, float]] = None

    @property
    def predictions(self) -> DataFrame:
        """The model's ``transform`` of the data (with ``predictionCol``)."""
        return self._model.transform(self._dataset)

    @property
    def predictionCol(self) -> str:
        return self._model.getPredictionCol()

    @property
    def labelCol(self) -> str:
        return self._lcol

    @property
    def featuresCol(self) -> str:
        return self._model.getFeaturesCol()

    @property
    def residuals(self) -> DataFrame:
        """One column ``residuals`` (double): ``label - prediction`` per row."""
        y = col(self._lcol).cast("double")
        return self.predictions.select((y - col(self.predictionCol)).alias("residuals"))

    def _label_mean(self):
        """Weighted label mean and row count of the data (one job), checking labels and weights."""
        from pyspark.sql import functions as F

        y = col(self._lcol).cast("double")
        w = col(self._wcol).cast("double") if self._wcol else F.lit(1.0)
        bad_y = y.isNull() | F.isnan(y) | (F.abs(y) == float("inf"))
        bad_w = w.isNull() | F.isnan(w) | (w < 0) | (w == float("inf"))
        r = self._dataset.select(
            F.count(F.lit(1)).alias("n"),
            F.sum(F.when(bad_y, 1).otherwise(0)).alias("bad_y"),
            F.sum(F.when(bad_w, 1).otherwise(0)).alias("bad_w"),
            F.sum(w).alias("W"),
            F.sum(w * y).alias("wy"),
        ).collect()[0]
        if r["bad_y"]:
            raise ValueError(f"column {self._lcol!r} (labelCol) holds {r['bad_y']} null, NaN or infinite label(s)")
        if r["bad_w"]:
            raise ValueError(f"column {self._wcol!r} (weightCol) holds {r['bad_w']} null, NaN, infinite or "
                             "negative weight(s)")
        W = r["W"] or 0.0
        return (r["wy"] / W if W > 0 else float("nan")), int(r["n"])

    def _compute(self) -> Dict[str, float]:
        if self._metrics is None:
            from pyspark.sql import functions as F

            if self._y_bar is None:
                self._y_bar, self._n = self._label_mean()
            y_bar = self._y_bar
            pcol = self.predictionCol
            df = self._model.transform(self._dataset)
            y = col(self._lcol).cast("double")
            p = col(pcol)
            w = col(self._wcol).cast("double") if self._wcol else F.lit(1.0)
            c = y_bar if self._model.getFitIntercept() else 0.0
            nan = float("nan")
            if self._n == 0:
                self._metrics = {"mse": nan, "rmse": nan, "mae": nan, "r2": nan, "ev": nan}
                return self._metrics
            r = df.select(
                F.sum(F.when(p.isNull(), 1).otherwise(0)).alias("null_p"),
                F.sum(w).alias("W"),
                F.sum(w * (y - p) * (y - p)).alias("sse"),
                F.sum(w * F.abs(y - p)).alias("sae"),
                F.sum(w * (y - F.lit(c)) * (y - F.lit(c))).alias("sst"),
                F.sum(w * (p - F.lit(y_bar)) * (p - F.lit(y_bar))).alias("ssr"),
            ).collect()[0]
            if r["null_p"]:
                raise ValueError(f"column {self.featuresCol!r} (featuresCol) holds {r['null_p']} null vector(s): "
                                 "no prediction to evaluate")
            W = r["W"]
            if not W:
                self._metrics = {"mse": nan, "rmse": nan, "mae": nan, "r2": nan, "ev": nan}
                return self._metrics
            mse = r["sse"] / W
            self._metrics = {
                "mse": mse,
                "rmse": math.sqrt(mse),
                "mae": r["sae"] / W,
                "r2": 1.0 - r["sse"] / r["sst"] if r["sst"] > 0 else nan,
                "ev": r["ssr"] / W,
            }
        return self._metrics

    @property
    def numInstances(self) -> int:
        """Number of rows of the data."""
        if self._n is None:
            self._y_bar, self._n = self._label_mean()
        return self._n

    @property
    def degreesOfFreedom(self) -> int:
        """``numInstances - numFeatures - 1`` with an intercept, ``numInstances - numFeatures`` without."""
        return self.numInstances - self._model.numFeatures - (1 if self._model.getFitIntercept() else 0)

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
    def r2adj(self) -> float:
        """Adjusted r2, MLlib's ``1 - (1 - r2) (n - i) / (n - d - i)`` (``i`` = 1 with an intercept)."""
        i = 1 if self._model.getFitIntercept() else 0
        den = self.numInstances - self._model.numFeatures - i
        return 1.0 - (1.0 - self.r2) * (self.numInstances - i) / den if den > 0 else float("nan")

    @property
    def explainedVariance(self) -> float:
        return self._compute()["ev"]

    def _repr_fields(self):
        """``LinearRegressionSummary(r2=..., rootMeanSquaredError=..., numInstances=...)``; the table adds
        the other metrics and the columns.  Displaying a summary computes its metrics (once: kept)."""
        return lazy_attrs(self, "r2", "rootMeanSquaredError", "numInstances") + lazy_attrs(
            self, "meanAbsoluteError", "meanSquaredError", "r2adj", "explainedVariance", "degreesOfFreedom",
            table_only=True) + [("labelCol", detail(self._lcol)), ("weightCol", detail(self._wcol))]


class LinearRegressionTrainingSummary(LinearRegressionSummary):
    """:class:`LinearRegressionSummary` of the model on its training data, plus
    ``objectiveHistory`` (``[0.0]``, as MLlib's normal solver), ``totalIterations`` (0) and
    ``trainingSeconds``.  ``numInstances`` and the label mean come from the fit, so the
    metrics cost one Spark job."""

    def __init__(self, model, dataset: DataFrame, y_bar: float, num_instances: int, seconds: float):
        super().__init__(model, dataset, y_bar=y_bar, num_instances=num_instances)
        self.trainingSeconds = seconds
        self.objectiveHistory = [0.0]
        self.totalIterations = 0

    def _repr_fields(self):
        fields = super()._repr_fields()
        return fields[:3] + [("totalIterations", self.totalIterations)] + fields[3:] + [
            ("trainingSeconds", detail(self.trainingSeconds))]
