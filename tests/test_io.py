"""Delta Lake / Parquet table I/O with lineage (sparkml_scale.io), on real Delta tables.

Tables are written by delta-rs directly (``deltalake.write_deltalake``) and by the
package (``write_table``), and every table the package writes is checked with
``deltalake.DeltaTable``, an independent reader of the Delta protocol.
"""
import datetime as dt
import os
import threading
import time

import numpy as np
import pandas as pd
import pytest

deltalake = pytest.importorskip("deltalake")
from deltalake import DeltaTable, write_deltalake  # noqa: E402

from sparkml_scale.io import (  # noqa: E402
    TableNotFoundError,
    TableWriteError,
    WriteConflictError,
    delta_engine,
    lineage_of,
    model_lineage,
    read_table,
    write_table,
)
from sparkml_scale.io import delta_rs  # noqa: E402


def _frame(n, start=0, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "id": np.arange(start, start + n, dtype="int64"),
        "x": rng.normal(size=n),
        "city": rng.choice(["a b+c", "z:z", "plain"], n),
        "day": pd.date_range("2024-01-01", periods=n, freq="h"),
    })


def _commit_ms(path, version):
    return next(h["timestamp"] for h in DeltaTable(path).history() if h["version"] == version)


def _data_files(path):
    out = []
    for d, _, files in os.walk(path):
        if "_delta_log" in d or "_sparkml_scale_staging" in d:
            continue
        out += [os.path.join(d, f) for f in files if f.endswith(".parquet")]
    return sorted(out)


@pytest.mark.connect
def test_engine_is_delta_rs_without_the_delta_jars(spark):
    # No Delta jar on this classpath (Maven is unreachable here): the probe must see that.
    from sparkml_scale.io.tables import _has_delta_spark

    assert _has_delta_spark(spark) is False
    assert delta_engine(spark) == "delta-rs"


@pytest.mark.connect
def test_time_travel_schema_and_lineage_on_a_delta_rs_table(spark, tmp_path):
    path = str(tmp_path / "events")
    # Commits 1 s apart: under load, delta-rs's commit timestamps of writes 50 ms apart were once
    # seen out of order (v1's 74 ms before v0's), which makes "the last commit at or before a time"
    # ambiguous.
    write_deltalake(path, _frame(40), partition_by=["city"])            # v0: 40 rows
    time.sleep(1.0)
    write_deltalake(path, _frame(20, start=40, seed=1), mode="append", partition_by=["city"])  # v1: 60
    time.sleep(1.0)
    write_deltalake(path, _frame(5, start=100, seed=2), mode="overwrite", partition_by=["city"])  # v2: 5

    latest, rec = read_table(spark, path)
    assert (rec.version, rec.format, rec.engine, rec.path) == (2, "delta", "delta-rs", path)
    assert latest.count() == 5
    assert [(f.name, f.dataType.simpleString()) for f in latest.schema.fields] == [
        ("id", "bigint"), ("x", "double"), ("city", "string"), ("day", "timestamp_ntz")]

    v0, rec0 = read_table(spark, path, version=0)
    assert rec0.version == 0 and v0.count() == 40
    expected = _frame(40)
    got = v0.toPandas().sort_values("id").reset_index(drop=True)
    pd.testing.assert_series_equal(got["city"], expected["city"], check_names=False)
    np.testing.assert_allclose(got["x"], expected["x"])
    assert rec0.timestamp.endswith("Z")

    # the last commit at or before a time: 1 ms after v1's commit -> version 1
    assert _commit_ms(path, 0) < _commit_ms(path, 1) < _commit_ms(path, 2)
    # The log file of v1 written 300 ms after the commit's own timestamp, as on a loaded machine or a
    # slow object store (seen in CI: delta-rs's load_as_version(datetime) goes by file modification
    # times and read version 0 here). The version is resolved from the commit times that history()
    # and the lineage record show.
    log1 = os.path.join(path, "_delta_log", f"{1:020d}.json")
    os.utime(log1, ns=((_commit_ms(path, 1) + 300) * 1_000_000,) * 2)
    ts = dt.datetime.fromtimestamp((_commit_ms(path, 1) + 1) / 1000, tz=dt.timezone.utc)
    v1, rec1 = read_table(spark, path, timestamp=ts)
    assert rec1.version == 1 and v1.count() == 60 and rec1.as_of is not None, (rec1, _commit_ms(path, 0))
    from sparkml_scale.io.common import iso_utc

    # the commit time of the version read, not the latest commit's (the time travel moved a shared handle)
    assert rec1.timestamp == iso_utc(_commit_ms(path, 1)) != iso_utc(_commit_ms(path, 2)), rec1
    iso = ts.isoformat()
    assert read_table(spark, path, timestamp=iso)[1].version == 1
    # a lineage record's own commit time reads back the version it names
    assert read_table(spark, path, timestamp=rec1.timestamp)[1].version == 1
    assert read_table(spark, path, timestamp=rec0.timestamp)[1].version == 0

    assert lineage_of(v1.filter("x > 0").select("id")) == [rec1]
    assert lineage_of(spark.range(3)) == []


