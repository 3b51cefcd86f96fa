"""Data and prediction drift between a reference DataFrame and current data, from binned histograms.

:class:`DriftDetector` (a ``pyspark.ml`` Estimator) learns, from the *reference* data, the bins of
every monitored feature and the reference histograms on them; :meth:`DriftModel.evaluate` bins the
*current* data on the same bins in one pass and compares the two histograms per feature
(:class:`DriftReport`).  Everything runs through DataFrame APIs (one aggregation with
``percentile_approx`` and ``approx_top_k``, ``mapInArrow`` with partial counts reduced by
:func:`sparkml_scale.core.mapreduce.tree_aggregate`), so it works on classic Spark and on Spark
Connect, and nothing of the size of the data reaches the driver: only ``bins x features`` counts.

Features
    ``inputCols`` may name numeric, string and boolean columns, and vector columns
    (``pyspark.ml.linalg.VectorUDT``), expanded to their first ``maxVectorDims`` dimensions, named
    ``col[i]`` (dimensions that no reference vector has are not monitored; a null vector is
    missing in every dimension).  Strings and booleans are categorical; numeric columns are numeric unless listed in
    ``categoricalCols``.  Other types (map, struct, array, binary, date...) raise ``TypeError``
    naming the column.

Bins
    Numeric: the ``numBins - 1`` inner reference quantiles (``percentile_approx``, i.e. ``approxQuantile``'s summaries,
    with relative rank error ``quantileAccuracy``; duplicates dropped, so a constant column has 2 bins), bins
    ``(-inf, e1], (e1, e2], ..., (ek, inf)``, plus a bin for missing values (null and NaN).
    Categorical: the ``maxCategories`` most frequent reference values (ties by value), one bin
    ``"other"`` for every other value -- including values never seen in the reference -- and
    one bin for missing values (null, and NaN for numeric categorical columns).

Tests (per feature; ``flaggedBy`` lists those that fired, ``drifted`` is true if any in
``flagTests`` fired)
    - PSI, population stability index (Siddiqi 2006, *Credit Risk Scorecards*; Yurdakul 2018,
      *Statistical properties of population stability index*):
      ``sum_i (c_i - r_i) * ln(c_i / r_i)`` over all bins (the missing bin included) with
      ``r_i, c_i`` the reference and current proportions, each floored at :data:`PSI_FLOOR`
      (1e-6) so an empty bin gives a finite value and the PSI is never inf or NaN; flagged when
      ``psi > psiThreshold`` (default 0.2, the usual "significant shift" level).
    - KS, two-sample Kolmogorov-Smirnov (numeric, non-missing values only).  The statistic is
      computed on a fine grid ``g_1 < ... < g_G`` of reference quantiles (``ksGridSize``
      probabilities ``0, 1/(G-1), ..., 1``) as ``D_grid = max_j |F_r(g_j) - F_c(g_j)|`` with the
      empirical CDFs ``F(t) = P(X <= t)``.  ``D_grid`` is a lower bound of the exact statistic
      ``D = sup_t |F_r(t) - F_c(t)|`` (it is the sup over a subset of ``t``).  For ``t`` inside an
      open cell ``(g_j, g_{j+1})``, ``F_r(t) = F_r(g_j) + a`` and ``F_c(t) = F_c(g_j) + b`` with
      ``0 <= a <= m_r`` and ``0 <= b <= m_c``, the masses the two samples put into that open cell,
      so ``F_r(t) - F_c(t)`` lies in ``[d_j - m_c, d_j + m_r]`` (``d_j`` the signed difference at
      ``g_j``, 0 left of ``g_1``).  Hence ``D <= max(D_grid, max_j max(|d_j - m_c|, |d_j + m_r|))``
      ``<= D_grid + max_j max(m_r, m_c)``; ``ksErrorBound`` is that first upper bound minus
      ``D_grid`` (so ``D_grid <= D <= D_grid + ksErrorBound``; the cell masses are counted, not
      estimated, so the bound holds whatever the quantile accuracy; point masses on grid points
      are exact).  ``ksPValue`` is ``scipy.stats.distributions.kstwo.sf(D_grid, round(n*m/(n+m)))``,
      the asymptotic formula of ``scipy.stats.ks_2samp(method="asymp")`` (Kolmogorov's
      distribution), which is >= the p-value of the exact statistic.  NaN (documented, not an
      error) when either sample has no non-missing value.  Flagged when ``ksPValue < ksAlpha``.
    - Chi-square test of homogeneity (categorical): ``scipy.stats.chi2_contingency`` of the
      ``2 x bins`` table of reference and current counts (bins empty in both dropped; default Yates
      correction when 1 degree of freedom); ``1.0`` when only one bin is non-empty (both samples
      identical).  Flagged when ``chi2PValue < chi2Alpha``.
    - Jensen-Shannon distance (categorical): ``scipy.spatial.distance.jensenshannon(r, c,
      base=2)``, in ``[0, 1]``; flagged when ``jsDistance > jsThreshold``.

    KS and chi-square are hypothesis tests: with tens of thousands of rows they detect very small
    shifts (p-values near 0 for differences of a percent); PSI and JS measure the size of a shift.
    Set ``flagTests=["psi", "js"]`` to flag only by size.

Prediction drift and performance
    With ``predictionCol`` set, the prediction is monitored as a feature (its row has ``feature``
    = the column name).  With ``labelCol`` set as well, a ``performance`` table compares a metric
    on the reference and the current data (rows where both are non-missing).  The metric
    (``performanceMetric="auto"``):

    - ``"auc"`` when the prediction is a vector (``probability``/``rawPrediction``; the score is
      element 1, the positive class of a binary model) -- binned area under the ROC curve on the
      reference's fine quantile grid of the score, pairs of a positive and a negative in the same
      open grid cell counted one half (exact when scores only take grid values); label 1 is
      positive, any other value negative;
    - ``"accuracy"`` (fraction with prediction == label) when the label or the prediction is a
      string, boolean or integer column, the label is in ``categoricalCols``, or the reference label
      has at most ``maxCategories`` distinct values, all whole numbers (MLlib's 0.0/1.0/... labels);
      the prediction is then monitored as a categorical feature;
    - ``"rmse"`` (root mean squared error) otherwise.

    Set ``performanceMetric`` to ``"auc"`` to use a numeric score column as ``predictionCol``.

Windows and streams
    ``evaluate(current, windowCol="ts", windowDuration="1 day")`` reports one row per (window,
    feature) -- ``window`` is the window start, a UTC ``pandas.Timestamp`` -- from the same single
    pass (rows are keyed by ``pyspark.sql.functions.window(windowCol, windowDuration).start``;
    rows whose ``windowCol`` is null are skipped).  On a stream, evaluate each micro-batch::

        model = DriftDetector(inputCols=["dep_delay", "carrier"]).fit(reference)
        reports = []

        def check(batch_df, batch_id):
            report = model.evaluate(batch_df)              # one Spark job per micro-batch
            reports.append(report)
            if report.drifted:                             # names of the drifted features
                print(batch_id, report.toPandas()[["feature", "psi", "flaggedBy"]])

        (spark.readStream.schema(schema).parquet(folder)
             .writeStream.foreachBatch(check).trigger(availableNow=True).start()
             .awaitTermination())

Spark jobs
    ``fit``: ``percentile_approx`` (the quantile summaries of ``approxQuantile``) for every numeric
    feature at once (bin edges, KS grid and AUC score grid from the same call) and Spark's
    ``approx_top_k`` for every categorical feature at once, together in one aggregation query (two
    Spark jobs under adaptive query execution: the partial aggregation and the final one), then one
    ``mapInArrow`` pass for the reference histograms (three jobs); ``evaluate``: one ``mapInArrow``
    pass.  The number of jobs does not depend on the number of features.  Each partition sends one
    partial per window: int64 counts, ``numBins + 2 * ksGridSize + 2`` (at most) per numeric feature
    and ``maxCategories + 2`` per categorical one (about 8 KiB per numeric feature with the
    defaults), which the driver sums (:func:`~sparkml_scale.core.mapreduce.tree_aggregate` with
    depth 1: a deeper tree would cost one more job to count the partitions).

Errors (``ValueError``/``TypeError`` naming the column or param, raised on the driver, before any
job except for empty data): missing columns or columns of another type in the current data, columns that cannot be
binned, empty reference or current data, bad params (``numBins < 2``, ``ksGridSize < 2``,
``quantileAccuracy`` outside ``(0, 1)``, ``maxCategories < 1``, ``maxVectorDims < 1``, thresholds
outside their ranges, unknown ``flagTests``).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
from pyspark import keyword_only
from pyspark.ml.base import Estimator, Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCols
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ..core.errors import task_error
from ..core.mapreduce import decode_arrays, encode_arrays, tree_aggregate
from ..core.persistence import ModelLoadError, ParamsReadWrite
from ..core.schema import check_column
from ..core.schema import col as qcol

__all__ = ["DriftDetector", "DriftModel", "DriftReport", "PSI_FLOOR"]

#: Floor of the bin proportions in the PSI (an empty bin counts as this proportion).
PSI_FLOOR = 1e-6
_TESTS = ("psi", "ks", "chi2", "js")
_METRICS = ("auto", "auc", "accuracy", "rmse")
_KEYED_SCHEMA = "key long, payload binary"
_KEYED_ARROW = pa.schema([("key", pa.int64()), ("payload", pa.binary())])


# ---------------------------------------------------------------------------------------- params
class _DriftParams(HasInputCols):
    """Params of :class:`DriftDetector` and :class:`DriftModel`."""

    categoricalCols: "Param[List[str]]" = Param(
        Params._dummy(), "categoricalCols", "numeric columns of inputCols to treat as categories",
        typeConverter=TypeConverters.toListString)
    numBins: "Param[int]" = Param(Params._dummy(), "numBins",
                                  "number of reference-quantile bins of numeric features for the PSI (>= 2)",
                                  typeConverter=TypeConverters.toInt)
    ksGridSize: "Param[int]" = Param(Params._dummy(), "ksGridSize",
                                     "number of reference quantiles of the KS grid (>= 2)",
                                     typeConverter=TypeConverters.toInt)
    quantileAccuracy: "Param[float]" = Param(Params._dummy(), "quantileAccuracy",
                                             "relative rank error of the reference quantiles "
                                             "(percentile_approx accuracy 1/x), in (0, 1)",
                                             typeConverter=TypeConverters.toFloat)
    maxCategories: "Param[int]" = Param(Params._dummy(), "maxCategories",
                                        "most frequent reference categories kept per feature; others are 'other'",
                                        typeConverter=TypeConverters.toInt)
    maxVectorDims: "Param[int]" = Param(Params._dummy(), "maxVectorDims",
                                        "leading dimensions of vector columns monitored (>= 1)",
                                        typeConverter=TypeConverters.toInt)
    psiThreshold: "Param[float]" = Param(Params._dummy(), "psiThreshold", "flag when psi > psiThreshold (>= 0)",
                                         typeConverter=TypeConverters.toFloat)
    ksAlpha: "Param[float]" = Param(Params._dummy(), "ksAlpha", "flag when the KS p-value < ksAlpha, in [0, 1]",
                                    typeConverter=TypeConverters.toFloat)
    chi2Alpha: "Param[float]" = Param(Params._dummy(), "chi2Alpha",
                                      "flag when the chi-square p-value < chi2Alpha, in [0, 1]",
                                      typeConverter=TypeConverters.toFloat)
    jsThreshold: "Param[float]" = Param(Params._dummy(), "jsThreshold",
                                        "flag when the Jensen-Shannon distance (base 2) > jsThreshold, in [0, 1]",
                                        typeConverter=TypeConverters.toFloat)
    flagTests: "Param[List[str]]" = Param(Params._dummy(), "flagTests",
                                          "tests that set 'drifted': any of psi, ks, chi2, js",
                                          typeConverter=TypeConverters.toListString)
    predictionCol: "Param[str]" = Param(Params._dummy(), "predictionCol",
                                        "prediction column to monitor (optional)",
                                        typeConverter=TypeConverters.toString)
    labelCol: "Param[str]" = Param(Params._dummy(), "labelCol",
                                   "label column for the performance comparison (optional; needs predictionCol)",
                                   typeConverter=TypeConverters.toString)
    performanceMetric: "Param[str]" = Param(Params._dummy(), "performanceMetric",
                                            "auto, auc, accuracy or rmse", typeConverter=TypeConverters.toString)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._setDefault(categoricalCols=[], numBins=10, ksGridSize=512, quantileAccuracy=1e-3, maxCategories=20,
                         maxVectorDims=20, psiThreshold=0.2, ksAlpha=0.05, chi2Alpha=0.05, jsThreshold=0.1,
                         flagTests=list(_TESTS), predictionCol="", labelCol="", performanceMetric="auto")

    def getCategoricalCols(self) -> List[str]:
        return self.getOrDefault(self.categoricalCols)

    def getNumBins(self) -> int:
        return self.getOrDefault(self.numBins)

    def getKsGridSize(self) -> int:
        return self.getOrDefault(self.ksGridSize)

    def getQuantileAccuracy(self) -> float:
        return self.getOrDefault(self.quantileAccuracy)

    def getMaxCategories(self) -> int:
        return self.getOrDefault(self.maxCategories)

    def getMaxVectorDims(self) -> int:
        return self.getOrDefault(self.maxVectorDims)

    def getPsiThreshold(self) -> float:
        return self.getOrDefault(self.psiThreshold)

    def getKsAlpha(self) -> float:
        return self.getOrDefault(self.ksAlpha)

    def getChi2Alpha(self) -> float:
        return self.getOrDefault(self.chi2Alpha)

    def getJsThreshold(self) -> float:
        return self.getOrDefault(self.jsThreshold)

    def getFlagTests(self) -> List[str]:
        return self.getOrDefault(self.flagTests)

    def getPredictionCol(self) -> str:
        return self.getOrDefault(self.predictionCol)

    def getLabelCol(self) -> str:
        return self.getOrDefault(self.labelCol)

    def getPerformanceMetric(self) -> str:
        return self.getOrDefault(self.performanceMetric)

    # setters shared by the estimator and the model (thresholds can change after fit)
    def setPsiThreshold(self, value: float):
        return self._set(psiThreshold=value)

    def setKsAlpha(self, value: float):
        return self._set(ksAlpha=value)

    def setChi2Alpha(self, value: float):
        return self._set(chi2Alpha=value)

    def setJsThreshold(self, value: float):
        return self._set(jsThreshold=value)

    def setFlagTests(self, value: List[str]):
        return self._set(flagTests=value)

    def _validate_params(self) -> None:
        def bad(name, rule):
            raise ValueError(f"param {name!r} = {self.getOrDefault(name)!r} is invalid: must be {rule}")

        if not self.isDefined(self.inputCols) and not self.getPredictionCol():
            raise ValueError("param 'inputCols' is not set: set it to the columns to monitor")
        cols = self.getInputCols() if self.isDefined(self.inputCols) else []
        if len(set(cols)) != len(cols):
            raise ValueError(f"param 'inputCols' names a column twice: {cols}")
        if self.getNumBins() < 2:
            bad("numBins", "an integer >= 2")
        if self.getKsGridSize() < 2:
            bad("ksGridSize", "an integer >= 2")
        if not 0.0 < self.getQuantileAccuracy() < 1.0:
            bad("quantileAccuracy", "in (0, 1)")
        if self.getMaxCategories() < 1:
            bad("maxCategories", "an integer >= 1")
        if self.getMaxVectorDims() < 1:
            bad("maxVectorDims", "an integer >= 1")
        if not self.getPsiThreshold() >= 0:
            bad("psiThreshold", ">= 0")
        for name in ("ksAlpha", "chi2Alpha", "jsThreshold"):
            if not 0.0 <= self.getOrDefault(name) <= 1.0:
                bad(name, "in [0, 1]")
        unknown = [t for t in self.getFlagTests() if t not in _TESTS]
        if unknown:
            bad("flagTests", f"a list of {list(_TESTS)} (unknown: {unknown})")
        if self.getPerformanceMetric() not in _METRICS:
            bad("performanceMetric", f"one of {list(_METRICS)}")
        if self.getLabelCol() and not self.getPredictionCol():
            raise ValueError("param 'labelCol' is set but 'predictionCol' is not: set both to compare performance")
        extra = [c for c in self.getCategoricalCols() if c not in cols and c not in (self.getPredictionCol(),
                                                                                     self.getLabelCol())]
        if extra:
            raise ValueError(f"param 'categoricalCols' names columns not in 'inputCols': {extra}")


# ---------------------------------------------------------------------------------------- schema
def _type_class(dt: T.DataType) -> Optional[str]:
    from pyspark.ml.linalg import VectorUDT

    if isinstance(dt, VectorUDT):
        return "vector"
    if isinstance(dt, T.BooleanType):
        return "boolean"
    if isinstance(dt, (T.StringType, T.VarcharType, T.CharType)):
        return "string"
    if isinstance(dt, T.NumericType):
        return "numeric"
    return None


def _column_type(schema: T.StructType, name: str, param: str) -> str:
    dt = check_column(schema, name, param)
    tc = _type_class(dt)
    if tc is None:
        raise TypeError(f"column {name!r} (param {param!r}) has type {dt.simpleString()}, which cannot be binned: "
                        "monitor numeric, string, boolean or vector columns")
    return tc


def _is_integral(dt: T.DataType) -> bool:
    return isinstance(dt, (T.ByteType, T.ShortType, T.IntegerType, T.LongType))


def _vector_arrays(dataset: DataFrame, specs: Sequence[dict]) -> Tuple[DataFrame, Dict[str, str]]:
    """``dataset`` plus one ``vector_to_array`` column per vector column monitored (one conversion per
    row and source column, however many of its dimensions are monitored), and the map from the
    source column to that column's name (for :func:`_prepared_exprs`).  Spark keeps the two
    projections apart (it does not inline a UDF referenced more than once)."""
    from pyspark.ml.functions import vector_to_array

    sources = sorted({s["source"] for s in specs if s["dim"] >= 0})
    if not sources:
        return dataset, {}
    names = {src: f"__sparkml_scale_drift_v{j}" for j, src in enumerate(sources)}
    return dataset.select("*", *[vector_to_array(qcol(src)).alias(names[src]) for src in sources]), names


def _prepared_exprs(specs: Sequence[dict], arrays: Optional[Dict[str, str]] = None) -> list:
    """Spark expressions giving ``_f{i}`` (double for numeric, string for categorical) per feature;
    vector dimensions read the array columns ``arrays`` names (from :func:`_vector_arrays`)."""
    from pyspark.ml.functions import vector_to_array

    out = []
    for i, s in enumerate(specs):
        c = qcol(s["source"])
        if s["dim"] >= 0:
            arr = F.col(arrays[s["source"]]) if arrays and s["source"] in arrays else vector_to_array(c)
            e = F.try_element_at(arr, F.lit(s["dim"] + 1))
        else:
            e = c
        if s["kind"] == "numeric":
            e = F.nanvl(e.cast("double"), F.lit(None).cast("double"))
        elif s["type"] == "numeric":
            d = e.cast("double")
            e = F.when(F.isnan(d), F.lit(None).cast("string")).otherwise(e.cast("string"))
        else:
            e = e.cast("string")
        out.append(e.alias(f"_f{i}"))
    return out


# ---------------------------------------------------------------------------------------- binning
def _layout(specs, edges, grids, cats):
    """Offsets of each feature's segment in the flat count vector, and the segment sizes."""
    sizes = []
    for i, s in enumerate(specs):
        if s["kind"] == "numeric":
            sizes.append(len(edges[i]) + 2 + 2 * len(grids[i]) + 1)
        else:
            sizes.append(len(cats[i]) + 2)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return offsets, sizes


