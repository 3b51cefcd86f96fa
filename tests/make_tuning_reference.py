"""Record the 7x5 CrossValidator grid of tests/tuning_data.py (sparkml_scale LogisticRegression on
digits, accuracy, 2 folds by column) in tests/data/tuning_grid_reference.json, so CI compares the
TPE search with the grid's best without re-running its 70 fits (~3 minutes on 2 cores).
tests/test_tuning.py re-fits the grid's best point and two others with CrossValidator and checks
them against this file.  Usage: .venv/bin/python tests/make_tuning_reference.py
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

import tuning_data  # noqa: E402


def main() -> None:
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.ml.tuning import CrossValidator

    from sparkml_scale.classification import LogisticRegression
    from sparkml_scale.core.session import get_session

    spark = get_session("tuning-reference", master="local[2]",
                        conf={"spark.sql.shuffle.partitions": "4", "spark.default.parallelism": "2"})
    df = tuning_data.digits_frame(spark)
    lr = LogisticRegression(maxIter=tuning_data.MAX_ITER)
    grid = tuning_data.grid(lr)
    t0 = time.time()
    cv = CrossValidator(estimator=lr, estimatorParamMaps=grid, numFolds=tuning_data.NUM_FOLDS, foldCol="fold",
                        evaluator=MulticlassClassificationEvaluator(metricName="accuracy"), parallelism=2).fit(df)
    out = {"dataset": "sklearn digits", "metric": "accuracy", "numFolds": tuning_data.NUM_FOLDS,
           "maxIter": tuning_data.MAX_ITER,
           "points": [{"regParam": m[lr.regParam], "elasticNetParam": m[lr.elasticNetParam], "avgMetric": a}
                      for m, a in zip(grid, cv.avgMetrics)],
           "seconds": round(time.time() - t0, 1)}
    path = os.path.join(os.path.dirname(__file__), "data", tuning_data.REFERENCE)
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {path}: best {max(cv.avgMetrics):.4f} in {out['seconds']} s")
    spark.stop()


if __name__ == "__main__":
    main()
