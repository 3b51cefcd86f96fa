"""L-BFGS-B for linear models over distributed data: the objective in the optimizer's space and
its two executions (one Spark job per evaluation, or one barrier stage with allreduce).

The objective is MLlib's (``LogisticRegression.scala``, ``LinearRegression.scala``): the
weighted mean loss plus ``regParam * ((1 - alpha) / 2 * ||B_s||^2 + alpha * ||B_s||_1)`` on the
coefficients in the standardized space; L1 by the split ``beta = beta+ - beta-`` with bounds
``>= 0``; the stop rule is Breeze's (MLlib's).  Reference: Byrd, Lu, Nocedal & Zhu (1995),
"A limited memory algorithm for bound constrained optimization", through
``scipy.optimize.minimize(method="L-BFGS-B")``.  Map-reduce fits of small binomial L2 problems
take exact Newton steps instead (``method="trust-exact"``, the Hessian summed in the same pass as
the gradient; Nocedal & Wright (2006), "Numerical Optimization", ch. 4), with the same stop rule.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import scipy.sparse as sp

from ..allreduce import run_barrier
from ..blocks import iter_blocks
from ..gram import restrict_columns

__all__ = ["LBFGSObjective", "SupportSums", "NewtonSums", "cholesky_start", "minimize_mapreduce",
           "minimize_allreduce", "minimize_direct", "concat_blocks", "STOP_WINDOW"]

log = logging.getLogger(__name__)

#: Iterations over which the decrease of the objective is compared with ``tol`` (Breeze's 20).
STOP_WINDOW = 20


class LBFGSObjective:
    """Penalised objective of a linear model and its L-BFGS-B driver in the optimizer's space
    (picklable: it runs on the driver for map-reduce and on every barrier task for allreduce).

    The data term comes from a ``sums(coef (K, d), b (K,))`` callable returning the raw weighted
    sums ``(loss, d loss / d b (K,), d loss / d coef (K, d))`` of a loss of
    :mod:`sparkml_scale.core.linear_loss`; this class adds the mean, the elastic-net penalty,
    the change of variables and the stop rule.

    Variables: ``[u (K*d), b_c (K if fitIntercept)]``, or with L1
    ``[u+ (K*d), u- (K*d), b_c]`` (``u = u+ - u-``, both bounded below by 0), where
    ``u = beta_s * D``: ``beta_s = coef * std`` are the coefficients in the standardized
    space (as MLlib optimizes) and ``b_c = b + coef . mu`` the centred intercepts (margins
    are ``sum_j beta_s_j (x_j - mu_j) / std_j + b_c``, so sparse blocks stay sparse).

    ``D`` is a diagonal preconditioner: ``D_j = sqrt((h + l2 pen2_j) / (h + l2))`` with
    ``h = p (1 - p)`` the log-loss curvature at the class prior.  With
    ``standardization=True`` every ``pen2_j`` is 1 and ``D = 1`` (MLlib's own space).  With
    ``standardization=False`` the L2 penalty in the standardized space is
    ``l2 beta_s_j^2 / std_j^2``, whose weights span the squared ratio of the feature scales
    (1e10 on breast_cancer): the Hessian's diagonal then does too, and L-BFGS (ours and
    MLlib's) stalls far from the optimum within maxIter.  ``D`` equalizes that diagonal, so
    the conditioning no longer depends on the feature scales.

    With ``corr`` (the ``(d, d)`` second moments of the standardized features; L2 fits
    without bounds) the preconditioner is full: ``u = L^T vec(beta_s)`` with ``L`` the
    Cholesky factor of the Hessian at the start, ``(A kron corr + l2 diag(pen2)) / c``
    (``A = p (1 - p)`` binomial, ``diag(p) - p p^T`` multinomial, ``c = mean(diag(A)) + l2``),
    so that strongly correlated features (breast_cancer's radius, perimeter and area) and
    the softmax's coupled classes do not slow L-BFGS down either.  ``sums(coef, b)`` must
    return the raw weighted sums ``(loss, d loss / d b (K,), d loss / d coef (K, d))``.

    With ``support`` (``(d,)`` column indices of the data's ``num_features`` columns) the
    problem is over those columns only: every per-column argument has ``d`` entries, the data
    term's kernel sees ``(K, d)`` coefficients (wrap it in :class:`SupportSums`), and
    :meth:`finish` returns ``(K, num_features)`` coefficients, zero outside ``support``.
    """

    def __init__(self, *, K, d, inv_std, std, mu, fit_b, l1, l2, pen1, pen2, multinomial, W, b0, init,
                 coef_bounds, tol, max_iter, centre_result, curvature=None, corr=None, support=None,
                 num_features=None):
        self.K, self.d = K, d
        self.support = support
        self.num_features = d if num_features is None else num_features
        A = np.eye(K) * 0.25 if curvature is None else np.atleast_2d(np.asarray(curvature, dtype=np.float64))
        h = np.repeat(np.diag(A), d)
        self.D = np.sqrt((h + l2 * pen2) / (h + l2))
        # ``corr`` is given only for L2 fits without bounds (the caller decides; see LogisticRegression).
        self.L = None if corr is None else cholesky_start(corr, A, l2, pen2)
        self.inv_std, self.mu = inv_std, mu
        self.fit_b, self.l1, self.l2 = fit_b, l1, l2
        self.pen1, self.pen2 = pen1, pen2
        self.multinomial = multinomial
        self.W = W
        self.tol, self.max_iter = tol, max_iter
        self.centre_result = centre_result
        self.bounded = coef_bounds is not None
        self.use_l1 = l1 > 0
        n = self.n = K * d
        self.nb = K if fit_b else 0
        nvar = (2 * n if self.use_l1 else n) + self.nb
        lo = np.full(nvar, -np.inf)
        hi = np.full(nvar, np.inf)
        if self.use_l1:
            lo[: 2 * n] = 0.0
        if coef_bounds is not None:
            lbB, ubB, lbb, ubb = coef_bounds
            scale = np.tile(std, K)
            ok = scale > 0
            lo[:n][ok] = (lbB.ravel() * scale * self.D)[ok]
            hi[:n][ok] = (ubB.ravel() * scale * self.D)[ok]
            if fit_b:
                lo[nvar - K :] = lbb
                hi[nvar - K :] = ubb
        self.lo, self.hi = lo, hi
        x0 = np.zeros(nvar)
        if fit_b:
            x0[nvar - self.nb :] = b0
        if init is not None:
            coef0, b_init = init
            beta0 = self._to_u(coef0 * std)
            if self.use_l1:
                x0[:n], x0[n : 2 * n] = np.maximum(beta0, 0.0), np.maximum(-beta0, 0.0)
            else:
                x0[:n] = beta0
            if fit_b:
                x0[nvar - K :] = b_init + coef0 @ mu
        self.x0 = np.clip(x0, lo, hi)  # MLlib moves the start inside the bounds

    def _to_u(self, beta: np.ndarray) -> np.ndarray:
        """Standardized-space coefficients ``(K, d)`` -> the optimizer's variables ``(K*d,)``."""
        if self.L is None:
            return beta.ravel() * self.D
        return self.L.T @ beta.ravel()

    def _grad_u(self, g: np.ndarray) -> np.ndarray:
        """A gradient with respect to ``beta_s`` ``(K*d,)`` -> with respect to ``u``."""
        if self.L is None:
            return g / self.D
        from scipy.linalg import solve_triangular

        return solve_triangular(self.L, g, lower=True)

    def _grad_beta(self, gu: np.ndarray) -> np.ndarray:
        """A gradient with respect to ``u`` ``(K*d,)`` -> with respect to ``beta_s`` (for the stop test)."""
        if self.L is None:
            return gu * self.D
        return self.L @ gu

    def unpack(self, x: np.ndarray):
        n = self.n
        u = x[:n] - x[n : 2 * n] if self.use_l1 else x[:n]
        b = x[len(x) - self.nb :] if self.fit_b else np.zeros(self.K)
        if self.L is None:
            return (u / self.D).reshape(self.K, self.d), b
        from scipy.linalg import solve_triangular

        return solve_triangular(self.L, u, lower=True, trans="T").reshape(self.K, self.d), b

    def value_grad(self, x: np.ndarray, sums):
        n = self.n
        beta, b_c = self.unpack(x)
        coef = beta * self.inv_std
        loss, gb, g, *extra = sums(coef, b_c - coef @ self.mu)
        #: What the kernel returned beyond the sums (the raw Hessian of :class:`NewtonSums`).
        self.extra = extra
        W = self.W
        f = loss / W
        g = (g * self.inv_std - np.outer(gb, self.mu * self.inv_std)) / W
        bf = beta.ravel()
        f += 0.5 * self.l2 * float(np.sum(self.pen2 * bf * bf))
        g = g.ravel() + self.l2 * self.pen2 * bf
        if self.use_l1:
            f += self.l1 * float(np.sum(self.pen1 * (x[:n] + x[n : 2 * n]) / self.D))
            grad = np.concatenate([g + self.l1 * self.pen1, -g + self.l1 * self.pen1]) / np.tile(self.D, 2)
        else:
            grad = self._grad_u(g)
        if self.fit_b:
            grad = np.concatenate([grad, gb / W])
        return f, grad

    def newton_ready(self) -> bool:
        """Whether :meth:`minimize` can take Newton steps (``newton=True``): one row of
        coefficients (binomial), L2 only, no bounds."""
        return self.K == 1 and not self.multinomial and not self.use_l1 and not self.bounded

    def _newton_maps(self):
        """``(M (d + 1, nvar), P (nvar, nvar))``: the linear map from the optimizer's variables to
        the raw ``[coef (d), intercept]`` and the penalty's Hessian in the variables
        (:meth:`newton_ready` problems only)."""
        from scipy.linalg import solve_triangular

        d, n = self.d, self.n
        T = np.diag(1.0 / self.D) if self.L is None else solve_triangular(self.L, np.eye(n), lower=True, trans="T")
        A = T * self.inv_std[:, None]  # coef = A u
        nvar = n + self.nb
        M = np.zeros((d + 1, nvar))
        M[:d, :n] = A
        M[d, :n] = -(self.mu @ A)
        if self.fit_b:
            M[d, n] = 1.0
        P = np.zeros((nvar, nvar))
        P[:n, :n] = self.l2 * (T.T * self.pen2) @ T
        return M, P

    def minimize(self, sums, on_iteration: Optional[Callable[[int, float], None]] = None, newton: bool = False):
        """L-BFGS-B from ``x0`` with MLlib's (Breeze's) stop rule; returns ``(x, history, nit, nfev)``.
        ``on_iteration(iteration, objective)`` is called after each iteration (progress).

        ``newton=True`` (:meth:`newton_ready` problems, ``sums`` a :class:`NewtonSums`: it also
        returns the raw Hessian of the data term): Newton steps instead (scipy's trust-exact, the
        Hessian from the same pass as the gradient), with the same stop rule.  Newton's method
        needs a handful of passes where L-BFGS needs tens: the choice of a map-reduce fit whose
        every pass is a Spark job (scikit-learn's "newton-cholesky" solver makes it for the
        same kind of problem: few columns, many rows)."""
        from scipy.optimize import minimize

        last: Dict[str, np.ndarray] = {}
        box = bool(np.isfinite(self.lo).any() or np.isfinite(self.hi).any())
        evaluations = [0]

        def fun(x):
            if "x" in last and np.array_equal(last["x"], x):  # scipy asks for the start again: no new pass
                return last["f"], last["g"].copy()
            f, g = self.value_grad(x, sums)
            evaluations[0] += 1
            last["x"], last["f"], last["g"] = x.copy(), f, g
            if newton:
                last["H"] = self.extra[0]
            return f, g.copy()

        history: List[float] = [float(fun(self.x0)[0])]
        tol = self.tol
        n = self.n

        def to_beta(g):
            if self.use_l1:
                return np.concatenate([g[:n] * self.D, g[n : 2 * n] * self.D, g[2 * n :]])
            return np.concatenate([self._grad_beta(g[:n]), g[n:]])

        def callback(intermediate_result):
            # The norm of the (projected) gradient is at most max(tol * f, 1e-8), or the objective
            # fell by at most tol * |f0| over the last STOP_WINDOW iterations.
            x = intermediate_result.x
            f = float(intermediate_result.fun)
            history.append(f)
            log.info("L-BFGS: iteration %d objective %.10g", len(history) - 1, f)
            if on_iteration is not None:
                on_iteration(len(history) - 1, f)
            if np.array_equal(last.get("x"), x):
                g = last["g"]
                if box:  # projected gradient: no descent through an active bound
                    g = np.where(((x <= self.lo) & (g > 0)) | ((x >= self.hi) & (g < 0)), 0.0, g)
                if np.linalg.norm(to_beta(g)) <= max(tol * f, 1e-8):  # in the standardized space
                    raise StopIteration
            if len(history) > STOP_WINDOW and max(history[-STOP_WINDOW:]) - f <= tol * abs(history[0]):
                raise StopIteration

        if self.max_iter == 0:
            return self.x0, history, 0, 1
        if newton:
            M, P = self._newton_maps()

            def hess(x):
                if not np.array_equal(last.get("x"), x):
                    fun(x)
                return M.T @ (last["H"] / self.W) @ M + P

            # Exact Newton steps (the subproblem solved by Cholesky, so the convergence is quadratic;
            # Newton-CG's truncated steps stop MLlib's rule too early on ill-conditioned problems) in
            # a trust region first as wide as any standardized coefficient vector gets, so that the
            # full step is taken; gtol 0: the callback's stop rule (MLlib's) ends the iterations.
            res = minimize(fun, self.x0, jac=True, hess=hess, method="trust-exact", callback=callback,
                           options={"maxiter": self.max_iter, "gtol": 0.0, "initial_trust_radius": 1e3,
                                    "max_trust_radius": 1e6})
            return res.x, history, int(res.nit), evaluations[0]
        bounds = list(zip(np.where(np.isfinite(self.lo), self.lo, None), np.where(np.isfinite(self.hi), self.hi, None))) if box else None
        res = minimize(fun, self.x0, jac=True, method="L-BFGS-B", bounds=bounds, callback=callback,
                       options={"maxiter": self.max_iter, "ftol": 0.0, "gtol": 1e-12,
                                "maxfun": self.max_iter * 20 + 20, "maxcor": 10})
        return res.x, history, int(res.nit), evaluations[0]

    def finish(self, x: np.ndarray):
        """``(coef (K, d), intercept (K,))`` in the original space, reported as MLlib does."""
        beta, b_c = self.unpack(x)
        coef = beta * self.inv_std
        intercept = b_c - coef @ self.mu
        if self.multinomial and not self.bounded:
            # Without regularization softmax coefficients are identifiable only up to a constant
            # per feature: MLlib (after glmnet) reports the class-mean-centred ones; the
            # intercepts are always centred.
            if self.centre_result:
                coef = coef - coef.mean(axis=0, keepdims=True)
            if self.fit_b:
                intercept = intercept - intercept.mean()
        if self.support is not None:
            full = np.zeros((self.K, self.num_features))
            full[:, self.support] = coef
            coef = full
        return coef, intercept


class SupportSums:
    """A loss kernel ``block_sums(blocks, coef (K, d), b)`` (:mod:`~sparkml_scale.core.linear_loss`)
    seen from the ``support`` columns: called with ``(K, len(support))`` coefficients (zero on the
    other columns), it returns ``[loss (1,), d/db (K,), d/dcoef (K, len(support))]``.  The blocks
    keep all ``d`` columns; only the coefficients that travel to the executors and the gradients
    that come back shrink (see :func:`~sparkml_scale.classification._logistic_problem.support_of`)."""

    def __init__(self, block_sums, support: np.ndarray, d: int):
        self.block_sums = block_sums
        self.support = np.asarray(support, dtype=np.int64)
        self.d = d

    def __call__(self, blocks, coef: np.ndarray, b: np.ndarray):
        full = np.zeros((coef.shape[0], self.d))
        full[:, self.support] = coef
        loss, gb, g = self.block_sums(blocks, full, b)
        return [loss, gb, g[:, self.support]]

    def narrow(self, blocks):
        """``(blocks', kernel')`` for data read once and evaluated many times (a barrier task):
        the blocks cut to the support columns and the plain kernel, which then needs no
        ``d``-long vector per evaluation."""
        return [(restrict_columns(X, self.support), y, w) for X, y, w in blocks], self.block_sums


class NewtonSums:
    """The kernel of a Newton fit: ``loss.sums_hessian`` (e.g.
    :meth:`~sparkml_scale.core.linear_loss.BinomialLoss.sums_hessian`), ``[loss (1,), d/db (1,),
    d/dcoef (1, d), H (d + 1, d + 1)]``; with ``support`` the blocks are cut to those columns on
    the fly (then ``d = len(support)``)."""

    hessian = True

    def __init__(self, loss, support: Optional[np.ndarray] = None):
        self.loss = loss
        self.support = None if support is None else np.asarray(support, dtype=np.int64)

    def __call__(self, blocks, coef: np.ndarray, b: np.ndarray):
        if self.support is not None:
            blocks = ((restrict_columns(X, self.support), y, w) for X, y, w in blocks)
        return self.loss.sums_hessian(blocks, coef, b)


def _nonzeros(a: np.ndarray):
    """``[positions (int64), values]`` of the non-zero entries of ``a`` (flattened)."""
    flat = a.ravel()
    nz = np.flatnonzero(flat)
    return [nz, flat[nz]]


def _from_nonzeros(positions: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Inverse of :func:`_nonzeros`: the flat ``(n,)`` float64 array."""
    out = np.zeros(int(n))
    out[positions.astype(np.int64)] = values
    return out


def _narrowed(data, block_sums):
    """``(data, block_sums)`` cut to the kernel's support when it has one (:meth:`SupportSums.narrow`)."""
    if isinstance(block_sums, SupportSums):
        return block_sums.narrow(data)
    return data, block_sums


def cholesky_start(corr: np.ndarray, A: np.ndarray, l2: float, pen2: np.ndarray):
    """Lower Cholesky factor of ``(A kron corr + l2 diag(pen2)) / c``, the Hessian at the start
    in the standardized space, with ``c = mean(diag(A)) + l2`` (its diagonal with
    standardization on; then uncorrelated features give ``L = I``, MLlib's own space); rows of
    constant features (zero in ``corr``) get 1 on the diagonal, and a small ridge keeps it positive definite (the softmax
    is flat along ``1 kron v`` without L2).  ``None`` when it still is not (then the diagonal
    preconditioner is used)."""
    H = np.kron(A, corr) + np.diag(l2 * pen2)
    n = H.shape[0]
    diag = np.diag(H).copy()
    scale = float(diag.max(initial=0.0))
    if not np.isfinite(scale) or scale <= 0:
        return None
    dead = diag <= 1e-12 * scale
    H[dead, :] = 0.0
    H[:, dead] = 0.0
    c = float(np.mean(np.diag(A))) + l2
    H[np.arange(n), np.arange(n)] = np.where(dead, c, diag + 1e-6 * c)
    try:
        return np.linalg.cholesky(H / c)
    except np.linalg.LinAlgError:
        return None


def concat_blocks(blocks, d: int):
    """One ``(X, y, w)`` from a partition's blocks (CSR if any block is sparse)."""
    Xs, ys, ws = [], [], []
    for X, y, w in blocks:
        Xs.append(X)
        ys.append(y)
        ws.append(w)
    if not Xs:
        return np.zeros((0, d)), np.zeros(0), np.zeros(0)
    if any(sp.issparse(X) for X in Xs):
        X = sp.vstack([sp.csr_matrix(X) for X in Xs], format="csr")
    else:
        X = np.vstack(Xs) if len(Xs) > 1 else np.array(Xs[0])
    return X, np.concatenate(ys), np.concatenate(ws)


def minimize_mapreduce(data, obj: LBFGSObjective, block_sums,
                       on_iteration: Optional[Callable[[int, float], None]] = None):
    """One tree-aggregated Spark job per loss/gradient evaluation (``data.aggregate``, a
    :class:`~sparkml_scale.core.stage.TrainingData`); the optimizer runs on the driver.
    ``block_sums(blocks, coef, b)`` is the loss kernel (e.g. ``BinomialLoss().sums``);
    ``on_iteration`` as in :meth:`LBFGSObjective.minimize`."""

    def sums(coef, b):
        arrays = data.aggregate(lambda blocks: block_sums(blocks, coef, b))
        return (float(arrays[0][0]), *arrays[1:])

    return obj.minimize(sums, on_iteration, newton=getattr(block_sums, "hessian", False))


_BACKENDS = {0: "local", 1: "gloo", 2: "spark"}
_BACKEND_CODES = {v: k for k, v in _BACKENDS.items()}


def _reporter(address: Optional[str]) -> Optional[Callable[[int, float], None]]:
    if not address:
        return None
    from ..progress import report

    return lambda it, f: report(address, objective=f)


def minimize_allreduce(blocks_df, obj: LBFGSObjective, block_sums, world: int, num_partitions: int,
                       progress: Optional[str] = None):
    """One barrier stage of ``world`` tasks over the cached blocks: each decodes its blocks
    once, then every evaluation is a local ``block_sums`` plus an allreduce; the optimizer runs
    on every rank.  Rank 0 reports each iteration's objective to the driver's progress channel
    at ``progress`` (:func:`sparkml_scale.core.progress.report`).  Returns ``(x, history,
    iterations, evaluations, backend)``."""
    d = obj.num_features

    def task(batches, comm):
        t0 = time.perf_counter()
        data, kernel = _narrowed([concat_blocks(iter_blocks(batches), d)], block_sums)
        t_load = time.perf_counter() - t0

        def sums(coef, b):
            total = comm.allreduce(kernel(data, coef, b))
            return float(total[0][0]), total[1], total[2]

        x, history, nit, nfev = obj.minimize(sums, _reporter(progress) if comm.rank == 0 else None)
        code = _BACKEND_CODES[comm.backend]
        return [x, np.asarray(history), np.array([nit, nfev, code, t_load, time.perf_counter() - t0])]

    results = run_barrier(blocks_df, world, task, num_partitions)
    x, history, info = results[0]
    for r in results[1:]:
        if r is not None and not np.array_equal(r[0], x):
            raise RuntimeError("allreduce solver: the ranks' iterates differ (non-deterministic reduction)")
    log.info("L-BFGS allreduce: %d tasks, backend %s, load %.2f s, total %.2f s",
             world, _BACKENDS[int(info[2])], info[3], info[4])
    return x, list(history), int(info[0]), int(info[1]), _BACKENDS[int(info[2])]


def minimize_direct(df, cols, problem, world: int, num_partitions: Optional[int],
                    progress: Optional[str] = None):
    """Statistics, checks, problem set-up and L-BFGS in ONE barrier stage over the input rows.

    ``df``: the training columns as :meth:`~sparkml_scale.core.training.TrainingColumns.select`
    gives them (``cols``, probed), in ``num_partitions`` partitions (``None``: unknown, then
    they are repartitioned to ``world``).  Every one of the ``world`` barrier tasks reads its
    partition's Arrow batches once (:func:`~sparkml_scale.core.blocks.load_partition`: rows
    checked by ``clean_blocks``, kept as numpy blocks of at least 8192 rows, partial
    statistics on the way), then

    1. allreduces the partial statistics: every rank holds the same
       :class:`~sparkml_scale.core.blocks.BlockStats` (bad-row counts, weight sums, class
       totals, feature moments) as :func:`~sparkml_scale.core.blocks.make_blocks` would give;
    2. ``problem.check(stats)`` (the driver's checks: ``BadRows.raise_for``, ``_check_stats``);
       when it raises ``ValueError``, nothing is optimised and the ranks return the statistics
       (and the message), so the driver raises the same clear error;
    3. ``problem.setup(stats, aggregate)`` -> ``(objective, block_sums)``: the
       :class:`LBFGSObjective` and its loss kernel; ``aggregate(partial)`` sums
       ``partial(blocks)`` (a list of numpy arrays) over the ranks (an allreduce, e.g.
       the feature scatter matrix of the full preconditioner);
    4. L-BFGS-B (:meth:`LBFGSObjective.minimize`) with one local ``block_sums`` plus one
       allreduce per evaluation, replicated on every rank.

    ``problem`` must be picklable.  Returns ``(stats, (coef (K, d), intercept (K,)), history,
    iterations, evaluations, backend)``; raises the ``ValueError`` of ``problem.check`` (or
    of ``problem.setup``) for bad input, ``RuntimeError`` when the ranks' iterates differ.
    Algorithm as :func:`minimize_allreduce` (one barrier stage, allreduce per evaluation, after
    pyspark's ``TorchDistributor`` pattern), without the cached block table in between.
    """
    from ..blocks import BlockStats, load_partition

    d = cols.size
    K = cols.num_classes if cols.labels == "classes" else 1

    def task(batches, comm):
        t0 = time.perf_counter()
        data, partial = load_partition(batches, cols)
        t_load = time.perf_counter() - t0
        sizes = [len(a) for a in partial]
        total = comm.allreduce(partial)
        stats = BlockStats(total, comm.world, d, K)
        flat = np.concatenate(total)
        t1 = time.perf_counter()
        try:
            problem.check(stats)
            obj, block_sums = problem.setup(stats, lambda fn: comm.allreduce(fn(data)))
        except ValueError as exc:  # every rank sees the same statistics: all skip alike
            msg = np.frombuffer(str(exc).encode("utf-8"), dtype=np.uint8)
            return [np.array([0.0]), np.asarray(sizes, dtype=np.float64), flat, msg]
        local, kernel = _narrowed(data, block_sums)

        def sums(coef, b):
            out = comm.allreduce(kernel(local, coef, b))
            return float(out[0][0]), out[1], out[2]

        t2 = time.perf_counter()
        x, history, nit, nfev = obj.minimize(sums, _reporter(progress) if comm.rank == 0 else None)
        coef, intercept = obj.finish(x)
        t3 = time.perf_counter()
        info = np.array([nit, nfev, _BACKEND_CODES[comm.backend], t_load, t3 - t0, t1 - t0 - t_load, t2 - t1,
                         t3 - t2, comm.started, comm.setup_seconds, time.time()])
        if comm.rank > 0:  # the driver reads rank 0's results and only compares the other ranks' iterates
            return [np.array([1.0]), np.zeros(0), np.zeros(0), x]
        # The statistics and coefficients of hashed features are mostly zeros: sent as
        # (positions, values), each megabyte through Spark's result path costing ~20 ms.
        return [np.array([1.0]), np.asarray(sizes, dtype=np.float64), *_nonzeros(flat), x, np.asarray(history),
                info, *_nonzeros(np.asarray(coef)), np.asarray(intercept), np.asarray(np.shape(coef), dtype=np.int64)]

    t_driver = time.time()
    results = run_barrier(df, world, task, num_partitions)
    t_back = time.time()
    first = results[0]
    ends = np.cumsum(first[1].astype(np.int64))
    if first[0][0] == 0:
        stats = BlockStats(np.split(first[2], ends[:-1]), len(results), d, K)
        problem.check(stats)  # the driver's own error (e.g. VectorColumnError naming the column)
        raise ValueError(bytes(first[3]).decode("utf-8"))
    stats = BlockStats(np.split(_from_nonzeros(first[2], first[3], ends[-1]), ends[:-1]), len(results), d, K)
    x, history, info = first[4:7]
    shape = tuple(int(n) for n in first[10])
    coef = _from_nonzeros(first[7], first[8], int(np.prod(shape))).reshape(shape)
    intercept = first[9]
    for r in results[1:]:
        if r is not None and not np.array_equal(r[3], x):
            raise RuntimeError("allreduce solver: the ranks' iterates differ (non-deterministic reduction)")
    log.info("L-BFGS direct allreduce: %d tasks, backend %s; rank 0: started after %.2f s, backend set-up %.2f s, "
             "read %.2f s, statistics allreduce %.2f s, problem set-up %.2f s, L-BFGS %.2f s, result back after "
             "%.2f s", len(results), _BACKENDS[int(info[2])], info[8] - t_driver, info[9], info[3], info[5], info[6],
             info[7], t_back - info[10])
    return (stats, (np.array(coef), np.array(intercept)), list(history), int(info[0]), int(info[1]),
            _BACKENDS[int(info[2])])