def _make_partial_fn(specs, edges, grids, cats, perf: Optional[dict], keyed: bool):
    """The per-partition function: Arrow batches -> {key: [counts int64, perf float64]}."""
    offsets, sizes = _layout(specs, edges, grids, cats)
    total = int(offsets[-1])
    value_sets = [pa.array(c, pa.string()) if c is not None else None for c in cats]
    perf_size = _perf_size(perf)

    def batch_counts(b: pa.RecordBatch):
        import pyarrow.compute as pc

        n = b.num_rows
        if keyed:
            kcol = b.column(b.schema.get_field_index("_w")).to_numpy(zero_copy_only=False).astype(np.int64)
            keys, inv = np.unique(kcol, return_inverse=True)
        else:
            keys, inv = np.zeros(1, np.int64), np.zeros(n, np.int64)
        nk = len(keys)
        counts = np.zeros((nk, total), np.int64)
        for i, s in enumerate(specs):
            arr = b.column(b.schema.get_field_index(f"_f{i}"))
            o, size = int(offsets[i]), sizes[i]
            if s["kind"] == "numeric":
                x = arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
                miss = np.isnan(x)
                e, g = edges[i], grids[i]
                idx = np.searchsorted(e, x, side="left")
                idx[miss] = len(e) + 1
                seg = np.bincount(inv * size + idx, minlength=nk * size)
                ok = ~miss
                if ok.any():
                    xv = x[ok]
                    kidx = len(e) + 2 + np.searchsorted(g, xv, side="left") + np.searchsorted(g, xv, side="right")
                    seg += np.bincount(inv[ok] * size + kidx, minlength=nk * size)
            else:
                k = len(cats[i])
                if k:
                    idx = pc.index_in(arr, value_set=value_sets[i]).fill_null(k)
                    idx = idx.to_numpy(zero_copy_only=False).astype(np.int64)
                else:
                    idx = np.zeros(n, np.int64)
                miss = arr.is_null().to_numpy(zero_copy_only=False)
                idx[miss] = k + 1
                seg = np.bincount(inv * size + idx, minlength=nk * size)
            counts[:, o:o + size] += seg.reshape(nk, size)
        pvals = np.zeros((nk, perf_size), np.float64)
        if perf is not None:
            _perf_batch(b, perf, inv, nk, pvals)
        return keys, counts, pvals

    def partial(batches):
        acc: Dict[int, List[np.ndarray]] = {}
        for b in batches:
            if b.num_rows == 0:
                continue
            keys, counts, pvals = batch_counts(b)
            for j, key in enumerate(keys.tolist()):
                if key in acc:
                    acc[key][0] += counts[j]
                    acc[key][1] += pvals[j]
                else:
                    acc[key] = [counts[j].copy(), pvals[j].copy()]
        return acc

    return partial


