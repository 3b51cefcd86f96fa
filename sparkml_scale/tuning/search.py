"""``HyperparameterSearch``: random and Bayesian (TPE) search over any pyspark.ml Estimator.

pyspark.ml tunes only over exhaustive grids (``CrossValidator``, ``TrainValidationSplit``).
This Estimator lets Optuna (https://optuna.org; Akiba et al., KDD 2019) choose the parameter
sets -- TPE (Bergstra et al., NeurIPS 2011) or random sampling -- and runs each trial's fits as
ordinary Spark jobs from driver threads, ``parallelism`` trials at once, as CrossValidator's
``parallelism`` does.  The driver asks the Optuna study for the next parameter set and tells it
each result (Optuna's ask-and-tell interface, in-memory storage: no database round trip per
trial); with ``parallelism > 1`` TPE runs with ``constant_liar=True`` so that trials running at
once are not all sent to the same region.  No SparkContext or RDD is used: it runs on Spark
Connect.

The folds are made once, as CrossValidator (``numFolds >= 2``) or TrainValidationSplit
(``numFolds == 1``, ``trainRatio``) make them with the same ``seed`` (or from ``foldCol``), on
the rows cached once.  Pruning (``pruner``) stops hopeless trials early for estimators that
report intermediate values (see :mod:`sparkml_scale.tuning.trials`).
"""
from __future__ import annotations

import logging
import math
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any, Dict, List, Optional

from pyspark import inheritable_thread_target, keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.evaluation import Evaluator
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasCollectSubModels, HasParallelism, HasSeed
from pyspark.sql import DataFrame

from ..core.progress import progress_bars, progress_enabled
from .persistence import SearchReadWrite
from .report import TrialReporter
from .space import SpaceEntry, resolve_space, stages_of
from .trials import Pruned, _is_torch, fit_kind, folds_of, run_trial

__all__ = ["HyperparameterSearch", "HyperparameterSearchModel", "SearchError", "SAMPLERS", "PRUNERS"]

log = logging.getLogger("sparkml_scale.tuning")

SAMPLERS = ("tpe", "random")
PRUNERS = ("none", "median", "successive_halving")
TRIAL_COLUMNS = ["number", "state", "value", "params", "seconds", "fit_seconds", "eval_seconds", "steps",
                 "fold_values", "error"]


class SearchError(RuntimeError):
    """Every trial of a search failed (the message gives the first failure)."""


def _to_optional_float(value):
    return None if value is None else TypeConverters.toFloat(value)


