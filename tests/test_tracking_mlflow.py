"""MLflow: our PipelineModels through mlflow.spark (log, load, pyfunc in a fresh process) and
sparkml_scale.tracking.autolog (params, metrics, data lineage) on a local sqlite tracking store."""
import functools
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

mlflow = pytest.importorskip("mlflow")
import mlflow.spark  # noqa: E402

from pyspark.ml import Pipeline, PipelineModel  # noqa: E402

from sparkml_scale import tracking  # noqa: E402
from sparkml_scale.classification import LogisticRegression, SGDLogisticRegression  # noqa: E402
from sparkml_scale.feature import PCA, FeatureHasher  # noqa: E402
from sparkml_scale.regression import LinearRegression  # noqa: E402

COLS = [f"f{i}" for i in range(6)]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A sqlite tracking store (file stores are refused by recent MLflow) with a local artifact root."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    exp = mlflow.create_experiment("sparkml_scale", artifact_location=str(root / "artifacts"))
    mlflow.set_experiment(experiment_id=exp)
    yield uri
    tracking.autolog(disable=True)
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    mlflow.set_tracking_uri(old or "")


@pytest.fixture(scope="module")
def data(spark, tmp_path_factory):
    """Breast cancer (first 6 features, 569 rows) as a Delta table read back through read_table
    (so fitted models carry its lineage), and as pandas."""
    from sklearn.datasets import load_breast_cancer

    from sparkml_scale.io import read_table, write_table

    X, y = load_breast_cancer(return_X_y=True)
    pdf = __import__("pandas").DataFrame(X[:, :6] / X[:, :6].max(axis=0), columns=COLS)
    pdf["label"] = y.astype(float)
    path = str(tmp_path_factory.mktemp("tables") / "cancer")
    written = write_table(spark.createDataFrame(pdf), path, format="delta")
    df, _ = read_table(spark, path, format="delta")
    return df, pdf, written


def _pipelines():
    hasher = functools.partial(FeatureHasher, inputCols=COLS, outputCol="features", numFeatures=32)
    from sparkml_scale.torch import TorchEstimator
    from sparkml_scale.torch.models import mlp

    return {
        "logistic": Pipeline(stages=[hasher(), LogisticRegression(maxIter=10, regParam=0.01)]),
        "sgd": Pipeline(stages=[hasher(), SGDLogisticRegression(epochs=2, batchSize=64)]),
        "pca_linear": Pipeline(stages=[hasher(), PCA(k=3, inputCol="features", outputCol="pcs"),
                                       LinearRegression(featuresCol="pcs", regParam=0.1)]),
        "pca_last": Pipeline(stages=[hasher(), PCA(k=2, inputCol="features", outputCol="pcs")]),
        "torch": Pipeline(stages=[hasher(), TorchEstimator(model=functools.partial(mlp, 32, [8], 2), epochs=2,
                                                           batchSize=64, numProc=1, validationFraction=0.2,
                                                           learningRate=1e-2)]),
    }


@pytest.fixture(scope="module")
def fitted(spark, store, data):
    """Every pipeline fitted under autolog, each in its own run: {name: (PipelineModel, run id)}."""
    pytest.importorskip("torch")
    df, _, _ = data
    tracking.autolog()
    out = {}
    try:
        for name, pipe in _pipelines().items():
            with mlflow.start_run(run_name=name) as run:
                out[name] = (pipe.fit(df), run.info.run_id)
    finally:
        tracking.autolog(disable=True)
    return out


def _predictions(model, df):
    out = model.transform(df)
    col = out.select("prediction" if "prediction" in out.columns else "pcs").toPandas().iloc[:, 0]
    return np.array([v.toArray() if hasattr(v, "toArray") else v for v in col], dtype=float)


@pytest.fixture(scope="module")
def logged(fitted, data):
    """Each fitted pipeline logged with mlflow.spark.log_model itself: {name: model uri}."""
    _, pdf, _ = data
    out = {}
    for name, (model, run_id) in fitted.items():
        with mlflow.start_run(run_id=run_id):
            kwargs = {"input_example": pdf[COLS].head(3)} if name in ("logistic", "pca_last") else {}
            info = mlflow.spark.log_model(model, "model", pip_requirements=tracking.default_pip_requirements(model),
                                          **kwargs)
        out[name] = info.model_uri
    return out


def test_log_and_load_give_the_same_predictions(fitted, logged, data):
    df, _, _ = data
    for name, (model, _) in fitted.items():
        loaded = mlflow.spark.load_model(logged[name])
        assert isinstance(loaded, PipelineModel)
        assert [type(s) for s in loaded.stages] == [type(s) for s in model.stages], name
        np.testing.assert_allclose(_predictions(loaded, df), _predictions(model, df), rtol=1e-9, atol=1e-12,
                                   err_msg=name)
        assert loaded.stages[-1].dataLineage == model.stages[-1].dataLineage != []


