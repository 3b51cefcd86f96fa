"""The conformance checks: what every pyspark.ml stage should do, whatever its math.

Each check is a function ``check(case, spark)`` of a :class:`~sparkml_scale.testing.StageCase`
and a SparkSession (classic or Connect); it returns ``None`` and raises ``AssertionError``
saying what is wrong (or lets the stage's own error through when a call that must work
fails).  The fitted model and the data come from :func:`~sparkml_scale.testing.data.fit_stage`
(one fit per stage and session); its output on the training data and the saved stage are
likewise made once per stage and session, for every check that compares with them.  Checks that
write files use temporary local directories (removed after the check, or at interpreter exit for
the saved stage), so the session must see the driver's local file system (``local[*]`` masters,
Connect servers on the same machine).
"""
from __future__ import annotations

import atexit
import re
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from typing import Iterator, List

import numpy as np
from pyspark.ml import Model, Pipeline, PipelineModel

from .case import StageCase, column_of, stage_kind
from .data import as_floats, cached, fit_stage, label_column

__all__ = ["CONFORMANCE_CHECKS", "check_params", "check_copy", "check_save_load", "check_saved_files",
           "check_pipeline_save_load", "check_tuning", "check_transform_empty", "check_schema_before_job",
           "check_streaming_transform", "check_outputs", "output_columns", "collect_output", "fitted_output",
           "is_connect"]


