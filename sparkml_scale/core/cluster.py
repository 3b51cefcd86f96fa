"""What the cluster offers a stage: task slots, Python memory per task, Spark conf values,
and the choice between map-reduce and a barrier allreduce stage that follows from them.

Barrier stages need all their tasks running at once, and Spark refuses a barrier stage with
more tasks than the cluster's slots (SPARK-24819; in Spark 4.x that refusal of a barrier
shuffle-map stage also shuts the SparkContext down).  :func:`task_slots` tells the slots (the
master string for local masters, the live executors otherwise: :func:`live_task_slots`);
:func:`choose_execution` picks ``"allreduce"`` only when the slots are known and every task's
share of the data fits the Python memory budget (:func:`python_memory_per_task`), and never
asks for more barrier tasks than there are slots.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Optional

__all__ = ["conf_value", "size_bytes", "task_slots", "live_task_slots", "wait_for_slots",
           "python_memory_per_task", "Execution", "choose_execution", "EXECUTIONS"]


def conf_value(spark, key: str) -> Optional[str]:
    """The value of Spark conf ``key`` in ``spark`` (classic or Connect), ``None`` when unset,
    empty or unreadable."""
    try:
        v = spark.conf.get(key, None)
    except Exception:  # noqa: BLE001 - unknown/unreadable key on some deployments
        return None
    return v if v not in ("", None) else None


def size_bytes(text: Optional[str]) -> Optional[int]:
    """Spark size string ('4g', '512m', '1024k', plain = MiB for memory confs) to bytes."""
    if not text:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)b?\s*", text.lower())
    if not m:
        return None
    unit = {"": 2**20, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[m.group(2)]
    return int(float(m.group(1)) * unit)


def task_slots(spark) -> Optional[int]:
    """Task slots of the cluster, or ``None`` if they cannot be told.

    ``local[N]``/``local[*]`` -> ``N``/cores; ``local-cluster[n, c, m]`` -> ``n * c``; any
    other master (standalone, YARN, Kubernetes): the slots of the executors registered now
    (:func:`live_task_slots`) when they can be read, else
    ``spark.executor.instances * spark.executor.cores`` when both are set and dynamic
    allocation is off, else ``spark.cores.max`` (standalone); each divided by
    ``spark.task.cpus``.
    """
    master = conf_value(spark, "spark.master") or ""
    task_cpus = int(conf_value(spark, "spark.task.cpus") or 1)
    m = re.fullmatch(r"local\[(\d+|\*)(?:,\s*\d+)?\]", master)
    if m:
        n = os.cpu_count() or 1 if m.group(1) == "*" else int(m.group(1))
        return max(n // task_cpus, 0)
    if master == "local":
        return 1
    m = re.fullmatch(r"local-cluster\[\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\]", master)
    if m:
        return int(m.group(1)) * (int(m.group(2)) // task_cpus)
    live = live_task_slots(spark)
    if live is not None:
        return live
    if (conf_value(spark, "spark.dynamicAllocation.enabled") or "false").lower() == "true":
        return None
    inst, cores = conf_value(spark, "spark.executor.instances"), conf_value(spark, "spark.executor.cores")
    if inst and cores:
        return int(inst) * (int(cores) // task_cpus)
    cores_max = conf_value(spark, "spark.cores.max")
    if cores_max and master.startswith("spark://"):
        return int(cores_max) // task_cpus
    return None


def live_task_slots(spark) -> Optional[int]:
    """Task slots of the executors registered with the driver right now, or ``None`` when
    they cannot be read.

    On a classic session: the driver's ``SparkContext.maxNumConcurrentTasks`` for the default
    resource profile, the very count Spark's barrier-stage check (SPARK-24819) compares a
    barrier stage's tasks with.  On Spark Connect (no SparkContext on the client): the
    driver's monitoring REST API, ``http://<spark.driver.host>:<spark.ui.port>/api/v1/
    applications/<spark.app.id>/executors`` (active executors' ``totalCores`` divided by
    ``spark.task.cpus``), ``None`` when it is not reachable from the client.  Local masters
    answer too (``local[N]`` -> N).
    """
    jss = getattr(spark, "_jsparkSession", None)
    if jss is not None:
        try:
            sc = jss.sparkContext()
            return int(sc.maxNumConcurrentTasks(sc.resourceProfileManager().defaultResourceProfile()))
        except Exception:  # noqa: BLE001 - a stopped context or an unexpected JVM
            return None
    if type(spark).__module__.startswith("pyspark.sql.connect"):
        return _rest_task_slots(spark)
    return None


def _rest_task_slots(spark, timeout: float = 2.0) -> Optional[int]:
    import json
    import urllib.request

    app, host = conf_value(spark, "spark.app.id"), conf_value(spark, "spark.driver.host")
    if not app or not host or (conf_value(spark, "spark.ui.enabled") or "true").lower() == "false":
        return None
    port = conf_value(spark, "spark.ui.port") or "4040"
    url = f"http://{host}:{port}/api/v1/applications/{app}/executors"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - the driver's own UI
            executors = json.load(r)
    except Exception:  # noqa: BLE001 - UI not reachable from the client, another app on the port, ...
        return None
    task_cpus = int(conf_value(spark, "spark.task.cpus") or 1)
    master = conf_value(spark, "spark.master") or ""
    live = [e for e in executors if e.get("isActive", True)]
    if not master.startswith("local"):
        live = [e for e in live if e.get("id") != "driver"]
    return sum(int(e.get("totalCores", 0)) // task_cpus for e in live)


def wait_for_slots(spark, need: int, timeout: Optional[float] = None) -> Optional[int]:
    """Live task slots (:func:`live_task_slots`), polled while fewer than ``need`` are
    registered, for up to ``timeout`` seconds: by default 15 s in an application's first
    minute (executors register a few seconds after a session starts), else 3 s (a lost
    executor's replacement).  Falls back to :func:`task_slots` when the live count cannot be
    read."""
    if timeout is None:
        started = conf_value(spark, "spark.app.startTime")
        young = started is not None and started.isdigit() and time.time() * 1000 - int(started) < 60_000
        timeout = 15.0 if young else 3.0
    deadline = time.monotonic() + timeout
    while True:
        live = live_task_slots(spark)
        if live is None:
            return task_slots(spark)
        if live >= need or time.monotonic() >= deadline:
            return live
        time.sleep(0.5)


def python_memory_per_task(spark, slots: int) -> int:
    """Bytes a Python task may use: ``spark.executor.pyspark.memory`` per core if set; on a
    local master half the machine's memory per slot; else the executor memory overhead
    (``spark.executor.memoryOverhead``, default max(384 MiB, 10 %) of executor memory) per core."""
    cores = int(conf_value(spark, "spark.executor.cores") or 1)
    py = size_bytes(conf_value(spark, "spark.executor.pyspark.memory"))
    if py:
        return py // max(cores, 1)
    master = conf_value(spark, "spark.master") or ""
    if master.startswith("local"):
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            total = 8 << 30
        return total // 2 // max(slots, 1)
    mem = size_bytes(conf_value(spark, "spark.executor.memory")) or (1 << 30)
    over = size_bytes(conf_value(spark, "spark.executor.memoryOverhead")) or max(384 << 20, mem // 10)
    return over // max(cores, 1)


#: Values of a stage's ``solver`` param that :func:`choose_execution` understands.
EXECUTIONS = ("auto", "mapreduce", "allreduce")


@dataclass(frozen=True)
class Execution:
    """How an iterative fit runs: ``kind`` ``"mapreduce"`` (one tree-aggregated Spark job per
    pass, fault tolerant, any cluster) or ``"allreduce"`` (one barrier stage of ``world`` tasks
    that loads its data once), and ``reason`` (a sentence for the log)."""

    kind: str
    world: int
    reason: str


def choose_execution(spark, requested: str, num_partitions: int, bytes_per_row: float, rows: int,
                     param: str = "solver") -> Execution:
    """The execution of an iterative fit over ``rows`` cached rows of ``bytes_per_row`` each,
    held in ``num_partitions`` partitions.

    ``requested`` ``"mapreduce"``: map-reduce.  ``"allreduce"``: a barrier stage of
    ``min(num_partitions, live slots)`` tasks (one per slot at most); ``ValueError`` naming
    ``param`` when no slot is registered or the slots cannot be told.  ``"auto"``: allreduce
    when the slots are known and each task's share (its blocks and their concatenation,
    ``2 * (bytes_per_row + 16) * rows / world``) fits :func:`python_memory_per_task`, else
    map-reduce.
    """
    if requested == "mapreduce":
        return Execution("mapreduce", 0, f"{param}='mapreduce'")
    if requested == "allreduce":
        slots = wait_for_slots(spark, 1)  # as many tasks as there are slots now, at least one
        if not slots:
            raise ValueError(
                f"param {param!r} is 'allreduce' but "
                + ("no executor task slots are registered" if slots == 0 else
                   "the cluster's task slots cannot be told (dynamic allocation, or no "
                   "spark.executor.instances/spark.executor.cores and no reachable driver UI)")
                + ": its barrier stage needs all its tasks running at once; use "
                f"{param}='mapreduce' (or 'auto')")
        world = max(1, min(num_partitions, slots))
        return Execution("allreduce", world, f"{param}='allreduce', {world} barrier task(s) of {slots} slot(s)")
    if requested != "auto":
        raise ValueError(f"param {param!r} must be one of {', '.join(map(repr, EXECUTIONS))}, got {requested!r}")
    slots = task_slots(spark)
    if slots is None:
        return Execution("mapreduce", 0, "auto: task slots unknown (dynamic allocation or no executor settings)")
    world = max(1, min(num_partitions, slots) if slots else num_partitions)
    need = int(2 * (bytes_per_row + 16) * rows / world)  # blocks + their concatenation
    budget = python_memory_per_task(spark, slots)
    if need > budget:
        return Execution("mapreduce", 0, f"auto: ~{need >> 20} MiB per task exceeds the ~{budget >> 20} MiB "
                                         "Python budget")
    return Execution("allreduce", world, f"auto: {world} barrier task(s) of {slots} slot(s), ~{need >> 20} MiB "
                                         "per task")
