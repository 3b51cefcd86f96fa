"""``read_table`` / ``write_table``: Delta (two engines), Parquet and CSV behind one API."""
from __future__ import annotations

import logging
import os
import posixpath
import tempfile
import threading
import uuid
from typing import Dict, Optional, Sequence, Tuple

from pyspark.sql import DataFrame

from ..core.lineage import TableLineage, register
from .common import (
    TableNotFoundError,
    TableWriteError,
    check_partition_columns,
    filesystem,
    first_line,
    iso_utc,
    normalize_path,
    path_has_entries,
    remove_paths,
    spark_path,
    to_utc_datetime,
)

__all__ = ["read_table", "write_table", "delta_engine", "ENGINE_ENV"]

log = logging.getLogger("sparkml_scale.io")

#: Environment variable forcing the Delta engine: ``delta-spark`` or ``delta-rs``.
ENGINE_ENV = "SPARKML_SCALE_DELTA_ENGINE"
ENGINES = ("delta-spark", "delta-rs")
FORMATS = ("delta", "parquet", "csv")
MODES = ("append", "overwrite", "error", "errorifexists", "ignore")

_ENGINE_CACHE: Dict[int, Tuple[object, str]] = {}
_ENGINE_LOCK = threading.Lock()


def delta_engine(spark, refresh: bool = False) -> str:
    """Which Delta engine this session uses: ``"delta-spark"`` or ``"delta-rs"``.

    ``delta-spark`` when Delta Lake's Spark data source is on the session's classpath
    (probed once per session by resolving ``format("delta")`` on a path that does not
    exist: no Spark job), else ``delta-rs`` (the ``deltalake`` package: pip extra
    ``sparkml-scale[delta]``).  The environment variable ``SPARKML_SCALE_DELTA_ENGINE``
    forces one.  The choice is logged once per session (logger ``sparkml_scale.io``).

    Raises
    ------
    ModuleNotFoundError
        Neither engine is available.
    ValueError
        ``SPARKML_SCALE_DELTA_ENGINE`` holds another value.
    """
    forced = os.environ.get(ENGINE_ENV)
    if forced:
        if forced not in ENGINES:
            raise ValueError(f"{ENGINE_ENV}={forced!r}; expected one of {ENGINES}")
        return forced
    key = id(spark)
    with _ENGINE_LOCK:
        cached = _ENGINE_CACHE.get(key)
        if cached is not None and cached[0] is spark and not refresh:
            return cached[1]
    engine = "delta-spark" if _has_delta_spark(spark) else "delta-rs"
    if engine == "delta-rs":
        from .delta_rs import _deltalake

        _deltalake()  # raises ModuleNotFoundError with the two ways to get Delta
    with _ENGINE_LOCK:
        _ENGINE_CACHE[key] = (spark, engine)
    log.info("Delta engine for this session: %s (%s)", engine,
             "Delta Lake's Spark data source" if engine == "delta-spark"
             else "deltalake transaction log + Spark Parquet I/O")
    return engine


def _has_delta_spark(spark) -> bool:
    probe = os.path.join(tempfile.gettempdir(), f"sparkml_scale_delta_probe_{uuid.uuid4().hex}")
    try:
        spark.read.format("delta").load(probe).schema
    except Exception as exc:  # noqa: BLE001 - classic Py4JJavaError/AnalysisException, Connect errors
        text = str(exc)
        missing = ("DATA_SOURCE_NOT_FOUND", "Failed to find the data source", "Failed to find data source",
                   "ClassNotFoundException", "NoClassDefFoundError", "NoSuchMethodError")
        return not any(m in text for m in missing)
    return True


def _engine_for(spark, engine: Optional[str]) -> str:
    if engine is None:
        return delta_engine(spark)
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r}; expected None (detect), 'delta-spark' or 'delta-rs'")
    return engine


def _check_format(format: str) -> str:
    if not isinstance(format, str) or format.lower() not in FORMATS:
        raise ValueError(f"format={format!r}; expected one of {FORMATS}")
    return format.lower()