# ----------------------------------------------------------------------------- helpers
def is_connect(spark) -> bool:
    """Whether ``spark`` is a Spark Connect session."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


@contextmanager
def _tmpdir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="sparkml_scale_checks_")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _cap(name: str) -> str:
    return name[0].upper() + name[1:]


def _plain(v):
    """A param value in a comparable form: callables by their import reference, in the JSON form
    sparkml_scale saves them (``"module:qualname"``, ``{"factory", "args", "kwargs"}`` for a
    ``functools.partial``), so that a loaded stage holding the reference compares equal."""
    import functools

    if isinstance(v, (str, int, float, bool, type(None))):
        return v
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, functools.partial):
        return {"factory": _plain(v.func), "args": _plain(list(v.args)), "kwargs": _plain(dict(v.keywords))}
    if callable(v) and hasattr(v, "__qualname__"):
        return f"{getattr(v, '__module__', '?')}:{v.__qualname__}"
    return repr(v)


def output_columns(model) -> List[str]:
    """The columns ``model.transform`` adds (its set output-column params)."""
    return [c for _, c in stage_kind(model).outputs]


def _output_rows(model, df, cols: List[str]) -> list:
    return model.transform(df).select("id", *cols).orderBy("id").collect()


def _as_matrix(rows, cols: List[str]) -> np.ndarray:
    return np.array([sum((as_floats(r[c]) for c in cols), []) for r in rows], dtype=np.float64)


def collect_output(model, df, cols: List[str]) -> np.ndarray:
    """The ``cols`` of ``model.transform(df)`` as one float matrix, rows ordered by ``id``."""
    return _as_matrix(_output_rows(model, df, cols), cols)


def _fitted_rows(case: StageCase, spark) -> list:
    model, df = fit_stage(case, spark)
    return cached(case, spark, "output", lambda: _output_rows(model, df, output_columns(model)))


def fitted_output(case: StageCase, spark) -> np.ndarray:
    """:func:`collect_output` of the fitted stage on its training data, for all its output
    columns (one transform per stage and session)."""
    model, _ = fit_stage(case, spark)
    return _as_matrix(_fitted_rows(case, spark), output_columns(model))


def _same(a: np.ndarray, b: np.ndarray, atol: float, what: str) -> None:
    assert a.shape == b.shape, f"{what}: output shape {a.shape} != {b.shape}"
    np.testing.assert_allclose(a, b, rtol=0, atol=atol, err_msg=what)


# ----------------------------------------------------------------------------- checks
def check_params(case: StageCase, spark) -> None:
    """Every param of the stage and of its fitted model has a doc (>= 10 characters), a
    ``getX()`` returning its value, appears in ``explainParams()``; the stage (not a Model)
    has a ``setX(value)`` that returns the stage itself and sets the param."""
    model, _ = fit_stage(case, spark)
    for obj in {id(case.stage): case.stage, id(model): model}.values():
        needs_setters = not isinstance(obj, Model)
        assert obj.params, f"{type(obj).__name__} has no params"
        for p in obj.params:
            where = f"{type(obj).__name__}.{p.name}"
            assert isinstance(p.doc, str) and len(p.doc) >= 10, f"{where}: no doc"
            getter = getattr(obj, "get" + _cap(p.name), None)
            assert callable(getter), f"{where}: no get{_cap(p.name)}()"
            if obj.isDefined(p):
                assert _plain(getter()) == _plain(obj.getOrDefault(p)), f"{where}: getter returns another value"
            if needs_setters:
                setter = getattr(obj, "set" + _cap(p.name), None)
                assert callable(setter), f"{where}: no set{_cap(p.name)}()"
                if obj.isDefined(p):
                    c = obj.copy()
                    assert getattr(c, "set" + _cap(p.name))(obj.getOrDefault(p)) is c, \
                        f"{where}: set{_cap(p.name)}() does not return the stage"
                    assert c.isSet(p), f"{where}: set{_cap(p.name)}() does not set the param"
        text = obj.explainParams()
        for p in obj.params:
            assert f"{p.name}:" in text, f"{type(obj).__name__}.explainParams() lacks {p.name}"


def _renamed_output(obj):
    """(param, new name) renaming the main output column of ``obj``."""
    kind = stage_kind(obj)
    names = [p for p, _ in kind.outputs]
    param = "outputCol" if "outputCol" in names else ("predictionCol" if "predictionCol" in names else names[0])
    return param, column_of(obj, param) + "_renamed"


def check_copy(case: StageCase, spark) -> None:
    """``stage.copy(extra)`` has the extra values (``StageCase.copy_extra``, default: the output
    column renamed), the same class and uid, and leaves the stage unchanged; ``model.copy(extra)``
    keeps the fitted state: with the output column renamed it gives the same output under the
    new name, and the model keeps its own name."""
    stage = case.stage
    model, df = fit_stage(case, spark)
    extra = dict(case.copy_extra) if case.copy_extra else dict([_renamed_output(stage)])
    before = {name: _plain(stage.getOrDefault(name)) if stage.isDefined(stage.getParam(name)) else None
              for name in extra}
    c = stage.copy({stage.getParam(k): v for k, v in extra.items()})
    assert type(c) is type(stage) and c.uid == stage.uid, "copy(extra) changed the class or the uid"
    for name, value in extra.items():
        assert _plain(c.getOrDefault(c.getParam(name))) == _plain(value), f"copy(extra) lost {name}={value!r}"
        now = _plain(stage.getOrDefault(name)) if stage.isDefined(stage.getParam(name)) else None
        assert now == before[name], f"copy(extra) changed the original's {name}"
    out_param, new = _renamed_output(model)
    old = model.getOrDefault(out_param)
    m2 = model.copy({model.getParam(out_param): new})
    assert m2.getOrDefault(out_param) == new, "model.copy(extra) lost the new output column name"
    assert model.getOrDefault(out_param) == old, "model.copy(extra) changed the original model"
    renamed = [new if col == old else col for col in output_columns(model)]
    np.testing.assert_array_equal(collect_output(m2, df, renamed), fitted_output(case, spark),
                                  err_msg="the copied model's output differs")


def _saved(case: StageCase, spark) -> str:
    """A local directory holding ``stage`` (saved with ``write().overwrite()``) and, for an
    Estimator, ``model`` (plain ``save``): written once per stage and session, removed at exit."""
    def save() -> str:
        path = tempfile.mkdtemp(prefix="sparkml_scale_checks_")
        atexit.register(shutil.rmtree, path, True)
        model, _ = fit_stage(case, spark)
        case.stage.write().overwrite().save(f"{path}/stage")
        if model is not case.stage:
            model.save(f"{path}/model")
        return path

    return cached(case, spark, "saved", save)


def check_save_load(case: StageCase, spark) -> None:
    """``write().overwrite().save`` then ``load`` gives back the stage (class, uid, every param
    value); a fitted model saved and loaded gives the same class, uid and output."""
    stage = case.stage
    model, df = fit_stage(case, spark)
    path = _saved(case, spark)
    loaded = type(stage).load(f"{path}/stage")
    assert type(loaded) is type(stage) and loaded.uid == stage.uid, "load changed the class or the uid"
    got = {q.name: _plain(v) for q, v in loaded.extractParamMap().items()}
    want = {q.name: _plain(v) for q, v in stage.extractParamMap().items()}
    assert got == want, f"params after load differ: {got} != {want}"
    if model is not stage:
        lm = type(model).load(f"{path}/model")
        assert type(lm) is type(model) and lm.uid == model.uid, "model load changed the class or the uid"
        np.testing.assert_array_equal(collect_output(lm, df, output_columns(model)), fitted_output(case, spark),
                                      err_msg="the loaded model's output differs")


_ALLOWED_DTYPES = {"float64", "float32", "int64", "int32", "int8", "bool"}
_PICKLE_HEADER = b"\x80\x04\x95"


def check_saved_files(case: StageCase, spark) -> None:
    """(Stages using :class:`~sparkml_scale.core.persistence.ParamsReadWrite`.) Every file a saved
    stage or model writes is JSON metadata or, for models only, the numeric-array Parquet table
    (columns ``name, dtype, shape, data``, dtypes among float64/float32/int64/int32/int8/bool);
    no pickle header outside the array data."""
    import json
    from pathlib import Path

    import pyarrow.parquet as pq

    model, _ = fit_stage(case, spark)
    saved = Path(_saved(case, spark))
    for obj, name in ((case.stage, "stage"), (model, "model")) if model is not case.stage else ((model, "stage"),):
        root, seen = saved / name, set()
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
                assert table.column_names == ["name", "dtype", "shape", "data"], f"{path}: not the array table"
                dtypes = set(table.column("dtype").to_pylist())
                assert dtypes <= _ALLOWED_DTYPES, f"{path}: dtypes {dtypes - _ALLOWED_DTYPES}"
            else:  # overwrite() clears the directory with an empty DataFrame write: empty files only
                assert path.stat().st_size == 0, f"unexpected file in a saved stage: {path.relative_to(root)}"
            assert _PICKLE_HEADER not in path.read_bytes()[:4096] or rel == "data", f"pickle header in {path}"
        assert "metadata" in seen, f"saved {name} has no metadata"
        assert ("data" in seen) == isinstance(obj, Model), f"saved {name}: data present only for models {seen}"


def check_pipeline_save_load(case: StageCase, spark) -> None:
    """The fitted model inside a ``PipelineModel``, saved and loaded, is of the same class and
    gives the same output (within ``StageCase.atol``)."""
    model, df = fit_stage(case, spark)
    cols = output_columns(model)
    with _tmpdir() as tmp:
        PipelineModel(stages=[model]).save(f"{tmp}/pm")
        loaded = PipelineModel.load(f"{tmp}/pm")
        assert type(loaded.stages[0]) is type(model), f"loaded a {type(loaded.stages[0]).__name__}"
        _same(collect_output(loaded, df, cols), fitted_output(case, spark), case.atol,
              "PipelineModel output after load")


def _tuning_setup(case: StageCase):
    """(estimator to tune, param grid, evaluator, the prediction column it outputs)."""
    from pyspark.ml.evaluation import (BinaryClassificationEvaluator, MulticlassClassificationEvaluator,
                                       RegressionEvaluator)
    from pyspark.ml.tuning import ParamGridBuilder

    stage, kind = case.stage, case.kind
    label = label_column(case)
    grid = ParamGridBuilder()
    for name, values in case.grid.items():
        grid = grid.addGrid(stage.getParam(name), list(values))
    grid = grid.build()
    outputs = dict(kind.outputs)
    if kind.supervised and "predictionCol" in outputs:
        est, pred = stage, outputs["predictionCol"]
        if case.evaluator is not None:
            ev = case.evaluator()
        elif kind.classifier and case.n_classes == 2:
            raw = outputs.get("rawPredictionCol") or outputs["probabilityCol"]
            ev = BinaryClassificationEvaluator(rawPredictionCol=raw, labelCol=label)
        elif kind.classifier:
            ev = MulticlassClassificationEvaluator(metricName="accuracy", predictionCol=pred, labelCol=label)
        else:
            ev = RegressionEvaluator(metricName="rmse", predictionCol=pred, labelCol=label)
        return est, grid, ev, pred
    out = outputs.get("outputCol") or next(iter(outputs.values()))
    pred = "tuning_prediction"
    if case.tail is not None:
        tail = case.tail(out)
        pred = column_of(tail, "predictionCol") or pred
    else:
        from ..regression import LinearRegression

        tail = LinearRegression(featuresCol=out, labelCol=label, predictionCol=pred)
    ev = case.evaluator() if case.evaluator is not None else \
        RegressionEvaluator(metricName="rmse", predictionCol=pred, labelCol=label)
    return Pipeline(stages=[stage, tail]), grid, ev, pred


def check_tuning(case: StageCase, spark) -> None:
    """The stage tunes with pyspark's tools (alone, or in a ``Pipeline`` before a tail Estimator
    when it has no label), over ``StageCase.grid``: ``CrossValidator`` (2 folds) gives finite
    metrics, and its model saved and loaded predicts as before; or (``tuning="tvs"``)
    ``TrainValidationSplit`` gives finite metrics and its model transforms every row."""
    from pyspark.ml.tuning import CrossValidator, CrossValidatorModel, TrainValidationSplit

    _, df = fit_stage(case, spark)
    est, grid, ev, pred = _tuning_setup(case)
    if case.tuning == "tvs":
        tvs = TrainValidationSplit(estimator=est, estimatorParamMaps=grid, evaluator=ev, trainRatio=0.75,
                                   seed=7, parallelism=case.parallelism).fit(df)
        metrics = tvs.validationMetrics
        assert len(metrics) == len(grid) and np.all(np.isfinite(metrics)), f"validation metrics {metrics}"
        assert tvs.transform(df).count() == df.count(), "TrainValidationSplitModel lost rows"
        return
    cv = CrossValidator(estimator=est, estimatorParamMaps=grid, evaluator=ev, numFolds=2, seed=7,
                        parallelism=case.parallelism).fit(df)
    assert len(cv.avgMetrics) == len(grid) and np.all(np.isfinite(cv.avgMetrics)), f"metrics {cv.avgMetrics}"
    with _tmpdir() as tmp:
        cv.save(f"{tmp}/cv")
        loaded = CrossValidatorModel.load(f"{tmp}/cv")
        _same(collect_output(loaded.bestModel, df, [pred]), collect_output(cv.bestModel, df, [pred]), case.atol,
              "CrossValidatorModel.bestModel output after load")


def check_transform_empty(case: StageCase, spark) -> None:
    """``transform`` of an empty DataFrame returns an empty DataFrame with the output columns."""
    model, df = fit_stage(case, spark)
    out = model.transform(df.limit(0))
    assert out.count() == 0, "transform of an empty DataFrame returned rows"
    missing = [c for c in output_columns(model) if c not in out.columns]
    assert not missing, f"transform of an empty DataFrame lacks the output columns {missing}"


def check_schema_before_job(case: StageCase, spark) -> None:
    """``transform`` (and ``transformSchema``, when the model has it: the same schema) runs no Spark
    job and its schema holds the output columns.  The no-job part is checked in classic sessions
    only (with the job tracker; Spark Connect has none)."""
    model, df = fit_stage(case, spark)
    classic = not is_connect(spark)
    group = f"sparkml_scale-check-{uuid.uuid4().hex[:8]}"
    sc = spark.sparkContext if classic else None
    if classic:
        sc.setJobGroup(group, "schema check")
    try:
        expected = model.transformSchema(df.schema) if hasattr(model, "transformSchema") else None
        out = model.transform(df)
        schema = out.schema
        if expected is not None:
            assert schema == expected, f"transform's schema {schema} != transformSchema's {expected}"
        if classic:
            assert sc.statusTracker().getJobIdsForGroup(group) == [], "transformSchema/transform ran a Spark job"
            out.limit(1).collect()
            assert sc.statusTracker().getJobIdsForGroup(group), \
                "the job tracker saw no job (the check above would be vacuous)"
    finally:
        if classic:
            sc.setLocalProperty("spark.jobGroup.id", None)
    missing = [c for c in output_columns(model) if c not in schema.fieldNames()]
    assert not missing, f"the output schema lacks {missing}"


def check_streaming_transform(case: StageCase, spark) -> None:
    """``transform`` of a streaming DataFrame (the training data read back as a Parquet stream)
    gives the batch output, row for row (within ``StageCase.atol``)."""
    model, df = fit_stage(case, spark)
    cols = output_columns(model)
    name = "sparkml_scale_check_" + re.sub(r"\W", "_", case.name)[:40] + "_" + uuid.uuid4().hex[:6]
    with _tmpdir() as tmp:
        df.write.parquet(f"{tmp}/src")
        stream = spark.readStream.schema(df.schema).parquet(f"{tmp}/src")
        query = (model.transform(stream).select("id", *cols).writeStream.format("memory").queryName(name)
                 .trigger(availableNow=True).start())
        try:
            query.awaitTermination(120)
        finally:
            query.stop()
    got = spark.table(name)
    try:
        rows = got.orderBy("id").collect()
        assert len(rows) == df.count(), f"the stream gave {len(rows)} rows, not {df.count()}"
        _same(_as_matrix(rows, cols), fitted_output(case, spark), case.atol, "streaming output")
    finally:
        spark.catalog.dropTempView(name)


def check_outputs(case: StageCase, spark) -> None:
    """``transform`` keeps every row and adds its output columns with finite values; predictions
    and raw predictions/probabilities are doubles/vectors.  Classifiers: probabilities have
    ``n_classes`` entries in [0, 1] summing to 1, predictions are class indices
    ``0..n_classes-1`` and (without ``thresholds``) the most probable class."""
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import types as T

    model, df = fit_stage(case, spark)
    kind = stage_kind(model)
    fields = {f.name: f.dataType for f in model.transform(df).schema.fields}
    for param, col in kind.outputs:
        want = {"predictionCol": T.DoubleType, "probabilityCol": VectorUDT, "rawPredictionCol": VectorUDT}.get(param)
        if want is not None:
            assert isinstance(fields[col], want), f"{param} {col!r} is {fields[col].simpleString()}"
    rows = _fitted_rows(case, spark)
    assert len(rows) == df.count(), f"transform gave {len(rows)} rows for {df.count()}"
    assert np.all(np.isfinite(fitted_output(case, spark))), "transform gave non-finite or null outputs"
    outputs = dict(kind.outputs)
    if not (case.kind.classifier and "predictionCol" in outputs):
        return
    pred = np.array([r[outputs["predictionCol"]] for r in rows])
    assert set(np.unique(pred)) <= set(range(case.n_classes)), f"predictions {np.unique(pred)} are not class indices"
    if "probabilityCol" in outputs:
        prob = np.array([as_floats(r[outputs["probabilityCol"]]) for r in rows])
        assert prob.shape[1] == case.n_classes, f"{prob.shape[1]} probabilities per row, {case.n_classes} classes"
        assert np.all((prob >= 0) & (prob <= 1)) and np.allclose(prob.sum(1), 1.0, atol=1e-6), \
            "probabilities outside [0, 1] or not summing to 1"
        thresholds = model.hasParam("thresholds") and model.isSet(model.getParam("thresholds"))
        if not thresholds:
            assert np.array_equal(pred, prob.argmax(1)), "the prediction is not the most probable class"


#: ``(name, function, applies(case))`` of every conformance check, in running order.
CONFORMANCE_CHECKS = [
    ("check_params", check_params, lambda c: True),
    ("check_copy", check_copy, lambda c: bool(c.kind.outputs)),
    ("check_save_load", check_save_load, lambda c: True),
    ("check_saved_files", check_saved_files, lambda c: _uses_params_read_write(c.stage)),
    ("check_pipeline_save_load", check_pipeline_save_load, lambda c: bool(c.kind.outputs)),
    ("check_tuning", check_tuning, lambda c: bool(c.kind.outputs)),
    ("check_transform_empty", check_transform_empty, lambda c: bool(c.kind.outputs)),
    ("check_schema_before_job", check_schema_before_job, lambda c: bool(c.kind.outputs)),
    ("check_streaming_transform", check_streaming_transform, lambda c: bool(c.kind.outputs)),
    ("check_outputs", check_outputs, lambda c: bool(c.kind.outputs)),
]


def _uses_params_read_write(stage) -> bool:
    from ..core.persistence import ParamsReadWrite

    return isinstance(stage, ParamsReadWrite)
