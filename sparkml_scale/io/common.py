"""Shared pieces of the table I/O: errors, paths, schema conformance, file-system access."""
from __future__ import annotations

import datetime as _dt
import os
from typing import Iterable, List, Optional, Sequence, Tuple

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ..core.errors import first_line  # noqa: F401 - re-exported for the io modules
from ..core.schema import quote

__all__ = [
    "TableNotFoundError",
    "TableWriteError",
    "WriteConflictError",
    "normalize_path",
    "spark_path",
    "filesystem",
    "quote_col",
    "to_utc_datetime",
    "iso_utc",
    "check_writable_schema",
    "check_partition_columns",
    "conform_for_append",
]


class TableNotFoundError(FileNotFoundError):
    """The table path does not exist (or holds no table of the requested format)."""


class TableWriteError(RuntimeError):
    """A write failed before its commit; the table is left as it was (see ``table_version``).

    ``cause`` holds a one-line summary of the underlying Spark/engine error.
    """

    def __init__(self, message: str, table_version: Optional[int] = None, cause: str = ""):
        super().__init__(message)
        self.table_version = table_version
        self.cause = cause


class WriteConflictError(TableWriteError):
    """A concurrent writer committed a conflicting change first; nothing of this write was committed."""


def normalize_path(path) -> str:
    """Absolute local path (no ``file:`` prefix) or the URI unchanged (``s3://``, ``abfss://``...)."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError(f"path must be a string, got {type(path).__name__}")
    if not path.strip():
        raise ValueError("path must not be empty")
    if path.startswith("file://"):
        path = path[len("file://"):]
    elif path.startswith("file:"):
        path = path[len("file:"):]
    if "://" in path:
        return path.rstrip("/")
    return os.path.abspath(path)


def is_local(path: str) -> bool:
    return "://" not in path


def spark_path(path: str) -> str:
    """The path as Spark's Hadoop file system should see it."""
    return "file://" + path if is_local(path) else path


def filesystem(path: str):
    """``(pyarrow.fs.FileSystem, path inside it)`` for a normalized path."""
    import pyarrow.fs as pafs

    if is_local(path):
        return pafs.LocalFileSystem(), path
    return pafs.FileSystem.from_uri(path)


def path_has_entries(fs, p: str) -> bool:
    import pyarrow.fs as pafs

    info = fs.get_file_info(p)
    if info.type == pafs.FileType.NotFound:
        return False
    if info.type == pafs.FileType.File:
        return True
    return bool(fs.get_file_info(pafs.FileSelector(p, recursive=False)))


#: The package's one quoting helper (``a.b`` -> ```a.b```), under the name io modules use.
quote_col = quote


def to_utc_datetime(value, param: str = "timestamp") -> _dt.datetime:
    """A ``datetime``, ``date`` or ISO 8601 string as an aware UTC datetime (naive = UTC)."""
    if isinstance(value, _dt.datetime):
        out = value
    elif isinstance(value, _dt.date):
        out = _dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        s = value.strip()
        if s.endswith("Z"):
            s = s[:-1] + "+00:00"
        try:
            out = _dt.datetime.fromisoformat(s)
        except ValueError:
            raise ValueError(f"{param}={value!r} is not an ISO 8601 date/time (e.g. '2026-11-22 10:30:00')") from None
    else:
        raise TypeError(f"{param} must be a datetime, date or ISO 8601 string, got {type(value).__name__}")
    if out.tzinfo is None:
        out = out.replace(tzinfo=_dt.timezone.utc)
    return out.astimezone(_dt.timezone.utc)


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def utc_millis(t: _dt.datetime) -> int:
    """An aware datetime as whole epoch milliseconds, rounded down (exact: no float)."""
    return (t - _EPOCH) // _dt.timedelta(milliseconds=1)


def version_at(commits: Iterable[Tuple[int, int]], timestamp, path: str) -> Tuple[int, int]:
    """Delta time travel by time, for both engines: the last version whose commit time is at or
    before ``timestamp``.

    ``commits`` are ``(version, commit time in epoch ms)`` pairs as the table's history shows them
    (the times the lineage record carries, so a record's timestamp reads back its version).  Returns
    ``(version, its commit ms)``; raises ValueError naming ``timestamp=`` when it is before the first
    available commit.
    """
    ms = utc_millis(to_utc_datetime(timestamp))
    commits = [(int(v), int(t)) for v, t in commits if v is not None and t is not None]
    at_or_before = [c for c in commits if c[1] <= ms]
    if not at_or_before:
        first_v, first_ms = min(commits) if commits else (None, None)
        raise ValueError(f"timestamp={timestamp!r} is before the first available commit of the Delta table at "
                         f"{path!r} ({iso_utc(first_ms)}, version {first_v})")
    return max(at_or_before)


