"""HyperparameterSearch: TPE vs a CrossValidator grid, random search by seed, Pipelines, pruning,
failures, bad input, save/load, Spark Connect."""
import json
import math
import os

import numpy as np
import pytest

pytest.importorskip("optuna")

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution  # noqa: E402
from pyspark.ml import Pipeline, PipelineModel  # noqa: E402
from pyspark.ml.evaluation import BinaryClassificationEvaluator, MulticlassClassificationEvaluator  # noqa: E402
from pyspark.ml.tuning import CrossValidator  # noqa: E402

import tuning_data  # noqa: E402
from helpers import CONNECT, vector_frame  # noqa: E402
from sparkml_scale.classification import LogisticRegression  # noqa: E402
from sparkml_scale.core.persistence import ModelLoadError  # noqa: E402
from sparkml_scale.feature import PCA, FeatureHasher  # noqa: E402
from sparkml_scale.tuning import HyperparameterSearch, HyperparameterSearchModel, SearchError  # noqa: E402

LOG_REG = FloatDistribution(1e-4, 1.0, log=True)


@pytest.fixture(scope="module")
def cancer(spark):
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    return vector_frame(spark, X, y)


def _auc():
    return BinaryClassificationEvaluator()


# ---- the TPE claim ------------------------------------------------------------------------------
@pytest.mark.skipif(CONNECT, reason="classic run only (the claim does not depend on the session kind)")
def test_tpe_within_0_005_of_the_7x5_grid_with_a_third_of_the_fits(spark):
    """TPE with 11 trials (22 fits) vs the best of CrossValidator's 7x5 grid (70 fits) on digits.

    The grid is stored (tests/make_tuning_reference.py); its best point and two others are re-fitted
    here with CrossValidator on the same fold column and must match the file."""
    with open(os.path.join(os.path.dirname(__file__), "data", tuning_data.REFERENCE)) as f:
        ref = json.load(f)
    df = tuning_data.digits_frame(spark)
    ev = MulticlassClassificationEvaluator(metricName="accuracy")
    lr = LogisticRegression(maxIter=tuning_data.MAX_ITER)
    points = ref["points"]
    assert len(points) == 35
    grid_best = max(p["avgMetric"] for p in points)

    # the stored grid still holds: its best and a middle point re-fitted by CrossValidator
    order = sorted(range(35), key=lambda i: -points[i]["avgMetric"])
    check = [order[0], order[17]]
    maps = [{lr.regParam: points[i]["regParam"], lr.elasticNetParam: points[i]["elasticNetParam"]} for i in check]
    cv = CrossValidator(estimator=lr, estimatorParamMaps=maps, evaluator=ev, numFolds=2, foldCol="fold",
                        parallelism=2).fit(df)
    np.testing.assert_allclose(cv.avgMetrics, [points[i]["avgMetric"] for i in check], atol=2e-3)

    n_trials = 35 // 3  # at most a third of the grid's fits (same folds per trial)
    search = HyperparameterSearch(estimator=lr, evaluator=ev, numTrials=n_trials, numFolds=2, foldCol="fold",
                                  searchSpace={lr.regParam: LOG_REG, lr.elasticNetParam: FloatDistribution(0.0, 1.0)})
    model = search.fit(df)
    trials = model.trials
    assert len(trials) == n_trials and (trials["state"] == "COMPLETE").all()
    print(f"TPE best {model.bestValue:.4f} ({n_trials} trials, {model.bestParams}) vs grid best {grid_best:.4f}")
    assert model.bestValue >= grid_best - 0.005, (model.bestValue, grid_best, model.bestParams)
    assert model.bestValue == pytest.approx(trials["value"].max())
    # the search's value of its best params is CrossValidator's on the same folds
    best_map = model.bestParamMap
    cv_best = CrossValidator(estimator=lr, estimatorParamMaps=[best_map], evaluator=ev, numFolds=2,
                             foldCol="fold").fit(df)
    assert cv_best.avgMetrics[0] == pytest.approx(model.bestValue, abs=1e-9)
    # bestModel is refitted on all rows with the best params
    assert model.bestModel.getRegParam() == pytest.approx(model.bestParams["regParam"])
    assert model.bestModel.getElasticNetParam() == pytest.approx(model.bestParams["elasticNetParam"])
    assert model.avgMetrics == pytest.approx(list(trials["value"]))


