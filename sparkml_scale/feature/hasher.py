"""Arrow-vectorised feature hashing, output-identical to ``pyspark.ml.feature.FeatureHasher``.

The per-batch work (:func:`hash_batch`) is plain numpy/pyarrow: every column of a
batch is dictionary-encoded, MurmurHash3 runs once per *distinct* term (never
once per row), and the sparse rows are assembled with numpy into one CSR block
that :func:`sparkml_scale.core.arrow.block_to_vectors` turns into Spark's Arrow
``VectorUDT`` layout.
"""
from __future__ import annotations

import warnings
from decimal import Decimal
from typing import Dict, List, Optional, Sequence, Tuple

import mmh3
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp
from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCols, HasNumFeatures, HasOutputCol
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from ..core.arrow import binary_offsets, block_to_vectors
from ..core.display import ReadableRepr, detail
from ..core.persistence import ParamsReadWrite
from ..core.session import vector_arrow_udf
from ..core.schema import check_column, check_new_column, quote

__all__ = ["FeatureHasher", "hash_batch", "SEED", "SIGN_SEED"]

#: MurmurHash3 x86_32 seed of the index hash (Spark's ``FeatureHasher.seed``).
SEED = 42
#: Seed of the second MurmurHash3 x86_32 whose sign bit gives the sign when ``signed=True``.
#: 0 is scikit-learn's seed, so the sign of a term is the one scikit-learn's
#: ``FeatureHasher(alternate_sign=True)`` gives the same term string.
SIGN_SEED = 0

# Column plans computed on the driver and shipped to the Python workers.
_NUM = "num"  # numeric, not categorical: value at hash(colName)
_DEC = "dec"  # decimal, not categorical: as _NUM, exact BigDecimal.doubleValue
_BOOL = "bool"  # boolean: "col=true" / "col=false"
_STR = "str"  # string (also float/double categorical, cast to string by Spark)
_INT = "int"  # integral categorical: "col=<int>"
_DECCAT = "deccat"  # decimal categorical: "col=<java.math.BigDecimal.toString()>"
_ARR = "arr"  # array<string>: one "col=<element>" per non-null element

_INTEGRAL = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
_MAX_NUM_FEATURES = 2**31 - 1  # Spark vector sizes and indices are Java ints
_CACHE_LIMIT = 1 << 14  # distinct values remembered per column and worker process


def _java_term_hash(term: bytes, n: int, signed: bool) -> Tuple[int, float]:
    h = mmh3.hash(term, SEED, True)
    value = 1.0
    if signed and mmh3.hash(term, SIGN_SEED, True) < 0:
        value = -1.0
    return h % n, value  # Python's % of a positive n == Spark's Utils.nonNegativeMod


