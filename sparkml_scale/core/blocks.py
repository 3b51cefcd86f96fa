"""Training data as cached numpy blocks, with column statistics from the same pass.

Iterative fits read their data many times.  :func:`make_blocks` converts the
``(features, label, weight)`` columns once into binary rows of at most a few MB
each (a dense ``(n, d)`` float64 matrix or CSR parts, plus label and weight
vectors), caches them, and computes weighted column statistics while doing so.
Every later pass only decodes raw buffers (``numpy.frombuffer``).

Dense vectors reach Python through ``vector_to_array`` (a ``list<double>``
column: about 6x faster through Arrow than the ``VectorUDT`` struct); sparse
input keeps the struct path and stays CSR.

The rows are read and checked by :mod:`sparkml_scale.core.training` (the prologue
shared with the one-pass statistics of :mod:`sparkml_scale.core.gram`): bad rows are
counted in the statistics rows and the driver raises one clear Python error
(``VectorColumnError``/``ValueError``) naming the column.
"""
from __future__ import annotations

import mmap
import os
import tempfile
import uuid
from typing import Iterator, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from .arrow import Block
from .faults import maybe_fail
from .mapreduce import _partition_id, _run, decode_arrays, encode_arrays, encoded_parts, reduce_partials
from .training import BadRows, TrainingColumns, clean_blocks

__all__ = ["make_blocks", "iter_blocks", "TrainingBlocks", "BlockStats", "StatsAccumulator", "load_partition",
           "LocalBlockStore"]

BLOCK_SCHEMA = "kind tinyint, pid bigint, payload binary"
_BLOCK_ARROW = pa.schema([("kind", pa.int8()), ("pid", pa.int64()), ("payload", pa.binary())])
#: Target size of one cached block row.
BLOCK_BYTES = 2 << 20


def _encode_block(X: Block, y: np.ndarray, w: np.ndarray) -> bytes:
    return encode_arrays(_block_arrays(X, y, w))


def _block_arrays(X: Block, y: np.ndarray, w: np.ndarray) -> List[np.ndarray]:
    n, d = X.shape
    if sp.issparse(X):
        return [np.array([1, n, d], dtype=np.int64), X.data, X.indices, X.indptr, y, w]
    return [np.array([0, n, d], dtype=np.int64), X, y, w]


def _decode_block(payload: bytes) -> Tuple[Block, np.ndarray, np.ndarray]:
    arrays = decode_arrays(payload)
    kind, n, d = (int(v) for v in arrays[0])
    if kind == 1:
        data, indices, indptr, y, w = arrays[1:]
        return sp.csr_matrix((data, indices, indptr), shape=(n, d)), y, w
    X, y, w = arrays[1:]
    return X, y, w


def _row(kind: int, pid: int, payload: bytes) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.array([kind], pa.int8()), pa.array([pid], pa.int64()), pa.array([payload], pa.binary())],
        schema=_BLOCK_ARROW,
    )


