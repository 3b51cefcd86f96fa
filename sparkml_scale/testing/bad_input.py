"""The generic bad-input checks: one kind of bad input each, one clean error expected.

Each check feeds the stage (``fit`` of an Estimator, ``transform`` of the fitted model or of a
Transformer, followed by ``collect()`` so that a lazy failure shows too) data spoilt in one
way, and expects a ``ValueError`` or ``TypeError`` that is clean as
:func:`~sparkml_scale.testing.assert_clean` defines it (no Py4J/pyspark error, no JVM trace,
short) and whose message names the column (the column name as a word, quoted or not).  A
:attr:`StageCase.raises <sparkml_scale.testing.StageCase.raises>` entry for the check adds a
narrower exception type and a second regex.

The data are 16 rows of :func:`~sparkml_scale.testing.data.make_columns` with row 3 (or a
whole column) spoilt.
"""
from __future__ import annotations

import math
import re
from typing import Callable, List, Optional, Tuple

from .case import StageCase, column_of
from .clean import expect_clean_error
from .data import fit_stage, label_column, make_columns, to_frame, vector_column, weight_column

__all__ = ["BAD_INPUT_CHECKS", "check_missing_input_column", "check_input_column_wrong_type", "check_null_vector",
           "check_mixed_vector_sizes", "check_nan_feature", "check_missing_label_column", "check_null_label",
           "check_nan_label", "check_negative_weight", "check_output_column_exists", "check_fit_empty_dataframe",
           "names_column"]

_ROWS = 16
_BAD_ROW = 3
_ERRORS = (ValueError, TypeError)


def names_column(column: str) -> str:
    """A regex matching a message that names ``column``: the name as a whole word (quotes
    allowed around it; ``'features'`` does not match inside ``featuresCol``)."""
    return rf"(?<![\w]){re.escape(column)}(?![\w])"


def _input_column(case: StageCase) -> Tuple[str, str]:
    """(column, param) of the input the column checks spoil: the vector column, else the
    first of ``inputCols``."""
    col = vector_column(case)
    if col is not None:
        return col, case.kind.vector_param
    return (column_of(case.stage, "inputCols") or [None])[0], "inputCols"


def _expect(case: StageCase, check: str, call: Callable[[], object], column: str, param: str, what: str,
            match: Optional[str] = None) -> None:
    also = None
    if check in case.raises:
        typ, regex = case.raises[check]
        also = (typ, regex.format(column=re.escape(column), param=re.escape(param)))
    expect_clean_error(call, _ERRORS, match or names_column(column), f"{check}: {what}", also)


def _fit(case: StageCase, spark, cols, stage=None) -> Callable[[], object]:
    df = to_frame(spark, cols) if isinstance(cols, dict) else cols
    return lambda: (stage or case.stage).fit(df)


def _transform(model, df) -> Callable[[], object]:
    return lambda: model.transform(df).collect()


def _both(case: StageCase, spark, check: str, cols, column: str, param: str, what: str) -> None:
    """The spoilt data make the Estimator's ``fit`` and the fitted model's (or the Transformer's)
    ``transform`` raise."""
    df = to_frame(spark, cols)
    if case.kind.estimator:
        _expect(case, check, _fit(case, spark, df), column, param, f"fit with {what}")
    model, _ = fit_stage(case, spark)
    _expect(case, check, _transform(model, df), column, param, f"transform with {what}")


def _with_row(cols, column: str, value) -> dict:
    typ, values = cols[column]
    values = list(values)
    values[_BAD_ROW] = value
    out = dict(cols)
    out[column] = (typ, values)
    return out


# ----------------------------------------------------------------------------- input columns
def check_missing_input_column(case: StageCase, spark) -> None:
    """Without the input column (the vector column, or the first of ``inputCols``), ``fit`` and
    ``transform`` raise ``ValueError``/``TypeError`` naming it."""
    col, param = _input_column(case)
    cols = make_columns(case, _ROWS)
    del cols[col]
    _both(case, spark, "check_missing_input_column", cols, col, param, f"column {col!r} missing")


def check_input_column_wrong_type(case: StageCase, spark) -> None:
    """With the input column of the wrong type (a string column where a vector is expected; a
    vector column in place of the first of ``inputCols``), ``fit`` and ``transform`` raise
    ``ValueError``/``TypeError`` naming it."""
    col, param = _input_column(case)
    cols = make_columns(case, _ROWS)
    if cols[col][0] == "vector":
        cols[col] = ("string", [f"s{i}" for i in range(_ROWS)])
    else:
        cols[col] = ("vector", [[1.0, float(i)] for i in range(_ROWS)])
    _both(case, spark, "check_input_column_wrong_type", cols, col, param, f"column {col!r} of the wrong type")


def check_null_vector(case: StageCase, spark) -> None:
    """(Estimators over a vector column.) ``fit`` with one null vector raises naming the column."""
    col, param = _input_column(case)
    cols = _with_row(make_columns(case, _ROWS), col, None)
    _expect(case, "check_null_vector", _fit(case, spark, cols), col, param, "fit with a null vector")