def iso_utc(ms: Optional[int]) -> Optional[str]:
    """Epoch milliseconds as ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    if ms is None:
        return None
    t = _dt.datetime.fromtimestamp(int(ms) / 1000.0, tz=_dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


_PARTITION_TYPES = (T.StringType, T.BooleanType, T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.DateType)


def check_writable_schema(schema: T.StructType) -> None:
    """Delta has no vector type: refuse ``VectorUDT`` columns with a pointer to ``vector_to_array``."""
    from pyspark.ml.linalg import VectorUDT

    names = [f.name for f in schema.fields]
    dup = sorted({n for n in names if [m.lower() for m in names].count(n.lower()) > 1})
    if dup:
        raise ValueError(f"columns {dup} appear more than once (Delta column names are case-insensitive)")
    bad = [f.name for f in schema.fields if isinstance(f.dataType, VectorUDT)]
    if bad:
        raise ValueError(
            f"column(s) {bad} hold ML vectors, which a Delta table cannot store; convert them first, e.g. "
            f"df.withColumn({bad[0]!r}, pyspark.ml.functions.vector_to_array({bad[0]!r}))"
        )


def check_partition_columns(schema: T.StructType, partition_by: Sequence[str]) -> List[str]:
    parts = list(partition_by or [])
    by_name = {f.name: f for f in schema.fields}
    missing = [c for c in parts if c not in by_name]
    if missing:
        raise ValueError(f"partitionBy column(s) {missing} are not in the DataFrame; columns: {list(by_name)}")
    bad = [c for c in parts if not isinstance(by_name[c].dataType, _PARTITION_TYPES)]
    if bad:
        raise ValueError(
            f"partitionBy column(s) {bad} have types {[by_name[c].dataType.simpleString() for c in bad]}; "
            f"partition by string, integer, boolean or date columns"
        )
    if len(parts) == len(schema.fields):
        raise ValueError("partitionBy names every column; at least one column must hold data")
    return parts


# Implicit widening casts accepted when appending (the same set Delta's type widening allows).
_WIDENING = {
    (T.ByteType, T.ShortType), (T.ByteType, T.IntegerType), (T.ByteType, T.LongType),
    (T.ShortType, T.IntegerType), (T.ShortType, T.LongType), (T.IntegerType, T.LongType),
    (T.FloatType, T.DoubleType), (T.ByteType, T.DoubleType), (T.ShortType, T.DoubleType),
    (T.IntegerType, T.DoubleType), (T.DateType, T.TimestampNTZType),
}


def _same_type(a: T.DataType, b: T.DataType) -> bool:
    """Equal ignoring nullability and field metadata."""
    if isinstance(a, T.StructType) and isinstance(b, T.StructType):
        return len(a.fields) == len(b.fields) and all(
            fa.name == fb.name and _same_type(fa.dataType, fb.dataType) for fa, fb in zip(a.fields, b.fields)
        )
    if isinstance(a, T.ArrayType) and isinstance(b, T.ArrayType):
        return _same_type(a.elementType, b.elementType)
    if isinstance(a, T.MapType) and isinstance(b, T.MapType):
        return _same_type(a.keyType, b.keyType) and _same_type(a.valueType, b.valueType)
    return a == b


def conform_for_append(df: DataFrame, table_schema: T.StructType, path: str) -> DataFrame:
    """``df`` reordered and cast to ``table_schema`` for an append, or a ValueError naming the columns.

    Missing nullable columns are filled with nulls; extra columns and type changes other than
    lossless widening (int -> long, float -> double, ...) are refused.
    """
    check_writable_schema(df.schema)
    have = {f.name.lower(): f for f in df.schema.fields}
    want = {f.name.lower(): f for f in table_schema.fields}
    extra = [f.name for f in df.schema.fields if f.name.lower() not in want]
    if extra:
        raise ValueError(
            f"column(s) {extra} are not in the table at {path!r} (its columns: {[f.name for f in table_schema.fields]}); "
            f"drop them, or replace the table with mode='overwrite', overwriteSchema=True"
        )
    cols, mismatched = [], []
    for tf in table_schema.fields:
        f = have.get(tf.name.lower())
        if f is None:
            if not tf.nullable:
                raise ValueError(f"column {tf.name!r} of the table at {path!r} is not nullable and missing from the DataFrame")
            cols.append(F.lit(None).cast(tf.dataType).alias(tf.name))
        elif _same_type(f.dataType, tf.dataType):
            cols.append(F.col(quote_col(f.name)).alias(tf.name))
        elif (type(f.dataType), type(tf.dataType)) in _WIDENING:
            cols.append(F.col(quote_col(f.name)).cast(tf.dataType).alias(tf.name))
        else:
            mismatched.append(f"{f.name}: {f.dataType.simpleString()} (table: {tf.dataType.simpleString()})")
    if mismatched:
        raise ValueError(f"column types differ from the table at {path!r}: {mismatched}")
    return df.select(*cols)


def as_nullable(dt: T.DataType) -> T.DataType:
    """``dt`` with every field, array element and map value nullable."""
    if isinstance(dt, T.StructType):
        return T.StructType([T.StructField(f.name, as_nullable(f.dataType), True, f.metadata) for f in dt.fields])
    if isinstance(dt, T.ArrayType):
        return T.ArrayType(as_nullable(dt.elementType), True)
    if isinstance(dt, T.MapType):
        return T.MapType(as_nullable(dt.keyType), as_nullable(dt.valueType), True)
    return dt


def remove_paths(fs, paths: Iterable[str]) -> None:
    """Best-effort removal of files/directories a failed write created (logged, never raises)."""
    import logging

    import pyarrow.fs as pafs

    for p in paths:
        try:
            info = fs.get_file_info(p)
            if info.type == pafs.FileType.Directory:
                fs.delete_dir(p)
            elif info.type == pafs.FileType.File:
                fs.delete_file(p)
        except Exception:  # noqa: BLE001
            logging.getLogger("sparkml_scale.io").warning("could not remove %s after a failed write", p)


def unique(seq: Iterable[str]) -> Tuple[str, ...]:
    return tuple(dict.fromkeys(seq))
