"""LogisticRegression against Spark MLlib on an elastic-net grid (issue 15, item 1).

72 cases (tests/lr_parity.py): breast_cancer (binomial) and wine (3 classes), unweighted and
weighted, standardization on and off, regParam 0.1 / 0.01 / 0.001, elasticNetParam 0 / 0.5 / 1,
maxIter 300, tol 1e-10.  MLlib's fits are recorded in tests/data/lr_parity_mllib.json by
tests/make_lr_parity_reference.py (``test_reference_is_what_mllib_fits_here`` re-fits some
of them with the installed MLlib).  Every case must reach an objective no worse than MLlib's
(relative 1e-9), and then falls in one of three classes, all printed by the summary test:

- ``agree``: coefficients and intercepts within 1e-4 of MLlib's;
- ``mllib-short``: MLlib stopped (at maxIter) above our objective, and further from
  optimality: its KKT residual is larger than ours (with standardization off and L2, MLlib's
  L-BFGS stalls on breast_cancer's feature scales; see ``_Objective``'s preconditioner);
- ``flat``: the objectives are equal to 1e-9 relative and both solutions satisfy the KKT
  conditions to ``KKT_TOL``, yet coefficients differ by more than 1e-4 (a flat optimum:
  small penalties, strongly correlated features);
- ``both-short``: both stopped at maxIter (300) short of optimality, ours at the lower
  objective (L1 with standardization off and regParam 0.001 on breast_cancer: the L1 split
  keeps ours to the diagonal preconditioner).
"""
import numpy as np
import pytest

import lr_parity
from lr_data import frame

CASES = lr_parity.cases()
REFERENCE = lr_parity.load_reference()
#: Largest KKT residual (standardized space) accepted for a solution called optimal.
KKT_TOL = 1e-5
RESULTS = {}


@pytest.fixture(scope="module")
def frames(spark):
    out = {}
    for name in lr_parity.DATASETS:
        X, y = lr_parity.load(name)
        out[name] = frame(spark, X, y, lr_parity.weights(len(y)))
    yield out
    for df in out.values():
        df.unpersist()


def _ours(case, df, solver="allreduce"):
    from sparkml_scale.classification import LogisticRegression

    lr = LogisticRegression(family=case["family"], standardization=case["standardization"],
                            regParam=case["regParam"], elasticNetParam=case["elasticNetParam"], solver=solver,
                            **lr_parity.FIT)
    if case["weighted"]:
        lr.setWeightCol("w")
    m = lr.fit(df)
    return m.coefficientMatrix.toArray(), m.interceptVector.toArray(), m


def _classify(case, B, b, ref, it):
    X, y, w = lr_parity.case_data(case)
    Bm, bm = np.array(ref["coefficientMatrix"]), np.array(ref["interceptVector"])
    f, fm = lr_parity.objective(case, X, y, w, B, b), lr_parity.objective(case, X, y, w, Bm, bm)
    kkt, kkt_m = lr_parity.kkt_residual(case, X, y, w, B, b), lr_parity.kkt_residual(case, X, y, w, Bm, bm)
    diff = max(np.max(np.abs(B - Bm) / np.maximum(1.0, np.abs(Bm))), np.max(np.abs(b - bm) / np.maximum(1.0, np.abs(bm))))
    rel = (f - fm) / abs(fm)
    if diff <= 1e-4:
        kind = "agree"
    elif rel < -1e-9 and kkt < kkt_m:
        kind = "mllib-short"
    elif abs(rel) <= 1e-9 and kkt <= KKT_TOL and kkt_m <= KKT_TOL:
        kind = "flat"
    elif rel < -1e-9 and it >= lr_parity.FIT["maxIter"] and ref["totalIterations"] >= lr_parity.FIT["maxIter"]:
        kind = "both-short"
    else:
        kind = "unexplained"
    return dict(kind=kind, f=f, f_mllib=fm, rel=rel, kkt=kkt, kkt_mllib=kkt_m, diff=diff, it=it,
                it_mllib=ref["totalIterations"])


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_case(frames, case):
    B, b, m = _ours(case, frames[case["data"]])
    r = _classify(case, B, b, REFERENCE["cases"][case["id"]], m.summary.totalIterations)
    RESULTS[case["id"]] = r
    assert r["rel"] <= 1e-9, f"objective {r['f']:.12g} worse than MLlib's {r['f_mllib']:.12g}"
    assert r["kind"] != "unexplained", r
    if r["kind"] == "mllib-short":
        # Ours is the better solution: lower objective and nearer to optimality.
        assert r["kkt"] < r["kkt_mllib"]


