"""The "delta-spark" engine: Delta Lake's own Spark data source (``format("delta")``).

Used when Delta's JVM side is on the classpath (Databricks, clusters started with the
Delta jars: see ``jars/README.md``).  Reads pin the snapshot: the version to read
(latest, ``version=`` or the last commit at or before ``timestamp=``) is resolved from
``DESCRIBE HISTORY`` first and then read with ``versionAsOf``, so the version recorded in
the lineage is the one read even while writers commit.  Writes are one Delta
transaction by construction (Delta's optimistic concurrency: conflicting concurrent
writes raise ``Concurrent...Exception``, turned into :class:`WriteConflictError`); the
committed version is found by a write id placed in the commit's ``userMetadata``.

Not exercised by this package's CI (no Maven access there to fetch the jars); the
delta-rs engine is.
"""
from __future__ import annotations

import json
import uuid
from typing import Dict, Optional, Sequence, Tuple

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from .common import (
    TableNotFoundError,
    TableWriteError,
    WriteConflictError,
    check_partition_columns,
    check_writable_schema,
    conform_for_append,
    first_line,
    version_at,
)


def _ident(path: str) -> str:
    return "delta.`" + path.replace("`", "``") + "`"


def _history(spark, path: str) -> DataFrame:
    try:
        hist = spark.sql(f"DESCRIBE HISTORY {_ident(path)}")
        hist.schema
        return hist.select("version", F.unix_millis("timestamp").alias("ts_ms"), "userMetadata")
    except Exception as exc:  # noqa: BLE001 - AnalysisException, classic or Connect
        msg = first_line(exc)
        if "PATH_NOT_FOUND" in msg or "doesn't exist" in msg or "does not exist" in msg:
            raise TableNotFoundError(f"no Delta table at path {path!r}") from None
        if "not a Delta table" in msg or "MISSING_DELTA_TABLE" in msg:
            raise ValueError(f"path {path!r} is not a Delta table; read it with format='parquet'") from None
        raise ValueError(f"cannot read the history of the Delta table at {path!r}: {msg}") from None


def read(spark, path: str, version: Optional[int], timestamp) -> Tuple[DataFrame, Dict]:
    # the history's (version, commit ms): one small job, a row per commit, no table data
    commits = {int(r["version"]): r["ts_ms"] for r in _history(spark, path).select("version", "ts_ms").collect()}
    latest = max(commits)
    if version is not None:
        if version > latest:
            raise ValueError(f"version={version} does not exist in the Delta table at {path!r} (latest: {latest})")
        v = version
    elif timestamp is not None:
        v, _ = version_at(commits.items(), timestamp, path)
    else:
        v = latest
    try:
        df = spark.read.format("delta").option("versionAsOf", v).load(path)
        df.schema
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"version {v} of the Delta table at {path!r} cannot be read: {first_line(exc)}") from None
    return df, {"version": v, "timestamp_ms": commits.get(v)}


def write(df: DataFrame, path: str, mode: str, partition_by: Optional[Sequence[str]], overwrite_schema: bool) -> Dict:
    spark = df.sparkSession
    exists = True
    try:
        hist = _history(spark, path)
        table = spark.read.format("delta").load(path)
        table_schema = table.schema
    except TableNotFoundError:
        exists = False
    if exists:
        if mode == "error":
            raise FileExistsError(f"a Delta table exists at {path!r}; use mode='append' or mode='overwrite'")
        if mode == "ignore":
            row = hist.orderBy(F.col("version").desc()).first()
            return {"version": int(row["version"]), "timestamp_ms": row["ts_ms"], "skipped": True}
        if not (mode == "overwrite" and overwrite_schema):
            df = conform_for_append(df, table_schema, path)
    check_writable_schema(df.schema)
    parts = check_partition_columns(df.schema, partition_by or [])
    write_id = uuid.uuid4().hex
    writer = (df.write.format("delta").mode("append" if mode == "append" else "overwrite" if mode == "overwrite" else "error")
              .option("userMetadata", json.dumps({"sparkmlScaleWriteId": write_id})))
    if parts:
        writer = writer.partitionBy(*parts)
    if overwrite_schema and mode == "overwrite":
        writer = writer.option("overwriteSchema", "true")
    try:
        writer.save(path)
    except Exception as exc:  # noqa: BLE001
        msg = first_line(exc)
        if "Concurrent" in msg or "DELTA_CONCURRENT" in msg:
            raise WriteConflictError(f"a concurrent change to the Delta table at {path!r} conflicts with this {mode}; "
                                     f"nothing was committed (retry the write). Cause: {msg}", None, msg) from None
        if "DELTA_FAILED_TO_MERGE_FIELDS" in msg or "schema mismatch" in msg.lower():
            raise ValueError(f"the DataFrame's schema does not match the Delta table at {path!r}: {msg}") from None
        raise TableWriteError(f"writing to the Delta table at {path!r} failed; Delta committed nothing. Cause: {msg}",
                              None, msg) from None
    rows = (_history(spark, path).filter(F.col("userMetadata").contains(write_id))
            .select("version", "ts_ms").collect())
    return {"version": int(rows[0][0]) if rows else None, "timestamp_ms": rows[0][1] if rows else None}
