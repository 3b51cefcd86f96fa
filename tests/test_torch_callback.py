"""The ask/reply channel under TorchEstimator's epochCallback: a question gets its handler's answer."""
import threading
import time

from sparkml_scale.core import progress as P


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