def test_grid_summary():
    """Prints every case's class; every L2 fit is KKT-optimal, fits with standardization on
    agree with MLlib or are flat, and standardization-off L2 breast_cancer fits beat MLlib's
    (before the preconditioner they did not: 0.1276 vs MLlib's 0.1267 at regParam 0.01)."""
    if len(RESULTS) < len(CASES):
        pytest.skip("run with the whole grid")
    lines = [f"{cid:38s} {r['kind']:12s} it {r['it']:3d}/{r['it_mllib']:3d} f {r['f']:.12g} "
             f"mllib {r['f_mllib']:.12g} kkt {r['kkt']:.1e}/{r['kkt_mllib']:.1e} diff {r['diff']:.1e}"
             for cid, r in RESULTS.items()]
    print("\n" + "\n".join(lines))
    kinds = {cid: r["kind"] for cid, r in RESULTS.items()}
    print({k: list(kinds.values()).count(k) for k in sorted(set(kinds.values()))})
    # Every L2 fit is optimal (KKT) and every fit with standardization on agrees or is flat.
    for c in CASES:
        r = RESULTS[c["id"]]
        if c["elasticNetParam"] == 0:
            assert r["kkt"] <= KKT_TOL, (c["id"], r)
        if c["standardization"]:
            assert r["kind"] in ("agree", "flat", "mllib-short"), (c["id"], r)
    for c in CASES:
        if c["data"] == "breast_cancer" and not c["standardization"] and c["elasticNetParam"] == 0:
            assert kinds[c["id"]] == "mllib-short", (c["id"], RESULTS[c["id"]])


def test_l2_raw_scale_reaches_the_newton_optimum(frames):
    """standardization=False, L2, breast_cancer: both solvers reach the optimum that Newton's
    method finds in numpy (before the preconditioner: 0.1276 / 0.1343 after 300 iterations,
    optimum 0.1030)."""
    case = dict(data="breast_cancer", family="binomial", weighted=False, standardization=False, regParam=0.01,
                elasticNetParam=0.0)
    X, y, w = lr_parity.case_data(case)
    n, d = X.shape
    mu, std = X.mean(0), X.std(0, ddof=1)
    A = np.hstack([(X - mu) / std, np.ones((n, 1))])
    pen = np.append(case["regParam"] / std**2, 0.0)
    v = np.zeros(d + 1)
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(A @ v)))
        g = A.T @ (p - y) / n + pen * v
        H = A.T @ (A * (p * (1 - p))[:, None]) / n + np.diag(pen)
        v -= np.linalg.solve(H, g)
    coef = v[:d] / std
    icpt = v[d] - coef @ mu
    for solver in ("allreduce", "mapreduce"):
        B, b, m = _ours(case, frames["breast_cancer"], solver)
        np.testing.assert_allclose(B[0], coef, rtol=1e-5, atol=1e-6)
        assert abs(b[0] - icpt) < 1e-5
        assert m.summary.totalIterations < 100


@pytest.mark.parametrize("cid", ["breast_cancer-std-u-reg0.01-en0", "wine-std-w-reg0.01-en0.5"])
def test_reference_is_what_mllib_fits_here(frames, cid):
    """The recorded MLlib fits are reproduced by the installed pyspark (a few quick cases)."""
    from pyspark.ml.classification import LogisticRegression

    case = next(c for c in CASES if c["id"] == cid)
    lr = LogisticRegression(family=case["family"], standardization=case["standardization"],
                            regParam=case["regParam"], elasticNetParam=case["elasticNetParam"], **lr_parity.FIT)
    if case["weighted"]:
        lr.setWeightCol("w")
    m = lr.fit(frames[case["data"]])
    ref = REFERENCE["cases"][cid]
    np.testing.assert_allclose(m.coefficientMatrix.toArray(), ref["coefficientMatrix"], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(m.interceptVector.toArray(), ref["interceptVector"], rtol=1e-6, atol=1e-8)
