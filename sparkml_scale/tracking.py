"""MLflow tracking for this package's stages: autologging of fits, and model logging that also
works where ``mlflow.spark`` alone cannot (a Spark Connect client whose server is another process).

Install ``mlflow-skinny`` (or ``mlflow``); nothing here is imported by the rest of the package.

Models in MLflow
----------------
Every fitted ``PipelineModel`` (or single model) of this package's stages logs and loads with
MLflow's own Spark flavor: ``mlflow.spark.log_model(model, "model")``, ``mlflow.spark.load_model(uri)``
and ``mlflow.pyfunc.load_model(uri).predict(pandas_df)`` (also in a fresh process).  MLflow saves
the model with ``PipelineModel.save`` (our stages' JSON + Parquet format, no pickle) and loads it
with ``PipelineModel.load``, which finds each stage's class from its metadata.  The pyfunc flavor
returns the column ``prediction``: for a pipeline that ends in a stage with an ``outputCol``
(``FeatureHasher``, ``PCAModel``) MLflow renames that column to ``prediction``
(``setOutputCol``), for the others (``LogisticRegressionModel``, ``LinearRegressionModel``,
``TorchModel``) ``predictionCol`` must keep its default ``"prediction"``.  The process that
scores needs ``PYSPARK_PYTHON`` pointing at a Python with this package (or that Python first on
``PATH``): our models run Arrow UDFs in Python workers, and MLflow's fresh local session starts
them with ``$PYSPARK_PYTHON`` or else ``python3``.

:func:`log_model` / :func:`load_model` here call ``mlflow.spark`` on a classic session and on a
Spark Connect session whose server runs in this process (``remote="local[...]"``); for a Spark
Connect client of a server in another process they save and load through the server
(``mlflow.spark`` copies files with the Hadoop FileSystem of a JVM in the client process, which a
Connect client does not have), which works when the server can write and read the paths the
client sees (same host or a shared file system); the ``MLmodel`` of a model logged so names
this module as its pyfunc loader, so ``mlflow.pyfunc.load_model(uri).predict`` works from such a
client too (and, in a process without a session, starts MLflow's local one as usual).

Autologging
-----------
``autolog()`` wraps :meth:`sparkml_scale.core.lineage.RecordsLineage.fit`, the ``fit`` that every
estimator of this package inherits (``LogisticRegression``, ``SGDLogisticRegression``,
``LinearRegression``, ``PCA``, ``TorchEstimator``), and ``autolog(disable=True)`` puts the original
back.  Each fit then logs, to the MLflow run active in the calling thread:

- params: every param of the estimator with its value (defaults included, Spark's names), JSON
  text for lists and dicts, import references for ``TorchEstimator``'s module/optimizer/loss;
- metrics: ``LogisticRegression``/``SGDLogisticRegression``: ``objective`` per iteration/epoch
  (step = iteration) and ``total_iterations``; ``TorchEstimator``: every key of ``model.history``
  (``loss``, ``val_loss``, ``val_accuracy``, ...) per epoch (step = epoch); ``PCA``:
  ``explained_variance`` per component (step = component) and ``explained_variance_total``;
  ``LinearRegression``: none without ``log_training_summary``; all: ``training_seconds``;
  with ``log_training_summary=True`` also the training summary's metrics (one Spark job):
  accuracy/areaUnderROC/weighted F-measure, r2/rootMeanSquaredError/meanAbsoluteError;
- datasets (``log_datasets``): each table of ``model.dataLineage`` (read through
  :func:`sparkml_scale.io.read_table`) as an MLflow dataset input, context ``"training"``: a
  ``DeltaDatasetSource`` (path and Delta version) for Delta tables, a ``SparkDatasetSource``
  (path) for Parquet/CSV; the dataset's name is the table's base name with ``@v<version>``, its
  input tags ``sparkml_scale.format``/``.version``/``.timestamp``/``.engine``/``.as_of``;
- tags ``estimator_name``/``estimator_class``; the model (``log_models=True``) under ``model``.

Run handling (as ``mlflow.autolog``): with no active run, a fit starts a run named after the
estimator and ends it when the fit returns (status FAILED when it raises); a ``Pipeline.fit``
with two of our estimators and no active run so gives two runs: start one around it for one.  Only the outermost
fit is logged (a fit inside a fit is not); fits in other threads with no active run there (the
trials of ``HyperparameterSearch``/``CrossValidator``, which report trials themselves) are not
logged.  The first fit logged to a run uses the plain names; later fits in the same run (the
stages of one ``Pipeline.fit``) prefix their params, metrics and model with
``<EstimatorClass>.`` (``<EstimatorClass>_2.`` for the second of a class), so values never
clash.  Logging never fails a fit: an MLflow error is a warning (silenced by ``silent=True``).
"""
from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from typing import Any, Dict, List, Optional