def read_table(spark, path, format: str = "delta", version: Optional[int] = None, timestamp=None,
               options: Optional[Dict[str, str]] = None, engine: Optional[str] = None,
               storage_options: Optional[Dict[str, str]] = None) -> Tuple[DataFrame, TableLineage]:
    """Read a table and the lineage record of what was read.

    Parameters
    ----------
    spark : SparkSession
        Classic or Spark Connect.
    path : str
        Table location: a local path or a URI (``s3://``, ``abfss://``, ``hdfs://`` ...).
    format : {"delta", "parquet", "csv"}
        CSV is read with ``header=true, inferSchema=true`` unless ``options`` say otherwise.
    version : int, optional
        Delta only: time travel to this table version.
    timestamp : str, datetime or date, optional
        Delta only: time travel to the last commit at or before this time (ISO 8601
        string or datetime; naive times are UTC).  Not together with ``version``.
        A commit's time is the one the table's history shows and the lineage record
        carries (``TableLineage.timestamp``), on both engines, so reading at a
        record's timestamp gives its version back.  (delta-rs's own
        ``load_as_version(datetime)`` goes by the log files' modification times,
        which can be milliseconds later.)
    options : dict, optional
        Extra Spark reader options (Parquet/CSV).
    engine : {"delta-spark", "delta-rs"}, optional
        Override the detected Delta engine (:func:`delta_engine`).
    storage_options : dict, optional
        Credentials/settings for the ``deltalake`` package (delta-rs engine, remote stores).

    Returns
    -------
    (DataFrame, TableLineage)
        The DataFrame carries a lineage marker in its plan: estimators of this package
        fitted on anything derived from it record the lineage in their models.

    Raises
    ------
    ValueError
        Bad ``format``/``version``/``timestamp``, a path that is not a Delta table, a
        version that does not exist, a timestamp before the first commit, a Delta table
        the delta-rs engine cannot read correctly (column mapping, deletion vectors).
    TableNotFoundError
        (a ``FileNotFoundError``) nothing at ``path``.
    """
    format = _check_format(format)
    path = normalize_path(path)
    if version is not None and timestamp is not None:
        raise ValueError("pass version or timestamp, not both")
    if format != "delta" and (version is not None or timestamp is not None):
        raise ValueError(f"version/timestamp (time travel) need format='delta', not {format!r}")
    if version is not None:
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise ValueError(f"version must be an integer >= 0, got {version!r}")
    as_of = None
    if timestamp is not None:
        as_of = to_utc_datetime(timestamp).isoformat().replace("+00:00", "Z")
    if format == "delta":
        eng = _engine_for(spark, engine)
        if eng == "delta-spark":
            from . import delta_spark

            df, info = delta_spark.read(spark, path, version, timestamp)
        else:
            from . import delta_rs

            df, info = delta_rs.read(spark, path, version, timestamp, storage_options)
        record = TableLineage(path, "delta", info["version"], iso_utc(info["timestamp_ms"]), eng, as_of)
    else:
        df = _read_files(spark, path, format, options)
        record = TableLineage(path, format, None, None, "spark", None)
    return register(df, record), record


def _read_files(spark, path: str, format: str, options: Optional[Dict[str, str]]) -> DataFrame:
    if "://" not in path and not os.path.exists(path):
        raise TableNotFoundError(f"no {format} table at path {path!r}")
    reader = spark.read
    opts = {"header": "true", "inferSchema": "true"} if format == "csv" else {}
    opts.update(options or {})
    for k, v in opts.items():
        reader = reader.option(k, v)
    try:
        df = reader.format(format).load(spark_path(path))
        df.schema  # resolve now so a bad path fails here
    except Exception as exc:  # noqa: BLE001 - AnalysisException (classic or Connect)
        raise ValueError(f"cannot read {path!r} as {format}: {first_line(exc)}") from None
    return df