def test_version_at_is_the_last_commit_at_or_before_the_time_on_both_engines():
    from sparkml_scale.io.common import iso_utc, version_at

    commits = [(0, 1_000), (1, 2_000), (2, 1_900), (3, None)]  # v2's time before v1's (clock skew); v3 unknown
    assert version_at(commits, iso_utc(1_000), "t") == (0, 1_000)
    assert version_at(commits, iso_utc(1_899), "t") == (0, 1_000)
    assert version_at(commits, iso_utc(1_900), "t") == (2, 1_900)
    assert version_at(commits, dt.datetime(2030, 1, 1), "t") == (2, 1_900)
    with pytest.raises(ValueError, match=r"timestamp='1970-01-01T00:00:00.999Z' is before the first .*version 0"):
        version_at(commits, iso_utc(999), "t")


@pytest.mark.connect
def test_read_errors_name_the_parameter(spark, tmp_path):
    path = str(tmp_path / "t")
    write_deltalake(path, _frame(10))
    with pytest.raises(ValueError, match="version=7"):
        read_table(spark, path, version=7)
    with pytest.raises(ValueError, match="version must be an integer"):
        read_table(spark, path, version=-1)
    with pytest.raises(ValueError, match="timestamp=.*before the first"):
        read_table(spark, path, timestamp="2001-01-01")
    with pytest.raises(ValueError, match="timestamp=.*ISO 8601"):
        read_table(spark, path, timestamp="last tuesday")
    with pytest.raises(ValueError, match="not both"):
        read_table(spark, path, version=0, timestamp="2030-01-01")
    with pytest.raises(ValueError, match="format="):
        read_table(spark, path, format="orc")
    with pytest.raises(TableNotFoundError, match="no Delta table"):
        read_table(spark, str(tmp_path / "missing"))
    plain = str(tmp_path / "plain")
    spark.range(3).write.parquet(plain)
    with pytest.raises(ValueError, match="not a Delta table"):
        read_table(spark, plain)
    with pytest.raises(ValueError, match="time travel"):
        read_table(spark, plain, format="parquet", version=0)
    df, rec = read_table(spark, plain, format="parquet")
    assert df.count() == 3 and rec.version is None and rec.format == "parquet"


@pytest.mark.connect
def test_write_create_append_overwrite_readable_by_deltalake(spark, tmp_path):
    path = str(tmp_path / "out")
    first = spark.createDataFrame(_frame(30)).selectExpr("id", "x", "city", "cast(day as date) AS day")
    r0 = write_table(first, path, partitionBy=["city"])
    assert (r0.version, r0.engine) == (0, "delta-rs")
    t = DeltaTable(path)
    assert t.metadata().partition_columns == ["city"]
    pdf = t.to_pandas().sort_values("id").reset_index(drop=True)
    assert pdf["id"].tolist() == list(range(30))
    assert pdf["city"].tolist() == _frame(30)["city"].tolist()     # special characters survive
    assert {a for a in t.get_add_actions(flatten=True).column("num_records").to_pylist()} != {None}

    with pytest.raises(FileExistsError, match="mode='append'"):
        write_table(first, path)

    # append: columns by name in another order, int widened to the table's long
    more = spark.createDataFrame(_frame(10, start=30)).selectExpr(
        "cast(day as date) AS day", "city", "cast(id as int) AS id", "x")
    r1 = write_table(more, path, mode="append")
    assert r1.version == 1
    assert DeltaTable(path).to_pyarrow_table().num_rows == 40
    back, rec = read_table(spark, path)
    assert rec.version == 1 and back.count() == 40
    assert sorted(r["id"] for r in back.select("id").collect()) == list(range(40))

    # r0's version is still readable after the append
    assert DeltaTable(path, version=0).to_pyarrow_table().num_rows == 30

    new = spark.range(5).selectExpr("id", "'q' AS city", "id * 2.0 AS y")
    with pytest.raises(ValueError, match=r"\['y'\]"):
        write_table(new, path, mode="append")
    with pytest.raises(ValueError, match=r"x: string \(table: double\)"):
        write_table(more.withColumn("x", more["x"].cast("string")), path, mode="append")
    with pytest.raises(ValueError, match="overwriteSchema"):
        write_table(new, path, mode="overwrite", partitionBy=["id"])
    r2 = write_table(new, path, mode="overwrite", partitionBy=["city"], overwriteSchema=True)
    t2 = DeltaTable(path)
    assert r2.version == 2 and t2.version() == 2
    assert [f.name for f in t2.schema().fields] == ["id", "city", "y"]
    assert sorted(t2.to_pandas()["y"]) == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert len(DeltaTable(path, version=1).to_pandas()) == 40


