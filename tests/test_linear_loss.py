"""The loss/gradient/prediction kernels and the optimizers' objective, without Spark.

Gradients are checked against central finite differences of the loss, as scikit-learn's
``linear_model/tests/test_linear_loss.py`` does, on dense and CSR blocks, with weights, for
both families; the penalised objective of L-BFGS is checked the same way in each of its
variable spaces (diagonal and Cholesky preconditioners, L1 split).
"""
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import expit, softmax

from sparkml_scale.core.linear_loss import BinomialLoss, MultinomialLoss, loss_for
from sparkml_scale.core.optim.lbfgs import LBFGSObjective, cholesky_start, concat_blocks


def _data(rng, n, d, K, sparse):
    X = rng.normal(size=(n, d)) * (rng.random((n, d)) < (0.3 if sparse else 1.0))
    y = rng.integers(0, max(K, 2), size=n).astype(float)
    w = rng.uniform(0.2, 2.0, size=n)
    return (sp.csr_matrix(X) if sparse else X), y, w


def _split(X, y, w, parts=3):
    """The rows as several blocks (a partition's), to check that sums add up."""
    idx = np.array_split(np.arange(len(y)), parts)
    return [(X[i], y[i], w[i]) for i in idx]


def _numeric_grad(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e.flat[i] = eps
        g.flat[i] = (f(x + e) - f(x - e)) / (2 * eps)
    return g


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("K", [1, 3])
def test_gradient_matches_finite_differences(K, sparse):
    rng = np.random.default_rng(K + 10 * sparse)
    X, y, w = _data(rng, 40, 5, K, sparse)
    loss = loss_for(K > 1)
    coef, b = rng.normal(size=(K, 5)) * 0.5, rng.normal(size=K) * 0.3
    value, gb, g = loss.sums(_split(X, y, w), coef, b)
    num_g = _numeric_grad(lambda c: loss.sums([(X, y, w)], c, b)[0][0], coef)
    num_gb = _numeric_grad(lambda bb: loss.sums([(X, y, w)], coef, bb)[0][0], b)
    np.testing.assert_allclose(g, num_g, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gb, num_gb, rtol=1e-6, atol=1e-7)
    # the loss itself, from its definition
    Xd = X.toarray() if sparse else X
    M = Xd @ coef.T + b
    if K == 1:
        m = M[:, 0]
        ref = np.sum(w * (np.log1p(np.exp(m)) - y * m))
    else:
        ref = np.sum(w * (np.log(np.exp(M).sum(1)) - M[np.arange(len(y)), y.astype(int)]))
    np.testing.assert_allclose(value[0], ref, rtol=1e-12)


def test_sums_are_additive_over_blocks_and_skip_empty_ones():
    rng = np.random.default_rng(3)
    X, y, w = _data(rng, 30, 4, 3, False)
    loss = MultinomialLoss()
    coef, b = rng.normal(size=(3, 4)), rng.normal(size=3)
    whole = loss.sums([(X, y, w)], coef, b)
    parts = loss.sums(_split(X, y, w, 4) + [(X[:0], y[:0], w[:0])], coef, b)
    for a, c in zip(whole, parts):
        np.testing.assert_allclose(a, c, rtol=1e-12)


def test_binomial_loss_is_stable_for_large_margins():
    X = np.array([[1000.0], [-1000.0]])
    value, _, g = BinomialLoss().sums([(X, np.array([0.0, 1.0]), np.ones(2))], np.ones((1, 1)), np.zeros(1))
    assert np.isfinite(value[0]) and value[0] == pytest.approx(2000.0)
    assert np.isfinite(g).all()


def test_predictions_follow_mllibs_rules():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(20, 3))
    coef, b = rng.normal(size=(1, 3)), np.array([0.1])
    raw, prob, pred = BinomialLoss.predict(X, coef, b, 0.7)
    m = X @ coef[0] + 0.1
    np.testing.assert_allclose(raw, np.column_stack([-m, m]))
    np.testing.assert_allclose(prob[:, 1], expit(m))
    np.testing.assert_array_equal(pred, (expit(m) > 0.7).astype(float))
    coef3, b3 = rng.normal(size=(3, 3)), rng.normal(size=3)
    raw, prob, pred = MultinomialLoss.predict(X, coef3, b3)
    np.testing.assert_allclose(prob, softmax(X @ coef3.T + b3, axis=1), rtol=1e-12)
    np.testing.assert_array_equal(pred, prob.argmax(1))
    t = np.array([0.5, 0.0, 2.0])  # a zero threshold wins wherever its class has p > 0
    _, _, pred_t = MultinomialLoss.predict(X, coef3, b3, t)
    np.testing.assert_array_equal(pred_t, np.ones(20))


