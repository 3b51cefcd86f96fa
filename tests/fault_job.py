"""Fault-injection runs for tests/test_faults.py (run as a script: it needs its own SparkSession).

Usage: ``python tests/fault_job.py OUT.json``.  Starts a classic session on
``local[2,3]`` (2 cores, a failed task is retried up to 3 times) with
``SPARKML_SCALE_FAULT_DIR`` set (see :mod:`sparkml_scale.core.faults`), and for every fit
and transform runs it once failure-free and once with one injected task failure, and
writes for each scenario: the largest absolute difference of the two results, how many
faults fired, and the error if the faulted run failed.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import tempfile
import time
import traceback

import numpy as np

FAULT_DIR = tempfile.mkdtemp(prefix="sparkml_scale_faults_")
os.environ["SPARKML_SCALE_FAULT_DIR"] = FAULT_DIR
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


def arm(point: str, when: str) -> None:
    with open(os.path.join(FAULT_DIR, point + ".arm"), "w") as f:
        f.write(when)


def disarm() -> int:
    """Remove every arm/arrival file; returns how many faults fired since the last call."""
    fired = 0
    for name in os.listdir(FAULT_DIR):
        fired += ".fired." in name
        os.remove(os.path.join(FAULT_DIR, name))
    return fired


def vectors(df, col):
    rows = df.select("id", col).orderBy("id").collect()
    return np.array([r[col].toArray() if hasattr(r[col], "toArray") else [r[col]] for r in rows], dtype=np.float64)


def main(out_path: str) -> None:
    from pyspark.ml.linalg import Vectors
    from sklearn.datasets import load_breast_cancer, load_digits, load_iris

    from sparkml_scale.classification import LogisticRegression
    from sparkml_scale.core.session import get_session
    from sparkml_scale.feature import PCA, FeatureHasher
    from sparkml_scale.regression import LinearRegression

    spark = get_session("sparkml_scale-faults", master="local[2,3]",
                        conf={"spark.sql.shuffle.partitions": "4", "spark.default.parallelism": "2",
                              # one retry of a failed barrier stage is enough here (default 4 attempts)
                              "spark.stage.maxConsecutiveAttempts": "2"})
    X, y = load_digits(return_X_y=True)
    digits = spark.createDataFrame([(i, Vectors.dense(x / 16.0), float(t)) for i, (x, t) in enumerate(zip(X, y))],
                                   ["id", "features", "label"]).repartition(4).cache()
    Xc, yc = load_breast_cancer(return_X_y=True)
    Xc = (Xc - Xc.mean(0)) / Xc.std(0)
    cancer = spark.createDataFrame([(i, Vectors.dense(x), float(t)) for i, (x, t) in enumerate(zip(Xc, yc))],
                                   ["id", "features", "label"]).repartition(4).cache()
    iris = load_iris()
    mixed = spark.createDataFrame(
        [(i, str(iris.target_names[t]), float(p), bool(w > 3.0)) for i, (t, p, w) in
         enumerate(zip(iris.target, iris.data[:, 2], iris.data[:, 1]))],
        ["id", "species", "petal_len", "wide"]).repartition(3).cache()
    for df in (digits, cancer, mixed):
        df.count()

    results = {}

    def scenario(name, point, when, run, also=()):
        """``also``: more (point, when) pairs armed in the same run (each must fire once)."""
        disarm()
        t0 = time.time()
        clean = run()
        t_clean = time.time() - t0
        for p, w in ((point, when), *also):
            arm(p, w)
        t0 = time.time()
        entry = {"point": point, "when": when, "faults": 1 + len(also)}
        try:
            faulty = run()
            entry["max_abs_diff"] = float(np.max(np.abs(np.asarray(faulty) - np.asarray(clean))))
        except Exception as exc:  # noqa: BLE001 - recorded for the test to judge
            entry["error"] = f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc()[-2000:]
        entry["fired"] = disarm()
        entry["seconds"] = [round(t_clean, 2), round(time.time() - t0, 2)]
        results[name] = entry
        print(name, {k: v for k, v in entry.items() if k != "traceback"}, flush=True)

    pca_model = PCA(k=5, inputCol="features", outputCol="pca").fit(digits)
    scenario("PCA.fit", "mapreduce.map", "1",
             lambda: PCA(k=5, inputCol="features", outputCol="pca").fit(digits).pc.toArray())
    scenario("PCAModel.transform", "transform.batch", "2", lambda: vectors(pca_model.transform(digits), "pca"))

    lin_model = LinearRegression(regParam=0.01).fit(digits)
    scenario("LinearRegression.fit", "mapreduce.map", "2",
             lambda: LinearRegression(regParam=0.01).fit(digits).coefficients.toArray())
    scenario("LinearRegressionModel.transform", "transform.batch", "1",
             lambda: vectors(lin_model.transform(digits), "prediction"))

    def lr(solver):
        m = LogisticRegression(solver=solver, maxIter=4, regParam=0.01).fit(cancer)
        return np.append(m.coefficients.toArray(), m.intercept)

    scenario("LogisticRegression-mapreduce.fit (an iteration's task, and one building the cached blocks)",
             "mapreduce.map", "3", lambda: lr("mapreduce"), also=[("blocks.build", "1")])
    scenario("LogisticRegression-allreduce.fit (barrier task)", "allreduce.task", "1", lambda: lr("allreduce"))
    lr_model = LogisticRegression(maxIter=15, regParam=0.01).fit(cancer)
    scenario("LogisticRegressionModel.transform", "transform.batch", "1",
             lambda: vectors(lr_model.transform(cancer), "probability"))

    hasher = FeatureHasher(inputCols=["species", "petal_len", "wide"], outputCol="hashed", numFeatures=64)
    scenario("FeatureHasher.transform", "transform.batch", "1", lambda: vectors(hasher.transform(mixed), "hashed"))

    try:
        import torch  # noqa: F401
    except ImportError:
        torch = None
    if torch is not None:
        from sparkml_scale.torch import TorchEstimator
        from sparkml_scale.torch.models import mlp

        ckpt = tempfile.mkdtemp(prefix="sparkml_scale_ckpt_")

        def torch_est(**kw):
            kw = {"epochs": 3, **kw}
            # numProc=1: one barrier task is enough to show the stage retried as a whole (suite time)
            return TorchEstimator(model=functools.partial(mlp, 64, [32], 10), batchSize=64, numProc=1,
                                  learningRate=3e-3, seed=11, **kw)

        def weights(model):
            return np.concatenate([np.asarray(v, dtype=np.float64).ravel()
                                   for v in model.state_dict().values()])

        tm = torch_est().fit(digits)
        results["torch.backend"] = tm.backendUsed if hasattr(tm, "backendUsed") else tm.getBackend()
        # The failure-free reference is tm (checkpointing does not change the weights): one fit fewer.
        arm("torch.epoch_end", "2")
        entry = {"point": "torch.epoch_end", "when": "2"}
        try:
            entry["max_abs_diff"] = float(np.max(np.abs(
                weights(torch_est(checkpointDir=os.path.join(ckpt, "retry")).fit(digits)) - weights(tm))))
        except Exception as exc:  # noqa: BLE001
            entry["error"] = f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
        entry["fired"] = disarm()
        results["TorchEstimator.fit (barrier stage, rank 0 after epoch 1)"] = entry
        # TorchDistributor's barrier stage is pyspark's own (a result stage, not retried): a clear error.
        arm("torch.epoch_end", "1")
        entry = {}
        try:
            torch_est(backend="torch_distributor", epochs=1).fit(digits)
        except Exception as exc:  # noqa: BLE001
            entry["error"] = f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
        entry["fired"] = disarm()
        results["TorchEstimator.fit torch_distributor (barrier result stage)"] = entry
        scenario("TorchModel.transform", "transform.batch", "1", lambda: vectors(tm.transform(digits), "probability"))

        # Every attempt fails from the 2nd epoch end on: the fit fails with a clear error;
        # a second fit resumes from the checkpoints the failed one left and matches a clean run.
        crash_dir = os.path.join(ckpt, "crash")
        arm("torch.epoch_end", "2+")
        entry = {}
        try:
            torch_est(checkpointDir=crash_dir).fit(digits)
            entry["error"] = None
        except Exception as exc:  # noqa: BLE001
            entry["error"] = f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
        entry["fired"] = disarm()
        entry["checkpoints"] = sorted(os.listdir(crash_dir)) if os.path.isdir(crash_dir) else []
        resumed = torch_est(checkpointDir=crash_dir, resumeFromCheckpoint=True).fit(digits)
        entry["resumed_epochs"] = [int(h["epoch"]) for h in resumed.history]
        entry["max_abs_diff"] = float(np.max(np.abs(weights(resumed) - weights(tm))))
        results["TorchEstimator.fit crash then resume"] = entry
        print("resume", entry, flush=True)
        shutil.rmtree(ckpt, ignore_errors=True)

    with open(out_path, "w") as f:
        json.dump(results, f, indent=1)
    spark.stop()
    shutil.rmtree(FAULT_DIR, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1])