__all__ = ["autolog", "log_model", "load_model", "default_pip_requirements", "param_values"]

log = logging.getLogger("sparkml_scale.tracking")

_LOCK = threading.Lock()
_ORIGINAL_FIT = None  # RecordsLineage.fit as autolog() found it
_CONFIG: Optional[Dict[str, Any]] = None
_LOCAL = threading.local()
_RUN_FITS: Dict[str, Dict[str, int]] = {}  # run id -> {estimator class: fits logged}
_MAX_PARAM = 6000


# ---------------------------------------------------------------------------------------- autolog
def autolog(log_models: bool = False, log_datasets: bool = True, log_training_summary: bool = False,
            disable: bool = False, silent: bool = False, extra_tags: Optional[Dict[str, str]] = None) -> None:
    """Enable (or, with ``disable=True``, disable) MLflow autologging of this package's fits.

    Parameters
    ----------
    log_models : bool
        Also log each fitted model with :func:`log_model` (artifact ``model``).
    log_datasets : bool
        Log the model's ``dataLineage`` tables as MLflow dataset inputs.
    log_training_summary : bool
        Also log the training summary's metrics, which costs a Spark job over the training data
        (LogisticRegression: accuracy, weightedFMeasure, areaUnderROC for two classes;
        LinearRegression: r2, rootMeanSquaredError, meanAbsoluteError).
    disable : bool
        Restore the unpatched ``fit``; nothing is logged afterwards.
    silent : bool
        Log MLflow errors at DEBUG instead of WARNING.
    extra_tags : dict, optional
        Tags set on every run a fit logs to.

    See the module docstring for what is logged and where.
    """
    global _ORIGINAL_FIT, _CONFIG
    from .core.lineage import RecordsLineage

    with _LOCK:
        if disable:
            _CONFIG = None
            if RecordsLineage.fit is _autologging_fit:
                RecordsLineage.fit = _ORIGINAL_FIT
            return
        import mlflow  # noqa: F401 - fail here, not inside a fit, when MLflow is missing

        _CONFIG = {"log_models": bool(log_models), "log_datasets": bool(log_datasets),
                   "log_training_summary": bool(log_training_summary), "silent": bool(silent),
                   "extra_tags": dict(extra_tags or {})}
        if RecordsLineage.fit is not _autologging_fit:
            _ORIGINAL_FIT = RecordsLineage.fit  # kept after disable: a fit already inside the wrapper calls it
            RecordsLineage.fit = _autologging_fit


def _autologging_fit(self, dataset, params=None):
    original = _ORIGINAL_FIT
    cfg = _CONFIG
    if cfg is None or getattr(_LOCAL, "depth", 0) > 0 or isinstance(params, (list, tuple)):
        return original(self, dataset, params)
    import mlflow

    try:
        active = mlflow.active_run()
    except Exception:  # noqa: BLE001
        active = None
    if active is None and threading.current_thread() is not threading.main_thread():
        return original(self, dataset, params)
    started = None
    if active is None:
        try:
            started = mlflow.start_run(run_name=type(self).__name__)
        except Exception as exc:  # noqa: BLE001 - tracking must not fail the fit
            _warn(cfg, "could not start an MLflow run: %s", exc)
            return original(self, dataset, params)
    _LOCAL.depth = getattr(_LOCAL, "depth", 0) + 1
    status = "FINISHED"
    try:
        t0 = time.perf_counter()
        model = original(self, dataset, params)
        seconds = time.perf_counter() - t0
        try:
            _log_fit(mlflow, self.copy(params) if params else self, model, cfg, seconds)
        except Exception as exc:  # noqa: BLE001
            _warn(cfg, "MLflow autologging of %s.fit failed: %s", type(self).__name__, exc)
        return model
    except BaseException:
        status = "FAILED"
        raise
    finally:
        _LOCAL.depth -= 1
        if started is not None:
            try:
                mlflow.end_run(status=status)
            except Exception as exc:  # noqa: BLE001
                _warn(cfg, "could not end the MLflow run: %s", exc)


