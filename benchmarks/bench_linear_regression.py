"""LinearRegression fit: ours (one Gram pass) vs MLlib ``solver="normal"``, same session and data.

    .venv/bin/python benchmarks/bench_linear_regression.py [--rows 1000000] [--cols 100] [--repeat 2]

Data: synthetic dense Gaussian features (generated in Spark, cached and counted
before timing) with a linear label plus noise; regParam 0.01, standardization
on.  Prints fit times (best of ``--repeat``), their ratio (ours / MLlib, < 1 is
faster) and the largest relative coefficient difference.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.harness import add_report_args, result_row, write_rows  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=None, help="rows (default 1,000,000; --size small: 200,000)")
    ap.add_argument("--cols", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--master", default="local[2]")
    add_report_args(ap)
    args = ap.parse_args(argv)
    args.rows = args.rows or (200_000 if args.size == "small" else 1_000_000)

    os.environ.setdefault("SPARKML_SCALE_DRIVER_MEMORY", "8g")
    import numpy as np
    from pyspark.ml.functions import array_to_vector
    from pyspark.ml.regression import LinearRegression as MLlibLinear
    from pyspark.sql import functions as F

    from sparkml_scale.core.session import get_session
    from sparkml_scale.regression import LinearRegression

    spark = get_session("bench-linear", master=args.master)
    n, d = args.rows, args.cols
    beta = np.random.default_rng(0).normal(size=d)
    cols = [F.randn(seed=i).alias(f"x{i}") for i in range(d)]
    base = spark.range(n, numPartitions=args.partitions).select(*cols)
    label = sum(F.col(f"x{i}") * float(b) for i, b in enumerate(beta)) + 3.0 + F.randn(seed=999)
    df = base.select(array_to_vector(F.array(*[f"x{i}" for i in range(d)])).alias("features"),
                     label.alias("label")).cache()
    df.count()
    kw = dict(regParam=0.01)

    # warm-up on a slice (JIT, Python workers)
    small = df.limit(5000).cache()
    small.count()
    MLlibLinear(solver="normal", **kw).fit(small)
    LinearRegression(**kw).fit(small)

    def best(fn):
        times, out = [], None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        return min(times), out

    t_ml, ref = best(lambda: MLlibLinear(solver="normal", **kw).fit(df))
    t_us, ours = best(lambda: LinearRegression(**kw).fit(df))
    a, b = ref.coefficients.toArray(), ours.coefficients.toArray()
    diff = float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(a))))
    print(f"{'case':<32} {'ours s':>8} {'MLlib s':>8} {'ratio':>7} {'max rel coef diff':>18}")
    print(f"{f'dense {n:,} x {d}':<32} {t_us:>8.2f} {t_ml:>8.2f} {t_us / t_ml:>6.2f}x {diff:>18.2e}", flush=True)
    spark.stop()
    rows = [result_row(f"dense {n:,} x {d}, regParam 0.01", t_us, 'MLlib LinearRegression solver="normal"', t_ml,
                       check=f"max rel coefficient diff {diff:.1e} (<= 1e-6)", check_ok=diff <= 1e-6)]
    write_rows(args.json, rows)
    return rows


if __name__ == "__main__":
    main()
