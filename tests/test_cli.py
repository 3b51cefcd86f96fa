"""The sparkml-scale job: end to end on flights and on a user table, and its errors."""
import io
import json
import os

import pytest

from sparkml_scale import cli


def _args(*argv):
    return cli.build_parser().parse_args(["train", *argv])


def test_default_flights_job(spark, tmp_path):
    out = tmp_path / "run"
    buf = io.StringIO()
    report = cli.run_train(_args("--output", str(out), "--num-features", "4096", "--max-iter", "30"), spark, buf)
    assert report["rows_read"] == 336_776
    assert report["rows_dropped_missing_label"] == 9_430
    assert report["rows_train"] + report["rows_holdout"] == 336_776 - 9_430
    assert report["holdout_auc"] > 0.65
    assert 0.0 < report["holdout_log_loss"] < 0.6
    text = buf.getvalue()
    assert "holdout AUC" in text and "336,776" in text and "timings" in text
    saved = json.loads((out / "report.json").read_text())
    assert saved["holdout_auc"] == report["holdout_auc"]
    from pyspark.ml import PipelineModel

    pm = PipelineModel.load(str(out / "model"))
    assert [type(s).__name__ for s in pm.stages] == ["FeatureHasher", "LogisticRegressionModel"]
    preds = spark.read.parquet(str(out / "predictions"))
    assert preds.count() == report["rows_holdout"]
    assert {"label", "prediction", "probability"} <= set(preds.columns)


