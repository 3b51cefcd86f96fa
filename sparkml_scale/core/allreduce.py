"""Barrier stages whose tasks load their partition once and then iterate with allreduce.

A map-reduce fit runs one Spark job per loss/gradient evaluation and moves its
data from the JVM into Python on every pass.  :func:`run_barrier` instead runs
*one* barrier stage (``mapInArrow(..., barrier=True)``): every task decodes its
partition into numpy once and calls ``task_fn(batches, comm)``, which may call
``comm.allreduce(arrays)`` as often as it likes -- the element-wise sums over
all tasks come back, bit-identical on every rank, so a replicated optimizer
(e.g. scipy's L-BFGS-B) takes identical steps everywhere.

Communication backends (chosen when the stage starts, the same on every rank):

- ``"gloo"``: ``torch.distributed``'s Gloo process group over TCP (rendezvous
  through a ``TCPStore`` on rank 0 whose port is shared with
  ``BarrierTaskContext.allGather``), used when torch is importable on every task;
- ``"spark"``: ``BarrierTaskContext.allGather`` of the encoded arrays (through the
  driver; every rank sums the same list in the same order).  Needs nothing but
  pyspark; slower for large messages.

Barrier stages need all their tasks running at once, and Spark refuses a barrier
stage with more tasks than the cluster's slots (SPARK-24819; in Spark 4.x that
refusal of a barrier shuffle-map stage also shuts the SparkContext down).
:func:`task_slots` tells the slots (the master string for local masters, the
live executors otherwise: :func:`live_task_slots`), :func:`run_barrier` never
asks for more tasks than :func:`wait_for_slots` finds, and callers fall back to
map-reduce when there are not enough.  Pattern after pyspark's ``ml/torch/distributor.py``.
"""
from __future__ import annotations

import base64
import datetime
import os
import re
import time
from typing import Callable, Iterator, List, Optional, Sequence

import numpy as np
import pyarrow as pa

from .errors import task_error
from .faults import maybe_fail
from .mapreduce import decode_arrays, encode_arrays

__all__ = ["run_barrier", "after_barrier", "task_slots", "live_task_slots", "wait_for_slots",
           "python_memory_per_task", "Communicator"]

_RESULT_ARROW = pa.schema([("rank", pa.int64()), ("payload", pa.binary())])
RESULT_SCHEMA = "rank long, payload binary"
#: Seconds a rank waits for the others (rendezvous and each collective).
TIMEOUT_S = 1800


def _conf(spark, key: str) -> Optional[str]:
    try:
        v = spark.conf.get(key, None)
    except Exception:  # noqa: BLE001 - unknown/unreadable key on some deployments
        return None
    return v if v not in ("", None) else None


