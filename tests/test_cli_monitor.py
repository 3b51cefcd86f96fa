"""The sparkml-scale monitor job on flights samples (drift table, Prometheus textfile, JSON report, plot,
saved DriftModel), through a model saved by train (prediction drift, performance), its errors, and
train --mlflow (params, metrics, model and Delta dataset input on a sqlite tracking store)."""
import json
import os
import sys

import pytest

from sparkml_scale import cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _cwd(tmp_path_factory, monkeypatch):
    """Each test runs in an empty directory: nothing may depend on, or be written to, the working directory."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


#: The flights columns of the samples: the train job's default features, its label's column and a few more.
COLUMNS = ["year", "month", "day_of_week", "hour", "dep_delay", "arr_delay", "carrier", "origin", "dest", "distance"]


@pytest.fixture(scope="module")
def flights_parts(spark, tmp_path_factory):
    """3% samples of the embedded flights as Parquet (:data:`COLUMNS`): months 1-3 (reference, ~2,300
    rows) and 7-9 (current)."""
    from sparkml_scale.datasets import load_flights

    root = tmp_path_factory.mktemp("monitor_data")
    df = load_flights(spark).select(*COLUMNS)
    paths = []
    for name, months, seed in (("reference", "month <= 3", 1), ("current", "month BETWEEN 7 AND 9", 2)):
        path = str(root / f"{name}.parquet")
        df.where(months).sample(0.03, seed=seed).coalesce(1).write.parquet(path)
        paths.append(path)
    return tuple(paths)


@pytest.fixture(scope="module")
def trained(spark, flights_parts, tmp_path_factory):
    """A small train run on the reference sample written as a Delta table (version 0), logged with --mlflow
    to a sqlite store when MLflow is installed; then the current sample overwrites the table (version 1).
    Returns (output dir, report, tracking URI or None, the version-0 write)."""
    pytest.importorskip("deltalake")
    from sparkml_scale.io import write_table

    root = tmp_path_factory.mktemp("trained")
    written = write_table(spark.read.parquet(flights_parts[0]), str(root / "flights_delta"), format="delta")
    argv = ["train", "--input", written.path, "--input-format", "delta", "--label", cli.DEFAULT_LABEL,
            "--features", cli.DEFAULT_FEATURES, "--categorical", cli.DEFAULT_CATEGORICAL, "--num-features", "1024",
            "--max-iter", "10", "--output", str(root / "out"), "-q"]
    uri = None
    try:
        import mlflow
    except ImportError:
        mlflow = None
    if mlflow is not None:
        uri = f"sqlite:///{root}/mlflow.db"
        mlflow.MlflowClient(tracking_uri=uri).create_experiment("cli-test", artifact_location=str(root / "artifacts"))
        argv += ["--mlflow", "--mlflow-tracking-uri", uri, "--mlflow-experiment", "cli-test"]
    assert cli.main(argv) == 0
    report = json.loads((root / "out" / "report.json").read_text())
    assert write_table(spark.read.parquet(flights_parts[1]), written.path, format="delta", mode="overwrite").version == 1
    return root / "out", report, uri, written


def _prometheus(path):
    """{(metric name, frozenset of labels): value} of a textfile, parsed by prometheus_client."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(open(path).read()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _table_rows(stdout):
    """The printed drift table: {feature: cells} from the lines under its header."""
    lines = stdout.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.split() == list(cli.MONITOR_COLUMNS))
    rows = {}
    for ln in lines[start + 1:]:
        cells = ln.split()
        if not ln.startswith("    ") or len(cells) != len(cli.MONITOR_COLUMNS):
            break
        rows[cells[0]] = dict(zip(cli.MONITOR_COLUMNS, cells))
    return rows