@pytest.mark.connect
def test_random_folds_are_crossvalidators(spark, cancer):
    """Same seed, same data: our random folds are CrossValidator's (k folds) and
    TrainValidationSplit's (numFolds=1), so the trial's value equals theirs."""
    from pyspark.ml.tuning import TrainValidationSplit

    lr = LogisticRegression(maxIter=30)
    space = {lr.regParam: CategoricalDistribution([0.01])}
    ours = HyperparameterSearch(estimator=lr, evaluator=_auc(), searchSpace=space, numTrials=1, numFolds=2,
                                seed=11).fit(cancer)
    cv = CrossValidator(estimator=lr, estimatorParamMaps=[{lr.regParam: 0.01}], evaluator=_auc(), numFolds=2,
                        seed=11).fit(cancer)
    assert ours.bestValue == pytest.approx(cv.avgMetrics[0], abs=1e-12)
    ours1 = HyperparameterSearch(estimator=lr, evaluator=_auc(), searchSpace=space, numTrials=1, numFolds=1,
                                 trainRatio=0.7, seed=5).fit(cancer)
    tvs = TrainValidationSplit(estimator=lr, estimatorParamMaps=[{lr.regParam: 0.01}], evaluator=_auc(),
                               trainRatio=0.7, seed=5).fit(cancer)
    assert ours1.bestValue == pytest.approx(tvs.validationMetrics[0], abs=1e-12)
    assert ours1.bestValue != pytest.approx(ours.bestValue, abs=1e-9)


def test_random_search_is_reproducible_by_seed(spark, cancer):
    lr = LogisticRegression(maxIter=20)
    space = {lr.regParam: LOG_REG, lr.elasticNetParam: FloatDistribution(0.0, 1.0)}

    def params(seed, parallelism):
        s = HyperparameterSearch(estimator=lr, evaluator=_auc(), searchSpace=space, numTrials=2, numFolds=1,
                                 sampler="random", seed=seed, parallelism=parallelism)
        t = s.fit(cancer).trials
        return [tuple(sorted(p.items())) for p in t["params"]], list(t["value"])

    p1, v1 = params(7, 2)
    p2, v2 = params(7, 1)
    p3, _ = params(8, 1)
    assert p1 == p2 and v1 == pytest.approx(v2, abs=1e-12)
    assert p1 != p3
    for p in p1:
        d = dict(p)
        assert 1e-4 <= d["regParam"] <= 1.0 and 0.0 <= d["elasticNetParam"] <= 1.0


def test_pipeline_inner_params_are_searched(spark):
    rows = [(str(i % 7), str(i % 3), float(i % 7 in (1, 2, 5) or i % 3 == 0)) for i in range(240)]
    df = spark.createDataFrame(rows, "a string, b string, label double").cache()
    hasher = FeatureHasher(inputCols=["a", "b"], outputCol="features")
    lr = LogisticRegression(maxIter=20)
    pipe = Pipeline(stages=[hasher, lr])
    search = HyperparameterSearch(estimator=pipe, evaluator=_auc(), numTrials=2, numFolds=1, sampler="random",
                                  searchSpace={"numFeatures": CategoricalDistribution([16, 64]),  # by name
                                               lr.regParam: LOG_REG})
    model = search.fit(df)
    assert isinstance(model.bestModel, PipelineModel)
    best = model.bestParams
    assert set(best) == {"numFeatures", "regParam"}
    stages = model.bestModel.stages
    assert stages[0].getNumFeatures() == best["numFeatures"]
    assert stages[1].getRegParam() == pytest.approx(best["regParam"])
    assert stages[1].numFeatures == best["numFeatures"]  # the model was fitted on that many columns
    out = model.transform(df)
    assert "prediction" in out.columns and out.count() == 240


