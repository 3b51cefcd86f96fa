"""Loss, gradient and prediction kernels of linear models on one block of rows (numpy only).

One class per model family, after scikit-learn's ``sklearn/linear_model/_linear_loss.py``.
Shape conventions, the same for every class:

- ``X``: a block of ``n`` rows, float64 ``(n, d)`` ndarray or ``scipy.sparse`` CSR ``(n, d)``;
- ``coef``: ``(K, d)`` float64 (``K = 1`` for the binomial family, the number of classes for
  the multinomial one); ``b``: the intercepts, ``(K,)``;
- ``y``: ``(n,)`` float64 labels (``0.0``/``1.0`` binomial, class indices ``0 .. K-1``
  multinomial); ``w``: ``(n,)`` float64 non-negative row weights;
- margins ``M = X @ coef.T + b``: ``(n, K)``.

:meth:`sums` returns the *raw weighted sums* over blocks of ``(X, y, w)``:
``[loss (1,), d loss / d b (K,), d loss / d coef (K, d)]`` with ``loss = sum_i w_i l_i``, so
partial results of partitions add up; the optimizers (:mod:`sparkml_scale.core.optim`) divide
by the weight sum and add the penalty.  :meth:`predict` gives the outputs of a fitted model
for a block, as Spark MLlib's ``LogisticRegressionModel`` defines them.

Losses (MLlib's ``LogisticRegression.scala``, ``BinaryLogisticBlockAggregator`` and
``MultinomialLogisticBlockAggregator``):

- binomial: ``l_i = log(1 + exp(m_i)) - y_i m_i`` (computed as ``logaddexp(0, m) - y m``);
- multinomial (softmax without a pivot class): ``l_i = logsumexp(M_i) - M_{i, y_i}``.
"""
from __future__ import annotations

from typing import Iterable, List, Optional, Tuple

import numpy as np
from scipy.special import expit, logsumexp

__all__ = ["BinomialLoss", "MultinomialLoss", "loss_for"]


class _LinearLoss:
    """Shared parts of the families (see the module docstring for shapes)."""

    multinomial = False

    @staticmethod
    def margins(X, coef: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``X @ coef.T + b``, ``(n, K)`` float64."""
        return np.asarray(X @ coef.T) + b

    def residuals(self, M: np.ndarray, y: np.ndarray, w: np.ndarray) -> Tuple[float, np.ndarray]:
        """``(sum_i w_i l_i, R)`` with ``R = w * d l / d M``, ``(n, K)``."""
        raise NotImplementedError

    def sums(self, blocks: Iterable, coef: np.ndarray, b: np.ndarray) -> List[np.ndarray]:
        """Raw weighted sums ``[loss (1,), d/db (K,), d/dcoef (K, d)]`` over ``(X, y, w)`` blocks."""
        K, d = coef.shape
        loss = 0.0
        g = np.zeros((K, d))
        gb = np.zeros(K)
        for X, y, w in blocks:
            if X.shape[0] == 0:
                continue
            value, R = self.residuals(self.margins(X, coef, b), y, w)
            loss += value
            g += np.asarray(X.T @ R).T
            gb += R.sum(axis=0)
        return [np.array([loss]), gb, g]

    __call__ = sums


class BinomialLoss(_LinearLoss):
    """Logistic loss of a binary classifier, ``K = 1`` (labels 0/1)."""

    multinomial = False

    def residuals(self, M, y, w):
        m = M[:, 0]
        value = float(w @ (np.logaddexp(0.0, m) - y * m))  # log(1 + e^m) - y m, stable
        return value, (w * (expit(m) - y))[:, None]

    def sums_hessian(self, blocks: Iterable, coef: np.ndarray, b: np.ndarray) -> List[np.ndarray]:
        """:meth:`sums` plus the raw weighted Hessian of the loss in ``[coef, b]``:
        ``[loss (1,), d/db (1,), d/dcoef (1, d), H (d + 1, d + 1)]`` with
        ``H = [X 1]^T diag(w p (1 - p)) [X 1]`` (``p = sigmoid(m)``), for Newton steps."""
        import scipy.sparse as sp

        d = coef.shape[1]
        loss = 0.0
        g = np.zeros((1, d))
        gb = np.zeros(1)
        H = np.zeros((d + 1, d + 1))
        for X, y, w in blocks:
            if X.shape[0] == 0:
                continue
            m = self.margins(X, coef, b)[:, 0]
            p = expit(m)
            loss += float(w @ (np.logaddexp(0.0, m) - y * m))
            r = w * (p - y)
            g[0] += np.asarray(X.T @ r).ravel()
            gb[0] += r.sum()
            h = w * p * (1.0 - p)
            if sp.issparse(X):  # X^T (h X): CSR times CSR, about twice as fast as X.T @ diags(h) @ X
                X = sp.csr_matrix(X)
                hX = sp.csr_matrix((X.data * np.repeat(h, np.diff(X.indptr)), X.indices, X.indptr), shape=X.shape)
                H[:d, :d] += (X.T.tocsr() @ hX).toarray()
            else:
                Xs = X * np.sqrt(h)[:, None]
                H[:d, :d] += Xs.T @ Xs
            xh = np.asarray(X.T @ h).ravel()
            H[:d, d] += xh
            H[d, :d] += xh
            H[d, d] += h.sum()
        return [np.array([loss]), gb, g, H]

    @staticmethod
    def predict(X, coef: np.ndarray, b: np.ndarray, threshold: float):
        """``(raw (n, 2), probability (n, 2), prediction (n,))``: raw ``[-m, m]``, probability
        ``[1 - p, p]`` with ``p = sigmoid(m)``, prediction ``1.0`` where ``p > threshold``."""
        m = (np.asarray(X @ coef.T) + b)[:, 0]
        p = expit(m)
        return np.column_stack([-m, m]), np.column_stack([1.0 - p, p]), (p > threshold).astype(np.float64)


class MultinomialLoss(_LinearLoss):
    """Softmax cross-entropy of a ``K``-class classifier (labels ``0 .. K-1``), no pivot class."""

    multinomial = True

    def residuals(self, M, y, w):
        lse = logsumexp(M, axis=1)
        yi = y.astype(np.int64)
        rows = np.arange(len(yi))
        value = float(w @ (lse - M[rows, yi]))
        R = np.exp(M - lse[:, None])
        R[rows, yi] -= 1.0
        R *= w[:, None]
        return value, R

    @staticmethod
    def predict(X, coef: np.ndarray, b: np.ndarray, thresholds: Optional[np.ndarray] = None):
        """``(raw (n, K), probability (n, K), prediction (n,))``: raw = the margins, probability =
        their softmax, prediction = ``argmax(p)``, or with ``thresholds`` (``(K,)``)
        ``argmax(p / t)`` where ``t = 0`` wins wherever ``p > 0`` (MLlib's rule)."""
        M = np.asarray(X @ coef.T) + b
        P = np.exp(M - logsumexp(M, axis=1, keepdims=True))
        if thresholds is None:
            return M, P, np.argmax(P, axis=1).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            scaled = np.where(thresholds > 0, P / np.where(thresholds > 0, thresholds, 1.0),
                              np.where(P > 0, np.inf, 0.0))
        return M, P, np.argmax(scaled, axis=1).astype(np.float64)


def loss_for(multinomial: bool) -> _LinearLoss:
    """The loss object of the family: :class:`MultinomialLoss` or :class:`BinomialLoss`."""
    return MultinomialLoss() if multinomial else BinomialLoss()
