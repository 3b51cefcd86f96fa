"""TorchEstimator / TorchModel on local[2]: both backends, checkpoints, early stopping, persistence."""
import functools
import glob
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pyspark.ml.linalg import Vectors  # noqa: E402

from sparkml_scale.torch import TorchEstimator, TorchModel  # noqa: E402
from sparkml_scale.torch.launch import horovod_available  # noqa: E402
from sparkml_scale.torch.models import mlp, small_cnn  # noqa: E402

BACKENDS = ["torch_distributor", pytest.param("horovod", marks=pytest.mark.skipif(
    not horovod_available(), reason="horovod not installed (scripts/install_horovod.sh)"))]

MLP = functools.partial(mlp, 64, [64], 10)


@pytest.fixture(scope="module")
def digits(spark):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    rows = [(Vectors.dense(x), float(t), i % 5 == 0) for i, (x, t) in enumerate(zip(X, y))]
    df = spark.createDataFrame(rows, ["features", "label", "holdout"]).cache()
    return df.filter("not holdout").drop("holdout"), df.filter("holdout").drop("holdout")


def _accuracy(model, df):
    return model.transform(df).selectExpr("avg(cast(prediction = label as double))").first()[0]


@pytest.fixture(scope="module")
def digits_models(digits):
    train, _ = digits
    out = {}
    for backend in ("torch_distributor", "horovod"):
        if backend == "horovod" and not horovod_available():
            continue
        est = TorchEstimator(model=MLP, backend=backend, numProc=2, epochs=6, batchSize=64, learningRate=3e-3,
                             validationFraction=0.1)
        out[backend] = est.fit(train)
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_mlp_on_digits_reaches_accuracy(digits, digits_models, backend):
    _, test = digits
    model = digits_models[backend]
    assert model.backendUsed == backend
    hist = model.history
    assert [h["epoch"] for h in hist] == list(range(6))
    assert hist[-1]["loss"] < hist[0]["loss"]
    # one epoch = ceil(rows / batchSize) global steps of 64 rows, the same as one process
    assert all(h["samples"] == hist[0]["samples"] for h in hist) and hist[0]["samples"] >= 0.9 * 1437 * 0.9
    assert {"val_loss", "val_accuracy", "samples_per_s"} <= set(hist[-1])
    assert _accuracy(model, test) >= 0.92


@pytest.mark.skipif(not horovod_available(), reason="horovod not installed")
def test_backends_train_the_same_model(digits_models):
    """DDP and Horovod average the same gradients over the same shards: same metrics."""
    a, b = digits_models["torch_distributor"].history, digits_models["horovod"].history
    for x, y in zip(a, b):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4)
        assert x["val_loss"] == pytest.approx(y["val_loss"], rel=1e-4)


