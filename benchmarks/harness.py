"""A small timing harness: ours vs Spark's, same SparkSession, same data.

    from benchmarks.harness import compare, materialize
    compare("FeatureHasher", lambda: materialize(ours.transform(df)),
            lambda: materialize(theirs.transform(df)))

Each callable is run ``warmup`` times untimed, then ``repeat`` times alternating
ours/theirs (so drift in the machine's state hits both); the best and median
times are reported, and the ratio is ours/theirs of the best times (< 1.0 means
ours is faster).  On Linux the median CPU seconds of the local process tree
(driver, JVM, Python workers) are reported too: a steadier measure than wall time
on a loaded machine, for a local master only.
"""
from __future__ import annotations

import os
import statistics
import time
from typing import Callable, Dict, List, Optional

__all__ = ["result_row", "add_report_args", "write_rows", "SIZES", "compare", "materialize", "cached", "process_tree_cpu", "proc_table", "proc_comm", "proc_status_kb", "descendants", "print_header"]

_HEADER = f"{'benchmark':<32} {'ours best s':>11} {'Spark best s':>12} {'ours med s':>10} {'Spark med s':>11} {'ratio':>7}"


def print_header() -> None:
    print(_HEADER)
    print("-" * len(_HEADER))


def materialize(df) -> None:
    """Compute every column of ``df`` and discard it (``count()`` would prune columns)."""
    df.write.format("noop").mode("overwrite").save()


def cached(df, path: str):
    """``df`` written to Parquet at ``path``, read back, cached and counted.

    A frame made by ``createDataFrame(pandas)`` carries its rows in every task of
    every job (even once cached); going through Parquet keeps the tasks small so
    that the timings measure the transform.
    """
    df.write.mode("overwrite").parquet(path)
    out = df.sparkSession.read.parquet(path).cache()
    out.count()
    return out


