"""One trial of a search: fit on each fold, evaluate, report intermediate values for pruning.

Three ways to fit a trial, chosen once per search by :func:`fit_kind`:

- ``"plain"``: ``estimator.fit(train, paramMap)`` per fold, then ``evaluator.evaluate``;
- ``"torch"`` (a ``TorchEstimator``, alone or in a Pipeline, with a pruner): the stage's
  ``epochCallback`` hears every epoch on the driver (the ranks report through a channel, see
  :mod:`sparkml_scale.torch.estimator`); the epoch's validation loss -- on the fold's validation
  rows, passed as the stage's ``validationCol`` unless it has its own validation rows -- is
  reported to Optuna (negated when the evaluator is larger-is-better), and a trial the pruner
  stops ends its training after that epoch;
- ``"warm_start"`` (an estimator with ``maxIter`` and ``setInitialModel``, e.g. sparkml_scale's
  ``LogisticRegression``, alone or last in a Pipeline, with a pruner): the fit runs in rungs of
  ``maxIter / 9``, ``maxIter / 3`` and ``maxIter`` iterations, each warm-started from the previous
  rung's model; after each rung the evaluator's metric on the validation fold is reported.

Intermediate values are reported at step ``fold * steps_per_fold + step`` (folds run one after
the other), so trials are compared at the same fold and epoch/iteration.
"""
from __future__ import annotations

import math
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from pyspark.ml import Pipeline, PipelineModel
from pyspark.sql import functions as F

__all__ = ["Fold", "TrialResult", "fit_kind", "run_trial", "Pruned", "rungs"]

#: Name of the boolean column marking the fold's validation rows for a TorchEstimator trial.
VALIDATION_MARK = "__sparkml_scale_search_validation"


class Pruned(Exception):
    """The pruner stopped the trial at reported ``step``, after ``trained`` epochs or iterations
    (over all folds)."""

    def __init__(self, step: int, trained: int):
        super().__init__(f"pruned at step {step}")
        self.step, self.trained = step, trained


@dataclass
class Fold:
    """One fold: ``train``/``validation`` DataFrames and ``data`` (both, with ``mark`` the boolean
    expression that is true on validation rows)."""

    train: Any
    validation: Any
    data: Any
    mark: Any


@dataclass
class TrialResult:
    value: Optional[float] = None
    fold_values: List[float] = field(default_factory=list)
    models: List[Any] = field(default_factory=list)
    fit_seconds: float = 0.0
    eval_seconds: float = 0.0
    steps: Optional[int] = 0


def _is_torch(stage) -> bool:
    mod = sys.modules.get("sparkml_scale.torch.estimator")
    return mod is not None and isinstance(stage, mod.TorchEstimator)


def _warm_startable(stage) -> bool:
    return (stage is not None and hasattr(stage, "setInitialModel") and stage.hasParam("maxIter")
            and not _is_torch(stage))


def fit_kind(estimator, pruning: bool) -> Tuple[str, Any]:
    """``(kind, stage)``: how trials fit (see the module docstring) and the iterative stage
    (``None`` for ``"plain"``).  Raises ``ValueError`` naming param ``pruner`` when pruning is
    asked for an estimator that reports no intermediate values."""
    if not pruning:
        return "plain", None
    stages = estimator.getStages() if isinstance(estimator, Pipeline) else [estimator]
    torch_stages = [s for s in stages if _is_torch(s)]
    if torch_stages:
        return "torch", torch_stages[-1]
    last = stages[-1] if stages else None
    if _warm_startable(last):
        return "warm_start", last
    raise ValueError(f"param 'pruner' is set but {type(estimator).__name__} reports no intermediate values: pruning "
                     "needs a TorchEstimator (alone or in a Pipeline) or an estimator with maxIter and "
                     "setInitialModel (e.g. sparkml_scale's LogisticRegression) alone or last in a Pipeline; "
                     "use pruner='none'")


def rungs(max_iter: int) -> List[int]:
    """Cumulative iteration counts of the warm-start rungs: ``maxIter/9, maxIter/3, maxIter``."""
    out = sorted({max(1, math.ceil(max_iter / 9)), max(1, math.ceil(max_iter / 3)), max(1, max_iter)})
    return out


def _value(stage, param: str, pmap: Dict) -> Any:
    p = stage.getParam(param)
    if p in pmap:
        return pmap[p]
    return stage.getOrDefault(p) if stage.isDefined(p) else None


def run_trial(trial, estimator, evaluator, folds: List[Fold], pmap: Dict, kind: str, stage,
              maximize: bool, keep_models: bool) -> TrialResult:
    """Fit and score ``pmap`` on every fold; raises :class:`Pruned` when the pruner stops it."""
    result = TrialResult()
    for i, fold in enumerate(folds):
        if kind == "torch":
            model, value, steps = _torch_fold(trial, estimator, evaluator, fold, pmap, stage, maximize, i, result)
        elif kind == "warm_start":
            model, value, steps = _warm_fold(trial, estimator, evaluator, fold, pmap, stage, i, result)
        else:
            t0 = time.perf_counter()
            model = estimator.fit(fold.train, pmap)
            result.fit_seconds += time.perf_counter() - t0
            value, steps = _evaluate(evaluator, model, fold.validation, result), 0
        result.steps += steps
        result.fold_values.append(value)
        if keep_models:
            result.models.append(model)
    result.value = float(sum(result.fold_values) / len(result.fold_values))
    if kind == "plain":
        result.steps = None
    return result