def _warn(cfg, msg, *args):
    (log.debug if cfg and cfg.get("silent") else log.warning)(msg, *args)


def _json_value(name: str, value: Any) -> Any:
    """A param value as something JSON can write (references for code, ``repr`` otherwise)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return [_json_value(name, v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(name, v) for k, v in value.items()}
    if hasattr(value, "toArray"):  # pyspark.ml.linalg vectors/matrices (bounds params)
        return value.toArray().tolist()
    if hasattr(value, "uid") and hasattr(value, "params"):  # a Params instance (e.g. initialModel)
        return f"{type(value).__name__}:{value.uid}"
    if callable(value):
        try:
            from .torch.factory import reference_of

            ref = reference_of(value)
        except Exception:  # noqa: BLE001 - torch missing: no reference
            ref = None
        if ref is not None:
            return ref
    return repr(value)


def param_values(stage) -> Dict[str, Any]:
    """``{param name: JSON-able value}`` for every param of ``stage`` that has a value (set or
    default), as autologging logs them."""
    out: Dict[str, Any] = {}
    for p, v in stage.extractParamMap().items():
        out[p.name] = _json_value(p.name, v)
    return dict(sorted(out.items()))


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= _MAX_PARAM else text[:_MAX_PARAM - 3] + "..."


def _metric_key(key: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", key)


def _training_metrics(model, cfg) -> Dict[str, List[float]]:
    """``{metric: [value per step]}`` of a fitted model (steps from 0)."""
    out: Dict[str, List[float]] = {}
    history = getattr(model, "_history", None)
    if isinstance(history, list) and history:  # TorchModel: one dict per epoch
        keys = [k for k in history[0] if k != "epoch"]
        for h in history:
            for k in h:
                if k != "epoch" and k not in keys:
                    keys.append(k)
        for k in keys:
            out[k] = [float(h.get(k, float("nan"))) for h in history]
        return out
    summary = None
    try:
        summary = model.summary if getattr(model, "hasSummary", False) else None
    except Exception:  # noqa: BLE001
        summary = None
    hist = getattr(summary, "objectiveHistory", None)
    if hist is not None and getattr(summary, "totalIterations", 0) > 0:
        out["objective"] = [float(v) for v in hist]
        out["total_iterations"] = [float(summary.totalIterations)]
    if hasattr(model, "explainedVariance") and hasattr(model, "pc"):  # PCAModel
        ev = [float(v) for v in model.explainedVariance.toArray()]
        out["explained_variance"] = ev
        out["explained_variance_total"] = [float(sum(ev))]
    if cfg.get("log_training_summary") and summary is not None:
        for name in ("accuracy", "weightedFMeasure", "areaUnderROC", "r2", "rootMeanSquaredError",
                     "meanAbsoluteError"):
            try:
                v = getattr(summary, name)
                v = v() if callable(v) else v
            except Exception:  # noqa: BLE001 - metric not defined for this model (e.g. AUC of 3 classes)
                continue
            if isinstance(v, (int, float)) and math.isfinite(float(v)):
                out[name] = [float(v)]
    return out


def _prefix_for(run_id: str, estimator) -> str:
    name = type(estimator).__name__
    with _LOCK:
        fits = _RUN_FITS.setdefault(run_id, {})
        first = not fits
        fits[name] = fits.get(name, 0) + 1
        n = fits[name]
    if first:
        return ""
    return f"{name}." if n == 1 else f"{name}_{n}."


def _log_fit(mlflow, estimator, model, cfg, seconds: float) -> None:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    run = mlflow.active_run()
    run_id = run.info.run_id
    prefix = _prefix_for(run_id, estimator)
    client = MlflowClient()
    params = [Param(prefix + k, _param_text(v)) for k, v in param_values(estimator).items()]
    now = int(time.time() * 1000)
    metrics = [Metric(_metric_key(prefix + "training_seconds"), float(seconds), now, 0)]
    for key, values in _training_metrics(model, cfg).items():
        for step, v in enumerate(values):
            metrics.append(Metric(_metric_key(prefix + key), v, now, step))
    tags = []
    if not prefix:
        tags += [RunTag("estimator_name", type(estimator).__name__),
                 RunTag("estimator_class", f"{type(estimator).__module__}.{type(estimator).__name__}")]
    tags += [RunTag(k, str(v)) for k, v in cfg.get("extra_tags", {}).items()]
    # log_batch takes at most 100 params and 1000 metrics a call
    chunks = max((len(params) + 99) // 100, (len(metrics) + 999) // 1000, 1)
    for i in range(chunks):
        client.log_batch(run_id, metrics=metrics[i * 1000:(i + 1) * 1000], params=params[i * 100:(i + 1) * 100],
                         tags=tags if i == 0 else [])
    if cfg.get("log_datasets"):
        for record in getattr(model, "dataLineage", []) or []:
            tags = {f"sparkml_scale.{k}": str(record[k]) for k in ("format", "version", "timestamp", "engine", "as_of")
                    if record.get(k) is not None}
            mlflow.log_input(lineage_dataset(record), context="training", tags=tags)
    if cfg.get("log_models"):
        log_model(model, (prefix.rstrip(".") + ".model") if prefix else "model")


def _delta_source():
    """MLflow's ``DeltaDatasetSource``, whose ``to_dict`` (mlflow 3.17, ``if self._delta_table_version:``)
    drops version 0, the first version of every table: this subclass keeps it."""
    from mlflow.data.delta_dataset_source import DeltaDatasetSource

    class _DeltaSource(DeltaDatasetSource):
        def to_dict(self):
            info = super().to_dict()
            if self._delta_table_version is not None:
                info["delta_table_version"] = self._delta_table_version
            return info

    return _DeltaSource


def lineage_dataset(record: Dict[str, Any]):
    """An MLflow dataset (``mlflow.data.meta_dataset.MetaDataset``, no data read) for one
    ``dataLineage`` record: a ``DeltaDatasetSource`` with the Delta version for Delta tables, a
    ``SparkDatasetSource`` with the path otherwise."""
    from mlflow.data.meta_dataset import MetaDataset

    path = record.get("path")
    version = record.get("version")
    if record.get("format") == "delta":
        source = _delta_source()(path=path, delta_table_version=version)
    else:
        from mlflow.data.spark_dataset_source import SparkDatasetSource

        source = SparkDatasetSource(path=path)
    base = os.path.basename(str(path).rstrip("/")) or str(path)
    name = f"{base}@v{version}" if version is not None else base
    return MetaDataset(source=source, name=name)


# ----------------------------------------------------------------------------- model log / load
def default_pip_requirements(model=None) -> List[str]:
    """What a logged model needs to score: pyspark, this package and its numeric stack, torch
    when the model holds a ``TorchModel`` (pinned to the installed versions).  Given to
    ``mlflow.spark.log_model`` it spares MLflow's requirement inference (a subprocess that
    starts a Spark session and loads the model: tens of seconds)."""
    from importlib import metadata

    def pin(dist: str) -> str:
        try:
            return f"{dist}=={metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            return dist

    reqs = [pin(d) for d in ("pyspark", "sparkml-scale", "pyarrow", "pandas", "numpy", "scipy", "mmh3")]
    stages = getattr(model, "stages", None) or ([model] if model is not None else [])
    if any(type(s).__module__.startswith("sparkml_scale.torch") for s in stages):
        reqs.append(pin("torch"))
    return reqs


def _local_jvm() -> bool:
    """Whether ``mlflow.spark``'s Hadoop FileSystem calls can run: a classic session, or a Spark
    Connect server started in this process (``remote="local[...]"``)."""
    from pyspark import SparkContext

    return SparkContext._active_spark_context is not None and SparkContext._gateway is not None


def _session():
    from pyspark.sql import SparkSession

    return SparkSession.getActiveSession()


def _connect_client(spark) -> bool:
    return spark is not None and type(spark).__module__.startswith("pyspark.sql.connect")


def log_model(model, name: str = "model", pip_requirements: Optional[List[str]] = None, **kwargs):
    """Log ``model`` (a ``PipelineModel`` or a single model/transformer) to the active run (one
    is started if none, as ``mlflow.spark.log_model``) with MLflow's Spark flavor; returns
    MLflow's ``ModelInfo``.  ``pip_requirements`` defaults to :func:`default_pip_requirements`;
    other keyword arguments go to ``mlflow.spark.log_model`` (``signature``, ``input_example``,
    ``registered_model_name``, ...).

    On a Spark Connect client whose server runs in another process the model is saved by the
    server into a temporary directory of this machine's file system, then logged as MLflow's
    Spark flavor (``MLmodel`` + ``sparkml/``): this needs the server to write where this process
    reads (same host, or ``dfs_tmpdir`` on a shared mount), else ``RuntimeError`` says so.
    """
    import mlflow
    import mlflow.spark

    reqs = pip_requirements if pip_requirements is not None else default_pip_requirements(model)
    spark = _session()
    if not _connect_client(spark) or _local_jvm():
        return mlflow.spark.log_model(model, name, pip_requirements=reqs, **kwargs)
    return _log_model_through_server(model, name, reqs, **kwargs)


def _log_model_through_server(model, name: str, reqs, dfs_tmpdir: Optional[str] = None, **kwargs):
    import tempfile

    import mlflow
    from mlflow.models import Model
    from mlflow.spark import _save_model_metadata
    from mlflow.utils.file_utils import TempDir
    from pyspark.ml import PipelineModel

    if not isinstance(model, PipelineModel):
        model = PipelineModel([model])
    run_id = mlflow.tracking.fluent._get_or_start_run().info.run_id
    with TempDir() as tmp:
        root = tmp.path()
        spark_dir = os.path.join(dfs_tmpdir or tempfile.gettempdir(),
                                 f"sparkml_scale_mlflow_{os.getpid()}_{time.time_ns()}")
        model.write().overwrite().save(spark_dir)
        if not os.path.exists(os.path.join(spark_dir, "metadata")):
            raise RuntimeError(
                f"log_model on Spark Connect: the server saved the model to {spark_dir!r} on its own file system, "
                "which this process cannot see; mlflow.spark needs a JVM in this process (Hadoop FileSystem) to copy "
                "it. Run the server on this host or pass dfs_tmpdir= a directory both share (a local path "
                "on both machines).")
        import shutil

        shutil.move(spark_dir, os.path.join(root, "sparkml"))
        mlflow_model = Model(artifact_path=name, run_id=run_id)
        _save_model_metadata(root, model, mlflow_model, kwargs.pop("conda_env", None), kwargs.pop("code_paths", None),
                             signature=kwargs.pop("signature", None), input_example=kwargs.pop("input_example", None),
                             pip_requirements=reqs, extra_pip_requirements=kwargs.pop("extra_pip_requirements", None))
        # pyfunc: mlflow.spark's loader copies through a JVM in the process; ours loads through the server
        mlflow_model.flavors["python_function"]["loader_module"] = __name__
        mlflow_model.save(os.path.join(root, "MLmodel"))
        mlflow.log_artifacts(root, name)
        mlflow.tracking.fluent._record_logged_model(mlflow_model)
        registered = kwargs.pop("registered_model_name", None)
        if registered is not None:
            mlflow.register_model(f"runs:/{run_id}/{name}", registered)
    return mlflow_model.get_model_info()


def load_model(model_uri: str, dfs_tmpdir: Optional[str] = None):
    """``mlflow.spark.load_model(model_uri)``: the logged ``PipelineModel``.  On a Spark Connect
    client whose server runs in another process, the artifacts are downloaded here and the server
    loads them (``PipelineModel.load`` of the local directory: same host or a shared mount)."""
    import mlflow
    import mlflow.spark

    spark = _session()
    if not _connect_client(spark) or _local_jvm():
        return mlflow.spark.load_model(model_uri, dfs_tmpdir=dfs_tmpdir)
    from mlflow.models import Model

    local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=dfs_tmpdir)
    flavor = Model.load(local).flavors["spark"]
    return _load_through_server(os.path.abspath(os.path.join(local, flavor["model_data"])))


def _load_through_server(path: str):
    from pyspark.ml import PipelineModel

    try:
        return PipelineModel.load(path)
    except Exception as exc:  # noqa: BLE001
        raise RuntimeError(
            f"loading on Spark Connect: the server could not read the model downloaded to {path!r} ({exc}); "
            "mlflow.spark needs a JVM in this process to copy it. Run the server on this host or pass dfs_tmpdir= "
            "a directory both share.") from None


def _load_pyfunc(path: str):
    """The pyfunc loader of models logged by :func:`log_model` from a Spark Connect client (their
    ``MLmodel`` names this module): ``mlflow.spark``'s loader where a JVM runs in this process
    (classic, or no session yet: MLflow starts a local one), else the server loads ``path``."""
    import mlflow.spark

    spark = _session()
    if not _connect_client(spark) or _local_jvm():
        return mlflow.spark._load_pyfunc(path)
    from mlflow.models import Model
    from mlflow.spark import _PyFuncModelWrapper

    meta = Model.load(os.path.join(os.path.dirname(path), "MLmodel"))
    return _PyFuncModelWrapper(spark, _load_through_server(os.path.abspath(path)), signature=meta.signature)
