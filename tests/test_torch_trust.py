"""Loading a torch stage never runs code its directory names (issue 15, item 3).

A saved TorchModel/TorchEstimator refers to its module factory, optimizer and loss by import
path; ``load`` resolves only trusted references (built-in ones, callables given to a stage in
this process, and what ``trusted=``, the Spark conf ``spark.sparkml_scale.trusted`` or the
environment variable ``SPARKML_SCALE_TRUSTED`` name) and raises ``ModelLoadError`` for any
other before importing or calling it.  The executors get callables the driver resolved: a raw
reference reaching them is refused there too.

The factories below stand for a user's own module.  ``tiny_cnn`` is never given to a stage in
this process (the saved models that name it are edited by hand), so nothing but the user's
trust admits it; ``passed_cnn`` and ``typed_cnn`` are given to stages, which trusts them here.
"""
import functools
import os
import shutil
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_bad_input import _edit_metadata, assert_clean  # noqa: E402

from sparkml_scale.core.persistence import ModelLoadError  # noqa: E402
from sparkml_scale.torch import TorchEstimator, TorchModel  # noqa: E402
from sparkml_scale.torch.models import SmallCNN, small_cnn  # noqa: E402

ME = __name__  # the module name the references below use


def tiny_cnn(num_classes: int = 10):
    """The same network as ``small_cnn``, from a "user module" (never given to a stage here)."""
    return SmallCNN(num_classes)


def passed_cnn(num_classes: int = 10):
    return SmallCNN(num_classes)


def typed_cnn(num_classes: int = 10):
    return SmallCNN(num_classes)


# ----------------------------------------------------------------------------- no Spark
def test_built_in_trust_admits_torch_classes_and_refuses_what_their_modules_import(tmp_path, monkeypatch):
    from sparkml_scale.torch.factory import Trust, build_module, make_optimizer, resolve

    monkeypatch.delenv("SPARKML_SCALE_TRUSTED", raising=False)
    assert resolve("torch.nn:Linear") is torch.nn.Linear
    assert resolve("torch.optim.sgd:SGD", "optimizer") is torch.optim.SGD
    assert resolve("torch.nn.functional:cross_entropy", "loss") is torch.nn.functional.cross_entropy
    assert isinstance(build_module({"factory": "sparkml_scale.torch.models:mlp", "args": [4, [3], 2]}), torch.nn.Module)
    opt = make_optimizer({"factory": "torch.optim:SGD", "kwargs": {"momentum": 0.9}},
                         torch.nn.Linear(2, 1).parameters(), 0.1)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9
    refused = [("torch:load", "model"), ("torch.hub:load", "model"), ("os:system", "model"),
               ("builtins:open", "loss"), ("sparkml_scale.cli:main", "model"),  # the package, beyond its models
               ("sparkml_scale.torch.factory:build_module", "model"),  # would resolve its JSON argument
               ("torch.nn:Linear", "loss"), ("torch.nn.functional:relu", "model"),  # right module, wrong param
               ("torch.nn.functional:importlib.import_module", "loss"),  # a name torch.nn.functional imports
               ("sparkml_scale.torch.models:nn", "model"), ("torch.nn:functional", "model")]
    for ref, param in refused:
        with pytest.raises(ModelLoadError, match=rf"param '{param}' names '{ref}'.*not trusted") as info:
            resolve(ref, param)
        assert f"trusted=[{ref!r}]" in str(info.value), info.value
    # a trusted module trusts what it defines, not what it imports
    assert resolve(f"{ME}:tiny_cnn", trust=Trust([ME])) is tiny_cnn
    with pytest.raises(ModelLoadError, match=rf"'{ME}:os.system' \(a builtin_function_or_method from 'posix'\)"):
        resolve(f"{ME}:os.system", trust=Trust([ME]))
    with pytest.raises(ValueError, match="special attribute"):
        resolve(f"{ME}:tiny_cnn.__globals__", trust=Trust([ME]))
    # an untrusted module is not even imported (importing runs its top level)
    marker = tmp_path / "imported"
    (tmp_path / "evil_factories.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef net(): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelLoadError, match="'evil_factories:net'.*nothing was imported"):
        resolve("evil_factories:net", trust=Trust(["evil_factorie", "evil_factories_x", "evil_factories:other"]))
    assert not marker.exists() and "evil_factories" not in sys.modules
    # the executors' default: built-in rules, callables given in that process and the environment
    with pytest.raises(ModelLoadError, match="'builtins:open'"):
        build_module({"factory": "builtins:open", "args": [str(marker), "w"]})
    with pytest.raises(ModelLoadError, match="'os:system'"):
        make_optimizer({"factory": "os:system", "args": [f"touch {marker}"]}, torch.nn.Linear(2, 1).parameters(), 0.1)
    assert not marker.exists()
    monkeypatch.setenv("SPARKML_SCALE_TRUSTED", f" {ME}:tiny_cnn , other.module")
    assert resolve(f"{ME}:tiny_cnn") is tiny_cnn
    for bad, exc in (([42], TypeError), (["not a/module"], ValueError), (True, TypeError)):
        with pytest.raises(exc, match="trusted"):
            Trust(bad)


# ----------------------------------------------------------------------------- a fitted small_cnn
@pytest.fixture(scope="module")
def images(spark):
    rng = np.random.default_rng(0)
    rows = [(rng.random(784, dtype=np.float32).tolist(), float(i % 10)) for i in range(16)]
    return spark.createDataFrame(rows, "pixels array<float>, label double").cache()


@pytest.fixture(scope="module")
def saved(images, tmp_path_factory):
    """A small_cnn TorchModel fitted (one epoch) and saved in this process, with its predictions."""
    est = TorchEstimator(model=functools.partial(small_cnn, 10), featuresCol="pixels", inputShape=[1, 28, 28],
                         epochs=1, batchSize=8, numProc=1)
    model = est.fit(images)
    root = tmp_path_factory.mktemp("torch_trust")
    model.save(str(root / "model"))
    est.save(str(root / "estimator"))
    return root, _predictions(model, images)


def _predictions(model, df):
    return np.stack([r["probability"].toArray() for r in model.transform(df).select("probability").collect()])


@pytest.fixture()
def by_value():
    """Ship this module's functions to the executors by value (a user's module would be installed there)."""
    from pyspark import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[ME])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[ME])


