"""The logistic-regression problem in the optimizer's space, set up from the training statistics.

From the weighted column statistics of the cached blocks (:class:`~sparkml_scale.core.blocks.BlockStats`)
and the estimator's params, :func:`build_objective` builds the
:class:`~sparkml_scale.core.optim.lbfgs.LBFGSObjective`: the standardization (MLlib's: the
penalty on the standardized coefficients, or rescaled with ``standardization=False``),
centring, the intercept start (MLlib's: the log-odds of the class priors), bounds, a warm start,
and the preconditioner (diagonal from the class priors' curvature, or the Cholesky factor of the
start's Hessian from the feature correlation matrix, one extra pass, for L2 fits of moderate
size).  Reference: Spark MLlib ``LogisticRegression.scala`` (``train``: intercept initialisation,
standardization, bounds).
"""
from __future__ import annotations

import numpy as np

from ..core.gram import restrict_columns
from ..core.optim.lbfgs import LBFGSObjective

__all__ = ["FULL_PRECONDITIONER_ENTRIES", "build_objective", "wants_correlation", "scatter_partial",
           "initial_arrays", "support_of", "wants_newton", "NEWTON_MAX_VARIABLES", "NEWTON_MAX_WORK"]

#: Largest ``(numClasses x numFeatures)^2`` (float64 entries) for which an L2 fit computes the
#: feature correlation matrix (one extra pass over the cached blocks) and preconditions
#: L-BFGS with the Cholesky factor of the start's Hessian; larger problems use the diagonal one.
FULL_PRECONDITIONER_ENTRIES = 1 << 20
#: A map-reduce fit takes Newton steps (:func:`wants_newton`) with at most this many variables...
NEWTON_MAX_VARIABLES = 512
#: ... and when a pass's Hessian costs at most this many multiply-adds (rows x stored values per
#: row squared): about 0.1 s on one core, the fixed cost of the Spark job every pass is anyway.
NEWTON_MAX_WORK = 2e8


def wants_newton(obj, stats) -> bool:
    """Whether a map-reduce fit of ``obj`` (:class:`LBFGSObjective`) takes Newton steps: a
    binomial L2 fit without bounds (:meth:`LBFGSObjective.newton_ready`) of at most
    :data:`NEWTON_MAX_VARIABLES` variables whose Hessian pass costs at most
    :data:`NEWTON_MAX_WORK` (e.g. hashed or one-hot features: a few hundred columns occur, a
    dozen per row).  Newton's method then needs about 5-10 passes over the data where L-BFGS
    needs 20-40, and every pass is a Spark job."""
    if obj.max_iter == 0 or not obj.newton_ready() or obj.n + obj.nb > NEWTON_MAX_VARIABLES:
        return False
    per_row = stats.nnz / max(stats.count, 1)
    return stats.count * per_row**2 <= NEWTON_MAX_WORK


def support_of(stats):
    """The columns with non-zero variance (``(d',)`` int64, ascending), or ``None`` when every
    column has some, or none has.

    MLlib gives a column of zero variance a zero coefficient (its standardized value is 0), so
    the optimizer can leave those columns out without changing a single number: the fit runs on
    the ``d'`` columns that vary, and :meth:`LBFGSObjective.finish` puts the zeros back.  With
    hashed or one-hot features (2^18 columns of which a few hundred occur) the optimizer's
    vectors, the broadcast coefficients and the partial gradients shrink from ``d`` to ``d'``."""
    keep = np.flatnonzero(stats.std > 0)
    return keep if 0 < len(keep) < stats.num_features else None


def scatter_partial(d: int, support=None):
    """Partial of ``sum_i w_i x_i x_i^T`` ``(d, d)`` over a partition's ``(X, y, w)`` blocks;
    with ``support`` (``(d',)`` column indices) over those columns only, ``(d', d')``."""

    def partial(blocks):
        import scipy.sparse as sp

        n = d if support is None else len(support)
        S = np.zeros((n, n))
        for X, _, w in blocks:
            if X.shape[0] == 0:
                continue
            if support is not None:
                X = restrict_columns(X, support)
            if sp.issparse(X):
                S += np.asarray((X.T @ sp.diags(w) @ X).todense())
            elif np.all(w == 1.0):
                S += X.T @ X  # numpy computes this product by a symmetric rank-k update: half the work
            else:
                S += X.T @ (X * w[:, None])
        return [S]

    return partial