def write_table(df: DataFrame, path, format: str = "delta", mode: str = "error",
                partitionBy: Optional[Sequence[str]] = None, overwriteSchema: bool = False,
                engine: Optional[str] = None, storage_options: Optional[Dict[str, str]] = None) -> TableLineage:
    """Write ``df`` as a table, all or nothing; returns the lineage record of the result.

    Parameters
    ----------
    df : DataFrame
    path : str
        Table location (local path or URI).
    format : {"delta", "parquet", "csv"}
    mode : {"error", "append", "overwrite", "ignore"}
        As Spark's save modes (``"errorifexists"`` = ``"error"``).  Appending to a Delta
        table checks the schema first: columns are matched by name (case-insensitive),
        missing nullable columns become nulls, lossless widening casts (int -> long,
        float -> double) are applied, anything else is a ValueError naming the columns.
    partitionBy : list of str, optional
        Partition columns (string, integer, boolean or date).  Appends default to the
        table's own.
    overwriteSchema : bool
        Delta, ``mode="overwrite"``: allow the new data to replace the table's schema.
    engine, storage_options
        As in :func:`read_table`.

    Returns
    -------
    TableLineage
        For Delta: the version this write committed (found by a write id in the commit,
        so concurrent writers do not confuse it) and its commit time.

    Atomicity
    ---------
    Delta: one transaction; until it commits no reader sees any new file, so a failed
    task, a killed job or a failed commit leaves the table at its previous version
    (:class:`TableWriteError`, :class:`WriteConflictError`).  Parquet/CSV
    ``mode="overwrite"`` writes to a sibling directory first and swaps it in only after
    the Spark job succeeded, so a failure keeps the old data (the swap itself is two
    renames, atomic on local and HDFS file systems, copies on object stores).

    Raises
    ------
    ValueError
        Bad ``format``/``mode``/``partitionBy``, vector columns in a Delta write (use
        ``vector_to_array``), a schema that does not match the table.
    FileExistsError
        ``mode="error"`` and a table (or any file) exists at ``path``.
    TableWriteError, WriteConflictError
        The write failed; the table is unchanged.
    """
    format = _check_format(format)
    if not isinstance(df, DataFrame) and type(df).__name__ != "DataFrame":
        raise TypeError(f"df must be a Spark DataFrame, got {type(df).__name__}")
    if not isinstance(mode, str) or mode.lower() not in MODES:
        raise ValueError(f"mode={mode!r}; expected one of {MODES}")
    mode = "error" if mode.lower() == "errorifexists" else mode.lower()
    if isinstance(partitionBy, str):
        partitionBy = [partitionBy]
    path = normalize_path(path)
    spark = df.sparkSession
    if format == "delta":
        eng = _engine_for(spark, engine)
        if eng == "delta-spark":
            from . import delta_spark

            info = delta_spark.write(df, path, mode, partitionBy, overwriteSchema)
        else:
            from . import delta_rs

            info = delta_rs.write(df, path, mode, partitionBy, overwriteSchema, storage_options)
        return TableLineage(path, "delta", info["version"], iso_utc(info["timestamp_ms"]), eng, None)
    _write_files(df, path, format, mode, partitionBy)
    return TableLineage(path, format, None, None, "spark", None)


def _write_files(df: DataFrame, path: str, format: str, mode: str, partition_by) -> None:
    parts = check_partition_columns(df.schema, partition_by or []) if partition_by else []
    fs, root = filesystem(path)
    exists = path_has_entries(fs, root)
    if exists and mode == "error":
        raise FileExistsError(f"path {path!r} already exists; use mode='append' or mode='overwrite'")
    if exists and mode == "ignore":
        return

    def save(target: str, save_mode: str) -> None:
        writer = df.write.mode(save_mode)
        if parts:
            writer = writer.partitionBy(*parts)
        if format == "csv":
            writer = writer.option("header", "true")
        try:
            writer.format(format).save(spark_path(target) if "://" not in target else target)
        except Exception as exc:  # noqa: BLE001
            raise TableWriteError(f"writing {format} to {path!r} failed; the existing data is unchanged. "
                                  f"Cause: {first_line(exc)}", None, first_line(exc)) from None

    if mode != "overwrite" or not exists:
        save(root if "://" not in path else path, "append" if exists else "error")
        return
    # Overwrite: new data to a sibling directory, then swap, so a failed job loses nothing.
    token = uuid.uuid4().hex[:12]
    parent, name = posixpath.split(root.rstrip("/"))
    staged = posixpath.join(parent, f".{name}.sparkml_scale_new-{token}")
    retired = posixpath.join(parent, f".{name}.sparkml_scale_old-{token}")
    staged_uri = staged if "://" not in path else path.rsplit("/", 1)[0] + "/" + posixpath.basename(staged)
    try:
        save(staged_uri, "error")
    except BaseException:
        remove_paths(fs, [staged])
        raise
    fs.move(root, retired)
    try:
        fs.move(staged, root)
    except BaseException:
        fs.move(retired, root)  # put the old data back
        remove_paths(fs, [staged])
        raise
    remove_paths(fs, [retired])

