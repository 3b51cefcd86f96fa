"""The public conformance suite (:mod:`sparkml_scale.testing`) on stages written outside the package.

``MeanCenter`` is what a third party would write on pyspark.ml and
:class:`~sparkml_scale.core.persistence.ParamsReadWrite`: a vector Estimator whose model subtracts
the training mean; ``MeanAbsScale`` is written on the package's stage template
(:mod:`sparkml_scale.core.stage`), with a weight column.  Both pass every check that applies to
their kind; two broken variants (a setter that does not return the stage, a transform that lets
Spark's raw error through) fail the check that is about their fault, so the suite can fail.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.linalg import Vectors, VectorUDT
from pyspark.ml.param.shared import HasFeaturesCol, HasInputCol, HasOutputCol, HasWeightCol
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkml_scale.core.params import Required
from sparkml_scale.core.persistence import ParamsReadWrite
from sparkml_scale.core.stage import StageParams, VectorEstimator, VectorModel
from sparkml_scale.testing import (
    CHECK_NAMES,
    StageCase,
    all_checks,
    check_stage,
    parametrize_with_checks,
    stage_id,
    stage_kind,
)


# ----------------------------------------------------------------------------- a third-party stage
def _check_input(schema: T.StructType, col: str) -> None:
    if col not in schema.names:
        raise ValueError(f"column {col!r} (param 'inputCol') is not in the DataFrame")
    if not isinstance(schema[col].dataType, VectorUDT):
        raise TypeError(f"column {col!r} (param 'inputCol') must be a vector column")


class _MeanCenterParams(HasInputCol, HasOutputCol):
    def __init__(self, *args):
        super().__init__(*args)
        self._setDefault(inputCol="features", outputCol="centered")


class MeanCenter(_MeanCenterParams, Estimator, ParamsReadWrite):
    """Subtracts the training mean from a vector column."""

    @keyword_only
    def __init__(self, *, inputCol: str = "features", outputCol: str = "centered"):
        super().__init__()
        self._set(**self._input_kwargs)

    def setInputCol(self, value: str) -> "MeanCenter":
        return self._set(inputCol=value)

    def setOutputCol(self, value: str) -> "MeanCenter":
        return self._set(outputCol=value)

    _model_class = None  # set below

    def _fit(self, dataset):
        col = self.getInputCol()
        _check_input(dataset.schema, col)
        vectors = [r[0] for r in dataset.select(col).collect()]
        if not vectors:
            raise ValueError(f"column {col!r} (param 'inputCol') is empty")
        if any(v is None for v in vectors):
            raise ValueError(f"column {col!r} (param 'inputCol') holds null vectors")
        if len({v.size for v in vectors}) > 1:
            raise ValueError(f"column {col!r} (param 'inputCol') holds vectors of different sizes")
        X = np.array([v.toArray() for v in vectors])
        if not np.isfinite(X).all():
            raise ValueError(f"column {col!r} (param 'inputCol') holds NaN or infinite values")
        return self._copyValues(self._model_class(X.mean(axis=0)))


class MeanCenterModel(_MeanCenterParams, Model, ParamsReadWrite):
    """The fitted :class:`MeanCenter`: ``outputCol = inputCol - mean``."""

    def __init__(self, mean=None):
        super().__init__()
        self.mean = np.zeros(0) if mean is None else np.asarray(mean, dtype=np.float64)

    def _model_arrays(self):
        return {"mean": self.mean}

    @classmethod
    def _from_arrays(cls, arrays, metadata):
        return cls(arrays["mean"])

    def transformSchema(self, schema: T.StructType) -> T.StructType:
        _check_input(schema, self.getInputCol())
        if self.getOutputCol() in schema.names:
            raise ValueError(f"output column {self.getOutputCol()!r} (param 'outputCol') already exists")
        return T.StructType(list(schema.fields) + [T.StructField(self.getOutputCol(), VectorUDT(), True)])

    def _transform(self, dataset):
        self.transformSchema(dataset.schema)
        return self._center(dataset)

    def _center(self, dataset):
        mean = self.mean
        center = F.udf(lambda v: None if v is None else Vectors.dense(v.toArray() - mean), VectorUDT())
        return dataset.withColumn(self.getOutputCol(), center(F.col(self.getInputCol())))


MeanCenter._model_class = MeanCenterModel


# ----------------------------------------------------------------------------- a stage on the template
class _MeanAbsParams(StageParams, HasFeaturesCol, HasOutputCol, HasWeightCol):
    _input_roles = (("featuresCol", "vector", False), ("weightCol", "numeric", True))
    _output_params = ("outputCol",)
    _param_constraints = {"outputCol": Required("a new column name")}

    def __init__(self, *args):
        super().__init__(*args)
        self._setDefault(outputCol="scaled")


class MeanAbsScale(_MeanAbsParams, VectorEstimator):
    """Divides each feature by its weighted mean absolute value."""

    def __init__(self, **kw):
        super().__init__()
        self._set(**kw)

    def setFeaturesCol(self, value: str) -> "MeanAbsScale":
        return self._set(featuresCol=value)

    def setOutputCol(self, value: str) -> "MeanAbsScale":
        return self._set(outputCol=value)

    def setWeightCol(self, value: str) -> "MeanAbsScale":
        return self._set(weightCol=value)

    def _solve(self, data):
        d = data.cols.size

        def abs_sums(blocks):  # on the executors: numpy only
            total, weight = np.zeros(d), 0.0
            for X, _, w in blocks:
                A = np.abs(X.toarray() if hasattr(X, "toarray") else np.asarray(X))
                total = total + (A.sum(axis=0) if w is None else w @ A)
                weight += A.shape[0] if w is None else float(w.sum())
            return [total, np.array([weight])]

        total, weight = data.aggregate(abs_sums)
        mean_abs = total / weight[0]
        return np.where(mean_abs > 0, mean_abs, 1.0)

    def _create_model(self, scale):
        return MeanAbsScaleModel._of(scale)


class MeanAbsScaleModel(_MeanAbsParams, VectorModel):
    scale_ = np.ones(0)
    _dense_input = True

    @classmethod
    def _of(cls, scale):
        m = cls()
        m.scale_ = np.asarray(scale, dtype=np.float64)
        return m

    def _output_fields(self):
        return [("outputCol", self.getOutputCol(), VectorUDT())]

    def _num_features(self):
        return len(self.scale_)

    def _block_predictor(self):
        scale = self.scale_
        return lambda X: [np.asarray(X) / scale]

    def _model_arrays(self):
        return {"scale": self.scale_}

    @classmethod
    def _from_arrays(cls, arrays, metadata):
        return cls._of(arrays["scale"])


# ----------------------------------------------------------------------------- broken variants
class BadSetter(MeanCenter):
    """A setter that does not return the stage."""

    def setOutputCol(self, value: str):
        self._set(outputCol=value)


class RawErrorModel(MeanCenterModel):
    """A transform without schema checks: Spark's own error reaches the user."""

    def _transform(self, dataset):
        return self._center(dataset)


