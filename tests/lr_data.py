"""Data helpers shared by the LogisticRegression test modules."""
import numpy as np
from pyspark.ml.linalg import Vectors


def frame(spark, X, y, w=None, parts=2):
    """Cached DataFrame ``id, features (dense vector), label, w`` (w = 1 when not given)."""
    w = np.ones(len(y)) if w is None else w
    rows = [(i, Vectors.dense(r), float(t), float(wi)) for i, (r, t, wi) in enumerate(zip(X, y, w))]
    return spark.createDataFrame(rows, ["id", "features", "label", "w"]).repartition(parts).cache()


def load(name):
    """A scikit-learn bundled data set as float64 ``(X, y)``."""
    from sklearn import datasets

    X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    return X.astype(np.float64), y.astype(np.float64)
