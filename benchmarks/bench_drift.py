"""DriftDetector / DriftModel.evaluate on 10M rows x 20 features vs Evidently (pandas) on the largest sample it
handles here: time, peak memory, Spark jobs per report (issue 21).

    .venv/bin/python benchmarks/bench_drift.py [--rows 10000000] [--features 20] [--data-dir DIR]
        [--evidently-max-rows N] [--evidently-sizes 100000,300000,...] [--time-limit 600] [--mem-limit-gb 12]
        [--agreement-rows 1000000] [--skip-evidently] [--master local[2]] [--quick] [--out out.json]

Anchor: Evidently 0.7.x (``evidently.Report([DataDriftPreset()])`` on pandas), installed in its own venv,
``benchmarks/.venv-evidently`` (gitignored), never in the project's::

    python3.11 -m venv benchmarks/.venv-evidently
    benchmarks/.venv-evidently/bin/pip install -r benchmarks/requirements-evidently.txt

(the script runs these two commands itself when that venv is missing; ``--evidently-python`` names another
interpreter).  Evidently 0.7.x fails to import under pandas 3 (``infer_dtype_from_object``), hence ``pandas<3``.
Evidently runs in a subprocess of that interpreter (this file with ``--evidently-worker``; it imports nothing of
the project), with ``DO_NOT_TRACK=1`` (no telemetry).

Data (generated once, seeded, with numpy + pyarrow 1M rows at a time, cached under ``--data-dir``, default
``/tmp/sparkml_scale_bench_drift/rows<N>_seed<S>``): a *reference* and a *current* part of ``--rows`` rows each,
each a folder of Parquet files (1M rows a file, in ``id`` order), columns ``id`` (row number in the part) and
20 features -- 14 numeric (normal, shifted normal, lognormal, exponential, uniform, Student t(3), gamma, beta,
bimodal mixture, Poisson counts, normal with 5% NaN, zero-inflated lognormal, Pareto, Laplace) and 6 string
categoricals with 5, 10, 20 (2% null), 50, 100 and 200 Zipf-distributed categories.  In the current part
``x00`` has a mean shift (+0.3 sd), ``x01`` a variance change (sd x 1.5), ``x03`` a small scale change (x 1.05),
``c00`` and ``c03`` changed category shares; the other 15 features have the same distribution in both parts.
``--features F`` monitors the first F of ``x00, c00, x01, c01, ..., c05, x06, ..., x13`` (F = 2: one numeric, one
categorical).

Ours: ``DriftDetector(inputCols=...).fit(reference)`` then ``model.evaluate(current)`` (default params) on a
``--master`` session (UI off, classic, not Connect), reading the Parquet folders (nothing cached, so each pass
includes the Parquet scan).  Per call: wall seconds, Spark jobs (``sc.setJobGroup`` +
``statusTracker().getJobIdsForGroup``) and their stages, and peak memory from Linux ``/proc``: ``VmHWM`` of the
driver's Python process and of the JVM (reset with ``clear_refs`` before each call; in local mode the JVM is the
driver *and* the executors) and the largest total RSS of the Python workers (sampled every 0.2 s) -- the
``MemoryWatch`` of ``benchmarks/scale_10m.py``; the JVM's heap does not shrink after a call, so its "peak" is
at least what earlier calls left resident).  Fit and evaluate run at ``--features`` and at 2 features (same
rows) to show that the job count does not depend on the number of features (issue target: at most 3 jobs).

Evidently: for N in ``--evidently-sizes`` (default 100k, 300k, 1M, 3M, 10M, up to ``--evidently-max-rows`` and
``--rows``), the child reads the rows ``id < N`` of both parts with pyarrow into pandas (strings as ``object``,
what ``pandas.read_parquet`` gives; ``--evidently-strings category`` for ``category`` dtype) and runs
``Report([DataDriftPreset()]).run(current, reference)`` with a ``DataDefinition`` naming the numeric and
categorical columns (its defaults above 1000 rows: normed Wasserstein distance for numeric columns,
Jensen-Shannon distance for categorical ones).  The ladder stops at the first N that fails, that runs past
``--time-limit`` seconds or whose RSS (sampled every 0.2 s) passes ``--mem-limit-gb`` (the child is killed);
An N whose time or RSS, extrapolated linearly from the last N that finished, would pass a limit is not run
(reported as such with the prediction; ``--no-predict`` runs it anyway, up to the limit).  "Largest N" is the
last that finished.  The preset computes each column's drift three times (its ``ValueDrift`` metrics, the
legacy ``DataDriftTable`` and ``DatasetDriftMetric``) and renders plotly figures for every column: that is
what a user of the preset pays, so it is timed as it is.  Measured: load seconds (Parquet -> pandas), report seconds
(``Report.run``), RSS after loading, and the child's peak RSS (``ru_maxrss`` from ``wait4``).

Agreement (``--agreement-rows`` A, default min(1M, ``--rows``, Evidently's largest N)): ours (``maxCategories=256`` so
that every category has its own bin, as in Evidently) and an Evidently report of per-column ``ValueDrift``
metrics matching our tests (numeric: ``psi``, ``ks``; categorical: ``psi``, ``jensenshannon``, ``chisquare``)
on the same rows ``id < A``; the child also computes ``scipy.stats.ks_2samp``'s statistic (Evidently's KS
calls it and keeps only the p-value).  What to expect:

- categorical PSI: same bins (one per category) and the same formula: equal up to the handling of empty bins
  (ours floors proportions at 1e-6, Evidently fills zeros differently) and of nulls (ours: a missing bin,
  Evidently drops nulls);
- categorical JS: ours is base 2, Evidently's natural log (``scipy.spatial.distance.jensenshannon`` default):
  ours = Evidently's / sqrt(ln 2) (the JSON and table show Evidently's converted);
- numeric PSI: *not* comparable bin for bin: ours uses 10 reference-quantile bins (+ a missing bin), Evidently
  equal-width bins over the combined range (``np.histogram_bin_edges(..., "sturges")``, ~21 bins at 1M), so
  the values differ (heavy tails put most rows in one Evidently bin);
- KS: ours is ``D_grid`` with a bound, ``D_grid <= D <= D_grid + ksErrorBound``; checked against the exact
  ``D`` of ``ks_2samp``; p-values: ours the asymptotic Kolmogorov p of ``D_grid``, Evidently ``ks_2samp``'s
  (exact method below 10k rows, asymptotic above);
- chi-square: ours is the test of homogeneity (``chi2_contingency``), Evidently's a goodness-of-fit test of
  the current counts against the reference proportions (``scipy.stats.chisquare``): different p-values.

Order: the Evidently ladder runs first, before Spark starts; then ours (agreement sample, then the full runs);
Spark stops before the matched Evidently report.  Ratios are ours / Evidently (< 1: ours is faster or smaller); "per row" divides by the rows of one part
(reference and current have N rows each in both).  The load average is printed at the start and the end:
other programs on the machine make the timings noisy.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
EVIDENTLY_VENV = os.path.join(HERE, ".venv-evidently")
if ROOT not in sys.path:  # run as a script, also by the Evidently venv (--evidently-worker)
    sys.path.insert(0, ROOT)
from benchmarks.harness import add_report_args, result_row, write_rows, proc_status_kb, spark_job_ids  # noqa: E402 - stdlib only
EVIDENTLY_REQUIREMENTS = os.path.join(HERE, "requirements-evidently.txt")

#: issue target: Spark jobs per fit / evaluate, whatever the number of features
JOBS_TARGET = 3
CHUNK = 1_000_000
SEED = 21
NUMERIC = [f"x{j:02d}" for j in range(14)]
CATEGORICAL = [f"c{j:02d}" for j in range(6)]
CARDINALITY = {"c00": 5, "c01": 10, "c02": 20, "c03": 50, "c04": 100, "c05": 200}
#: monitored-feature order: --features F takes the first F
ORDER = [v for pair in zip(NUMERIC[:6], CATEGORICAL) for v in pair] + NUMERIC[6:]
DRIFTED = ["x00", "x01", "x03", "c00", "c03"]
DEFAULT_SIZES = [100_000, 300_000, 1_000_000, 3_000_000, 10_000_000]
QUICK = {"rows": 200_000, "evidently_sizes": "50000,200000", "agreement_rows": 200_000}


# ---------------------------------------------------------------------------------------------- data
def _zipf(k: int, a: float):
    import numpy as np

    p = 1.0 / np.arange(1, k + 1) ** a
    return p / p.sum()


def _chunk(part: str, start: int, n: int, seed: int):
    """Rows ``start .. start + n - 1`` of ``part`` ("reference" or "current") as a pyarrow Table."""
    import numpy as np
    import pyarrow as pa

    cur = part == "current"
    rng = np.random.default_rng([seed, int(cur), start // CHUNK])
    cols = {"id": pa.array(np.arange(start, start + n, dtype=np.int64))}
    x = {}
    x["x00"] = rng.normal(0.3 if cur else 0.0, 1.0, n)                       # mean shift
    x["x01"] = rng.normal(5.0, 3.0 if cur else 2.0, n)                       # variance change
    x["x02"] = rng.lognormal(0.0, 0.75, n)
    x["x03"] = rng.exponential(2.0 * (1.05 if cur else 1.0), n)              # small scale change
    x["x04"] = rng.uniform(-1.0, 1.0, n)
    x["x05"] = rng.standard_t(3, n)
    x["x06"] = rng.gamma(2.0, 1.5, n)
    x["x07"] = rng.beta(2.0, 5.0, n)
    mix = rng.random(n) < 0.6
    x["x08"] = np.where(mix, rng.normal(-2.0, 1.0, n), rng.normal(3.0, 0.5, n))
    x["x09"] = rng.poisson(3.0, n).astype(np.float64)
    v = rng.normal(10.0, 2.0, n)
    v[rng.random(n) < 0.05] = np.nan
    x["x10"] = v
    x["x11"] = np.where(rng.random(n) < 0.7, 0.0, rng.lognormal(1.0, 1.0, n))
    x["x12"] = rng.pareto(3.0, n) + 1.0
    x["x13"] = rng.laplace(0.0, 1.0, n)
    for c in NUMERIC:
        cols[c] = pa.array(x[c], pa.float64())
    for c in CATEGORICAL:
        k = CARDINALITY[c]
        p = _zipf(k, 1.1)
        if cur and c == "c00":
            p = np.array([0.30, 0.25, 0.20, 0.15, 0.10])[:k]                  # share change
        if cur and c == "c03":
            p = _zipf(k, 0.9)                                                 # flatter shares
        codes = rng.choice(k, size=n, p=p / p.sum()).astype(np.int32)
        mask = (rng.random(n) < 0.02) if c == "c02" else None
        names = pa.array([f"{c}_v{i:03d}" for i in range(k)], pa.string())
        arr = pa.DictionaryArray.from_arrays(pa.array(codes, mask=mask), names).cast(pa.string())
        cols[c] = arr
    return pa.table(cols)


def ensure_data(data_dir: str, rows: int, seed: int) -> dict:
    """Generate both parts under ``data_dir`` unless a matching ``meta.json`` is there."""
    import pyarrow.parquet as pq

    meta_path = os.path.join(data_dir, "meta.json")
    want = {"rows": rows, "seed": seed, "chunk": CHUNK, "version": 1}
    if os.path.exists(meta_path):
        with open(meta_path) as fh:
            meta = json.load(fh)
        if {k: meta.get(k) for k in want} == want:
            print(f"data: cached in {data_dir} (generated in {meta['seconds']:.0f} s)", flush=True)
            return meta
    t0 = time.perf_counter()
    for part in ("reference", "current"):
        folder = os.path.join(data_dir, part)
        os.makedirs(folder, exist_ok=True)
        for f in os.listdir(folder):
            os.remove(os.path.join(folder, f))
        for i, start in enumerate(range(0, rows, CHUNK)):
            t = _chunk(part, start, min(CHUNK, rows - start), seed)
            pq.write_table(t, os.path.join(folder, f"part-{i:05d}.parquet"), row_group_size=131072)
    meta = dict(want, seconds=time.perf_counter() - t0,
                bytes=sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(data_dir) for f in fs))
    with open(meta_path, "w") as fh:
        json.dump(meta, fh)
    print(f"data: generated {rows:,} + {rows:,} rows in {meta['seconds']:.0f} s, {meta['bytes'] / 2**30:.2f} GiB "
          f"of Parquet in {data_dir}", flush=True)
    return meta


# ---------------------------------------------------------------------------------------------- ours
def spark_jobs(spark, group: str, fn):
    """``(result, job ids, stage count)`` of ``fn()`` run under a Spark job group."""
    out, ids = spark_job_ids(spark, group, fn)
    tracker = spark.sparkContext.statusTracker()
    stages = 0
    for j in ids:
        info = tracker.getJobInfo(j)
        stages += len(info.stageIds) if info is not None else 0
    return out, ids, stages


def run_ours(spark, data_dir: str, features, tag: str, where_rows=None, **params):
    from pyspark.sql import functions as F

    from benchmarks.scale_10m import MemoryWatch
    from sparkml_scale.monitoring.drift import DriftDetector

    ref = spark.read.parquet(os.path.join(data_dir, "reference"))
    cur = spark.read.parquet(os.path.join(data_dir, "current"))
    if where_rows is not None:
        ref, cur = ref.where(F.col("id") < where_rows), cur.where(F.col("id") < where_rows)
    det = DriftDetector(inputCols=list(features), **params)
    out = {"features": len(features), "rows": where_rows, "params": params}
    with MemoryWatch() as w:
        model, ids, stages = spark_jobs(spark, f"{tag}-fit", lambda: det.fit(ref))
    out["fit"] = _mem(w, ids, stages)
    with MemoryWatch() as w:
        report, ids, stages = spark_jobs(spark, f"{tag}-evaluate", lambda: model.evaluate(cur))
    out["evaluate"] = _mem(w, ids, stages)
    out["reference_count"] = model.referenceCount
    table = report.toPandas()
    out["report"] = json.loads(table.to_json(orient="records"))
    out["drifted"] = report.drifted
    return out


def _mem(w, ids, stages) -> dict:
    return {"seconds": w.seconds, "jobs": len(ids), "job_ids": ids, "stages": stages,
            "driver_py_peak_mb": w.driver_peak_kb / 1024, "jvm_peak_mb": w.jvm_peak_kb / 1024,
            "py_workers_peak_mb": w.workers_peak_kb / 1024}


# ---------------------------------------------------------------------------------------------- evidently
def ensure_evidently(python: str) -> str:
    if os.path.exists(python):
        return python
    if python != os.path.join(EVIDENTLY_VENV, "bin", "python"):
        raise SystemExit(f"--evidently-python {python} does not exist")
    base = getattr(sys, "_base_executable", None) or sys.executable
    print(f"creating {EVIDENTLY_VENV}: {base} -m venv, then pip install -r {EVIDENTLY_REQUIREMENTS}", flush=True)
    subprocess.run([base, "-m", "venv", EVIDENTLY_VENV], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "-r", EVIDENTLY_REQUIREMENTS], check=True)
    return python


def _status_kb(pid: int, key: str) -> int:
    return proc_status_kb(pid, key) or 0


def run_evidently(python: str, spec: dict, time_limit: float, mem_limit_kb: int, tmp: str) -> dict:
    """One Evidently child: ``spec`` -> its JSON result, plus status, wall seconds and peak RSS (``wait4``)."""
    tag = f"{spec['mode']}_{spec['rows']}"
    spec = dict(spec, out=os.path.join(tmp, f"ev_{tag}.json"))
    spec_path = os.path.join(tmp, f"ev_{tag}_spec.json")
    with open(spec_path, "w") as fh:
        json.dump(spec, fh)
    log_path = os.path.join(tmp, f"ev_{tag}.log")
    env = dict(os.environ, DO_NOT_TRACK="1", EVIDENTLY_DISABLE_TELEMETRY="1")
    env.pop("PYTHONPATH", None)
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([python, os.path.abspath(__file__), "--evidently-worker", spec_path],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    status, peak_seen, rusage = "ok", 0, None
    while True:
        pid, wstatus, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(wstatus)
            rusage = ru
            break
        rss = _status_kb(proc.pid, "VmRSS")
        peak_seen = max(peak_seen, rss)
        if rss > mem_limit_kb and status == "ok":
            status = "memory limit"
            proc.kill()
        elif time.perf_counter() - t0 > time_limit and status == "ok":
            status = "time limit"
            proc.kill()
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    out = {"rows": spec["rows"], "mode": spec["mode"], "status": status, "wall_s": wall,
           "peak_rss_mb": rusage.ru_maxrss / 1024, "peak_rss_sampled_mb": peak_seen / 1024,
           "returncode": proc.returncode}
    if status == "ok" and proc.returncode != 0:
        out["status"] = f"failed (exit {proc.returncode})"
    if out["status"] == "ok":
        with open(spec["out"]) as fh:
            out.update(json.load(fh))
    else:
        with open(log_path) as fh:
            out["log_tail"] = fh.read()[-3000:]
    return out


def evidently_worker(spec_path: str) -> None:
    """Runs under the Evidently venv: read rows ``id < N`` of both parts, run the report, write JSON."""
    import resource

    import numpy as np
    import pyarrow.dataset as ds

    with open(spec_path) as fh:
        spec = json.load(fh)
    num, cat, n = spec["numeric"], spec["categorical"], spec["rows"]
    t0 = time.perf_counter()
    frames = []
    for part in ("reference", "current"):
        table = ds.dataset(os.path.join(spec["data"], part), format="parquet").to_table(
            columns=num + cat, filter=ds.field("id") < n)
        df = table.to_pandas()
        del table
        if spec["strings"] == "category":
            for c in cat:
                df[c] = df[c].astype("category")
        frames.append(df)
    ref, cur = frames
    load_s = time.perf_counter() - t0
    rss_loaded = _status_kb(os.getpid(), "VmRSS")

    import evidently
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    dd = DataDefinition(numerical_columns=num, categorical_columns=cat)
    if spec["mode"] == "preset":
        metrics = [DataDriftPreset()]
    else:
        metrics = [ValueDrift(column=c, method=m) for c in num for m in ("psi", "ks")]
        metrics += [ValueDrift(column=c, method=m) for c in cat for m in ("psi", "jensenshannon", "chisquare")]
    t0 = time.perf_counter()
    snapshot = Report(metrics).run(current_data=Dataset.from_pandas(cur, data_definition=dd),
                                   reference_data=Dataset.from_pandas(ref, data_definition=dd))
    d = snapshot.dict()
    report_s = time.perf_counter() - t0
    values = {}
    for m in d["metrics"]:
        cfg = m.get("config", {})
        if cfg.get("column") is not None:
            values.setdefault(cfg["column"], {})[cfg.get("method")] = m["value"]
        else:
            values.setdefault("_dataset", {})[m["metric_name"]] = m["value"]
    out = {"load_s": load_s, "report_s": report_s, "rss_after_load_mb": rss_loaded / 1024,
           "maxrss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "evidently": evidently.__version__, "pandas": __import__("pandas").__version__, "values": values}
    if spec["mode"] == "matched":
        from scipy.stats import ks_2samp

        ks = {}
        for c in num:
            r = ref[c].to_numpy(dtype=np.float64)
            k = cur[c].to_numpy(dtype=np.float64)
            res = ks_2samp(r[~np.isnan(r)], k[~np.isnan(k)])
            ks[c] = {"statistic": float(res.statistic), "pvalue": float(res.pvalue)}
        out["scipy_ks"] = ks
    with open(spec["out"], "w") as fh:
        json.dump(out, fh, default=float)


# ---------------------------------------------------------------------------------------------- agreement
def agreement(ours: dict, ev: dict, numeric, categorical) -> list:
    rows = {r["feature"]: r for r in ours["report"]}
    out = []
    js_scale = 1.0 / math.sqrt(math.log(2.0))
    for c in numeric:
        r, v, k = rows[c], ev["values"].get(c, {}), ev.get("scipy_ks", {}).get(c, {})
        d = k.get("statistic", math.nan)
        inside = r["ksStatistic"] - 1e-12 <= d <= r["ksStatistic"] + r["ksErrorBound"] + 1e-12
        out.append({"feature": c, "kind": "numeric", "ours_psi": r["psi"], "ev_psi": v.get("psi"),
                    "ours_ks_d": r["ksStatistic"], "ours_ks_bound": r["ksErrorBound"], "scipy_ks_d": d,
                    "d_within_bound": bool(inside), "ours_ks_p": r["ksPValue"], "ev_ks_p": v.get("ks"),
                    "drifted_truth": c in DRIFTED})
    for c in categorical:
        r, v = rows[c], ev["values"].get(c, {})
        js = v.get("jensenshannon")
        out.append({"feature": c, "kind": "categorical", "ours_psi": r["psi"], "ev_psi": v.get("psi"),
                    "ours_js": r["jsDistance"], "ev_js_base2": None if js is None else js * js_scale,
                    "ours_chi2_p": r["chi2PValue"], "ev_chi2_p": v.get("chisquare"), "drifted_truth": c in DRIFTED})
    return out


def _f(v, fmt=".4g"):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def print_agreement(rows, n) -> None:
    print(f"\nagreement on the same {n:,} + {n:,} rows (ours maxCategories=256; Evidently ValueDrift per column; "
          "JS: Evidently's converted to base 2; numeric PSI: different bins, not comparable)")
    print(f"{'feature':<8} {'drift':>5} {'ours psi':>10} {'ev psi':>10} {'ours D':>9} {'+bound':>8} {'scipy D':>9} "
          f"{'in':>3} {'ours ks p':>10} {'ev ks p':>10} {'ours js':>9} {'ev js':>9} {'ours chi2 p':>11} "
          f"{'ev chi2 p':>10}")
    for r in rows:
        print(f"{r['feature']:<8} {'yes' if r['drifted_truth'] else 'no':>5} {_f(r['ours_psi']):>10} "
              f"{_f(r['ev_psi']):>10} {_f(r.get('ours_ks_d')):>9} {_f(r.get('ours_ks_bound'), '.2g'):>8} "
              f"{_f(r.get('scipy_ks_d')):>9} {('ok' if r.get('d_within_bound') else 'NO') if 'ours_ks_d' in r else '-':>3} "
              f"{_f(r.get('ours_ks_p'), '.3g'):>10} {_f(r.get('ev_ks_p'), '.3g'):>10} {_f(r.get('ours_js')):>9} "
              f"{_f(r.get('ev_js_base2')):>9} {_f(r.get('ours_chi2_p'), '.3g'):>11} {_f(r.get('ev_chi2_p'), '.3g'):>10}")


# ---------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, help="rows of each part, reference and current (default 10,000,000)")
    ap.add_argument("--features", type=int, default=20, help="monitored features, 2..20 (default 20)")
    ap.add_argument("--data-dir", default=None, help="cache folder of the generated Parquet data")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--evidently-max-rows", type=int, default=None, help="largest Evidently N tried")
    ap.add_argument("--evidently-sizes", default=None, help="comma-separated Evidently N ladder")
    ap.add_argument("--evidently-strings", choices=("object", "category"), default="object")
    ap.add_argument("--evidently-python", default=os.path.join(EVIDENTLY_VENV, "bin", "python"))
    ap.add_argument("--time-limit", type=float, default=600.0, help="seconds per Evidently run (default 600)")
    ap.add_argument("--mem-limit-gb", type=float, default=12.0, help="RSS limit per Evidently run (default 12)")
    ap.add_argument("--no-predict", action="store_true",
                    help="run every Evidently N (default: skip an N whose time or RSS, extrapolated linearly from "
                         "the last N that finished, passes a limit)")
    ap.add_argument("--agreement-rows", type=int, default=None, help="rows of each part in the agreement check "
                    "(default min(1M, --rows))")
    ap.add_argument("--skip-evidently", action="store_true")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()) + " (unless given)")
    ap.add_argument("--out", default=None, help="JSON output path (the whole results)")
    add_report_args(ap, default_size="full")
    ap.add_argument("--evidently-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.evidently_worker:
        evidently_worker(args.evidently_worker)
        return 0
    if args.quick or args.size == "small":
        for k, v in QUICK.items():
            if getattr(args, k) is None:
                setattr(args, k, v)
    if args.rows is None:
        args.rows = 10_000_000
    if not 2 <= args.features <= len(ORDER):
        ap.error(f"--features must be in 2..{len(ORDER)}")
    if args.data_dir is None:
        args.data_dir = os.path.join(tempfile.gettempdir(), "sparkml_scale_bench_drift",
                                     f"rows{args.rows}_seed{args.seed}")
    sizes = ([int(s) for s in args.evidently_sizes.split(",")] if isinstance(args.evidently_sizes, str)
             else DEFAULT_SIZES)
    cap = min(args.rows, args.evidently_max_rows or args.rows)
    sizes = sorted({s for s in sizes if s <= cap})

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    load0 = os.getloadavg()
    print(f"{os.cpu_count()} cores, master {args.master}, load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}",
          flush=True)
    results = {"args": vars(args), "cores": os.cpu_count(), "load_average_start": load0}
    results["data"] = ensure_data(args.data_dir, args.rows, args.seed)
    evpy = None if args.skip_evidently else ensure_evidently(args.evidently_python)

    features = ORDER[: args.features]
    num = [c for c in features if c in NUMERIC]
    cat = [c for c in features if c in CATEGORICAL]
    tmp = tempfile.mkdtemp(prefix="bench_drift_")
    mem_kb = int(args.mem_limit_gb * 2**20)
    base = {"data": args.data_dir, "numeric": num, "categorical": cat, "strings": args.evidently_strings}

    # 1. the Evidently ladder, before Spark starts (the whole machine for it)
    ev_runs = []
    if evpy is not None:
        for n in sizes:
            prev = next((r for r in reversed(ev_runs) if r["status"] == "ok"), None)
            if prev is not None and not args.no_predict:
                # linear extrapolation from the last N that finished: skip an N bound to pass a limit
                scale = n / prev["rows"]
                pred_s = (prev["load_s"] + prev["report_s"]) * scale
                pred_mb = prev["peak_rss_mb"] * scale
                if pred_s > args.time_limit or pred_mb > args.mem_limit_gb * 1024:
                    r = {"rows": n, "mode": "preset", "wall_s": 0.0, "peak_rss_mb": 0.0, "peak_rss_sampled_mb": 0.0,
                         "predicted_s": pred_s, "predicted_rss_mb": pred_mb,
                         "status": f"not run: predicted {pred_s:.0f} s, {pred_mb / 1024:.1f} GiB (limits "
                                   f"{args.time_limit:.0f} s, {args.mem_limit_gb:g} GiB; --no-predict runs it)"}
                    ev_runs.append(r)
                    print(f"Evidently DataDriftPreset on {n:,} rows: {r['status']}", flush=True)
                    break
            r = run_evidently(evpy, dict(base, rows=n, mode="preset"), args.time_limit, mem_kb, tmp)
            ev_runs.append(r)
            if r["status"] != "ok":
                print(f"Evidently DataDriftPreset on {n:,} rows: {r['status']} after {r['wall_s']:.0f} s, "
                      f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
                if r["status"].startswith("failed"):
                    print(r.get("log_tail", ""))
                break
            print(f"Evidently DataDriftPreset on {n:,} rows: load {r['load_s']:.1f} s, report {r['report_s']:.1f} s, "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
        results["evidently"] = ev_runs
    ev_ok = [r for r in ev_runs if r["status"] == "ok"]
    a_rows = args.agreement_rows or min([1_000_000, args.rows] + [r["rows"] for r in ev_ok[-1:]])

    # 2. ours (agreement sample first: it also warms up the JVM and the Python workers)
    from sparkml_scale.core.session import get_session

    spark = get_session("bench_drift", master=args.master, conf={"spark.ui.enabled": "false"})
    import pyspark

    results["pyspark"] = pyspark.__version__
    ours_runs = {}
    try:
        if ev_ok:
            t0 = time.perf_counter()
            ours_runs["agreement"] = run_ours(spark, args.data_dir, features, "agree", where_rows=a_rows,
                                              maxCategories=256)
            print(f"ours on {a_rows:,} rows (agreement, maxCategories=256): "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
        else:  # warm-up (JVM, Python workers), untimed
            run_ours(spark, args.data_dir, features, "warmup", where_rows=min(10_000, args.rows))
        for f in sorted({args.features, 2}, reverse=True):
            r = run_ours(spark, args.data_dir, ORDER[:f], f"drift{f}")
            ours_runs[f"features_{f}"] = r
            print(f"ours {f} features, {args.rows:,} rows: fit {r['fit']['seconds']:.1f} s ({r['fit']['jobs']} jobs), "
                  f"evaluate {r['evaluate']['seconds']:.1f} s ({r['evaluate']['jobs']} jobs); drifted {r['drifted']}",
                  flush=True)
    finally:
        spark.stop()
    results["ours"] = ours_runs

    # 3. Evidently's per-column metrics matching our tests, on the agreement sample
    if ev_ok:
        ev_a = run_evidently(evpy, dict(base, rows=a_rows, mode="matched"), args.time_limit, mem_kb, tmp)
        results["evidently_matched"] = ev_a
        if ev_a["status"] == "ok":
            results["agreement"] = agreement(ours_runs["agreement"], ev_a, num, cat)
        else:
            print(f"Evidently matched report on {a_rows:,} rows: {ev_a['status']}")
    results["summary"] = summarize(results, args)
    results["load_average_end"] = os.getloadavg()
    print_summary(results, args)
    if "agreement" in results:
        print_agreement(results["agreement"], a_rows)
    le = results["load_average_end"]
    print(f"\nload average at the start {load0[0]:.2f}, at the end {le[0]:.2f} {le[1]:.2f} {le[2]:.2f} "
          "(other programs' load makes the timings noisy)")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1, default=str)
        print(f"wrote {args.out}")
    write_rows(args.json, report_rows(results, args))
    return 0


def report_rows(results: dict, args) -> list:
    """The rows of the common benchmark report (``python -m benchmarks``): seconds per million rows,
    ours (``--rows``) against Evidently's ``DataDriftPreset`` at the largest N it finished."""
    s = results["summary"]
    o = s["ours"]
    main_run = results["ours"][f"features_{args.features}"]
    found = sorted(main_run["drifted"])
    planted = {c for c in DRIFTED if c in ORDER[: args.features]}
    others = sorted(set(found) - planted)
    ok = planted <= set(found)  # every planted drift found; a false alarm is reported, not failed
    check = (f"ours found {len(planted & set(found))} of {len(planted)} planted drifts, flagged {len(others)} other(s)"
             + (f" ({', '.join(others)})" if others else "") + f"; Spark jobs {s['jobs_target']['max_jobs']}")
    if "evidently" not in s:
        return []
    e = s["evidently"]
    return [result_row(f"drift fit + evaluate, {args.features} features, s per 1M rows "
                       f"(ours {o['rows']:,}, Evidently {e['largest_rows']:,} rows)",
                       o["total_s"] / o["rows"] * 1e6, "Evidently DataDriftPreset (pandas)",
                       e["total_s"] / e["largest_rows"] * 1e6, check=check, check_ok=ok,
                       driver_peak_ratio=s["ratios"]["driver_py_peak_vs_evidently_peak"])]


