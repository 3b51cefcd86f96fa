"""Small synthetic data for the checks, built with numpy only (no scikit-learn).

:func:`make_columns` gives the columns a stage's checks read, as Python lists keyed by column
name, so that a bad-input check can spoil one value or one column before
:func:`to_frame` makes the DataFrame:

- ``id``: ``0..n_rows-1`` (long), to compare outputs row by row;
- the vector input column (``featuresCol``/``inputCol``): dense vectors of ``n_features``
  values; for classifiers, class ``c`` is centred at a point of its own (separable classes);
- ``inputCols`` columns: typed as :attr:`StageCase.input_types` says (``double`` by default);
- the label column (named by ``labelCol``, else ``"label"``): ``i % n_classes`` for
  classifiers, a noisy linear function of the features otherwise (real-valued);
- the weight column (named by ``weightCol``, else ``"weight"``): in ``[0.5, 1.5)``.

:func:`training_frame` and :func:`fit_stage` cache one DataFrame and one fitted model per stage
and session, so a whole suite fits each stage once.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .case import StageCase, column_of, input_columns

__all__ = ["make_columns", "to_frame", "training_frame", "fit_stage", "clear_cache", "label_column",
           "weight_column", "vector_column"]

Columns = Dict[str, Tuple[str, List[Any]]]  # column -> (type name, values)

_TYPES = ("long", "double", "string", "boolean", "vector")


def label_column(case: StageCase) -> str:
    """The column holding the label: the stage's ``labelCol``, else ``"label"``."""
    return column_of(case.stage, "labelCol") or "label"


def weight_column(case: StageCase) -> str:
    """The column holding weights: the stage's ``weightCol`` when set, else ``"weight"``."""
    return column_of(case.stage, "weightCol") or "weight"


def vector_column(case: StageCase) -> Optional[str]:
    """The stage's vector input column (``featuresCol``/``inputCol``), ``None`` if it has none."""
    kind = case.kind
    return column_of(case.stage, kind.vector_param) if kind.vector_param else None


def make_columns(case: StageCase, n_rows: Optional[int] = None, n_features: Optional[int] = None,
                 start: int = 0) -> Columns:
    """The columns of ``case``'s training data (see the module docstring) as
    ``{name: (type, values)}``; ``n_rows``/``n_features`` override the case's, ``start`` is the
    first ``id``.  Deterministic for a given case seed."""
    n = case.n_rows if n_rows is None else n_rows
    d = case.n_features if n_features is None else n_features
    rng = np.random.default_rng(case.seed + 7919 * start + 104729 * d)
    ids = np.arange(start, start + n)
    X = rng.normal(size=(n, d))
    if case.kind.classifier:
        y = (ids % case.n_classes).astype(np.float64)
        centres = np.random.default_rng(case.seed).normal(scale=2.0, size=(case.n_classes, d))
        X = X + centres[y.astype(int)]
    else:
        coef = np.linspace(1.0, -1.0, d) if d > 1 else np.ones(1)
        y = X @ coef + 0.5 + 0.1 * rng.normal(size=n)
    w = 0.5 + rng.random(n)
    cols: Columns = {"id": ("long", [int(i) for i in ids])}
    for name, typ in input_columns(case).items():
        if typ == "vector":
            cols[name] = ("vector", [row.tolist() for row in X])
        elif typ == "double":
            cols[name] = ("double", [float(v) for v in rng.normal(size=n)])
        elif typ == "string":
            cols[name] = ("string", [f"v{i % 3}" for i in ids])
        elif typ == "boolean":
            cols[name] = ("boolean", [bool(i % 2) for i in ids])
        elif typ == "long":
            cols[name] = ("long", [int(i % 5) for i in ids])
        else:
            raise ValueError(f"input type {typ!r} of column {name!r}: expected one of {_TYPES[:4]}")
    cols.setdefault(label_column(case), ("double", [float(v) for v in y]))
    cols.setdefault(weight_column(case), ("double", [float(v) for v in w]))
    return cols


def _spark_type(name: str):
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import types as T

    return {"long": T.LongType(), "double": T.DoubleType(), "string": T.StringType(),
            "boolean": T.BooleanType(), "vector": VectorUDT()}[name]


def to_frame(spark, cols: Columns):
    """A DataFrame of ``cols`` (``{name: (type, values)}``, types ``long``, ``double``,
    ``string``, ``boolean``, ``vector``: lists of floats or ``None``)."""
    from pyspark.ml.linalg import Vectors
    from pyspark.sql import types as T

    names = list(cols)
    schema = T.StructType([T.StructField(c, _spark_type(cols[c][0]), True) for c in names])
    conv = [(lambda v: None if v is None else Vectors.dense(v)) if cols[c][0] == "vector" else (lambda v: v)
            for c in names]
    n = len(cols[names[0]][1])
    rows = [tuple(f(cols[c][1][i]) for f, c in zip(conv, names)) for i in range(n)]
    return spark.createDataFrame(rows, schema)


# ----------------------------------------------------------------------------- per-session cache
_CACHE: Dict[tuple, tuple] = {}


def _key(case: StageCase, spark, what: str) -> tuple:
    return (what, id(case.stage), id(spark), case.n_rows, case.n_features, case.n_classes, case.seed,
            tuple(sorted(case.input_types.items())))


def training_frame(case: StageCase, spark):
    """The cached training DataFrame of ``case`` in ``spark`` (partitioned as ``createDataFrame``
    does)."""
    key = _key(case, spark, "frame")
    if key not in _CACHE:
        df = to_frame(spark, make_columns(case)).cache()
        df.count()
        _CACHE[key] = (case.stage, df)
    return _CACHE[key][1]


def fit_stage(case: StageCase, spark):
    """``(fitted, df)``: ``case``'s stage fitted on :func:`training_frame` (a Transformer is its own
    fitted stage), cached per stage and session.  The stage is not modified."""
    df = training_frame(case, spark)
    return cached(case, spark, "fit", lambda: case.stage.fit(df) if case.kind.estimator else case.stage), df


def cached(case: StageCase, spark, what: str, compute):
    """``compute()``, computed once per stage, session, data options and ``what``."""
    key = _key(case, spark, what)
    if key not in _CACHE:
        _CACHE[key] = (case.stage, compute())
    return _CACHE[key][1]


def clear_cache() -> None:
    """Forget the cached DataFrames (unpersisted) and fitted models."""
    for key, value in list(_CACHE.items()):
        if key[0] == "frame":
            try:
                value[1].unpersist()
            except Exception:  # a stopped session
                pass
    _CACHE.clear()


def as_floats(value) -> List[float]:
    """A cell of an output column as a flat list of floats (vectors unpacked, ``None`` as NaN)."""
    from pyspark.ml.linalg import Vector

    if isinstance(value, Vector):
        return value.toArray().tolist()
    if value is None:
        return [math.nan]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in as_floats(v)]
    return [float(value)]
