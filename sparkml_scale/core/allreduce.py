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
  ``BarrierTaskContext.allGather``), used when torch is importable on every task; on a
  classic session with a local master the driver serves the store instead
  (:func:`_driver_store`), which saves the allGather round (about one second: Spark's barrier
  RPC polls its answer once a second) in the stage's first attempt;
- ``"spark"``: ``BarrierTaskContext.allGather`` of the encoded arrays (through the
  driver; every rank sums the same list in the same order).  Needs nothing but
  pyspark; slower for large messages.

Barrier stages need all their tasks running at once (see :mod:`sparkml_scale.core.cluster`
for counting task slots): :func:`run_barrier` never asks for more tasks than
:func:`~sparkml_scale.core.cluster.wait_for_slots` finds, and callers fall back to map-reduce
when there are not enough (:func:`~sparkml_scale.core.cluster.choose_execution`).  Pattern after pyspark's ``ml/torch/distributor.py``.
"""
from __future__ import annotations

import base64
import datetime
import time
from typing import Callable, Iterator, List, Optional, Sequence

import numpy as np
import pyarrow as pa

from .cluster import wait_for_slots
from .errors import task_error
from .faults import maybe_fail
from .mapreduce import _partition_id, decode_arrays, encode_arrays

__all__ = ["run_barrier", "after_barrier", "Communicator", "partition_rows", "barrier_safe"]

_RESULT_ARROW = pa.schema([("rank", pa.int64()), ("payload", pa.binary())])
RESULT_SCHEMA = "rank long, payload binary"
#: Seconds a rank waits for the others (rendezvous and each collective).
TIMEOUT_S = 1800
#: Seconds a rank waits for the others at the driver's store (:func:`_driver_store`); a rank that
#: never comes (it failed before arriving) fails the attempt, and the retry agrees by allGather.
RENDEZVOUS_S = 60


class Communicator:
    """Collectives among the tasks of one barrier stage (see the module docstring)."""

    def __init__(self, ctx, rank: int, world: int):
        self.ctx = ctx
        self.rank = rank
        self.world = world
        self.backend = "local"
        self._pg = None
        self._store = None
        #: Wall-clock time (``time.time()``) the task started and seconds its backend set-up took.
        self.started = 0.0
        self.setup_seconds = 0.0

    def _setup(self, backend: str = "auto", joined: Optional[tuple] = None) -> None:
        if self.world == 1:
            return
        if backend == "spark":
            self.backend = "spark"
            return
        if joined is not None and self._use_driver_store(joined):
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

    def _use_driver_store(self, joined) -> bool:
        """Gloo through the driver's TCPStore (see :func:`_driver_store`); ``False``: agree by
        allGather instead.  ``joined``: ``(client store, arrival count)`` from :func:`_join`."""
        import torch.distributed as dist

        client, count = joined
        if count > self.world:  # not the first attempt of the stage: the failed one's keys are there
            return False
        self._store = client
        self._pg = dist.ProcessGroupGloo(client, self.rank, self.world, datetime.timedelta(seconds=TIMEOUT_S))
        self.backend = "gloo"
        return True

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


def barrier_safe(df) -> bool:
    """Whether a barrier ``mapInArrow`` straight over ``df`` passes Spark's RDD-chain check
    (SPARK-24820: no RDD within the barrier stage may have another partition count, as after
    ``coalesce`` or ``union``).  Judged from the physical plan's text (``Coalesce``/``Union``
    nodes; also inside a cached relation's plan, which errs on the safe side); ``False`` when
    the plan cannot be read.  Callers repartition (a shuffle) when it is not."""
    import re

    try:
        jdf = getattr(df, "_jdf", None)
        plan = str(jdf.queryExecution().executedPlan().toString()) if jdf is not None else df._explain_string()
    except Exception:  # noqa: BLE001 - no plan to read: assume the worst
        return False
    return re.search(r"\b(Coalesce|Union)\b", plan) is None


def partition_rows(df) -> List[int]:
    """The number of rows of each partition of ``df``, in partition order (one Spark job; a
    partition with no row counts 0), without the RDD API (works on Spark Connect).

    Only a one-byte literal column crosses to Python (``mapInArrow`` of
    ``SELECT CAST(0 AS TINYINT)``: Spark prunes every other column, so a cached or generated
    input is scanned but its values are not converted).  ``len(result)`` is the partition count
    a barrier stage over ``df`` has."""
    from pyspark.sql import functions as F

    def count(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        n = 0
        for b in batches:
            n += b.num_rows
        yield pa.RecordBatch.from_arrays([pa.array([_partition_id()], pa.int64()),
                                          pa.array([n], pa.int64())], names=["pid", "n"])

    rows = df.select(F.lit(0).cast("tinyint").alias("__z")).mapInArrow(count, "pid long, n long").collect()
    out = [0] * (max((r["pid"] for r in rows), default=-1) + 1)
    for r in rows:
        out[r["pid"]] = int(r["n"])
    return out


def after_barrier(df):
    """``df`` (the output of a barrier ``mapInArrow``) followed by a one-partition shuffle.

    Spark re-runs a failed barrier *shuffle-map* stage as a whole, but aborts the job when
    a barrier *result* stage fails ("Could not recover from a failed barrier ResultStage"):
    the shuffle makes the barrier stage a shuffle-map stage, so a task failure (a lost or
    restarted worker) costs one more attempt of the stage instead of the whole fit.  The
    shuffled rows are the ranks' small results."""
    return df.repartition(1)


