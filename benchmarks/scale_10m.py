"""Scale check: fit PCA, LinearRegression, LogisticRegression and run FeatureHasher on 10,000,000 rows
with the package's default session (local[2], default driver memory), reporting peak memory per stage.

    .venv/bin/python benchmarks/scale_10m.py [--rows 10000000] [--cols 20] [--partitions 16]

Data: ``spark.range(rows)`` with ``cols`` Gaussian features (``randn`` with fixed seeds),
a binary label from a fixed linear model plus noise, and for FeatureHasher three
string columns (1,000 / 100 / 10 categories) and two numeric ones.  Nothing is cached
and nothing is collected: every stage streams its input through Arrow batches.

Memory, per stage (Linux ``/proc``): the peak resident set of the driver's Python
process and of the JVM (``VmHWM``, reset with ``clear_refs`` before each stage), and
the largest total resident set of the Python worker processes seen by a 0.2 s sampler
(workers come and go, so theirs is sampled).  Not a unit test: run by hand; its figures
go in the issue's closing note.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.harness import descendants, proc_comm, proc_status_kb  # noqa: E402


def _status_kb(pid: int, key: str) -> int:
    return proc_status_kb(pid, key) or 0


class MemoryWatch:
    """Peak RSS of the driver Python, the JVM and the Python workers during a ``with`` block."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.me = os.getpid()

    def _jvms(self):
        return [p for p in descendants(self.me) if (proc_comm(p) or "") == "java"]

    def __enter__(self):
        for pid in [self.me] + self._jvms():
            try:
                with open(f"/proc/{pid}/clear_refs", "w") as fh:
                    fh.write("5")  # reset VmHWM to the current RSS
            except OSError:
                pass
        self.workers_peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self.t0 = time.perf_counter()
        return self

    def _run(self):
        while not self._stop.is_set():
            jvms = set(self._jvms())
            workers = [p for p in descendants(self.me) if p not in jvms and (proc_comm(p) or "").startswith("python")]
            self.workers_peak_kb = max(self.workers_peak_kb, sum(_status_kb(p, "VmRSS") for p in workers))
            self._stop.wait(self.interval)

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self._stop.set()
        self._thread.join()
        self.driver_peak_kb = _status_kb(self.me, "VmHWM")
        self.jvm_peak_kb = max([_status_kb(p, "VmHWM") for p in self._jvms()] or [0])
        return False

    def row(self, name: str, extra: str = "") -> str:
        mb = 1024.0
        return (f"{name:<34} {self.seconds:>8.1f} {self.driver_peak_kb / mb:>12.0f} {self.jvm_peak_kb / mb:>10.0f} "
                f"{self.workers_peak_kb / mb:>14.0f}  {extra}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--cols", type=int, default=20)
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--master", default="local[2]")
    args = ap.parse_args(argv)

    import numpy as np
    from pyspark.ml.feature import VectorAssembler
    from pyspark.sql import functions as F

    from sparkml_scale.classification import LogisticRegression
    from sparkml_scale.core.session import get_session
    from sparkml_scale.feature import PCA, FeatureHasher
    from sparkml_scale.regression import LinearRegression

    spark = get_session("scale-10m", master=args.master)
    driver_mem = spark.conf.get("spark.driver.memory", "1g")
    names = [f"x{j}" for j in range(args.cols)]
    beta = np.random.default_rng(0).normal(size=args.cols)
    base = spark.range(args.rows, numPartitions=args.partitions)
    feats = [F.randn(seed=j).alias(n) for j, n in enumerate(names)]
    df = base.select("id", *feats)
    margin = sum(float(b) * F.col(n) for b, n in zip(beta, names)) + F.randn(seed=999)
    df = df.withColumn("y", margin).withColumn("label", (F.col("y") > 0).cast("double"))
    data = VectorAssembler(inputCols=names, outputCol="features").transform(df)

    print(f"{args.rows:,} rows x {args.cols} features, {args.partitions} partitions, {args.master}, "
          f"spark.driver.memory={driver_mem} (driver JVM = executors in local mode)")
    print(f"{'stage':<34} {'seconds':>8} {'driver py MB':>12} {'JVM MB':>10} {'py workers MB':>14}")
    with MemoryWatch() as w:
        pca = PCA(k=5, inputCol="features", outputCol="pcs").fit(data)
    print(w.row("PCA(k=5) fit", f"method {pca.methodUsed}"))
    with MemoryWatch() as w:
        lin = LinearRegression(featuresCol="features", labelCol="y", regParam=0.01).fit(data)
    err = float(np.max(np.abs(lin.coefficients.toArray() - beta)))
    print(w.row("LinearRegression fit", f"max |coef - beta| {err:.4f}"))
    for solver in ("mapreduce", "allreduce"):
        with MemoryWatch() as w:
            lr = LogisticRegression(regParam=1e-4, maxIter=15, solver=solver).fit(data)
        print(w.row(f"LogisticRegression fit ({solver})",
                    f"{lr.summary.totalIterations} iterations, solver used {lr.summary.solverUsed}"))
    hashed_in = base.select(
        F.concat(F.lit("u"), (F.col("id") % 1000).cast("string")).alias("user"),
        F.concat(F.lit("p"), (F.col("id") % 100).cast("string")).alias("page"),
        F.concat(F.lit("d"), (F.col("id") % 10).cast("string")).alias("device"),
        (F.col("id") % 24).alias("hour"), F.randn(seed=5).alias("amount"))
    hasher = FeatureHasher(inputCols=["user", "page", "device", "hour", "amount"], categoricalCols=["hour"],
                           outputCol="features", numFeatures=1 << 18)
    with MemoryWatch() as w:
        hasher.transform(hashed_in).write.format("noop").mode("overwrite").save()
    print(w.row("FeatureHasher transform (noop write)", "2^18 features"))


if __name__ == "__main__":
    main()