@pytest.mark.connect
def test_write_input_errors(spark, tmp_path):
    from pyspark.ml.feature import VectorAssembler

    path = str(tmp_path / "bad")
    df = spark.range(4).selectExpr("id", "CAST(id * 1.5 AS DOUBLE) AS v")
    vec = VectorAssembler(inputCols=["v"], outputCol="features").transform(df)
    with pytest.raises(ValueError, match=r"\['features'\].*vector_to_array"):
        write_table(vec, path)
    with pytest.raises(ValueError, match=r"partitionBy column\(s\) \['v'\] have types \['double'\]"):
        write_table(df, path, partitionBy=["v"])
    with pytest.raises(ValueError, match=r"partitionBy column\(s\) \['nope'\]"):
        write_table(df, path, partitionBy="nope")
    with pytest.raises(ValueError, match="mode="):
        write_table(df, path, mode="upsert")
    assert not os.path.exists(path)  # nothing written by a refused call
    plain = str(tmp_path / "plain")
    df.write.parquet(plain)
    with pytest.raises(ValueError, match="not a Delta table"):
        write_table(df, plain, mode="append")


@pytest.mark.connect
def test_failing_task_leaves_the_table_at_its_version(spark, tmp_path):
    from pyspark.sql import functions as F

    path = str(tmp_path / "t")
    write_table(spark.range(100).selectExpr("id", "id % 4 AS g"), path, partitionBy=["g"])
    files_before = _data_files(path)
    boom = spark.range(1000, 3000, numPartitions=4).select(
        F.when(F.col("id") == 2500, F.raise_error(F.lit("injected task failure"))).otherwise(F.col("id")).alias("id"),
        (F.col("id") % 4).alias("g"))
    with pytest.raises(TableWriteError, match="unchanged.*version 0.*injected task failure") as err:
        write_table(boom, path, mode="append")
    assert err.value.table_version == 0
    assert DeltaTable(path).version() == 0
    df, rec = read_table(spark, path)
    assert rec.version == 0 and df.count() == 100
    assert _data_files(path) == files_before          # staged files cleaned up, none placed
    assert write_table(spark.range(5).selectExpr("id", "id % 4 AS g"), path, mode="append").version == 1


def test_job_killed_between_files_and_commit_leaves_nothing_visible(spark, tmp_path, monkeypatch):
    path = str(tmp_path / "t")
    write_table(spark.range(50).selectExpr("id"), path)

    class Killed(BaseException):
        pass

    def die(*a, **k):
        raise Killed()

    monkeypatch.setattr(delta_rs, "_commit", die)
    monkeypatch.setattr(delta_rs, "remove_paths", lambda fs, paths: None)  # a killed driver cleans nothing up
    with pytest.raises(Killed):
        write_table(spark.range(1000, 1300).selectExpr("id"), path, mode="append")
    monkeypatch.undo()
    assert len(_data_files(path)) > 1                 # the new files exist on disk ...
    assert DeltaTable(path).version() == 0            # ... but were never committed
    assert DeltaTable(path).to_pyarrow_table().num_rows == 50
    df, rec = read_table(spark, path)
    assert rec.version == 0 and df.count() == 50
    assert write_table(spark.range(7).selectExpr("id"), path, mode="append").version == 1
    assert read_table(spark, path)[0].count() == 57