def test_transform_outputs_and_save_load_round_trip(spark, digits, digits_models, tmp_path):
    _, test = digits
    model = digits_models["torch_distributor"]
    out = model.transform(test).toPandas()
    probs = np.stack([v.toArray() for v in out["probability"]])
    assert probs.shape == (len(out), 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_array_equal(out["prediction"].to_numpy(), probs.argmax(axis=1))
    # the same numbers as the module run by hand
    X = np.stack([v.toArray() for v in out["features"]]).astype(np.float32)
    with torch.no_grad():
        ref = torch.softmax(model.module()(torch.from_numpy(X)), dim=1).numpy()
    np.testing.assert_allclose(probs, ref, atol=1e-6)

    path = str(tmp_path / "torch_model")
    model.save(path)
    loaded = TorchModel.load(path)
    assert loaded.history == model.history and loaded.getModel() == {
        "factory": "sparkml_scale.torch.models:mlp", "args": [64, [64], 10], "kwargs": {}}
    again = loaded.transform(test).toPandas()
    np.testing.assert_array_equal(again["prediction"].to_numpy(), out["prediction"].to_numpy())
    np.testing.assert_array_equal(np.stack([v.toArray() for v in again["probability"]]), probs)


def test_null_features_give_null_predictions(spark, digits_models):
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import types as T

    schema = T.StructType([T.StructField("features", VectorUDT(), True), T.StructField("label", T.DoubleType())])
    df = spark.createDataFrame([(Vectors.dense([0.5] * 64), 1.0), (None, 2.0)], schema)
    rows = digits_models["torch_distributor"].transform(df).collect()
    assert rows[0]["prediction"] is not None and rows[1]["prediction"] is None and rows[1]["probability"] is None


@pytest.fixture(scope="module")
def fmnist(spark, tmp_path_factory):
    """15,000 training and 2,000 holdout images of Fashion-MNIST, as an array<float> column."""
    from helpers import fashion_mnist_frames

    out = fashion_mnist_frames(spark, tmp_path_factory.mktemp("fmnist"),
                               {"train": slice(0, 15000), "test": slice(50000, 52000)})
    return out["train"], out["test"]


@pytest.mark.parametrize("backend", ["torch_distributor", pytest.param("horovod", marks=pytest.mark.slow)])
def test_small_cnn_on_fashion_mnist_reaches_085(fmnist, backend):
    train, test = fmnist
    est = TorchEstimator(model=functools.partial(small_cnn, 10, 1, 16), featuresCol="pixels", inputShape=[1, 28, 28],
                         backend=backend, numProc=2, epochs=4, batchSize=64, learningRate=2e-3)
    model = est.fit(train)
    acc = _accuracy(model, test)
    assert acc >= 0.85, (backend, acc, model.history)


@pytest.mark.slow  # 18 s; crash-then-resume is checked by tests/test_faults.py
def test_resume_continues_the_epoch_count_and_matches_an_uninterrupted_run(digits, tmp_path):
    train, _ = digits
    backend = "horovod" if horovod_available() else "torch_distributor"
    base = dict(model=MLP, backend=backend, numProc=1, batchSize=32, learningRate=3e-3, seed=7)
    ckpt = str(tmp_path / "ckpt")
    TorchEstimator(epochs=2, checkpointDir=ckpt, **base).fit(train)
    assert sorted(os.path.basename(f) for f in glob.glob(ckpt + "/*.pt")) == [
        "checkpoint-epoch0000.pt", "checkpoint-epoch0001.pt"]
    resumed = TorchEstimator(epochs=3, checkpointDir=ckpt, resumeFromCheckpoint=True, **base).fit(train)
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2]
    assert os.path.exists(ckpt + "/checkpoint-epoch0002.pt")
    straight = TorchEstimator(epochs=3, **base).fit(train)
    for k, v in straight.state_dict().items():
        np.testing.assert_allclose(resumed.state_dict()[k].numpy(), v.numpy(), atol=1e-6, err_msg=k)
    # asking for no more epochs than the checkpoint holds trains nothing
    again = TorchEstimator(epochs=3, checkpointDir=ckpt, resumeFromCheckpoint=True, **base).fit(train)
    assert again.history == resumed.history


def test_early_stopping_keeps_the_best_epoch_and_frozen_layers_stay(spark, digits):
    train, _ = digits
    from pyspark.sql import functions as F

    # validation rows with shuffled labels: the better the model learns, the worse their loss
    df = train.withColumn("is_val", F.rand(3) < 0.15)
    df = df.withColumn("label", F.when(F.col("is_val"), (F.col("label") + 3) % 10).otherwise(F.col("label")))
    est = TorchEstimator(model=MLP, backend="torch_distributor", numProc=2, epochs=12, batchSize=64,
                         learningRate=3e-3, validationCol="is_val", earlyStoppingPatience=2, frozenLayers=["0"])
    model = est.fit(df)
    assert model.stoppedEarly
    hist = model.history
    assert len(hist) < 12 and model.bestEpoch == len(hist) - 3
    assert min(h["val_loss"] for h in hist) == hist[model.bestEpoch]["val_loss"]
    torch.manual_seed(42)  # the estimator's seed: the same initial weights
    init = MLP().state_dict()
    got = model.state_dict()
    np.testing.assert_array_equal(got["0.weight"].numpy(), init["0.weight"].numpy())
    assert not np.allclose(got["2.weight"].numpy(), init["2.weight"].numpy())