def proc_table():
    """``(stats, children)`` of every process in ``/proc``: ``stats[pid]`` the fields of
    ``/proc/pid/stat`` after the command name (``[0]`` state, ``[1]`` parent pid, ...),
    ``children[pid]`` the pids whose parent is ``pid``; ``comm`` names in ``stats[pid].comm``
    are not kept -- use :func:`proc_comm`.  Linux only."""
    children: Dict[int, List[int]] = {}
    stats: Dict[int, List[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                raw = fh.read()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        pid = int(entry)
        stats[pid] = fields
        children.setdefault(int(fields[1]), []).append(pid)
    return stats, children


def proc_status_kb(pid: int, key: str) -> Optional[int]:
    """A kB field of ``/proc/pid/status`` (``"VmRSS"``, ``"VmHWM"``...), or None.  Linux only."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def spark_job_ids(spark, group: str, fn: Callable[[], object]):
    """``(fn(), ids)``: run ``fn()`` under a Spark job group and list the ids of the Spark jobs it ran
    (classic sessions only: it uses the SparkContext's status tracker)."""
    sc = spark.sparkContext
    sc.setJobGroup(group, group)
    try:
        out = fn()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
        sc.setLocalProperty("spark.job.description", None)
    return out, sorted(sc.statusTracker().getJobIdsForGroup(group))


def descendants(root: int) -> List[int]:
    """Pids of every descendant process of ``root`` (from :func:`proc_table`)."""
    _, children = proc_table()
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def proc_comm(pid: int) -> Optional[str]:
    """The command name of ``pid`` (``/proc/pid/comm``), or None."""
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return None


def process_tree_cpu() -> Optional[float]:
    """CPU seconds (user + system) used so far by this process and all its descendants.

    With a local master that is the driver, the JVM and the Python workers, so the
    difference across a call is the work the call caused, even while other programs
    load the machine (which makes wall times noisy).  Reaped children count through
    their parent's ``cutime``/``cstime``.  Linux only (``/proc``); None elsewhere.
    """
    try:
        tick = os.sysconf("SC_CLK_TCK")
        stats, children = proc_table()
        total, todo = 0, [os.getpid()]
        while todo:
            pid = todo.pop()
            f = stats.get(pid)
            if f is not None:
                total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
            todo.extend(children.get(pid, ()))
        return total / tick
    except (OSError, ValueError, AttributeError):
        return None


def _time(fn: Callable[[], object]):
    c0 = process_tree_cpu()
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    c1 = process_tree_cpu()
    return wall, (None if c0 is None or c1 is None else c1 - c0)


def compare(
    name: str,
    ours: Callable[[], object],
    theirs: Callable[[], object],
    repeat: int = 3,
    warmup: int = 1,
    header: bool = False,
) -> Dict[str, object]:
    """Time ``ours()`` and ``theirs()``; print one table row and return the numbers.

    Returns a dict with ``name``, ``ours``/``theirs`` (best seconds),
    ``ours_median``/``theirs_median``, ``ratio`` (best ours / best theirs) and the
    raw ``ours_times``/``theirs_times``.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    for _ in range(warmup):
        ours()
        theirs()
    ours_t: List[float] = []
    theirs_t: List[float] = []
    ours_cpu: List[float] = []
    theirs_cpu: List[float] = []
    for _ in range(repeat):
        for fn, walls, cpus in ((ours, ours_t, ours_cpu), (theirs, theirs_t, theirs_cpu)):
            wall, cpu = _time(fn)
            walls.append(wall)
            if cpu is not None:
                cpus.append(cpu)
    result = {
        "name": name,
        "ours": min(ours_t),
        "theirs": min(theirs_t),
        "ours_median": statistics.median(ours_t),
        "theirs_median": statistics.median(theirs_t),
        "ratio": min(ours_t) / min(theirs_t),
        "ours_times": ours_t,
        "theirs_times": theirs_t,
        # median CPU seconds of the whole local process tree (None if not measurable)
        "ours_cpu": statistics.median(ours_cpu) if ours_cpu else None,
        "theirs_cpu": statistics.median(theirs_cpu) if theirs_cpu else None,
    }
    result["cpu_ratio"] = (
        result["ours_cpu"] / result["theirs_cpu"] if ours_cpu and result["theirs_cpu"] else None
    )
    if header:
        print_header()
    print(
        f"{name:<32} {result['ours']:>11.3f} {result['theirs']:>12.3f} "
        f"{result['ours_median']:>10.3f} {result['theirs_median']:>11.3f} {result['ratio']:>6.2f}x"
        + (
            f"   cpu s {result['ours_cpu']:.2f} vs {result['theirs_cpu']:.2f} ({result['cpu_ratio']:.2f}x)"
            if result["cpu_ratio"] is not None
            else ""
        ),
        flush=True,
    )
    return result


# ---------------------------------------------------------------- the common report rows
#: Sizes every benchmark accepts as ``--size``: "small" (a few minutes in all, for a quick look and
#: ``python -m benchmarks --size small``) and "full" (the sizes the README's targets are stated at).
SIZES = ("small", "full")


def add_report_args(parser, default_size: str = "full") -> None:
    """Add ``--size {small,full}`` and ``--json PATH`` (write the result rows, see :func:`result_row`)."""
    parser.add_argument("--size", choices=SIZES, default=default_size,
                        help=f"problem sizes: small (quick look) or full (the targets' sizes; default {default_size})")
    parser.add_argument("--json", default=None, help="write the result rows to this file as a JSON list")


def result_row(case: str, ours_s: float, anchor: str, anchor_s: float, target: Optional[float] = None,
               check: str = "", check_ok: Optional[bool] = None, **extra) -> Dict[str, object]:
    """One row of the benchmark report (``python -m benchmarks``).

    ``case``: what was timed (data, size); ``ours_s`` / ``anchor_s``: seconds of ours and of the
    anchor (``anchor`` names it, e.g. "Spark FeatureHasher") from the same run; ``ratio`` is
    ``ours_s / anchor_s`` (< 1 is faster); ``target``: the largest ratio the README promises
    (None: no target); ``check``: what was compared to make the timing fair (equal outputs, same
    objective...) with ``check_ok`` its verdict.  ``extra`` (JSON-serialisable) is kept as is.
    """
    ratio = ours_s / anchor_s if anchor_s else float("nan")
    row: Dict[str, object] = {"case": case, "ours_s": float(ours_s), "anchor": anchor, "anchor_s": float(anchor_s),
                              "ratio": ratio, "target": target, "check": check, "check_ok": check_ok}
    row["met"] = None if target is None else bool(ratio <= target and check_ok is not False)
    row.update(extra)
    return row


def write_rows(path: Optional[str], rows: List[Dict[str, object]]) -> None:
    """Write ``rows`` (from :func:`result_row`) to ``path`` as a JSON list (nothing when ``path`` is None)."""
    if not path:
        return
    import json

    with open(path, "w") as fh:
        json.dump(rows, fh, indent=1, default=float)
