"""TorchEstimator's epochCallback: called on the driver after each epoch, can stop training on every
rank, never saved, never fails the fit; and the ask/reply channel under it."""
import functools
import logging
import re
import threading
import time

import pytest

torch = pytest.importorskip("torch")

from pyspark.ml.linalg import Vectors  # noqa: E402

from helpers import CONNECT  # noqa: E402
from sparkml_scale.core import progress as P  # noqa: E402
from sparkml_scale.torch import TorchEstimator, TorchModel  # noqa: E402
from sparkml_scale.torch.launch import horovod_available  # noqa: E402
from sparkml_scale.torch.models import mlp  # noqa: E402

classic = pytest.mark.skipif(CONNECT, reason="classic session (TorchDistributor in local mode)")

MLP = functools.partial(mlp, 64, [16], 10)
KEYS = {"epoch", "loss", "samples", "seconds", "samples_per_s"}


@pytest.fixture(scope="module")
def digits(spark):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    rows = [(Vectors.dense(x / 16.0), float(t)) for x, t in zip(X[:400], y[:400])]
    return spark.createDataFrame(rows, ["features", "label"]).cache()


def _est(**kw):
    # one process: Horovod starts in about half the time of torchrun (one Python process, not two)
    base = dict(model=MLP, backend="horovod" if horovod_available() else "torch_distributor", numProc=1, epochs=6,
                batchSize=64, learningRate=3e-3)
    return TorchEstimator(**dict(base, **kw))


class Recorder:
    """A callback that records what it saw and stops at ``stop_at`` (raises at ``raise_at``)."""

    def __init__(self, stop_at=None, raise_at=None):
        self.records, self.threads = [], set()
        self.stop_at, self.raise_at = stop_at, raise_at

    def __call__(self, record):
        self.records.append(dict(record))
        self.threads.add(threading.get_ident())
        if record["epoch"] == self.raise_at:
            raise RuntimeError("callback bug")
        return record["epoch"] == self.stop_at

    @property
    def epochs(self):
        return [r["epoch"] for r in self.records]


def test_ask_gets_the_handlers_answer_and_reports_get_none():
    got = []

    def handler(msg):
        got.append(dict(msg))
        if msg.get("boom"):
            raise ValueError("handler bug")
        return {"stop": msg.get("loss", 0) < 0.3}

    ch = P.ProgressChannel("127.0.0.1", handler)
    try:
        assert P.ask(ch.address, 5.0, loss=0.5, record={"epoch": 0.0}) == {"stop": False}
        assert P.ask(ch.address, 5.0, loss=0.25) == {"stop": True}
        assert P.ask(ch.address, 5.0, boom=True) is None  # the handler raised: null answer, not a hang
        host, port, _ = ch.address.rsplit(":", 2)
        assert P.ask(f"{host}:{port}:wrong-token", 2.0, loss=0.1) is None  # dropped, never handled
        P.report(ch.address, loss=0.75)  # no question, no answer written back
        deadline = time.time() + 5
        while len(got) < 4 and time.time() < deadline:
            time.sleep(0.02)
        assert got == [{"loss": 0.5, "record": {"epoch": 0.0}}, {"loss": 0.25}, {"boom": True}, {"loss": 0.75}]
    finally:
        ch.close()
    assert P.ask(None, 1.0, loss=1.0) is None
    t0 = time.time()
    assert P.ask(ch.address, 1.0, loss=1.0) is None  # closed: refused at once
    assert time.time() - t0 < 1.0


def test_ask_times_out_on_a_slow_handler():
    release = threading.Event()
    ch = P.ProgressChannel("127.0.0.1", lambda msg: release.wait(10) and {"stop": True})
    try:
        t0 = time.time()
        assert P.ask(ch.address, 0.5, loss=1.0) is None
        assert 0.4 < time.time() - t0 < 3.0
    finally:
        release.set()
        ch.close()