def test_monitor_flights_samples(spark, flights_parts, tmp_path, capsys):
    ref, cur = flights_parts
    out = tmp_path / "mon"
    assert cli.main(["monitor", "--reference", ref, "--current", cur, "--output", str(out)]) == 0
    printed = capsys.readouterr()
    assert "fitting:" in printed.err and "Traceback" not in printed.err
    assert printed.out.startswith("sparkml-scale monitor report")

    saved = json.loads((out / "report.json").read_text())
    columns = COLUMNS  # all numeric or strings: every column is monitored
    assert [r["feature"] for r in saved["features"]] == columns == saved["run"]["monitored"]
    assert saved["run"]["reference"]["rows"] == spark.read.parquet(ref).count()
    assert saved["run"]["current"]["rows"] == spark.read.parquet(cur).count()
    assert saved["run"]["reference"]["source"] == ref and saved["performance"] is None
    features = {r["feature"]: r for r in saved["features"]}
    # the season: reference months 1-3, current 7-9; a constant column is stable
    assert features["month"]["drifted"] and features["month"]["flaggedBy"] == "psi,ks"
    assert features["month"]["psi"] > 10 and features["month"]["ksStatistic"] == 1.0
    assert "month" in saved["drifted"] and "arr_delay" in saved["drifted"]
    assert features["year"]["psi"] == 0.0 and not features["year"]["drifted"]
    assert features["origin"]["kind"] == "categorical" and features["origin"]["ksStatistic"] is None
    assert set(saved["histograms"]["month"]) == {"bins", "reference", "current"}

    rows = _table_rows(printed.out)
    assert list(rows) == columns
    assert rows["month"]["drifted"] == "yes" and rows["month"]["flaggedBy"] == "psi,ks"
    assert rows["year"]["drifted"] == "no" and rows["origin"]["ksPValue"] == "-"
    assert float(rows["origin"]["chi2PValue"]) == pytest.approx(features["origin"]["chi2PValue"], rel=1e-3)

    prom = _prometheus(out / "drift.prom")
    key = frozenset({"model": "model", "feature": "month", "metric": "psi"}.items())
    assert prom[("sparkml_scale_drift_score", key)] == pytest.approx(features["month"]["psi"])
    assert prom[("sparkml_scale_drift_detected", frozenset({"model": "model", "feature": "month"}.items()))] == 1
    assert prom[("sparkml_scale_drift_detected", frozenset({"model": "model", "feature": "year"}.items()))] == 0
    assert prom[("sparkml_scale_drift_features_drifted", frozenset({"model": "model"}.items()))] == len(saved["drifted"])

    assert (out / "drift.png").read_bytes()[:8] == PNG_MAGIC
    from sparkml_scale.monitoring import DriftModel

    assert DriftModel.load(str(out / "drift_model")).features == columns


def test_monitor_default_is_the_flights_demo(spark, flights_parts, tmp_path, capsys, monkeypatch):
    """No --reference/--current: the embedded flights' months 1-3 against 7-9 (here a sample stands in
    for the whole table), the job's default features, months/days/hours as categories."""
    import sparkml_scale.datasets

    ref, cur = flights_parts
    monkeypatch.setattr(sparkml_scale.datasets, "load_flights",
                        lambda s: s.read.parquet(ref).unionByName(s.read.parquet(cur)))
    out = tmp_path / "demo"
    assert cli.main(["monitor", "--output", str(out), "--top", "2", "-q"]) == 0
    printed = capsys.readouterr()
    assert printed.err == ""
    saved = json.loads((out / "report.json").read_text())
    assert [r["feature"] for r in saved["features"]] == cli.DEFAULT_FEATURES.split(",")
    assert saved["run"]["reference"]["rows"] == spark.read.parquet(ref).count()
    assert "months 1-3" in saved["run"]["reference"]["source"] and "months 7-9" in saved["run"]["current"]["source"]
    month = next(r for r in saved["features"] if r["feature"] == "month")
    assert month["kind"] == "categorical" and month["flaggedBy"] == "psi,chi2,js"
    assert saved["histograms"]["month"]["current"][-2] == saved["run"]["current"]["rows"]  # all "other"
    assert _table_rows(printed.out)["month"]["flaggedBy"] == "psi,chi2,js"
    assert (out / "drift.png").read_bytes()[:8] == PNG_MAGIC


