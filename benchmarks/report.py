"""Run every benchmark at one size and write one report: JSON, Markdown and a PNG chart of the ratios.

    .venv/bin/python -m benchmarks [--size small|full] [--only hasher,lr] [--skip drift] [--out DIR] [--readme]
    .venv/bin/python -m benchmarks --from-json DIR/report.json [--out D] [--readme]  # re-render only (into DIR, or D)

Each benchmark (``BENCHMARKS``) runs as its own process (its own SparkSession and JVM, one after
another, never two at once) with ``--size SIZE --json ROWS``, and writes the common rows of
:func:`benchmarks.harness.result_row`: the case, ours and the anchor's seconds from the same run,
their ratio (ours / anchor, < 1 is faster), the target ratio where the README promises one, and
the check that makes the comparison fair (equal outputs, same objective, same accuracy).

Writes into ``--out`` (default ``benchmarks/results``): ``report.json`` (date, machine, versions,
commit, every row), ``report.md`` (the table), ``ratios.png`` (one bar per row on a log scale, the
target marked) and ``logs/NAME.log`` (each benchmark's own output).  ``--readme`` also replaces the
table in README.md between the ``benchmark-report`` markers.  Exit status 1 if a benchmark failed or
a target was not met.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: (name, script, what it compares).  ``scale_10m.py`` is not here: it has no anchor (time and
#: peak memory of 10M rows through every stage), run it on its own.
BENCHMARKS = [
    ("hasher", "bench_feature_hasher.py", "FeatureHasher vs Spark's FeatureHasher"),
    ("lr", "bench_logistic_regression.py", "LogisticRegression vs MLlib, same objective"),
    ("linreg", "bench_linear_regression.py", "LinearRegression vs MLlib normal equations"),
    ("pca", "bench_pca.py", "PCA vs MLlib PCA, same components"),
    ("torch", "bench_torch.py", "TorchModel.transform vs predict_batch_udf and a forward; training vs a bare loop"),
    ("compression", "bench_compression.py", "int8 / pruned / shrunk vs fp32"),
    ("io", "bench_io.py", "Delta I/O vs plain Parquet"),
    ("tuning", "bench_tuning.py", "HyperparameterSearch vs CrossValidator"),
    ("drift", "bench_drift.py", "DriftDetector vs Evidently"),
]
NAMES = [b[0] for b in BENCHMARKS]
#: seconds one benchmark may run before it is stopped, by size
TIMEOUT_S = {"small": 1200, "full": 3 * 3600}
BEGIN, END = "<!-- benchmark-report:begin -->", "<!-- benchmark-report:end -->"


# ------------------------------------------------------------------ facts about the run
def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


def _version(dist: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _numpy_blas() -> Optional[str]:
    """numpy's BLAS and the kernels it picked for this CPU (``openblas Haswell``), by threadpoolctl."""
    import importlib

    try:
        importlib.import_module("numpy")  # loads the BLAS that threadpoolctl inspects
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    for lib in threadpool_info():
        if lib.get("user_api") == "blas":
            return " ".join(str(x) for x in (lib.get("internal_api"), lib.get("architecture")) if x)
    return None


def machine() -> Dict[str, object]:
    """CPU model, cores, memory, OS, Java and the versions of the libraries timed."""
    cpuinfo = _read("/proc/cpuinfo")
    cpu = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", _read("/proc/meminfo"), re.M)
    try:
        java = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30).stderr
        java = java.splitlines()[0] if java else None
    except (OSError, subprocess.SubprocessError):
        java = None
    flags = re.search(r"^flags\s*:\s*(.+)$", cpuinfo, re.M)
    flags = set(flags.group(1).split()) if flags else set()
    # The widest SIMD matters: MLlib's BLAS (jdk.incubator.vector) uses 512-bit vectors where the CPU
    # has them, and ran about twice as fast on an AVX-512 host as on the one before it.
    simd = next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX")) if flag in flags),
                None)
    return {
        "cpu": cpu.group(1).strip() if cpu else platform.processor() or None,
        "simd": simd,
        "numpy_blas": _numpy_blas(),
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem.group(1)) / 2**20, 1) if mem else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "java": java,
        **{k: _version(k) for k in ("pyspark", "numpy", "pyarrow", "torch", "sparkml_scale")},
    }


