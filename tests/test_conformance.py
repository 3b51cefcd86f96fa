"""Conformance suite: every public pyspark.ml stage of the package, checked by the public
:mod:`sparkml_scale.testing` checks (the package's ``check_estimator``).

``CASES`` lists one configured stage per public stage (or solver), with the options of its
checks; ``test_stage`` runs every check that applies to its kind, conformance and generic bad
input alike (the checks and what each asserts: :mod:`sparkml_scale.testing`).  The messages
of the bad-input checks are held here to the stricter regexes of each stage
(``StageCase.raises``), on top of the package's loose ones.

Kept here, as specific to this package:

- classic vs Spark Connect: the classic run stores each case's output in pytest's cache,
  the Connect run (scripts/test.sh runs it second) fits again and compares.  Under Connect
  every check runs again except the Pipeline, tuning and streaming ones (classic only, suite
  time);
- ``test_every_public_stage_has_a_case`` fails when a public stage is added without a case;
- loading a tampered TorchModel never runs its code.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import json
import pkgutil
from typing import Dict, List

import numpy as np
import pytest
from helpers import CONNECT
from pyspark.ml import Estimator, Transformer

import sparkml_scale
from sparkml_scale.classification import LogisticRegression, LogisticRegressionModel, SGDLogisticRegression
from sparkml_scale.core.arrow import VectorColumnError
from sparkml_scale.feature import PCA, FeatureHasher, PCAModel
from sparkml_scale.regression import LinearRegression, LinearRegressionModel
from sparkml_scale.testing import StageCase, fit_stage, fitted_output, parametrize_with_checks

pytestmark = pytest.mark.connect

_CLASSIC_ONLY = ("classic only, to keep the suite's time (the fit/transform itself is compared under Connect by "
                 "test_same_output_under_classic_and_connect)")
SKIP = dict.fromkeys(("check_pipeline_save_load", "check_tuning", "check_streaming_transform"),
                     _CLASSIC_ONLY) if CONNECT else {}

# Stricter messages of our stages' generic bad-input checks ({column}/{param}: the column and param
# the check is about).  VectorColumnError is a ValueError.
_VECTOR_ERRORS = {
    "check_input_column_wrong_type": (TypeError, r"'{column}'.*'{param}'.*vector"),
    "check_null_vector": (VectorColumnError, r"'{column}'.*1 null"),
    "check_nan_feature": (None, r"'{column}'.*NaN"),
    "check_mixed_vector_sizes": (VectorColumnError, r"'{column}'.*(different sizes|size \d+, expected \d+)"),
    "check_missing_input_column": (None, r"'{column}'.*'{param}'"),
}
_SUPERVISED_ERRORS = {
    "check_missing_label_column": (None, r"'{column}'.*'labelCol'"),
    "check_null_label": (None, r"'{column}' \(labelCol\).*null"),
    "check_negative_weight": (None, r"'{column}' \(weightCol\).*negative"),
    "check_output_column_exists": (ValueError, r"'{column}'.*'{param}'"),
}


CLASSES: Dict[str, tuple] = {}  # case id -> the public classes it covers


def _case(id, stage, classes, **options) -> StageCase:
    options.setdefault("skip", SKIP)
    case = StageCase(stage, id=id, **options)
    CLASSES[id] = classes
    return case


# Bad-input checks that launch a torch training process (~5 s each), skipped for suite time: the
# per-process label checks are test_bad_input's torch-*-label-shard cases; the null-vector and
# mixed-size ones run in the classic session only; a per-process error reaching the driver is
# check_nan_feature (classic and Connect).
_TORCH_LAUNCHES = ("check_null_label", "check_nan_label") + (
    ("check_null_vector", "check_mixed_vector_sizes") if CONNECT else ())
_TORCH_LAUNCH_REASON = ("launches a training process (~5 s, suite time): see _TORCH_LAUNCHES in "
                        "tests/test_conformance.py for where its case is checked")


def _torch_case():
    try:
        import torch  # noqa: F401
    except ImportError:  # pragma: no cover - the dev install has torch
        return None
    from sparkml_scale.torch import TorchEstimator, TorchModel
    from sparkml_scale.torch.models import mlp

    return _case(
        "TorchEstimator",
        TorchEstimator(model=functools.partial(mlp, 4, [8], 3), epochs=2, batchSize=32, numProc=1,
                       learningRate=0.05, seed=3),
        (TorchEstimator, TorchModel), n_classes=3, copy_extra={"epochs": 1}, grid={"learningRate": [0.05]},
        # a torch fit has ~5 s of process start-up: TrainValidationSplit over a one-point grid
        tuning="tvs", skip={**SKIP, **dict.fromkeys(_TORCH_LAUNCHES, _TORCH_LAUNCH_REASON)},
        raises={"check_missing_input_column": (None, r"'{column}'.*'featuresCol'"),
                "check_input_column_wrong_type": (TypeError, r"'{column}'.*'featuresCol'"),
                "check_nan_feature": (None, r"'{column}'.*'featuresCol'.*NaN"),
                "check_fit_empty_dataframe": (None, r"'{column}'.*'featuresCol'.*empty")})


CASES: List[StageCase] = [c for c in [
    _case("PCA", PCA(k=2, inputCol="features", outputCol="pca"), (PCA, PCAModel), copy_extra={"k": 3},
          grid={"k": [1, 2]}, tuning="tvs", parallelism=2,
          raises={**_VECTOR_ERRORS, "check_fit_empty_dataframe": (None, r"'{column}'.*empty")}),
    _case("LinearRegression", LinearRegression(regParam=0.01),
          (LinearRegression, LinearRegressionModel),
          copy_extra={"regParam": 0.5}, grid={"regParam": [0.0, 0.1]}, tuning="cv", parallelism=2,
          raises={**_VECTOR_ERRORS, **_SUPERVISED_ERRORS,
                  "check_null_vector": (VectorColumnError, r"'{column}'.*1 null"),
                  "check_mixed_vector_sizes": (VectorColumnError, r"'{column}'.*different sizes"),
                  "check_null_label": (None, r"'{column}' \(labelCol\).*1 null"),
                  "check_nan_label": (None, r"'{column}' \(labelCol\).*NaN"),
                  "check_fit_empty_dataframe": (None, r"'{column}'.*empty")}),
    _case("LogisticRegression-mapreduce", LogisticRegression(solver="mapreduce", maxIter=5, regParam=0.01),
          (LogisticRegression, LogisticRegressionModel), copy_extra={"maxIter": 3},
          grid={"regParam": [0.01, 0.1]}, tuning="tvs", parallelism=2,
          raises={**_VECTOR_ERRORS, **_SUPERVISED_ERRORS,
                  "check_null_vector": (VectorColumnError, r"'{column}' \(featuresCol\).*1 null"),
                  "check_nan_feature": (None, r"'{column}' \(featuresCol\).*NaN"),
                  "check_fit_empty_dataframe": (None, r"empty")}),
    _case("LogisticRegression-allreduce", LogisticRegression(solver="allreduce", maxIter=5, regParam=0.01),
          (LogisticRegression,), n_classes=3, copy_extra={"solver": "mapreduce"}, grid={"regParam": [0.01, 0.1]},
          tuning="tvs", parallelism=1, raises={**_VECTOR_ERRORS, **_SUPERVISED_ERRORS}),
    # multinomial SGD (binomial SGD: tests/test_logistic_sgd.py)
    _case("SGDLogisticRegression", SGDLogisticRegression(epochs=2, batchSize=32, seed=5), (SGDLogisticRegression,),
          n_classes=3, copy_extra={"epochs": 4}, grid={"stepSize": [0.1, 0.5]}, tuning="tvs", parallelism=2),
    _case("FeatureHasher", FeatureHasher(inputCols=["species", "petal_len", "wide"], outputCol="hashed",
                                         numFeatures=32), (FeatureHasher,),
          input_types={"species": "string", "petal_len": "double", "wide": "boolean"},
          copy_extra={"numFeatures": 64}, grid={"numFeatures": [16, 32]}, tuning="tvs", parallelism=2,
          raises={"check_missing_input_column": (None, r"'{column}'.*'inputCols'"),
                  "check_input_column_wrong_type": (TypeError, r"'{column}'.*'inputCols'"),
                  "check_output_column_exists": (ValueError, r"'{column}'.*'outputCol'.*already exists")}),
    _torch_case(),
] if c is not None]
BY_ID = {c.id: c for c in CASES}

# classic vs Connect tolerance of each case's output
CONNECT_TOL = {"TorchEstimator": 1e-4}


@parametrize_with_checks(CASES)
def test_stage(stage, check, spark):
    check(stage, spark)


# ----------------------------------------------------------------------------- package-specific
def _public_stage_classes():
    """Every Estimator/Transformer class in a public module's ``__all__`` (modules not starting with '_')."""
    found = set()
    for info in pkgutil.walk_packages(sparkml_scale.__path__, "sparkml_scale."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        mod = importlib.import_module(info.name)
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name, None)
            if inspect.isclass(obj) and issubclass(obj, (Estimator, Transformer)):
                found.add(obj)
    return found