# ---- failures and bad input ---------------------------------------------------------------------
def test_failed_trials_are_recorded_and_the_search_goes_on(spark, cancer):
    lr = LogisticRegression(maxIter=10)
    search = HyperparameterSearch(estimator=lr, evaluator=_auc(), numTrials=4, numFolds=1, sampler="random",
                                  seed=1, searchSpace={lr.featuresCol: CategoricalDistribution(["features", "nope"]),
                                                       lr.regParam: LOG_REG})
    model = search.fit(cancer)
    t = model.trials
    failed = t[t["state"] == "FAIL"]
    assert len(failed) >= 1 and (t["state"] == "COMPLETE").sum() >= 1
    assert all("nope" in e for e in failed["error"])
    assert all(p["featuresCol"] == "nope" for p in failed["params"])
    assert model.bestParams["featuresCol"] == "features"
    assert math.isnan(model.avgMetrics[int(failed["number"].iloc[0])])

    search.setSearchSpace({lr.featuresCol: CategoricalDistribution(["nope"])}).setNumTrials(2)
    with pytest.raises(SearchError, match=r"all 2 trials failed.*'nope'"):
        search.fit(cancer)


@pytest.mark.connect
def test_bad_input_is_named_before_any_trial(spark, cancer):
    lr = LogisticRegression()
    other = LogisticRegression()
    ev = _auc()

    def fails(exc, match, **kw):
        args = dict(estimator=lr, evaluator=ev, searchSpace={lr.regParam: LOG_REG})
        args.update(kw)
        with pytest.raises(exc, match=match):
            HyperparameterSearch(**args).fit(cancer)

    fails(ValueError, r"'searchSpace' names LogisticRegression_\w+\.regParam, a Param of another estimator",
          searchSpace={other.regParam: LOG_REG})
    fails(ValueError, r"'searchSpace' is empty", searchSpace={})
    fails(TypeError, r"maxIter takes integers, so it needs an IntDistribution",
          searchSpace={lr.maxIter: FloatDistribution(5, 50)})
    fails(TypeError, r"solver takes string values, so it needs a CategoricalDistribution",
          searchSpace={lr.solver: IntDistribution(1, 3)})
    fails(ValueError, r"elasticNetParam must be in \[0.0, 1.0\], but its distribution can give 2.0",
          searchSpace={lr.elasticNetParam: FloatDistribution(0.0, 2.0)})
    fails(TypeError, r"must be an optuna.distributions object", searchSpace={lr.regParam: [0.1, 1.0]})
    fails(ValueError, r"names 'noSuchParam', which no stage", searchSpace={"noSuchParam": LOG_REG})
    fails(ValueError, r"param 'numTrials' must be >= 1, got 0", numTrials=0)
    fails(ValueError, r"param 'sampler' must be one of 'tpe', 'random'", sampler="grid")
    fails(ValueError, r"param 'pruner' must be one of", pruner="hyperband")
    fails(ValueError, r"param 'trainRatio' must be in \(0, 1\)", numFolds=1, trainRatio=1.0)
    fails(ValueError, r"param 'evaluator' is not set", evaluator=None)
    fails(ValueError, r"param 'parallelism' is 2 but .* solver='allreduce'", parallelism=2,
          estimator=LogisticRegression(solver="allreduce"),
          searchSpace={"regParam": LOG_REG})
    from pyspark.ml.classification import LogisticRegression as MLlibLR

    mllib = MLlibLR()
    fails(ValueError, r"param 'pruner' is set but LogisticRegression reports no intermediate values",
          estimator=mllib, searchSpace={mllib.regParam: LOG_REG}, pruner="median")
    hasher, lr2 = FeatureHasher(inputCols=["a"]), LogisticRegression()
    pca = PCA(k=1, inputCol="features")
    fails(ValueError, r"names 'outputCol', which several stages have",
          estimator=Pipeline(stages=[hasher, pca, lr2]), searchSpace={"outputCol": CategoricalDistribution(["x"])})
    try:
        from sparkml_scale.torch import TorchEstimator
    except ImportError:
        return
    est = TorchEstimator(model="sparkml_scale.torch.models:mlp", numProc=1)
    fails(ValueError, r"param 'parallelism' is 2 but each trial's TorchEstimator trains in 2 barrier task\(s\) "
          r"\(numProc\) and the cluster has 2 task slot\(s\)", estimator=est, parallelism=2,
          searchSpace={est.numProc: CategoricalDistribution([1, 2])})


