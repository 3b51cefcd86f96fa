"""Record Spark MLlib's LogisticRegression fits of the parity grid (tests/lr_parity.py) in
tests/data/lr_parity_mllib.json, so CI compares every case without re-running 72 MLlib fits
(MLlib needs one Spark job per iteration: 15-60 s a case with standardization off).
tests/test_logistic_parity_grid.py also re-fits a few cases with the installed MLlib and checks
them against this file.  Usage: .venv/bin/python tests/make_lr_parity_reference.py
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

import numpy as np  # noqa: E402

import lr_parity  # noqa: E402


def mllib_fit(spark, case):
    from pyspark.ml.classification import LogisticRegression

    from lr_data import frame

    X, y, w = lr_parity.case_data(case)
    df = frame(spark, X, y, w)
    lr = LogisticRegression(family=case["family"], standardization=case["standardization"],
                            regParam=case["regParam"], elasticNetParam=case["elasticNetParam"], **lr_parity.FIT)
    if case["weighted"]:
        lr.setWeightCol("w")
    t0 = time.perf_counter()
    m = lr.fit(df)
    secs = time.perf_counter() - t0
    df.unpersist()
    B = m.coefficientMatrix.toArray()
    b = m.interceptVector.toArray()
    return dict(coefficientMatrix=B.tolist(), interceptVector=b.tolist(),
                totalIterations=m.summary.totalIterations, seconds=round(secs, 2),
                objective=float(lr_parity.objective(case, X, y, w, B, b)),
                kkt=lr_parity.kkt_residual(case, X, y, w, B, b))


def main():
    import pyspark
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local[2]").config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.shuffle.partitions", "4").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    out = {"pyspark": pyspark.__version__, "fit": lr_parity.FIT, "cases": {}}
    for case in lr_parity.cases():
        out["cases"][case["id"]] = mllib_fit(spark, case)
        r = out["cases"][case["id"]]
        print(f"{case['id']}: f={r['objective']:.12g} it={r['totalIterations']} kkt={r['kkt']:.2e} "
              f"{r['seconds']} s", flush=True)
    tmp = lr_parity.REFERENCE + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(out, fh, indent=1)
    os.replace(tmp, lr_parity.REFERENCE)
    spark.stop()


if __name__ == "__main__":
    main()
