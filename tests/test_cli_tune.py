"""The sparkml-scale tune job: a small search end to end, its trial lines, its errors."""
import io
import json
import logging
import re
import sys

import pytest

from sparkml_scale import cli

PROGRESS = re.compile(r"^\[\s*(\d+\.\d) s\] (.*)$")
TRIAL_LINE = re.compile(r"^  trial (\d+) COMPLETE value=\S+ best=\S+ \(trial \d+\) \d+\.\d s "
                        r"\{regParam=\S+, elasticNetParam=\S+, numFeatures=\d+\}$")


def _args(*argv):
    return cli.build_parser().parse_args(["tune", *argv])


@pytest.fixture(scope="module")
def flights_sample(spark, tmp_path_factory):
    """2% of the embedded flights (about 6,800 rows) as Parquet."""
    from sparkml_scale.datasets import load_flights

    path = str(tmp_path_factory.mktemp("flights") / "sample.parquet")
    load_flights(spark).sample(0.02, seed=1).coalesce(2).write.parquet(path)
    return path


@pytest.mark.connect
def test_tune_on_a_flights_sample(spark, flights_sample, tmp_path):
    pytest.importorskip("optuna")
    from pyspark.ml import PipelineModel

    out = tmp_path / "run"
    shown, printed = io.StringIO(), io.StringIO()
    tuning_log = logging.getLogger(cli.TUNING_LOGGER)
    before = (tuning_log.level, tuning_log.propagate, list(tuning_log.handlers))
    report = cli.run_tune(
        _args("--input", flights_sample, "--label", cli.DEFAULT_LABEL, "--features", cli.DEFAULT_FEATURES,
              "--categorical", cli.DEFAULT_CATEGORICAL, "--num-features", "256,1024", "--trials", "3",
              "--folds", "2", "--max-iter", "10", "--output", str(out)),
        spark, printed, cli.Progress(shown))
    assert (tuning_log.level, tuning_log.propagate, list(tuning_log.handlers)) == before

    saved = json.loads((out / "report.json").read_text())
    assert saved == report
    trials = saved["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2] and {t["state"] for t in trials} == {"COMPLETE"}
    assert saved["trials_complete"] == 3 and saved["trials_failed"] == 0
    assert all(len(t["fold_values"]) == 2 and t["fit_seconds"] > 0 for t in trials)
    best = saved["best_params"]
    assert set(best) == {"regParam", "elasticNetParam", "numFeatures"}
    assert 1e-4 <= best["regParam"] <= 1.0 and 0.0 <= best["elasticNetParam"] <= 1.0
    assert best["numFeatures"] in (256, 1024)
    assert best == trials[saved["best_trial"]]["params"]
    assert saved["cv_auc"] == pytest.approx(max(t["value"] for t in trials))
    assert 0.5 < saved["holdout_auc"] <= 1.0
    assert saved["rows_train"] + saved["rows_holdout"] == saved["rows_read"] - saved["rows_dropped_missing_label"]
    assert {"search_s", "trials_s", "refit_s", "evaluate_s", "total_s"} <= set(saved["timings_s"])

    # progress: the phases, and a line per finished trial as the search runs
    lines = [m.group(2) for m in map(PROGRESS.match, shown.getvalue().splitlines()) if m]
    phases = [line.split(":")[0] for line in lines if not line.startswith(" ")]
    assert phases[:-1] == ["reading", "searching", "evaluating", "writing"] and phases[-1].startswith("done in ")
    trial_lines = [line for line in lines if TRIAL_LINE.match(line)]
    assert sorted(int(TRIAL_LINE.match(line).group(1)) for line in trial_lines) == [0, 1, 2], lines
    at = {name: next(i for i, line in enumerate(lines) if line.startswith(name + ":")) for name in phases[:-1]}
    assert all(at["searching"] < lines.index(line) < at["evaluating"] for line in trial_lines), lines
    text = printed.getvalue()
    assert text.startswith("sparkml-scale tune report\n")
    assert "3 trials (tpe, 2-fold CV, parallelism 1): 3 complete" in text and "holdout AUC" in text

    model = PipelineModel.load(str(out / "model"))
    assert [type(s).__name__ for s in model.stages] == ["FeatureHasher", "LogisticRegressionModel"]
    assert model.stages[0].getNumFeatures() == best["numFeatures"]
    assert model.stages[1].getRegParam() == pytest.approx(best["regParam"])
    scored = model.transform(spark.read.parquet(flights_sample).limit(50)).select("probability", "prediction")
    assert len(scored.collect()) == 50


@pytest.mark.connect
def test_tune_names_bad_input_like_train(spark, flights_sample, tmp_path):
    pytest.importorskip("optuna")
    common = ("--input", flights_sample, "--features", "carrier,origin", "--output", str(tmp_path / "o"))
    with pytest.raises(cli.JobError, match=r"^--label 'no_such_col > 1' is not a valid SQL expression"):
        cli.run_tune(_args("--label", "no_such_col > 1", *common), spark, io.StringIO(), cli.Progress(None))
    with pytest.raises(cli.JobError, match=r"^--features names columns not in the input: \['zzz'\]"):
        cli.run_tune(_args("--label", "arr_delay > 15", *common[:2], "--features", "carrier,zzz", *common[4:]),
                     spark, io.StringIO(), cli.Progress(None))
    with pytest.raises(cli.JobError, match="other than 0/1"):
        cli.run_tune(_args("--label", "month", *common), spark, io.StringIO(), cli.Progress(None))


@pytest.mark.parametrize("flag, value, message", [
    ("--trials", "0", "--trials must be >= 1, got 0"),
    ("--parallelism", "0", "--parallelism must be >= 1, got 0"),
    ("--folds", "0", "--folds must be >= 1 (1: one 75/25 split of the training rows), got 0"),
    ("--max-iter", "0", "--max-iter must be >= 1, got 0"),
    ("--timeout", "-5", "--timeout must be > 0 seconds, got -5.0"),
    ("--num-features", "1024,0", "--num-features must be sizes >= 1, got 1024,0"),
    ("--test-fraction", "1.5", "--test-fraction must be in (0, 1), got 1.5"),
])
def test_bad_options_exit_2_naming_the_option(tmp_path, capsys, flag, value, message):
    assert cli.main(["tune", flag, value, "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err == f"sparkml-scale: error: {message}\n"
    assert not (tmp_path / "o").exists()


def test_unknown_choices_and_existing_output(tmp_path, capsys):
    for flag, value in (("--sampler", "grid"), ("--pruner", "hyperband"), ("--num-features", "big")):
        with pytest.raises(SystemExit) as exc:
            cli.main(["tune", flag, value])
        assert exc.value.code == 2
        assert f"argument {flag}: " in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    assert cli.main(["tune", "--output", str(tmp_path / "full")]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_sampler_and_pruner_choices_are_the_searchs():
    pytest.importorskip("optuna")
    from sparkml_scale.tuning import PRUNERS, SAMPLERS

    assert (cli.TUNE_SAMPLERS, cli.TUNE_PRUNERS) == (SAMPLERS, PRUNERS)


def test_without_optuna_tune_names_the_extra(tmp_path, capsys, monkeypatch):
    """optuna missing: exit 2 with the pip extra, before Spark starts or --output is made."""
    for name in [m for m in sys.modules if m == "sparkml_scale.tuning" or m.startswith("sparkml_scale.tuning.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "optuna", None)
    started = []
    monkeypatch.setattr(cli, "_start_spark", lambda *a: started.append(a))
    assert cli.main(["tune", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sparkml-scale: error: sparkml_scale.tuning needs the 'optuna' package")
    assert "[tuning]" in err
    assert started == [] and not (tmp_path / "o").exists()
