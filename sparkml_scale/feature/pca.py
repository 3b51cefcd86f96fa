"""Distributed PCA: exact (one Gram pass + SVD of the covariance) and randomized (subspace iteration).

Exact method
    One map-reduce pass accumulates the row count, column sums and the scatter
    ``X^T X`` of each Arrow batch with ``dsyrk`` (dense) or a CSR product
    (sparse), tree-aggregated (:func:`sparkml_scale.core.gram.gram_pass`); the
    driver forms the covariance ``C = (X^T X - n mu mu^T) / (n - 1)`` and takes
    its SVD with LAPACK's ``dgesdd`` (``scipy.linalg.svd(C,
    lapack_driver="gesdd")``): the components are the first ``k`` columns of
    ``U``, the variances the singular values.  This is literally what Spark
    MLlib's ``RowMatrix.computePrincipalComponentsAndExplainedVariance`` does
    (covariance with ``n - 1``, Breeze ``svd(Cov)`` = ``dgesdd`` with
    ``JOBZ='A'``, explained variance = singular value / sum of all singular
    values), so the components come out with MLlib's signs, not just MLlib's
    directions: ``dgesdd``'s signs follow from its Householder
    bidiagonalisation of the whole ``C`` and no rule on the eigenvectors
    alone reproduces them (an ``eigh`` of ``C`` flips about half of them).
    The SVD costs 2-3x an ``eigh`` of the same ``d x d`` matrix (seconds at
    ``d = 1000``), as in MLlib.

Randomized method (wide data; above 65,535 columns MLlib's PCA densifies every row and fails on sparse ones)
    A first pass gets ``n``, the mean, the total variance (trace of ``C``) and
    the columns with any non-zero value (the support ``S``; hashed features use
    few of their ``2^18`` slots).  Then randomized subspace iteration with
    Rayleigh-Ritz on the operator ``C`` restricted to ``S`` (Halko, Martinsson
    & Tropp 2011, "Finding structure with randomness", Alg. 4.4 + 5.5): each
    pass computes ``X_S^T (X_S Q)`` per partition, the driver subtracts
    ``n mu (mu^T Q)`` (the centring is never applied to the data, so sparse
    stays sparse), orthonormalises and takes the Ritz values/vectors of
    ``Q^T C Q``.  It stops when the ``k`` leading Ritz values change by less
    than ``tol`` relative to itself, or after ``maxIter`` passes.  Accuracy depends on the
    spectral gap ``lambda_{k+oversampling+1} / lambda_k``: raise ``oversampling``
    or ``maxIter`` for flat spectra.  Driver memory
    ``O(|S| * (k + oversampling))``.

``method="auto"`` uses exact when ``d <= 4096``; otherwise it runs the
moments pass, and then exact on the support if ``|S| <= 4096`` (a small Gram
matrix), else randomized.

Signs of the components
    Exact on all ``d <= 4096`` columns: MLlib's (``dgesdd``'s ``U``, above).
    Exact on the support ``S`` of wider data: ``dgesdd``'s ``U`` of the
    covariance restricted to ``S`` (MLlib's when ``S`` is every column;
    otherwise MLlib's SVD of the full ``d x d`` matrix with its zero rows can
    pick other signs), or, for ``|S| > 4096`` (``method="exact"`` only),
    ``eigh`` with each column's largest-magnitude entry positive.
    Randomized: each column's largest-magnitude entry is positive.  The signs
    ``dgesdd`` picks for the leading components also depend on the trailing
    spectrum (changing only the small eigenvalues of ``C`` flips a leading
    component in about 5% of random cases), which a method that only sees the
    leading subspace cannot know.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional

import numpy as np
from pyspark import keyword_only
from pyspark.ml.linalg import DenseMatrix, DenseVector, VectorUDT
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasMaxIter, HasOutputCol, HasSeed, HasTol
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from ..core.display import detail
from ..core.persistence import ModelLoadError
from ..core.params import Interval, Options, Required
from ..core.stage import StageParams, TrainingData, VectorEstimator, VectorModel, map_vectors
from ..core.schema import check_new_column, check_vector_column

__all__ = ["PCA", "PCAModel", "EXACT_MAX_FEATURES"]

log = logging.getLogger(__name__)

#: Largest number of (support) columns for which the exact method builds the d x d matrix
#: under ``method="auto"``; ``method="exact"`` accepts up to :data:`EXACT_LIMIT`.
EXACT_MAX_FEATURES = 4096
#: Hard limit of the exact method (a 16384 x 16384 float64 matrix is 2 GiB).
EXACT_LIMIT = 16384


class _PCAParams(StageParams, HasInputCol, HasOutputCol, HasMaxIter, HasSeed, HasTol):
    """Params of :class:`PCA` and :class:`PCAModel`."""

    _input_roles = (("inputCol", "vector", False),)
    _output_params = ("outputCol",)
    _param_constraints = {
        "k": [Required("the number of principal components"), Interval(int, 1, None)],
        "method": Options("auto", "exact", "randomized"),
        "oversampling": Interval(int, 0, None),
        "maxIter": Interval(int, 1, None),
        "tol": Interval(float, 0.0, None),
        "inputCol": Required(),
        "outputCol": Required(),
    }

    k: "Param[int]" = Param(Params._dummy(), "k", "the number of principal components (> 0)",
                            typeConverter=TypeConverters.toInt)
    method: "Param[str]" = Param(
        Params._dummy(),
        "method",
        "eigensolver: 'auto', 'exact' (d x d covariance + LAPACK dgesdd, as MLlib) or 'randomized' "
        "(subspace iteration)",
        typeConverter=TypeConverters.toString,
    )
    oversampling: "Param[int]" = Param(
        Params._dummy(), "oversampling", "extra subspace columns of the randomized method (>= 0)",
        typeConverter=TypeConverters.toInt,
    )
    center: "Param[bool]" = Param(
        Params._dummy(),
        "center",
        "subtract the mean before projecting in transform (False: MLlib's PCAModel, True: scikit-learn's)",
        typeConverter=TypeConverters.toBoolean,
    )
    whiten: "Param[bool]" = Param(
        Params._dummy(), "whiten", "divide each component by its standard deviation in transform",
        typeConverter=TypeConverters.toBoolean,
    )

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._setDefault(method="auto", oversampling=10, maxIter=20, tol=1e-6, center=False, whiten=False,
                         seed=0)

    def getK(self) -> int:
        return self.getOrDefault(self.k)

    def getMethod(self) -> str:
        return self.getOrDefault(self.method)

    def getOversampling(self) -> int:
        return self.getOrDefault(self.oversampling)

    def getCenter(self) -> bool:
        return self.getOrDefault(self.center)

    def getWhiten(self) -> bool:
        return self.getOrDefault(self.whiten)

class PCA(_PCAParams, VectorEstimator):
    """Principal component analysis of a vector column, fitted by map-reduce.

    Drop-in for :class:`pyspark.ml.feature.PCA` (params ``k``, ``inputCol``,
    ``outputCol``; the exact method gives MLlib's ``pc``, signs included, and
    ``explainedVariance``, hence MLlib's ``transform``) with extra params:

    - ``method``: ``"auto"`` (default), ``"exact"``, ``"randomized"`` (see the module docstring);
    - ``oversampling`` (default 10), ``maxIter`` (default 20, randomized
      passes), ``tol`` (default 1e-6: the randomized iteration stops when each
      of the ``k`` leading Ritz values changed by at most ``tol`` times itself), ``seed`` (default 0);
    - ``center`` (default False): transform projects ``x`` (MLlib) or ``x - mean`` (scikit-learn);
    - ``whiten`` (default False): divide each projected component by ``sqrt(eigenvalue)``.

    Input: ``inputCol`` of ``VectorUDT`` (dense or sparse, all the same size ``d``).
    Output model: ``pc`` (DenseMatrix ``d x k``, orthonormal columns; signs as
    MLlib's LAPACK ``dgesdd`` gives them for the exact method, largest-magnitude
    entry positive for the randomized one: see the module docstring),
    ``explainedVariance`` (DenseVector ``k``, fraction of the total variance),
    ``eigenvalues`` (variances along the components, float64), ``singularValues``
    (``sqrt(eigenvalues * (n - 1))``, as scikit-learn), ``mean`` (DenseVector ``d``),
    ``count``, ``methodUsed``.

    Raises ``ValueError``/``TypeError`` naming the param or column: ``k < 1`` or
    ``k > d``, missing or non-vector ``inputCol``, existing ``outputCol``, null
    vectors, vectors of different sizes, NaN/inf values, fewer than 2 rows.
    """

    @keyword_only
    def __init__(self, *, k: Optional[int] = None, inputCol: Optional[str] = None,
                 outputCol: Optional[str] = None, method: str = "auto", oversampling: int = 10,
                 maxIter: int = 20, tol: float = 1e-6, seed: int = 0, center: bool = False,
                 whiten: bool = False) -> None:
        super().__init__()
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, k: Optional[int] = None, inputCol: Optional[str] = None,
                  outputCol: Optional[str] = None, method: str = "auto", oversampling: int = 10,
                  maxIter: int = 20, tol: float = 1e-6, seed: int = 0, center: bool = False,
                  whiten: bool = False) -> "PCA":
        return self._set(**self._input_kwargs)

    def setK(self, value: int) -> "PCA":
        return self._set(k=value)

    def setInputCol(self, value: str) -> "PCA":
        return self._set(inputCol=value)

    def setOutputCol(self, value: str) -> "PCA":
        return self._set(outputCol=value)

    def setMethod(self, value: str) -> "PCA":
        return self._set(method=value)

    def setOversampling(self, value: int) -> "PCA":
        return self._set(oversampling=value)

    def setMaxIter(self, value: int) -> "PCA":
        return self._set(maxIter=value)

    def setTol(self, value: float) -> "PCA":
        return self._set(tol=value)

    def setSeed(self, value: int) -> "PCA":
        return self._set(seed=value)

    def setCenter(self, value: bool) -> "PCA":
        return self._set(center=value)

    def setWhiten(self, value: bool) -> "PCA":
        return self._set(whiten=value)

    # ------------------------------------------------------------------ template hooks
    def _check_input_schema(self, schema: T.StructType, outputs: bool = True) -> None:
        super()._check_input_schema(schema, outputs=True)  # the output column must be new already at fit

    def _check_features(self, d: int) -> None:
        if self.getK() > d:
            raise ValueError(f"param 'k' = {self.getK()} is larger than the number of features d = {d} of column "
                             f"{self.getInputCol()!r}")

    def _solve(self, data: TrainingData):
        k, d = self.getK(), data.cols.size
        method = self.getMethod()
        if method == "exact" or (method == "auto" and d <= EXACT_MAX_FEATURES):
            if d <= EXACT_MAX_FEATURES:
                return self._exact(data, k)
            mom = data.moments()
            if len(mom.support) > EXACT_LIMIT:
                raise ValueError(
                    f"method='exact' needs a {len(mom.support)} x {len(mom.support)} matrix "
                    f"(column {self.getInputCol()!r} has {len(mom.support)} non-zero columns, limit {EXACT_LIMIT}); "
                    "use method='randomized' or 'auto'"
                )
            return self._exact_on_support(data, mom, k)
        mom = data.moments()
        if method == "auto" and len(mom.support) <= EXACT_MAX_FEATURES:
            return self._exact_on_support(data, mom, k)
        return self._randomized(data, mom, k)

    def _create_model(self, result) -> "PCAModel":
        return PCAModel._create(*result)

    # -- exact -----------------------------------------------------------------
    def _exact(self, data: TrainingData, k: int):
        g = data.gram()
        _need_two_rows(g.count, self.getInputCol())
        vec, eig, total = _covariance_svd(g, k)
        return vec, eig, total, g.mean, g.count, "exact"

    def _exact_on_support(self, data: TrainingData, mom, k: int):
        """Exact SVD restricted to the non-zero columns (the others have zero variance)."""
        _need_two_rows(mom.count, self.getInputCol())
        g = data.gram(support=mom.support)
        vec, eig, total = _covariance_svd(g, k)
        pc, eig_k = _embed(vec[:, :k], eig[:k], mom.support, mom.num_features, k)
        return pc, eig_k, total, mom.mean, mom.count, "exact"

    # -- randomized ------------------------------------------------------------
    def _randomized(self, data: TrainingData, mom, k: int):
        _need_two_rows(mom.count, self.getInputCol())
        d = data.cols.size
        S = mom.support
        s = len(S)
        n = mom.count
        total = float(mom.variance.sum())
        mean = mom.mean
        if s == 0:
            return np.eye(d, k), np.zeros(k), total, mean, n, "randomized"
        l_ = min(k + self.getOversampling(), s)
        mu = mean[S]
        rng = np.random.default_rng(self.getSeed())
        Q, _ = np.linalg.qr(rng.standard_normal((s, l_)))
        prev = None
        tol = self.getTol()
        best = None
        data.progress.bar("subspace iterations", total=self.getMaxIter(), unit="pass")
        for it in range(self.getMaxIter()):
            Y = data.covariance_apply(S, Q, num_partitions=mom.num_partitions,
                                      step=f"randomized subspace iteration {it + 1}")
            Y = (Y - n * np.outer(mu, mu @ Q)) / (n - 1)  # C Q, centring applied implicitly
            T_ = Q.T @ Y
            theta, U = np.linalg.eigh((T_ + T_.T) / 2)
            order = np.argsort(theta)[::-1]
            theta, U = theta[order], U[:, order]
            best = (Q @ U[:, :k], theta[:k].copy())
            lead = theta[: min(k, len(theta))]
            done = prev is not None and np.all(np.abs(lead - prev) <= tol * np.maximum(np.abs(lead), 1e-300))
            log.info("PCA randomized: pass %d, leading Ritz values %s", it + 1, lead[:3])
            data.progress.advance(eigenvalue=float(lead[0]) if len(lead) else 0.0)
            if done or l_ == s:
                break
            prev = lead
            Q, _ = np.linalg.qr(Y)
        pc, eig_k = _embed(best[0], best[1], S, d, k)
        return _fix_signs(pc), eig_k, total, mean, n, "randomized"


def _embed(vec_s: np.ndarray, eig: np.ndarray, S: np.ndarray, d: int, k: int):
    """Components over the support ``S`` (``|S| x kk``) as a ``d x k`` matrix; when ``kk < k``
    the missing zero-variance components are unit vectors outside the support."""
    kk = vec_s.shape[1]
    pc = np.zeros((d, k))
    pc[S, :kk] = vec_s
    eig_k = np.zeros(k)
    eig_k[:kk] = eig[:kk]
    if kk < k:
        free = np.setdiff1d(np.arange(d), S)[: k - kk]
        pc[free, np.arange(kk, k)] = 1.0
    return pc, eig_k


def _need_two_rows(n: int, col: str) -> None:
    if n < 2:
        raise ValueError(f"column {col!r} (inputCol): PCA needs at least 2 rows, got {n}")


def _covariance_svd(g, k: int):
    """MLlib's principal components of the covariance of Gram statistics ``g``.

    Returns ``(U[:, :k], s[:k], sum(s))``: the SVD ``C = U diag(s) V^T`` of the
    ``d x d`` covariance by LAPACK ``dgesdd`` with ``JOBZ='A'`` (Breeze's ``svd``
    in ``RowMatrix.computePrincipalComponentsAndExplainedVariance``), so columns,
    order and signs are MLlib's; ``s`` are the variances along the components
    (the absolute eigenvalues of ``C``, largest first) and ``sum(s)`` is the total
    MLlib divides by for ``explainedVariance``.  If ``dgesdd`` does not converge
    (rare; MLlib then fails) ``dgesvd`` is used, with a warning: same values, the
    signs may differ from MLlib's.  Above :data:`EXACT_MAX_FEATURES` columns
    (``method="exact"`` on wider data), where ``dgesdd``'s ``4 d^2`` workspace
    alone is 8 GiB at ``d = 16384``, ``numpy.linalg.eigh`` is used instead, with
    each column's largest-magnitude entry made positive.
    """
    import scipy.linalg

    def covariance():
        return g.centered_scatter() / (g.count - 1)

    d = g.num_features
    if d > EXACT_MAX_FEATURES:
        eig, vec = np.linalg.eigh(covariance())
        order = np.argsort(np.abs(eig))[::-1][:k]
        return _fix_signs(np.ascontiguousarray(vec[:, order])), np.abs(eig[order]), float(np.abs(eig).sum())
    try:
        U, s, _ = scipy.linalg.svd(covariance(), full_matrices=True, lapack_driver="gesdd", overwrite_a=True,
                                   check_finite=False)
    except np.linalg.LinAlgError:
        log.warning("PCA: LAPACK dgesdd did not converge on the %d x %d covariance; using dgesvd "
                    "(component signs may differ from MLlib's)", d, d)
        U, s, _ = scipy.linalg.svd(covariance(), full_matrices=True, lapack_driver="gesvd", overwrite_a=True,
                                   check_finite=False)
    return np.ascontiguousarray(U[:, :k]), s[:k].copy(), float(s.sum())


def _fix_signs(pc: np.ndarray) -> np.ndarray:
    """Flip each column so that its largest-magnitude entry is positive (the randomized method's
    deterministic signs; its Ritz vectors' own signs depend on the random start)."""
    if pc.size == 0:
        return pc
    idx = np.argmax(np.abs(pc), axis=0)
    signs = np.sign(pc[idx, np.arange(pc.shape[1])])
    signs[signs == 0] = 1.0
    pc *= signs  # in place: pc can be d x k with d = 2^18 or more
    return pc


class PCAModel(_PCAParams, VectorModel):
    """A fitted :class:`PCA`: projects ``inputCol`` onto the ``k`` principal components.

    ``transform`` adds ``outputCol`` (dense ``VectorUDT`` of size ``k``):
    ``pc^T x`` (MLlib), ``pc^T (x - mean)`` with ``center=True``, each
    component divided by ``sqrt(eigenvalue)`` with ``whiten=True`` (zero
    eigenvalues are left undivided).  Null input vectors give null output.
    ``inverseTransform`` maps projections back to the input space.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pc = np.zeros((0, 0))
        self._eig = np.zeros(0)
        self._total = 0.0
        self._mean = np.zeros(0)
        self._count = 0
        self._used = "exact"

    @classmethod
    def _create(cls, pc, eig, total, mean, count, used) -> "PCAModel":
        m = cls()
        m._pc = np.ascontiguousarray(pc, dtype=np.float64)
        m._eig = np.asarray(eig, dtype=np.float64)
        m._total = float(total)
        m._mean = np.asarray(mean, dtype=np.float64)
        m._count = int(count)
        m._used = used
        return m

    def _model_arrays(self) -> Dict[str, np.ndarray]:
        return {
            "pc": self._pc,
            "eigenvalues": self._eig,
            "total": np.array([self._total]),
            "mean": self._mean,
            "count": np.array([self._count], dtype=np.int64),
            "exact": np.array([self._used == "exact"]),
        }

    @classmethod
    def _from_arrays(cls, arrays: Dict[str, np.ndarray], metadata: Dict[str, Any]) -> "PCAModel":
        try:
            return cls._create(arrays["pc"], arrays["eigenvalues"], float(arrays["total"][0]), arrays["mean"],
                               int(arrays["count"][0]), "exact" if bool(arrays["exact"][0]) else "randomized")
        except (KeyError, IndexError):
            raise ModelLoadError("saved PCAModel data is incomplete") from None

    def copy(self, extra=None) -> "PCAModel":
        that = super().copy(extra)
        for a in ("_pc", "_eig", "_total", "_mean", "_count", "_used"):
            setattr(that, a, getattr(self, a))
        return that

    def setInputCol(self, value: str) -> "PCAModel":
        return self._set(inputCol=value)

    def setOutputCol(self, value: str) -> "PCAModel":
        return self._set(outputCol=value)

    def setCenter(self, value: bool) -> "PCAModel":
        return self._set(center=value)

    def setWhiten(self, value: bool) -> "PCAModel":
        return self._set(whiten=value)

    @property
    def pc(self) -> DenseMatrix:
        """Principal components, ``d x k`` (column j = component j), as MLlib."""
        d, k = self._pc.shape
        return DenseMatrix(d, k, self._pc.ravel(order="F").tolist())

    @property
    def explainedVariance(self) -> DenseVector:
        """Fraction of the total variance along each component (MLlib's definition)."""
        return DenseVector(self._eig / self._total if self._total > 0 else np.zeros_like(self._eig))

    @property
    def eigenvalues(self) -> np.ndarray:
        """Variance along each component (covariance eigenvalues, ``n - 1`` denominator), ``(k,)``."""
        return self._eig.copy()

    @property
    def singularValues(self) -> np.ndarray:
        """Singular values of the centred data matrix, ``sqrt(eigenvalues * (n - 1))``, ``(k,)``."""
        return np.sqrt(np.maximum(self._eig, 0.0) * max(self._count - 1, 0))

    @property
    def mean(self) -> DenseVector:
        return DenseVector(self._mean)

    @property
    def count(self) -> int:
        return self._count

    @property
    def methodUsed(self) -> str:
        """The method that fitted the model: ``"exact"`` or ``"randomized"`` (``method`` is the requested one)."""
        return self._used

    def _scales(self):
        """Per-component divisors of ``whiten`` (standard deviations; 1 where zero), or None."""
        if not self.getWhiten():
            return None
        sd = np.sqrt(np.maximum(self._eig, 0.0))
        return np.where(sd > 0, sd, 1.0)

    # ------------------------------------------------------------------ template hooks
    def _output_fields(self):
        return [("outputCol", self.getOutputCol(), VectorUDT())]

    def _num_features(self) -> int:
        return self._pc.shape[0]

    def _block_predictor(self):
        pc = self._pc
        offset = (self._mean @ pc) if self.getCenter() else None
        scales = self._scales()

        def project(X):
            Y = np.asarray(X @ pc)
            if offset is not None:
                Y = Y - offset
            if scales is not None:
                Y = Y / scales
            return [Y]

        return project

    def inverseTransform(self, dataset: DataFrame, outputCol: Optional[str] = None) -> DataFrame:
        """Map the projections in ``outputCol`` back to the input space.

        Adds column ``outputCol`` (default ``<inputCol>_reconstructed``), a dense
        vector of size ``d``: ``pc @ (y * sqrt(eigenvalues) if whiten else y)``,
        plus ``mean`` when ``center=True``.  With all ``d`` components this
        recovers the input exactly (up to rounding).  Raises ``ValueError``/
        ``TypeError`` if the projection column is missing or not a vector, or the
        new column exists.
        """
        src = self.getOutputCol()
        new = outputCol or f"{self.getInputCol()}_reconstructed"
        check_vector_column(dataset.schema, src, "outputCol")
        check_new_column(dataset.schema, new, "outputCol (of inverseTransform)")
        pc = self._pc
        mean = self._mean if self.getCenter() else None
        scales = self._scales()

        def back(Y):
            Y = np.asarray(Y)
            if scales is not None:
                Y = Y * scales
            X = Y @ pc.T
            if mean is not None:
                X = X + mean
            return [X]

        return map_vectors(dataset, src, [("outputCol", new, VectorUDT())], back, size=pc.shape[1], dense=True)

    def _repr_fields(self):
        """``repr``: MLlib's ``PCAModel: uid=..., k=...``, then ``numFeatures``, ``methodUsed`` and the
        share of the variance the ``k`` components explain; the table adds the per-component shares,
        ``center``/``whiten``, the rows fitted, the components' shape and the set params."""
        return [
            ("k", self._repr_param("k")), ("numFeatures", self._pc.shape[0]), ("methodUsed", self._used),
            ("explainedVarianceSum", float(self.explainedVariance.values.sum())),
            ("explainedVariance", detail(self.explainedVariance)), ("center", detail(self.getCenter())),
            ("whiten", detail(self.getWhiten())), ("count", detail(self._count)), ("pc", detail(self._pc)),
            ("params", detail(self._repr_params_text())),
        ]