def _perf_size(perf: Optional[dict]) -> int:
    if perf is None:
        return 0
    if perf["metric"] == "auc":
        return 2 * (2 * len(perf["grid"]) + 1)
    return 2


def _perf_batch(b, perf, inv, nk, out) -> None:
    import pyarrow.compute as pc

    lab = b.column(b.schema.get_field_index("_pl"))
    pred = b.column(b.schema.get_field_index("_pp"))
    metric = perf["metric"]
    if metric == "accuracy":
        ok = pc.and_(pc.is_valid(lab), pc.is_valid(pred))
        if pa.types.is_floating(lab.type):
            ok = pc.and_(ok, pc.and_(pc.invert(pc.is_nan(lab)), pc.invert(pc.is_nan(pred))))
        ok = pc.fill_null(ok, False).to_numpy(zero_copy_only=False)    # is_nan(null) is null
        eq = pc.fill_null(pc.equal(lab, pred), False).to_numpy(zero_copy_only=False)
        out[:, 0] += np.bincount(inv[ok], minlength=nk)
        out[:, 1] += np.bincount(inv[ok & eq], minlength=nk)
        return
    y = lab.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    p = pred.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    ok = ~(np.isnan(y) | np.isnan(p))
    if metric == "rmse":
        out[:, 0] += np.bincount(inv[ok], minlength=nk)
        out[:, 1] += np.bincount(inv[ok], weights=(y[ok] - p[ok]) ** 2, minlength=nk)
        return
    g = perf["grid"]
    size = 2 * len(g) + 1
    pv = p[ok]
    idx = np.searchsorted(g, pv, side="left") + np.searchsorted(g, pv, side="right")
    pos = (y[ok] == 1.0).astype(np.int64)
    out += np.bincount(inv[ok] * 2 * size + pos * size + idx, minlength=nk * 2 * size).reshape(nk, 2 * size)