# ---- pruning ------------------------------------------------------------------------------------
def test_warm_start_rungs_prune_logistic_regression(spark, cancer):
    """maxIter rungs (maxIter/9, /3, maxIter) warm-started by setInitialModel: bad trials stop at a rung."""
    lr = LogisticRegression(maxIter=27)
    space = {lr.regParam: FloatDistribution(1e-4, 10.0, log=True)}
    search = HyperparameterSearch(estimator=lr, evaluator=MulticlassClassificationEvaluator(metricName="logLoss"),
                                  searchSpace=space, numTrials=5, numFolds=1, sampler="random", seed=3,
                                  pruner="median")
    model = search.fit(cancer)
    t = model.trials
    assert (t["state"] == "PRUNED").sum() >= 1, t
    done = t[t["state"] == "COMPLETE"]
    assert ((done["steps"] >= 3) & (done["steps"] <= 27)).all()
    # the warm-started rungs end where one fit of maxIter iterations ends
    best = model.bestParams["regParam"]
    single = LogisticRegression(maxIter=27, regParam=best)
    ev = MulticlassClassificationEvaluator(metricName="logLoss")
    unpruned = HyperparameterSearch(estimator=single, evaluator=ev, numTrials=1, numFolds=1, seed=3,
                                    searchSpace={single.regParam: CategoricalDistribution([best])}).fit(cancer)
    assert model.bestValue == pytest.approx(unpruned.bestValue, rel=1e-3)


# ---- persistence --------------------------------------------------------------------------------
@pytest.mark.connect
def test_save_load_without_pickle(spark, cancer, tmp_path):
    lr = LogisticRegression(maxIter=20)
    search = HyperparameterSearch(estimator=lr, evaluator=_auc(), numTrials=2, numFolds=1, sampler="random",
                                  searchSpace={lr.regParam: LOG_REG, lr.elasticNetParam: FloatDistribution(0, 1)})
    path = str(tmp_path / "search")
    search.save(path)
    loaded_search = HyperparameterSearch.load(path)
    assert loaded_search.getNumTrials() == 2 and loaded_search.getSampler() == "random"
    space = loaded_search.getSearchSpace()
    est = loaded_search.getEstimator()
    assert space == {est.regParam: LOG_REG, est.elasticNetParam: FloatDistribution(0, 1)}

    model = search.fit(cancer)
    mpath = str(tmp_path / "model")
    model.save(mpath)
    loaded = HyperparameterSearchModel.load(mpath)
    assert loaded.bestParams == model.bestParams
    assert loaded.bestValue == model.bestValue
    assert list(loaded.trials["number"]) == [0, 1]
    assert loaded.trials["params"].tolist() == model.trials["params"].tolist()
    a = model.transform(cancer).select("probability").collect()
    b = loaded.transform(cancer).select("probability").collect()
    assert np.allclose([r[0][1] for r in a], [r[0][1] for r in b], atol=1e-12)
    files = [os.path.join(d, f) for d, _, fs in os.walk(mpath) for f in fs]
    assert not any(f.endswith((".pkl", ".pickle")) for f in files)

    # a saved model naming a class outside Spark and sparkml_scale is refused before any import
    meta = os.path.join(mpath, "bestModel", "metadata")
    part = next(os.path.join(meta, f) for f in os.listdir(meta) if f.startswith("part-"))
    with open(part) as f:
        text = f.read()
    with open(part, "w") as f:
        f.write(text.replace('"class":"sparkml_scale.classification.logistic_regression.LogisticRegressionModel"',
                             '"class":"evil_module.Payload"').replace(
            '"class": "sparkml_scale.classification.logistic_regression.LogisticRegressionModel"',
            '"class": "evil_module.Payload"'))
    for f in os.listdir(meta):  # Hadoop's checksum of the edited file
        if f.endswith(".crc"):
            os.remove(os.path.join(meta, f))
    with pytest.raises(ModelLoadError, match=r"class 'evil_module.Payload', which is not trusted"):
        HyperparameterSearchModel.load(mpath)