def _join(host: str, port: int):
    """``(client of the driver's TCPStore, this task's arrival number)``.  Every task of every
    attempt of the stage counts itself (``joins``) when it starts; the store serves the Gloo
    rendezvous while the count is at most the number of tasks, i.e. in the stage's first attempt
    (a retried attempt would meet the failed one's keys: it agrees by allGather instead).  A task
    that failed before arriving can split the next attempt (some ranks on the store, some on
    allGather): the store's ranks then fail after :data:`RENDEZVOUS_S` and the attempt after
    that agrees by allGather."""
    import torch.distributed as dist

    client = dist.TCPStore(host, int(port), None, False, timeout=datetime.timedelta(seconds=RENDEZVOUS_S))
    return client, int(client.add("joins", 1))


def _driver_store(spark, backend: str, num_tasks: int):
    """A ``torch.distributed.TCPStore`` served by this (driver) process for the Gloo rendezvous of
    one barrier stage, or ``None``.

    Only on a classic session with a local master (the executors are this machine's processes,
    in this Python environment, so they have torch when the driver has it) and ``backend``
    "auto"/"gloo" with more than one task.  It saves the ``BarrierTaskContext.allGather`` round
    of the rank-0 store: Spark's barrier RPC polls its answer once a second
    (``BarrierTaskContext.runBarrier``), so every allGather costs about one second.  Elsewhere
    the ranks agree through allGather (:meth:`Communicator._setup`)."""
    from .cluster import conf_value

    if backend == "spark" or num_tasks < 2 or getattr(spark, "_jsparkSession", None) is None:
        return None
    if not (conf_value(spark, "spark.master") or "").startswith("local"):
        return None
    try:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_gloo_available()):
            return None
        return dist.TCPStore("127.0.0.1", 0, None, True, timeout=datetime.timedelta(seconds=TIMEOUT_S),
                             wait_for_workers=False)
    except Exception:  # noqa: BLE001 - no (usable) torch here, or no port: the ranks agree by allGather
        return None


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
    store = _driver_store(df.sparkSession, backend, num_tasks)
    rendezvous = (store.host, store.port) if store is not None else None

    def runner(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import BarrierTaskContext

        started = time.time()
        ctx = BarrierTaskContext.get()
        # arrive at the driver's store first thing, before anything in the task can fail
        joined = _join(*rendezvous) if rendezvous is not None else None
        maybe_fail("allreduce.task")
        rank = ctx.partitionId()
        world = len(ctx.getTaskInfos())
        comm = Communicator(ctx, rank, world)
        comm.started = started
        comm._setup(backend, joined)
        comm.setup_seconds = time.time() - started
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
    finally:
        del store
    out: List[Optional[List[np.ndarray]]] = [None] * len(rows)
    for r in rows:
        out[r["rank"]] = decode_arrays(r["payload"]) if r["payload"] else None
    return out
