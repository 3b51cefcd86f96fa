"""Data helpers shared by the LogisticRegression test modules."""
import numpy as np

from helpers import vector_frame


def frame(spark, X, y, w=None, parts=2):
    """Cached DataFrame ``id, features (dense vector), label, w``: the weight column is always
    there (w = 1 when not given), so any of these frames can be fitted with ``weightCol="w"``."""
    return vector_frame(spark, X, y, np.ones(len(y)) if w is None else w, parts=parts, ids=True, weight="w")


def load(name):
    """A scikit-learn bundled data set as float64 ``(X, y)``."""
    from sklearn import datasets

    X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    return X.astype(np.float64), y.astype(np.float64)
