"""What the checks know about a stage: its kind (inferred from Spark param names) and its options.

A stage's kind decides which checks apply and what data they build.  It is read from the
params the stage has, following pyspark.ml's naming conventions, so any stage written the
Spark way (``HasFeaturesCol``, ``HasInputCol``, ``HasLabelCol``, ...) is understood:

============================  =========================================================
param                         meaning
============================  =========================================================
``featuresCol``/``inputCol``  one vector input column
``inputCols``                 several input columns of any scalar type (FeatureHasher-like)
``labelCol``                  supervised (an Estimator that reads a numeric label)
``weightCol``                 row weights
``predictionCol``,            the output columns ``transform`` adds
``probabilityCol``,
``rawPredictionCol``,
``outputCol``
============================  =========================================================

Kinds: ``"classifier"`` (a ``probabilityCol`` or ``rawPredictionCol``), ``"regressor"``
(``labelCol`` and ``predictionCol``, not a classifier), ``"unsupervised"`` (an Estimator over
a vector column without a label, PCA-like) and ``"transformer"`` (a plain Transformer).

:class:`StageCase` carries a configured stage and the few options the checks cannot guess
(data size, number of classes, a param grid, narrower error expectations, ...).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from pyspark.ml import Estimator, Transformer

__all__ = ["StageKind", "StageCase", "stage_kind", "as_case", "stage_id"]

_OUTPUT_PARAMS = ("rawPredictionCol", "probabilityCol", "predictionCol", "outputCol")


def _value(stage, name: str):
    """The value of param ``name`` (``None`` when the stage lacks it or it is undefined)."""
    if not stage.hasParam(name):
        return None
    p = stage.getParam(name)
    return stage.getOrDefault(p) if stage.isDefined(p) else None


@dataclass(frozen=True)
class StageKind:
    """The kind of a stage, as the checks see it (see the module docstring).

    ``vector_param``: the param naming the one vector input column (``"featuresCol"`` or
    ``"inputCol"``), ``None`` for stages without one; ``input_cols``: the stage reads
    ``inputCols``; ``label``: has ``labelCol`` (supervised when an Estimator); ``weight``: has
    ``weightCol``; ``outputs``: ``(param, column)`` pairs of the columns ``transform`` adds, in
    the order Spark's classifiers add them."""

    name: str
    estimator: bool
    vector_param: Optional[str]
    input_cols: bool
    label: bool
    weight: bool
    outputs: Tuple[Tuple[str, str], ...]

    @property
    def classifier(self) -> bool:
        return self.name == "classifier"

    @property
    def supervised(self) -> bool:
        return self.label and self.estimator


def stage_kind(stage) -> StageKind:
    """Infer the :class:`StageKind` of ``stage`` (an Estimator or a Transformer) from its params.

    Raises ``TypeError`` if ``stage`` is neither an Estimator nor a Transformer."""
    if not isinstance(stage, (Estimator, Transformer)):
        raise TypeError(f"not a pyspark.ml Estimator or Transformer: {type(stage).__name__}")
    estimator = isinstance(stage, Estimator)
    has = stage.hasParam
    vector_param = "featuresCol" if has("featuresCol") else ("inputCol" if has("inputCol") else None)
    outputs = tuple((p, _value(stage, p)) for p in _OUTPUT_PARAMS if has(p) and _value(stage, p))
    label = has("labelCol")
    if has("probabilityCol") or has("rawPredictionCol"):
        name = "classifier"
    elif has("labelCol") and has("predictionCol"):
        name = "regressor"
    elif estimator:
        name = "unsupervised"
    else:
        name = "transformer"
    return StageKind(name, estimator, vector_param, has("inputCols"), label, has("weightCol"), outputs)


def stage_id(stage) -> str:
    """A short readable id: the class name and the explicitly set params, e.g. ``PCA(k=2)``
    (column-name params left out; long values cut)."""
    parts = []
    for p, v in sorted(stage._paramMap.items(), key=lambda kv: kv[0].name):
        if p.name.endswith(("Col", "Cols")):
            continue
        text = v.__name__ if callable(v) and hasattr(v, "__name__") else repr(v)
        if hasattr(v, "func") and hasattr(v.func, "__name__"):  # functools.partial
            text = v.func.__name__
        parts.append(f"{p.name}={text[:20]}")
    return f"{type(stage).__name__}({','.join(parts)})"