def test_saved_stages_load_through_defaultparamsreader(spark, fitted, logged):
    """PipelineModel.load finds each stage's class from its metadata (DefaultParamsReader)."""
    from pyspark.ml.util import DefaultParamsReader

    local = mlflow.artifacts.download_artifacts(logged["pca_linear"])
    stages_dir = os.path.join(local, "sparkml", "stages")
    loaded = [DefaultParamsReader.loadParamsInstance(os.path.join(stages_dir, d), spark)
              for d in sorted(os.listdir(stages_dir))]
    assert [type(s).__name__ for s in loaded] == ["FeatureHasher", "PCAModel", "LinearRegressionModel"]
    np.testing.assert_array_equal(loaded[1].pc.toArray(), fitted["pca_linear"][0].stages[1].pc.toArray())


def test_pyfunc_predict_in_a_fresh_process(fitted, logged, data, store, tmp_path):
    """mlflow.pyfunc.load_model(uri).predict(pandas) in a new Python process: MLflow starts its own
    local Spark session there; the scoring process needs PYSPARK_PYTHON (our UDFs run in Python)."""
    df, pdf, _ = data
    names = ["logistic", "pca_last", "torch"]
    script = tmp_path / "score.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        import mlflow, pandas as pd
        mlflow.set_tracking_uri({store!r})
        pdf = pd.read_json(sys.argv[1], orient="split")
        out = {{}}
        for name, uri in json.loads(sys.argv[2]).items():
            pred = mlflow.pyfunc.load_model(uri).predict(pdf)
            out[name] = [list(map(float, p)) if hasattr(p, "__len__") else float(p) for p in pred]
        print("RESULT " + json.dumps(out))
    """))
    inputs = tmp_path / "input.json"
    pdf[COLS].head(40).to_json(inputs, orient="split", index=False)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET", "SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED")}
    env["PYSPARK_PYTHON"] = env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    proc = subprocess.run([sys.executable, str(script), str(inputs), json.dumps({n: logged[n] for n in names})],
                          capture_output=True, text=True, env=env, timeout=400)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    got = json.loads(lines[-1][len("RESULT "):])
    head = df.limit(40)  # the table's order is the written order (one small file)
    for name in names:
        expected = _predictions(fitted[name][0], head)
        np.testing.assert_allclose(np.array(got[name], dtype=float), expected, rtol=1e-6, atol=1e-9, err_msg=name)


def _run(run_id):
    return mlflow.tracking.MlflowClient().get_run(run_id)


def test_autolog_logs_params_metrics_and_lineage(fitted, data):
    _, _, written = data
    client = mlflow.tracking.MlflowClient()
    run = _run(fitted["logistic"][1])
    params = run.data.params
    assert params["regParam"] == "0.01" and params["maxIter"] == "10" and params["family"] == "auto"
    assert run.data.tags["estimator_name"] == "LogisticRegression"
    objective = client.get_metric_history(run.info.run_id, "objective")
    summary = fitted["logistic"][0].stages[-1].summary
    assert [m.step for m in objective] == list(range(len(summary.objectiveHistory)))
    np.testing.assert_allclose([m.value for m in objective], summary.objectiveHistory)
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1
    ds = inputs[0].dataset
    source = json.loads(ds.source)
    assert ds.source_type == "delta_table" and source["delta_table_version"] == written.version
    assert source["path"] == written.path and ds.name == f"cancer@v{written.version}"
    tags = {t.key: t.value for t in inputs[0].tags}
    assert tags["mlflow.data.context"] == "training" and tags["sparkml_scale.version"] == str(written.version)
    assert tags["sparkml_scale.format"] == "delta"

    # two estimators in one Pipeline.fit: the second one's names are prefixed
    run = _run(fitted["pca_linear"][1])
    assert run.data.params["k"] == "3" and run.data.params["LinearRegression.regParam"] == "0.1"
    ev = client.get_metric_history(run.info.run_id, "explained_variance")
    np.testing.assert_allclose([m.value for m in sorted(ev, key=lambda m: m.step)],
                               fitted["pca_linear"][0].stages[1].explainedVariance.toArray())
    assert "LinearRegression.training_seconds" in run.data.metrics


def test_autolog_logs_torch_history_per_epoch(fitted):
    model, run_id = fitted["torch"]
    history = model.stages[-1].history
    run = _run(run_id)
    assert json.loads(run.data.params["model"])["factory"] == "sparkml_scale.torch.models:mlp"
    assert run.data.params["epochs"] == "2"
    client = mlflow.tracking.MlflowClient()
    for key in ("loss", "val_loss"):
        values = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        assert [m.step for m in values] == [h["epoch"] for h in history]
        np.testing.assert_allclose([m.value for m in values], [h[key] for h in history])


def test_autolog_starts_a_run_logs_the_model_and_disables(spark, store, data):
    df, _, _ = data
    est = LogisticRegression(maxIter=3)
    features = FeatureHasher(inputCols=COLS, outputCol="features", numFeatures=16).transform(df)
    tracking.autolog(log_models=True)
    try:
        model = est.fit(features)
        assert mlflow.active_run() is None  # the run it started has ended
        run = mlflow.last_active_run()
        assert run.info.status == "FINISHED" and run.data.params["maxIter"] == "3"
        loaded = mlflow.spark.load_model(f"runs:/{run.info.run_id}/model")
        np.testing.assert_allclose(loaded.stages[-1].coefficients.toArray(), model.coefficients.toArray())
    finally:
        tracking.autolog(disable=True)
    from sparkml_scale.core.lineage import RecordsLineage

    assert RecordsLineage.fit is tracking._ORIGINAL_FIT
    before = mlflow.last_active_run().info.run_id
    est.fit(features)
    assert mlflow.last_active_run().info.run_id == before  # nothing logged once disabled


def test_log_model_through_the_server_path(spark, fitted, data, monkeypatch):
    """The Spark Connect (server in another process) path of tracking.log_model/load_model: the
    server saves into a directory this process reads, and MLflow's Spark flavor is written around
    it; mlflow.spark.load_model reads it back."""
    df, _, _ = data
    model = fitted["pca_linear"][0]
    with mlflow.start_run():
        info = tracking._log_model_through_server(model, "model", tracking.default_pip_requirements(model))
    loaded = mlflow.spark.load_model(info.model_uri)
    np.testing.assert_allclose(_predictions(loaded, df), _predictions(model, df), rtol=1e-9, atol=1e-12)
    flavors = mlflow.models.Model.load(info.model_uri).flavors
    assert flavors["python_function"]["loader_module"] == "sparkml_scale.tracking"
    assert flavors["spark"]["model_data"] == "sparkml"
    monkeypatch.setattr(tracking, "_connect_client", lambda spark: True)
    monkeypatch.setattr(tracking, "_local_jvm", lambda: False)
    again = tracking.load_model(info.model_uri)
    np.testing.assert_allclose(_predictions(again, df), _predictions(model, df), rtol=1e-9, atol=1e-12)
    pred = mlflow.pyfunc.load_model(info.model_uri).predict(data[1][COLS].head(10))
    np.testing.assert_allclose(pred, _predictions(model, df.limit(10)), rtol=1e-9)


@pytest.mark.connect
def test_mlflow_spark_on_the_session_of_this_run(spark, store, data):
    """Classic, and Spark Connect with the server in this process (remote="local[2]", what the
    Connect test run uses): mlflow.spark.log_model/load_model work as is; tracking.log_model too."""
    df, pdf, written = data
    tracking.autolog()
    try:
        with mlflow.start_run() as run:
            model = Pipeline(stages=[FeatureHasher(inputCols=COLS, outputCol="features", numFeatures=16),
                                     LogisticRegression(maxIter=5)]).fit(df)
            info = tracking.log_model(model, "model")
    finally:
        tracking.autolog(disable=True)
    logged = _run(run.info.run_id)
    assert logged.data.params["maxIter"] == "5" and "objective" in logged.data.metrics
    assert json.loads(logged.inputs.dataset_inputs[0].dataset.source)["path"] == written.path
    loaded = tracking.load_model(info.model_uri)
    np.testing.assert_allclose(_predictions(loaded, df), _predictions(model, df))
    pred = mlflow.pyfunc.load_model(info.model_uri).predict(pdf[COLS].head(10))
    np.testing.assert_allclose(pred, _predictions(model, df.limit(10)))


@pytest.mark.cluster
@pytest.mark.connect
def test_connect_client_of_a_server_in_another_process(spark, store, data):
    """A Spark Connect client whose server is another process (the cluster run through Connect):
    mlflow.spark.load_model cannot (it copies with a JVM of this process: SparkContext._gateway is
    None here), tracking.log_model/load_model and pyfunc of a model logged by it can (same host)."""
    from pyspark import SparkContext

    if not tracking._connect_client(spark) or SparkContext._gateway is not None:
        pytest.skip("needs a Spark Connect client without a JVM in this process")
    df, pdf, _ = data
    model = Pipeline(stages=[FeatureHasher(inputCols=COLS, outputCol="features", numFeatures=16),
                             LogisticRegression(maxIter=3)]).fit(df)
    with mlflow.start_run():
        info = tracking.log_model(model, "model")
    with pytest.raises(AttributeError, match="jvm"):
        mlflow.spark.load_model(info.model_uri)
    loaded = tracking.load_model(info.model_uri)
    np.testing.assert_allclose(_predictions(loaded, df), _predictions(model, df))
    pred = mlflow.pyfunc.load_model(info.model_uri).predict(pdf[COLS].head(10))
    np.testing.assert_allclose(pred, _predictions(model, df.limit(10)))
