"""Map-reduce over DataFrame partitions with DataFrame APIs only (no RDD, no SparkContext).

Step 1 (map): ``mapInArrow`` runs a function over each partition's Arrow
record batches and emits one small *partial* per partition: a list of numpy
arrays, serialised as raw bytes (no pickle).

Step 2 (reduce): partials are summed element-wise.  With ``depth >= 2`` and
many partitions the sums run as a tree on the executors (``groupBy`` +
``applyInArrow`` per level, like ``RDD.treeAggregate``), so the driver receives
at most about ``P ** (1 / depth)`` partials.

All of this is plain DataFrame API, so it runs on classic Spark and on Spark
Connect alike.
"""
from __future__ import annotations

import json
import math
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa

from .errors import task_error
from .faults import maybe_fail

__all__ = ["encode_arrays", "encoded_parts", "decode_arrays", "tree_aggregate", "reduce_partials", "add_partials",
           "PARTIAL_SCHEMA"]

PARTIAL_SCHEMA = "pid long, payload binary"
_PARTIAL_ARROW = pa.schema([("pid", pa.int64()), ("payload", pa.binary())])
_ALLOWED_DTYPES = {"<f8", "<f4", "<i8", "<i4", "|i1", "|u1", "|b1", "<u4", "<u8"}


def encoded_parts(arrays: Sequence[np.ndarray]) -> List[memoryview]:
    """The buffers of :func:`encode_arrays`'s output, uncopied (to write them out one by one):
    its bytes are ``b"".join(encoded_parts(arrays))``."""
    arrays = [np.ascontiguousarray(a) for a in arrays]
    header = json.dumps([[a.dtype.str, list(a.shape)] for a in arrays]).encode()
    parts = [memoryview(len(header).to_bytes(8, "little")), memoryview(header)]
    parts.extend(memoryview(a.reshape(-1)).cast("B") for a in arrays)
    return parts


def encode_arrays(arrays: Sequence[np.ndarray]) -> bytes:
    """Serialise numeric arrays to bytes: a JSON header (dtype, shape) then raw buffers."""
    return b"".join(encoded_parts(arrays))


def decode_arrays(buf: bytes) -> List[np.ndarray]:
    """Inverse of :func:`encode_arrays`; arrays are read-only views of ``buf``.

    Raises ``ValueError`` on a malformed buffer or a non-numeric dtype.
    """
    mv = memoryview(buf)
    if len(mv) < 8:
        raise ValueError("corrupt array payload: too short")
    hlen = int.from_bytes(mv[:8], "little")
    try:
        header = json.loads(bytes(mv[8 : 8 + hlen]))
    except ValueError as exc:
        raise ValueError("corrupt array payload: bad header") from exc
    pos = 8 + hlen
    out = []
    for dtype, shape in header:
        if dtype not in _ALLOWED_DTYPES:
            raise ValueError(f"corrupt array payload: dtype {dtype!r} not allowed")
        dt = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        nbytes = count * dt.itemsize
        if pos + nbytes > len(mv):
            raise ValueError("corrupt array payload: truncated")
        out.append(np.frombuffer(mv[pos : pos + nbytes], dtype=dt).reshape(shape))
        pos += nbytes
    return out


def _partition_id() -> int:
    from pyspark import TaskContext

    ctx = TaskContext.get()
    return ctx.partitionId() if ctx is not None else 0


def _sum_partials(payloads: Iterable[bytes]) -> Optional[List[np.ndarray]]:
    acc: Optional[List[np.ndarray]] = None
    for p in payloads:
        if not p:
            continue
        arrays = decode_arrays(p)
        acc = add_partials(acc, arrays)
    return acc


def add_partials(acc: Optional[List[np.ndarray]], arrays: Optional[Sequence[np.ndarray]]
                 ) -> Optional[List[np.ndarray]]:
    """``acc + arrays`` element-wise, in place in ``acc`` (a copy of ``arrays`` when ``acc`` is
    ``None``; ``None`` stands for nothing).  A shorter list is a prefix of the longer one (e.g.
    counters first, then no data arrays for an empty partition): what both have is summed, the
    rest kept."""
    if arrays is None:
        return acc
    if acc is None:
        return [np.array(a, copy=True) for a in arrays]
    for i, b in enumerate(arrays):
        if i < len(acc):
            acc[i] += b
        else:
            acc.append(np.array(b, copy=True))
    return acc


def _one_row(pid: int, payload: bytes) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.array([pid], pa.int64()), pa.array([payload], pa.binary())], schema=_PARTIAL_ARROW
    )