def _keyed_aggregate(df, partial_fn):
    """One ``mapInArrow`` job: each partition emits one encoded ``[counts, perf]`` partial per key
    (window); the driver sums the ``partitions x windows`` small rows per key."""
    def mapper(batches):
        acc = partial_fn(batches)
        if not acc:
            return
        keys = list(acc)
        yield pa.RecordBatch.from_arrays(
            [pa.array(keys, pa.int64()), pa.array([encode_arrays(acc[k]) for k in keys], pa.binary())],
            schema=_KEYED_ARROW)

    try:
        rows = df.mapInArrow(mapper, _KEYED_SCHEMA).collect()
    except Exception as exc:  # noqa: BLE001
        raise task_error(exc, "drift evaluation") from None
    out: Dict[int, List[np.ndarray]] = {}
    for r in rows:
        arrays = decode_arrays(r["payload"])
        k = int(r["key"])
        if k in out:
            for a, b in zip(out[k], arrays):
                a += b
        else:
            out[k] = [np.array(a, copy=True) for a in arrays]
    return out


def _aggregate(df, partial_fn, keyed: bool) -> Dict[int, List[np.ndarray]]:
    if keyed:
        return _keyed_aggregate(df, partial_fn)

    def flat(batches):
        acc = partial_fn(batches)
        return acc.get(0) if acc else None

    try:
        res, _ = tree_aggregate(df, flat, depth=1)
    except (ValueError, TypeError):
        raise
    except Exception as exc:  # noqa: BLE001
        raise task_error(exc, "drift histogram pass") from None
    return {} if res is None else {0: res}


# ---------------------------------------------------------------------------------------- statistics
def psi(ref_counts: np.ndarray, cur_counts: np.ndarray, floor: float = PSI_FLOOR) -> float:
    """Population stability index of two histograms on the same bins (counts, any shape ``(k,)``).

    ``sum((c - r) * ln(c / r))`` over the bin proportions ``r, c``, each floored at ``floor``;
    0 when either histogram is empty.  Siddiqi (2006), Yurdakul (2018).
    """
    r = np.asarray(ref_counts, np.float64)
    c = np.asarray(cur_counts, np.float64)
    if r.sum() <= 0 or c.sum() <= 0:
        return 0.0
    r = np.maximum(r / r.sum(), floor)
    c = np.maximum(c / c.sum(), floor)
    return float(np.sum((c - r) * np.log(c / r)))


def _ks(ref_ks: np.ndarray, cur_ks: np.ndarray):
    """Grid KS statistic, its error bound and asymptotic p-value from the ``2G + 1`` interleaved
    (open cell, grid point) counts of both samples (see the module docstring)."""
    from scipy.stats import distributions

    nr, nc = int(ref_ks.sum()), int(cur_ks.sum())
    if nr == 0 or nc == 0:
        return math.nan, math.nan, math.nan
    fr = np.cumsum(ref_ks) / nr
    fc = np.cumsum(cur_ks) / nc
    d_at = (fr - fc)[1::2]                       # signed F_r - F_c at each grid point
    d_grid = float(np.max(np.abs(d_at))) if len(d_at) else 0.0
    left = np.concatenate([[0.0], d_at])        # signed difference at the left end of each open cell
    mr = ref_ks[0::2] / nr                       # mass of each open cell
    mc = cur_ks[0::2] / nc
    upper = max(d_grid, float(np.max(np.maximum(np.abs(left - mc), np.abs(left + mr)))))
    m, n = sorted([float(nr), float(nc)], reverse=True)
    en = max(1.0, float(np.round(m * n / (m + n))))
    p = float(np.clip(distributions.kstwo.sf(d_grid, en), 0.0, 1.0))
    return d_grid, max(upper - d_grid, 0.0), p