class RawError(MeanCenter):
    _model_class = RawErrorModel


# ----------------------------------------------------------------------------- tests
@parametrize_with_checks([StageCase(MeanCenter(), id="MeanCenter"),
                          StageCase(MeanAbsScale(), id="MeanAbsScale-template", tuning="tvs")])
def test_third_party_stages_pass(stage, check, spark):
    check(stage, spark)


def test_a_setter_that_does_not_return_the_stage_fails_check_params(spark):
    with pytest.raises(AssertionError) as info:
        check_stage(BadSetter(), spark, checks=["check_params", "check_save_load"])
    msg = str(info.value)
    assert "failed 1 check(s)" in msg and "check_params" in msg and "check_save_load" not in msg
    assert "BadSetter.outputCol: setOutputCol() does not return the stage" in msg


def test_a_raw_spark_error_fails_the_bad_input_check(spark):
    with pytest.raises(AssertionError) as info:
        check_stage(RawError(), spark, checks=["check_missing_input_column", "check_output_column_exists",
                                               "check_nan_feature"])
    msg = str(info.value)
    assert "failed 2 check(s)" in msg, msg
    assert "check_missing_input_column: AssertionError: check_missing_input_column: transform with column " \
           "'features' missing: raw Spark/Py4J error reaches the user" in msg
    assert "check_output_column_exists: AssertionError" in msg and "no error raised" in msg
    assert "check_nan_feature" not in msg  # fit is the clean MeanCenter's


