"""A rank's share of the training data: Arrow batches -> a float32 memory map -> shuffled mini-batches.

No Spark here (only pyarrow/numpy), so the same code runs inside a barrier task's
training process and in tests.

Flow on every rank:

1. :meth:`RankShard.from_arrow_file` reads the Arrow IPC stream the barrier task
   wrote from its partition, one record batch at a time, converts the features
   column (``VectorUDT`` struct or ``array<numeric>``) to float32 rows and appends
   them to a raw file next to it; labels (and the validation mask) stay in memory
   (8 bytes per row).  Peak Python memory is one Arrow batch, whatever the share's size.
2. The file is opened as a ``numpy.memmap`` of shape ``(n, *inputShape)``: the OS
   pages it in and out, so resident memory stays bounded by the page cache.
3. :meth:`RankShard.epoch_batches` draws a fresh permutation of the share each epoch
   (seeded by ``(seed, rank, epoch)``) and gathers one mini-batch at a time
   (indices sorted within the batch for locality); every rank yields exactly the same
   number of batches (needed by DDP/Horovod collectives), wrapping around its own
   permutation when its share is smaller than its quota -- as
   ``torch.utils.data.DistributedSampler`` pads.
"""
from __future__ import annotations

import math
import os
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa

__all__ = ["features_to_float32", "RankShard", "rank_batch_sizes", "steps_per_epoch"]


class ShardDataError(ValueError):
    """The rank's data cannot be used as configured (names the column or param)."""


def features_to_float32(arr, column: str, input_shape: Optional[Sequence[int]] = None) -> np.ndarray:
    """An Arrow features column as a float32 array ``(n, *input_shape)`` (or ``(n, d)``).

    Accepts Spark's ``VectorUDT`` struct layout (dense or sparse vectors) and
    ``list<numeric>``/``fixed_size_list`` columns of equal lengths.  Raises
    :class:`ShardDataError` naming ``column`` on nulls, ragged rows or a size that does
    not match ``input_shape``.
    """
    from ..core.arrow import VectorColumnError, lists_to_dense, vectors_to_block

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    try:
        if pa.types.is_struct(arr.type):
            X = np.asarray(vectors_to_block(arr, column, dense=True))
        elif pa.types.is_fixed_size_list(arr.type):
            if arr.null_count:
                raise VectorColumnError(f"column {column!r} holds {arr.null_count} null value(s)")
            X = np.asarray(arr.flatten().to_numpy(zero_copy_only=False)).reshape(len(arr), arr.type.list_size)
        elif pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
            X = _lists_fast(arr)
            if X is None:
                X = lists_to_dense(arr, column)
        else:
            raise ShardDataError(f"column {column!r} (param 'featuresCol') must be a vector or an array of numbers, "
                                 f"got Arrow type {arr.type}")
    except VectorColumnError as exc:
        raise ShardDataError(str(exc)) from None
    X = X.astype(np.float32, copy=False)
    if input_shape:
        shape = tuple(int(s) for s in input_shape)
        if X.shape[1] != int(np.prod(shape)):
            raise ShardDataError(f"column {column!r} holds rows of {X.shape[1]} values, which do not fit "
                                 f"param 'inputShape' {list(shape)} ({int(np.prod(shape))} values)")
        X = X.reshape((len(X),) + shape)
    return X


def _lists_fast(arr) -> Optional[np.ndarray]:
    """``(n, d)`` numbers of a ``list<float|double|int>`` column with no null list or value and lists of one
    length, converted once to float32 (no copy for ``list<float>``: a read-only view of the Arrow buffer);
    ``None`` otherwise (the general path, which also names what is wrong)."""
    if arr.null_count or len(arr) == 0:
        return None
    vt = arr.type.value_type
    if not (pa.types.is_floating(vt) or pa.types.is_integer(vt)):
        return None
    offsets = np.asarray(arr.offsets)
    n = len(arr)
    d = int(offsets[1] - offsets[0])
    if (np.diff(offsets) != d).any():
        return None
    values = arr.values.slice(int(offsets[0]), n * d)
    if values.null_count:
        return None
    X = values.to_numpy(zero_copy_only=False)
    return X.astype(np.float32, copy=False).reshape(n, d)