def _chi2_p(ref: np.ndarray, cur: np.ndarray) -> float:
    from scipy.stats import chi2_contingency

    table = np.vstack([ref, cur]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or table[0].sum() == 0 or table[1].sum() == 0:
        return 1.0
    return float(chi2_contingency(table).pvalue)


def _js(ref: np.ndarray, cur: np.ndarray) -> float:
    from scipy.spatial.distance import jensenshannon

    if ref.sum() == 0 or cur.sum() == 0:
        return math.nan
    return float(jensenshannon(ref.astype(np.float64), cur.astype(np.float64), base=2))


def _auc(counts: np.ndarray) -> float:
    size = len(counts) // 2
    neg, pos = counts[:size], counts[size:]
    npos, nneg = pos.sum(), neg.sum()
    if npos == 0 or nneg == 0:
        return math.nan
    below = np.cumsum(neg) - neg
    return float(np.sum(pos * (below + 0.5 * neg)) / (npos * nneg))


def _metric(perf: dict, vals: np.ndarray) -> (float, int):
    if perf["metric"] == "auc":
        return _auc(vals), int(vals.sum())
    n = int(vals[0])
    if n == 0:
        return math.nan, 0
    if perf["metric"] == "accuracy":
        return float(vals[1] / n), n
    return float(math.sqrt(vals[1] / n)), n


# ---------------------------------------------------------------------------------------- report
class DriftReport:
    """Result of :meth:`DriftModel.evaluate`.

    ``toPandas()``: one row per feature (per window and feature with ``windowCol``), columns
    ``window`` (windowed only; window start, UTC ``Timestamp``), ``feature`` (str), ``kind``
    (``"numeric"``/``"categorical"``), ``count`` (int64, current rows), ``missingRate`` (float64,
    null/NaN share of ``count``), ``psi``, ``ksStatistic``, ``ksPValue``, ``ksErrorBound``
    (numeric; NaN for categorical), ``jsDistance``, ``chi2PValue`` (categorical; NaN for numeric),
    ``drifted`` (bool), ``flaggedBy`` (comma-separated tests among ``psi, ks, chi2, js`` that fired,
    ``""`` if none).  ``performance``: ``None`` without ``labelCol``, else a pandas DataFrame with
    ``window`` (windowed only), ``metric``, ``reference``, ``current``, ``change`` (current -
    reference), ``count`` (current rows with label and prediction).

    ``model`` (str) names the model in exported metrics (default: the :class:`DriftModel`'s uid);
    ``created`` is the report's time (Unix seconds, float).  The PSI histograms of every feature are
    kept (:meth:`histogram`), so a report is ``bins x features x windows`` numbers in size.
    """

    def __init__(self, table, performance=None, histograms=None, bins=None, model: str = "model",
                 created: Optional[float] = None):
        import time

        self._table = table
        self.performance = performance
        # {window (Timestamp or None): {feature: current counts}} and {feature: (labels, reference counts)}
        self._histograms = histograms or {}
        self._bins = bins or {}
        self.model = model
        self.created = time.time() if created is None else float(created)

    def toPandas(self):
        """The per-feature table (a copy), see the class docstring."""
        return self._table.copy()

    def toDataFrame(self, spark):
        """The per-feature table as a Spark DataFrame (e.g. to append it to a table from ``foreachBatch``)."""
        return spark.createDataFrame(self._table)

    @property
    def drifted(self) -> List[str]:
        """Names of the drifted features (in any window), in report order."""
        t = self._table
        return list(dict.fromkeys(t.loc[t["drifted"], "feature"].tolist()))

    @property
    def windows(self) -> list:
        """Window starts of a windowed report (UTC ``Timestamp``, ascending); ``[None]`` otherwise."""
        return list(self._histograms) or [None]

    def histogram(self, feature: str, window=None):
        """The PSI bins of ``feature`` as a pandas DataFrame: ``bin`` (str label: ``"<= e1"``,
        ``"(e1, e2]"``, ..., ``"> ek"`` for numeric features, the category for categorical ones, then
        ``"other"``; ``"missing"`` last), ``reference`` and ``current`` (int64 counts).  ``window``: a
        window start of a windowed report (default the last window).  ``ValueError`` for a feature
        that is not monitored or a window not in the report."""
        import pandas as pd

        if feature not in self._bins:
            raise ValueError(f"feature {feature!r} is not in this report; features: {list(self._bins)}")
        if window is None:
            window = self.windows[-1]
        elif window not in self._histograms:
            raise ValueError(f"window {window!r} is not in this report; windows: {self.windows}")
        labels, ref = self._bins[feature]
        cur = self._histograms.get(window, {}).get(feature, np.zeros(len(ref), np.int64))
        return pd.DataFrame({"bin": list(labels), "reference": np.asarray(ref, np.int64),
                             "current": np.asarray(cur, np.int64)})

    def toDict(self) -> Dict[str, Any]:
        """A JSON-serialisable dict: ``features`` (the table's rows; NaN as ``None``, windows as ISO
        strings), ``performance`` (rows or ``None``), ``histograms`` (``{feature: {"bins", "reference",
        "current"}}`` of the last window), ``model`` and ``created``."""
        def records(df):
            df = df.astype(object).where(df.notna(), None)
            if "window" in df:
                df["window"] = [w.isoformat() if w is not None else None for w in df["window"]]
            return df.to_dict(orient="records")

        hists = {}
        for f in self._bins:
            h = self.histogram(f)
            hists[f] = {"bins": h["bin"].tolist(), "reference": h["reference"].tolist(),
                        "current": h["current"].tolist()}
        perf = None if self.performance is None else records(self.performance)
        return {"model": self.model, "created": self.created, "features": records(self._table),
                "performance": perf, "histograms": hists}

    def toPrometheus(self, model: Optional[str] = None) -> str:
        """The report in Prometheus' text exposition format (``prometheus_client``), for a scrape
        endpoint or a file.  See :mod:`sparkml_scale.monitoring.prometheus` for the metric names and
        labels (``model`` defaults to :attr:`model`).  Windowed reports export their last window.
        ``ImportError`` naming the ``[monitoring]`` extra without ``prometheus_client``."""
        from .prometheus import exposition

        return exposition(self, model)

    def writeTextfile(self, path: str, model: Optional[str] = None) -> None:
        """Write :meth:`toPrometheus` to ``path`` (a ``*.prom`` file in node-exporter's
        ``--collector.textfile.directory``) atomically: a temporary file renamed over ``path``, so the
        collector never reads a half-written file."""
        from .prometheus import write_textfile

        write_textfile(self, path, model)

    def pushToGateway(self, url: str, job: str, model: Optional[str] = None,
                      groupingKey: Optional[Dict[str, str]] = None, timeout: float = 30.0) -> None:
        """Push the metrics to a Prometheus Pushgateway at ``url`` (``host:port`` or ``http://...``)
        under ``job`` (HTTP PUT: replaces that job's group), with ``prometheus_client.push_to_gateway``.
        Errors of the connection propagate (``URLError``/``OSError``)."""
        from .prometheus import push

        push(self, url, job, model, groupingKey, timeout)

    def plot(self, path: Optional[str] = None, top: int = 6):
        """A matplotlib ``Figure`` of the reference and current bin proportions of the ``top`` features
        (drifted first, by PSI), saved as PNG to ``path`` when given (needs ``matplotlib``)."""
        from .plots import plot_histograms

        return plot_histograms(self, top=top, path=path)

    def __repr__(self) -> str:
        return f"DriftReport({len(self._table)} rows, drifted={self.drifted})"


# ---------------------------------------------------------------------------------------- estimator
class DriftDetector(_DriftParams, Estimator, ParamsReadWrite):
    """Learns the reference bins and histograms of ``inputCols`` (and the prediction) for drift detection.

    ``fit(reference)`` runs three Spark jobs whatever the number of features (one
    aggregation query of two jobs, one ``mapInArrow`` pass; see :mod:`sparkml_scale.monitoring.drift`)
    and returns a :class:`DriftModel`.

    Params: ``inputCols`` (list of str: numeric, string, boolean or vector columns),
    ``categoricalCols`` (numeric columns treated as categories; default ``[]``), ``numBins``
    (default 10), ``ksGridSize`` (default 512), ``quantileAccuracy`` (default 1e-3),
    ``maxCategories`` (default 20), ``maxVectorDims`` (default 20), ``psiThreshold`` (0.2),
    ``ksAlpha`` (0.05), ``chi2Alpha`` (0.05), ``jsThreshold`` (0.1), ``flagTests`` (default all
    four), ``predictionCol``, ``labelCol`` (default ``""``: off), ``performanceMetric``
    (``"auto"``).

    Raises ``ValueError``/``TypeError`` naming the param or column for bad params, missing columns,
    columns that cannot be binned, and an empty reference.
    """

    @keyword_only
    def __init__(self, *, inputCols: Optional[List[str]] = None, categoricalCols: Optional[List[str]] = None,
                 numBins: int = 10, ksGridSize: int = 512, quantileAccuracy: float = 1e-3, maxCategories: int = 20,
                 maxVectorDims: int = 20, psiThreshold: float = 0.2, ksAlpha: float = 0.05, chi2Alpha: float = 0.05,
                 jsThreshold: float = 0.1, flagTests: Optional[List[str]] = None, predictionCol: str = "",
                 labelCol: str = "", performanceMetric: str = "auto") -> None:
        super().__init__()
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, inputCols: Optional[List[str]] = None, categoricalCols: Optional[List[str]] = None,
                  numBins: int = 10, ksGridSize: int = 512, quantileAccuracy: float = 1e-3, maxCategories: int = 20,
                  maxVectorDims: int = 20, psiThreshold: float = 0.2, ksAlpha: float = 0.05, chi2Alpha: float = 0.05,
                  jsThreshold: float = 0.1, flagTests: Optional[List[str]] = None, predictionCol: str = "",
                  labelCol: str = "", performanceMetric: str = "auto") -> "DriftDetector":
        return self._set(**self._input_kwargs)

    def _set(self, **kwargs):
        return super()._set(**{k: v for k, v in kwargs.items() if v is not None})

    def setInputCols(self, value: List[str]) -> "DriftDetector":
        return self._set(inputCols=value)

    def setCategoricalCols(self, value: List[str]) -> "DriftDetector":
        return self._set(categoricalCols=value)

    def setNumBins(self, value: int) -> "DriftDetector":
        return self._set(numBins=value)

    def setKsGridSize(self, value: int) -> "DriftDetector":
        return self._set(ksGridSize=value)

    def setQuantileAccuracy(self, value: float) -> "DriftDetector":
        return self._set(quantileAccuracy=value)

    def setMaxCategories(self, value: int) -> "DriftDetector":
        return self._set(maxCategories=value)

    def setMaxVectorDims(self, value: int) -> "DriftDetector":
        return self._set(maxVectorDims=value)

    def setPredictionCol(self, value: str) -> "DriftDetector":
        return self._set(predictionCol=value)

    def setLabelCol(self, value: str) -> "DriftDetector":
        return self._set(labelCol=value)

    def setPerformanceMetric(self, value: str) -> "DriftDetector":
        return self._set(performanceMetric=value)

    # ------------------------------------------------------------------ fit
    def _specs(self, schema: T.StructType) -> List[dict]:
        cats = set(self.getCategoricalCols())
        specs = []
        pred = self.getPredictionCol()
        cols = list(self.getInputCols()) if self.isDefined(self.inputCols) else []
        roles = [(c, "inputCols", "input") for c in cols]
        if pred and pred not in cols:
            roles.append((pred, "predictionCol", "prediction"))
        for c, param, role in roles:
            tc = _column_type(schema, c, param)
            if tc == "vector":
                if c in cats:
                    raise TypeError(f"column {c!r} (param 'categoricalCols') is a vector column; only numeric "
                                    "columns can be made categorical")
                for d in range(self.getMaxVectorDims()):
                    specs.append(dict(name=f"{c}[{d}]", source=c, dim=d, kind="numeric", type=tc, role=role))
            else:
                kind = "categorical" if tc in ("string", "boolean") or c in cats else "numeric"
                specs.append(dict(name=c, source=c, dim=-1, kind=kind, type=tc, role=role))
        return specs

    def _fit(self, dataset: DataFrame) -> "DriftModel":
        self._validate_params()
        schema = dataset.schema
        specs = self._specs(schema)
        label, pred = self.getLabelCol(), self.getPredictionCol()
        perf: Optional[dict] = None
        if label:
            ltc = _column_type(schema, label, "labelCol")
            if ltc == "vector":
                raise TypeError(f"column {label!r} (param 'labelCol') is a vector column; labels must be numeric, "
                                "string or boolean")
            perf = dict(metric=self.getPerformanceMetric(), label=label, prediction=pred, labelType=ltc,
                        predictionType=_type_class(schema[pred].dataType),
                        labelIntegral=_is_integral(schema[label].dataType),
                        predictionIntegral=_is_integral(schema[pred].dataType))
            if perf["metric"] == "auc" and ltc not in ("numeric", "boolean"):
                raise TypeError(f"column {label!r} (param 'labelCol') must be numeric (1 = positive) for "
                                f"performanceMetric='auc', got {ltc}")
        score_auc = perf is not None and (perf["metric"] == "auc" or (perf["metric"] == "auto"
                                                                     and perf["predictionType"] == "vector"))
        pred_i = [i for i, s in enumerate(specs) if s["role"] == "prediction" and s["dim"] < 0
                  and s["kind"] == "numeric"]
        cat_pred = perf is not None and perf["metric"] in ("auto", "accuracy") and bool(pred_i)
        aux = []  # helper columns of the first two jobs
        if score_auc:
            aux.append(_score_expr(perf).alias("_ps"))
        label_card = perf is not None and perf["metric"] == "auto" and not score_auc
        if label_card:
            aux.append(qcol(label).cast("string").alias("_pl"))
        if cat_pred:
            aux.append(_prepared_exprs([dict(specs[pred_i[0]], kind="categorical")])[0].alias("_pcat"))
        with_arrays, arrays = _vector_arrays(dataset, specs)
        prepared = with_arrays.select(*_prepared_exprs(specs, arrays), *aux)
        num = [i for i, s in enumerate(specs) if s["kind"] == "numeric"]
        G, B = self.getKsGridSize(), self.getNumBins()
        bin_p = [i / B for i in range(1, B)]
        grid_p = [j / (G - 1) for j in range(G)]
        probs = sorted(set(round(p, 12) for p in bin_p + grid_p))
        pos = {p: k for k, p in enumerate(probs)}
        qcols = [f"_f{i}" for i in num] + (["_ps"] if score_auc else [])
        catidx = [i for i, s in enumerate(specs) if s["kind"] == "categorical"]
        tcols = [f"_f{i}" for i in catidx] + (["_pl"] if label_card else []) + (["_pcat"] if cat_pred else [])
        k = self.getMaxCategories()
        # one aggregation (one query; two Spark jobs under adaptive execution) for every feature at once:
        # the quantiles of the numeric ones, the most frequent values of the categorical ones
        quant, top = _reference_summaries(prepared, qcols, probs, self.getQuantileAccuracy(), tcols, k)
        edges: List[Optional[np.ndarray]] = [None] * len(specs)
        grids: List[Optional[np.ndarray]] = [None] * len(specs)
        drop = set()

        def pick(q, ps):
            return np.unique(q[[pos[round(p, 12)] for p in ps]]) if q.size else np.zeros(0)

        for j, i in enumerate(num):
            q = np.asarray(quant[j], np.float64)
            if q.size == 0 and specs[i]["dim"] >= 0:
                drop.add(i)          # a vector dimension the reference vectors do not have
                continue
            edges[i], grids[i] = pick(q, bin_p), pick(q, grid_p)
        score_grid = pick(np.asarray(quant[-1], np.float64), grid_p) if score_auc else None
        cats: List[Optional[List[str]]] = [top[f"_f{i}"][:k] if i in catidx else None for i in range(len(specs))]
        if perf is not None:
            perf = _resolve_metric(perf, top.get("_pl"), k, set(self.getCategoricalCols()))
            perf["grid"] = score_grid if perf["metric"] == "auc" else None
            if perf["metric"] == "auc" and (score_grid is None or score_grid.size == 0):
                raise ValueError(f"column {pred!r} (param 'predictionCol') has no non-missing score in the "
                                 "reference")
            if perf["metric"] == "accuracy" and cat_pred:
                # the prediction of a classifier is monitored as a category
                i = pred_i[0]
                specs[i] = dict(specs[i], kind="categorical")
                cats[i], edges[i], grids[i] = top["_pcat"][:k], None, None
        keep = [i for i in range(len(specs)) if i not in drop]
        if not keep:
            raise ValueError("no feature to monitor: the vector columns of 'inputCols' are null in every "
                             "reference row")
        specs, edges, grids, cats = ([a[i] for i in keep] for a in (specs, edges, grids, cats))
        # job 3: the reference histograms
        with_arrays, arrays = _vector_arrays(dataset, specs)
        prepared = with_arrays.select(*_prepared_exprs(specs, arrays), *_label_exprs(perf))
        partial = _make_partial_fn(specs, edges, grids, cats, perf, keyed=False)
        res = _aggregate(prepared, partial, keyed=False)
        n = _rows(specs, edges, grids, cats, res[0][0]) if res else 0
        if n == 0:
            raise ValueError("the reference DataFrame is empty: fit needs at least one row")
        counts, pvals = res[0]
        model = DriftModel._create(specs, edges, grids, cats, counts, pvals, n, perf,
                                   {s["source"]: _type_class(schema[s["source"]].dataType) for s in specs})
        self._copyValues(model)
        return model