# ---- torch: pruning through epochCallback -------------------------------------------------------
def test_torch_search_prunes_epochs_and_keeps_the_best(spark):
    """Random search over learningRate of an MLP on digits, median pruner on each epoch's validation
    loss: at least 30% of the epochs are not trained, and the best value is within 2% of what the
    same trials reach unpruned (the pruned ones re-fitted for all epochs on the same fold)."""
    pytest.importorskip("torch")
    if CONNECT:
        pytest.skip("the torch fits are tested on the classic session (test_torch_estimator)")
    import functools

    from sklearn.datasets import load_digits

    from sparkml_scale.torch import TorchEstimator
    from sparkml_scale.torch.models import mlp
    from sparkml_scale.tuning.trials import VALIDATION_MARK, folds_of

    X, y = load_digits(return_X_y=True)
    df = vector_frame(spark, X / 16.0, y)
    epochs, n_trials = 6, 8
    est = TorchEstimator(model=functools.partial(mlp, 64, [32], 10), epochs=epochs, batchSize=64, numProc=1)
    ev = MulticlassClassificationEvaluator(metricName="accuracy")
    search = HyperparameterSearch(estimator=est, evaluator=ev, numTrials=n_trials, numFolds=1, sampler="random",
                                  seed=4, pruner="median", parallelism=2,
                                  searchSpace={est.learningRate: FloatDistribution(1e-4, 0.3, log=True)})
    model = search.fit(df)
    t = model.trials
    assert set(t["state"]) <= {"COMPLETE", "PRUNED"}
    pruned = t[t["state"] == "PRUNED"]
    trained = int(t["steps"].sum())
    assert (t.loc[t["state"] == "COMPLETE", "steps"] == epochs).all()
    assert trained <= 0.7 * epochs * n_trials, t[["number", "state", "steps", "value", "params"]].to_string()

    # the pruned trials, unpruned: the same fold, validation rows and seed as in the search
    _, (fold,) = folds_of(df, 1, search.getTrainRatio(), search.getSeed(), "", search.uid + "_rand")
    data = fold.data.withColumn(VALIDATION_MARK, fold.mark)
    full = []
    for p in pruned["params"]:
        m = est.copy({est.learningRate: p["learningRate"], est.validationCol: VALIDATION_MARK}).fit(data)
        assert len(m.history) == epochs
        full.append(ev.evaluate(m.transform(fold.validation)))
    unpruned_best = max(list(t.loc[t["state"] == "COMPLETE", "value"]) + full)
    print(f"torch search: {trained} of {epochs * n_trials} epochs trained, best {model.bestValue:.4f} vs "
          f"unpruned {unpruned_best:.4f}")
    assert model.bestValue >= 0.98 * unpruned_best, (model.bestValue, unpruned_best)
    assert model.bestModel.history and len(model.bestModel.history) == epochs


def test_trial_lines_timeout_and_mlflow_nested_runs(spark, cancer, tmp_path, caplog):
    mlflow = pytest.importorskip("mlflow")
    import logging

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("search")
    lr = LogisticRegression(maxIter=10)
    search = HyperparameterSearch(estimator=lr, evaluator=_auc(), numTrials=2, numFolds=1, sampler="random",
                                  searchSpace={lr.regParam: LOG_REG})
    other = mlflow.create_experiment("other")  # the parent's experiment is not the active one: trials follow the parent
    with caplog.at_level(logging.INFO, logger="sparkml_scale.tuning"), mlflow.start_run(experiment_id=other) as parent:
        model = search.fit(cancer)
    lines = [r.getMessage() for r in caplog.records if r.name == "sparkml_scale.tuning"]
    assert [ln.split()[:3] for ln in lines] == [["trial", "0", "COMPLETE"], ["trial", "1", "COMPLETE"]]
    assert all("regParam=" in ln and "best=" in ln for ln in lines)
    runs = mlflow.search_runs(experiment_ids=[other],
                              filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(runs) == 2
    logged = sorted(float(v) for v in runs["params.regParam"])
    assert logged == pytest.approx(sorted(p["regParam"] for p in model.trials["params"]), rel=1e-6)
    assert set(runs["tags.trial.state"]) == {"COMPLETE"}
    assert sorted(runs["metrics.areaUnderROC"]) == pytest.approx(sorted(model.trials["value"]))
    parent_run = mlflow.get_run(parent.info.run_id)
    assert float(parent_run.data.params["best.regParam"]) == pytest.approx(model.bestParams["regParam"], rel=1e-6)
    mlflow.set_tracking_uri(None)

    # timeout: no trial starts after it (the first always does)
    timed = search.copy().setNumTrials(5).setTimeout(1e-3).fit(cancer)
    assert len(timed.trials) == 1