def summarize(results: dict, args) -> dict:
    s = {}
    main_run = results["ours"][f"features_{args.features}"]
    fit, ev = main_run["fit"], main_run["evaluate"]
    n = args.rows
    ours_s = fit["seconds"] + ev["seconds"]
    s["ours"] = {"rows": n, "features": args.features, "fit_s": fit["seconds"], "evaluate_s": ev["seconds"],
                 "total_s": ours_s, "rows_per_s": n / ours_s,
                 "driver_py_peak_mb": max(fit["driver_py_peak_mb"], ev["driver_py_peak_mb"]),
                 "jvm_peak_mb": max(fit["jvm_peak_mb"], ev["jvm_peak_mb"]),
                 "py_workers_peak_mb": max(fit["py_workers_peak_mb"], ev["py_workers_peak_mb"])}
    s["ours"]["all_processes_peak_mb"] = (s["ours"]["driver_py_peak_mb"] + s["ours"]["jvm_peak_mb"]
                                          + s["ours"]["py_workers_peak_mb"])
    s["jobs"] = {f: {"fit": r["fit"]["jobs"], "evaluate": r["evaluate"]["jobs"], "fit_stages": r["fit"]["stages"],
                     "evaluate_stages": r["evaluate"]["stages"]}
                 for f, r in results["ours"].items() if f.startswith("features_")}
    jobs = [v["fit"] for v in s["jobs"].values()] + [v["evaluate"] for v in s["jobs"].values()]
    same = len({(v["fit"], v["evaluate"]) for v in s["jobs"].values()}) == 1
    s["jobs_target"] = {"max_jobs": max(jobs), "want_at_most": JOBS_TARGET, "same_for_all_feature_counts": same,
                        "met": max(jobs) <= JOBS_TARGET and same}
    ok = [r for r in results.get("evidently", []) if r["status"] == "ok"]
    if ok:
        big = ok[-1]
        ev_total = big["load_s"] + big["report_s"]
        s["evidently"] = {"largest_rows": big["rows"], "load_s": big["load_s"], "report_s": big["report_s"],
                          "total_s": ev_total, "rows_per_s": big["rows"] / ev_total,
                          "report_rows_per_s": big["rows"] / big["report_s"], "peak_rss_mb": big["peak_rss_mb"],
                          "first_failure": next((f"{r['rows']:,}: {r['status']}" for r in results["evidently"]
                                                 if r["status"] != "ok"), None)}
        e = s["evidently"]
        s["ratios"] = {
            # ours on --rows vs Evidently on its largest N: absolute seconds and memory
            "time_ours_full_vs_evidently_largest": ours_s / ev_total,
            # seconds per row, ours / Evidently (load + report; report only)
            "time_per_row": (ours_s / n) / (ev_total / e["largest_rows"]),
            "time_per_row_vs_report_only": (ours_s / n) / (big["report_s"] / e["largest_rows"]),
            "driver_py_peak_vs_evidently_peak": s["ours"]["driver_py_peak_mb"] / e["peak_rss_mb"],
            "all_processes_peak_vs_evidently_peak": s["ours"]["all_processes_peak_mb"] / e["peak_rss_mb"],
            # Evidently's time extrapolated linearly to --rows
            "evidently_extrapolated_s_at_rows": ev_total / e["largest_rows"] * n,
        }
    return s


