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

Barrier stages need all their tasks running at once (see :mod:`sparkml_scale.core.cluster`
for counting task slots): :func:`run_barrier` never asks for more tasks than
:func:`~sparkml_scale.core.cluster.wait_for_slots` finds, and callers fall back to map-reduce
when there are not enough (:func:`~sparkml_scale.core.cluster.choose_execution`).  Pattern after pyspark's ``ml/torch/distributor.py``.
"""
from __future__ import annotations

import base64
import datetime
from typing import Callable, Iterator, List, Optional, Sequence

import numpy as np
import pyarrow as pa

from .cluster import wait_for_slots
from .errors import task_error
from .faults import maybe_fail
from .mapreduce import decode_arrays, encode_arrays

__all__ = ["run_barrier", "after_barrier", "Communicator"]

_RESULT_ARROW = pa.schema([("rank", pa.int64()), ("payload", pa.binary())])
RESULT_SCHEMA = "rank long, payload binary"
#: Seconds a rank waits for the others (rendezvous and each collective).
TIMEOUT_S = 1800


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
