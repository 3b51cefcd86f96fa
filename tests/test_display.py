"""Readable reprs (sparkml_scale.core.display): the one-line ``repr`` and the notebook table
``_repr_html_`` of fitted models, summaries, estimators and transformers."""
import functools
import re

import numpy as np
import pytest
from pyspark.ml.linalg import Vectors

from helpers import vector_frame
from sparkml_scale.classification import LogisticRegression, LogisticRegressionModel
from sparkml_scale.core.display import ReadableRepr, format_value, lazy
from sparkml_scale.feature import PCA, FeatureHasher, PCAModel
from sparkml_scale.regression import LinearRegression, LinearRegressionModel

D = 1 << 18


def _table(html: str, caption: str) -> dict:
    """The ``{field: cell text}`` of a repr table (cells still HTML-escaped); checks its frame."""
    assert html.startswith("<table") and html.endswith("</table>"), html
    assert "<caption" in html and f"<b>{caption}</b></caption>" in html, html
    return dict(re.findall(r"<th[^>]*>(.*?)</th><td[^>]*><code>(.*?)</code></td>", html))


@pytest.fixture(scope="module")
def hashed(spark):
    """Rows hashed into 2^18 columns (FeatureHasher) with a label that depends on the carrier."""
    rows = [(c, o, float(h), float(c in ("AA", "UA"))) for c, o, h in
            zip(["AA", "UA", "DL", "B6", "WN"] * 8, ["JFK", "LGA", "EWR", "JFK"] * 10, range(40))]
    df = spark.createDataFrame(rows, ["carrier", "origin", "hour", "label"])
    hasher = FeatureHasher(inputCols=["carrier", "origin", "hour"], categoricalCols=["hour"], outputCol="features")
    return hasher, hasher.transform(df).cache()


@pytest.fixture(scope="module")
def hashed_model(hashed):
    return LogisticRegression(regParam=0.01, maxIter=3, solver="mapreduce").fit(hashed[1])


def test_logistic_model_on_2_18_features_is_short_and_mllib_shaped(hashed_model):
    m, s = hashed_model, hashed_model.summary
    text = repr(m)
    # MLlib's toString, then what the training recorded (the summary), never the 2^18 weights
    assert text == (f"LogisticRegressionModel: uid={m.uid}, numClasses=2, numFeatures={D}, solverUsed='mapreduce', "
                    f"totalIterations={s.totalIterations}, finalObjective={s.objectiveHistory[-1]:.6g}")
    assert len(text) < 400 and str(m) == text
    html = m._repr_html_()
    assert len(html) < 3000, html
    rows = _table(html, "LogisticRegressionModel")
    assert rows["numFeatures"] == str(D) and rows["solverUsed"] == "&#x27;mapreduce&#x27;"
    assert rows["family"] == "&#x27;binomial&#x27;" and rows["uid"] == m.uid
    nnz = m.coefficients.numNonzeros()
    assert 0 < nnz < 100 and rows["coefficients"].startswith(f"SparseVector(size={D}, nnz={nnz}, {{")
    assert rows["coefficients"].count(":") <= 5  # at most five of the non-zeros
    assert rows["intercept"] == f"{m.intercept:.6g}"
    assert rows["params"] == "maxIter=3, regParam=0.01, solver=&#x27;mapreduce&#x27;"


@pytest.mark.connect
def test_summaries_show_their_metrics(hashed, hashed_model):
    s = hashed_model.summary
    text = repr(s)  # computes the metrics (Spark jobs), once
    assert text == (f"LogisticRegressionTrainingSummary(numClasses=2, totalIterations={s.totalIterations}, "
                    f"finalObjective={s.objectiveHistory[-1]:.6g}, numInstances=40, solverUsed='mapreduce', "
                    f"accuracy={s.accuracy:.6g}, areaUnderROC={s.areaUnderROC:.6g})")
    rows = _table(s._repr_html_(), "LogisticRegressionTrainingSummary")
    assert rows["weightedRecall"] == f"{s.weightedRecall:.6g}" and rows["labelCol"] == "&#x27;label&#x27;"
    assert "weightCol" not in rows  # unset: absent, not "None"
    ev = hashed_model.evaluate(hashed[1].limit(20))
    assert repr(ev) == f"LogisticRegressionSummary(numClasses=2, accuracy={ev.accuracy:.6g}, " \
                       f"areaUnderROC={ev.areaUnderROC:.6g})"


