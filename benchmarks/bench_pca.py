"""PCA fit: sparkml_scale.feature.PCA vs pyspark.ml.feature.PCA, same SparkSession, same data.

    .venv/bin/python benchmarks/bench_pca.py [--size small|full] [--json PATH]
        [--cases fmnist,synthetic,flights] [--rows 1000000] [--repeat 3] [--master local[2]]
        [--driver-memory 10g]

``--size full`` (default) runs the sizes the targets are stated at (exact fit <= 0.15x
MLlib's on Fashion-MNIST and on 1,000,000 x 256) with ``--repeat 3`` (the first fit of a
case, on data the JVM has not run on yet, reads 25-50% slower); ``--size small``
(about 2 minutes) runs 200,000 synthetic rows, one fit each, and skips the flights
extras (tracemalloc fit, exact check).  ``--json PATH`` writes one report row per case
(``benchmarks.harness.result_row``).

Cases
- fmnist: Fashion-MNIST training images (60,000 x 784, pixel values 0..255 as
  float64; Debian package ``dataset-fashion-mnist``), ``k=10``, ``method="exact"``.
- synthetic: ``--rows`` x ``--cols`` (default 1,000,000 x 256) dense rows made in
  Spark (``mapInArrow`` + numpy, seeded per batch): a non-zero mean, plus a rank-10
  signal with standard deviations 20, 18, ..., 2 along orthonormal directions,
  plus isotropic noise (sd 0.5), so the top 10 components are well separated.
  ``k=10``, ``method="exact"``.
- flights: nycflights13 flights hashed by our FeatureHasher to 2^18 columns (sparse),
  ``k=10``, ``method="randomized"``.  MLlib is not run: its PCA (RowMatrix) refuses
  more than 65,535 columns.  Reports the number of passes over the data and the
  driver's peak memory during the fit (see the notes printed with it), and checks
  the result against our exact solver restricted to the non-zero columns
  (``method="auto"``, not timed in the table).

Each input is cached and counted before timing; both implementations are warmed up
on a tiny data set first (JVM code paths, Python workers).  A fit is timed with
``time.perf_counter`` around ``.fit(df)`` only; with ``--repeat`` > 1 the fits
alternate ours/MLlib and the best time is shown (all times in the detail lines).
``cpu s`` is the CPU time of the whole local process tree (driver, JVM, Python
workers) during the fit, steadier than wall time on a loaded machine.

The "floor" is what one process does with the data already in memory: numpy
``X.T @ X`` (the Gram matrix; BLAS ``syrk``, all cores) plus ``numpy.linalg.eigh``
on an in-memory float64 array of the same shape (Fashion-MNIST: the real pixels;
synthetic: uniform random values, which do not change the time).  Best of
``max(3, --repeat)`` runs.  It is a lower bound for an exact fit, not a competitor:
it skips reading, decoding and moving the data.  The "transfer alone" rows (no target) time,
in the same rounds, a job that moves the Gram pass's own input to Python (same columns, same
Arrow batches) and only counts the rows: what every exact fit of ours pays before any
arithmetic, as a fraction of MLlib's fit.

Parity (fmnist, synthetic): max |explainedVariance ours - MLlib| and max |pc ours -
pc MLlib| after matching each column's sign.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import statistics
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.harness import (add_report_args, proc_status_kb, process_tree_cpu, result_row,  # noqa: E402
                                spark_job_ids, write_rows)

HASH_INPUT = ["carrier", "origin", "dest", "month", "day_of_week", "hour", "distance"]
HASH_CATEGORICAL = ["month", "day_of_week", "hour"]
RANK = 10  # rank of the synthetic signal
NOISE_SD = 0.5

_HEADER = (f"{'case':<38} {'ours s':>8} {'MLlib s':>8} {'ratio':>7} {'floor s':>8} {'ours/floor':>10} "
           f"{'MLlib/floor':>11} {'ours cpu s':>10} {'MLlib cpu s':>11}")


# -- measurement helpers --------------------------------------------------------------------------
def _num(v, width: int, spec: str, suffix: str = "") -> str:
    """``v`` formatted right-aligned in ``width`` characters (``-`` when None/0)."""
    return f"{format(v, spec) + suffix:>{width}}" if v else f"{'-':>{width}}"


def timed_fit(est, df):
    """``(wall seconds, process-tree CPU seconds or None, model)`` of ``est.fit(df)``."""
    c0 = process_tree_cpu()
    t0 = time.perf_counter()
    model = est.fit(df)
    wall = time.perf_counter() - t0
    c1 = process_tree_cpu()
    return wall, (None if c0 is None or c1 is None else c1 - c0), model


def transfer_time(df) -> float:
    """Wall seconds of the Gram pass's input alone: the same columns and Arrow batches as
    ``gram_pass`` reads (the vectors' bytes through the package's JVM function, or
    ``vector_to_array`` where the session lacks it; batches of ~8 MB), into a ``mapInArrow`` that only
    counts rows, written to ``noop``: the JVM -> Python transfer every exact fit pays, with no
    BLAS, no reduction and no driver work (the floor of ours on this data path)."""
    import pyarrow as pa

    from sparkml_scale.core.gram import _batch_rows
    from sparkml_scale.core.training import TrainingColumns

    cols = TrainingColumns(features="features").probe(df)

    def rows(batches):
        n = 0
        for b in batches:
            n += b.num_rows
        yield pa.RecordBatch.from_arrays([pa.array([n], pa.int64())], names=["n"])

    with _batch_rows(df, cols):
        t0 = time.perf_counter()
        cols.select(df).mapInArrow(rows, "n long").write.format("noop").mode("overwrite").save()
        return time.perf_counter() - t0


def floor_time(X, repeat: int) -> float:
    """Best wall time of ``eigh(X.T @ X)`` on the in-memory array ``X``."""
    import numpy as np

    best = math.inf
    for _ in range(max(3, repeat)):
        t0 = time.perf_counter()
        G = X.T @ X
        np.linalg.eigh(G)
        best = min(best, time.perf_counter() - t0)
        del G
    return best


def _reset_hwm(pid: int) -> bool:
    """Reset the peak-RSS mark (VmHWM) of ``pid`` to its current RSS (Linux >= 4.0)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _jvm_pid():
    """Pid of the local Spark JVM (a child of this process named ``java``), or None."""
    from benchmarks.harness import proc_comm, proc_table

    _, children = proc_table()
    for pid in children.get(os.getpid(), []):
        if proc_comm(pid) == "java":
            return pid
    return None