def test_every_public_stage_has_a_case():
    from sparkml_scale.core.stage import VectorEstimator, VectorModel

    covered = {cls for c in CASES for cls in CLASSES[c.id]}
    # the template's abstract bases: what stages subclass (tests/test_testing.py checks one written on them)
    abstract = {VectorEstimator, VectorModel}
    # meta-estimators, fitted over other stages (tests/test_tuning.py: params, folds, save/load, Connect)
    from sparkml_scale.tuning import HyperparameterSearch, HyperparameterSearchModel

    meta = {HyperparameterSearch, HyperparameterSearchModel}
    # monitors: DriftModel.transform gives one row per feature, not per input row, which the generic
    # checks assume (tests/test_monitoring_drift.py: params, bad input, save/load, windows, Connect)
    from sparkml_scale.monitoring import DriftDetector, DriftModel

    monitors = {DriftDetector, DriftModel}
    missing = sorted(f"{c.__module__}.{c.__name__}" for c in _public_stage_classes() - covered - abstract - meta
                     - monitors)
    assert not missing, f"public stages without a conformance case: {missing}"
    assert len(covered) >= 10


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_same_output_under_classic_and_connect(request, case, spark):
    """Classic run: store the output.  Connect run: compare with the classic run's output."""
    out = fitted_output(case, spark)
    key = f"sparkml_scale/conformance-synthetic/{case.id}"
    if not CONNECT:
        request.config.cache.set(key, json.dumps(out.tolist()))
        return
    stored = request.config.cache.get(key, None)
    if stored is None:
        pytest.skip("no classic-run output in pytest's cache (scripts/test.sh runs classic first)")
    np.testing.assert_allclose(out, np.array(json.loads(stored)), rtol=0, atol=CONNECT_TOL.get(case.id, 1e-6),
                               err_msg=f"{case.id}: Spark Connect output differs from the classic session's")