def _tampered(root, name: str, section: str = "paramMap", **params) -> str:
    """A copy of the saved model whose metadata ``section`` has ``params`` (as an attacker, or a user by
    hand, would write them)."""
    path = str(root / name)
    shutil.copytree(str(root / "model"), path)
    _edit_metadata(path, lambda meta: meta[section].update(params))
    return path


@pytest.mark.connect
def test_small_cnn_fitted_here_saves_and_loads_with_no_extra_trust(saved, images):
    root, expected = saved
    loaded = TorchModel.load(str(root / "model"))
    assert loaded.getModel() == {"factory": "sparkml_scale.torch.models:small_cnn", "args": [10], "kwargs": {}}
    np.testing.assert_allclose(_predictions(loaded, images), expected, atol=1e-6)
    assert TorchEstimator.load(str(root / "estimator")).getModel()["factory"] == "sparkml_scale.torch.models:small_cnn"


def _touch(marker):
    return f"touch {marker}"


EVIL = {
    "open-model": ("paramMap", "model", lambda m: {"factory": "builtins:open", "args": [str(m), "w"]}, "builtins:open"),
    "system-model": ("paramMap", "model", lambda m: {"factory": "os:system", "args": [_touch(m)]}, "os:system"),
    "system-optimizer": ("paramMap", "optimizer", lambda m: {"factory": "os:system", "args": [_touch(m)]},
                         "os:system"),
    "open-loss-default": ("defaultParamMap", "loss", lambda m: {"factory": "builtins:open", "args": [str(m), "w"]},
                          "builtins:open"),
}


@pytest.mark.connect
@pytest.mark.parametrize("case", list(EVIL))
def test_tampered_reference_is_refused_at_load_and_nothing_runs(saved, images, tmp_path, monkeypatch, case):
    root, _ = saved
    section, param, ref, name = EVIL[case]
    marker = tmp_path / "code_ran"
    path = _tampered(root, f"evil-{case}", section, **{param: ref(marker)})
    monkeypatch.setenv("SPARKML_SCALE_TRUSTED", f"{ME}:passed_cnn")  # trust for something else
    with pytest.raises(ModelLoadError) as info:
        TorchModel.load(path).transform(images).collect()
    assert_clean(info.value, rf"'{path}': param '{param}' names '{name}', which is not trusted: nothing was imported")
    assert f"trusted=[{name!r}]" in str(info.value) and "SPARKML_SCALE_TRUSTED" in str(info.value)
    with pytest.raises(ModelLoadError, match=rf"param '{param}' names '{name}'"):
        TorchModel.load(path, trusted=[f"{ME}:tiny_cnn", "torch"]).transform(images).collect()
    assert not marker.exists(), "loading the model ran code its directory names"


def test_reference_set_after_load_is_vetted_on_the_driver_and_never_reaches_the_executors(saved, images, tmp_path):
    """References that reach a stage without ``load`` (e.g. a param map that CrossValidator.load read)."""
    root, _ = saved
    marker = tmp_path / "code_ran"
    evil = {"factory": "builtins:open", "args": [str(marker), "w"]}
    loaded = TorchModel.load(str(root / "model"))
    bad = loaded.copy({loaded.model: evil})
    with pytest.raises(ModelLoadError, match="param 'model' names 'builtins:open'"):
        bad.transform(images).collect()
    with pytest.raises(ModelLoadError, match="param 'model' names 'builtins:open'"):
        bad.module()
    est = TorchEstimator.load(str(root / "estimator"))
    for param in ("model", "optimizer", "loss"):
        with pytest.raises(ModelLoadError, match=f"param '{param}' names 'builtins:open'"):
            est.fit(images, {est.getParam(param): evil})
    # the executor side: a raw reference that reaches the Arrow UDF TorchModel.transform runs is
    # refused there
    import io

    from pyspark.sql import types as T

    from sparkml_scale.core.session import vector_arrow_udf
    from sparkml_scale.torch.inference import _predict_udf_fn

    buf = io.BytesIO()  # other weights than the model's: the workers cache modules by their weights
    torch.save(small_cnn(10).state_dict(), buf)
    udf = vector_arrow_udf(images.sparkSession, _predict_udf_fn(evil, buf.getvalue(), "raw", "pixels", [1, 28, 28], 8, "false", 1),
                           T.DoubleType())
    with pytest.raises(Exception, match="not trusted"):
        images.select(udf("pixels")).collect()
    assert not marker.exists(), "a reference nobody vetted was called"


