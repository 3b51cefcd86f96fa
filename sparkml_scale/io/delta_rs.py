"""The "delta-rs" engine: the ``deltalake`` package keeps the transaction log, Spark moves the data.

Reads
    ``deltalake.DeltaTable`` resolves the snapshot (latest, ``version=`` or the last
    commit at or before ``timestamp=``) to its list of Parquet files and their partition
    values; Spark reads exactly those files in parallel with the table's schema.  Files
    in the standard ``col=value/`` layout are read in one scan with Spark's partition
    discovery (checked file by file against the log's partition values); any other
    layout is read as one scan per partition with the values from the log.
    Tables that need features this path cannot honour (column mapping, deletion
    vectors in use, unknown reader features) are refused with a ValueError rather
    than read wrongly.

Writes
    Spark writes the Parquet files into a hidden staging directory inside the table
    (``_sparkml_scale_staging/<write id>``), the driver moves them into the table's
    ``col=value/`` layout and commits them, with row and null counts read from the
    Parquet footers, as ONE Delta transaction (``create_write_transaction``).  Until
    that commit no reader sees any of them: a task failure, a killed job or a lost
    commit race leaves the table at its previous version (orphaned files, if the
    driver dies between move and commit, are invisible and removed by ``VACUUM``).
    Concurrent appends both commit (delta-rs retries on the next version); a
    conflicting concurrent change raises :class:`WriteConflictError`.

Reference: the Delta transaction protocol
(https://github.com/delta-io/delta/blob/master/PROTOCOL.md), delta-rs
(https://github.com/delta-io/delta-rs).
"""
from __future__ import annotations

import json
import logging
import posixpath
import uuid
from typing import Dict, List, Optional, Sequence, Tuple
from urllib.parse import unquote

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from .._version import __version__
from .common import (
    TableNotFoundError,
    TableWriteError,
    WriteConflictError,
    check_partition_columns,
    as_nullable,
    check_writable_schema,
    conform_for_append,
    filesystem,
    first_line,
    path_has_entries,
    quote_col,
    remove_paths,
    spark_path,
    version_at,
)

log = logging.getLogger(__name__)

STAGING_DIR = "_sparkml_scale_staging"
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
#: Reader features whose tables this engine reads correctly (column mapping and deletion
#: vectors are checked separately: allowed only when not in use).
_SAFE_READER_FEATURES = {"timestampNtz", "v2Checkpoint", "vacuumProtocolCheck", "columnMapping", "deletionVectors"}


def _deltalake():
    try:
        import deltalake  # noqa: F401
    except ImportError:
        from ..core.optional import install_hint

        raise ModuleNotFoundError(
            "Delta tables need either Delta Lake's Spark jars on the classpath (see jars/README.md) or the "
            f"'deltalake' package: {install_hint('delta')}", name="deltalake"
        ) from None
    return deltalake


def _has_foreign_entries(fs, root: str) -> bool:
    """Anything at ``root`` besides a Delta log and our staging area (a concurrent writer may be
    creating the table there right now)?"""
    import pyarrow.fs as pafs

    if not path_has_entries(fs, root):
        return False
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.File:
        return True
    names = {posixpath.basename(i.path.rstrip("/")) for i in fs.get_file_info(pafs.FileSelector(root))}
    return bool(names - {STAGING_DIR, "_delta_log"})


# ----------------------------------------------------------------------------------- read
def _open(path: str, storage_options: Optional[Dict[str, str]]):
    dl = _deltalake()
    if not dl.DeltaTable.is_deltatable(path, storage_options=storage_options):
        fs, p = filesystem(path)
        if _has_foreign_entries(fs, p):
            raise ValueError(f"path {path!r} is not a Delta table (no _delta_log); read it with format='parquet'")
        raise TableNotFoundError(f"no Delta table at path {path!r}")
    return dl.DeltaTable(path, storage_options=storage_options)


def _commit_time_ms(dt, version: int, latest: int) -> Optional[int]:
    for entry in dt.history(limit=max(latest - version + 1, 1)):
        if entry.get("version") == version:
            return entry.get("timestamp")
    return None


def _check_readable(dt, path: str) -> None:
    proto = dt.protocol()
    features = set(proto.reader_features or [])
    unknown = sorted(features - _SAFE_READER_FEATURES)
    if unknown:
        raise ValueError(f"the Delta table at {path!r} needs reader feature(s) {unknown}, which the delta-rs "
                         f"engine cannot honour; read it with Delta Lake's Spark jars (jars/README.md)")
    mode = (dt.metadata().configuration or {}).get("delta.columnMapping.mode") or "none"
    if mode != "none":
        raise ValueError(f"the Delta table at {path!r} uses column mapping ({mode!r}); read it with Delta Lake's "
                         f"Spark jars (jars/README.md)")