def print_summary(results: dict, args) -> None:
    s = results["summary"]
    o = s["ours"]
    print(f"\n{'run':<44} {'rows':>11} {'fit s':>7} {'eval s':>7} {'total s':>8} {'rows/s':>10} {'jobs f/e':>8} "
          f"{'py MB':>7} {'JVM MB':>7} {'wrk MB':>7}")
    for key, r in results["ours"].items():
        rows = r["rows"] or args.rows
        tot = r["fit"]["seconds"] + r["evaluate"]["seconds"]
        name = f"ours, {r['features']} features" + (" (agreement)" if key == "agreement" else "")
        print(f"{name:<44} {rows:>11,} {r['fit']['seconds']:>7.1f} {r['evaluate']['seconds']:>7.1f} {tot:>8.1f} "
              f"{rows / tot:>10,.0f} {r['fit']['jobs']:>3}/{r['evaluate']['jobs']:<4} "
              f"{max(r['fit']['driver_py_peak_mb'], r['evaluate']['driver_py_peak_mb']):>7.0f} "
              f"{max(r['fit']['jvm_peak_mb'], r['evaluate']['jvm_peak_mb']):>7.0f} "
              f"{max(r['fit']['py_workers_peak_mb'], r['evaluate']['py_workers_peak_mb']):>7.0f}")
    print(f"\n{'Evidently':<44} {'rows':>11} {'load s':>7} {'report s':>8} {'total s':>8} {'rows/s':>10} "
          f"{'RSS MB':>8}  status")
    for r in results.get("evidently", []) + ([results["evidently_matched"]] if "evidently_matched" in results else []):
        name = "DataDriftPreset" if r["mode"] == "preset" else "ValueDrift psi+ks / psi+js+chi2 (matched)"
        if r["status"] == "ok":
            tot = r["load_s"] + r["report_s"]
            print(f"{name:<44} {r['rows']:>11,} {r['load_s']:>7.1f} {r['report_s']:>8.1f} {tot:>8.1f} "
                  f"{r['rows'] / tot:>10,.0f} {r['peak_rss_mb']:>8.0f}  ok")
        else:
            print(f"{name:<44} {r['rows']:>11,} {'':>7} {'':>8} {r['wall_s']:>8.1f} {'':>10} "
                  f"{max(r['peak_rss_mb'], r['peak_rss_sampled_mb']):>8.0f}  {r['status']}")
    j = s["jobs_target"]
    print("\nSpark jobs per fit/evaluate by features: "
          + ", ".join(f"{k.split('_')[1]}: {v['fit']}/{v['evaluate']}" for k, v in s["jobs"].items())
          + f" -> target <= {JOBS_TARGET} whatever the features: {'MET' if j['met'] else 'NOT MET'}")
    if "ratios" in s:
        r, e = s["ratios"], s["evidently"]
        print(f"ours {o['rows']:,} rows in {o['total_s']:.1f} s vs Evidently {e['largest_rows']:,} rows in "
              f"{e['total_s']:.1f} s (largest N it finished; first failure: {e['first_failure'] or 'none tried'})")
        print(f"ratios ours / Evidently: time ({o['rows']:,} vs its largest N) {r['time_ours_full_vs_evidently_largest']:.2f}x, "
              f"time per row {r['time_per_row']:.3f}x (vs report only {r['time_per_row_vs_report_only']:.3f}x), "
              f"driver Python peak {r['driver_py_peak_vs_evidently_peak']:.3f}x, "
              f"all our processes' peak {r['all_processes_peak_vs_evidently_peak']:.2f}x; Evidently extrapolated "
              f"to {o['rows']:,} rows: {r['evidently_extrapolated_s_at_rows']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
