"""SparkSession defaults for local use and spark-submit."""
from __future__ import annotations

import functools
import os
import sys
from typing import Dict, Optional

__all__ = [
    "get_session",
    "is_connect",
    "local_defaults",
    "ensure_vector_udf_support",
    "vector_arrow_udf",
    "COLUMNAR_UDF_INPUT",
    "CACHE_VECTORIZED_READER",
    "log_config_java_options",
]

#: Spark 4.3 setting (default true) that feeds columnar input (Parquet scans, cached
#: tables) straight into Arrow UDFs; that path fails on any ``VectorUDT`` column
#: ("[UNSUPPORTED_DATATYPE] Unsupported data type UDT" in ``RowToColumnConverter``).
COLUMNAR_UDF_INPUT = "spark.sql.execution.arrow.pythonUDF.columnarInput.enabled"
#: With the setting above off, Spark 4.3.0 still sends a cached table's columnar batches
#: (``InMemoryTableScan`` with its vectorized reader) through the same failing converter when
#: an Arrow UDF returning a vector reads a cached DataFrame directly: ``df.cache()`` then
#: ``FeatureHasher.transform(df)`` failed on every action.  Off, the cache is read row by row.
CACHE_VECTORIZED_READER = "spark.sql.inMemoryColumnarStorage.enableVectorizedReader"


def local_defaults(cores: Optional[int] = None) -> Dict[str, str]:
    """Spark settings this package expects: Arrow on, shuffle partitions sized to the cores."""
    cores = cores or os.cpu_count() or 2
    return {
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
        "spark.sql.shuffle.partitions": str(max(2 * cores, 4)),
        "spark.sql.adaptive.enabled": "true",
        "spark.ui.showConsoleProgress": "false",
        "spark.python.worker.reuse": "true",
        COLUMNAR_UDF_INPUT: "false",
        # A barrier stage (allreduce solvers, distributed torch) that cannot get all its slots
        # fails after one check instead of retrying for ~10 minutes (Spark's default 40 x 15 s).
        "spark.scheduler.barrier.maxConcurrentTasksCheck.maxFailures": "1",
        "spark.scheduler.barrier.maxConcurrentTasksCheck.interval": "1s",
    }


#: log4j2 configuration shipped with the package (console on stderr, level from a system property).
LOG4J2_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "log4j2.properties")
LOG_LEVEL_PROPERTY = "sparkml_scale.spark.log.level"
_LOG_LEVELS = ("OFF", "FATAL", "ERROR", "WARN", "INFO", "DEBUG", "TRACE", "ALL")


def log_config_java_options(log_level: str, java_options: Optional[str] = None) -> Optional[str]:
    """``spark.driver.extraJavaOptions`` for a new local JVM logging at ``log_level`` from its start.

    Appends ``-Dlog4j2.configurationFile=`` (this package's ``log4j2.properties``) and the level
    to ``java_options``.  Returns ``None`` (leave the settings as they are) when the user
    configures log4j already: a ``log4j2.configurationFile`` in ``java_options``, or a
    ``log4j2.properties`` in ``$SPARK_CONF_DIR`` (default ``$SPARK_HOME/conf``).
    """
    level = str(log_level).upper()
    if level not in _LOG_LEVELS:
        raise ValueError(f"log_level must be one of {list(_LOG_LEVELS)}, got {log_level!r}")
    if java_options and "log4j2.configurationFile" in java_options:
        return None
    conf_dir = os.environ.get("SPARK_CONF_DIR") or (
        os.path.join(os.environ["SPARK_HOME"], "conf") if os.environ.get("SPARK_HOME") else None)
    if conf_dir and any(os.path.isfile(os.path.join(conf_dir, f)) for f in ("log4j2.properties", "log4j2.xml")):
        return None
    if not os.path.isfile(LOG4J2_CONFIG):  # an install without the package data
        return None
    config = f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}"
    if any(c.isspace() for c in config):
        config = '"' + config + '"'  # Spark splits the options like a shell
    ours = f"{config} -D{LOG_LEVEL_PROPERTY}={level.lower()}"
    return f"{java_options} {ours}" if java_options else ours


def _set_python_env() -> None:
    # Executors must run this interpreter (it has the package and its deps).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