def test_loading_a_tampered_torch_model_never_runs_its_code(spark, tmp_path):
    """A TorchModel whose weights blob is a pickle that would run code: load refuses it, nothing runs."""
    pytest.importorskip("torch")
    import pickle

    import pyarrow as pa
    import pyarrow.parquet as pq

    from sparkml_scale.core.persistence import ModelLoadError
    from sparkml_scale.torch import TorchModel

    model, _ = fit_stage(BY_ID["TorchEstimator"], spark)
    root = tmp_path / "torch_model"
    model.save(str(root))
    marker = tmp_path / "code_ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    blob = np.frombuffer(pickle.dumps({"w": Evil()}), dtype=np.int8)
    part = next((root / "data").glob("*.parquet"))
    table = pq.read_table(part)
    names = table.column("name").to_pylist()
    i = names.index("torch_state")
    data = table.column("data").to_pylist()
    shape = table.column("shape").to_pylist()
    data[i], shape[i] = blob.tobytes(), [len(blob)]
    pq.write_table(pa.table({"name": names, "dtype": table.column("dtype").to_pylist(), "shape": shape,
                             "data": data}, schema=table.schema), part)
    for crc in (root / "data").glob(".*.crc"):  # as an attacker would: Hadoop's checksums would catch a plain edit
        crc.unlink()
    with pytest.raises(ModelLoadError, match="weights") as info:
        TorchModel.load(str(root))
    assert not marker.exists(), "loading the model executed code from the model directory"
    assert "Traceback" not in str(info.value) and "py4j" not in str(info.value).lower()
