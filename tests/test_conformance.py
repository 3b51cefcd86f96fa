"""Conformance suite: every public pyspark.ml stage of the package, checked the same way.

In the spirit of scikit-learn's ``check_estimator``: each entry of ``CASES`` is one public
stage with small params and small real data (scikit-learn's bundled sets), and every
check below runs for every case:

- params: a doc, a Spark-style ``getX`` for each param, a ``setX`` returning the stage
  (Estimators and plain Transformers), every param named in ``explainParams()``;
- ``copy(extra)``: the copy has the extra value, keeps the uid and the fitted state, and
  the original is unchanged;
- save/load of the estimator (params) and of the model (same output), alone and inside a
  saved ``PipelineModel``;
- ``CrossValidator`` (and the ``CrossValidatorModel`` saved and loaded) or, for the stages
  with the costliest fits, ``TrainValidationSplit``, with a ``ParamGridBuilder`` grid;
- ``transform`` of an empty DataFrame; the output schema from ``transformSchema`` and from
  ``transform`` before any Spark job runs (classic: checked with the job tracker);
- ``transform`` of a streaming DataFrame (all our Transformers are row-wise);
- classic vs Spark Connect: the classic run stores each case's output in pytest's cache,
  the Connect run (scripts/test.sh runs it second) fits again and compares.  Under Connect
  the params, copy, save/load, empty, schema and output checks run again; the Pipeline,
  tuning and streaming checks run in the classic session only (suite time).

``test_every_public_stage_has_a_case`` fails when a public stage is added without a case.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import json
import os
import pkgutil
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np
import pytest
from pyspark.ml import Estimator, Model, Pipeline, PipelineModel, Transformer
from pyspark.ml.evaluation import (
    BinaryClassificationEvaluator,
    MulticlassClassificationEvaluator,
    RegressionEvaluator,
)
from pyspark.ml.linalg import Vector, Vectors
from pyspark.ml.tuning import CrossValidator, CrossValidatorModel, ParamGridBuilder, TrainValidationSplit

import sparkml_scale
from sparkml_scale.classification import LogisticRegression, SGDLogisticRegression
from sparkml_scale.feature import PCA, FeatureHasher
from sparkml_scale.regression import LinearRegression

CONNECT = os.environ.get("SPARKML_SCALE_TEST_CONNECT") == "1"

pytestmark = pytest.mark.connect


# ----------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def datasets(spark):
    """Small real data sets, each with an ``id`` column (for comparing outputs row by row)."""
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

    def frame(X, y, extra=None):
        X = (X - X.mean(0)) / X.std(0)
        rows = [(i, Vectors.dense(x), float(t)) + (tuple(extra[i]) if extra is not None else ())
                for i, (x, t) in enumerate(zip(X, y))]
        cols = ["id", "features", "label"] + (["species", "petal_len", "wide"] if extra is not None else [])
        return spark.createDataFrame(rows, cols)

    iris = load_iris()
    names = np.array(iris.target_names)[iris.target]
    extra = [(str(n), float(p), bool(w > 3.0)) for n, p, w in zip(names, iris.data[:, 2], iris.data[:, 1])]
    cancer = load_breast_cancer()
    diabetes = load_diabetes()
    out = {
        "iris": frame(iris.data, iris.target),
        "iris_mixed": frame(iris.data, iris.target, extra),
        "cancer": frame(cancer.data[:200], cancer.target[:200]),
        "diabetes": frame(diabetes.data, diabetes.target),
    }
    for df in out.values():
        df.cache().count()
    return out


# ----------------------------------------------------------------------------- cases
@dataclass
class Case:
    id: str
    make: Callable[[], object]              # a fresh stage with small params
    data: str                               # key of ``datasets``
    classes: tuple                          # the public classes this case covers
    outputs: List[str]                      # columns transform adds
    grid_param: str                         # a param of the tuned stage to put in the grid
    grid_values: list
    evaluator: Callable[[], object]
    tail: Optional[Callable[[], object]] = None   # a stage after ours for tuning (label-free stages)
    copy_param: str = ""                    # an estimator param to change in copy(extra)
    copy_value: object = None
    tol: float = 1e-6                       # classic vs Connect tolerance
    tune_with_cv: bool = True               # CrossValidator, else TrainValidationSplit
    parallelism: int = 2                    # concurrent fits while tuning (1 for barrier stages)


def _torch_case() -> Optional[Case]:
    try:
        import torch  # noqa: F401
    except ImportError:  # pragma: no cover - the dev install has torch
        return None
    from sparkml_scale.torch import TorchEstimator, TorchModel
    from sparkml_scale.torch.models import mlp

    return Case(
        "TorchEstimator",
        lambda: TorchEstimator(model=functools.partial(mlp, 4, [8], 3), epochs=2, batchSize=32, numProc=1,
                               learningRate=0.05, seed=3),
        "iris", (TorchEstimator, TorchModel), ["prediction", "probability"], "learningRate", [0.05],
        lambda: MulticlassClassificationEvaluator(metricName="accuracy"), copy_param="epochs", copy_value=1,
        # a torch fit has ~5 s of process start-up: TrainValidationSplit over a one-point grid
        tol=1e-4, tune_with_cv=False, parallelism=1)


def _hasher():
    return FeatureHasher(inputCols=["species", "petal_len", "wide"], outputCol="hashed", numFeatures=32)


CASES = [c for c in [
    Case("PCA", lambda: PCA(k=2, inputCol="features", outputCol="pca"), "iris",
         (PCA, importlib.import_module("sparkml_scale.feature").PCAModel), ["pca"], "k", [1, 2],
         lambda: RegressionEvaluator(metricName="rmse"),
         tail=lambda: LinearRegression(featuresCol="pca"), copy_param="k", copy_value=3, tune_with_cv=False),
    Case("LinearRegression", lambda: LinearRegression(regParam=0.01), "diabetes",
         (LinearRegression, importlib.import_module("sparkml_scale.regression").LinearRegressionModel),
         ["prediction"], "regParam", [0.0, 0.1], lambda: RegressionEvaluator(metricName="rmse"),
         copy_param="regParam", copy_value=0.5),
    Case("LogisticRegression-mapreduce", lambda: LogisticRegression(solver="mapreduce", maxIter=5, regParam=0.01),
         "cancer", (LogisticRegression, importlib.import_module("sparkml_scale.classification").LogisticRegressionModel),
         ["rawPrediction", "probability", "prediction"], "regParam", [0.01, 0.1],
         lambda: BinaryClassificationEvaluator(), copy_param="maxIter", copy_value=3, tune_with_cv=False),
    Case("LogisticRegression-allreduce", lambda: LogisticRegression(solver="allreduce", maxIter=5, regParam=0.01),
         "iris", (LogisticRegression,), ["rawPrediction", "probability", "prediction"], "regParam", [0.01, 0.1],
         lambda: MulticlassClassificationEvaluator(metricName="accuracy"), copy_param="solver",
         copy_value="mapreduce", parallelism=1, tune_with_cv=False),
    Case("SGDLogisticRegression", lambda: SGDLogisticRegression(epochs=2, batchSize=32, seed=5), "iris",
         (SGDLogisticRegression,), ["rawPrediction", "probability", "prediction"], "stepSize", [0.1, 0.5],
         lambda: MulticlassClassificationEvaluator(metricName="accuracy"), copy_param="epochs", copy_value=4,
         tune_with_cv=False),  # multinomial SGD (binomial SGD: tests/test_logistic_sgd.py)
    Case("FeatureHasher", _hasher, "iris_mixed", (FeatureHasher,), ["hashed"], "numFeatures", [16, 32],
         lambda: RegressionEvaluator(metricName="rmse"),
         tail=lambda: LinearRegression(featuresCol="hashed"), copy_param="numFeatures",
         copy_value=64, tune_with_cv=False),
    _torch_case(),
] if c is not None]

IDS = [c.id for c in CASES]


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
    covered = {cls for c in CASES for cls in c.classes}
    missing = sorted(f"{c.__module__}.{c.__name__}" for c in _public_stage_classes() - covered)
    assert not missing, f"public stages without a conformance case: {missing}"
    assert len(covered) >= 10


# ----------------------------------------------------------------------------- helpers
_FITTED: Dict[str, object] = {}


def _is_estimator(stage) -> bool:
    return isinstance(stage, Estimator)


def _fit(case: Case, df):
    stage = case.make()
    return stage.fit(df) if _is_estimator(stage) else stage


@pytest.fixture(params=CASES, ids=IDS)
def case(request):
    return request.param


@pytest.fixture
def fitted(case, datasets):
    """(the fresh stage, its fitted Transformer, the data): one fit per case per session."""
    df = datasets[case.data]
    if case.id not in _FITTED:
        _FITTED[case.id] = _fit(case, df)
    return case.make(), _FITTED[case.id], df


def _as_array(v):
    if isinstance(v, Vector):
        return v.toArray().tolist()
    return [float(v)] if v is not None else [float("nan")]


def _output(model, df, cols: List[str]) -> np.ndarray:
    """The ``cols`` of ``model.transform(df)`` as one float matrix, rows ordered by ``id``."""
    rows = model.transform(df).select("id", *cols).orderBy("id").collect()
    return np.array([sum((_as_array(r[c]) for c in cols), []) for r in rows], dtype=np.float64)


def _cap(name: str) -> str:
    return name[0].upper() + name[1:]


def _plain(v):
    """A param value in a comparable form (callables by their import path)."""
    if isinstance(v, (str, int, float, bool, type(None))):
        return v
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    from sparkml_scale.torch.factory import reference_of

    return reference_of(v)


# ----------------------------------------------------------------------------- checks
def test_params_have_docs_getters_and_setters(fitted):
    stage, model, _ = fitted
    for obj in {id(stage): stage, id(model): model}.values():
        needs_setters = not isinstance(obj, Model)
        assert obj.params, type(obj).__name__
        for p in obj.params:
            where = f"{type(obj).__name__}.{p.name}"
            assert isinstance(p.doc, str) and len(p.doc) >= 10, f"{where}: no doc"
            getter = getattr(obj, "get" + _cap(p.name), None)
            assert callable(getter), f"{where}: no get{_cap(p.name)}()"
            if obj.isDefined(p):
                assert _plain(getter()) == _plain(obj.getOrDefault(p)), where
            if needs_setters:
                setter = getattr(obj, "set" + _cap(p.name), None)
                assert callable(setter), f"{where}: no set{_cap(p.name)}()"
                if obj.isDefined(p):
                    c = obj.copy()
                    assert getattr(c, "set" + _cap(p.name))(obj.getOrDefault(p)) is c, f"{where}: setter"
                    assert c.isSet(p)
        text = obj.explainParams()
        for p in obj.params:
            assert f"{p.name}:" in text, f"{type(obj).__name__}.explainParams() lacks {p.name}"


def test_copy_with_extra_params(case, fitted):
    stage, model, df = fitted
    param = stage.getParam(case.copy_param)
    before = stage.getOrDefault(param)
    c = stage.copy({param: case.copy_value})
    assert type(c) is type(stage) and c.uid == stage.uid
    assert c.getOrDefault(c.getParam(case.copy_param)) == case.copy_value
    assert stage.getOrDefault(param) == before, "copy(extra) changed the original"
    # A fitted model's copy keeps the fitted state and honours a new output column name.
    out_param = "outputCol" if model.hasParam("outputCol") else "predictionCol"
    m2 = model.copy({model.getParam(out_param): "renamed"})
    assert m2.getOrDefault(out_param) == "renamed" and model.getOrDefault(out_param) != "renamed"
    cols = [("renamed" if c == model.getOrDefault(out_param) else c) for c in case.outputs]
    np.testing.assert_array_equal(_output(m2, df, cols), _output(model, df, case.outputs))


def test_save_load_alone(case, fitted, tmp_path):
    stage, model, df = fitted
    p = str(tmp_path / "stage")
    stage.write().overwrite().save(p)
    loaded = type(stage).load(p)
    assert loaded.uid == stage.uid
    assert {q.name: _plain(v) for q, v in loaded.extractParamMap().items()} == \
        {q.name: _plain(v) for q, v in stage.extractParamMap().items()}
    if model is not stage:
        mp = str(tmp_path / "model")
        model.save(mp)
        loaded_model = type(model).load(mp)
        assert type(loaded_model) is type(model) and loaded_model.uid == model.uid
        np.testing.assert_array_equal(_output(loaded_model, df, case.outputs), _output(model, df, case.outputs))


@pytest.mark.skipif(CONNECT, reason="classic only, to keep the suite's time (the fit/transform itself is compared "
                    "under Connect by test_same_output_under_classic_and_connect)")
def test_save_load_inside_pipeline_model(case, fitted, tmp_path):
    stage, model, df = fitted
    pm = PipelineModel(stages=[model])  # the fitted model itself (Pipeline.fit is checked by the tuning test)
    pm.save(str(tmp_path / "pm"))
    loaded = PipelineModel.load(str(tmp_path / "pm"))
    assert type(loaded.stages[0]) is type(model)
    np.testing.assert_allclose(_output(loaded, df, case.outputs), _output(model, df, case.outputs),
                               rtol=0, atol=case.tol)


def _tuning_estimator(case: Case):
    stage = case.make()
    est = Pipeline(stages=[stage, case.tail()]) if case.tail else stage
    grid = ParamGridBuilder().addGrid(stage.getParam(case.grid_param), case.grid_values).build()
    return est, grid


@pytest.mark.skipif(CONNECT, reason="classic only, to keep the suite's time (the fit/transform itself is compared "
                    "under Connect by test_same_output_under_classic_and_connect)")
def test_cross_validator_and_train_validation_split(case, datasets, tmp_path):
    df = datasets[case.data]
    est, grid = _tuning_estimator(case)
    if not case.tune_with_cv:
        tvs = TrainValidationSplit(estimator=est, estimatorParamMaps=grid, evaluator=case.evaluator(),
                                   trainRatio=0.75, seed=7, parallelism=case.parallelism).fit(df)
        assert len(tvs.validationMetrics) == len(grid) and np.all(np.isfinite(tvs.validationMetrics))
        assert tvs.transform(df).count() == df.count()
        return
    cv = CrossValidator(estimator=est, estimatorParamMaps=grid, evaluator=case.evaluator(), numFolds=2,
                        seed=7, parallelism=case.parallelism).fit(df)
    assert len(cv.avgMetrics) == len(grid) and np.all(np.isfinite(cv.avgMetrics))
    cv.save(str(tmp_path / "cv"))
    loaded = CrossValidatorModel.load(str(tmp_path / "cv"))
    out = "prediction" if "prediction" in case.outputs or case.tail else case.outputs[0]
    np.testing.assert_allclose(_output(loaded.bestModel, df, [out]), _output(cv.bestModel, df, [out]),
                               rtol=0, atol=case.tol)


def test_transform_empty_dataframe(case, fitted):
    _, model, df = fitted
    out = model.transform(df.limit(0))
    assert out.count() == 0
    assert [c for c in case.outputs if c not in out.columns] == []


def _jobs(spark, group):
    return spark.sparkContext.statusTracker().getJobIdsForGroup(group)


def test_output_schema_known_before_any_job(spark, case, fitted):
    _, model, df = fitted
    group = f"conformance-{case.id}"
    if not CONNECT:
        spark.sparkContext.setJobGroup(group, "schema check")
    try:
        expected = model.transformSchema(df.schema)
        out = model.transform(df)
        assert out.schema == expected
        if not CONNECT:
            assert _jobs(spark, group) == [], "transformSchema/transform ran a Spark job"
            out.limit(1).collect()
            assert _jobs(spark, group), "the job tracker saw no job (the check above would be vacuous)"
    finally:
        if not CONNECT:
            spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
    for c in case.outputs:
        assert c in expected.fieldNames()


@pytest.mark.skipif(CONNECT, reason="classic only, to keep the suite's time (the fit/transform itself is compared "
                    "under Connect by test_same_output_under_classic_and_connect)")
def test_transform_of_a_streaming_dataframe(spark, case, fitted, tmp_path):
    _, model, df = fitted
    src = str(tmp_path / "src")
    df.write.parquet(src)
    stream = spark.readStream.schema(df.schema).parquet(src)
    name = "conformance_" + case.id.replace("-", "_")
    query = (model.transform(stream).select("id", *case.outputs).writeStream.format("memory")
             .queryName(name).trigger(availableNow=True).start())
    try:
        query.awaitTermination(120)
    finally:
        query.stop()
    got = spark.table(name)
    assert got.count() == df.count()
    np.testing.assert_allclose(_output_of_table(got, case.outputs), _output(model, df, case.outputs),
                               rtol=0, atol=1e-12)


def _output_of_table(tbl, cols):
    rows = tbl.orderBy("id").collect()
    return np.array([sum((_as_array(r[c]) for c in cols), []) for r in rows], dtype=np.float64)


def test_same_output_under_classic_and_connect(request, case, fitted):
    """Classic run: store the output.  Connect run: compare with the classic run's output."""
    _, model, df = fitted
    out = _output(model, df, case.outputs)
    assert out.shape[0] == df.count() and np.all(np.isfinite(out))
    key = f"sparkml_scale/conformance/{case.id}"
    if not CONNECT:
        request.config.cache.set(key, json.dumps(out.tolist()))
        return
    stored = request.config.cache.get(key, None)
    if stored is None:
        pytest.skip("no classic-run output in pytest's cache (scripts/test.sh runs classic first)")
    np.testing.assert_allclose(out, np.array(json.loads(stored)), rtol=0, atol=case.tol,
                               err_msg=f"{case.id}: Spark Connect output differs from the classic session's")