def _chunks(X: Block, block_bytes: int = BLOCK_BYTES):
    """Row ranges of ``X`` of about ``block_bytes`` each."""
    n = X.shape[0]
    if sp.issparse(X):
        per_row = max(1, X.nnz // max(n, 1)) * 12 + 16
    else:
        per_row = X.shape[1] * 8 + 16
    step = max(1, block_bytes // per_row)
    for s in range(0, n, step):
        yield s, min(n, s + step)


class BlockStats:
    """Weighted column statistics of the training rows, and the bad-row counts.

    Attributes: ``meta`` (the :class:`~sparkml_scale.core.training.BadRows` vector),
    ``count`` (rows used), ``weight_sum``, ``mean`` (d,), ``std`` (d,) (unbiased weighted, as
    Spark's ``Summarizer``), ``label_counts`` (weighted counts of the classes ``0..K-1``),
    ``num_features``, ``num_partitions``, ``nnz`` (stored values), ``sparse`` (any block is CSR).
    """

    def __init__(self, arrays: Optional[List[np.ndarray]], num_partitions: int, d: int, K: int):
        if arrays is None:
            arrays = [BadRows.new(), np.zeros(3), np.zeros(d), np.zeros(d), np.zeros(K)]
        meta, extra, s1, s2, label_counts = arrays
        self.meta = meta
        self.count = int(meta[BadRows.ROWS])
        self.weight_sum = float(meta[BadRows.WSUM])
        self.weight_sq_sum = float(extra[0])
        self.nnz = int(extra[1])  # stored values (dense rows count all d)
        self.sparse = bool(extra[2] > 0)
        self.num_features = len(s1)
        self.label_counts = label_counts
        self.num_partitions = num_partitions
        W = self.weight_sum
        self.mean = s1 / W if W > 0 else np.zeros_like(s1)
        denom = W - self.weight_sq_sum / W if W > 0 else 0.0
        var = (s2 - W * self.mean**2) / denom if denom > 0 else np.zeros_like(s1)
        self.std = np.sqrt(np.maximum(var, 0.0))


class StatsAccumulator:
    """The partial :class:`BlockStats` of one partition, summed block by block while its rows are
    read (executor side; shared by :func:`make_blocks` and :func:`load_partition`).

    :meth:`blocks` wraps :func:`~sparkml_scale.core.training.clean_blocks` over the Arrow batches
    of :meth:`TrainingColumns.select`'s columns and yields ``(X, y, w)`` with ``y`` ``(m,)``
    zeros without a label column and ``w`` ``(m,)`` ones without a weight column; :meth:`arrays`
    gives ``[meta (BadRows.SIZE,), extra (3,), s1 (d,), s2 (d,), label_counts (K,)]`` float64,
    which add up over partitions and make a :class:`BlockStats`.
    """

    def __init__(self, cols: TrainingColumns):
        d = cols.size
        self.cols = cols
        self.classes = cols.labels == "classes"
        self.meta = BadRows.new()
        self.extra = np.zeros(3)  # sum w^2, stored values, sparse blocks
        self.s1, self.s2 = np.zeros(d), np.zeros(d)
        self.counts = np.zeros(cols.num_classes if self.classes else 1)

    def add(self, X: Block, w: np.ndarray) -> None:
        """Add one block's weighted sums (``X`` ``(m, d)`` ndarray or CSR, ``w`` ``(m,)``)."""
        extra = self.extra
        extra[0] += w @ w
        if sp.issparse(X):
            extra[1] += X.nnz
            extra[2] += 1
            self.s1 += X.T @ w
            self.s2 += X.multiply(X).T @ w
        else:
            extra[1] += X.size
            self.s1 += w @ X
            self.s2 += w @ (X * X)

    def blocks(self, batches: Iterator[pa.RecordBatch]) -> Iterator[Tuple[Block, np.ndarray, np.ndarray]]:
        for X, y, w in clean_blocks(batches, self.cols, self.meta, need_weights=True,
                                    class_counts=self.counts if self.classes else None):
            if y is None:
                y = np.zeros(X.shape[0])
            self.add(X, w)
            yield X, y, w

    def arrays(self) -> List[np.ndarray]:
        return [self.meta, self.extra, self.s1, self.s2, self.counts]


#: :func:`load_partition` stacks consecutive Arrow batches until a block has this many rows.
MIN_BLOCK_ROWS = 8192


def _stack(group):
    if len(group) == 1:
        return group[0]
    Xs = [g[0] for g in group]
    if any(sp.issparse(X) for X in Xs):
        X = sp.vstack([sp.csr_matrix(X) for X in Xs], format="csr")
    else:
        X = np.vstack(Xs)
    return X, np.concatenate([g[1] for g in group]), np.concatenate([g[2] for g in group])


def load_partition(batches: Iterator[pa.RecordBatch], cols: TrainingColumns
                   ) -> Tuple[List[Tuple[Block, np.ndarray, np.ndarray]], List[np.ndarray]]:
    """Read one partition's training rows straight from its Arrow batches (executor side, e.g.
    a barrier task): ``(blocks, partial statistics)``.

    ``blocks``: a list of ``(X, y, w)``, ``X`` ``(m, d)`` float64 ndarray (views of the Arrow
    buffers where possible), or CSR when the column is read sparse, ``y``/``w`` ``(m,)`` float64
    (zeros/ones without a label/weight column); consecutive small batches are stacked into
    blocks of at least :data:`MIN_BLOCK_ROWS` rows.  The statistics as
    :meth:`StatsAccumulator.arrays` (summed over partitions they make a :class:`BlockStats`;
    bad rows are counted, never raised).
    """
    acc = StatsAccumulator(cols)
    out, group, rows = [], [], 0
    for X, y, w in acc.blocks(batches):
        group.append((X, y, w))
        rows += X.shape[0]
        if rows >= MIN_BLOCK_ROWS:
            out.append(_stack(group))
            group, rows = [], 0
    if group:
        out.append(_stack(group))
    return out, acc.arrays()


class LocalBlockStore:
    """Blocks kept in files on the executors' local disks instead of the Spark cache (for
    map-reduce fits that read them once per evaluation).

    One file per partition, ``<local dir>/sparkml_scale-blocks/<key>/part-<pid>.blk``, where
    the local dir is the first of the executor's ``SPARK_LOCAL_DIRS`` (Spark's block-manager
    dir, removed when the application stops; the system temp dir outside Spark).  A file holds
    the partition's blocks one after another, each an 8-byte little-endian length then
    :func:`~sparkml_scale.core.mapreduce.encode_arrays` bytes; it is written to a temporary
    name and renamed, so a reader sees a whole file or none.  Reads map the file
    (``mmap``): every pass after the first is a page-cache read with no copy and no transfer
    from the JVM.

    The Spark cache keeps one small row per partition (its statistics), computed by the same
    task that wrote the file: scheduling a later job on that cached row sends it to the
    executor holding the file, and losing the row (executor lost) rebuilds both.  A task that
    still finds no file (it ran elsewhere) reports a miss and the caller reads that partition
    from the input again (:meth:`TrainingData.aggregate
    <sparkml_scale.core.stage.TrainingData.aggregate>`).  This object is picklable (a key).
    """

    def __init__(self, key: Optional[str] = None):
        self.key = key or uuid.uuid4().hex

    def _dir(self) -> str:
        base = (os.environ.get("SPARK_LOCAL_DIRS") or "").split(",")[0] or tempfile.gettempdir()
        return os.path.join(base, "sparkml_scale-blocks", self.key)

    def path(self, pid: int) -> str:
        """The file of partition ``pid`` on this machine."""
        return os.path.join(self._dir(), f"part-{int(pid):05d}.blk")

    def write(self, pid: int, blocks: Iterator[Tuple[Block, np.ndarray, np.ndarray]]) -> bool:
        """Write partition ``pid``'s ``(X, y, w)`` blocks (consumed to the end in any case);
        ``False`` when the file could not be written (e.g. a full disk: nothing is left behind
        and readers miss)."""
        path = self.path(pid)
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(tmp, "wb") as f:
                for X, y, w in blocks:
                    parts = encoded_parts(_block_arrays(X, y, w))
                    f.write(sum(p.nbytes for p in parts).to_bytes(8, "little"))
                    for p in parts:
                        f.write(p)
            os.replace(tmp, path)
            return True
        except OSError:
            for _ in blocks:  # the statistics still need every row
                pass
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return False

    def read(self, pid: int) -> Optional[List[Tuple[Block, np.ndarray, np.ndarray]]]:
        """Partition ``pid``'s blocks as read-only views of the mapped file, or ``None`` when
        this machine has no file for it."""
        try:
            with open(self.path(pid), "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    return []
                buf = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
        except OSError:
            return None
        out, pos = [], 0
        while pos < size:
            n = int.from_bytes(buf[pos:pos + 8], "little")
            out.append(_decode_block(buf[pos + 8:pos + 8 + n]))
            pos += 8 + n
        return out

    def remove(self, pid: int) -> None:
        """Delete partition ``pid``'s file on this machine (and the store's dir once empty)."""
        try:
            os.unlink(self.path(pid))
        except OSError:
            pass
        try:
            os.rmdir(self._dir())
        except OSError:
            pass


class TrainingBlocks:
    """Cached blocks (``df``: one binary row per block, and one statistics row per partition)
    and their :class:`BlockStats`; with a :class:`LocalBlockStore` (``store``) the blocks are in
    its files and ``df`` holds only the statistics rows."""

    def __init__(self, df, stats: BlockStats, store: Optional[LocalBlockStore] = None, block_bytes: int = BLOCK_BYTES):
        self.df = df
        self.stats = stats
        self.store = store
        #: Target bytes of one block (a partition read again cuts its blocks the same way).
        self.block_bytes = block_bytes

    @property
    def blocks(self):
        """DataFrame of block rows for :func:`iter_blocks` (column 0 is the payload); with a
        ``store``: one row per partition (``pid``), to run each partition's task where its file is."""
        if self.store is not None:
            return self.df.select("pid")
        return self.df.filter("kind = 0").select("payload")

    def unpersist(self, remove_files: bool = True) -> None:
        """Release the cache, and (``remove_files``) the store's files on the executors holding
        the cached rows, in one light job (best effort: a file written elsewhere after a miss,
        or left by a failed build, stays until the application ends, in Spark's local dir)."""
        try:
            if self.store is not None and remove_files:
                store = self.store

                def remove(batches):
                    for b in batches:
                        for pid in b.column(0).to_pylist():
                            store.remove(pid)
                    yield pa.RecordBatch.from_arrays([pa.array([], pa.int64())], names=["pid"])

                try:
                    self.blocks.mapInArrow(remove, "pid long").collect()
                except Exception:  # noqa: BLE001 - cleaning up must not hide the fit's own error
                    pass
        finally:
            self.df.unpersist()


def make_blocks(df, cols: TrainingColumns, depth: int = 2, block_bytes: int = 0,
                store: Optional[LocalBlockStore] = None) -> TrainingBlocks:
    """Convert and cache ``df``'s training columns (``cols``, already probed); compute their
    statistics and bad-row counts in the same pass.

    Rows are checked by :func:`~sparkml_scale.core.training.clean_blocks` and stacked into
    blocks of about ``block_bytes`` (0: :data:`BLOCK_BYTES`, 2 MiB) within each partition.  The
    caller raises for bad rows (``BadRows.raise_for(stats.meta, cols)``) and calls
    ``unpersist()`` on the result when done.  Labels default to 0 and weights to 1 when the
    columns are not set.  With ``store`` the blocks go to its local files, not the Spark cache.
    """
    block_bytes = int(block_bytes) if block_bytes and block_bytes > 0 else BLOCK_BYTES
    d = cols.size
    K = cols.num_classes if cols.labels == "classes" else 1

    def to_blocks(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        maybe_fail("blocks.build")
        acc = StatsAccumulator(cols)
        pid = _partition_id()
        if store is not None:
            store.write(pid, block_chunks(acc.blocks(batches), block_bytes))
        else:
            for X, y, w in block_chunks(acc.blocks(batches), block_bytes):
                yield _row(0, 0, _encode_block(X, y, w))
        yield _row(1, pid, encode_arrays(acc.arrays()))

    cached = cols.select(df).mapInArrow(to_blocks, BLOCK_SCHEMA).persist()
    heads = cached.filter("kind = 1").select("pid")
    try:
        # This job materialises the cache; its result is one small row per partition.
        nparts = len(_run(heads.collect))
        arrays, _ = reduce_partials(cached.filter("kind = 1").select("pid", "payload"), depth, nparts)
    except BaseException:
        TrainingBlocks(cached, None, store).unpersist(remove_files=False)  # no job over a failed build
        raise
    return TrainingBlocks(cached, BlockStats(arrays, nparts, d, K), store, block_bytes)


def block_chunks(blocks: Iterator[Tuple[Block, np.ndarray, np.ndarray]], block_bytes: int = BLOCK_BYTES
                 ) -> Iterator[Tuple[Block, np.ndarray, np.ndarray]]:
    """``blocks`` cut into row ranges of about ``block_bytes`` each (the cached blocks)."""
    for X, y, w in blocks:
        for s, e in _chunks(X, block_bytes):
            yield X[s:e], y[s:e], w[s:e]


def iter_blocks(batches: Iterator[pa.RecordBatch]) -> Iterator[Tuple[Block, np.ndarray, np.ndarray]]:
    """Decode the block rows of one partition (column 0 = payload): yields ``(X, y, w)``."""
    for b in batches:
        for payload in b.column(0).to_pylist():
            if payload:
                yield _decode_block(payload)