def commit() -> Optional[str]:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=30).stdout.strip()
        # the run's own output (benchmarks/results, the README table) does not count as a change
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/results", ":(exclude)README.md"], cwd=ROOT,
                               capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+changes" if dirty else "")) or None


def _either_changed(before: Optional[str], after: Optional[str]) -> Optional[str]:
    """The commit the run started on, ``+changes`` if the code was changed at its start or by its end."""
    if before is None or after is None:
        return before or after
    changed = before != after or before.endswith("+changes")
    return before.split("+")[0] + ("+changes" if changed else "")


# ------------------------------------------------------------------ running
def run_benchmark(name: str, script: str, size: str, out_dir: str, timeout_s: float) -> Dict[str, object]:
    """Run one benchmark script in its own process; its rows (each tagged ``benchmark``) and status."""
    logs = os.path.join(out_dir, "logs")
    os.makedirs(logs, exist_ok=True)
    rows_path = os.path.join(logs, f"{name}.rows.json")
    log_path = os.path.join(logs, f"{name}.log")
    if os.path.exists(rows_path):
        os.remove(rows_path)
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", script), "--size", size, "--json", rows_path]
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    t0 = time.perf_counter()
    print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
    with open(log_path, "w") as log:
        try:
            rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                timeout=timeout_s).returncode
            status = "ok" if rc == 0 else f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
            status = f"stopped after {timeout_s:.0f} s"
    wall = time.perf_counter() - t0
    rows: List[Dict[str, object]] = []
    if os.path.exists(rows_path):
        with open(rows_path) as fh:
            rows = json.load(fh)
    elif status == "ok":
        status = "ok, but it wrote no rows"
    for r in rows:
        r["benchmark"] = name
    print(f"   {status} in {wall:.0f} s, {len(rows)} rows; log {os.path.relpath(log_path, ROOT)}", flush=True)
    return {"name": name, "script": script, "status": status, "seconds": wall, "rows": rows,
            "log": os.path.relpath(log_path, ROOT)}


# ------------------------------------------------------------------ rendering
def _fmt_s(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3g}" if v < 10 else f"{v:.1f}"


def verdict(row: Dict[str, object]) -> str:
    """"met", "NOT met" or "" (no target) of one row."""
    if row.get("target") is None:
        return ""
    return "met" if row.get("met") else "NOT met"