@pytest.mark.connect
def test_user_table_csv_and_parquet(spark, tmp_path):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 3000
    pdf = pd.DataFrame({
        "plan": rng.choice(["basic", "pro", "team"], n),
        "age": rng.integers(18, 80, n),
        "spend": rng.gamma(2.0, 20.0, n),
    })
    logit = (pdf["plan"] == "pro") * 1.5 - 0.03 * (pdf["age"] - 40) + 0.01 * pdf["spend"] - 0.5
    pdf["churned"] = np.where(rng.uniform(size=n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    pdf.loc[:9, "churned"] = None
    csv = tmp_path / "t.csv"
    pdf.to_csv(csv, index=False)
    report = cli.run_train(
        _args("--input", str(csv), "--input-format", "csv", "--label", "churned = 'yes'",
              "--features", "plan,age,spend", "--num-features", "64", "--reg-param", "0.001",
              "--output", str(tmp_path / "o1")), spark, io.StringIO())
    assert report["rows_read"] == n and report["rows_dropped_missing_label"] == 10
    assert report["holdout_auc"] > 0.6
    pq = tmp_path / "t.parquet"
    pdf.to_parquet(pq)
    report2 = cli.run_train(
        _args("--input", str(pq), "--label", "churned = 'yes'", "--features", "plan,age,spend",
              "--categorical", "age", "--output", str(tmp_path / "o2")), spark, io.StringIO())
    assert report2["rows_holdout"] > 0


def test_errors_exit_2_with_message(tmp_path, capsys):
    assert cli.main(["train", "--input", str(tmp_path / "nope.parquet"), "--label", "x", "--features", "a"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["train", "--num-features", "0"]) == 2
    assert "--num-features" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    assert cli.main(["train", "--output", str(tmp_path / "full")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "full" / "x").read_text() == "keep me"


@pytest.mark.connect
def test_bad_label_and_columns(spark, tmp_path):
    pdf_path = tmp_path / "t.parquet"
    spark.range(20).selectExpr("id", "CAST(id % 3 AS DOUBLE) AS y", "'a' AS s").write.parquet(str(pdf_path))
    with pytest.raises(cli.JobError, match="other than 0/1"):
        cli.run_train(_args("--input", str(pdf_path), "--label", "y", "--features", "s",
                            "--output", str(tmp_path / "o")), spark, io.StringIO())
    with pytest.raises(cli.JobError, match="not in the input"):
        cli.run_train(_args("--input", str(pdf_path), "--label", "y > 1", "--features", "s,zzz",
                            "--output", str(tmp_path / "o")), spark, io.StringIO())
    with pytest.raises(cli.JobError, match="--label"):
        cli.run_train(_args("--input", str(pdf_path), "--label", "no_such_col > 1", "--features", "s",
                            "--output", str(tmp_path / "o")), spark, io.StringIO())
    assert not os.path.exists(tmp_path / "o" / "model")


def test_delta_input_version_and_delta_predictions(spark, tmp_path):
    import numpy as np
    import pandas as pd

    deltalake = pytest.importorskip("deltalake")
    rng = np.random.default_rng(3)

    def frame(n, shift):
        pdf = pd.DataFrame({"plan": rng.choice(["basic", "pro"], n), "spend": rng.gamma(2.0, 20.0, n)})
        logit = (pdf["plan"] == "pro") * 2.0 + 0.02 * pdf["spend"] - 1.0 + shift
        pdf["churned"] = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype("int64")
        return pdf

    table = str(tmp_path / "customers")
    deltalake.write_deltalake(table, frame(2000, 0.0))                       # version 0
    deltalake.write_deltalake(table, frame(500, 5.0), mode="append")         # version 1
    preds = str(tmp_path / "preds")
    buf = io.StringIO()
    args = ("--input", table, "--input-format", "delta", "--version", "0", "--label", "churned = 1",
            "--features", "plan,spend", "--num-features", "64", "--output", str(tmp_path / "o"),
            "--predictions", preds, "--predictions-format", "delta", "--predictions-mode", "append")
    report = cli.run_train(_args(*args), spark, buf)
    assert report["rows_read"] == 2000                                        # version 0 only
    assert (report["input_version"], report["input_engine"]) == (0, "delta-rs")
    assert "delta version 0" in buf.getvalue()
    t = deltalake.DeltaTable(preds)
    assert report["predictions_version"] == 0 and t.version() == 0
    assert len(t.to_pandas()) == report["rows_holdout"]
    assert set(t.to_pandas().columns) == {"plan", "spend", "churned", "label", "prediction", "probability"}
    saved = json.loads((tmp_path / "o" / "report.json").read_text())
    assert saved["input_version"] == 0

    from pyspark.ml import PipelineModel

    from sparkml_scale.io import model_lineage

    lineage = model_lineage(PipelineModel.load(str(tmp_path / "o" / "model")))
    assert [(r["path"], r["version"]) for r in lineage] == [(table, 0)]

    # latest version, appended as a second predictions version
    report2 = cli.run_train(_args(*[a if a != "0" else "1" for a in args], "--overwrite"), spark, io.StringIO())
    assert report2["rows_read"] == 2500 and report2["input_version"] == 1
    assert report2["predictions_version"] == 1
    assert len(deltalake.DeltaTable(preds).to_pandas()) == report["rows_holdout"] + report2["rows_holdout"]


def test_delta_flag_errors(tmp_path, capsys):
    assert cli.main(["train", "--input", str(tmp_path), "--version", "1", "--label", "x", "--features", "a"]) == 2
    assert "--input-format delta" in capsys.readouterr().err
    assert cli.main(["train", "--input", str(tmp_path / "none"), "--input-format", "delta", "--label", "x",
                     "--features", "a"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_jars_subcommand_prints_submit_args(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPARKML_SCALE_JARS", str(tmp_path))
    assert cli.main(["jars"]) == 0
    assert capsys.readouterr().out.strip() == ""
    (tmp_path / "delta-storage-4.3.0.jar").write_bytes(b"PK")
    (tmp_path / "delta-spark_4.1_2.13-4.3.0.jar").write_bytes(b"PK")
    from sparkml_scale.core import jars

    args = jars.submit_args(spark_version="4.1.1")
    assert args[0] == "--jars" and args[1].split(",") == [
        str(tmp_path / "delta-spark_4.1_2.13-4.3.0.jar"), str(tmp_path / "delta-storage-4.3.0.jar")]
    assert f"spark.sql.extensions={jars.DELTA_EXTENSION}" in args
    assert f"spark.sql.catalog.spark_catalog={jars.DELTA_CATALOG}" in args
    # a delta-spark jar built for another Spark minor is skipped (it would fail in the JVM)
    conf = jars.jar_conf(spark_version="4.3.0", base={"spark.jars": "/opt/other.jar"})
    assert conf == {"spark.jars": "/opt/other.jar," + str(tmp_path / "delta-storage-4.3.0.jar")}
    monkeypatch.setenv("SPARKML_SCALE_JARS", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="SPARKML_SCALE_JARS"):
        jars.find_jars()


def test_fetch_script_builds_maven_central_urls():
    import importlib.util

    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "jars", "fetch.py")
    spec = importlib.util.spec_from_file_location("fetch", here)
    fetch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fetch)
    assert fetch.maven_url("io.delta:delta-spark_4.1_2.13:4.3.0") == (
        "https://repo1.maven.org/maven2/io/delta/delta-spark_4.1_2.13/4.3.0/delta-spark_4.1_2.13-4.3.0.jar")
    assert fetch.coordinates("4.1.1") == ["io.delta:delta-spark_4.1_2.13:4.3.0", "io.delta:delta-storage:4.3.0"]
    with pytest.raises(SystemExit, match="no Delta jars listed for Spark 4.3"):
        fetch.coordinates("4.3.0")
    with pytest.raises(ValueError, match="group:artifact:version"):
        fetch.maven_url("io.delta:delta-spark")
