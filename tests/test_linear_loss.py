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


@pytest.mark.parametrize("sparse", [False, True])
def test_binomial_hessian_is_the_derivative_of_the_gradient(sparse):
    """``sums_hessian``: the same sums as ``sums``, and a Hessian over ``[coef, b]`` equal to the
    finite differences of the gradient (weights, several blocks)."""
    rng = np.random.default_rng(11)
    d = 5
    X, y, w = _data(rng, 80, d, 1, sparse)
    blocks = _split(X, y, w)
    loss = BinomialLoss()
    coef, b = rng.normal(size=(1, d)) * 0.4, np.array([0.3])
    value, gb, g, H = loss.sums_hessian(blocks, coef, b)
    ref = loss.sums(blocks, coef, b)
    np.testing.assert_allclose(value, ref[0], rtol=1e-12)
    np.testing.assert_allclose(gb, ref[1], rtol=1e-12)
    np.testing.assert_allclose(g, ref[2], rtol=1e-12)

    def grad(v):
        _, gb_, g_ = loss.sums(blocks, v[:d][None, :], v[d:])
        return np.append(g_[0], gb_)

    v0 = np.append(coef[0], b)
    eps = 1e-6
    num = np.column_stack([(grad(v0 + eps * e) - grad(v0 - eps * e)) / (2 * eps) for e in np.eye(d + 1)])
    np.testing.assert_allclose(H, num, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(H, H.T, rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", ["diagonal", "cholesky", "raw-scale", "no-intercept"])
def test_newton_hessian_in_the_optimizers_space(case):
    """The Hessian :meth:`LBFGSObjective.minimize` gives Newton (``M^T H M / W + P``) is the
    derivative of :meth:`value_grad`'s gradient in every variable space it can meet."""
    rng = np.random.default_rng(5)
    d = 4
    X, y, w = _data(rng, 60, d, 1, False)
    corr = np.corrcoef(rng.normal(size=(100, d)), rowvar=False) if case == "cholesky" else None
    obj = _objective(rng, 1, d, l2=0.5, corr=corr, standardize=case != "raw-scale", fit_b=case != "no-intercept")
    if case == "no-intercept":
        obj.mu = np.zeros(d)  # no centring without an intercept (as build_objective does)
    assert obj.newton_ready()
    loss = BinomialLoss()

    def sums(coef, b):
        value, gb, g, H = loss.sums_hessian([(X, y, w)], coef, b)
        return float(value[0]), gb, g, H

    x = rng.normal(size=obj.x0.shape) * 0.3
    obj.value_grad(x, sums)
    M, P = obj._newton_maps()
    H = M.T @ (obj.extra[0] / obj.W) @ M + P
    eps = 1e-6
    num = np.column_stack([(obj.value_grad(x + eps * e, sums)[1] - obj.value_grad(x - eps * e, sums)[1]) / (2 * eps)
                           for e in np.eye(len(x))])
    np.testing.assert_allclose(H, num, rtol=1e-5, atol=1e-7)


def test_newton_and_lbfgs_reach_the_same_optimum():
    """``minimize(newton=True)`` (exact Newton steps) ends where L-BFGS does, in fewer evaluations."""
    rng = np.random.default_rng(9)
    d = 6
    X = rng.normal(size=(400, d)) * rng.uniform(0.1, 10.0, size=d)
    y = (X @ rng.normal(size=d) / 5 + rng.normal(size=400) > 0).astype(float)
    w = np.ones(400)
    loss = BinomialLoss()
    out = {}
    for newton in (False, True):
        obj = _objective(np.random.default_rng(1), 1, d, l2=0.01)
        obj.mu = X.mean(0)
        obj.inv_std = 1.0 / X.std(0, ddof=1)
        obj.W = 400.0
        obj.tol, obj.max_iter = 1e-12, 200

        def sums(coef, b, newton=newton):
            res = (loss.sums_hessian if newton else loss.sums)([(X, y, w)], coef, b)
            return (float(res[0][0]), *res[1:])

        x, history, nit, nfev = obj.minimize(sums, newton=newton)
        out[newton] = (obj.finish(x), history[-1], nfev)
    (B_l, b_l), f_l, n_l = out[False]
    (B_n, b_n), f_n, n_n = out[True]
    assert f_n <= f_l + 1e-14
    np.testing.assert_allclose(B_n, B_l, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(b_n, b_l, rtol=1e-5, atol=1e-8)
    assert n_n < n_l and n_n <= 12, (n_n, n_l)


def test_support_sums_see_only_the_support_columns():
    """:class:`SupportSums` evaluates the kernel with zeros off the support and returns the
    support's gradient; :meth:`SupportSums.narrow` gives the same sums from cut blocks; the
    objective's ``finish`` puts the coefficients back at their columns."""
    from sparkml_scale.core.optim.lbfgs import NewtonSums, SupportSums

    rng = np.random.default_rng(4)
    d = 12
    support = np.array([1, 4, 5, 10])
    X = np.zeros((40, d))
    X[:, support] = rng.normal(size=(40, 4))
    Xs = sp.csr_matrix(X)
    y = (rng.random(40) > 0.5).astype(float)
    w = np.ones(40)
    coef_s, b = rng.normal(size=(1, 4)), np.array([0.1])
    full = np.zeros((1, d))
    full[:, support] = coef_s
    ref = BinomialLoss().sums([(X, y, w)], full, b)
    kernel = SupportSums(BinomialLoss(), support, d)
    for blocks in ([(X, y, w)], [(Xs, y, w)]):
        got = kernel(blocks, coef_s, b)
        assert got[2].shape == (1, 4)
        np.testing.assert_allclose(got[2], ref[2][:, support], rtol=1e-12)
        np.testing.assert_allclose(got[0], ref[0], rtol=1e-12)
        cut, inner = kernel.narrow(blocks)
        np.testing.assert_allclose(inner(cut, coef_s, b)[2], got[2], rtol=1e-12)
        newton = NewtonSums(BinomialLoss(), support)(blocks, coef_s, b)
        np.testing.assert_allclose(newton[2], got[2], rtol=1e-12)
        assert newton[3].shape == (5, 5)
    obj = _objective(rng, 1, 4, l2=0.1)
    obj.support, obj.num_features = support, d
    B, _ = obj.finish(rng.normal(size=obj.x0.shape))
    assert B.shape == (1, d) and np.all(B[:, np.setdiff1d(np.arange(d), support)] == 0)
    assert np.all(B[:, support] != 0)