def markdown(report: Dict[str, object]) -> str:
    """The report's Markdown: the run's facts, then one table row per result row, then failures."""
    m = report["machine"]
    lines = [
        f"Benchmarks run {report['date']} (size `{report['size']}`, commit {report.get('commit') or '?'}) on "
        f"{m.get('cpu') or 'an unknown CPU'}{' (' + m['simd'] + ')' if m.get('simd') else ''}, {m.get('cores')} cores, "
        f"{m.get('memory_gib')} GiB; numpy BLAS {m.get('numpy_blas') or '?'}; "
        f"local[2]; Python {m.get('python')}, pyspark {m.get('pyspark')}, torch {m.get('torch')}, "
        f"{m.get('java') or 'Java ?'}. Ratio = ours / anchor, seconds from the same run (< 1 is faster); "
        "the target is the largest ratio promised.",
        "",
        "| benchmark | case | ours s | anchor | anchor s | ratio | target | | check |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        target = "" if r.get("target") is None else f"<= {r['target']:g}"
        check = str(r.get("check") or "")
        if r.get("check_ok") is False:
            check = "FAILED: " + check
        cells = [r["benchmark"], r["case"], _fmt_s(r["ours_s"]), r["anchor"], _fmt_s(r["anchor_s"]),
                 f"{r['ratio']:.2f}x", target, verdict(r), check]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    bad = [b for b in report["benchmarks"] if not str(b["status"]).startswith("ok") or not b["rows"]]
    if bad:
        lines.append("")
        for b in bad:
            lines.append(f"- `{b['script']}`: {b['status']} (log `{b['log']}`)")
    targets = [r for r in report["rows"] if r.get("target") is not None]
    lines += ["", f"Targets met: {sum(1 for r in targets if r.get('met'))} of {len(targets)}."]
    return "\n".join(lines) + "\n"


def chart(report: Dict[str, object], path: str) -> None:
    """One horizontal bar per row: the ratio on a log axis, a tick at its target, 1.0 marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in report["rows"] if r.get("ratio") and r["ratio"] > 0 and not math.isnan(r["ratio"])]
    fig = Figure(figsize=(11, 1.2 + 0.32 * max(len(rows), 1)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    labels = [f"{r['benchmark']}: {r['case']}"[:90] for r in rows]
    colors = ["#2a9d8f" if r.get("met") else "#e76f51" if r.get("target") is not None else "#8d99ae" for r in rows]
    y = list(range(len(rows)))[::-1]
    ax.barh(y, [r["ratio"] for r in rows], color=colors, height=0.6)
    for yi, r in zip(y, rows):
        if r.get("target") is not None:
            ax.plot([r["target"], r["target"]], [yi - 0.4, yi + 0.4], color="black", linewidth=2)
        ax.text(r["ratio"], yi, f" {r['ratio']:.2f}x", va="center", fontsize=7)
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    for axis_fmt in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
        axis_fmt(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel("ours / anchor time (log scale; < 1 is faster). Black tick: target. "
                  "Green: target met, red: not met, grey: no target")
    ax.set_title(f"sparkml_scale benchmarks, {report['date']} ({report['size']}), "
                 f"{report['machine'].get('cores')} cores", fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def update_readme(md: str, path: str = os.path.join(ROOT, "README.md")) -> None:
    """Replace the text between the ``benchmark-report`` markers of ``path`` with ``md``."""
    with open(path) as fh:
        text = fh.read()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{path} has no {BEGIN} ... {END} markers to put the table between")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(path, "w") as fh:
        fh.write(head + BEGIN + "\n" + md + END + tail)


def write_report(report: Dict[str, object], out_dir: str) -> str:
    """Write report.json, report.md and ratios.png into ``out_dir``; return the Markdown."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "report.json"), "w") as fh:
        json.dump(report, fh, indent=1, default=float)
    md = markdown(report)
    with open(os.path.join(out_dir, "report.md"), "w") as fh:
        fh.write(md)
    chart(report, os.path.join(out_dir, "ratios.png"))
    return md


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=("small", "full"), default="small",
                    help="small: a quick look (minutes each); full: the sizes the targets are stated at")
    ap.add_argument("--only", default=None, help=f"comma list of benchmarks to run, of {', '.join(NAMES)}")
    ap.add_argument("--skip", default=None, help="comma list of benchmarks not to run")
    ap.add_argument("--out", default=None,
                    help="output folder (default: benchmarks/results; with --from-json, the JSON's folder)")
    ap.add_argument("--readme", action="store_true", help="also put the table into README.md")
    ap.add_argument("--from-json", default=None, help="re-render this report.json (run nothing)")
    args = ap.parse_args(argv)

    if args.from_json:
        with open(args.from_json) as fh:
            report = json.load(fh)
    else:
        chosen = NAMES
        for flag, keep in ((args.only, True), (args.skip, False)):
            if flag:
                names = [n.strip() for n in flag.split(",") if n.strip()]
                unknown = sorted(set(names) - set(NAMES))
                if unknown:
                    ap.error(f"unknown benchmark(s) {unknown}; the benchmarks are {NAMES}")
                chosen = [n for n in chosen if (n in names) == keep]
        out = args.out or os.path.join(ROOT, "benchmarks", "results")
        code0 = commit()  # before and after the run: code edited while it ran is flagged too
        load0 = os.getloadavg()
        started = _dt.datetime.now(_dt.timezone.utc)
        runs = [run_benchmark(n, s, args.size, out, TIMEOUT_S[args.size]) for n, s, _ in BENCHMARKS
                if n in chosen]
        report = {"date": started.strftime("%Y-%m-%d %H:%M UTC"), "size": args.size, "machine": machine(),
                  "commit": _either_changed(code0, commit()), "load_average_start": load0, "load_average_end": os.getloadavg(),
                  "command": "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "benchmarks": [dict(r, rows=len(r["rows"])) for r in runs],  # rows: how many
                  "rows": [row for r in runs for row in r["rows"]]}
    out_dir = args.out or (os.path.dirname(os.path.abspath(args.from_json)) if args.from_json
                           else os.path.join(ROOT, "benchmarks", "results"))
    md = write_report(report, out_dir)
    print()
    print(md)
    if args.readme:
        update_readme(md)
        print("README.md: table replaced")
    failed = [b for b in report["benchmarks"] if not str(b["status"]).startswith("ok") or not b["rows"]]
    missed = [r for r in report["rows"] if r.get("target") is not None and not r.get("met")]
    return 1 if failed or missed else 0
