"""Conformance checks for pyspark.ml stages, after scikit-learn's ``sklearn.utils.estimator_checks``.

Every check runs a stage (an Estimator with its fitted Model, or a Transformer) on small
synthetic data and raises ``AssertionError`` saying what is wrong.  Which checks apply, and
what data they build, follows from the stage's kind, read from its Spark param names
(:func:`stage_kind`: ``featuresCol``/``inputCol``/``inputCols``, ``labelCol``, ``weightCol``,
``predictionCol``/``probabilityCol``/``rawPredictionCol``/``outputCol``), so stages written
outside this package on pyspark.ml's conventions (and on
:class:`sparkml_scale.core.persistence.ParamsReadWrite` for saving) are checked the same way.

In a pytest suite (pytest is only imported by :func:`parametrize_with_checks`)::

    from sparkml_scale.testing import StageCase, parametrize_with_checks

    @parametrize_with_checks([MyEstimator(k=2), StageCase(MyClassifier(), n_classes=3)])
    def test_my_stages(stage, check, spark):      # spark: a SparkSession fixture
        check(stage, spark)

or at once, outside pytest: ``check_stage(MyEstimator(k=2), spark)`` (``AssertionError`` naming
every failed check).

Conformance checks (:mod:`sparkml_scale.testing.checks`): ``check_params``, ``check_copy``,
``check_save_load``, ``check_saved_files`` (stages on ``ParamsReadWrite``),
``check_pipeline_save_load``, ``check_tuning``, ``check_transform_empty``,
``check_schema_before_job``, ``check_streaming_transform``, ``check_outputs``.

Bad-input checks (:mod:`sparkml_scale.testing.bad_input`), each expecting a clean
``ValueError``/``TypeError`` (:func:`assert_clean`) that names the column:
``check_missing_input_column``, ``check_input_column_wrong_type``, and for Estimators over a
vector column ``check_null_vector``, ``check_mixed_vector_sizes``, ``check_nan_feature``,
``check_fit_empty_dataframe``; for supervised ones ``check_missing_label_column``,
``check_null_label``, ``check_nan_label``; with ``weightCol`` ``check_negative_weight``; for
stages with outputs ``check_output_column_exists``.
"""
from __future__ import annotations

from .case import StageCase, StageKind, stage_id, stage_kind
from .checks import collect_output, fitted_output, is_connect, output_columns
from .clean import assert_clean, expect_clean_error
from .data import clear_cache, fit_stage, make_columns, to_frame, training_frame
from .suite import CHECK_NAMES, Check, all_checks, check_stage, parametrize_with_checks

__all__ = [
    "StageCase",
    "StageKind",
    "stage_kind",
    "stage_id",
    "Check",
    "CHECK_NAMES",
    "all_checks",
    "check_stage",
    "parametrize_with_checks",
    "assert_clean",
    "expect_clean_error",
    "fit_stage",
    "training_frame",
    "make_columns",
    "to_frame",
    "clear_cache",
    "collect_output",
    "fitted_output",
    "output_columns",
    "is_connect",
]