def _evaluate(evaluator, model, validation, result: TrialResult) -> float:
    t0 = time.perf_counter()
    value = float(evaluator.evaluate(model.transform(validation)))
    result.eval_seconds += time.perf_counter() - t0
    if math.isnan(value):
        raise ValueError(f"{type(evaluator).__name__} returned NaN on the validation fold")
    return value


def _torch_fold(trial, estimator, evaluator, fold: Fold, pmap: Dict, stage, maximize: bool, i: int,
                result: TrialResult):
    epochs = int(_value(stage, "epochs", pmap))
    stop = threading.Event()
    seen: List[int] = []

    def on_epoch(record: Dict[str, Any]) -> bool:
        epoch = int(record.get("epoch", len(seen)))
        loss = record.get("val_loss", record.get("loss"))
        if loss is None or stop.is_set():
            return stop.is_set()
        step = i * epochs + epoch
        seen.append(epoch)
        trial.report(-float(loss) if maximize else float(loss), step)
        if trial.should_prune():
            stop.set()
            return True
        return False

    pm = dict(pmap)
    pm[stage.getParam("epochCallback")] = on_epoch
    own_validation = bool(_value(stage, "validationCol", pm)) or float(_value(stage, "validationFraction", pm) or 0) > 0
    if own_validation:
        train = fold.train
    else:
        train = fold.data.withColumn(VALIDATION_MARK, fold.mark)
        pm[stage.getParam("validationCol")] = VALIDATION_MARK
    ckpt = _value(stage, "checkpointDir", pm)
    if ckpt:  # trials must not share (and resume from) each other's checkpoints
        pm[stage.getParam("checkpointDir")] = f"{ckpt.rstrip('/')}/trial-{trial.number:04d}/fold-{i}"
    t0 = time.perf_counter()
    model = estimator.fit(train, pm)
    result.fit_seconds += time.perf_counter() - t0
    # The pruner may also answer after the fit (executors that cannot reach the driver, see
    # TorchEstimator.epochCallback): a model trained to the end is scored as a complete trial.
    if stop.is_set() and _stopped_by_callback(model):
        raise Pruned(i * epochs + (seen[-1] if seen else 0), result.steps + len(seen))
    return model, _evaluate(evaluator, model, fold.validation, result), len(seen)


def _stopped_by_callback(model) -> bool:
    stages = model.stages if isinstance(model, PipelineModel) else [model]
    return any(getattr(s, "stoppedByCallback", False) for s in stages)


def _warm_fold(trial, estimator, evaluator, fold: Fold, pmap: Dict, stage, i: int, result: TrialResult):
    if isinstance(estimator, Pipeline):
        stages = estimator.copy(pmap).getStages()
        t0 = time.perf_counter()
        prefix = Pipeline(stages=stages[:-1]).fit(fold.train) if len(stages) > 1 else None
        result.fit_seconds += time.perf_counter() - t0
        last = stages[-1]
        train = prefix.transform(fold.train) if prefix is not None else fold.train
        validation = prefix.transform(fold.validation) if prefix is not None else fold.validation
    else:
        prefix, last, train, validation = None, estimator.copy(pmap), fold.train, fold.validation
    max_iter = int(last.getOrDefault("maxIter"))
    model, done, value = None, 0, math.nan
    for r in rungs(max_iter):
        est = last.copy({last.getParam("maxIter"): r - done})
        if model is not None:
            est.setInitialModel(model)
        t0 = time.perf_counter()
        model = est.fit(train)
        result.fit_seconds += time.perf_counter() - t0
        value = _evaluate(evaluator, model, validation, result)
        step = i * max_iter + r
        trial.report(value, step)
        if trial.should_prune():
            raise Pruned(step, result.steps + r)
        converged = _iterations(model) is not None and _iterations(model) < r - done
        done = r
        if converged:
            break
    if prefix is not None:
        model = PipelineModel(stages=list(prefix.stages) + [model])
    return model, value, done


def _iterations(model) -> Optional[int]:
    try:
        return int(model.summary.totalIterations) if model.hasSummary else None
    except Exception:  # noqa: BLE001 - models without a summary
        return None


def folds_of(dataset, num_folds: int, train_ratio: float, seed: int, fold_col: str, rand_col: str):
    """``(cached, [Fold, ...])``: the rows with their fold assignment, cached once, and the folds.

    Random folds are CrossValidator's (``numFolds >= 2``: validation fold ``i`` is
    ``rand(seed)`` in ``[i/k, (i+1)/k)``) and TrainValidationSplit's (``numFolds == 1``:
    validation is ``rand(seed) >= trainRatio``), so the same seed on the same data gives the same
    folds as those.  With ``foldCol`` the fold of each row is that column (integers in
    ``[0, numFolds)``)."""
    if fold_col:
        checked = dataset.withColumn(fold_col, F.when((F.col(fold_col) >= 0) & (F.col(fold_col) < num_folds),
                                                      F.col(fold_col)).otherwise(F.raise_error(F.concat(
                                                          F.lit(f"column '{fold_col}' (param 'foldCol') must hold "
                                                                f"fold numbers in [0, {num_folds}), got "),
                                                          F.col(fold_col).cast("string")))))
        cached = checked.cache()
        marks = [F.col(fold_col) == F.lit(i) for i in range(num_folds)]
    else:
        cached = dataset.select("*", F.rand(seed).alias(rand_col)).cache()
        r = F.col(rand_col)
        if num_folds == 1:
            marks = [r >= F.lit(train_ratio)]
        else:
            h = 1.0 / num_folds
            marks = [(r >= F.lit(i * h)) & (r < F.lit((i + 1) * h)) for i in range(num_folds)]
    folds = [Fold(cached.filter(~m), cached.filter(m), cached, m) for m in marks]
    return cached, folds