def _add_actions(dt, path: str):
    import pyarrow as pa

    adds = pa.table(dt.get_add_actions(flatten=True))
    dv_cols = [c for c in adds.column_names if c.startswith("deletion_vector")]
    for c in dv_cols:
        if adds.column(c).null_count < adds.num_rows:
            raise ValueError(f"the Delta table at {path!r} has deletion vectors (rows deleted in place); read it "
                             f"with Delta Lake's Spark jars (jars/README.md)")
    return adds


def read(spark, path: str, version: Optional[int], timestamp, storage_options=None) -> Tuple[DataFrame, Dict]:
    """Read a snapshot; returns ``(DataFrame, {"version", "timestamp_ms"})``."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import from_arrow_schema

    dl = _deltalake()
    dt = head = _open(path, storage_options)
    latest = dt.version()
    if version is not None:
        if version > latest:
            raise ValueError(f"version={version} does not exist in the Delta table at {path!r} (latest: {latest})")
        try:
            dt = dl.DeltaTable(path, version=version, storage_options=storage_options)
        except Exception as exc:  # noqa: BLE001 - log entries cleaned up by retention
            raise ValueError(f"version={version} of the Delta table at {path!r} cannot be loaded: {first_line(exc)}") from None
    elif timestamp is not None:
        # Resolved from the commit times that history() shows and the lineage record carries
        # (io.common.version_at, as on the delta-spark engine), not by load_as_version(datetime):
        # delta-rs resolves that by the log files' modification times, which under load land
        # milliseconds after the commit's own timestamp ("1 ms after version 1's commit" read 0).
        v, _ = version_at(((h.get("version"), h.get("timestamp")) for h in dt.history()), timestamp, path)
        # Time travel on a second handle: `head` keeps the latest snapshot for the commit times below.
        dt = _open(path, storage_options)
        dt.load_as_version(v)
    v = dt.version()
    _check_readable(dt, path)
    adds = _add_actions(dt, path)
    schema = pa.schema(dt.schema().to_arrow())
    spark_schema = from_arrow_schema(schema, prefer_timestamp_ntz=True)
    parts = list(dt.metadata().partition_columns or [])
    df = _scan(spark, path, adds, spark_schema, parts)
    # History from the latest snapshot: a time-travelled DeltaTable numbers its history wrongly.
    return df, {"version": v, "timestamp_ms": _commit_time_ms(head, v, latest)}


def _scan(spark, root: str, adds, schema: T.StructType, parts: List[str]) -> DataFrame:
    rel_paths = [unquote(p) for p in adds.column("path").to_pylist()]
    files = [p if "://" in p else spark_path(posixpath.join(root, p)) for p in rel_paths]
    if not files:
        return spark.createDataFrame([], schema)
    data_schema = T.StructType([f for f in schema.fields if f.name not in parts])
    order = [F.col(quote_col(f.name)) for f in schema.fields]
    if not parts:
        return spark.read.schema(data_schema).parquet(*files).select(*order)
    values = [adds.column("partition." + c).to_pylist() for c in parts]
    rows = list(zip(*values))
    if _hive_layout(rel_paths, parts, rows):
        # One scan; Spark's partition discovery gives the values, typed by the schema.
        part_fields = [schema[c] for c in parts]
        full = T.StructType(list(data_schema.fields) + part_fields)
        return (spark.read.schema(full).option("basePath", spark_path(root)).parquet(*files).select(*order))
    groups: Dict[tuple, List[str]] = {}
    for f, row in zip(files, rows):
        groups.setdefault(tuple(row), []).append(f)
    out = None
    for row, fs in groups.items():
        part = spark.read.schema(data_schema).parquet(*fs)
        for c, v in zip(parts, row):
            part = part.withColumn(c, F.lit(v).cast(schema[c].dataType))
        part = part.select(*order)
        out = part if out is None else out.unionByName(part)
    return out


def _dir_partition_values(rel: str) -> Optional[List[Tuple[str, Optional[str]]]]:
    """``[(column, value)]`` of the ``col=value/`` directories of a relative file path (Spark/Hive
    escaping undone, ``__HIVE_DEFAULT_PARTITION__`` = null); None if a directory is not ``k=v``."""
    out = []
    for d in rel.split("/")[:-1]:
        k, sep, raw = d.partition("=")
        if not sep:
            return None
        v = unquote(raw)
        out.append((k, None if v == HIVE_NULL else v))
    return out


def _hive_layout(rel_paths: Sequence[str], parts: Sequence[str], rows) -> bool:
    """True when every file sits at ``c1=v1/.../cn=vn/name`` with the log's values (and only
    string/integer/boolean/date partitions, which Spark parses back exactly)."""
    for rel, row in zip(rel_paths, rows):
        if "://" in rel:
            return False
        found = _dir_partition_values(rel)
        expected = [(c, None if v is None else str(v)) for c, v in zip(parts, row)]
        if found != expected:
            return False
    return True


# ---------------------------------------------------------------------------------- write
def _commit(dt, path, adds, mode, schema, parts, props, storage_options):
    """One Delta transaction adding ``adds`` (creating the table when ``dt`` is None)."""
    from deltalake.transaction import create_table_with_add_actions

    if dt is None:
        create_table_with_add_actions(path, schema, adds, mode="error", partition_by=parts or None,
                                      storage_options=storage_options, commit_properties=props)
    else:
        dt.create_write_transaction(adds, mode, schema, partition_by=parts or None, commit_properties=props)


def _stage(df: DataFrame, staging_uri: str, parts: List[str]) -> None:
    writer = df.write.mode("error")
    if parts:
        writer = writer.partitionBy(*parts)
    writer.parquet(staging_uri)


def _place_files(fs, root: str, staging: str, parts: List[str], moved: List[str]):
    """Move the staged Parquet files into ``root``; returns their AddActions (appends to ``moved``)."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq
    from deltalake.transaction import AddAction

    adds = []
    infos = fs.get_file_info(pafs.FileSelector(staging, recursive=True))
    for info in sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path):
        rel = posixpath.relpath(info.path, staging)
        name = posixpath.basename(rel)
        if not name.endswith(".parquet") or name.startswith((".", "_")):
            continue
        values = dict(_dir_partition_values(rel) or [])
        if sorted(values) != sorted(parts):
            raise TableWriteError(f"unexpected staged file layout {rel!r} (partition columns {parts})")
        dest = posixpath.join(root, rel)
        fs.create_dir(posixpath.dirname(dest), recursive=True)
        fs.move(info.path, dest)
        moved.append(dest)
        meta = pq.read_metadata(dest, filesystem=fs)
        stats = {"numRecords": meta.num_rows}
        nulls = _null_counts(meta)
        if nulls:
            stats["nullCount"] = nulls
        st = fs.get_file_info(dest)
        mtime = int(st.mtime.timestamp() * 1000) if st.mtime is not None else 0
        adds.append(AddAction(rel, int(st.size), values, mtime, True, json.dumps(stats)))
    return adds