def _objective(rng, K, d, l1=0.0, l2=0.0, corr=None, standardize=True, fit_b=True):
    std = rng.uniform(0.5, 3.0, size=d)
    inv_std = 1.0 / std
    pen = np.ones(d) if standardize else inv_std ** 2
    return LBFGSObjective(
        K=K, d=d, inv_std=inv_std, std=std, mu=rng.normal(size=d), fit_b=fit_b, l1=l1, l2=l2,
        pen1=np.tile(np.ones(d) if standardize else inv_std, K), pen2=np.tile(pen, K), multinomial=K > 1, W=7.5,
        b0=np.zeros(K), init=None, coef_bounds=None, tol=1e-6, max_iter=10, centre_result=False,
        curvature=(np.array([0.2]) if K == 1 else np.diag([0.3, 0.3, 0.4]) - np.outer([0.3, 0.3, 0.4], [0.3, 0.3, 0.4])),
        corr=corr)


@pytest.mark.parametrize("case", ["l2-diagonal", "l2-cholesky", "elastic-net-split", "raw-scale"])
def test_objective_gradient_in_the_optimizers_space(case):
    rng = np.random.default_rng(7)
    K, d = (3, 4) if case != "raw-scale" else (1, 4)
    X, y, w = _data(rng, 50, d, K, False)
    loss = loss_for(K > 1)
    corr = None
    if case == "l2-cholesky":
        Z = rng.normal(size=(100, d))
        corr = np.corrcoef(Z, rowvar=False)
    obj = _objective(rng, K, d, l1=0.3 if case == "elastic-net-split" else 0.0, l2=0.5, corr=corr,
                     standardize=case != "raw-scale")
    if case == "l2-cholesky":
        assert obj.L is not None

    def sums(coef, b):
        value, gb, g = loss.sums([(X, y, w)], coef, b)
        return float(value[0]), gb, g

    x = np.abs(rng.normal(size=obj.x0.shape)) * 0.3  # >= 0: valid in the L1 split too
    f, grad = obj.value_grad(x, sums)
    num = _numeric_grad(lambda z: obj.value_grad(z, sums)[0], x)
    np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-7)
    # unpack and _to_u invert each other (the warm start's path)
    beta, _ = obj.unpack(x)
    if case != "elastic-net-split":
        np.testing.assert_allclose(obj._to_u(beta), x[: K * d], rtol=1e-10, atol=1e-12)


def test_cholesky_start_handles_constant_features_and_gives_none_when_not_positive():
    corr = np.eye(3)
    corr[2, 2] = 0.0  # a constant feature
    L = cholesky_start(corr, np.array([[0.25]]), 0.0, np.ones(3))
    np.testing.assert_allclose(L @ L.T, np.diag([1.0 + 1e-6, 1.0 + 1e-6, 1.0]), rtol=1e-9)
    assert cholesky_start(np.zeros((2, 2)), np.array([[0.25]]), 0.0, np.ones(2)) is None


def test_concat_blocks_keeps_csr_and_rows():
    X1, X2 = np.ones((2, 3)), sp.csr_matrix(np.eye(3))
    X, y, w = concat_blocks([(X1, np.zeros(2), np.ones(2)), (X2, np.ones(3), np.full(3, 2.0))], 3)
    assert sp.issparse(X) and X.shape == (5, 3)
    np.testing.assert_array_equal(y, [0, 0, 1, 1, 1])
    X, y, w = concat_blocks([], 3)
    assert X.shape == (0, 3) and len(y) == 0