def wants_correlation(est, K: int, d: int) -> bool:
    """Whether this fit preconditions with the feature correlation matrix (L2 only, no bounds,
    ``(K d)^2 <= FULL_PRECONDITIONER_ENTRIES``)."""
    l1 = est.getRegParam() * est.getElasticNetParam()
    return l1 == 0 and not est._has_bounds() and (K * d) ** 2 <= FULL_PRECONDITIONER_ENTRIES


def build_objective(est, stats, K: int, num_classes: int, scatter=None, support=None) -> LBFGSObjective:
    """The problem in the optimizer's space, as a picklable :class:`LBFGSObjective`; ``scatter``
    (``sum_i w_i x_i x_i^T``, ``(d, d)``, or ``(d', d')`` over ``support``) turns on the full
    preconditioner; ``support`` (:func:`support_of`) restricts the optimizer to those columns."""
    num_features = d = stats.num_features
    std = stats.std
    mean = stats.mean
    if support is not None:
        d = len(support)
        std, mean = std[support], mean[support]
    inv_std = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 0.0)
    fit_b = est.getFitIntercept()
    lam = est.getRegParam()
    alpha = est.getElasticNetParam()
    if est.getStandardization():
        pen2 = np.ones(d)
        pen1 = np.ones(d)
    else:  # MLlib: the penalty applies to the unscaled coefficients
        pen2 = inv_std**2
        pen1 = inv_std
    bounds = est._coefficient_bounds(K, num_features)
    if bounds is not None and support is not None:
        lbB, ubB, lbb, ubb = bounds
        bounds = (lbB[:, support], ubB[:, support], lbb, ubb)
    # Centring (below) makes intercept bounds non-box constraints: no centring then.
    centre = fit_b and not est._has_intercept_bounds()
    mu = mean if centre else np.zeros(d)
    counts = stats.label_counts[:num_classes]
    if not fit_b:
        b0 = np.zeros(K)
    elif K > 1:
        raw = np.log1p(counts)
        b0 = raw - raw.mean()
    else:
        p1 = counts[1] / stats.weight_sum
        b0 = np.array([float(np.log(p1 / (1.0 - p1)))])
    init = None
    if getattr(est, "_initial_model", None) is not None:
        init = initial_arrays(est._initial_model, K, num_features)
        if support is not None:
            init = (init[0][:, support], init[1])
    # Curvature of the mean log-loss per class at the start (class priors p: p (1 - p)), the
    # scale of the data part of the Hessian's diagonal in the standardized space.
    prior = counts / max(float(counts.sum()), 1e-300)
    if K == 1:
        prior = prior[1:2]
    prior = np.clip(prior, 1e-3, 1.0)
    curvature = prior * (1.0 - prior) if K == 1 else np.diag(prior) - np.outer(prior, prior)
    corr = None
    if scatter is not None:
        # Weighted second moments of the standardized (centred when fitting an intercept) features.
        W = stats.weight_sum
        corr = (scatter / W - np.outer(mu, mu)) * np.outer(inv_std, inv_std)
    return LBFGSObjective(
        K=K, d=d, inv_std=inv_std, std=std, mu=mu, fit_b=fit_b, l1=lam * alpha, l2=lam * (1.0 - alpha),
        pen1=np.tile(pen1, K), pen2=np.tile(pen2, K), multinomial=K > 1 or num_classes > 2,
        W=stats.weight_sum, b0=b0, init=init, coef_bounds=bounds, tol=est.getTol(),
        max_iter=est.getMaxIter(), centre_result=lam == 0.0, curvature=curvature, corr=corr,
        support=support, num_features=num_features,
    )


def initial_arrays(m, K: int, d: int):
    """``(coef (K, d), intercept (K,))`` of a warm-start model; ``ValueError`` when its shape
    differs from this fit's."""
    B = np.asarray(m.coefficientMatrix.toArray(), dtype=np.float64)
    b = np.asarray(m.interceptVector.toArray(), dtype=np.float64)
    if B.shape != (K, d) or b.shape != (K,):
        raise ValueError(
            f"initialModel has {B.shape[0]} x {B.shape[1]} coefficients, this fit needs {K} x {d} "
            f"({'multinomial' if K > 1 else 'binomial'}, numFeatures {d})"
        )
    return B, b