def rank_batch_sizes(batch_size: int, world: int) -> List[int]:
    """Per-rank mini-batch sizes summing to ``batch_size`` (the global batch), as equal as possible."""
    if batch_size < world:
        raise ShardDataError(f"param 'batchSize' ({batch_size}) must be >= param 'numProc' ({world}): "
                             "it is the global mini-batch, split over the processes")
    base, extra = divmod(batch_size, world)
    return [base + (1 if r < extra else 0) for r in range(world)]


def steps_per_epoch(total_rows: int, batch_size: int) -> int:
    """Optimizer steps per epoch: ``ceil(total_rows / batch_size)``, as a single-process loop."""
    return max(1, math.ceil(total_rows / batch_size))


def canonical_order(X: np.ndarray, y: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Row positions sorted by a 64-bit fingerprint of each row's feature bytes and label.

    A partition's rows arrive in an order that depends on where its shuffle blocks were
    fetched from (local blocks first): on a cluster, a re-run after a lost executor can see
    the same rows in another order.  Training in this order instead makes a fit, and a resume
    from its checkpoint, independent of that (rows with equal features and label are
    interchangeable).  ``O(n d)``, in chunks of ``chunk`` rows; ``(n,)`` int64."""
    n = len(y)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    flat = X.reshape(n, -1)
    w = np.random.default_rng(0x5EED).integers(1, 2**63, size=flat.shape[1] + 1, dtype=np.uint64) | np.uint64(1)
    fp = np.empty(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for a in range(0, n, chunk):
            bits = np.ascontiguousarray(flat[a:a + chunk], dtype=np.float32).view(np.uint32).astype(np.uint64)
            h = (bits * w[:-1]).sum(axis=1, dtype=np.uint64)
            h += np.ascontiguousarray(y[a:a + chunk], dtype=np.float64).view(np.uint64) * w[-1]
            fp[a:a + chunk] = h ^ (h >> np.uint64(29))
    return np.argsort(fp, kind="stable")


class RankShard:
    """One rank's training (and validation) rows; see the module docstring."""

    def __init__(self, X: np.ndarray, y: np.ndarray, val_mask: Optional[np.ndarray] = None,
                 order: Optional[np.ndarray] = None):
        self.X = X
        self.y = y
        self.val_mask = val_mask if val_mask is not None else np.zeros(len(y), dtype=bool)
        #: Row positions in canonical order (see :func:`canonical_order`); training, validation and
        #: the shuffles follow it, so they do not depend on the order rows arrived in.
        self.order = order if order is not None else np.arange(len(y))
        self._rank = np.full(len(y), -1, dtype=np.int64)
        self._rank[self.order] = np.arange(len(self.order))
        self.train_idx = self.order[~self.val_mask[self.order]]
        self.val_idx = self.order[self.val_mask[self.order]]

    @classmethod
    def from_arrow_file(cls, path: str, features_col: str, label_col: str, *,
                        input_shape: Optional[Sequence[int]] = None, validation_col: Optional[str] = None,
                        validation_fraction: float = 0.0, seed: int = 0, rank: int = 0,
                        spill_dir: Optional[str] = None,
                        column_names: Optional[Sequence[str]] = None) -> "RankShard":
        """Read the Arrow IPC *stream* at ``path`` batch by batch (see the module docstring).

        ``column_names``: the names of the stream's columns, in order, when the stream carries
        positional aliases (Spark's ``mapInArrow`` cannot carry names with dots or backticks)."""
        spill_dir = spill_dir or os.path.dirname(os.path.abspath(path))
        raw = os.path.join(spill_dir, f"features-{os.getpid()}.f32")
        labels: List[np.ndarray] = []
        masks: List[np.ndarray] = []
        row_shape: Optional[Tuple[int, ...]] = None
        n = 0
        with pa.memory_map(path) as source, open(raw, "wb") as out:
            reader = pa.ipc.open_stream(source)
            names = list(column_names) if column_names else reader.schema.names
            for col, param in ((features_col, "featuresCol"), (label_col, "labelCol")):
                if col not in names:
                    raise ShardDataError(f"column {col!r} (param {param!r}) is not in the data: {names}")
            if validation_col and validation_col not in names:
                raise ShardDataError(f"column {validation_col!r} (param 'validationCol') is not in the data: {names}")
            for batch in reader:
                if batch.num_rows == 0:
                    continue
                X = features_to_float32(batch.column(names.index(features_col)), features_col, input_shape)
                if not np.isfinite(X).all():
                    raise ShardDataError(f"column {features_col!r} (param 'featuresCol') holds "
                                         f"{int((~np.isfinite(X)).sum())} NaN or infinite value(s)")
                if row_shape is None:
                    row_shape = X.shape[1:]
                elif X.shape[1:] != row_shape:
                    raise ShardDataError(f"column {features_col!r} holds rows of different sizes "
                                         f"({int(np.prod(row_shape))} and {int(np.prod(X.shape[1:]))})")
                out.write(memoryview(np.ascontiguousarray(X)).cast("B"))
                lab = batch.column(names.index(label_col))
                if lab.null_count:
                    raise ShardDataError(f"column {label_col!r} (param 'labelCol') holds {lab.null_count} null(s)")
                labels.append(np.asarray(lab.to_numpy(zero_copy_only=False), dtype=np.float64))
                if validation_col:
                    v = batch.column(names.index(validation_col))
                    masks.append(np.asarray(v.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool))
                n += batch.num_rows
        if n == 0:
            os.unlink(raw)
            return cls(np.zeros((0,) + tuple(input_shape or (0,)), np.float32), np.zeros(0))
        X = np.memmap(raw, dtype=np.float32, mode="r", shape=(n,) + tuple(row_shape))
        y = np.concatenate(labels)
        if not np.isfinite(y).all():
            raise ShardDataError(f"column {label_col!r} (param 'labelCol') holds NaN or infinite values")
        order = canonical_order(X, y)
        if validation_col:
            mask = np.concatenate(masks)
        elif validation_fraction > 0:
            mask = np.empty(n, dtype=bool)
            mask[order] = np.random.default_rng([seed, rank, 7]).random(n) < validation_fraction
        else:
            mask = None
        return cls(X, y, mask, order)

    def subset(self, keep: np.ndarray) -> "RankShard":
        """The same rows (no copy) with only those where ``keep`` (by row position) is true used for
        training/validation."""
        return RankShard(self.X, self.y, self.val_mask, self.order[keep[self.order]])

    def stride(self, start: int, step: int) -> "RankShard":
        """Every ``step``-th row of the canonical order from ``start`` (processes sharing a partition)."""
        keep = np.zeros(len(self.y), dtype=bool)
        keep[self.order[start::step]] = True
        return self.subset(keep)

    @property
    def num_train(self) -> int:
        return len(self.train_idx)

    def epoch_batches(self, epoch: int, steps: int, batch_size: int, seed: int, rank: int
                      ) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """``steps`` shuffled mini-batches of ``batch_size`` training rows for ``epoch``."""
        if self.num_train == 0:
            raise ShardDataError("a training process got no training rows; use fewer processes (param "
                                 "'numProc') or more data")
        rng = np.random.default_rng([seed, rank, epoch])
        need = steps * batch_size
        reps = math.ceil(need / self.num_train)
        order = np.concatenate([self.train_idx[rng.permutation(self.num_train)] for _ in range(reps)])[:need]
        for s in range(steps):
            idx = order[s * batch_size:(s + 1) * batch_size]
            idx = idx[np.argsort(self._rank[idx])]  # a batch's rows in canonical order
            yield np.asarray(self.X[idx]), self.y[idx]

    def val_batches(self, batch_size: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """The validation rows in order, ``batch_size`` at a time."""
        for s in range(0, len(self.val_idx), batch_size):
            idx = self.val_idx[s:s + batch_size]
            yield np.asarray(self.X[idx]), self.y[idx]

    def close(self) -> None:
        name = getattr(self.X, "filename", None)
        self.X = None
        if name and os.path.exists(name):
            os.unlink(name)