def _score_expr(perf: dict):
    """The AUC score: element 1 of a vector prediction (the positive class), else the numeric prediction."""
    from pyspark.ml.functions import vector_to_array

    pred = qcol(perf["prediction"])
    if perf["predictionType"] == "vector":
        return F.try_element_at(vector_to_array(pred), F.lit(2)).cast("double")
    return pred.cast("double")


def _label_exprs(perf: Optional[dict]) -> list:
    """``_pl`` (label) and ``_pp`` (prediction or score) for the resolved metric."""
    if perf is None:
        return []
    lab, pred = qcol(perf["label"]), qcol(perf["prediction"])
    metric = perf["metric"]
    if metric == "accuracy":
        t = "double" if perf["labelType"] == "numeric" and perf["predictionType"] == "numeric" else "string"
        return [lab.cast(t).alias("_pl"), pred.cast(t).alias("_pp")]
    if metric == "rmse":
        return [lab.cast("double").alias("_pl"), pred.cast("double").alias("_pp")]
    return [lab.cast("double").alias("_pl"), _score_expr(perf).alias("_pp")]


def _resolve_metric(perf: dict, label_values, max_categories: int, categorical: set) -> dict:
    perf = dict(perf)
    if perf["metric"] == "auto":
        if perf["predictionType"] == "vector":
            perf["metric"] = "auc"
        elif (perf["labelType"] in ("string", "boolean") or perf["predictionType"] in ("string", "boolean")
              or perf["labelIntegral"] or perf["predictionIntegral"] or perf["label"] in categorical):
            perf["metric"] = "accuracy"
        else:
            vals = label_values or []
            whole = all(_whole(v) for v in vals)
            perf["metric"] = "accuracy" if vals and len(vals) <= max_categories and whole else "rmse"
    if perf["metric"] == "auc" and perf["predictionType"] not in ("vector", "numeric"):
        raise TypeError(f"column {perf['prediction']!r} (param 'predictionCol') must be a vector or numeric score "
                        "for performanceMetric='auc'")
    if perf["metric"] == "rmse" and (perf["labelType"] != "numeric" or perf["predictionType"] != "numeric"):
        raise TypeError(f"performanceMetric='rmse' needs numeric label and prediction columns "
                        f"({perf['label']!r}: {perf['labelType']}, {perf['prediction']!r}: {perf['predictionType']})")
    return perf