@dataclass(frozen=True, eq=False)
class StageCase:
    """A configured stage and the options of its checks.

    - ``stage``: an Estimator or Transformer with its required params set (e.g. ``PCA(k=2,
      inputCol="features", outputCol="pca")``); the checks never change it (they copy it);
    - ``id``: the test id (default :func:`stage_id`);
    - ``n_rows``, ``n_features``, ``n_classes``, ``seed``: the synthetic data (see
      :mod:`sparkml_scale.testing.data`); classifiers get labels ``0..n_classes-1``;
    - ``input_types``: for ``inputCols`` stages, the type of each input column
      (``"double"`` (default), ``"string"``, ``"boolean"``, ``"long"``);
    - ``copy_extra``: ``{param name: value}`` given to ``copy(extra)`` of the stage (default:
      its first output column renamed);
    - ``grid``: ``{param name: values}`` for the tuning check (default: a one-point empty grid);
    - ``tuning``: ``"cv"`` (``CrossValidator``, 2 folds, its model saved and loaded) or
      ``"tvs"`` (``TrainValidationSplit``); ``parallelism``: concurrent fits while tuning (1 for
      stages that use barrier execution);
    - ``evaluator``: a factory for the tuning evaluator (default by kind);
      ``tail``: for label-free stages, a factory ``tail(output column)`` of the Estimator put
      after the stage in the tuned ``Pipeline`` (default: sparkml_scale's ``LinearRegression``);
    - ``atol``: tolerance when two outputs of the same model are compared (after save/load, in
      a pipeline, streaming);
    - ``raises``: ``{check name: (exception type or None, regex)}``: narrower expectations for a
      bad-input check, on top of the generic ones; the regex may use ``{column}`` and
      ``{param}``, filled with the (escaped) column and param the check is about;
    - ``skip`` / ``expected_failures``: ``{check name: reason}``, used by
      :func:`~sparkml_scale.testing.parametrize_with_checks` (skip / xfail marks) and
      :func:`~sparkml_scale.testing.check_stage` (not run).
    """

    stage: Any
    id: Optional[str] = None
    n_rows: int = 60
    n_features: int = 4
    n_classes: int = 2
    seed: int = 0
    input_types: Mapping[str, str] = field(default_factory=dict)
    copy_extra: Optional[Mapping[str, Any]] = None
    grid: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    tuning: str = "cv"
    parallelism: int = 1
    evaluator: Optional[Callable[[], Any]] = None
    tail: Optional[Callable[[str], Any]] = None
    atol: float = 1e-12
    raises: Mapping[str, Tuple[Optional[type], str]] = field(default_factory=dict)
    skip: Mapping[str, str] = field(default_factory=dict)
    expected_failures: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.tuning not in ("cv", "tvs"):
            raise ValueError(f"StageCase.tuning must be 'cv' or 'tvs', got {self.tuning!r}")
        if self.n_classes < 2:
            raise ValueError(f"StageCase.n_classes must be >= 2, got {self.n_classes}")
        if self.n_rows < 8:
            raise ValueError(f"StageCase.n_rows must be >= 8, got {self.n_rows}")
        stage_kind(self.stage)  # TypeError for what is not a stage

    @property
    def kind(self) -> StageKind:
        return stage_kind(self.stage)

    @property
    def name(self) -> str:
        return self.id or stage_id(self.stage)

    def replace(self, **changes) -> "StageCase":
        return dataclasses.replace(self, **changes)


def as_case(stage, **options) -> StageCase:
    """``stage`` as a :class:`StageCase` (a case is returned with ``options`` applied)."""
    if isinstance(stage, StageCase):
        return stage.replace(**options) if options else stage
    return StageCase(stage, **options)


def column_of(stage, param: str) -> Optional[str]:
    """The column named by ``param`` of ``stage`` (``None`` if unset or absent)."""
    return _value(stage, param)


def input_columns(case: StageCase) -> Dict[str, str]:
    """``{column: type}`` of the input columns the data must hold for ``case``'s stage."""
    kind, stage = case.kind, case.stage
    cols: Dict[str, str] = {}
    if kind.vector_param and column_of(stage, kind.vector_param):
        cols[column_of(stage, kind.vector_param)] = "vector"
    if kind.input_cols:
        for c in column_of(stage, "inputCols") or []:
            cols[c] = case.input_types.get(c, "double")
    return cols
