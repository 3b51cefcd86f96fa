"""The sparkml-scale job: end to end on flights and on a user table, and its errors."""
import io
import json
import os

import pytest

from sparkml_scale import cli


def _args(*argv):
    return cli.build_parser().parse_args(["train", *argv])


@pytest.mark.connect
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