@pytest.mark.slow  # 34 s; these cases (and more) are in tests/test_bad_input.py
def test_bad_input_gives_clear_errors(spark, digits):
    train, _ = digits
    with pytest.raises(ValueError, match="numProc"):
        TorchEstimator(model=MLP, numProc=3).fit(train)  # local[2]: 2 slots, fails before any job
    with pytest.raises(ValueError, match="'featuresCol'"):
        TorchEstimator(model=MLP, featuresCol="nope").fit(train)
    with pytest.raises(ValueError, match="'model'"):
        TorchEstimator().fit(train)
    with pytest.raises(ValueError, match="'loss'"):
        TorchEstimator(model=MLP, loss="hinge").fit(train)
    with pytest.raises(ValueError, match="'frozenLayers'"):
        TorchEstimator(model=MLP, frozenLayers=["nope"], epochs=1, numProc=2,
                       backend="horovod" if horovod_available() else "torch_distributor").fit(train)
    shifted = train.selectExpr("features", "label + 5 as label")
    with pytest.raises(ValueError, match=r"'labelCol'.*0\.\.9"):
        TorchEstimator(model=MLP, epochs=1, numProc=2, backend="torch_distributor").fit(shifted)


def test_unsaveable_model_is_refused_with_a_clear_error(tmp_path):
    est = TorchEstimator(model=lambda: mlp(4, [4], 2))
    with pytest.raises(ValueError, match="param 'model'.*import path"):
        est.save(str(tmp_path / "est"))
    ok = TorchEstimator(model=MLP, optimizer="sgd", epochs=3)
    ok.save(str(tmp_path / "ok"))
    back = TorchEstimator.load(str(tmp_path / "ok"))
    assert back.getEpochs() == 3 and back.getOptimizer() == "sgd"
    assert back.getModel()["factory"] == "sparkml_scale.torch.models:mlp"


@pytest.mark.connect
@pytest.mark.parametrize("backend", BACKENDS)
def test_fit_and_transform_under_spark_connect(spark, digits, backend):
    """No SparkContext in fit or transform: the same stage works on a Connect session."""
    train, test = digits
    model = TorchEstimator(model=MLP, backend=backend, numProc=2, epochs=3, batchSize=64,
                           learningRate=3e-3).fit(train)
    assert [h["epoch"] for h in model.history] == [0, 1, 2]
    assert _accuracy(model, test) >= 0.85


def test_one_cpu_process_trains_in_the_task_as_torchrun_would(spark, digits):
    """backend='torch_distributor', numProc=1 on CPU trains in the barrier task's Python worker (no
    torchrun): the same weights and history as TorchDistributor's torchrun launch of the same spec,
    and the worker's torch threads are put back."""
    from pyspark import cloudpickle

    from sparkml_scale.torch import launch as L
    from sparkml_scale.torch.worker import load_checkpoint_bytes

    train, _ = digits
    est = TorchEstimator(model=MLP, backend="torch_distributor", numProc=1, epochs=2, batchSize=64,
                         learningRate=3e-3, seed=5, validationFraction=0.1)
    model = est.fit(train)
    assert model.backendUsed == "torch_distributor"
    spec = est._spec(spark, 1, None)
    spec.update(columnNames=["features", "label"], progress=None)
    df = train.select(train["features"].alias("_c0"), train["label"].alias("_c1")).repartition(1)
    ref = L._launch_torch_distributor(df, cloudpickle.loads(cloudpickle.dumps(spec)), 1, False)
    assert [h["loss"] for h in model.history] == [h["loss"] for h in ref["history"]]
    a, b = model.state_dict(), load_checkpoint_bytes(ref["state"])
    assert all(torch.equal(a[k], b[k]) for k in a)

    def threads(batches):
        import pyarrow as pa

        for _ in batches:
            pass
        yield pa.RecordBatch.from_arrays([pa.array([torch.get_num_threads()])], names=["t"])

    before = {r.t for r in spark.range(4).repartition(2).mapInArrow(threads, "t long").collect()}
    est.fit(train)
    after = {r.t for r in spark.range(4).repartition(2).mapInArrow(threads, "t long").collect()}
    assert after == before