def _hash_terms(terms: List[bytes], n: int, signed: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Index (int64) and value (+-1.0) arrays of the terms: one mmh3 call per term (two if signed)."""
    h = np.fromiter((mmh3.hash(t, SEED, True) for t in terms), dtype=np.int64, count=len(terms))
    idx = np.mod(h, n)  # numpy's mod of a positive n is non-negative, as Utils.nonNegativeMod
    if signed:
        s = np.fromiter((mmh3.hash(t, SIGN_SEED, True) for t in terms), dtype=np.int64, count=len(terms))
        val = np.where(s < 0, -1.0, 1.0)
    else:
        val = np.ones(len(terms), dtype=np.float64)
    return idx, val


_C1, _C2 = np.uint32(0xCC9E2D51), np.uint32(0x1B873593)
#: Below this many terms :func:`_hash_terms` (one C call per term) beats the numpy MurmurHash3.
_VECTOR_HASH_MIN = 256
#: Terms longer than this (bytes, prefix included) are hashed one by one (the numpy
#: version works on a padded ``(terms, longest term)`` byte matrix).
_VECTOR_HASH_MAX_LEN = 64


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def murmur3_32(values: pa.Array, prefix: bytes = b"", seed: int = SEED) -> np.ndarray:
    """MurmurHash3 x86_32 of ``prefix + value`` for every value of a binary array, vectorised.

    ``values``: a ``pyarrow`` binary (or string) array of ``m`` values without nulls
    (slices are fine); ``prefix``: bytes put before each value; ``seed``: the seed.
    Returns an ``int32`` numpy array of shape ``(m,)``, equal to
    ``mmh3.hash(prefix + value, seed, signed=True)`` for each value (Spark's
    ``Murmur3_x86_32.hashUnsafeBytes2``).  Works on a zero-padded ``(m, longest)``
    byte matrix, one numpy pass per 4-byte block: meant for many short values.
    Raises ``ValueError`` if ``values`` holds nulls.
    """
    if values.null_count:
        raise ValueError("murmur3_32: values must not hold nulls")
    if pa.types.is_string(values.type):
        values = values.cast(pa.binary())
    m = len(values)
    if m == 0:
        return np.empty(0, dtype=np.int32)
    offs = binary_offsets(values)
    start, end = int(offs[0]), int(offs[-1])
    p = len(prefix)
    vlen = np.diff(offs)
    lens = vlen + p
    width = (int(lens.max()) + 3) // 4
    mat = np.zeros((m, width * 4), dtype=np.uint8)
    if p:
        mat[:, :p] = np.frombuffer(prefix, dtype=np.uint8)
    if end > start:
        data = np.frombuffer(values.buffers()[2], dtype=np.uint8, count=end)[start:]
        # row-major flat positions of every value byte in the matrix
        pos = np.arange(end - start, dtype=np.int64)
        pos += np.repeat(np.arange(m, dtype=np.int64) * (width * 4) + p - (offs[:-1] - start), vlen)
        mat.ravel()[pos] = data
    blocks = mat.view("<u4")
    h = np.full(m, seed & 0xFFFFFFFF, dtype=np.uint32)
    nfull = lens >> 2
    for i in range(width):
        k = blocks[:, i] * _C1
        k = _rotl(k, 15)
        k *= _C2
        h_k = h ^ k
        full = nfull > i
        step = _rotl(h_k, 13)
        step *= np.uint32(5)
        step += np.uint32(0xE6546B64)
        # full block: the mixed step; the tail block: only the xor; past the end: nothing
        h = np.where(full, step, np.where(nfull == i, h_k, h))  # a zero tail xors k = 0: no change
    h ^= lens.astype(np.uint32)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h.view(np.int32)


def _hash_values(prefix: bytes, values: pa.Array, n: int, signed: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Index and value arrays of the terms ``prefix + text(value)`` of distinct, non-null values."""
    t = values.type
    if (len(values) >= _VECTOR_HASH_MIN
            and (pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_integer(t))):
        if pa.types.is_integer(t):
            values = values.cast(pa.string())  # decimal digits, as Java's Long.toString
        if int(np.diff(binary_offsets(values)).max()) + len(prefix) <= _VECTOR_HASH_MAX_LEN:
            idx = np.mod(murmur3_32(values, prefix, SEED).astype(np.int64), n)
            if signed:
                val = np.where(murmur3_32(values, prefix, SIGN_SEED) < 0, -1.0, 1.0)
            else:
                val = np.ones(len(values), dtype=np.float64)
            return idx, val
    return _hash_terms(_term_texts(prefix, values), n, signed)


def _decimal_text(d: Decimal) -> str:
    # Python's Decimal.__str__ and java.math.BigDecimal.toString() both follow the
    # General Decimal Arithmetic "to-scientific-string" rules: "1.50", "1E-10", "0E-10".
    return str(d)


def _term_texts(prefix: bytes, values: pa.Array) -> List[bytes]:
    """UTF-8 bytes of ``prefix + text(value)`` for distinct, non-null values."""
    t = values.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        # the raw bytes, as UTF8String.getBytes (no decoding, so no surprise on bad UTF-8)
        values = values.cast(pa.large_binary() if pa.types.is_large_string(t) else pa.binary())
        return [prefix + v for v in values.to_pylist()]
    if pa.types.is_decimal(t):
        return [prefix + _decimal_text(v).encode() for v in values.to_pylist()]
    if pa.types.is_integer(t):
        return [prefix + str(v).encode() for v in values.to_pylist()]
    out = []
    for v in values.to_pylist():  # string_view and other string-like Arrow types
        out.append(prefix + (v if isinstance(v, bytes) else str(v).encode("utf-8")))
    return out


class _Terms:
    """Distinct values of one column seen by this worker, with their index and value.

    ``idx``/``val`` have one extra last slot (index -1: "no entry") that null values
    are mapped to.
    """

    __slots__ = ("values", "idx", "val")

    def __init__(self, values: pa.Array, idx: np.ndarray, val: np.ndarray):
        self.values = values
        self.idx = np.append(idx, -1)
        self.val = np.append(val, 0.0)


# Per-process cache: (term prefix, Arrow type, n, signed) -> _Terms.  Python workers are
# reused between tasks, so each distinct value of a column is hashed once per worker,
# not once per batch; lookups are one vectorised ``pc.index_in`` per batch.  A column
# whose distinct values would exceed _CACHE_LIMIT is marked _UNCACHED instead: index_in
# rebuilds its hash table of the cached values on every call and the cache's arrays are
# copied on every growth, so for high-cardinality columns hashing each batch's distinct
# values afresh (dictionary_encode + the vectorised murmur3_32) is cheaper.
_TERM_CACHE: Dict[Tuple[bytes, str, int, bool], object] = {}
_UNCACHED = "uncached"


def _categorical_uncached(arr: pa.Array, prefix: bytes, n: int, signed: bool) -> Tuple[np.ndarray, np.ndarray]:
    """As :func:`_categorical`, hashing the batch's distinct values without the cache."""
    enc = pc.dictionary_encode(arr)
    terms = _Terms(enc.dictionary, *_hash_values(prefix, enc.dictionary, n, signed))
    codes = enc.indices
    if codes.null_count:
        codes = codes.fill_null(len(enc.dictionary))  # the "no entry" slot
    codes = codes.to_numpy(zero_copy_only=False)
    return terms.idx.take(codes), (terms.val.take(codes) if signed else 1.0)


def _categorical(arr: pa.Array, prefix: bytes, n: int, signed: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Per row: hashed index (-1 for null) and value of a categorical column (the float
    1.0 instead of an array when ``signed`` is False: every value is 1.0).

    Only values new to this worker are turned into text and hashed (once each);
    all others are looked up with Arrow's vectorised ``index_in``.
    """
    key = (prefix, str(arr.type), n, signed)
    known = _TERM_CACHE.get(key)
    if known is _UNCACHED:
        return _categorical_uncached(arr, prefix, n, signed)
    pos = pc.index_in(arr, value_set=known.values) if known is not None else None
    if pos is None or pos.null_count > arr.null_count:  # values new to this worker
        if known is None:
            new = pc.unique(pc.drop_null(arr))
        else:
            new = pc.unique(arr.filter(pc.and_(pos.is_null(), arr.is_valid())))
        if (0 if known is None else len(known.values)) + len(new) > _CACHE_LIMIT:
            _TERM_CACHE[key] = _UNCACHED
            return _categorical_uncached(arr, prefix, n, signed)
        idx, val = _hash_values(prefix, new, n, signed)
        if known is None:
            known = _Terms(new, idx, val)
        else:
            known = _Terms(
                pa.concat_arrays([known.values, new]),
                np.concatenate([known.idx[:-1], idx]),
                np.concatenate([known.val[:-1], val]),
            )
        _TERM_CACHE[key] = known
        pos = pc.index_in(arr, value_set=known.values)
    if pos.null_count:
        pos = pos.fill_null(len(known.values))  # the "no entry" slot
    codes = pos.to_numpy(zero_copy_only=False)
    return known.idx.take(codes), (known.val.take(codes) if signed else 1.0)


def _decimal_to_double(arr: pa.Array) -> np.ndarray:
    """Decimal128 values as float64, rounded exactly as BigDecimal.doubleValue (nulls: 0.0).

    Java (and Python's ``float(Decimal)``) round correctly; Arrow's own cast does not
    always.  Unscaled values below 2**52 with a scale of at most 22 are divided by an
    exact power of ten (one correctly rounded IEEE division, as the JDK does); the
    rest go through ``float(Decimal)``.
    """
    if arr.null_count:
        arr = arr.fill_null(pa.scalar(0, arr.type))
    n = len(arr)
    scale = arr.type.scale
    if n == 0:
        return np.empty(0, dtype=np.float64)
    if isinstance(arr.type, pa.Decimal128Type) and 0 <= scale <= 22:
        raw = np.frombuffer(arr.buffers()[1], dtype="<i8", count=2 * (arr.offset + n))
        raw = raw[2 * arr.offset:].reshape(n, 2)
        lo, hi = raw[:, 0], raw[:, 1]
        fast = (hi == (lo >> 63)) & (lo > -(1 << 52)) & (lo < (1 << 52))
        out = lo.astype(np.float64) / (10.0 ** scale)
        if fast.all():
            return out
        slow = np.flatnonzero(~fast)
        out[slow] = [float(d) for d in arr.take(pa.array(slow)).to_pylist()]
        return out
    return np.array([float(d) for d in arr.to_pylist()], dtype=np.float64)


def _null_mask(arr: pa.Array) -> Optional[np.ndarray]:
    if arr.null_count == 0:
        return None
    return arr.is_null().to_numpy(zero_copy_only=False)


def _column_entries(arr: pa.Array, plan: tuple, n: int, signed: bool):
    """Per row of a scalar column: (index, value, has_missing).

    ``index`` is an int array with -1 where the row has no entry (null), or a plain
    int when every row has an entry at the same index (numeric column without nulls).
    """
    kind, prefix, const = plan
    if kind in (_NUM, _DEC):
        if kind == _DEC:
            values = _decimal_to_double(arr)
        else:
            values = arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        index, sign = const
        if sign != 1.0:
            values = values * sign
        nulls = _null_mask(arr)
        if nulls is None:
            return index, values, False
        return np.where(nulls, -1, index), values, True
    if kind == _BOOL:
        nulls = _null_mask(arr)
        flags = (arr.fill_null(False) if nulls is not None else arr).to_numpy(zero_copy_only=False)
        (i_false, v_false), (i_true, v_true) = const
        idx = np.where(flags, i_true, i_false)
        if nulls is not None:
            idx[nulls] = -1
        return idx, np.where(flags, v_true, v_false), nulls is not None
    if kind in (_STR, _INT, _DECCAT):
        idx, val = _categorical(arr, prefix, n, signed)
        return idx, val, arr.null_count > 0
    raise AssertionError(f"unknown column plan {kind!r}")


def _array_entries(arr: pa.Array, prefix: bytes, n: int, signed: bool):
    """(rows, indices, values) of an array<string> column: one entry per non-null element."""
    flat = pc.list_flatten(arr)
    parents = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    idx, val = _categorical(flat, prefix, n, signed)
    val = np.broadcast_to(np.asarray(val, dtype=np.float64), idx.shape)
    if flat.null_count:
        keep = idx >= 0
        parents, idx, val = parents[keep], idx[keep], val[keep]
    return parents, idx, val


def hash_batch(batch, plans: Sequence[tuple], n: int, signed: bool = False) -> sp.csr_matrix:
    """Hash one Arrow batch into a CSR block.

    ``batch``: a ``pyarrow.StructArray`` with one field per input column, or a
    sequence of equally long Arrow arrays (one per input column), in the order of
    ``plans``.

    Returns a ``(len(batch), n)`` float64 ``csr_matrix`` with sorted indices; entries
    that hash to the same index in a row are summed in input-column order (as
    Spark's ``OpenHashMap.changeValue``: the first value, then ``+=`` each next one,
    so even the rounding is Spark's), and entries whose sum is 0.0 are kept.
    """
    if isinstance(batch, pa.ChunkedArray):
        batch = batch.combine_chunks()
    if isinstance(batch, pa.StructArray):
        columns = [batch.field(i) for i in range(len(plans))]
        nrows = len(batch)
    else:
        columns = [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in batch]
        nrows = len(columns[0]) if columns else 0
    if any(plan[0] == _ARR for plan in plans):
        entries = []
        for i, plan in enumerate(plans):
            arr = columns[i]
            if plan[0] == _ARR:
                entries.append(_array_entries(arr, plan[1], n, signed))
                continue
            idx, val, _ = _column_entries(arr, plan, n, signed)
            val = np.broadcast_to(np.asarray(val, dtype=np.float64), (nrows,))
            if isinstance(idx, np.ndarray):
                rows = np.flatnonzero(idx >= 0)
                entries.append((rows, idx[rows], val[rows]))
            else:
                entries.append((np.arange(nrows, dtype=np.int64), np.full(nrows, idx, np.int64), val))
        return _assemble_any(entries, nrows, n)
    entries = [_column_entries(columns[i], plan, n, signed) for i, plan in enumerate(plans)]
    return _assemble_one_per_column(entries, nrows, n)


def _assemble_one_per_column(entries, nrows: int, n: int) -> sp.csr_matrix:
    """CSR from at most one entry per row and column (no array columns).

    Each row's entries are sorted as keys ``index << s | column`` (``2**s`` >= the
    number of columns), which orders by index and, within an index, by column --
    the order Spark sums in.  A missing entry of column ``j`` gets index ``n + j``:
    it sorts after every real entry and never equals another key of its row.
    """
    k = len(entries)
    shift = max(1, (k - 1).bit_length())
    mask = (1 << shift) - 1
    absent = n << shift
    dtype = np.int32 if ((n + k) << shift) < (1 << 31) else np.int64
    # keys built column by column (contiguous writes), then transposed to rows; values
    # written straight into rows (gathered row by row below: cache-friendly)
    keys_t = np.empty((k, nrows), dtype=dtype)
    vals_rm = np.empty((nrows, k), dtype=np.float64)
    any_missing = False
    for j, (idx, val, has_missing) in enumerate(entries):
        row = keys_t[j]
        if isinstance(idx, np.ndarray):
            np.left_shift(idx, shift, out=row, casting="unsafe")
            row |= j
            if has_missing:
                # idx -1 gave (-1 << s) | j: negative, and no other key of the column is
                np.copyto(row, ((n + j) << shift) | j, where=row < 0)
                any_missing = True
        else:
            row.fill((int(idx) << shift) | j)
        vals_rm[:, j] = val
    keys = np.ascontiguousarray(keys_t.T)
    if k > 1:
        keys.sort(axis=1)
        # values in key order: flat position row * k + column of the row-major block
        pos = (keys & mask).astype(np.intp)  # take() wants intp indices: no hidden copy
        pos += np.arange(0, nrows * k, k, dtype=np.intp)[:, None]
        vals = vals_rm.ravel().take(pos)
    else:
        vals = vals_rm
    idx = keys >> shift
    keep = None
    if k > 1:
        dup = idx[:, 1:] == idx[:, :-1]
        if dup.any():
            # Collisions: add each duplicate into the first entry of its run, left to right.
            rows_d = np.flatnonzero(dup.any(axis=1))
            sub_dup = dup[rows_d]
            sub_vals = vals[rows_d]
            start = np.zeros(len(rows_d), dtype=np.int64)
            for j in range(1, k):
                d = sub_dup[:, j - 1]
                start = np.where(d, start, j)
                r = np.flatnonzero(d)
                sub_vals[r, start[r]] += sub_vals[r, j]
            vals[rows_d] = sub_vals
            keep = np.ones((nrows, k), dtype=bool)
            keep[:, 1:] = ~dup
    if keep is None and not any_missing:
        data = vals.ravel()
        indices = idx.ravel().astype(np.int32, copy=False)
        indptr = np.arange(0, nrows * k + 1, k, dtype=np.int64)
    else:
        present = keep if not any_missing else (keys < absent if keep is None else (keys < absent) & keep)
        data = vals[present]  # row-major: row by row, each row's entries in index order
        indices = idx[present].astype(np.int32, copy=False)
        indptr = np.zeros(nrows + 1, dtype=np.int64)
        np.cumsum(np.count_nonzero(present, axis=1), out=indptr[1:])
    return sp.csr_matrix((data, indices, indptr), shape=(nrows, n))


def _assemble_any(entries, nrows: int, n: int) -> sp.csr_matrix:
    """CSR from any number of entries per row and column (array columns)."""
    rows_l, cols_l, vals_l = [], [], []
    for rows, idx, val in entries:
        m = len(val)
        rows_l.append(np.arange(nrows, dtype=np.int64) if rows is None else rows)
        cols_l.append(np.broadcast_to(np.asarray(idx, dtype=np.int64), (m,)))
        vals_l.append(val)
    rows = np.concatenate(rows_l)
    cols = np.concatenate(cols_l)
    vals = np.concatenate(vals_l).astype(np.float64, copy=False)
    key = rows.astype(np.int64, copy=False) * n + cols
    # Stable: entries of one (row, index) stay in column order, so the sums below add
    # in the order Spark adds them (floating-point addition is not associative).
    order = np.argsort(key, kind="stable")
    key = key[order]
    vals = vals[order]
    if len(key) > 1:
        first = np.empty(len(key), dtype=bool)
        first[0] = True
        np.not_equal(key[1:], key[:-1], out=first[1:])
        if not first.all():
            starts = np.flatnonzero(first)
            data = vals[starts]  # the first value, as Spark stores it (keeps -0.0)
            dup = ~first
            group = np.cumsum(first) - 1
            np.add.at(data, group[dup], vals[dup])  # unbuffered, sequential: Spark's order
            key = key[starts]
            vals = data
    out_rows = key // n
    indices = (key - out_rows * n).astype(np.int32)
    indptr = np.zeros(nrows + 1, dtype=np.int64)
    np.cumsum(np.bincount(out_rows, minlength=nrows), out=indptr[1:])
    return sp.csr_matrix((vals, indices, indptr), shape=(nrows, n))


def _make_udf(spark, plans: List[tuple], n: int, signed: bool):
    from pyspark.ml.linalg import VectorUDT

    def feature_hash(*columns: pa.Array) -> pa.Array:
        return block_to_vectors(hash_batch(columns, plans, n, signed))

    return vector_arrow_udf(spark, feature_hash, VectorUDT())


class FeatureHasher(ReadableRepr, Transformer, HasInputCols, HasOutputCol, HasNumFeatures, ParamsReadWrite):
    """Hash columns into one sparse feature vector (the hashing trick).

    A drop-in for :class:`pyspark.ml.feature.FeatureHasher` whose per-row work runs
    as a vectorised Arrow UDF: with ``signed=False`` (the default) its output is
    identical to Spark's -- same indices, same values, bit for bit.

    Algorithm (Spark's ``org.apache.spark.ml.feature.FeatureHasher``, after
    Weinberger et al. 2009, "Feature hashing for large scale multitask
    learning"); ``h(s)`` is MurmurHash3 x86_32 of the UTF-8 bytes of ``s`` with
    seed 42 as a signed 32-bit integer, ``index = h mod numFeatures`` taken
    non-negative:

    - numeric column (byte, short, int, long, float, double, decimal) not in
      ``categoricalCols``: value ``double(x)`` at ``index(h(colName))``; 0.0 and
      NaN are stored as explicit entries;
    - string and boolean columns, and numeric columns in ``categoricalCols``:
      value 1.0 at ``index(h(colName + "=" + str(x)))`` with Java's ``toString``
      (``true``/``false``, ``7``, ``1.0``, ``1.0E7``, ``1.0E-4``; float and
      double categorical columns are cast to string by Spark itself, so the text
      is exactly what the JVM's ``Double.toString``/``Float.toString`` prints,
      whatever the Java version; decimals as ``java.math.BigDecimal.toString``);
    - ``array<string>`` columns (an extension; Spark rejects them): value 1.0 at
      ``index(h(colName + "=" + element))`` for every non-null element;
    - nulls (whole values or array elements) are skipped.

    Values landing on the same index of a row are summed in input-column order
    (an entry summing to 0.0 is kept).

    ``signed=True`` multiplies each term's value by -1 when MurmurHash3 x86_32
    of the same UTF-8 bytes (the term for categorical values, the column name
    for numeric ones) with seed :data:`SIGN_SEED` (0) is negative as a signed
    32-bit integer, else by +1, before summing; this is scikit-learn's
    ``alternate_sign`` (which reuses its seed-0 index hash; ours is a second hash
    so that indices stay Spark's).  It reduces the bias of collisions in inner
    products.  Seed-0 signs equal scikit-learn's for the same term string.

    Input: a DataFrame with the ``inputCols``.  Output: the same DataFrame plus
    ``outputCol``, a ``pyspark.ml.linalg.SparseVector`` (``VectorUDT``) of size
    ``numFeatures`` with float64 values and ascending int32 indices per row,
    with Spark's ML attribute metadata ``{"ml_attr": {"num_attrs": numFeatures}}``.

    Raises (from :meth:`transformSchema`/:meth:`transform`, before any Spark job):

    - ``ValueError`` if ``inputCols`` is empty or unset, names a missing column,
      if ``outputCol`` already exists, or if ``numFeatures`` is not in ``[1, 2**31 - 1]``;
    - ``TypeError`` naming the column if an input column is not numeric,
      string, boolean or ``array<string>``.

    Works under classic Spark and Spark Connect (DataFrame APIs only); saved and
    loaded with JSON metadata, no pickle.
    """

    categoricalCols: "Param[List[str]]" = Param(
        Params._dummy(),
        "categoricalCols",
        "numeric columns to treat as categorical (hash 'col=value' with value 1.0)",
        typeConverter=TypeConverters.toListString,
    )
    signed: "Param[bool]" = Param(
        Params._dummy(),
        "signed",
        "multiply each hashed value by a +1/-1 sign from a second hash (MurmurHash3 "
        "x86_32, seed 0) as scikit-learn's alternate_sign; False gives Spark's output",
        typeConverter=TypeConverters.toBoolean,
    )

    @keyword_only
    def __init__(
        self,
        *,
        numFeatures: int = 1 << 18,
        inputCols: Optional[List[str]] = None,
        outputCol: Optional[str] = None,
        categoricalCols: Optional[List[str]] = None,
        signed: bool = False,
    ) -> None:
        super().__init__()
        self._setDefault(numFeatures=1 << 18, signed=False)
        kwargs = self._input_kwargs
        self.setParams(**kwargs)

    @keyword_only
    def setParams(
        self,
        *,
        numFeatures: int = 1 << 18,
        inputCols: Optional[List[str]] = None,
        outputCol: Optional[str] = None,
        categoricalCols: Optional[List[str]] = None,
        signed: bool = False,
    ) -> "FeatureHasher":
        """Set the params given as keywords."""
        kwargs = self._input_kwargs
        return self._set(**kwargs)

    def setInputCols(self, value: List[str]) -> "FeatureHasher":
        return self._set(inputCols=value)

    def setOutputCol(self, value: str) -> "FeatureHasher":
        return self._set(outputCol=value)

    def setNumFeatures(self, value: int) -> "FeatureHasher":
        return self._set(numFeatures=value)

    def setCategoricalCols(self, value: List[str]) -> "FeatureHasher":
        return self._set(categoricalCols=value)

    def getCategoricalCols(self) -> List[str]:
        return self.getOrDefault(self.categoricalCols)

    def setSigned(self, value: bool) -> "FeatureHasher":
        return self._set(signed=value)

    def getSigned(self) -> bool:
        return self.getOrDefault(self.signed)

    # ------------------------------------------------------------------ schema
    def _checked_params(self) -> Tuple[List[str], str, int, set]:
        cols = self.getInputCols() if self.isDefined(self.inputCols) else None
        if not cols:
            raise ValueError("param 'inputCols' is empty or unset: set it to the columns to hash")
        n = self.getNumFeatures()
        if not 1 <= n <= _MAX_NUM_FEATURES:
            raise ValueError(f"param 'numFeatures' must be in [1, {_MAX_NUM_FEATURES}] (a vector size is a "
                             f"32-bit int, as Spark's), got {n}")
        out = self.getOutputCol()
        if not out:
            raise ValueError("param 'outputCol' is empty: set it to a new column name")
        cats = set(self.getCategoricalCols()) if self.isDefined(self.categoricalCols) else set()
        return list(cols), out, n, cats

    def _plans(self, schema: T.StructType) -> Tuple[List[tuple], List[bool], str, int]:
        """Per input column: (kind, term prefix, constants) and whether Spark casts it to string."""
        cols, out, n, cats = self._checked_params()
        signed = self.getSigned()
        unused = sorted(cats - set(cols))
        if unused:
            warnings.warn(
                f"categoricalCols {unused} are not in inputCols and are ignored", UserWarning, stacklevel=3
            )
        plans: List[tuple] = []
        cast: List[bool] = []
        for c in cols:
            dt = check_column(schema, c, "inputCols")
            prefix = (c + "=").encode("utf-8")
            to_string = False
            if isinstance(dt, T.BooleanType):
                const = (
                    _java_term_hash(prefix + b"false", n, signed),
                    _java_term_hash(prefix + b"true", n, signed),
                )
                plans.append((_BOOL, prefix, const))
            elif isinstance(dt, T.StringType):
                plans.append((_STR, prefix, None))
            elif isinstance(dt, T.NumericType) and c not in cats:
                kind = _DEC if isinstance(dt, T.DecimalType) else _NUM
                plans.append((kind, None, _java_term_hash(c.encode("utf-8"), n, signed)))
            elif isinstance(dt, _INTEGRAL):
                plans.append((_INT, prefix, None))
            elif isinstance(dt, T.DecimalType):
                plans.append((_DECCAT, prefix, None))
            elif isinstance(dt, (T.FloatType, T.DoubleType)):
                # Spark's cast prints Java's Float/Double.toString, the text Spark hashes.
                plans.append((_STR, prefix, None))
                to_string = True
            elif isinstance(dt, T.ArrayType) and isinstance(dt.elementType, T.StringType):
                plans.append((_ARR, prefix, None))
            else:
                raise TypeError(
                    f"FeatureHasher: column {c!r} (param 'inputCols') has type {dt.simpleString()}; "
                    "supported types are numeric, string, boolean and array<string>"
                )
            cast.append(to_string)
        check_new_column(schema, out, "outputCol")
        return plans, cast, out, n

    def transformSchema(self, schema: T.StructType) -> T.StructType:
        """The output schema; raises as :meth:`transform` does, without running a job."""
        from pyspark.ml.linalg import VectorUDT

        _, _, out, n = self._plans(schema)
        return T.StructType(
            list(schema.fields) + [T.StructField(out, VectorUDT(), True, {"ml_attr": {"num_attrs": n}})]
        )

    # --------------------------------------------------------------- transform
    def _udf_arguments(self, schema: T.StructType):
        """``(args, plans, outputCol, numFeatures)``: the UDF's argument columns for ``schema``, one
        per input column (a ``struct()`` argument would cost the JVM a row copy per row), cast to
        string where Spark hashes the text; raises as :meth:`transform`."""
        from pyspark.sql import functions as F

        plans, cast, out, n = self._plans(schema)
        args = []
        for i, (c, to_string) in enumerate(zip(self.getInputCols(), cast)):
            col = F.col(quote(c))
            if to_string:
                col = col.cast("string")
            args.append(col.alias(f"c{i}"))
        return args, plans, out, n

    def _transform(self, dataset: DataFrame) -> DataFrame:
        args, plans, out, n = self._udf_arguments(dataset.schema)
        udf = _make_udf(dataset.sparkSession, plans, n, self.getSigned())
        feature = udf(*args).alias(out, metadata={"ml_attr": {"num_attrs": n}})
        return dataset.select("*", feature)

    def _repr_fields(self):
        """``repr``: ``numFeatures``, ``inputCols``, ``categoricalCols`` when set and ``signed`` when
        True; the table adds ``outputCol`` and ``signed``."""
        signed = self.getSigned()
        return [("numFeatures", self.getNumFeatures()), ("inputCols", self._repr_param("inputCols")),
                ("categoricalCols", self._repr_param("categoricalCols")), ("signed", True if signed else detail(False)),
                ("outputCol", detail(self._repr_param("outputCol")))]
