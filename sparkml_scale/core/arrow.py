"""Arrow <-> numpy conversion for Spark columns, without a Python object per row.

Spark (4.x) hands ``VectorUDT`` columns to ``mapInArrow`` and Arrow UDFs as
``struct<type: int8, size: int32, indices: list<int32>, values: list<float64>>``
where ``type`` is 0 for a sparse and 1 for a dense vector (dense rows leave
``size`` and ``indices`` null).  The functions here turn such a column into one
numpy block -- a dense ``float64`` array of shape ``(n, d)`` or a
``scipy.sparse.csr_matrix`` of shape ``(n, d)`` -- and back, with vectorised
numpy code only.
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

__all__ = [
    "VECTOR_ARROW_TYPE",
    "Block",
    "vectors_to_block",
    "block_to_vectors",
    "dense_to_vectors",
    "bytes_to_dense",
    "binary_offsets",
    "numeric_to_numpy",
    "VectorColumnError",
]

Block = Union[np.ndarray, sp.csr_matrix]

_INDEX_LIST = pa.list_(pa.field("element", pa.int32(), nullable=False))
_VALUE_LIST = pa.list_(pa.field("element", pa.float64(), nullable=False))

#: The Arrow type Spark uses for ``pyspark.ml.linalg.VectorUDT`` values.
VECTOR_ARROW_TYPE = pa.struct(
    [
        pa.field("type", pa.int8(), nullable=False),
        pa.field("size", pa.int32()),
        pa.field("indices", _INDEX_LIST),
        pa.field("values", _VALUE_LIST),
    ]
)


class VectorColumnError(ValueError):
    """A vector column holds nulls or vectors of different sizes."""


def _combine(arr: Union[pa.Array, pa.ChunkedArray]) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        return arr.combine_chunks()
    return arr


def _list_parts(arr: pa.ListArray):
    """Offsets (int64, starting at 0) and flat values of a list array, honouring slices."""
    offsets = arr.offsets.to_numpy().astype(np.int64, copy=False)
    start = offsets[0]
    flat = arr.values.slice(start, offsets[-1] - start).to_numpy(zero_copy_only=False)
    return offsets - start, flat


def binary_offsets(arr: pa.Array) -> np.ndarray:
    """The ``len(arr) + 1`` value offsets (int64) of a binary or string array (``large_`` types too)
    into its data buffer ``arr.buffers()[2]``, honouring slices (not rebased to 0)."""
    large = pa.types.is_large_binary(arr.type) or pa.types.is_large_string(arr.type)
    t = np.int64 if large else np.int32
    offsets = np.frombuffer(arr.buffers()[1], dtype=t, count=arr.offset + len(arr) + 1)[arr.offset:]
    return offsets.astype(np.int64, copy=False)


def vectors_to_block(
    arr: Union[pa.Array, pa.ChunkedArray],
    column: str = "features",
    size: Optional[int] = None,
    dense: Optional[bool] = None,
) -> Block:
    """Convert an Arrow ``VectorUDT`` column to one numpy block.

    Parameters
    ----------
    arr : pyarrow.StructArray
        ``n`` vectors in Spark's Arrow layout (see module docstring).
    column : str
        Column name, used in error messages.
    size : int, optional
        Expected vector size ``d``; a different size raises.
    dense : bool, optional
        ``True`` always returns a dense array, ``False`` always CSR, ``None``
        returns dense when every row is dense and CSR otherwise.

    Returns
    -------
    numpy.ndarray of float64, shape (n, d), or scipy.sparse.csr_matrix (n, d)

    Raises
    ------
    VectorColumnError
        If the column holds nulls or vectors of different sizes.
    """
    arr = _combine(arr)
    n = len(arr)
    if arr.null_count:
        raise VectorColumnError(f"column {column!r} holds {arr.null_count} null vector(s)")
    kinds = arr.field("type").to_numpy(zero_copy_only=False)
    offsets, values = _list_parts(arr.field("values"))
    lengths = np.diff(offsets)
    is_dense = kinds == 1
    sizes = np.where(is_dense, lengths, arr.field("size").fill_null(-1).to_numpy(zero_copy_only=False))
    if n == 0:
        d = size if size is not None else 0
    else:
        d = int(sizes[0])
        if (sizes != d).any():
            other = int(sizes[sizes != d][0])
            raise VectorColumnError(
                f"column {column!r} holds vectors of different sizes ({d} and {other})"
            )
        if size is not None and d != size:
            raise VectorColumnError(f"column {column!r} holds vectors of size {d}, expected {size}")
    values = np.asarray(values, dtype=np.float64)
    all_dense = bool(is_dense.all())
    if all_dense and dense is not False:
        return values.reshape(n, d)
    # CSR: dense rows get indices 0..len-1, sparse rows keep theirs.
    nnz = len(values)
    pos = np.arange(nnz, dtype=np.int64) - np.repeat(offsets[:-1], lengths)
    indices = pos.astype(np.int32)
    if not all_dense:
        _, sparse_idx = _list_parts(arr.field("indices"))
        indices[np.repeat(~is_dense, lengths)] = sparse_idx
    mat = sp.csr_matrix((values, indices, offsets), shape=(n, d))
    if dense:
        return mat.toarray()
    return mat


def lists_to_dense(
    arr: Union[pa.Array, pa.ChunkedArray], column: str = "features", size: Optional[int] = None
) -> np.ndarray:
    """A ``list<float64>`` column of equal-length lists (e.g. ``vector_to_array(v)``) as ``(n, d)``.

    Raises ``VectorColumnError`` on nulls or lists of different lengths.
    """
    arr = _combine(arr)
    n = len(arr)
    if arr.null_count:
        raise VectorColumnError(f"column {column!r} holds {arr.null_count} null vector(s)")
    offsets, values = _list_parts(arr)
    d = _equal_sizes(np.diff(offsets), column, size)
    return np.asarray(values, dtype=np.float64).reshape(n, d)


def _equal_sizes(lengths: np.ndarray, column: str, size: Optional[int]) -> int:
    """The vector size ``d`` that every row's length in ``lengths`` (values per row) must equal;
    ``size`` when there is no row.  Raises ``VectorColumnError`` naming ``column`` for rows of
    different sizes, or of a size other than ``size`` when it is given."""
    if not len(lengths):
        return size or 0
    d = int(lengths[0])
    if (lengths != d).any():
        other = int(lengths[lengths != d][0])
        raise VectorColumnError(f"column {column!r} holds vectors of different sizes ({d} and {other})")
    if size is not None and d != size:
        raise VectorColumnError(f"column {column!r} holds vectors of size {d}, expected {size}")
    return d


def bytes_to_dense(
    arr: Union[pa.Array, pa.ChunkedArray], column: str = "features", size: Optional[int] = None
) -> np.ndarray:
    """A ``binary`` column of vectors as little-endian float64 bytes (``8 d`` bytes per row, what
    the package's JVM function ``sparkml_scale_vector_to_bytes`` writes, see
    :mod:`sparkml_scale.core.jvm`) as an ``(n, d)`` float64 array: a read-only view of the Arrow
    buffer, copied only when it is not 8-byte aligned.

    Raises ``VectorColumnError`` (naming ``column``) on nulls, on rows of different sizes, or
    when ``size`` is given and differs.
    """
    arr = _combine(arr)
    n = len(arr)
    if arr.null_count:
        raise VectorColumnError(f"column {column!r} holds {arr.null_count} null vector(s)")
    if n == 0:
        return np.zeros((0, size or 0))
    offsets = binary_offsets(arr)
    nbytes = np.diff(offsets)
    if (nbytes % 8).any():
        raise VectorColumnError(f"column {column!r}: {int(nbytes[nbytes % 8 != 0][0])} bytes per vector "
                                "is not a whole number of doubles")
    d = _equal_sizes(nbytes // 8, column, size)
    if d == 0:
        return np.zeros((n, 0))
    X = np.frombuffer(arr.buffers()[2], dtype="<f8", count=n * d, offset=int(offsets[0])).reshape(n, d)
    if not X.flags.aligned:
        X = X.copy()
    return X.astype(np.float64, copy=False)


def dense_to_vectors(x: np.ndarray) -> pa.StructArray:
    """Arrow ``VectorUDT`` column of dense vectors from a 2-d float array ``(n, d)``."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    n, d = x.shape
    offsets = pa.array(np.arange(0, n * d + 1, d, dtype=np.int32) if d else np.zeros(n + 1, np.int32))
    values = pa.ListArray.from_arrays(offsets, pa.array(x.ravel()), type=_VALUE_LIST)
    return pa.StructArray.from_arrays(
        [
            pa.array(np.ones(n, dtype=np.int8)),
            pa.nulls(n, pa.int32()),
            pa.nulls(n, _INDEX_LIST),
            values,
        ],
        fields=list(VECTOR_ARROW_TYPE),
    )


