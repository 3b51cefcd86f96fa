"""TorchModel compression on real data: dynamic int8 quantization of a digits MLP, pruning + fine-tuning
on Spark (both backends), structured pruning that shrinks layers, static int8 quantization of a
Fashion-MNIST CNN, save/load, the report, bad input, and the guard on the quantization API."""
import functools
import json
import os
import re
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pyspark.ml.linalg import Vectors  # noqa: E402

from sparkml_scale.core.persistence import ModelLoadError  # noqa: E402
from sparkml_scale.torch import TorchEstimator, TorchModel  # noqa: E402
from sparkml_scale.torch import compression as C  # noqa: E402
from sparkml_scale.torch.launch import horovod_available  # noqa: E402
from sparkml_scale.torch.models import mlp, small_cnn  # noqa: E402

BACKENDS = ["torch_distributor", pytest.param("horovod", marks=pytest.mark.skipif(
    not horovod_available(), reason="horovod not installed (scripts/install_horovod.sh)"))]

MLP = functools.partial(mlp, 64, [256, 256], 10)
FMNIST = "/usr/share/datasets/fashion-mnist"


def _accuracy(model, df):
    return model.transform(df).selectExpr("avg(cast(prediction = label as double))").first()[0]


def _dir_bytes(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


@pytest.fixture(scope="module")
def digits(spark):
    """scikit-learn's digits: 4/5 to train, every 5th row held out (never used for any choice here)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    rows = [(Vectors.dense(x / 16.0), float(t), i % 5 == 0) for i, (x, t) in enumerate(zip(X, y))]
    df = spark.createDataFrame(rows, ["features", "label", "holdout"]).cache()
    return df.filter("not holdout").drop("holdout").cache(), df.filter("holdout").drop("holdout").cache()


@pytest.fixture(scope="module")
def base(digits):
    train, _ = digits
    return TorchEstimator(model=MLP, numProc=2, epochs=8, batchSize=64, learningRate=2e-3).fit(train)


# --------------------------------------------------------------------------------- the API guard
#: Deprecation/removal texts torch 2.13 prints for what BACKEND uses (pinned: anything else fails).
KNOWN_WARNINGS = C.KNOWN_WARNINGS
assert len(KNOWN_WARNINGS) == 2


def test_quantization_backend_api_exists_and_warns_nothing_new():
    """Fails loudly when the installed torch drops torch.ao.quantization's calls that BACKEND uses, or
    warns anything about their deprecation/removal beyond the two texts torch 2.13 prints (a new
    removal date, a new deprecation): then move BACKEND to torchao (see sparkml_scale.torch.compression)."""
    import importlib

    assert C.BACKEND.name == "torch.ao"
    for mod, names in (("torch.ao.quantization", ["quantize_dynamic", "QConfig", "get_default_qconfig_mapping"]),
                       ("torch.ao.quantization.quantize_fx", ["prepare_fx", "convert_fx"]),
                       ("torch.ao.quantization.observer", ["MinMaxObserver", "default_per_channel_weight_observer"])):
        m = importlib.import_module(mod)
        missing = [n for n in names if not hasattr(m, n)]
        assert not missing, f"torch {torch.__version__} has no {mod}.{missing}: sparkml_scale's BACKEND needs a new home"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        # what BACKEND calls, with our silencing bypassed
        from torch.ao.quantization import quantize_dynamic
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        q = quantize_dynamic(mlp(8, [4], 2).eval(), {torch.nn.Linear}, dtype=torch.qint8)
        q(torch.randn(3, 8))
        cnn = small_cnn(2, 1, 2, 8).eval()
        prepared = prepare_fx(cnn, C.BACKEND._mapping(C.BACKEND._engine()), (torch.zeros(1, 1, 8, 8),))
        prepared(torch.randn(4, 1, 8, 8))
        convert_fx(prepared)(torch.randn(2, 1, 8, 8))
    texts = [str(w.message) for w in seen]
    unknown = [t for t in texts if re.search(r"deprecat|remov", t, re.I)
               and not any(re.search(k, t) for k in KNOWN_WARNINGS)]
    assert not unknown, f"torch {torch.__version__} warns anew about the quantization API in use: {unknown}"
    # torch 2.13's known text is still what it prints (when it changes, re-read it: it may name a date)
    assert any(re.search(C.KNOWN_DEPRECATION, t) for t in texts), texts
    # and our calls print none of them
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        C.BACKEND.quantize_dynamic(mlp(8, [4], 2), "qint8")(torch.randn(3, 8))
        prepared = C.BACKEND.prepare_static(small_cnn(2, 1, 2, 8), torch.zeros(1, 1, 8, 8))
        prepared(torch.randn(4, 1, 8, 8))
        C.BACKEND.convert_static(prepared)
    assert not [str(w.message) for w in ours if re.search(r"deprecat|remov", str(w.message), re.I)]


# ---------------------------------------------------------------------------------- quantization
def test_dynamic_int8_mlp_size_accuracy_and_identical_predictions_after_save_load(spark, digits, base, tmp_path):
    _, test = digits
    q = base.quantize()
    assert q.compression == [{"op": "quantize", "method": "dynamic", "dtype": "qint8", "backend": "torch.ao"}]
    assert base.compression == []  # the source model is unchanged
    acc_fp32, acc_int8 = _accuracy(base, test), _accuracy(q, test)
    assert acc_fp32 >= 0.93, acc_fp32
    assert acc_int8 >= acc_fp32 - 0.01, (acc_fp32, acc_int8)
    base.save(str(tmp_path / "fp32"))
    q.save(str(tmp_path / "int8"))
    ratio = _dir_bytes(tmp_path / "fp32") / _dir_bytes(tmp_path / "int8")
    assert ratio >= 3.5, ratio
    # the recipe is JSON in the metadata; the weights are torch.save bytes (read back with weights_only=True)
    part = next(p for p in (tmp_path / "int8" / "metadata").iterdir() if p.name.startswith("part-"))
    assert json.loads(part.read_text())["compression"] == q.compression
    back = TorchModel.load(str(tmp_path / "int8"))
    assert back.compression == q.compression
    a = q.transform(test).select("prediction", "probability").toPandas()
    b = back.transform(test).select("prediction", "probability").toPandas()
    assert a["prediction"].tolist() == b["prediction"].tolist()
    np.testing.assert_array_equal(np.stack([v.toArray() for v in a["probability"]]),
                                  np.stack([v.toArray() for v in b["probability"]]))
    # the loaded module really is int8 (a float module would also predict)
    mod = back.module()
    assert isinstance(mod[0], torch.ao.nn.quantized.dynamic.Linear)
    assert mod[0].weight().dtype == torch.qint8


def test_report_of_an_int8_model(spark, digits, base):
    _, test = digits
    q = base.quantize()
    rep = q.compressionReport(test, repeats=1)
    assert rep["model"].tolist() == ["baseline", "quantize dynamic qint8"]
    assert "numParameters=85002, compression='quantize dynamic qint8', " in repr(q)
    assert list(rep.columns) == ["model", "sizeBytes", "parameters", "nonZeroParameters", "rowsPerSecond",
                                 "accuracy", "sizeRatio", "speedup"]
    n = 64 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    assert rep["parameters"].tolist() == [n, n]
    assert rep["sizeBytes"].iloc[0] == len(base._state) and 3.5 < rep["sizeRatio"].iloc[1] < 4.2
    assert rep["accuracy"].iloc[0] == pytest.approx(_accuracy(base, test))
    assert rep["accuracy"].iloc[1] == pytest.approx(_accuracy(q, test))
    assert (rep["rowsPerSecond"] > 0).all() and rep["speedup"].iloc[0] == 1.0
    # a loaded model has no baseline in memory: one row unless one is passed
    assert len(q.copy().compressionReport(test, repeats=1)) == 2  # copy keeps it
    fresh = TorchModel._create(q._state, [], -1, "", False, None)
    q._copyValues(fresh)
    fresh._compression = q.compression
    assert fresh.compressionReport(test, repeats=1)["model"].tolist() == ["quantize dynamic qint8"]
    assert fresh.compressionReport(test, baseline=base, repeats=1)["model"].tolist() == [
        "baseline", "quantize dynamic qint8"]


# --------------------------------------------------------------------------------------- pruning
def test_unstructured_pruning_sparsity_and_report(spark, digits, base):
    _, test = digits
    p = base.prune(0.5)
    sp = p.sparsity
    assert sp["overall"] == pytest.approx(0.5, abs=1e-3)
    assert set(sp["layers"]) == {"0", "2", "4"} and all(abs(v - 0.5) < 1e-3 for v in sp["layers"].values())
    assert base.sparsity["overall"] < 0.01
    # the smallest-magnitude half of each layer: every kept weight is at least as large as every pruned one
    w0, p0 = base.state_dict()["0.weight"].abs(), p.state_dict()["0.weight"]
    assert w0[p0 == 0].max() <= w0[p0 != 0].min()
    rep = p.quantize().compressionReport(test, repeats=1)
    assert rep["model"].tolist() == ["baseline", "prune l1_unstructured 0.5 -> quantize dynamic qint8"]
    total = rep["parameters"].iloc[0]
    assert rep["nonZeroParameters"].iloc[1] < 0.52 * total and rep["parameters"].iloc[1] == total


@pytest.mark.parametrize("backend", BACKENDS)
def test_prune_then_fine_tune_on_spark_keeps_zeros_and_accuracy(spark, digits, base, backend, tmp_path):
    train, test = digits
    pruned = base.prune(0.5)
    masks = {k: v == 0 for k, v in pruned.state_dict().items() if k.endswith("weight")}
    est = TorchEstimator(numProc=2, epochs=1, batchSize=64, learningRate=1e-3, backend=backend).setInitialModel(pruned)
    tuned = est.fit(train)
    assert tuned.backendUsed == backend
    sd = tuned.state_dict()
    for name, zero in masks.items():
        assert int(zero.sum()) > 0.49 * zero.numel()
        assert bool((sd[name][zero] == 0).all()), name
        # and fine-tuning did train the rest
    assert not torch.equal(sd["0.weight"], pruned.state_dict()["0.weight"])
    assert tuned.compression == pruned.compression
    acc_base, acc_tuned = _accuracy(base, test), _accuracy(tuned, test)
    assert acc_tuned >= acc_base - 0.01, (acc_base, _accuracy(pruned, test), acc_tuned)
    tuned.save(str(tmp_path / "tuned"))
    back = TorchModel.load(str(tmp_path / "tuned"))
    assert back.compression == pruned.compression
    assert back.sparsity["overall"] == pytest.approx(0.5, abs=1e-3)


def test_ln_structured_zeroes_rows_and_shrink_removes_them(spark, digits, base, tmp_path):
    _, test = digits
    zeroed = base.prune(0.5, method="ln_structured", n=1)
    w = zeroed.state_dict()["0.weight"]
    assert int((w.abs().sum(1) == 0).sum()) == 128 and w.shape == (256, 64)
    assert zeroed.sparsity["layers"]["4"] == 0.0  # the output layer is left alone
    shrunk = base.prune(0.5, method="ln_structured", n=1, shrink=True)
    sd = shrunk.state_dict()
    assert sd["0.weight"].shape == (128, 64) and sd["2.weight"].shape == (128, 128) and sd["4.weight"].shape == (10, 128)
    # the same rows are removed that ln_structured zeroes: with those units' biases zeroed too (a removed
    # unit contributes nothing; a zeroed one still adds relu(bias)), the outputs are the zeroed model's
    ref = zeroed.module()
    with torch.no_grad():
        for layer in (ref[0], ref[2]):
            layer.bias[layer.weight.abs().sum(1) == 0] = 0.0
        x = torch.rand(50, 64)
        torch.testing.assert_close(shrunk.module()(x), ref(x), atol=1e-5, rtol=1e-5)
    # multiply-adds per row halve or better in the hidden layers (the forward-pass speed-up is in benchmarks/)
    assert sum(v.numel() for v in sd.values()) < 0.4 * sum(v.numel() for v in base.state_dict().values())
    shrunk.save(str(tmp_path / "shrunk"))
    back = TorchModel.load(str(tmp_path / "shrunk"))
    a = shrunk.transform(test).select("probability").toPandas()
    b = back.transform(test).select("probability").toPandas()
    np.testing.assert_array_equal(np.stack([v.toArray() for v in a["probability"]]),
                                  np.stack([v.toArray() for v in b["probability"]]))
    # a shrunk model fine-tunes with its smaller layers
    tuned = TorchEstimator(numProc=1, epochs=1, batchSize=64).setInitialModel(back).fit(digits[0])
    assert tuned.state_dict()["2.weight"].shape == (128, 128)
    assert _accuracy(tuned, test) >= _accuracy(base, test) - 0.03


# ---------------------------------------------------------------------------- static quantization
@pytest.fixture(scope="module")
def fmnist(spark, tmp_path_factory):
    """4,000 training and 1,000 holdout Fashion-MNIST images (array<float>)."""
    if not os.path.isdir(FMNIST):
        pytest.skip(f"{FMNIST} missing (Debian package dataset-fashion-mnist)")
    from helpers import fashion_mnist_frames

    out = fashion_mnist_frames(spark, tmp_path_factory.mktemp("fmnist"),
                               {"train": slice(0, 4000), "test": slice(40000, 41000)}, seed=7,
                               row_group_size=1000, float_labels=True, cache=True)
    return out["train"], out["test"]


def test_static_int8_cnn_on_fashion_mnist(spark, fmnist, tmp_path):
    train, test = fmnist
    cnn = TorchEstimator(model=functools.partial(small_cnn, 10, 1, 16), featuresCol="pixels", inputShape=[1, 28, 28],
                         numProc=2, epochs=3, batchSize=64, learningRate=2e-3).fit(train)
    q = cnn.quantize("static", calibrationData=train, calibrationRows=512)
    step = q.compression[-1]
    assert step["method"] == "static" and step["inputShape"] == [1, 28, 28] and step["engine"]
    mod = q.module()
    assert any(isinstance(m, torch.ao.nn.quantized.Conv2d) for m in mod.modules())
    acc_fp32, acc_int8 = _accuracy(cnn, test), _accuracy(q, test)
    assert acc_fp32 >= 0.78, acc_fp32
    assert acc_int8 >= acc_fp32 - 0.01, (acc_fp32, acc_int8)
    q.save(str(tmp_path / "q"))
    back = TorchModel.load(str(tmp_path / "q"))
    a = q.transform(test).select("prediction").toPandas()["prediction"].tolist()
    assert back.transform(test).select("prediction").toPandas()["prediction"].tolist() == a
    # structured pruning of the conv channels, then static quantization of the shrunk net
    shrunk = cnn.prune(0.5, method="ln_structured", shrink=True)
    assert shrunk.state_dict()["features.0.weight"].shape[0] == 8
    sq = shrunk.quantize("static", calibrationData=train, calibrationRows=512)
    sq.save(str(tmp_path / "sq"))
    again = TorchModel.load(str(tmp_path / "sq"))
    assert again.transform(test).select("prediction").toPandas()["prediction"].tolist() == \
        sq.transform(test).select("prediction").toPandas()["prediction"].tolist()


def _conv_only():
    """A TorchModel of one Conv2d layer (nothing for dynamic quantization)."""
    import io

    buf = io.BytesIO()
    torch.save(torch.nn.Conv2d(1, 2, 3).state_dict(), buf)
    m = TorchModel._create(buf.getvalue(), [], -1, "", False, None)
    return m._set(model=functools.partial(torch.nn.Conv2d, 1, 2, 3), inputShape=[1, 8, 8])


# ----------------------------------------------------------------------------------------- bad input
def test_bad_input_names_the_param(spark, digits, base, tmp_path):
    train, test = digits
    for kwargs, match in (({"amount": 1.5}, "param 'amount'"), ({"amount": 0.5, "method": "random"}, "param 'method'"),
                          ({"amount": 0.5, "layers": ["nope"]}, "param 'layers'.*'nope'"),
                          ({"amount": 0.5, "shrink": True}, "param 'shrink' needs method='ln_structured'"),
                          ({"amount": 0.5, "method": "ln_structured", "shrink": True, "dim": 1}, "dim=0"),
                          ({"amount": 0.5, "method": "ln_structured", "n": 0}, "param 'n'"),
                          ({"amount": 0.5, "method": "ln_structured", "layers": ["4"], "shrink": True},
                           "model's output")):
        with pytest.raises(ValueError, match=match):
            base.prune(**kwargs)
    with pytest.raises(ValueError, match="param 'method'"):
        base.quantize("qat")
    with pytest.raises(ValueError, match="param 'dtype'"):
        base.quantize(dtype="int4")
    with pytest.raises(ValueError, match="param 'dtype'"):
        base.quantize(dtype="float16")
    with pytest.raises(TypeError, match="param 'calibrationData'"):
        base.quantize("static")
    with pytest.raises(ValueError, match="param 'calibrationData' is for method='static'"):
        base.quantize(calibrationData=train)
    with pytest.raises(ValueError, match="features|'nope'"):
        base.quantize("static", calibrationData=train.withColumnRenamed("features", "nope"))
    with pytest.raises(ValueError, match="param 'calibrationRows'"):
        base.quantize("static", calibrationData=train, calibrationRows=0)
    with pytest.raises(ValueError, match="no non-null rows"):
        base.quantize("static", calibrationData=train.limit(0))
    with pytest.raises(ValueError, match="has none; use method='static'"):
        _conv_only().quantize()
    q = base.quantize()
    with pytest.raises(ValueError, match="already quantized"):
        q.quantize()
    with pytest.raises(ValueError, match="prune .* then quantize"):
        q.prune(0.5)
    with pytest.raises(ValueError, match="initialModel is quantized"):
        TorchEstimator(numProc=1, epochs=1).setInitialModel(q).fit(train)
    with pytest.raises(ValueError, match="param 'model' differs from initialModel's factory"):
        TorchEstimator(model=functools.partial(mlp, 64, [32], 10), numProc=1, epochs=1).setInitialModel(
            base.prune(0.3)).fit(train)
    with pytest.raises(TypeError, match="initialModel must be a fitted TorchModel"):
        TorchEstimator().setInitialModel("model")
    with pytest.raises(ValueError, match="param 'repeats'"):
        q.compressionReport(test, repeats=0)
    with pytest.raises(ValueError, match="'nolabel'"):
        q.compressionReport(test, labelCol="nolabel")
    # a tampered recipe is refused on load, before any module is built
    q.save(str(tmp_path / "q"))
    meta_dir = tmp_path / "q" / "metadata"
    part = next(p for p in meta_dir.iterdir() if p.name.startswith("part-"))
    meta = json.loads(part.read_text())
    meta["compression"] = [{"op": "exec", "code": "print(1)"}]
    part.write_text(json.dumps(meta))
    for crc in meta_dir.glob(".*.crc"):  # the checksum of the edited file
        crc.unlink()
    with pytest.raises(ModelLoadError, match="unknown op 'exec'"):
        TorchModel.load(str(tmp_path / "q"))


@pytest.mark.connect
def test_compression_under_spark_connect(spark, digits, base):
    """Quantized and pruned models transform, calibrate and report on a Connect session."""
    train, test = digits
    q = base.prune(0.5).quantize()
    assert _accuracy(q, test) >= _accuracy(base, test) - 0.02
    s = base.quantize("static", calibrationData=train, calibrationRows=256)
    assert _accuracy(s, test) >= _accuracy(base, test) - 0.02
    rep = q.compressionReport(test, repeats=1)
    assert len(rep) == 2 and rep["sizeRatio"].iloc[1] > 3
    pruned = base.prune(0.5)
    tuned = TorchEstimator(numProc=1, epochs=1, batchSize=64).setInitialModel(pruned).fit(train)
    zero = pruned.state_dict()["2.weight"] == 0
    assert bool((tuned.state_dict()["2.weight"][zero] == 0).all())
