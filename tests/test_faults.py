"""Fault injection: one task of every fit and transform fails on its first attempt.

``tests/fault_job.py`` runs in its own process (a classic ``local[2,3]`` session: a failed
task is retried up to 3 times) with :mod:`sparkml_scale.core.faults` armed, runs each
fit/transform failure-free and then with one injected task failure, and reports both.
Expected: the same result (exactly: the retried task recomputes the same partial), the
fault really fired, barrier stages retried as a whole (our allreduce solver and Horovod
launcher) or a clear error (TorchDistributor's own barrier result stage, which Spark does
not retry), and a crashed training run resumed from its checkpoints equal to a clean run.
"""
import json
import os
import subprocess
import sys
import tempfile

import pytest

from helpers import CLUSTER, CONNECT, background

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECOVERED = [
    "PCA.fit", "PCAModel.transform", "LinearRegression.fit", "LinearRegressionModel.transform",
    "LogisticRegression-mapreduce.fit (an iteration's task, and one building the cached blocks)",
    "LogisticRegression-allreduce.fit (barrier task)", "LogisticRegressionModel.transform",
    "FeatureHasher.transform",
]
TORCH_RECOVERED = ["TorchEstimator.fit (barrier stage, rank 0 after epoch 1)", "TorchModel.transform"]
NO_TRACE = ("py4j", "org.apache.spark", "\tat ", "Traceback")


def _has_torch():
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


def _run_fault_job():
    """Run tests/fault_job.py; ``(returncode, stdout + stderr tail, report or None)``."""
    out = os.path.join(tempfile.mkdtemp(prefix="sparkml_scale_faults_report_"), "report.json")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "fault_job.py"), out], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    report = json.loads(open(out).read()) if proc.returncode == 0 else None
    return proc.returncode, proc.stdout[-3000:] + proc.stderr[-3000:], report


def start_in_background(items):
    """The fault job runs in its own process: start it with the suite (conftest), not when the first
    test here needs it."""
    if not CONNECT and not CLUSTER:
        background("fault_job", _run_fault_job)


@pytest.fixture(scope="module")
def report():
    if CONNECT:
        pytest.skip("runs its own classic local[2,3] session")
    rc, tail, out = background("fault_job", _run_fault_job).result()
    assert rc == 0, tail
    return out


@pytest.mark.parametrize("name", RECOVERED + [pytest.param(n, marks=pytest.mark.skipif(
    not _has_torch(), reason="torch not installed")) for n in TORCH_RECOVERED])
def test_one_failed_task_gives_the_failure_free_result(report, name):
    r = report[name]
    assert r["fired"] == r.get("faults", 1), f"{name}: not every injected fault fired ({r})"
    assert "error" not in r, f"{name}: {r.get('error')}\n{r.get('traceback')}"
    assert r["max_abs_diff"] == 0.0, r


@pytest.mark.skipif(not _has_torch(), reason="torch not installed")
def test_torch_distributor_barrier_failure_is_a_clear_error_or_recovers(report):
    r = report["TorchEstimator.fit torch_distributor (barrier result stage)"]
    assert r["fired"] >= 1
    if "error" in r:  # TorchDistributor's barrier ResultStage is not retried by Spark
        assert "TrainingError" in r["error"] and "TorchDistributor failed" in r["error"], r["error"]
        assert not any(t in r["error"] for t in NO_TRACE), r["error"]
    else:
        assert r["max_abs_diff"] == 0.0


@pytest.mark.skipif(not _has_torch(), reason="torch not installed")
def test_crashed_training_resumes_from_its_checkpoint(report):
    r = report["TorchEstimator.fit crash then resume"]
    assert r["fired"] >= 2, r  # every attempt of the barrier stage failed
    assert "InjectedFault" in r["error"] and not any(t in r["error"] for t in NO_TRACE), r["error"]
    assert r["checkpoints"] == ["checkpoint-epoch0000.pt", "checkpoint-epoch0001.pt"]
    assert r["resumed_epochs"] == [0, 1, 2]
    assert r["max_abs_diff"] == 0.0


def test_fault_points_cost_nothing_when_off(monkeypatch, tmp_path):
    from sparkml_scale.core import faults

    monkeypatch.delenv(faults.FAULT_DIR_ENV, raising=False)
    faults.maybe_fail("mapreduce.map")  # off: no error
    monkeypatch.setenv(faults.FAULT_DIR_ENV, str(tmp_path))
    (tmp_path / "p.arm").write_text("2")
    faults.maybe_fail("p")
    with pytest.raises(faults.InjectedFault, match="p .arrival 2"):
        faults.maybe_fail("p")
    faults.maybe_fail("p")
    assert sorted(f for f in os.listdir(tmp_path) if ".fired." in f) == ["p.fired.2"]