class PeakRSS:
    """Peak resident memory of a process during a block: VmHWM reset before, read after."""

    def __init__(self, pid: int):
        self.pid = pid

    def __enter__(self):
        self.exact = _reset_hwm(self.pid)
        self.before = proc_status_kb(self.pid, "VmRSS")
        if not self.exact and self.pid == os.getpid():  # fall back to the lifetime peak
            import resource

            self.before_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc):
        self.peak = proc_status_kb(self.pid, "VmHWM")
        if not self.exact and self.pid == os.getpid():
            import resource

            self.after_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return False

    def describe(self) -> str:
        if self.before is None or self.peak is None:
            return "n/a"
        if self.exact:
            return (f"peak {self.peak / 1024:.0f} MiB (+{(self.peak - self.before) / 1024:.1f} MiB over "
                    f"{self.before / 1024:.0f} MiB before the fit)")
        if self.pid == os.getpid():
            return (f"lifetime peak ru_maxrss {self.before_max / 1024:.0f} -> {self.after_max / 1024:.0f} MiB "
                    "(could not reset the peak mark: only a rise above earlier peaks shows)")
        return "n/a (could not reset the peak mark)"


class PassCounter(logging.Handler):
    """Counts the randomized solver's per-pass INFO records (``PCA randomized: pass N``)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.passes = 0

    def emit(self, record):
        if "randomized: pass" in record.getMessage():
            self.passes += 1

    def __enter__(self):
        self.log = logging.getLogger("sparkml_scale.feature.pca")
        self.saved = (self.log.level, self.log.propagate)
        self.log.setLevel(logging.INFO)
        self.log.propagate = False
        self.log.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.log.removeHandler(self)
        self.log.setLevel(self.saved[0])
        self.log.propagate = self.saved[1]
        return False


def spark_jobs(spark, group: str, fn):
    """Run ``fn()`` under a Spark job group; return ``(result, number of Spark jobs it ran)``."""
    out, ids = spark_job_ids(spark, group, fn)
    return out, len(ids)


# -- data ----------------------------------------------------------------------------------------
def synthetic_spec(d: int, seed: int = 7):
    """Mean, orthonormal signal directions (d x RANK) and their standard deviations."""
    import numpy as np

    rng = np.random.default_rng(seed)
    mean = rng.uniform(-5.0, 5.0, d)
    A, _ = np.linalg.qr(rng.standard_normal((d, RANK)))
    sd = np.linspace(2.0 * RANK, 2.0, RANK)
    return mean, A, sd


def synthetic_df(spark, n: int, d: int, partitions: int, seed: int = 7):
    """``n`` x ``d`` dense ``features`` (VectorUDT): mean + (Z * sd) @ A.T + noise, made per
    Arrow batch with numpy (seeded by the batch's first id, no Python object per row)."""
    import numpy as np
    import pyarrow as pa
    from pyspark.ml.functions import array_to_vector

    mean, A, sd = synthetic_spec(d, seed)
    AT = np.ascontiguousarray((A * sd).T)  # RANK x d

    def gen(batches):
        for b in batches:
            ids = b.column(0).to_numpy()
            m = len(ids)
            if m == 0:
                continue
            rng = np.random.default_rng([seed, int(ids[0])])
            X = rng.standard_normal((m, RANK)) @ AT
            X += NOISE_SD * rng.standard_normal((m, d))
            X += mean
            offsets = pa.array(np.arange(0, (m + 1) * d, d, dtype=np.int32), type=pa.int32())
            arr = pa.ListArray.from_arrays(offsets, pa.array(X.ravel(), type=pa.float64()))
            yield pa.RecordBatch.from_arrays([arr], names=["x"])

    raw = spark.range(0, n, numPartitions=partitions).mapInArrow(gen, "x array<double>")
    return raw.select(array_to_vector("x").alias("features"))


def default_partitions(spark, n: int, d: int) -> int:
    """Enough partitions for every core twice, and no more than ~128 MiB of doubles each."""
    cores = spark.sparkContext.defaultParallelism
    p = max(2 * cores, math.ceil(n * d * 8 / (128 << 20)))
    return cores * math.ceil(p / cores)


def cache_count(df):
    df = df.cache()
    n = df.count()
    return df, n


# -- cases ---------------------------------------------------------------------------------------
def parity(ours, ref):
    import numpy as np

    ev = float(np.max(np.abs(ours.explainedVariance.toArray() - ref.explainedVariance.toArray())))
    A, B = ours.pc.toArray(), ref.pc.toArray()
    signs = np.sign(np.sum(A * B, axis=0))
    signs[signs == 0] = 1.0
    pc = float(np.max(np.abs(A - B * signs)))
    return ev, pc


def run_exact_case(name, df, X_floor, args, rows):
    """Time ours (exact) and MLlib on ``df``; floor on ``X_floor``; print a row, return a dict."""
    from pyspark.ml.feature import PCA as MLlibPCA

    from sparkml_scale.feature import PCA

    ours_est = PCA(k=args.k, inputCol="features", outputCol="pca", method="exact")
    ref_est = MLlibPCA(k=args.k, inputCol="features", outputCol="pca")
    ot, oc, rt, rc, tt = [], [], [], [], []
    ours = ref = None
    for _ in range(args.repeat):
        w, c, ours = timed_fit(ours_est, df)
        ot.append(w)
        oc.append(c)
        w, c, ref = timed_fit(ref_est, df)
        rt.append(w)
        rc.append(c)
        tt.append(transfer_time(df))
    fl = floor_time(X_floor, args.repeat) if X_floor is not None else None
    o, r = min(ot), min(rt)
    ocpu = statistics.median(oc) if None not in oc else None
    rcpu = statistics.median(rc) if None not in rc else None
    print(f"{name:<38} {o:>8.2f} {r:>8.2f} {o / r:>6.2f}x {_num(fl, 8, '.2f')} "
          f"{_num(fl and o / fl, 10, '.1f', 'x')} {_num(fl and r / fl, 11, '.1f', 'x')} "
          f"{_num(ocpu, 10, '.1f')} {_num(rcpu, 11, '.1f')}", flush=True)
    ev, pc = parity(ours, ref)
    print(f"  {name}: its input's Arrow transfer alone (no BLAS, no reduction) best {min(tt):.2f} s = "
          f"{min(tt) / r:.3f}x MLlib's fit", flush=True)
    rows.append(dict(name=name, ours_s=o, mllib_s=r, ratio=o / r, floor_s=fl, ours_times=ot, mllib_times=rt,
                     transfer_s=min(tt), transfer_times=tt,
                     ours_cpu=ocpu, mllib_cpu=rcpu, ev_diff=ev, pc_diff=pc, method_used=ours.methodUsed,
                     explained_variance=ours.explainedVariance.toArray().tolist()))
    return rows[-1]


def case_fmnist(spark, args, rows):
    from sparkml_scale.datasets import load_fashion_mnist

    X = load_fashion_mnist(path=args.fmnist_path)
    n, d = X.shape
    p = args.partitions or default_partitions(spark, n, d)
    df, cnt = cache_count(load_fashion_mnist(spark, path=args.fmnist_path).repartition(p))
    assert cnt == n, (cnt, n)
    r = run_exact_case(f"fmnist {n}x{d} exact k={args.k}", df, X, args, rows)
    r["input"] = f"{n} x {d}, {df.rdd.getNumPartitions()} partitions"
    df.unpersist()
    del X


def case_synthetic(spark, args, rows):
    import numpy as np

    n, d = args.rows, args.cols
    p = args.partitions or default_partitions(spark, n, d)
    df, cnt = cache_count(synthetic_df(spark, n, d, p))
    assert cnt == n, (cnt, n)
    X = np.random.default_rng(0).random((n, d))
    r = run_exact_case(f"synthetic {n}x{d} exact k={args.k}", df, X, args, rows)
    del X
    r["input"] = f"{n} x {d}, {df.rdd.getNumPartitions()} partitions"
    # the exact eigenvalues of the generating covariance, for reference
    _, _, sd = synthetic_spec(d)
    r["true_top_eigenvalues"] = (sd ** 2 + NOISE_SD ** 2).tolist()
    df.unpersist()


def case_flights(spark, args, rows):
    import numpy as np

    from sparkml_scale.datasets import load_flights
    from sparkml_scale.feature import PCA, FeatureHasher

    fh = FeatureHasher(inputCols=HASH_INPUT, categoricalCols=HASH_CATEGORICAL, outputCol="features")
    p = args.partitions or 2 * spark.sparkContext.defaultParallelism
    df, n = cache_count(fh.transform(load_flights(spark)).select("features").repartition(p))
    d = df.first()["features"].size
    est = PCA(k=args.k, inputCol="features", outputCol="pca", method="randomized")
    jvm = _jvm_pid()
    times, cpus = [], []
    for _ in range(args.repeat):
        jvm_mem = PeakRSS(jvm) if jvm is not None else contextlib.nullcontext()
        with PassCounter() as pcnt, PeakRSS(os.getpid()) as py_mem, jvm_mem:
            (w, c, model), jobs = spark_jobs(spark, "bench_pca_flights", lambda: timed_fit(est, df))
        times.append(w)
        cpus.append(c)
    cpu = statistics.median(cpus) if None not in cpus else None
    support = int(np.count_nonzero(model.mean.toArray()))  # hashed values are >= 0: non-zero mean <=> used column
    name = f"flights {n}x2^{int(math.log2(d))} randomized k={args.k}"
    print(f"{name:<38} {min(times):>8.2f} {'n/a':>8} {'-':>7} {'-':>8} {'-':>10} {'-':>11} "
          f"{_num(cpu, 10, '.1f')} {'-':>11}", flush=True)
    res = dict(name=name, ours_s=min(times), ours_times=times, ours_cpu=cpu, method_used=model.methodUsed,
               randomized_passes=pcnt.passes, spark_jobs=jobs, support=support,
               input=f"{n} x {d} (sparse), {df.rdd.getNumPartitions()} partitions",
               py_driver_rss=py_mem.describe(), jvm_rss=(jvm_mem.describe() if jvm is not None else "n/a"),
               explained_variance=model.explainedVariance.toArray().tolist())
    if args.tracemalloc:
        tracemalloc.start()
        est.fit(df)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        res["py_tracemalloc_peak_mib"] = peak / 2**20
    if args.check_flights:
        t0 = time.perf_counter()
        ref = PCA(k=args.k, inputCol="features", outputCol="pca", method="auto").fit(df)
        res["check_s"] = time.perf_counter() - t0
        ev, pcd = parity(model, ref)
        A, B = model.pc.toArray(), ref.pc.toArray()
        per_col = np.max(np.abs(A - B * np.where(np.sum(A * B, axis=0) < 0, -1.0, 1.0)), axis=0)
        res.update(ev_diff=ev, pc_diff=pcd, check_method=ref.methodUsed, pc_diff_per_component=per_col.tolist(),
                   eig_rel_diff=float(np.max(np.abs(model.eigenvalues - ref.eigenvalues) / np.abs(ref.eigenvalues))),
                   ref_eigenvalues=ref.eigenvalues.tolist())
    rows.append(res)
    df.unpersist()


def warm_up(spark):
    """Fit both implementations (exact and randomized paths) on a tiny set; numpy too."""
    import numpy as np
    from pyspark.ml.feature import PCA as MLlibPCA

    from sparkml_scale.feature import PCA

    tiny, _ = cache_count(synthetic_df(spark, 4000, 16, 2))
    PCA(k=3, inputCol="features", outputCol="pca", method="exact").fit(tiny)
    PCA(k=3, inputCol="features", outputCol="pca", method="randomized", maxIter=3).fit(tiny)
    MLlibPCA(k=3, inputCol="features", outputCol="pca").fit(tiny)
    tiny.unpersist()
    X = np.random.default_rng(0).random((2000, 64))
    np.linalg.eigh(X.T @ X)


def print_details(rows, args):
    print()
    for r in rows:
        print(f"{r['name']}: input {r['input']}, method used {r['method_used']}")
        if args.repeat > 1:
            print(f"    all ours times {['%.2f' % t for t in r['ours_times']]}"
                  + (f", MLlib {['%.2f' % t for t in r['mllib_times']]}" if "mllib_times" in r else ""))
        if "mllib_s" in r:
            print(f"    parity vs MLlib: max |explainedVariance diff| = {r['ev_diff']:.3e}, "
                  f"max |pc diff| (per-column sign matched) = {r['pc_diff']:.3e}")
        if "true_top_eigenvalues" in r:
            top = [round(v, 2) for v in r["true_top_eigenvalues"][:4]]
            print(f"    generating covariance: top eigenvalues {top}..., the other {args.cols - RANK} "
                  f"all {NOISE_SD ** 2} (noise)")
        if "randomized_passes" in r:
            print("    MLlib: not run -- pyspark.ml.feature.PCA (RowMatrix) refuses more than 65,535 columns "
                  "(here 2^18 = 262,144)")
            print(f"    passes over the data: 1 moments pass + {r['randomized_passes']} subspace-iteration passes "
                  f"(Spark jobs during the fit: {r['spark_jobs']}, incl. the first-row probe and tree reductions); "
                  f"non-zero columns |S| = {r['support']}")
            print(f"    Python driver process RSS during the fit: {r['py_driver_rss']}")
            print(f"    JVM (local mode: driver + executors) RSS during the fit: {r['jvm_rss']}")
            if "py_tracemalloc_peak_mib" in r:
                print(f"    Python driver allocations (tracemalloc, one extra untimed fit): peak "
                      f"{r['py_tracemalloc_peak_mib']:.2f} MiB")
            if "ev_diff" in r:
                print(f"    check vs our method='auto' ({r['check_method']} on the non-zero columns): "
                      f"max |explainedVariance diff| = {r['ev_diff']:.3e}, max relative eigenvalue diff = "
                      f"{r['eig_rel_diff']:.3e}, max |pc diff| = {r['pc_diff']:.3e}")
                print(f"      |pc diff| per component {' '.join('%.1e' % v for v in r['pc_diff_per_component'])}")
                print(f"      exact eigenvalues {' '.join('%.4g' % v for v in r['ref_eigenvalues'])}")
            print(f"    explainedVariance {' '.join('%.3g' % v for v in r['explained_variance'])}")


#: Largest |pc ours - pc MLlib| (per-column sign matched) and |explainedVariance diff| of a fair timing.
PARITY_TOL = 1e-8
#: The exact fit's promised ratio to MLlib's (Fashion-MNIST and 1M x 256).
EXACT_TARGET = 0.15


def report_rows(rows):
    """One :func:`benchmarks.harness.result_row` per case of ``rows`` (the detail dicts)."""
    out = []
    for r in rows:
        if "mllib_s" in r:
            ok = bool(r["pc_diff"] <= PARITY_TOL and r["ev_diff"] <= PARITY_TOL)
            out.append(result_row(
                r["name"], r["ours_s"], anchor="MLlib PCA", anchor_s=r["mllib_s"], target=EXACT_TARGET,
                check=f"pc max abs diff {r['pc_diff']:.1e} (1e-8)", check_ok=ok, numpy_floor_s=r["floor_s"],
                ev_max_abs_diff=r["ev_diff"], ours_times=r["ours_times"], mllib_times=r["mllib_times"],
                ours_cpu_s=r["ours_cpu"], mllib_cpu_s=r["mllib_cpu"], input=r.get("input")))
            if r.get("transfer_s"):  # the floor of ours: the Arrow transfer of the input, nothing else
                out.append(result_row(
                    f"{r['name']}: its input's Arrow transfer alone (the floor of ours)", r["transfer_s"],
                    anchor="MLlib PCA", anchor_s=r["mllib_s"], target=None,
                    check="same columns and batches as the Gram pass; rows counted, nothing computed",
                    transfer_times=r["transfer_times"]))
        else:  # flights: MLlib refuses 2^18 columns; the anchor is our exact solver on the support
            check = (f"pc max abs diff {r['pc_diff']:.1e} vs exact on the non-zero columns" if "pc_diff" in r
                     else "not checked (--size small / --no-check-flights)")
            out.append(result_row(
                r["name"], r["ours_s"], anchor="ours exact on the non-zero columns (MLlib refuses > 65,535 columns)",
                anchor_s=r.get("check_s", 0.0), target=None, check=check, check_ok=None, numpy_floor_s=None,
                ours_times=r["ours_times"], randomized_passes=r["randomized_passes"], input=r.get("input")))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="fmnist,synthetic,flights",
                    help="comma-separated subset of fmnist,synthetic,flights (run in this order)")
    ap.add_argument("--rows", type=int, default=None,
                    help="rows of the synthetic case (default 1,000,000; 200,000 with --size small)")
    ap.add_argument("--cols", type=int, default=256, help="columns of the synthetic case")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=None,
                    help="fits of each implementation per case, best time reported (default 3; 1 with --size small)")
    ap.add_argument("--partitions", type=int, default=None,
                    help="partitions of the cached inputs (default: 2 per core, <= ~128 MiB each)")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--driver-memory", default=os.environ.get("SPARKML_SCALE_DRIVER_MEMORY", "10g"),
                    help="spark.driver.memory (local mode: driver and executors in one JVM)")
    ap.add_argument("--fmnist-path", default=None, help="folder with train-images-idx3-ubyte.gz")
    ap.add_argument("--no-tracemalloc", dest="tracemalloc", action="store_false",
                    help="flights: skip the extra untimed fit under tracemalloc")
    ap.add_argument("--no-check-flights", dest="check_flights", action="store_false",
                    help="flights: skip the accuracy check against our exact solver on the non-zero columns")
    add_report_args(ap)
    args = ap.parse_args(argv)
    small = args.size == "small"
    if args.rows is None:
        args.rows = 200_000 if small else 1_000_000
    if args.repeat is None:
        args.repeat = 1 if small else 3
    if small:
        args.tracemalloc = args.check_flights = False
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    bad = set(cases) - {"fmnist", "synthetic", "flights"}
    if bad:
        ap.error(f"unknown case(s) {sorted(bad)}; choose from fmnist, synthetic, flights")
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    if args.fmnist_path is None:
        from sparkml_scale.datasets import FASHION_MNIST_PATH

        args.fmnist_path = FASHION_MNIST_PATH

    import numpy as np

    from sparkml_scale.core.session import get_session

    conf = {"spark.driver.memory": args.driver_memory}
    spark = get_session("bench_pca", master=args.master, conf=conf)
    try:
        try:
            from threadpoolctl import threadpool_info

            blas = ", ".join(f"{i.get('internal_api')} {i.get('num_threads')} threads" for i in threadpool_info())
        except ImportError:
            blas = "threadpoolctl not installed"
        print(f"master {args.master}, spark {spark.version}, driver memory {spark.conf.get('spark.driver.memory')}, "
              f"numpy {np.__version__} ({blas}), {os.cpu_count()} CPUs, repeat {args.repeat}", flush=True)
        t0 = time.perf_counter()
        warm_up(spark)
        print(f"warm-up done in {time.perf_counter() - t0:.1f} s", flush=True)
        print()
        print(_HEADER)
        print("-" * len(_HEADER), flush=True)
        rows = []
        for c in cases:
            {"fmnist": case_fmnist, "synthetic": case_synthetic, "flights": case_flights}[c](spark, args, rows)
        print_details(rows, args)
        print("\nratio = ours / MLlib (< 1: ours faster); floor = numpy eigh(X.T @ X) on an in-memory array "
              "of the same shape, in this process")
        report = report_rows(rows)
        write_rows(args.json, report)
        return report
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