def test_one_cpu_process_reports_bad_data_and_empty_input(spark, digits):
    train, _ = digits
    est = TorchEstimator(model=MLP, backend="torch_distributor", numProc=1, epochs=1)
    with pytest.raises(ValueError, match=r"'features'.*'featuresCol'.*empty"):
        est.fit(train.filter("label < 0"))
    with pytest.raises(ValueError, match=r"'label'.*'labelCol'.*class indices"):
        est.fit(train.withColumn("label", train["label"] + 20))


def _forward_by_hand(module, rows, kind):
    """The expected new columns of each row ``(id, features, other)``: the module's forward in this
    process (``None`` for a null row), as Python values (vectors as lists)."""
    out = {}
    for r in rows:
        if r[1] is None:
            out[r[0]] = None
            continue
        with torch.no_grad():
            z = module(torch.tensor([r[1]], dtype=torch.float32)).double().numpy()[0]
        if kind == "softmax":
            p = np.exp(z - z.max())
            out[r[0]] = (float(z.argmax()), (p / p.sum()).tolist())
        else:
            out[r[0]] = (z.tolist(),)
    return out


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_transform_is_one_arrow_udf_over_the_features_alone(spark, loss):
    """transform runs the module in a scalar Arrow UDF that gets the features column only (no mapInArrow
    over whole rows, the UDF evaluated once even with two outputs), with the same columns, names, types
    and values as the mapInArrow pass it replaced -- dotted/backticked names, null rows and a small
    inference batch included -- and a bad row still names the column."""
    from pyspark.sql import types as T

    torch.manual_seed(0)
    factory = functools.partial(mlp, 4, [8], 3)
    import io

    buf = io.BytesIO()
    torch.save(factory().state_dict(), buf)
    model = TorchModel._create(buf.getvalue(), [], 3, "torch_distributor", False, None)
    feats = "f.`x`s"
    model._set(model=factory, loss=loss, featuresCol=feats, predictionCol="p.re`d", probabilityCol="pro.b",
               inferenceBatchSize=3, inputShape=[4])
    assert model._output_kind() == ("softmax" if loss == "cross_entropy" else "raw")
    schema = T.StructType([T.StructField("id", T.LongType()), T.StructField(feats, T.ArrayType(T.FloatType())),
                           T.StructField("o.ther", T.StringType())])
    rows = [(i, None if i % 4 == 1 else [i / 10, 1.0, -i / 7, 0.5], f"r{i}") for i in range(23)]
    df = spark.createDataFrame(rows, schema).repartition(2)
    out = model.transform(df)
    plan = out._jdf.queryExecution().executedPlan().toString()
    assert "ArrowEvalPython" in plan and "MapInArrow" not in plan and "pythonUDF1" not in plan, plan
    assert out.schema == model.transformSchema(df.schema)
    two = model._output_kind() == "softmax"
    assert out.schema.names == ["id", feats, "o.ther"] + (["p.re`d", "pro.b"] if two else ["p.re`d"])
    module = factory()
    module.load_state_dict(torch.load(io.BytesIO(model._state)))
    want = _forward_by_hand(module.eval(), rows, model._output_kind())
    got = out.collect()
    assert len(got) == 23
    for r in got:
        assert r[2] == f"r{r[0]}" and (r[1] is None) == (rows[r[0]][1] is None)
        if want[r[0]] is None:
            assert all(v is None for v in r[3:]), r
            continue
        new = [v.toArray().tolist() if hasattr(v, "toArray") else v for v in r[3:]]
        assert len(new) == len(want[r[0]])
        for a, b in zip(new, want[r[0]]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    bad = spark.createDataFrame([(0, [1.0, 2.0], "x")], schema)
    with pytest.raises(Exception, match=r"'f\.`x`s'.*2 values"):
        model.transform(bad).collect()