def get_session(
    app_name: str = "sparkml_scale",
    master: Optional[str] = None,
    remote: Optional[str] = None,
    conf: Optional[Dict[str, str]] = None,
    log_level: str = "WARN",
):
    """Return the active SparkSession or start one with this package's defaults.

    Parameters
    ----------
    app_name : str
        Application name for a new session.
    master : str, optional
        Master URL for a new classic session (default ``local[*]`` unless
        ``spark-submit``/``SPARK_REMOTE`` already chose one).
    remote : str, optional
        Spark Connect URL, e.g. ``"sc://host:15002"`` or ``"local[2]"`` to start
        a local Connect server.
    conf : dict, optional
        Extra Spark settings; they override the defaults.
    log_level : str
        Spark's console log level (``"ERROR"``, ``"WARN"``, ``"INFO"``, ...).  A new local
        session logs at this level from the start of its JVM (see
        :func:`log_config_java_options`), so Spark's start-up notices below it are not
        printed; a new session in a JVM that is already running (after ``stop()``) or
        started by ``spark-submit`` gets ``setLogLevel``; a running or Connect session is
        left as it is.

    Notes
    -----
    Sets ``PYSPARK_PYTHON``/``PYSPARK_DRIVER_PYTHON`` to ``sys.executable`` when
    unset, so local executors import the same packages as the driver.  An
    already running session (spark-submit, notebooks) is returned as it is,
    apart from the runtime SQL settings above.  A new classic session also gets
    the jars found in the project's ``jars/`` directory or ``$SPARKML_SCALE_JARS``
    (:mod:`sparkml_scale.core.jars`; Delta's SQL extension when a Delta jar is
    among them; under spark-submit pass ``$(sparkml-scale jars)`` instead), and the
    package's own ``sparkml-scale-udf.jar`` (:mod:`sparkml_scale.core.jvm`; a Connect
    session gets it as an artifact when a fit first needs it).
    """
    _set_python_env()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    settings = dict(local_defaults())
    if conf:
        settings.update(conf)
    if active is not None:
        for k in ("spark.sql.execution.arrow.pyspark.enabled",):
            active.conf.set(k, settings[k])
        ensure_vector_udf_support(active)
        return active
    builder = SparkSession.builder.appName(app_name)
    if remote:
        builder = builder.remote(remote)
    elif master:
        builder = builder.master(master)
    elif not _launched_by_spark():
        builder = builder.master("local[*]")
    if not remote and not _launched_by_spark():
        # Local mode runs driver and executors in one JVM: 1g (Spark's default) is too small.
        settings.setdefault("spark.driver.memory", os.environ.get("SPARKML_SCALE_DRIVER_MEMORY", "4g"))
        # The console log level from the JVM's start, not only after setLogLevel below.
        java_opts = log_config_java_options(log_level, settings.get("spark.driver.extraJavaOptions"))
        if java_opts is not None:
            settings["spark.driver.extraJavaOptions"] = java_opts
        # Optional jars (Delta Lake) from jars/ or $SPARKML_SCALE_JARS: no --packages download needed.
        from .jars import jar_conf, merged_jars
        from .jvm import JAR

        settings.update(jar_conf(base=settings))
        # The package's own JVM function (vectors to Python as bytes, core/jvm.py).
        if os.path.isfile(JAR):
            settings["spark.jars"] = merged_jars(settings.get("spark.jars", ""), [JAR])
    for k, v in settings.items():
        if remote and (not k.startswith("spark.sql") or "fallback" in k):
            continue  # static settings cannot be changed through Connect
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    ensure_vector_udf_support(spark)
    if not is_connect(spark):
        spark.sparkContext.setLogLevel(log_level)
    return spark


def ensure_vector_udf_support(spark) -> None:
    """Turn off Spark 4.3's columnar input to Arrow UDFs in this session if it is on, and the
    vectorized reader of cached tables (:data:`CACHE_VECTORIZED_READER`).

    Every stage that runs an Arrow UDF over or into a ``VectorUDT`` column calls
    this before building its plan: with either setting on, Spark 4.3 fails such a
    query at run time whenever the UDF's input is columnar (a Parquet scan, a
    cached DataFrame).  The row-based path it falls back to is the one all
    earlier Spark versions use.  Runtime SQL settings, so it also works through
    Spark Connect; a no-op on versions without them.
    """
    for key in (COLUMNAR_UDF_INPUT, CACHE_VECTORIZED_READER):
        try:
            if str(spark.conf.get(key)).lower() == "true":
                spark.conf.set(key, "false")
        except Exception:  # the setting does not exist in this Spark version
            pass


def vector_arrow_udf(spark, fn, return_type):
    """``pyspark.sql.functions.arrow_udf(fn, return_type)`` for a UDF that reads or returns
    ``VectorUDT`` columns, after :func:`ensure_vector_udf_support` on ``spark``."""
    from pyspark.sql.functions import arrow_udf

    from .faults import maybe_fail

    def batch_fn(*cols):
        maybe_fail("transform.batch")
        return fn(*cols)

    ensure_vector_udf_support(spark)
    return arrow_udf(functools.wraps(fn)(batch_fn), return_type)


def _launched_by_spark() -> bool:
    # spark-submit starts the Python driver with a JVM gateway already running
    # (PYSPARK_GATEWAY_PORT) and its own master; SPARK_REMOTE selects Connect.
    return any(k in os.environ for k in ("PYSPARK_GATEWAY_PORT", "SPARK_REMOTE", "MASTER"))


def is_connect(spark) -> bool:
    """True for a Spark Connect session."""
    return type(spark).__module__.startswith("pyspark.sql.connect")