def test_monitor_through_a_trained_model(spark, flights_parts, trained, tmp_path, capsys):
    from pyspark.ml import PipelineModel
    from pyspark.sql import functions as F

    ref, cur = flights_parts
    model_dir = str(trained[0] / "model")
    table = trained[3].path  # Delta: version 0 holds the reference sample, version 1 the current one
    out = tmp_path / "mon"
    assert cli.main(["monitor", "--input-format", "delta", "--reference", table, "--reference-version", "0",
                     "--current", table, "--model", model_dir, "--label", cli.DEFAULT_LABEL,
                     "--features", "dep_delay,carrier,month", "--model-name", "flights-lr",
                     "--output", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "report.json").read_text())
    assert (saved["run"]["reference"]["version"], saved["run"]["current"]["version"]) == (0, 1)
    assert saved["run"]["current"]["rows"] == spark.read.parquet(cur).count()
    assert "(delta version 0, " in printed and "(delta version 1, " in printed
    assert [r["feature"] for r in saved["features"]] == ["dep_delay", "carrier", "month", "prediction"]
    prediction = saved["features"][-1]
    assert prediction["kind"] == "categorical" and prediction["psi"] >= 0
    assert "prediction" in _table_rows(printed) and "performance" in printed

    # performance: the model's accuracy on the rows with a label, exactly as counted here
    (perf,) = saved["performance"]
    pm = PipelineModel.load(model_dir)
    labelled = {}
    for data, path in (("reference", ref), ("current", cur)):
        scored = pm.transform(spark.read.parquet(path)).withColumn("label", F.expr(cli.DEFAULT_LABEL).cast("double"))
        row = scored.where("label IS NOT NULL").agg(
            F.avg((F.col("prediction") == F.col("label")).cast("double")).alias("acc"), F.count("*").alias("n")).first()
        assert perf[data] == pytest.approx(row["acc"], abs=1e-12), data
        labelled[data] = row["n"]
    assert perf["metric"] == "accuracy" and perf["count"] == labelled["current"] < saved["run"]["current"]["rows"]

    prom = _prometheus(out / "drift.prom")
    labels = frozenset({"model": "flights-lr", "metric": "accuracy", "data": "current"}.items())
    assert prom[("sparkml_scale_model_performance", labels)] == pytest.approx(perf["current"])
    assert saved["run"]["model_name"] == "flights-lr" and saved["run"]["label"] == cli.DEFAULT_LABEL


