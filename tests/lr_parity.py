"""The LogisticRegression parity grid: cases, the objective and its KKT conditions in numpy.

Shared by tests/test_logistic_parity_grid.py and tests/make_lr_parity_reference.py (which
records MLlib's fits of every case in tests/data/lr_parity_mllib.json).  Data: scikit-learn's
bundled breast_cancer (binomial, 569 x 30, unscaled features) and wine (3 classes, 178 x 13,
unscaled); none of the solver's settings were tuned on them.
"""
import itertools
import json
import os

import numpy as np

from lr_data import load

REFERENCE = os.path.join(os.path.dirname(__file__), "data", "lr_parity_mllib.json")
DATASETS = {"breast_cancer": "binomial", "wine": "multinomial"}
REG_PARAMS = (0.1, 0.01, 0.001)
ELASTIC_NET = (0.0, 0.5, 1.0)
FIT = dict(maxIter=300, tol=1e-10)


def weights(n):
    """Deterministic, uneven row weights 0.5 .. 2.5."""
    return 0.5 + (np.arange(n) * 7 % 5) / 2.0


def cases():
    """Every case of the grid as a dict (id, data, family, weighted, standardization, regParam, elasticNetParam)."""
    out = []
    for data, std, weighted, reg, alpha in itertools.product(DATASETS, (True, False), (False, True), REG_PARAMS,
                                                             ELASTIC_NET):
        cid = f"{data}-{'std' if std else 'raw'}-{'w' if weighted else 'u'}-reg{reg:g}-en{alpha:g}"
        out.append(dict(id=cid, data=data, family=DATASETS[data], weighted=weighted, standardization=std,
                        regParam=reg, elasticNetParam=alpha))
    return out


def case_data(case):
    X, y = load(case["data"])
    w = weights(len(y)) if case["weighted"] else np.ones(len(y))
    return X, y, w


def feature_std(X, w):
    """MLlib's weighted unbiased standard deviation of each feature."""
    W = w.sum()
    mean = w @ X / W
    var = w @ (X - mean) ** 2 / (W - (w @ w) / W)
    return np.sqrt(var)


def _margins(X, B, b):
    return X @ B.T + b  # (n, K)


def smooth_and_grad(case, X, y, w, B, b):
    """The weighted mean log-loss plus the L2 part, and its gradients ``(f, dB (K, d), db (K,))``."""
    std = feature_std(X, w)
    s = std if case["standardization"] else np.ones_like(std)
    l2 = case["regParam"] * (1.0 - case["elasticNetParam"])
    W = w.sum()
    M = _margins(X, B, b)
    if B.shape[0] == 1:
        m = M[:, 0]
        loss = w @ (np.logaddexp(0.0, m) - y * m) / W
        R = (w * (1.0 / (1.0 + np.exp(-m)) - y))[:, None] / W
    else:
        lse = np.logaddexp.reduce(M, axis=1)
        rows = np.arange(len(y))
        yi = y.astype(int)
        loss = w @ (lse - M[rows, yi]) / W
        P = np.exp(M - lse[:, None])
        P[rows, yi] -= 1.0
        R = P * w[:, None] / W
    f = loss + 0.5 * l2 * np.sum((B * s) ** 2)
    return f, R.T @ X + l2 * B * s**2, R.sum(axis=0)


def objective(case, X, y, w, B, b):
    """MLlib's objective: weighted mean log-loss + regParam (alpha L1 + (1 - alpha)/2 L2) of the
    coefficients, scaled by the feature std when standardization is on; intercepts unpenalized."""
    std = feature_std(X, w)
    s = std if case["standardization"] else np.ones_like(std)
    l1 = case["regParam"] * case["elasticNetParam"]
    return smooth_and_grad(case, X, y, w, B, b)[0] + l1 * np.sum(np.abs(B * s))


def kkt_residual(case, X, y, w, B, b):
    """Largest violation of the optimality (KKT) conditions, measured in the standardized space
    (the gradient with respect to ``coef * std``): nonzero coefficients need
    ``grad + l1 * sign = 0``, zero ones ``|grad| <= l1``, intercepts a zero gradient."""
    std = feature_std(X, w)
    safe = np.where(std > 0, std, 1.0)
    s = std if case["standardization"] else np.ones_like(std)
    l1 = case["regParam"] * case["elasticNetParam"]
    _, gB, gb = smooth_and_grad(case, X, y, w, B, b)
    g = gB / safe  # d f / d (coef * std)
    pen = l1 * s / safe
    nz = B != 0
    res = np.where(nz, np.abs(g + pen * np.sign(B)), np.maximum(np.abs(g) - pen, 0.0))
    return float(max(res.max(), np.abs(gb).max()))


def load_reference():
    with open(REFERENCE) as fh:
        return json.load(fh)