class _SearchParams(HasSeed, HasParallelism, HasCollectSubModels):
    estimator: "Param[Estimator]" = Param(Params._dummy(), "estimator", "estimator to tune (any pyspark.ml Estimator, "
                                          "including a Pipeline)")
    evaluator: "Param[Evaluator]" = Param(Params._dummy(), "evaluator", "evaluator scoring each trial on the "
                                          "validation fold(s); its isLargerBetter sets the direction")
    searchSpace: "Param[Dict]" = Param(Params._dummy(), "searchSpace", "dict from the estimator's Params (or "
                                       "param names) to optuna distributions")
    numTrials: "Param[int]" = Param(Params._dummy(), "numTrials", "number of trials (parameter sets) to run (>= 1)",
                                    typeConverter=TypeConverters.toInt)
    sampler: "Param[str]" = Param(Params._dummy(), "sampler", "how parameter sets are chosen: 'tpe' (Bayesian, "
                                  "tree-structured Parzen estimator) or 'random'", typeConverter=TypeConverters.toString)
    numFolds: "Param[int]" = Param(Params._dummy(), "numFolds", "folds of k-fold cross-validation; 1 = one "
                                   "train/validation split by trainRatio", typeConverter=TypeConverters.toInt)
    trainRatio: "Param[float]" = Param(Params._dummy(), "trainRatio", "share of rows for training when numFolds == 1, "
                                       "in (0, 1)", typeConverter=TypeConverters.toFloat)
    foldCol: "Param[str]" = Param(Params._dummy(), "foldCol", "column of fold numbers in [0, numFolds) (empty: "
                                  "random folds by seed)", typeConverter=TypeConverters.toString)
    pruner: "Param[str]" = Param(Params._dummy(), "pruner", "stops hopeless trials early: 'none', 'median' or "
                                 "'successive_halving' (iterative estimators only)", typeConverter=TypeConverters.toString)
    timeout: "Param[float]" = Param(Params._dummy(), "timeout", "seconds after which no new trial starts (None: no "
                                    "limit; the first trial always starts); running trials finish", typeConverter=_to_optional_float)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._setDefault(numTrials=20, sampler="tpe", numFolds=3, trainRatio=0.75, foldCol="", pruner="none",
                         timeout=None, seed=42, parallelism=1, collectSubModels=False)

    def getEstimator(self) -> Estimator:
        return self.getOrDefault(self.estimator)

    def getEvaluator(self) -> Evaluator:
        return self.getOrDefault(self.evaluator)

    def getSearchSpace(self) -> Dict:
        return self.getOrDefault(self.searchSpace)

    def getNumTrials(self) -> int:
        return self.getOrDefault(self.numTrials)

    def getSampler(self) -> str:
        return self.getOrDefault(self.sampler)

    def getNumFolds(self) -> int:
        return self.getOrDefault(self.numFolds)

    def getTrainRatio(self) -> float:
        return self.getOrDefault(self.trainRatio)

    def getFoldCol(self) -> str:
        return self.getOrDefault(self.foldCol)

    def getPruner(self) -> str:
        return self.getOrDefault(self.pruner)

    def getTimeout(self) -> Optional[float]:
        return self.getOrDefault(self.timeout)

    # ---- checks, before any trial runs
    def _check(self) -> List[SpaceEntry]:
        for name in ("estimator", "evaluator", "searchSpace"):
            if not self.isDefined(name) or self.getOrDefault(name) is None:
                raise ValueError(f"param {name!r} is not set")
        est, ev = self.getEstimator(), self.getEvaluator()
        if not isinstance(est, Estimator):
            raise TypeError(f"param 'estimator' must be a pyspark.ml Estimator, got {type(est).__name__}")
        if not isinstance(ev, Evaluator):
            raise TypeError(f"param 'evaluator' must be a pyspark.ml Evaluator, got {type(ev).__name__}")
        checks = [("numTrials", self.getNumTrials() >= 1, ">= 1"), ("parallelism", self.getParallelism() >= 1, ">= 1"),
                  ("numFolds", self.getNumFolds() >= 1, ">= 1"),
                  ("trainRatio", 0.0 < self.getTrainRatio() < 1.0, "in (0, 1)"),
                  ("sampler", self.getSampler() in SAMPLERS, "one of " + ", ".join(map(repr, SAMPLERS))),
                  ("pruner", self.getPruner() in PRUNERS, "one of " + ", ".join(map(repr, PRUNERS))),
                  ("timeout", self.getTimeout() is None or (self.getTimeout() > 0 and math.isfinite(self.getTimeout())),
                   "> 0 seconds or None")]
        for name, ok, want in checks:
            if not ok:
                raise ValueError(f"param {name!r} must be {want}, got {self.getOrDefault(name)!r}")
        if self.getFoldCol() and self.getNumFolds() < 2:
            raise ValueError("param 'foldCol' needs param 'numFolds' >= 2 (the number of folds in it)")
        return resolve_space(est, self.getSearchSpace())

    def _check_slots(self, spark, entries: List[SpaceEntry]) -> None:
        """Barrier stages of concurrent trials need their task slots at once."""
        from ..core.cluster import task_slots

        par = self.getParallelism()
        for stage in stages_of(self.getEstimator()):
            name = type(stage).__name__
            if _is_torch(stage):
                searched = [e.distribution for e in entries if e.param == stage.getParam("numProc")]
                num_proc = stage.getOrDefault("numProc")
                if searched:
                    d = searched[0]
                    num_proc = max(getattr(d, "choices", None) or [getattr(d, "high", num_proc)])
                slots = task_slots(spark)
                if slots is not None and par * int(num_proc) > slots:
                    raise ValueError(f"param 'parallelism' is {par} but each trial's TorchEstimator trains in "
                                     f"{num_proc} barrier task(s) (numProc) and the cluster has {slots} task slot(s): "
                                     f"parallelism * numProc must be <= {slots}")
            if par > 1 and stage.hasParam("solver") and stage.isSet("solver") and stage.getOrDefault("solver") == "allreduce":
                raise ValueError(f"param 'parallelism' is {par} but {name} {stage.uid!r} has solver='allreduce', whose "
                                 "barrier stage takes every task slot: trials cannot run at once; use parallelism=1 "
                                 "or solver='mapreduce'/'auto'")