def _error(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_monitor_bad_input_exits_2(spark, flights_parts, tmp_path, capsys):
    from pyspark.sql import functions as F

    ref, cur = flights_parts
    out = tmp_path / "out"
    both = ["--reference", ref, "--current", cur, "--output", str(out), "-q"]
    assert cli.main(["monitor", "--reference", str(tmp_path / "nope.parquet"), "--current", cur,
                     "--output", str(out), "-q"]) == 2
    err = _error(capsys)
    assert "--reference" in err and "nope.parquet" in err and "does not exist" in err
    assert cli.main(["monitor", *both, "--features", "dep_delay,no_such_col"]) == 2
    err = _error(capsys)
    assert "--features" in err and "no_such_col" in err

    # schema mismatch: dep_delay as text in the current table; a column missing from it
    text = str(tmp_path / "text.parquet")
    spark.read.parquet(cur).withColumn("dep_delay", F.col("dep_delay").cast("string")).write.parquet(text)
    assert cli.main(["monitor", "--reference", ref, "--current", text, "--features", "carrier,dep_delay",
                     "--output", str(out), "-q"]) == 2
    err = _error(capsys)
    assert "schema mismatch" in err and "'dep_delay'" in err and "string" in err
    lacking = str(tmp_path / "lacking.parquet")
    spark.read.parquet(cur).drop("carrier").write.parquet(lacking)
    assert cli.main(["monitor", "--reference", ref, "--current", lacking, "--output", str(out), "-q"]) == 2
    err = _error(capsys)
    assert "--current" in err and "'carrier'" in err

    # flags
    for argv, words in ((["--label", "arr_delay > 15"], ["--label", "--model"]),
                        (["--model", str(tmp_path / "no_model")], ["--model", "does not exist"]),
                        (["--num-bins", "1"], ["--num-bins"]), (["--ks-alpha", "2"], ["--ks-alpha"])):
        assert cli.main(["monitor", *both, *argv]) == 2, argv
        err = _error(capsys)
        assert all(w in err for w in words), (argv, err)
    assert cli.main(["monitor", "--reference", ref, "--output", str(out)]) == 2
    assert "--current is missing" in _error(capsys)
    assert not out.exists()


def test_train_mlflow_logs_params_metrics_model_and_dataset(spark, trained):
    mlflow = pytest.importorskip("mlflow")
    from pyspark.ml import PipelineModel

    out, report, uri, written = trained
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("cli-test").experiment_id
    # the job set the tracking URI and the active experiment for itself only
    assert mlflow.get_tracking_uri() != uri and os.environ.get("MLFLOW_TRACKING_URI") != uri
    assert os.environ.get("MLFLOW_EXPERIMENT_ID") != experiment
    (run,) = client.search_runs([experiment])
    assert run.info.run_id == report["mlflow_run_id"] and run.info.status == "FINISHED"
    assert run.data.tags["sparkml_scale.job"] == "train"
    params = run.data.params
    assert params["num_features"] == "1024" and params["max_iter"] == "10" and params["label"] == cli.DEFAULT_LABEL
    assert params["input"] == written.path and params["input_format"] == "delta"
    assert params["FeatureHasher.numFeatures"] == "1024" and params["LogisticRegressionModel.maxIter"] == "10"
    assert json.loads(params["FeatureHasher.categoricalCols"]) == cli.DEFAULT_CATEGORICAL.split(",")
    metrics = run.data.metrics
    for key in ("holdout_auc", "holdout_log_loss", "holdout_accuracy", "final_objective"):
        assert metrics[key] == pytest.approx(report[key], rel=1e-12), key
    assert metrics["rows_train"] == report["rows_train"] and metrics["iterations"] == report["iterations"]

    (inp,) = run.inputs.dataset_inputs
    source = json.loads(inp.dataset.source)
    assert inp.dataset.source_type == "delta_table" and source["path"] == written.path
    assert source["delta_table_version"] == written.version == 0
    tags = {t.key: t.value for t in inp.tags}
    assert tags["mlflow.data.context"] == "training" and tags["sparkml_scale.format"] == "delta"

    # the logged model is the saved one; report.json is logged too
    local = client.download_artifacts(run.info.run_id, "model", str(out.parent / "downloaded"))
    logged = PipelineModel.load(os.path.join(local, "sparkml"))
    saved = PipelineModel.load(str(out / "model"))
    assert logged.stages[-1].coefficients.toArray().tolist() == saved.stages[-1].coefficients.toArray().tolist()
    assert "report.json" in [a.path for a in client.list_artifacts(run.info.run_id)]


def test_mlflow_flags_errors(tmp_path, capsys, monkeypatch):
    out = ["--output", str(tmp_path / "o")]
    assert cli.main(["train", "--mlflow-experiment", "x", *out]) == 2
    assert "--mlflow-experiment" in _error(capsys) and not (tmp_path / "o").exists()
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if mlflow-skinny were not installed
    assert cli.main(["train", "--mlflow", *out]) == 2
    assert "pip install 'sparkml-scale[mlflow]'" in _error(capsys)