def check_mixed_vector_sizes(case: StageCase, spark) -> None:
    """(Estimators over a vector column.) ``fit`` on vectors of two sizes (``n_features`` in the
    first partition(s), ``n_features + 1`` in the last) raises naming the column."""
    col, param = _input_column(case)
    half = _ROWS // 2
    a = to_frame(spark, make_columns(case, half))
    b = to_frame(spark, make_columns(case, half, n_features=case.n_features + 1, start=half))
    _expect(case, "check_mixed_vector_sizes", _fit(case, spark, a.union(b)), col, param,
            "fit on vectors of different sizes")


def check_nan_feature(case: StageCase, spark) -> None:
    """(Estimators over a vector column.) ``fit`` with a NaN in one vector raises naming the column."""
    col, param = _input_column(case)
    cols = make_columns(case, _ROWS)
    bad = [math.nan] + list(cols[col][1][_BAD_ROW][1:])
    _expect(case, "check_nan_feature", _fit(case, spark, _with_row(cols, col, bad)), col, param,
            "fit with a NaN feature")


# ----------------------------------------------------------------------------- labels and weights
def check_missing_label_column(case: StageCase, spark) -> None:
    """(Supervised Estimators.) ``fit`` without the label column raises naming it."""
    col = label_column(case)
    cols = make_columns(case, _ROWS)
    del cols[col]
    _expect(case, "check_missing_label_column", _fit(case, spark, cols), col, "labelCol",
            f"fit without the label column {col!r}")


def check_null_label(case: StageCase, spark) -> None:
    """(Supervised Estimators.) ``fit`` with one null label raises naming the label column."""
    col = label_column(case)
    cols = _with_row(make_columns(case, _ROWS), col, None)
    _expect(case, "check_null_label", _fit(case, spark, cols), col, "labelCol", "fit with a null label")


def check_nan_label(case: StageCase, spark) -> None:
    """(Supervised Estimators.) ``fit`` with one NaN label raises naming the label column."""
    col = label_column(case)
    cols = _with_row(make_columns(case, _ROWS), col, math.nan)
    _expect(case, "check_nan_label", _fit(case, spark, cols), col, "labelCol", "fit with a NaN label")


def check_negative_weight(case: StageCase, spark) -> None:
    """(Estimators with ``weightCol``.) ``fit`` with one negative weight raises naming the weight
    column (``weightCol`` is set to the weight column on a copy when the stage has it unset)."""
    col = weight_column(case)
    stage = case.stage
    if not column_of(stage, "weightCol"):
        stage = stage.copy({stage.getParam("weightCol"): col})
    cols = _with_row(make_columns(case, _ROWS), col, -1.0)
    _expect(case, "check_negative_weight", _fit(case, spark, cols, stage), col, "weightCol",
            "fit with a negative weight")


# ----------------------------------------------------------------------------- outputs, empty data
def check_output_column_exists(case: StageCase, spark) -> None:
    """``transform`` of data that already has a column named as an output column (each output
    param in turn) raises naming that column."""
    model, _ = fit_stage(case, spark)
    for param, col in case.kind.outputs:
        name = column_of(model, param) or col
        cols = make_columns(case, _ROWS)
        cols[name] = ("double", [1.0] * _ROWS)
        _expect(case, "check_output_column_exists", _transform(model, to_frame(spark, cols)), name, param,
                f"transform of data that has a column {name!r} ({param})")


def check_fit_empty_dataframe(case: StageCase, spark) -> None:
    """(Estimators.) ``fit`` of an empty DataFrame raises naming the input column (or saying
    'empty')."""
    col, param = _input_column(case)
    df = to_frame(spark, make_columns(case, _ROWS)).limit(0)
    _expect(case, "check_fit_empty_dataframe", _fit(case, spark, df), col, param, "fit of an empty DataFrame",
            match=f"{names_column(col)}|empty")


def _vector_estimator(c: StageCase) -> bool:
    return c.kind.estimator and c.kind.vector_param is not None and vector_column(c) is not None


#: ``(name, function, applies(case))`` of every bad-input check, in running order.
BAD_INPUT_CHECKS: List[Tuple[str, Callable, Callable[[StageCase], bool]]] = [
    ("check_missing_input_column", check_missing_input_column, lambda c: _input_column(c)[0] is not None),
    ("check_input_column_wrong_type", check_input_column_wrong_type, lambda c: _input_column(c)[0] is not None),
    ("check_null_vector", check_null_vector, _vector_estimator),
    ("check_mixed_vector_sizes", check_mixed_vector_sizes, _vector_estimator),
    ("check_nan_feature", check_nan_feature, _vector_estimator),
    ("check_missing_label_column", check_missing_label_column, lambda c: c.kind.supervised),
    ("check_null_label", check_null_label, lambda c: c.kind.supervised),
    ("check_nan_label", check_nan_label, lambda c: c.kind.supervised),
    ("check_negative_weight", check_negative_weight, lambda c: c.kind.estimator and c.kind.weight),
    ("check_output_column_exists", check_output_column_exists, lambda c: bool(c.kind.outputs)),
    ("check_fit_empty_dataframe", check_fit_empty_dataframe,
     lambda c: c.kind.estimator and _input_column(c)[0] is not None),
]