def _null_counts(meta) -> Dict[str, int]:
    """Per top-level primitive column null counts summed over row groups (omitted when unknown)."""
    out: Dict[str, int] = {}
    schema = meta.schema
    top = {}
    for i in range(meta.num_columns):
        path = schema.column(i).path
        if "." in path:  # nested leaf: no top-level count
            top[path.split(".")[0]] = None
        else:
            top[path] = i
    for name, i in top.items():
        if i is None:
            continue
        total = 0
        for rg in range(meta.num_row_groups):
            st = meta.row_group(rg).column(i).statistics
            if st is None or not st.has_null_count:
                total = -1
                break
            total += st.null_count
        if total >= 0:
            out[name] = total
    return out


def _find_version(path: str, write_id: str, storage_options) -> Tuple[Optional[int], Optional[int]]:
    dl = _deltalake()
    for entry in dl.DeltaTable(path, storage_options=storage_options).history(limit=50):
        if entry.get("sparkmlScaleWriteId") == write_id:
            return entry.get("version"), entry.get("timestamp")
    return None, None


def write(df: DataFrame, path: str, mode: str, partition_by: Optional[Sequence[str]], overwrite_schema: bool,
          storage_options=None) -> Dict:
    """Write ``df`` as one Delta commit; returns ``{"version", "timestamp_ms"}`` (``version`` None for ignore)."""
    import pyarrow as pa
    from deltalake import Schema as DeltaSchema
    from deltalake.transaction import CommitProperties
    from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

    dl = _deltalake()
    fs, root = filesystem(path)
    dt = None
    if dl.DeltaTable.is_deltatable(path, storage_options=storage_options):
        dt = dl.DeltaTable(path, storage_options=storage_options)
    elif _has_foreign_entries(fs, root):
        raise ValueError(f"path {path!r} exists and is not a Delta table; choose another path or remove it")
    if dt is not None:
        if mode == "error":
            raise FileExistsError(f"a Delta table exists at {path!r} (version {dt.version()}); use mode='append' "
                                  f"or mode='overwrite'")
        if mode == "ignore":
            return {"version": dt.version(), "timestamp_ms": _commit_time_ms(dt, dt.version(), dt.version()), "skipped": True}
    check_writable_schema(df.schema)
    parts = check_partition_columns(df.schema, partition_by or ([] if dt is None else dt.metadata().partition_columns))
    if dt is not None:
        table_parts = list(dt.metadata().partition_columns or [])
        table_schema = from_arrow_schema(pa.schema(dt.schema().to_arrow()), prefer_timestamp_ntz=True)
        replace = mode == "overwrite" and overwrite_schema
        if parts != table_parts and not replace:
            raise ValueError(f"partitionBy={parts} differs from the table's partition columns {table_parts} at "
                             f"{path!r}; pass overwriteSchema=True with mode='overwrite' to repartition it")
        if not replace:
            df = conform_for_append(df, table_schema, path)
        if replace and parts != table_parts:
            raise ValueError(f"changing the partition columns of the Delta table at {path!r} ({table_parts} -> "
                             f"{parts}) is not supported by the delta-rs engine; write a new table")
    # Nullable throughout, as Delta Lake's Spark writer creates tables: NOT NULL would become
    # a constraint that later appends of nullable data violate.
    schema = to_arrow_schema(as_nullable(df.schema), timezone="UTC")
    delta_schema = DeltaSchema.from_arrow(schema)
    write_id = uuid.uuid4().hex
    staging = posixpath.join(root, STAGING_DIR, write_id)
    staging_uri = spark_path(staging) if "://" not in path else path + "/" + STAGING_DIR + "/" + write_id
    before = None if dt is None else dt.version()
    moved: List[str] = []
    props = CommitProperties(custom_metadata={"sparkmlScaleWriteId": write_id, "engineInfo.sparkmlScale": __version__},
                             max_commit_retries=20)
    try:
        try:
            _stage(df, staging_uri, parts)
        except Exception as exc:  # noqa: BLE001 - task failures, killed stages, bad data
            raise TableWriteError(
                f"writing to the Delta table at {path!r} failed before its commit; the table is unchanged "
                f"(version {before if before is not None else 'none: not created'}). Cause: {first_line(exc)}",
                before, first_line(exc)) from None
        adds = _place_files(fs, root, staging, parts, moved)
        try:
            _commit(dt, path, adds, mode, delta_schema, parts, props, storage_options)
        except Exception as exc:  # noqa: BLE001
            msg = first_line(exc)
            if dt is None and "already exists" in msg and mode == "append":
                # Lost a creation race to a concurrent writer: append to the table it created.
                dt = dl.DeltaTable(path, storage_options=storage_options)
                table_schema = from_arrow_schema(pa.schema(dt.schema().to_arrow()), prefer_timestamp_ntz=True)
                conform_for_append(df, table_schema, path)  # raises when the schemas disagree
                if list(dt.metadata().partition_columns or []) != parts:
                    raise ValueError(f"a concurrent writer created the table at {path!r} with partition columns "
                                     f"{dt.metadata().partition_columns}, not {parts}") from None
                _commit(dt, path, adds, "append", dt.schema(), parts, props, storage_options)
            elif type(exc).__name__ in ("CommitFailedError",) or "conflict" in msg.lower() or "already exists" in msg:
                raise WriteConflictError(
                    f"a concurrent change to the Delta table at {path!r} conflicts with this {mode}; nothing was "
                    f"committed (retry the write). Cause: {msg}", before, msg) from None
            else:
                raise TableWriteError(f"committing to the Delta table at {path!r} failed; nothing was committed. "
                                      f"Cause: {msg}", before, msg) from None
        moved.clear()  # committed: the files belong to the table now
    except BaseException:
        remove_paths(fs, moved)
        raise
    finally:
        # The (hidden) staging parent stays: a concurrent write may be staging in it.
        remove_paths(fs, [staging])
    version, ts = _find_version(path, write_id, storage_options)
    return {"version": version, "timestamp_ms": ts}