@classic
def test_stop_after_epoch_1_with_bars_off(digits, tmp_path):
    """(a), (e), (d): bars off; stops after 2 of 6 epochs; the stopped model saves that fact."""
    seen = Recorder(stop_at=1.0)
    with P.progress_bars(False):
        model = _est(validationFraction=0.2, epochCallback=seen).fit(digits)
    assert seen.epochs == [0.0, 1.0]
    assert all(KEYS | {"val_loss", "val_accuracy"} <= set(r) for r in seen.records), seen.records
    assert seen.threads != {threading.get_ident()}  # called while training ran, not after the fit
    assert [h["epoch"] for h in model.history] == [0.0, 1.0] and model.history == seen.records
    assert model.stoppedByCallback and not model.stoppedEarly
    assert not model.hasParam("epochCallback")  # the fitted model does not carry the hook

    model.save(str(tmp_path / "model"))
    back = TorchModel.load(str(tmp_path / "model"))
    assert back.stoppedByCallback and back.history == model.history


@classic
def test_a_callback_that_never_stops_or_raises_sees_every_epoch(digits, caplog):
    """(b), (f), and the param map the search passes: an exception is logged and means "continue"."""
    est = _est(epochs=3, validationFraction=0.0)
    seen = Recorder(raise_at=1.0)
    with caplog.at_level(logging.ERROR, logger="sparkml_scale.torch.estimator"):
        model = est.fit(digits, {est.epochCallback: seen})
    assert seen.epochs == [0.0, 1.0, 2.0] and all(KEYS <= set(r) and "val_loss" not in r for r in seen.records)
    assert [h["epoch"] for h in model.history] == [0.0, 1.0, 2.0] and not model.stoppedByCallback
    assert est.getEpochCallback() is None  # the param map did not change the estimator
    failed = [r for r in caplog.records if "epochCallback" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info and "callback bug" in str(failed[0].exc_info[1])


@classic
def test_stop_on_two_ranks_with_bars_on(spark, digits, monkeypatch, capsys):
    """(c): the ranks agree on rank 0's answer; the bar and the callback share the channel."""
    monkeypatch.setattr(P, "DELAY_S", 0.0)
    seen = Recorder(stop_at=0.0)
    watchdog = threading.Timer(150, spark.sparkContext.cancelAllJobs)  # a rank left waiting: fail, not hang
    watchdog.start()
    try:
        with P.progress_bars(True):
            model = _est(backend="torch_distributor", numProc=2, epochs=5, epochCallback=seen).fit(digits)
    finally:
        watchdog.cancel()
    # the bar advanced through the same channel before the answer (the fit ended at 1 of 5 epochs)
    err = capsys.readouterr().err
    assert re.search(r"TorchEstimator epochs:\s+100%\|[^|]*\|\s*1/1 ", err), err[-600:]
    assert seen.epochs == [0.0] and [h["epoch"] for h in model.history] == [0.0]
    assert model.stoppedByCallback and model.history[0]["samples"] >= 300


@classic
def test_unreachable_driver_calls_the_callback_after_the_fit(digits, monkeypatch, caplog):
    """A driver the executors cannot reach: one warning, then a call per epoch after the fit
    (answers ignored: training is not stopped)."""
    from sparkml_scale.core import progress

    monkeypatch.setattr(progress, "_reachable_host", lambda spark: None)
    seen = Recorder(stop_at=0.0)
    with caplog.at_level(logging.WARNING, logger="sparkml_scale.torch.estimator"):
        model = _est(epochs=2, epochCallback=seen).fit(digits)
    assert [h["epoch"] for h in model.history] == [0.0, 1.0] and not model.stoppedByCallback
    assert seen.epochs == [0.0, 1.0] and seen.threads == {threading.get_ident()}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "cannot stop" in r.getMessage()]
    assert len(warnings) == 1


@classic
def test_the_callback_is_not_saved_and_copies_keep_it(tmp_path):
    """(d): save skips the hook, load works and leaves it unset; copy() keeps it."""
    fn = Recorder()
    est = TorchEstimator(model=MLP, epochs=3, epochCallback=fn)
    assert est.getEpochCallback() is fn and est.copy().getEpochCallback() is fn
    assert TorchEstimator(model=MLP).setEpochCallback(fn).getEpochCallback() is fn
    assert TorchEstimator(model=MLP).getEpochCallback() is None
    with pytest.raises(TypeError, match="epochCallback"):
        TorchEstimator(model=MLP, epochCallback="stop please")
    est.save(str(tmp_path / "est"))
    with open(next((tmp_path / "est" / "metadata").glob("part-*"))) as f:
        assert "epochCallback" not in f.read()
    back = TorchEstimator.load(str(tmp_path / "est"))
    assert back.getEpochs() == 3 and back.getEpochCallback() is None and not back.isSet("epochCallback")
