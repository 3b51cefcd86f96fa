"""Data and grid shared by tests/test_tuning.py and tests/make_tuning_reference.py.

The TPE-vs-grid claim is checked on scikit-learn's digits (1,797 8x8 images, 10 classes) with
sparkml_scale's multinomial LogisticRegression and accuracy, over two folds fixed by a ``fold``
column (a seeded permutation of the rows, so every session, classic or Connect, gets the same
folds whatever the partitioning).  The grid: regParam in logspace(-4, 0, 7) x elasticNetParam in
{0, 0.25, 0.5, 0.75, 1} (35 points), as a CrossValidator user would write it.
"""
from __future__ import annotations

import numpy as np

GRID_REG = [float(v) for v in np.logspace(-4, 0, 7)]
GRID_EN = [0.0, 0.25, 0.5, 0.75, 1.0]
NUM_FOLDS = 2
MAX_ITER = 100
REFERENCE = "tuning_grid_reference.json"


def digits_frame(spark):
    """``features`` (64 pixel values / 16), ``label`` (0..9), ``fold`` (0/1), cached."""
    from pyspark.ml.linalg import Vectors
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    fold = np.random.default_rng(0).permutation(len(y)) % NUM_FOLDS
    rows = [(Vectors.dense(x / 16.0), float(t), int(f)) for x, t, f in zip(X, y, fold)]
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import types as T

    schema = T.StructType([T.StructField("features", VectorUDT()), T.StructField("label", T.DoubleType()),
                           T.StructField("fold", T.IntegerType())])
    df = spark.createDataFrame(rows, schema).repartition(2).cache()
    df.count()
    return df


def grid(lr):
    from pyspark.ml.tuning import ParamGridBuilder

    return ParamGridBuilder().addGrid(lr.regParam, GRID_REG).addGrid(lr.elasticNetParam, GRID_EN).build()