def test_check_stage_results_skip_and_expected_failures(spark):
    got = check_stage(BadSetter(), spark, checks=["check_params", "check_transform_empty", "check_outputs"],
                      skip={"check_outputs": "not today"}, expected_failures={"check_params": "known bug"})
    assert got == {"check_params": "expected failure: known bug", "check_transform_empty": "passed",
                   "check_outputs": "skipped: not today"}
    with pytest.raises(ValueError, match="check_nope"):
        list(all_checks(MeanCenter(), checks=["check_nope"]))


def test_kinds_and_the_checks_each_kind_gets():
    from sparkml_scale.classification import LogisticRegression
    from sparkml_scale.feature import PCA, FeatureHasher
    from sparkml_scale.regression import LinearRegression

    assert stage_kind(LogisticRegression()).name == "classifier"
    assert stage_kind(LinearRegression()).name == "regressor"
    assert stage_kind(PCA(k=2)).name == "unsupervised" and stage_kind(MeanCenter()).name == "unsupervised"
    hasher = FeatureHasher(inputCols=["a", "b"], outputCol="h")
    kind = stage_kind(hasher)
    assert (kind.name, kind.estimator, kind.input_cols, kind.outputs) == ("transformer", False, True,
                                                                          (("outputCol", "h"),))
    every = set(CHECK_NAMES)
    assert {n for n, _ in all_checks(LinearRegression())} == every  # supervised, weighted, with outputs
    assert {n for n, _ in all_checks(LogisticRegression())} == every
    assert every - {n for n, _ in all_checks(MeanCenter())} == {
        "check_missing_label_column", "check_null_label", "check_nan_label", "check_negative_weight"}
    assert every - {n for n, _ in all_checks(MeanAbsScale())} == {
        "check_missing_label_column", "check_null_label", "check_nan_label"}  # weighted: negative weight
    assert every - {n for n, _ in all_checks(hasher)} == {
        "check_null_vector", "check_mixed_vector_sizes", "check_nan_feature", "check_missing_label_column",
        "check_null_label", "check_nan_label", "check_negative_weight", "check_fit_empty_dataframe"}
    assert len(CHECK_NAMES) == 21 and CHECK_NAMES[0] == "check_params"
    assert stage_id(LogisticRegression(maxIter=5, featuresCol="f")) == "LogisticRegression(maxIter=5)"
    with pytest.raises(TypeError, match="not a pyspark.ml Estimator or Transformer"):
        StageCase(object())


def test_parametrize_ids_and_marks():
    mark = parametrize_with_checks([StageCase(MeanCenter(), id="mc", skip={"check_tuning": "slow"},
                                              expected_failures={"check_params": "known"})],
                                   checks=["check_params", "check_tuning", "check_outputs"])
    assert mark.args[0] == "stage, check"
    params = mark.args[1]
    assert [p.id for p in params] == ["mc-check_params", "mc-check_tuning", "mc-check_outputs"]
    assert [[m.name for m in p.marks] for p in params] == [["xfail"], ["skip"], []]
    with pytest.raises(ValueError, match="two stages have the id"):
        parametrize_with_checks([MeanCenter(), MeanCenter()])


def test_the_package_imports_without_pytest():
    code = ("import sys; sys.modules['pytest'] = None; import sparkml_scale.testing as t; "
            "assert 'check_params' in t.CHECK_NAMES")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