def test_save_load_and_unfitted_stages(hashed, hashed_model, tmp_path):
    hasher, _ = hashed
    path = str(tmp_path / "lr")
    hashed_model.save(path)
    back = LogisticRegressionModel.load(path)
    # a loaded model has no summary (as MLlib's): exactly MLlib's toString, as pyspark's docstring prints
    assert repr(back) == f"LogisticRegressionModel: uid={hashed_model.uid}, numClasses=2, numFeatures={D}"
    assert _table(back._repr_html_(), "LogisticRegressionModel")["coefficients"].startswith("SparseVector(")
    assert repr(hasher) == (f"FeatureHasher: uid={hasher.uid}, numFeatures={D}, "
                            "inputCols=['carrier', 'origin', 'hour'], categoricalCols=['hour']")
    hasher.save(str(tmp_path / "fh"))
    assert repr(FeatureHasher.load(str(tmp_path / "fh"))) == repr(hasher)
    # estimators: their explicitly set params; bare models: what they have, no error
    est = LogisticRegression(regParam=0.1, family="binomial")
    assert repr(est) == f"LogisticRegression: uid={est.uid}, family='binomial', regParam=0.1"
    pca = PCA()
    assert repr(pca) == f"PCA: uid={pca.uid}"
    for bare in (LogisticRegressionModel(), LinearRegressionModel(), PCAModel(), FeatureHasher()):
        assert repr(bare).startswith(f"{type(bare).__name__}: uid={bare.uid}")
        assert bare.uid in bare._repr_html_()
    assert "k=" not in repr(PCAModel())  # k unset: absent


def test_linear_regression_and_pca(spark):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5))
    y = X @ np.array([1.0, -2.0, 0.5, 0.0, 3.0]) + 0.1 * rng.normal(size=40)
    df = vector_frame(spark, X, y)
    m = LinearRegression(regParam=0.01).fit(df)
    assert repr(m) == f"LinearRegressionModel: uid={m.uid}, numFeatures=5"  # a model's repr starts no job
    s = m.summary
    text = repr(s)  # the summary's repr computes its metrics
    assert text == (f"LinearRegressionTrainingSummary(r2={s.r2:.6g}, rootMeanSquaredError={s.rootMeanSquaredError:.6g}, "
                    "numInstances=40, totalIterations=0)")
    rows = _table(s._repr_html_(), "LinearRegressionTrainingSummary")
    assert rows["meanAbsoluteError"] == f"{s.meanAbsoluteError:.6g}" and rows["degreesOfFreedom"] == "34"
    # once known, the training r2 and RMSE join the model's line
    assert repr(m).endswith(f"numFeatures=5, r2={s.r2:.6g}, rootMeanSquaredError={s.rootMeanSquaredError:.6g}")
    assert _table(m._repr_html_(), "LinearRegressionModel")["coefficients"].startswith("DenseVector(size=5, [1")

    pm = PCA(k=2, inputCol="features", outputCol="pcs", center=True).fit(df)
    ev = pm.explainedVariance.toArray()
    assert repr(pm) == (f"PCAModel: uid={pm.uid}, k=2, numFeatures=5, methodUsed='exact', "
                        f"explainedVarianceSum={ev.sum():.6g}")
    rows = _table(pm._repr_html_(), "PCAModel")
    assert rows["explainedVariance"] == f"DenseVector(size=2, [{ev[0]:.4g}, {ev[1]:.4g}])"
    assert rows["center"] == "True" and rows["whiten"] == "False" and rows["count"] == "40"
    assert rows["pc"].startswith("array(shape=(5, 2), float64, nnz=")


def test_html_escapes_values():
    fh = FeatureHasher(inputCols=["<b>a&b</b>", "x"], outputCol="<script>")
    html = fh._repr_html_()
    assert "<b>a" not in html and "<script>" not in html
    rows = _table(html, "FeatureHasher")
    assert rows["inputCols"] == "[&#x27;&lt;b&gt;a&amp;b&lt;/b&gt;&#x27;, &#x27;x&#x27;]"
    assert rows["outputCol"] == "&#x27;&lt;script&gt;&#x27;"