def _bytes(text: Optional[str]) -> Optional[int]:
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
    master = _conf(spark, "spark.master") or ""
    task_cpus = int(_conf(spark, "spark.task.cpus") or 1)
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
    if (_conf(spark, "spark.dynamicAllocation.enabled") or "false").lower() == "true":
        return None
    inst, cores = _conf(spark, "spark.executor.instances"), _conf(spark, "spark.executor.cores")
    if inst and cores:
        return int(inst) * (int(cores) // task_cpus)
    cores_max = _conf(spark, "spark.cores.max")
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

    app, host = _conf(spark, "spark.app.id"), _conf(spark, "spark.driver.host")
    if not app or not host or (_conf(spark, "spark.ui.enabled") or "true").lower() == "false":
        return None
    port = _conf(spark, "spark.ui.port") or "4040"
    url = f"http://{host}:{port}/api/v1/applications/{app}/executors"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - the driver's own UI
            executors = json.load(r)
    except Exception:  # noqa: BLE001 - UI not reachable from the client, another app on the port, ...
        return None
    task_cpus = int(_conf(spark, "spark.task.cpus") or 1)
    master = _conf(spark, "spark.master") or ""
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
        started = _conf(spark, "spark.app.startTime")
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
    cores = int(_conf(spark, "spark.executor.cores") or 1)
    py = _bytes(_conf(spark, "spark.executor.pyspark.memory"))
    if py:
        return py // max(cores, 1)
    master = _conf(spark, "spark.master") or ""
    if master.startswith("local"):
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            total = 8 << 30
        return total // 2 // max(slots, 1)
    mem = _bytes(_conf(spark, "spark.executor.memory")) or (1 << 30)
    over = _bytes(_conf(spark, "spark.executor.memoryOverhead")) or max(384 << 20, mem // 10)
    return over // max(cores, 1)


class Communicator:
    """Collectives among the tasks of one barrier stage (see the module docstring)."""

    def __init__(self, ctx, rank: int, world: int):
        self.ctx = ctx
        self.rank = rank
        self.world = world
        self.backend = "local"
        self._pg = None
        self._store = None

    def _setup(self, backend: str = "auto") -> None:
        if self.world == 1:
            return
        if backend == "spark":
            self.backend = "spark"
            return
        try:
            import torch.distributed as dist

            have_torch = dist.is_available() and dist.is_gloo_available()
        except Exception:  # noqa: BLE001 - no (usable) torch on this executor
            have_torch = False
        store = None
        port = 0
        if have_torch and self.rank == 0:
            import torch.distributed as dist

            host = self._host(0)
            try:
                store = dist.TCPStore(host, 0, self.world, True,
                                      timeout=datetime.timedelta(seconds=TIMEOUT_S), wait_for_workers=False)
                port = store.port
            except Exception:  # noqa: BLE001 - cannot listen: everybody falls back
                store, port = None, 0
        msgs = self.ctx.allGather(f"{int(have_torch)}:{port}")
        use_gloo = all(m.split(":")[0] == "1" for m in msgs) and int(msgs[0].split(":")[1]) > 0
        if not use_gloo:
            if backend == "gloo":
                raise RuntimeError("allreduce backend 'gloo' needs torch (with Gloo) on every task: pip install torch")
            self.backend = "spark"
            return
        import torch.distributed as dist

        if self.rank != 0:
            store = dist.TCPStore(self._host(0), int(msgs[0].split(":")[1]), self.world, False,
                                  timeout=datetime.timedelta(seconds=TIMEOUT_S))
        self._store = store
        self._pg = dist.ProcessGroupGloo(store, self.rank, self.world, datetime.timedelta(seconds=TIMEOUT_S))
        self.backend = "gloo"

    def _host(self, rank: int) -> str:
        addr = self.ctx.getTaskInfos()[rank].address
        return addr.rsplit(":", 1)[0] if ":" in addr else addr

    def allreduce(self, arrays: Sequence[np.ndarray]) -> List[np.ndarray]:
        """Element-wise sums of ``arrays`` (float64) over all ranks, identical on every rank."""
        arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
        if self.world == 1:
            return arrays
        sizes = [a.size for a in arrays]
        flat = np.concatenate([a.ravel() for a in arrays])
        if self.backend == "gloo":
            import torch

            self._pg.allreduce([torch.from_numpy(flat)]).wait()
            total = flat
        else:
            msgs = self.ctx.allGather(base64.b64encode(encode_arrays([flat])).decode("ascii"))
            total = np.zeros_like(flat)
            for m in msgs:  # the same order on every rank: identical sums
                total += decode_arrays(base64.b64decode(m))[0]
        out, pos = [], 0
        for a, s in zip(arrays, sizes):
            out.append(total[pos : pos + s].reshape(a.shape))
            pos += s
        return out

    def close(self) -> None:
        self._pg = None
        self._store = None


def after_barrier(df):
    """``df`` (the output of a barrier ``mapInArrow``) followed by a one-partition shuffle.

    Spark re-runs a failed barrier *shuffle-map* stage as a whole, but aborts the job when
    a barrier *result* stage fails ("Could not recover from a failed barrier ResultStage"):
    the shuffle makes the barrier stage a shuffle-map stage, so a task failure (a lost or
    restarted worker) costs one more attempt of the stage instead of the whole fit.  The
    shuffled rows are the ranks' small results."""
    return df.repartition(1)


def run_barrier(df, num_tasks: int, task_fn: Callable[[Iterator[pa.RecordBatch], Communicator], Optional[Sequence[np.ndarray]]],
                num_partitions: Optional[int] = None, backend: str = "auto") -> List[Optional[List[np.ndarray]]]:
    """Run ``task_fn(batches, comm)`` in ``num_tasks`` barrier tasks over ``df``; return
    what each rank returned (a list of numpy arrays, or ``None``), indexed by rank.

    ``df`` is repartitioned to ``num_tasks`` unless ``num_partitions`` (its known
    partition count) already equals it.  ``task_fn`` runs on the executors (it must
    be picklable), receives its partition's Arrow batches and a :class:`Communicator`,
    and every rank must make the same sequence of ``comm.allreduce`` calls.

    A failed task fails the attempt of the whole stage, and Spark runs the stage again
    (up to ``spark.stage.maxConsecutiveAttempts``, 4 by default; see :func:`after_barrier`);
    when no attempt succeeds the task's Python error is raised (see :func:`task_error`).
    ``backend``: "auto" (gloo when torch is importable on every task, else spark),
    "gloo" or "spark".  Exceptions in a task fail the whole stage (Spark cancels the
    other tasks) and reach the caller as Spark's exception.
    """
    if backend not in ("auto", "gloo", "spark"):
        raise ValueError(f"backend must be 'auto', 'gloo' or 'spark', got {backend!r}")
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
    slots = wait_for_slots(df.sparkSession, num_tasks)
    if slots is not None and slots < num_tasks:
        raise ValueError(f"a barrier stage of {num_tasks} task(s) cannot run on the {slots} task slot(s) of the "
                         "cluster (Spark needs every barrier task running at once)")
    if num_partitions != num_tasks:
        df = df.repartition(num_tasks)

    def runner(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import BarrierTaskContext

        maybe_fail("allreduce.task")
        ctx = BarrierTaskContext.get()
        rank = ctx.partitionId()
        world = len(ctx.getTaskInfos())
        comm = Communicator(ctx, rank, world)
        comm._setup(backend)
        try:
            res = task_fn(batches, comm)
        finally:
            comm.close()
        payload = encode_arrays(res) if res is not None else b""
        yield pa.RecordBatch.from_arrays([pa.array([rank], pa.int64()), pa.array([payload], pa.binary())],
                                         schema=_RESULT_ARROW)

    try:
        rows = after_barrier(df.mapInArrow(runner, RESULT_SCHEMA, barrier=True)).collect()
    except Exception as exc:  # noqa: BLE001 - Spark's error (with a JVM trace) becomes one clear line
        raise task_error(exc, "barrier stage") from None
    out: List[Optional[List[np.ndarray]]] = [None] * len(rows)
    for r in rows:
        out[r["rank"]] = decode_arrays(r["payload"]) if r["payload"] else None
    return out