def _whole(v: str) -> bool:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return math.isfinite(f) and f == int(f)


#: ``maxItemsTracked`` of Spark's ``approx_top_k`` (DataSketches frequent items) when selecting categories.
MAX_ITEMS_TRACKED = 10000


def _reference_summaries(prepared: DataFrame, qcols: List[str], probs: List[float], rel_error: float,
                         tcols: List[str], k: int):
    """Quantiles of every column of ``qcols`` and the ``k + 1`` most frequent values of every column of
    ``tcols``, from one aggregation query over ``prepared``.

    Quantiles: ``percentile_approx(col, probs, accuracy = ceil(1 / rel_error))``, the Greenwald-Khanna
    summaries of ``DataFrame.approxQuantile`` (rank error at most ``rel_error * n``); nulls are ignored
    (NaN was turned into null before).  A column without any value gives ``[]``.  Frequent values:
    Spark's ``approx_top_k(col, k + 1, MAX_ITEMS_TRACKED)`` (Apache DataSketches frequent items: exact
    when a column has fewer distinct values than the sketch tracks, else the heavy hitters); ties are
    broken by value.  Only the *choice* of the kept categories comes from it: the counts the report uses
    are exact, from the histogram pass.
    """
    accuracy = int(math.ceil(1.0 / rel_error))
    aggs = [F.percentile_approx(F.col(c), F.array(*[F.lit(float(p)) for p in probs]), accuracy).alias(f"q{j}")
            for j, c in enumerate(qcols)]
    aggs += [F.call_function("approx_top_k", F.col(c), F.lit(k + 1), F.lit(MAX_ITEMS_TRACKED)).alias(f"t{j}")
             for j, c in enumerate(tcols)]
    row = _run(prepared.agg(*aggs).collect, "reference quantiles and categories")[0]
    quant = [list(row[f"q{j}"] or []) for j in range(len(qcols))]
    top = {}
    for j, c in enumerate(tcols):
        items = [(int(r["count"]), r["item"]) for r in (row[f"t{j}"] or []) if r["item"] is not None]
        top[c] = [v for _, v in sorted(items, key=lambda t: (-t[0], t[1]))][: k + 1]
    return quant, top


def _run(action, what: str):
    try:
        return action()
    except (ValueError, TypeError) as exc:
        if "JVM" in str(exc) or "SQLSTATE" in str(exc):
            raise task_error(exc, what) from None
        raise
    except Exception as exc:  # noqa: BLE001
        raise task_error(exc, what) from None


def _rows(specs, edges, grids, cats, counts) -> int:
    """Rows counted by the first feature's segment (every feature counts every row once)."""
    offsets, sizes = _layout(specs, edges, grids, cats)
    s = specs[0]
    o = int(offsets[0])
    if s["kind"] == "numeric":
        return int(counts[o:o + len(edges[0]) + 2].sum())
    return int(counts[o:o + sizes[0]].sum())