class HyperparameterSearch(_SearchParams, Estimator, SearchReadWrite):
    """Random or Bayesian (TPE) hyperparameter search with k-fold cross-validation, pruning and
    concurrent trials, in pyspark.ml.tuning's style.

    ``fit(dataset)`` runs ``numTrials`` trials (``parallelism`` at once): each takes a parameter
    set from Optuna's sampler (``sampler``: ``"tpe"`` (default) or ``"random"``, seeded by
    ``seed``), fits ``estimator`` with it on each fold's training rows and scores it with
    ``evaluator`` on the fold's validation rows; the trial's value is the mean over folds.  The
    best parameter set (by ``evaluator.isLargerBetter()``) is refitted on all of ``dataset``.

    Params: ``estimator`` (any pyspark.ml Estimator, a Pipeline included), ``evaluator`` (any
    pyspark.ml Evaluator), ``searchSpace`` (dict from Params of the estimator or of a stage in
    it, or unique param names, to ``optuna.distributions.FloatDistribution`` (``log=True`` for
    log-uniform), ``IntDistribution`` or ``CategoricalDistribution``), ``numTrials`` (20),
    ``parallelism`` (1), ``sampler``, ``seed`` (42), ``numFolds`` (3; 1 = one split by
    ``trainRatio``, 0.75), ``foldCol`` (``""``), ``pruner`` (``"none"``, ``"median"``: Optuna's
    ``MedianPruner`` with ``n_startup_trials=max(1, min(5, numTrials // 4))`` complete trials
    before it prunes, or ``"successive_halving"``: ``SuccessiveHalvingPruner``), ``timeout``
    (seconds after which no new trial starts; ``None``), ``collectSubModels`` (False).

    With TPE the first ``min(10, max(2, numTrials // 3))`` trials are random (Optuna's
    ``n_startup_trials``, lowered for small budgets).  Trials whose fits run barrier stages (our
    stages' allreduce solvers, chosen by ``solver="auto"`` on small data) take turns for the task
    slots when ``parallelism > 1``; explicit ``solver="allreduce"`` with ``parallelism > 1`` is
    refused, and a TorchEstimator needs ``parallelism * numProc`` slots.

    Pruning: a ``TorchEstimator`` trial (alone or in a Pipeline) reports each epoch's validation
    loss and stops after the epoch the pruner rejects; an estimator with ``maxIter`` and
    ``setInitialModel`` (sparkml_scale's ``LogisticRegression``) alone or last in a Pipeline fits
    in warm-started rungs of maxIter/9, maxIter/3 and maxIter iterations, reporting the
    evaluator's metric after each.  See :mod:`sparkml_scale.tuning.trials`.

    A trial that raises is recorded as failed (state ``"FAIL"``, its error in ``trials``) and
    the search goes on.  Raises, before any trial: ``ValueError``/``TypeError`` naming the param
    for an unset estimator/evaluator/space, an empty search space, a Param of another estimator,
    a distribution of the wrong kind or with bounds the Param rejects, ``numTrials < 1``,
    ``parallelism`` beyond the task slots that concurrent barrier trials need, a pruner for an
    estimator without intermediate values; :class:`SearchError` when every trial fails (with
    the first failure).  Progress: one line per finished trial (logger ``sparkml_scale.tuning``,
    and on stderr when progress bars are on, see :mod:`sparkml_scale.core.progress`), a live
    trials table in Jupyter; with MLflow installed and a run active, a nested run per trial.
    """

    @keyword_only
    def __init__(self, *, estimator=None, evaluator=None, searchSpace=None, numTrials=20, parallelism=1,
                 sampler="tpe", seed=42, numFolds=3, trainRatio=0.75, foldCol="", pruner="none", timeout=None,
                 collectSubModels=False) -> None:
        super().__init__()
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, estimator=None, evaluator=None, searchSpace=None, numTrials=None, parallelism=None,
                  sampler=None, seed=None, numFolds=None, trainRatio=None, foldCol=None, pruner=None, timeout=None,
                  collectSubModels=None) -> "HyperparameterSearch":
        return self._set(**{k: v for k, v in self._input_kwargs.items() if v is not None})

    def setEstimator(self, value) -> "HyperparameterSearch":
        return self._set(estimator=value)

    def setEvaluator(self, value) -> "HyperparameterSearch":
        return self._set(evaluator=value)

    def setSearchSpace(self, value) -> "HyperparameterSearch":
        return self._set(searchSpace=value)

    def setNumTrials(self, value: int) -> "HyperparameterSearch":
        return self._set(numTrials=value)

    def setParallelism(self, value: int) -> "HyperparameterSearch":
        return self._set(parallelism=value)

    def setSampler(self, value: str) -> "HyperparameterSearch":
        return self._set(sampler=value)

    def setSeed(self, value: int) -> "HyperparameterSearch":
        return self._set(seed=value)

    def setNumFolds(self, value: int) -> "HyperparameterSearch":
        return self._set(numFolds=value)

    def setTrainRatio(self, value: float) -> "HyperparameterSearch":
        return self._set(trainRatio=value)

    def setFoldCol(self, value: str) -> "HyperparameterSearch":
        return self._set(foldCol=value)

    def setPruner(self, value: str) -> "HyperparameterSearch":
        return self._set(pruner=value)

    def setTimeout(self, value: Optional[float]) -> "HyperparameterSearch":
        return self._set(timeout=value)

    def setCollectSubModels(self, value: bool) -> "HyperparameterSearch":
        return self._set(collectSubModels=value)

    def copy(self, extra=None) -> "HyperparameterSearch":
        that = Params.copy(self, extra)
        if self.isSet(self.estimator):
            that._set(estimator=self.getEstimator().copy())
        if self.isSet(self.evaluator):
            that._set(evaluator=self.getEvaluator().copy())
        return that

    # ---- Optuna
    def _study(self, maximize: bool):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        seed, n = self.getSeed(), self.getNumTrials()
        if self.getSampler() == "random":
            sampler = optuna.samplers.RandomSampler(seed=seed)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, n // 3)),
                                                     constant_liar=self.getParallelism() > 1)
        startup = max(1, min(5, n // 4))
        pruner = {"none": optuna.pruners.NopPruner,
                  "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=startup),
                  "successive_halving": optuna.pruners.SuccessiveHalvingPruner}[self.getPruner()]()
        return optuna.create_study(direction="maximize" if maximize else "minimize", sampler=sampler, pruner=pruner)

    def _fit(self, dataset: DataFrame) -> "HyperparameterSearchModel":
        entries = self._check()
        spark = dataset.sparkSession
        self._check_slots(spark, entries)
        est, ev = self.getEstimator(), self.getEvaluator()
        maximize = bool(ev.isLargerBetter())
        kind, iterative = fit_kind(est, self.getPruner() != "none")
        study = self._study(maximize)
        distributions = {e.name: e.distribution for e in entries}
        n, par, timeout = self.getNumTrials(), self.getParallelism(), self.getTimeout()
        keep = self.getCollectSubModels()
        cached, folds = folds_of(dataset, self.getNumFolds(), self.getTrainRatio(), self.getSeed(),
                                 self.getFoldCol(), self.uid + "_rand")
        rows: List[Dict[str, Any]] = []
        sub_models: List[Optional[List[Any]]] = []
        first_error: Optional[BaseException] = None
        reporter = TrialReporter(n, maximize, getattr(ev, "getMetricName", lambda: "metric")(), progress_enabled())
        t_start = time.perf_counter()
        try:
            with progress_bars(False), ThreadPoolExecutor(max_workers=par, thread_name_prefix="sparkml_scale-trial") as pool:
                running: Dict[Any, Any] = {}
                started = 0
                while started < n or running:
                    while (len(running) < par and started < n
                           and (timeout is None or started == 0 or time.perf_counter() - t_start < timeout)):
                        trial = study.ask(distributions)
                        pmap = _param_map(entries, trial.params)
                        task = inheritable_thread_target(spark)(_timed(run_trial))
                        fut = pool.submit(task, trial, est, ev, folds, pmap, kind, iterative, maximize, keep)
                        running[fut] = trial
                        started += 1
                    if not running:
                        break
                    done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                    for fut in sorted(done, key=lambda f: running[f].number):
                        trial = running.pop(fut)
                        row, exc, result = _finish(study, trial, fut)
                        if exc is not None and first_error is None:
                            first_error = exc
                        rows.append(row)
                        while len(sub_models) <= trial.number:
                            sub_models.append(None)
                        if keep and result is not None:
                            sub_models[trial.number] = result.models
                        reporter.finished(row, study)
            rows.sort(key=lambda r: r["number"])
            complete = [r for r in rows if r["state"] == "COMPLETE"]
            if not complete:
                if first_error is not None:
                    raise SearchError(f"all {len(rows)} trials failed; the first failure (trial {rows[0]['number']}, "
                                      f"params {rows[0]['params']}): {rows[0]['error']}") from first_error
                raise SearchError(f"no trial completed ({len(rows)} run, all pruned)")
            search_seconds = time.perf_counter() - t_start
            best = max(complete, key=lambda r: r["value"]) if maximize else min(complete, key=lambda r: r["value"])
            best_map = _param_map(entries, best["params"])
            t0 = time.perf_counter()
            with progress_bars(False):
                best_model = est.fit(dataset, best_map)
            refit_seconds = time.perf_counter() - t0
        finally:
            reporter.close()
            try:
                cached.unpersist()
            except Exception:  # noqa: BLE001 - session gone: nothing to free
                pass
        model = HyperparameterSearchModel._create(best_model, rows, best["number"],
                                                  sub_models if keep else None, search_seconds, refit_seconds)
        reporter.log_best(model)
        return self._copyValues(model)


def _param_map(entries: List[SpaceEntry], params: Dict[str, Any]) -> Dict[Param, Any]:
    """Param -> value for a trial's ``params`` (searched name -> value)."""
    return {e.param: e.param.typeConverter(params[e.name]) for e in entries if e.name in params}


def _timed(fn):
    def run(*args):
        t0 = time.perf_counter()
        try:
            return fn(*args), None, time.perf_counter() - t0
        except Pruned as exc:
            return None, exc, time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001 - a failed trial is recorded, the search goes on
            return None, exc, time.perf_counter() - t0
    return run


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = next((line for line in text if line.strip()), "")
    return f"{type(exc).__name__}: {first[:500]}"


def _finish(study, trial, fut):
    from optuna.trial import TrialState

    result, exc, seconds = fut.result()
    row: Dict[str, Any] = {"number": trial.number, "params": dict(trial.params), "seconds": seconds,
                           "value": None, "fit_seconds": None, "eval_seconds": None, "steps": None,
                           "fold_values": None, "error": None}
    if result is not None:
        row.update(state="COMPLETE", value=result.value, fit_seconds=result.fit_seconds,
                   eval_seconds=result.eval_seconds, steps=result.steps, fold_values=list(result.fold_values))
        study.tell(trial, result.value)
        return row, None, result
    if isinstance(exc, Pruned):
        row.update(state="PRUNED", steps=exc.trained)
        study.tell(trial, state=TrialState.PRUNED)
        return row, None, None
    row.update(state="FAIL", error=_error_text(exc))
    log.warning("trial %d failed: %s", trial.number, row["error"])
    study.tell(trial, state=TrialState.FAIL)
    return row, exc, None


class HyperparameterSearchModel(_SearchParams, Model, SearchReadWrite):
    """The result of :class:`HyperparameterSearch`: ``bestModel`` (refitted on all the data)
    and the trials.  ``transform`` is ``bestModel.transform``.

    Attributes: ``bestModel``; ``bestParams`` (dict: searched param name -> value, the names
    of ``trials.params``); ``bestParamMap`` (Param -> value); ``bestValue`` (its mean validation
    metric); ``trials`` (a pandas DataFrame, one row per trial in trial order: ``number``,
    ``state`` ("COMPLETE", "PRUNED", "FAIL"), ``value`` (mean metric over folds; NaN unless
    complete), ``params`` (dict), ``seconds`` (wall time of the trial), ``fit_seconds``,
    ``eval_seconds``, ``steps`` (epochs or iterations when the trial reported them),
    ``fold_values`` (list), ``error`` (text of a failed trial's exception));
    ``avgMetrics`` (the trials' values in trial order, NaN unless complete); ``subModels``
    (with ``collectSubModels``: per trial, the list of fold models; ``None`` for trials not
    complete; not saved); ``searchSeconds`` and ``refitSeconds``.

    ``save``/``load`` write no pickle: ``bestModel`` with its own writer under
    ``path/bestModel``, the trials and params as JSON metadata; ``load`` imports only Spark's
    and sparkml_scale's stage classes unless told to trust others (see
    :func:`sparkml_scale.core.persistence.load_stage`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.bestModel = None
        self._trials: List[Dict[str, Any]] = []
        self._best_number = -1
        self.subModels = None
        self.searchSeconds = float("nan")
        self.refitSeconds = float("nan")

    @classmethod
    def _create(cls, best_model, rows, best_number: int, sub_models, search_seconds: float,
                refit_seconds: float) -> "HyperparameterSearchModel":
        m = cls()
        m.bestModel = best_model
        m._trials = [dict(r) for r in rows]
        m._best_number = int(best_number)
        m.subModels = sub_models
        m.searchSeconds = float(search_seconds)
        m.refitSeconds = float(refit_seconds)
        return m

    def _restore(self, metadata: Dict[str, Any], best_model) -> None:
        """Fill a loaded model from its metadata (see :mod:`sparkml_scale.tuning.persistence`)."""
        trials = metadata.get("trials")
        if not isinstance(trials, list) or not all(isinstance(r, dict) and "number" in r for r in trials):
            raise ValueError("metadata field 'trials' is not a list of trial records")
        self.bestModel = best_model
        self._trials = [dict(r) for r in trials]
        self._best_number = int(metadata.get("bestTrialNumber", -1))
        self.searchSeconds = float(metadata.get("searchSeconds", float("nan")))
        self.refitSeconds = float(metadata.get("refitSeconds", float("nan")))

    def copy(self, extra=None) -> "HyperparameterSearchModel":
        that = Params.copy(self, extra)
        that.bestModel = self.bestModel.copy(extra) if self.bestModel is not None else None
        for a in ("_trials", "_best_number", "subModels", "searchSeconds", "refitSeconds"):
            setattr(that, a, getattr(self, a))
        return that

    def _transform(self, dataset: DataFrame) -> DataFrame:
        return self.bestModel.transform(dataset)

    @property
    def trials(self):
        import pandas as pd

        df = pd.DataFrame(self._trials, columns=TRIAL_COLUMNS)
        df["value"] = df["value"].astype("float64")
        return df

    @property
    def avgMetrics(self) -> List[float]:
        return [float(r["value"]) if r["state"] == "COMPLETE" else float("nan") for r in self._trials]

    @property
    def bestTrial(self) -> Dict[str, Any]:
        return dict(next(r for r in self._trials if r["number"] == self._best_number))

    @property
    def bestParams(self) -> Dict[str, Any]:
        return dict(self.bestTrial["params"])

    @property
    def bestValue(self) -> float:
        return float(self.bestTrial["value"])

    @property
    def bestParamMap(self) -> Dict[Param, Any]:
        if not self.isDefined(self.searchSpace) or self.getSearchSpace() is None:
            return {}
        return _param_map(resolve_space(self.getEstimator(), self.getSearchSpace()), self.bestParams)

    def __repr__(self) -> str:
        n = len(self._trials)
        states = {s: sum(r["state"] == s for r in self._trials) for s in ("COMPLETE", "PRUNED", "FAIL")}
        return (f"HyperparameterSearchModel: uid={self.uid}, trials={n} ({states['COMPLETE']} complete, "
                f"{states['PRUNED']} pruned, {states['FAIL']} failed), best trial {self._best_number} "
                f"value={self.bestValue:.6g} params={self.bestParams}")