def block_to_vectors(block: Block) -> pa.StructArray:
    """Arrow ``VectorUDT`` column from a block: dense rows for an ndarray, sparse for CSR.

    CSR rows keep their stored entries as they are (explicit zeros included);
    indices within a row must already be sorted (``csr.has_sorted_indices``).
    """
    if not sp.issparse(block):
        return dense_to_vectors(block)
    csr = sp.csr_matrix(block)
    n, d = csr.shape
    offsets = pa.array(csr.indptr.astype(np.int32, copy=False))
    return pa.StructArray.from_arrays(
        [
            pa.array(np.zeros(n, dtype=np.int8)),
            pa.array(np.full(n, d, dtype=np.int32)),
            pa.ListArray.from_arrays(offsets, pa.array(csr.indices.astype(np.int32, copy=False)), type=_INDEX_LIST),
            pa.ListArray.from_arrays(offsets, pa.array(csr.data.astype(np.float64, copy=False)), type=_VALUE_LIST),
        ],
        fields=list(VECTOR_ARROW_TYPE),
    )


def numeric_to_numpy(arr: Union[pa.Array, pa.ChunkedArray], dtype=np.float64) -> np.ndarray:
    """A numeric or boolean Arrow column as a numpy array; nulls become NaN."""
    arr = _combine(arr)
    if pa.types.is_boolean(arr.type):
        arr = arr.cast(pa.int8())
    if pa.types.is_decimal(arr.type):
        arr = arr.cast(pa.float64())
    out = arr.to_numpy(zero_copy_only=False)
    if arr.null_count:
        out = np.where(arr.is_null().to_numpy(zero_copy_only=False), np.nan, out.astype(np.float64))
    return np.asarray(out, dtype=dtype)


def map_valid(arr: Union[pa.Array, pa.ChunkedArray], fn) -> pa.Array:
    """``fn`` applied to the non-null rows of ``arr``, with nulls put back where ``arr`` is null.

    ``fn`` receives the rows without nulls and returns an Arrow array with one entry
    per row it got; the result has ``len(arr)`` entries.
    """
    arr = _combine(arr)
    if not arr.null_count:
        return fn(arr)
    valid = arr.is_valid()
    out = fn(arr.filter(valid))
    mask = valid.to_numpy(zero_copy_only=False)
    idx = np.full(len(mask), -1, dtype=np.int64)
    idx[mask] = np.arange(int(mask.sum()))
    return out.take(pa.array(idx, mask=~mask))