# ---------------------------------------------------------------------------------------- model
class DriftModel(_DriftParams, Model, ParamsReadWrite):
    """Reference bins and histograms learned by :class:`DriftDetector`; :meth:`evaluate` compares
    current data with them.

    Fitted attributes: ``features`` (monitored feature names, in report order), ``kinds``,
    ``referenceCount`` (reference rows), :meth:`binEdges`, :meth:`ksGrid`, :meth:`categories`,
    :meth:`referenceHistogram`, ``performanceMetricUsed`` and ``referencePerformance``.
    ``transform(df)`` returns ``evaluate(df)`` as a Spark DataFrame (one row per feature).
    Saved as JSON metadata plus numeric arrays (no pickle).
    """

    def __init__(self) -> None:
        super().__init__()
        self._specs: List[dict] = []
        self._edges: List[Optional[np.ndarray]] = []
        self._grids: List[Optional[np.ndarray]] = []
        self._cats: List[Optional[List[str]]] = []
        self._counts = np.zeros(0, np.int64)
        self._pvals = np.zeros(0, np.float64)
        self._n = 0
        self._perf: Optional[dict] = None
        self._types: Dict[str, str] = {}

    @classmethod
    def _create(cls, specs, edges, grids, cats, counts, pvals, n, perf, types) -> "DriftModel":
        m = cls()
        m._specs, m._edges, m._grids, m._cats = specs, edges, grids, cats
        m._counts = np.asarray(counts, np.int64)
        m._pvals = np.asarray(pvals, np.float64)
        m._n, m._perf, m._types = int(n), perf, types
        return m

    # ------------------------------------------------------------------ fitted attributes
    @property
    def features(self) -> List[str]:
        return [s["name"] for s in self._specs]

    @property
    def kinds(self) -> Dict[str, str]:
        """Feature name -> ``"numeric"`` or ``"categorical"``."""
        return {s["name"]: s["kind"] for s in self._specs}

    @property
    def referenceCount(self) -> int:
        return self._n

    def _index(self, feature: str) -> int:
        for i, s in enumerate(self._specs):
            if s["name"] == feature:
                return i
        raise ValueError(f"feature {feature!r} is not monitored by this model; features: {self.features}")

    def binEdges(self, feature: str) -> np.ndarray:
        """Inner PSI bin edges of a numeric feature, float64 ``(k,)``: bins ``(-inf, e1], ..., (ek, inf)``
        then a missing bin.  ``ValueError`` for a categorical or unknown feature."""
        i = self._index(feature)
        if self._specs[i]["kind"] != "numeric":
            raise ValueError(f"feature {feature!r} is categorical: it has categories, not bin edges")
        return self._edges[i].copy()

    def ksGrid(self, feature: str) -> np.ndarray:
        """The KS grid (sorted unique reference quantiles, float64) of a numeric feature."""
        i = self._index(feature)
        if self._specs[i]["kind"] != "numeric":
            raise ValueError(f"feature {feature!r} is categorical: it has no KS grid")
        return self._grids[i].copy()

    def categories(self, feature: str) -> List[str]:
        """The kept categories (as strings, most frequent first) of a categorical feature; the bins are
        these, then ``"other"``, then missing."""
        i = self._index(feature)
        if self._specs[i]["kind"] != "categorical":
            raise ValueError(f"feature {feature!r} is numeric: it has bin edges, not categories")
        return list(self._cats[i])

    def referenceHistogram(self, feature: str) -> np.ndarray:
        """Reference counts on the PSI bins of ``feature`` (int64; numeric: ``len(binEdges) + 1`` bins then
        missing; categorical: categories, other, missing)."""
        i = self._index(feature)
        return self._psi_counts(i, self._counts).copy()

    @property
    def performanceMetricUsed(self) -> Optional[str]:
        """``"auc"``, ``"accuracy"``, ``"rmse"``, or ``None`` without ``labelCol``."""
        return None if self._perf is None else self._perf["metric"]

    @property
    def referencePerformance(self) -> Optional[float]:
        return None if self._perf is None else _metric(self._perf, self._pvals)[0]

    def _segment(self, i: int, counts: np.ndarray) -> np.ndarray:
        offsets, sizes = _layout(self._specs, self._edges, self._grids, self._cats)
        return counts[int(offsets[i]):int(offsets[i]) + sizes[i]]

    def _psi_counts(self, i: int, counts: np.ndarray) -> np.ndarray:
        seg = self._segment(i, counts)
        if self._specs[i]["kind"] == "numeric":
            return seg[:len(self._edges[i]) + 2]
        return seg

    # ------------------------------------------------------------------ evaluate
    def _check_current(self, schema: T.StructType) -> None:
        missing = [c for c in self._types if c not in schema.names]
        if self._perf is not None and self._perf["label"] not in schema.names:
            missing.append(self._perf["label"])
        if missing:
            raise ValueError(f"the current DataFrame lacks column(s) {missing} of the reference; current columns: "
                             f"{schema.names}")
        diff = []
        for c, t in self._types.items():
            cur = _type_class(schema[c].dataType)
            if cur != t:
                diff.append(f"{c!r}: reference {t}, current {schema[c].dataType.simpleString()}")
        if diff:
            raise ValueError("the current DataFrame's column types differ from the reference: " + "; ".join(diff))

    def evaluate(self, dataset: DataFrame, windowCol: Optional[str] = None,
                 windowDuration: Optional[str] = None) -> DriftReport:
        """Compare ``dataset`` (the current data) with the reference: one ``mapInArrow`` job.

        ``windowCol`` (a timestamp or date column) and ``windowDuration`` (a Spark interval string such as
        ``"1 day"``, see ``pyspark.sql.functions.window``) give one row per (window, feature).  Returns a
        :class:`DriftReport`.  Raises ``ValueError`` for missing columns or columns whose type changed
        (naming them), an empty ``dataset``, and a ``windowCol`` without ``windowDuration`` (or the other
        way round); ``TypeError`` for a ``windowCol`` that is not a timestamp or date.
        """
        self._validate_params()
        schema = dataset.schema
        self._check_current(schema)
        keyed = windowCol is not None or windowDuration is not None
        with_arrays, arrays = _vector_arrays(dataset, self._specs)
        exprs = _prepared_exprs(self._specs, arrays) + _label_exprs(self._perf)
        if keyed:
            if not windowCol or not windowDuration:
                raise ValueError("evaluate: give both windowCol and windowDuration (or neither)")
            wtype = check_column(schema, windowCol, "windowCol")
            if not isinstance(wtype, (T.TimestampType, T.TimestampNTZType, T.DateType)):
                raise TypeError(f"column {windowCol!r} (param 'windowCol') must be a timestamp or date, got "
                                f"{wtype.simpleString()}")
            ts = qcol(windowCol)
            if isinstance(wtype, T.DateType):
                ts = ts.cast("timestamp")
            wkey = F.unix_micros(F.window(ts, windowDuration).start.cast("timestamp"))
            prepared = with_arrays.where(qcol(windowCol).isNotNull()).select(*exprs, wkey.alias("_w"))
        else:
            prepared = with_arrays.select(*exprs)
        partial = _make_partial_fn(self._specs, self._edges, self._grids, self._cats, self._perf, keyed=keyed)
        res = _aggregate(prepared, partial, keyed=keyed)
        if not res:
            raise ValueError("the current DataFrame is empty" + (" (or every windowCol value is null)" if keyed else "")
                             + ": evaluate needs at least one row")
        return self._report(res, keyed)

    def _report(self, res: Dict[int, List[np.ndarray]], keyed: bool) -> DriftReport:
        import pandas as pd

        flag_tests = set(self.getFlagTests())
        rows, perf_rows, hists = [], [], {}
        for key in sorted(res):
            counts, pvals = res[key]
            window = pd.Timestamp(int(key), unit="us", tz="UTC") if keyed else None
            for i, s in enumerate(self._specs):
                ref_psi = self._psi_counts(i, self._counts)
                cur_psi = self._psi_counts(i, counts)
                hists.setdefault(window, {})[s["name"]] = cur_psi.copy()
                n = int(cur_psi.sum())
                miss = int(cur_psi[-1])
                row = dict(feature=s["name"], kind=s["kind"], count=n, missingRate=miss / n if n else math.nan,
                           psi=psi(ref_psi, cur_psi), ksStatistic=math.nan, ksPValue=math.nan,
                           ksErrorBound=math.nan, jsDistance=math.nan, chi2PValue=math.nan)
                flags = []
                if row["psi"] > self.getPsiThreshold():
                    flags.append("psi")
                if s["kind"] == "numeric":
                    seg_r, seg_c = self._segment(i, self._counts), self._segment(i, counts)
                    k0 = len(self._edges[i]) + 2
                    d, bound, p = _ks(seg_r[k0:], seg_c[k0:])
                    row.update(ksStatistic=d, ksErrorBound=bound, ksPValue=p)
                    if p == p and p < self.getKsAlpha():
                        flags.append("ks")
                else:
                    row["jsDistance"] = _js(ref_psi, cur_psi)
                    row["chi2PValue"] = _chi2_p(ref_psi, cur_psi)
                    if row["chi2PValue"] < self.getChi2Alpha():
                        flags.append("chi2")
                    if row["jsDistance"] > self.getJsThreshold():
                        flags.append("js")
                row["drifted"] = any(f in flag_tests for f in flags)
                row["flaggedBy"] = ",".join(flags)
                if keyed:
                    row = dict(window=window, **row)
                rows.append(row)
            if self._perf is not None:
                ref_m, _ = _metric(self._perf, self._pvals)
                cur_m, cnt = _metric(self._perf, pvals)
                prow = dict(metric=self._perf["metric"], reference=ref_m, current=cur_m, change=cur_m - ref_m,
                            count=cnt)
                perf_rows.append(dict(window=window, **prow) if keyed else prow)
        table = pd.DataFrame(rows)
        table["count"] = table["count"].astype("int64")
        table["drifted"] = table["drifted"].astype(bool)
        perf = pd.DataFrame(perf_rows) if self._perf is not None else None
        bins = {s["name"]: (self._bin_labels(i), self._psi_counts(i, self._counts).copy())
                for i, s in enumerate(self._specs)}
        return DriftReport(table, perf, hists, bins, model=self.uid)

    def _bin_labels(self, i: int) -> List[str]:
        if self._specs[i]["kind"] == "numeric":
            e = [f"{v:.6g}" for v in self._edges[i]]
            if not e:
                return ["all", "missing"]
            inner = [f"({a}, {b}]" for a, b in zip(e[:-1], e[1:])]
            return [f"<= {e[0]}"] + inner + [f"> {e[-1]}", "missing"]
        return [str(c) for c in self._cats[i]] + ["other", "missing"]

    def _transform(self, dataset: DataFrame) -> DataFrame:
        return self.evaluate(dataset).toDataFrame(dataset.sparkSession)

    # ------------------------------------------------------------------ persistence
    def _extra_metadata(self) -> Dict[str, Any]:
        perf = None
        if self._perf is not None:
            perf = {k: v for k, v in self._perf.items() if k != "grid"}
        return {"drift": {"specs": self._specs, "categories": self._cats, "referenceCount": self._n,
                          "performance": perf, "types": self._types}}

    def _model_arrays(self) -> Dict[str, np.ndarray]:
        out = {"counts": self._counts, "perf": self._pvals}
        for i, s in enumerate(self._specs):
            if s["kind"] == "numeric":
                out[f"edges_{i}"] = np.asarray(self._edges[i], np.float64)
                out[f"grid_{i}"] = np.asarray(self._grids[i], np.float64)
        if self._perf is not None and self._perf.get("grid") is not None:
            out["scoreGrid"] = np.asarray(self._perf["grid"], np.float64)
        return out

    @classmethod
    def _from_arrays(cls, arrays: Dict[str, np.ndarray], metadata: Dict[str, Any]) -> "DriftModel":
        try:
            meta = metadata["drift"]
            specs, cats = meta["specs"], meta["categories"]
            edges = [arrays.get(f"edges_{i}") if s["kind"] == "numeric" else None for i, s in enumerate(specs)]
            grids = [arrays.get(f"grid_{i}") if s["kind"] == "numeric" else None for i, s in enumerate(specs)]
            if any(s["kind"] == "numeric" and (e is None or g is None) for s, e, g in zip(specs, edges, grids)):
                raise KeyError("edges")
            perf = meta["performance"]
            if perf is not None:
                perf = dict(perf, grid=arrays.get("scoreGrid"))
            offsets, _ = _layout(specs, edges, grids, cats)
            if arrays["counts"].shape != (int(offsets[-1]),):
                raise KeyError("counts")
            return cls._create(specs, edges, grids, cats, arrays["counts"], arrays["perf"], meta["referenceCount"],
                               perf, meta["types"])
        except (KeyError, TypeError, IndexError) as exc:
            raise ModelLoadError(f"saved DriftModel data is incomplete or corrupted ({exc})") from None

    def __repr__(self) -> str:
        return f"DriftModel: uid={self.uid}, features={len(self._specs)}, referenceCount={self._n}"