class _Broken(LogisticRegressionModel):
    def _repr_fields(self):
        raise RuntimeError("boom")


class _OneBadField(ReadableRepr):
    def _repr_fields(self):
        return [("good", 1.5), ("bad", lazy(lambda: 1 / 0)), ("unset", None), ("weird", object.__new__(_Unprintable))]


class _Unprintable:
    def __repr__(self):
        raise ValueError("no")


def test_a_repr_never_raises():
    m = _Broken()
    assert repr(m) == m.uid  # pyspark's form
    assert m._repr_html_() == f"<code>{m.uid}</code>"
    text = repr(_OneBadField())
    assert text == "_OneBadField(good=1.5, bad=<error: ZeroDivisionError: division by zero>, weird=<_Unprintable>)"


def test_format_value_summarises():
    assert format_value(Vectors.dense(np.arange(10.0))) == "DenseVector(size=10, [0, 1, 2, 3, 4, …])"
    assert format_value(Vectors.sparse(D, [3, 70000], [0.5, -1.25])) == f"SparseVector(size={D}, nnz=2, {{3: 0.5, 70000: -1.25}})"
    assert format_value(np.zeros((D, 10))) == f"array(shape=({D}, 10), float64, nnz=0, [0, 0, 0, 0, 0, …])"
    assert format_value(1 / 3) == "0.333333" and format_value(np.int64(7)) == "7" and format_value(True) == "True"
    assert format_value("x" * 100) == repr("x" * 59 + "…")
    assert format_value(list(range(8))) == "[0, 1, 2, 3, 4, … (+3 more)]"
    from sparkml_scale.core.linear import compressed_matrix

    assert format_value(compressed_matrix(np.eye(3, 4))) in ("DenseMatrix(3x4, [1, 0, 0, 0, 0, …])",
                                                             "SparseMatrix(3x4, nnz=3)")
    ref = {"factory": "sparkml_scale.torch.models:mlp", "args": [4, [8], 3], "kwargs": {}}
    assert format_value(ref) == "sparkml_scale.torch.models:mlp(4, [8], 3)"


def test_torch_model(tmp_path):
    """The display of a TorchModel: its factory, weights and the last epoch's metrics (the
    history here is written by hand: what is under test is the display, not training)."""
    torch = pytest.importorskip("torch")
    import io

    from sparkml_scale.torch import TorchEstimator, TorchModel
    from sparkml_scale.torch.models import mlp

    factory = functools.partial(mlp, 4, [8], 3)
    buf = io.BytesIO()
    torch.save(factory().state_dict(), buf)
    history = [{"epoch": float(e), "loss": 1.0 / (e + 1), "samples": 90.0, "seconds": 0.1, "samples_per_s": 900.0,
                "val_loss": 1.1 / (e + 1), "val_accuracy": 0.5 + 0.1 * e} for e in range(3)]
    model = TorchModel._create(buf.getvalue(), history, 3, "torch_distributor", False, None)
    model._set(model=factory)
    n = 4 * 8 + 8 + 8 * 3 + 3
    expected = (f"module=sparkml_scale.torch.models:mlp(4, [8], 3), numParameters={n}, epochsTrained=3, "
                f"trainLoss={1 / 3:.6g}, valLoss={1.1 / 3:.6g}, valAccuracy=0.7")
    assert repr(model) == f"TorchModel: uid={model.uid}, {expected}"
    model.save(str(tmp_path / "torch"))
    back = TorchModel.load(str(tmp_path / "torch"))
    assert repr(back) == f"TorchModel: uid={model.uid}, {expected}"  # the factory saved as a reference dict
    rows = _table(back._repr_html_(), "TorchModel")
    assert rows["backendUsed"] == "&#x27;torch_distributor&#x27;" and rows["loss"] == "&#x27;cross_entropy&#x27;"
    assert "bestEpoch" not in rows and rows["stoppedEarly"] == "False"
    bare = TorchModel()
    assert repr(bare) == f"TorchModel: uid={bare.uid}"
    est = TorchEstimator(model=factory, epochs=2)
    assert repr(est) == f"TorchEstimator: uid={est.uid}, epochs=2, model=sparkml_scale.torch.models:mlp(4, [8], 3)"