def tree_aggregate(
    df,
    partial_fn: Callable[[Iterator[pa.RecordBatch]], Optional[Sequence[np.ndarray]]],
    depth: int = 2,
    num_partitions: Optional[int] = None,
) -> Tuple[Optional[List[np.ndarray]], int]:
    """Sum per-partition partial results of ``partial_fn`` over ``df``.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
        Input data (classic or Spark Connect).
    partial_fn : callable
        Receives an iterator of ``pyarrow.RecordBatch`` (one partition) and
        returns a list of numpy arrays (the partial), or ``None`` for nothing.
        It runs on the executors and must be picklable by cloudpickle.
    depth : int
        Tree depth (Spark's ``aggregationDepth``); 1 sends every partial to the driver.
    num_partitions : int, optional
        Number of partitions of ``df`` if known (e.g. from an earlier pass);
        needed to plan a tree of depth >= 2.

    Returns
    -------
    (arrays, num_partitions) : the element-wise sums (``None`` if every partition
    returned ``None``) and the partition count of ``df`` (pass it to later calls
    on the same data to skip counting); with ``depth == 1`` or a tree, the
    number of partials that reached the driver.

    With ``depth >= 2`` and ``num_partitions`` unknown the partials are persisted and one
    job brings the first of them to the driver (at most :data:`INLINE_BYTES` when they are
    of equal size) and counts them; a tree sums the others (a second job), if any.
    """

    def mapper(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        maybe_fail("mapreduce.map")
        res = partial_fn(batches)
        yield _one_row(_partition_id(), encode_arrays(res) if res is not None else b"")

    partials = df.mapInArrow(mapper, PARTIAL_SCHEMA)
    if depth >= 2 and num_partitions is None:
        # The partition count is not known without RDD APIs.  One job materialises the partial
        # rows (persisted) and brings the first of them to the driver, up to INLINE_BYTES in
        # all; the rest, if any, are summed by a tree planned from the count that job gave.
        partials = partials.persist()
        try:
            return _inline_then_tree(partials, depth)
        finally:
            partials.unpersist()
    return reduce_partials(partials, depth, num_partitions)


#: With an unknown partition count, :func:`tree_aggregate` lets partition ``i``'s partial reach the
#: driver in the pass's own job when ``(i + 1) * len(partial) <= INLINE_BYTES`` (so partials of
#: equal size bring at most this many bytes; a tree over the cached rows sums the others).
INLINE_BYTES = 64 << 20


def _inline_then_tree(partials, depth: int):
    """``(sums, partition count)`` of persisted partial rows, as :func:`tree_aggregate` says."""
    from pyspark.sql import functions as F

    fits = F.length("payload") * (F.col("pid") + F.lit(1)) <= F.lit(INLINE_BYTES)
    rows = _run(partials.select("pid", F.when(fits, F.col("payload")).alias("payload")).collect)
    total = _sum_partials(r["payload"] for r in rows if r["payload"] is not None)
    held = sum(1 for r in rows if r["payload"] is None)
    if held:
        rest, _ = reduce_partials(partials.filter(~fits), depth, held)
        total = add_partials(total, rest)
    return total, len(rows)


def reduce_partials(partials, depth: int = 2, num_partitions: Optional[int] = None):
    """Sum a DataFrame of encoded partials (schema :data:`PARTIAL_SCHEMA`, one row per
    partition) as a tree of ``depth`` levels; returns ``(arrays, rows_reaching_driver)``."""
    if depth >= 2 and num_partitions is not None and num_partitions > 2:
        from pyspark.sql import functions as F

        scale = max(int(math.ceil(num_partitions ** (1.0 / depth))), 2)
        cur = num_partitions
        while cur > scale + int(math.ceil(cur / scale)):
            cur = int(math.ceil(cur / scale))
            partials = partials.withColumn("pid", F.col("pid") % F.lit(cur)).groupBy("pid").applyInArrow(
                _combine_group, PARTIAL_SCHEMA
            )
    rows = _run(partials.collect)
    return _sum_partials(r["payload"] for r in rows), len(rows)


def _run(action):
    """Run a Spark action; a failed task (after Spark's retries) raises its own Python error
    line (``sparkml_scale.core.errors.task_error``), not a Py4J/JVM trace."""
    try:
        return action()
    except Exception as exc:  # noqa: BLE001
        raise task_error(exc, "Spark job") from None


def _combine_group(table: pa.Table) -> pa.Table:
    pid = table.column("pid")[0].as_py() if table.num_rows else 0
    acc = _sum_partials(table.column("payload").to_pylist())
    return pa.Table.from_batches([_one_row(pid, encode_arrays(acc) if acc is not None else b"")])