@pytest.mark.connect
def test_user_factory_loads_only_when_trusted(spark, saved, images, monkeypatch, by_value):
    root, expected = saved
    ref = f"{ME}:tiny_cnn"
    path = _tampered(root, "user-factory", model={"factory": ref, "args": [10], "kwargs": {}})
    monkeypatch.delenv("SPARKML_SCALE_TRUSTED", raising=False)
    with pytest.raises(ModelLoadError) as info:
        TorchModel.load(path)
    assert_clean(info.value, rf"param 'model' names '{ref}', which is not trusted")
    for how in (f"trusted=[{ref!r}] (or the module {ME!r}) to TorchModel.load", "'spark.sparkml_scale.trusted'",
                "'SPARKML_SCALE_TRUSTED'"):
        assert how in str(info.value)
    for trusted in ([ref], [ME], ME, [tiny_cnn], [sys.modules[ME]]):
        assert TorchModel.load(path, trusted=trusted).getModel()["factory"] == ref
    loaded = TorchModel.load(path, trusted=[ref])
    np.testing.assert_allclose(_predictions(loaded, images), expected, atol=1e-6)  # the executors built tiny_cnn
    monkeypatch.setenv("SPARKML_SCALE_TRUSTED", ref)
    TorchModel.load(path)
    monkeypatch.delenv("SPARKML_SCALE_TRUSTED")
    spark.conf.set("spark.sparkml_scale.trusted", f"other.module,{ME}")
    try:
        TorchModel.load(path)
    finally:
        spark.conf.unset("spark.sparkml_scale.trusted")
    with pytest.raises(ModelLoadError, match="not trusted"):  # trust was for those loads only
        TorchModel.load(path)


def test_pipeline_model_load_reads_the_conf_and_the_environment(spark, saved, monkeypatch, tmp_path):
    from pyspark.ml import PipelineModel

    root, _ = saved
    monkeypatch.delenv("SPARKML_SCALE_TRUSTED", raising=False)
    for name, ref in (("user", f"{ME}:tiny_cnn"), ("evil", "os:system")):
        path = str(tmp_path / f"pipeline-{name}")
        PipelineModel([TorchModel.load(str(root / "model"))]).save(path)
        (stage,) = [os.path.join(path, "stages", d) for d in os.listdir(os.path.join(path, "stages"))]
        args = [10] if name == "user" else [_touch(tmp_path / "code_ran")]
        _edit_metadata(stage, lambda meta: meta["paramMap"].update(model={"factory": ref, "args": args}))
        with pytest.raises(ModelLoadError, match=f"param 'model' names '{ref}'"):
            PipelineModel.load(path)
    spark.conf.set("spark.sparkml_scale.trusted", f"{ME}:tiny_cnn")
    try:
        assert PipelineModel.load(str(tmp_path / "pipeline-user")).stages[0].getModel()["factory"] == f"{ME}:tiny_cnn"
        with pytest.raises(ModelLoadError, match="param 'model' names 'os:system'"):
            PipelineModel.load(str(tmp_path / "pipeline-evil"))
    finally:
        spark.conf.unset("spark.sparkml_scale.trusted")
    monkeypatch.setenv("SPARKML_SCALE_TRUSTED", ME)
    PipelineModel.load(str(tmp_path / "pipeline-user"))
    assert not (tmp_path / "code_ran").exists()


def test_references_given_to_a_stage_in_this_process_are_trusted(saved, tmp_path, monkeypatch):
    root, _ = saved
    monkeypatch.delenv("SPARKML_SCALE_TRUSTED", raising=False)
    # a callable the user gave a model, saved and loaded again
    model = TorchModel.load(str(root / "model"))
    model._set(model=functools.partial(passed_cnn, 10))  # what fit copies from the estimator
    model.save(str(tmp_path / "passed"))
    assert TorchModel.load(str(tmp_path / "passed")).module() is not None
    # a reference string the user typed into an estimator
    TorchEstimator(model=f"{ME}:typed_cnn").save(str(tmp_path / "typed"))
    assert TorchEstimator.load(str(tmp_path / "typed")).getModel() == f"{ME}:typed_cnn"