def test_concurrent_appends_both_commit(spark, tmp_path):
    for existing in (True, False):  # appends to a table, and two writers racing to create it
        path = str(tmp_path / f"t{existing}")
        if existing:
            write_table(spark.range(10).selectExpr("id"), path)
        results, errors = {}, []
        barrier = threading.Barrier(2)

        def append(k):
            try:
                barrier.wait()
                results[k] = write_table(spark.range(k * 1000, k * 1000 + 100).selectExpr("id"), path, mode="append")
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=append, args=(k,)) for k in (1, 2)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert not errors, errors
        base = 1 if existing else 0
        assert sorted(r.version for r in results.values()) == [base, base + 1]
        ids = sorted(DeltaTable(path).to_pandas()["id"])
        assert ids == sorted((list(range(10)) if existing else []) + list(range(1000, 1100)) + list(range(2000, 2100)))


def test_conflicting_change_raises_and_commits_nothing(spark, tmp_path, monkeypatch):
    path = str(tmp_path / "t")
    write_table(spark.range(10).selectExpr("id"), path)
    before = set(_data_files(path))
    real = delta_rs._place_files

    def place_then_concurrent_schema_change(*args, **kwargs):
        adds = real(*args, **kwargs)
        write_deltalake(path, pd.DataFrame({"other": ["x"]}), mode="overwrite", schema_mode="overwrite")
        return adds

    monkeypatch.setattr(delta_rs, "_place_files", place_then_concurrent_schema_change)
    with pytest.raises(WriteConflictError, match="concurrent change.*nothing was committed"):
        write_table(spark.range(100, 105).selectExpr("id"), path, mode="append")
    t = DeltaTable(path)
    assert t.version() == 1 and t.to_pandas()["other"].tolist() == ["x"]
    referenced = {os.path.normpath(p) for p in t.file_uris()}
    # every file on disk is the first write's or the concurrent writer's: this write's were removed
    assert set(_data_files(path)) - referenced == before


@pytest.mark.connect
def test_models_record_lineage_through_cache_pipeline_and_save(spark, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.feature import VectorAssembler

    from sparkml_scale.classification import LogisticRegression
    from sparkml_scale.feature import PCA
    from sparkml_scale.regression import LinearRegression

    path = str(tmp_path / "train")
    pdf = _frame(200)
    pdf["label"] = (pdf["x"] > 0).astype("float64")
    write_deltalake(path, pdf)
    write_deltalake(path, _frame(50, start=200).assign(label=1.0), mode="append")
    df, rec = read_table(spark, path, version=0)
    train = df.filter("id >= 0").cache()
    pipe = Pipeline(stages=[VectorAssembler(inputCols=["x", "id"], outputCol="features"),
                            PCA(k=1, inputCol="features", outputCol="pc"),
                            LogisticRegression(featuresCol="features", maxIter=5)])
    pm = pipe.fit(train)
    want = [rec.to_dict()]
    assert want[0]["version"] == 0
    assert pm.stages[1].dataLineage == want and pm.stages[2].dataLineage == want
    pm.write().overwrite().save(str(tmp_path / "pm"))
    loaded = PipelineModel.load(str(tmp_path / "pm"))
    assert loaded.stages[1].dataLineage == want and loaded.stages[2].dataLineage == want
    assert model_lineage(loaded) == want
    train.unpersist()

    # a model fitted on data that did not come through read_table records nothing
    plain = LinearRegression().fit(
        VectorAssembler(inputCols=["x"], outputCol="features").transform(spark.createDataFrame(pdf)))
    assert plain.dataLineage == []

    # a join of two tables: both recorded, in plan order
    other, rec_b = read_table(spark, path)
    joined = df.select("id", "x", "label").join(other.select("id", "city"), "id")
    m = LinearRegression().fit(VectorAssembler(inputCols=["x"], outputCol="features").transform(joined))
    assert {r["version"] for r in m.dataLineage} == {0, 1}


def test_parquet_overwrite_failure_keeps_the_old_data(spark, tmp_path):
    from pyspark.sql import functions as F

    path = str(tmp_path / "p")
    write_table(spark.range(20), path, format="parquet")
    with pytest.raises(FileExistsError):
        write_table(spark.range(3), path, format="parquet")
    boom = spark.range(100).select(F.when(F.col("id") == 50, F.raise_error(F.lit("boom"))).otherwise(F.col("id")).alias("id"))
    with pytest.raises(TableWriteError, match="existing data is unchanged"):
        write_table(boom, path, format="parquet", mode="overwrite")
    assert spark.read.parquet(path).count() == 20
    assert sorted(os.listdir(tmp_path)) == ["p"]      # no staged leftovers
    write_table(spark.range(7), path, format="parquet", mode="overwrite")
    assert spark.read.parquet(path).count() == 7
