"""The sparkml-scale job: end to end on flights and on a user table, and its errors."""
import io
import json
import os
import re

import pytest

from sparkml_scale import cli


def _args(*argv):
    return cli.build_parser().parse_args(["train", *argv])


@pytest.fixture(autouse=True)
def _cwd_with_demo_leftovers(tmp_path_factory, monkeypatch):
    """Every test here runs in a directory holding what `bash scripts/demo.sh` leaves behind (a
    non-empty ./sparkml_scale_output): no test may depend on the working directory's contents,
    nor write into it (tests pass --output or run where this fixture puts them)."""
    cwd = tmp_path_factory.mktemp("cwd")
    (cwd / "sparkml_scale_output").mkdir()
    (cwd / "sparkml_scale_output" / "report.json").write_text("{}")
    monkeypatch.chdir(cwd)
    return cwd


def _small_table(tmp_path, n=2000, seed=0):
    """A CSV of customers: plan, age, spend and churned ('yes'/'no', 10 missing)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
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
    return pdf, csv


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
    n = 3000
    pdf, csv = _small_table(tmp_path, n)
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
    out = ["--output", str(tmp_path / "out")]
    assert cli.main(["train", "--input", str(tmp_path / "nope.parquet"), "--label", "x", "--features", "a", *out]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["train", "--num-features", "0", *out]) == 2
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
    out = ["--output", str(tmp_path / "out")]
    assert cli.main(["train", "--input", str(tmp_path), "--version", "1", "--label", "x", "--features", "a", *out]) == 2
    assert "--input-format delta" in capsys.readouterr().err
    assert cli.main(["train", "--input", str(tmp_path / "none"), "--input-format", "delta", "--label", "x",
                     "--features", "a", *out]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_jars_subcommand_prints_submit_args(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPARKML_SCALE_JARS", str(tmp_path))
    assert cli.main(["jars"]) == 0
    printed = capsys.readouterr()
    assert printed.out == ""                      # $(sparkml-scale jars) adds nothing to spark-submit
    assert "no optional jars found in " + str(tmp_path) in printed.err
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


# ------------------------------------------------------------------ the first run, as a newcomer meets it
PROGRESS = re.compile(r"^\[\s*(\d+\.\d) s\] (.*)$")
PHASES = ["starting Spark", "reading", "hashing", "fitting", "evaluating", "writing"]


def _progress(text):
    return [PROGRESS.match(line) for line in text.splitlines()]


def test_version_flag(capsys):
    from sparkml_scale._version import __version__

    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert re.fullmatch(rf"sparkml-scale {re.escape(__version__)} \(pyspark 4\.\d+\.\d+\S*, Python 3\.\d+\.\d+\S*\)",
                        capsys.readouterr().out.strip())


def test_progress_on_stderr_report_on_stdout_paths_absolute_and_quiet(spark, tmp_path, capsys,
                                                                     _cwd_with_demo_leftovers):
    _, csv = _small_table(tmp_path)
    argv = ["train", "--input", str(csv), "--input-format", "csv", "--label", "churned = 'yes'",
            "--features", "plan,age,spend", "--num-features", "64", "--output", "run"]  # relative --output
    assert cli.main(argv) == 0
    printed = capsys.readouterr()
    matches = _progress(printed.err)
    assert matches and all(matches), f"stderr holds more than progress lines:\n{printed.err}"
    seconds = [float(m.group(1)) for m in matches]
    assert seconds == sorted(seconds)
    lines = [m.group(2) for m in matches]
    phases = [line.split(":")[0] for line in lines if not line.startswith(" ")]
    assert phases[:-1] == PHASES and phases[-1].startswith("done in "), lines
    fit = lines[[line.split(":")[0] for line in lines].index("fitting"):]
    assert any(line.startswith("  solver ") for line in fit), lines          # LogisticRegression's records
    assert any(re.fullmatch(r"  \d+ iterations, \d+ evaluations", line) for line in fit), lines
    assert any(re.fullmatch(r"  2,000 rows, 10 without a label \(dropped\)", line) for line in lines), lines
    # the report: stdout only; model and predictions both absolute, where the relative --output points
    run = _cwd_with_demo_leftovers / "run"
    assert printed.out.startswith("sparkml-scale train report\n")
    assert f"  model             {run / 'model'}\n" in printed.out
    assert f"  predictions       {run / 'predictions'}\n" in printed.out
    saved = json.loads((run / "report.json").read_text())
    assert (saved["model_path"], saved["predictions_path"]) == (str(run / "model"), str(run / "predictions"))
    assert (run / "model" / "metadata").is_dir() and (run / "predictions").is_dir()
    # --quiet: the report, no progress
    assert cli.main(argv + ["--overwrite", "--quiet"]) == 0
    printed = capsys.readouterr()
    assert printed.err == "" and printed.out.startswith("sparkml-scale train report\n")


def test_solver_log_records_become_progress_lines():
    import logging

    log = logging.getLogger(cli.LR_LOGGER)
    before = (log.level, log.propagate, list(log.handlers))
    buf = io.StringIO()
    progress = cli.Progress(buf, iteration_every_s=3600.0)
    log.info("LogisticRegression: solver %s (%s)", "x", "before the fit: not shown")
    with progress.solver_lines():
        log.info("LogisticRegression: solver %s (%s)", "mapreduce", "solver='mapreduce'")
        for it in range(1, 6):
            log.info("LogisticRegression: iteration %d objective %.10g", it, 1.0 / it)
        log.info("LogisticRegression: %d iterations, %d evaluations", 5, 6)
        log.warning("LogisticRegression: cannot tell the cluster's task slots")
    log.info("LogisticRegression: solver %s (%s)", "y", "after the fit: not shown")
    assert [m.group(2) for m in _progress(buf.getvalue())] == [
        "  solver mapreduce (solver='mapreduce')",
        "  iteration    1  objective 1.000000",      # the first, then at most one per iteration_every_s ...
        "  iteration    5  objective 0.200000",      # ... and the last one
        "  5 iterations, 6 evaluations",
        "  warning: cannot tell the cluster's task slots",
    ]
    assert (log.level, log.propagate, list(log.handlers)) == before
    quiet = cli.Progress(None)
    with quiet.solver_lines():
        assert (log.level, log.propagate, list(log.handlers)) == before


def test_heartbeat_names_the_phase_and_the_running_stage(spark):
    import time

    def slow(batches):
        time.sleep(2.5)
        yield from batches

    buf = io.StringIO()
    progress = cli.Progress(buf, heartbeat_s=1.0)
    progress.phase("fitting", "LogisticRegression")
    with progress.watching(spark):
        spark.range(0, 2, numPartitions=2).mapInPandas(slow, "id long").collect()
    lines = [m.group(2) for m in _progress(buf.getvalue())]
    assert lines[0] == "fitting: LogisticRegression"
    assert any(re.fullmatch(r"  \.\.\. still fitting \(Spark stage \d+: [01] of 2 tasks done\)", line)
               for line in lines), lines
    n = len(buf.getvalue())
    time.sleep(1.5)
    assert len(buf.getvalue()) == n  # the thread stopped with the block


def _jobs(spark, group):
    return spark.sparkContext.statusTracker().getJobIdsForGroup(group)


def test_bad_flags_found_from_the_schema_without_a_spark_job(spark, tmp_path):
    import logging

    from pyspark.logger import PySparkLogger

    path = tmp_path / "t.parquet"
    spark.range(20).selectExpr("id", "CAST(id % 2 AS DOUBLE) AS y", "'a' AS s", "array(1.5D) AS arr",
                               "id AS features").write.parquet(str(path))
    df = spark.read.parquet(str(path))  # reading the footer may run a job: before the group
    cases = [
        (("no_such_col > 1", ["s"], []), r"^--label 'no_such_col > 1' is not a valid SQL expression .*no_such_col"),
        (("y >", ["s"], []), r"^--label 'y >' is not a valid SQL expression on the input: ParseException"),
        (("s", ["id"], []), r"^--label 's' gives string values on the input; it must give 0/1"),
        (("y = 1", ["s", "zzz"], []), r"^--features names columns not in the input: \['zzz'\]"),
        (("y = 1", ["s"], ["nope"]), r"^--categorical names columns not in the input: \['nope'\]"),
        (("y = 1", ["s"], ["id"]), r"^--categorical columns must also be in --features: \['id'\]"),
        (("y = 1", ["s", "arr"], []), r"^--features: .*'arr'.*array<double>"),
        (("y = 1", ["s", "features"], []), r"^--features must not name \['features'\]"),
    ]
    records = []

    class Record(logging.Handler):
        def emit(self, record):
            records.append(record)

    loggers = [PySparkLogger.getLogger(n) for n in ("SQLQueryContextLogger", "DataFrameQueryContextLogger")]
    handler = Record()
    for lg in loggers:
        lg.addHandler(handler)
    group = "cli-flag-checks"
    spark.sparkContext.setJobGroup(group, "flag checks")
    try:
        for (label, features, categorical), message in cases:
            with pytest.raises(cli.JobError, match=message):
                cli.check_input(df, label, features, categorical, 64)
        # valid flags: the input minus the column the job writes ('features')
        assert cli.check_input(df, "y = 1", ["s", "id"], ["id"], 64).columns == ["id", "y", "s", "arr"]
        assert _jobs(spark, group) == [], "checking the flags ran a Spark job"
        df.count()
        assert _jobs(spark, group), "the job tracker saw no job (the check above would be vacuous)"
    finally:
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
        for lg in loggers:
            lg.removeHandler(handler)
    # PySpark logs each AnalysisException it converts (JVM stack trace included) at ERROR: not these
    assert records == []


def test_console_of_a_run_is_progress_and_report_only(tmp_path):
    """The job in its own process, as a newcomer runs it: stdout is the report, stderr the
    progress lines and nothing from Spark (start-up notices, warnings, Python-daemon tracebacks),
    apart from the JVM's own one-line notice about incubator modules."""
    import subprocess
    import sys

    _, csv = _small_table(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_REMOTE", "PYSPARK_GATEWAY_PORT", "MASTER")}
    env["SPARKML_SCALE_DRIVER_MEMORY"] = "1g"
    proc = subprocess.run(
        [sys.executable, "-m", "sparkml_scale", "train", "--input", str(csv), "--input-format", "csv",
         "--label", "churned = 'yes'", "--features", "plan,age,spend", "--num-features", "64",
         "--master", "local[2]", "--output", str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("sparkml-scale train report\n") and "holdout AUC" in proc.stdout
    noise = [line for line, m in zip(proc.stderr.splitlines(), _progress(proc.stderr))
             if m is None and not line.startswith("WARNING: Using incubator modules")]
    assert noise == [], proc.stderr
    assert [m.group(2).split(":")[0] for m in _progress(proc.stderr)
            if m and not m.group(2).startswith(" ")][:-1] == PHASES