# ----------------------------------------------------------------------------- persistence safety
_ALLOWED_DTYPES = {"float64", "float32", "int64", "int32", "int8", "bool"}


def test_saved_stage_is_json_metadata_and_numeric_arrays_only(case, fitted, tmp_path):
    """Every file a saved stage writes is JSON (metadata) or the numeric-array Parquet table."""
    import pyarrow.parquet as pq

    stage, model, _ = fitted
    for obj, name in ((stage, "stage"), (model, "model")):
        root = tmp_path / name
        obj.write().overwrite().save(str(root))
        seen = set()
        for path in root.rglob("*"):
            if path.is_dir() or path.name.startswith((".", "_")):
                continue
            rel = path.relative_to(root).parts[0]
            seen.add(rel)
            if rel == "metadata":
                for line in path.read_text().splitlines():
                    json.loads(line)
            elif rel == "data":
                table = pq.read_table(path)
                assert table.column_names == ["name", "dtype", "shape", "data"], path
                assert set(table.column("dtype").to_pylist()) <= _ALLOWED_DTYPES
            else:  # overwrite() clears the directory with an empty DataFrame write: empty part files only
                assert path.stat().st_size == 0, f"unexpected file in a saved stage: {path}"
            assert b"\x80\x04\x95" not in path.read_bytes()[:4096] or rel == "data", f"pickle header in {path}"
        assert "metadata" in seen and (("data" in seen) == isinstance(obj, Model)), (obj, seen)


def test_loading_a_tampered_torch_model_never_runs_its_code(spark, tmp_path):
    """A TorchModel whose weights blob is a pickle that would run code: load refuses it, nothing runs."""
    pytest.importorskip("torch")
    import pickle

    import pyarrow as pa
    import pyarrow.parquet as pq

    from sparkml_scale.core.persistence import ModelLoadError
    from sparkml_scale.torch import TorchModel

    case = next(c for c in CASES if c.id == "TorchEstimator")
    model = _FITTED.get(case.id)
    if model is None:
        pytest.skip("TorchEstimator case not fitted in this run")
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
