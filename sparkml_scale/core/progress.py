"""Progress of long fits: a tqdm bar on the driver and named Spark jobs.

A fit that runs more than :data:`DELAY_S` seconds shows a progress bar (``tqdm``: it renders in
Jupyter and in a terminal) counting what the solver counts: L-BFGS iterations, SGD or torch
epochs, PCA passes, with the last objective/loss.  The bar lives on the driver, also when the
work runs inside barrier tasks (the allreduce solvers, distributed torch): rank 0 reports each
iteration or epoch through a small TCP channel to the driver (:class:`ProgressChannel`).  The same
channel answers questions: :func:`ask` sends values and waits for the driver's reply (e.g.
``TorchEstimator``'s ``epochCallback``, which may stop training after an epoch).

Every Spark job a fit runs is named after the stage and the step: the Spark UI shows
``LogisticRegression: L-BFGS iteration 12`` instead of ``mapInArrow at ...``.  On a classic
session this is the job description (``SparkContext.setJobDescription``); on Spark Connect,
where the server names the jobs, it is a job tag (``SparkSession.addTag``), e.g.
``sparkml_scale LogisticRegression L-BFGS iteration 12`` (commas are not allowed in tags).
Classic sessions get no tags: there ``addTag`` breaks MLlib's training summaries for the rest of
the session (see ``FitProgress._set_tag``).

Turning the bars off: ``SPARKML_SCALE_PROGRESS=0`` in the environment, or
:func:`set_progress` ``(False)``; ``=1`` / ``(True)`` forces them on.  By default they show in a
Jupyter/IPython kernel and when stderr is a terminal, not in the logs of batch jobs (the
``sparkml-scale`` job prints its own progress lines).  Job names are always set.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import sys
import threading
from typing import Any, Callable, Dict, Optional

from .session import is_connect

__all__ = ["set_progress", "progress_bars", "progress_enabled", "FitProgress", "ProgressChannel", "report", "ask",
           "ENV", "DELAY_S"]

#: Environment variable: "0"/"false"/"off"/"no" turns progress bars off, "1"/"true"/"on"/"yes" on.
ENV = "SPARKML_SCALE_PROGRESS"
#: Seconds a fit runs before its bar appears (short fits print nothing).
DELAY_S = 2.0

_override: Optional[bool] = None


def set_progress(enabled: Optional[bool]) -> None:
    """Show (``True``) or hide (``False``) progress bars of fits in this process; ``None`` goes back
    to the default (``$SPARKML_SCALE_PROGRESS``, else on in Jupyter and on a terminal)."""
    global _override
    if enabled is not None and not isinstance(enabled, bool):
        raise TypeError(f"set_progress takes True, False or None, got {enabled!r}")
    _override = enabled


@contextlib.contextmanager
def progress_bars(enabled: Optional[bool]):
    """:func:`set_progress` ``(enabled)`` for the ``with`` block, then the setting before it."""
    saved = _override
    set_progress(enabled)
    try:
        yield
    finally:
        set_progress(saved)


def progress_enabled() -> bool:
    """Whether fits started now show progress bars (see the module docstring)."""
    if _override is not None:
        return _override
    value = os.environ.get(ENV, "").strip().lower()
    if value in ("0", "false", "off", "no"):
        return False
    if value in ("1", "true", "on", "yes"):
        return True
    if value:
        raise ValueError(f"${ENV} must be one of 0/1/true/false/on/off/yes/no, got {os.environ[ENV]!r}")
    return _in_kernel() or _isatty(sys.stderr)


def _in_kernel() -> bool:
    ip = sys.modules.get("IPython")
    try:
        shell = ip.get_ipython() if ip is not None else None
    except Exception:  # noqa: BLE001
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:  # noqa: BLE001 - closed or replaced streams
        return False


def _tqdm():
    # tqdm.auto picks the Jupyter widget only with ipywidgets installed (else it warns); the
    # text bar renders in Jupyter's output area as well.
    try:
        import ipywidgets  # noqa: F401

        from tqdm.auto import tqdm
    except ImportError:
        from tqdm import tqdm
    return tqdm


def _tag_of(text: str) -> str:
    return "sparkml_scale " + text.replace(",", ";").replace(":", "")


class FitProgress:
    """One fit's progress: Spark job names per step and, optionally, a bar.

    Use as a context manager around the fit::

        with FitProgress(spark, "LogisticRegression") as p:
            p.step("caching blocks")                 # the next Spark jobs are named after it
            p.bar("L-BFGS", total=100, unit="it")    # a bar (shown after DELAY_S seconds)
            p.advance(objective=0.53)                # one more iteration, its objective

    All methods are no-ops (apart from the job names) when progress is off, and never raise:
    progress must not fail a fit.
    """

    def __init__(self, spark, stage: str, enabled: Optional[bool] = None):
        self.spark = spark
        self.stage = stage
        self.enabled = progress_enabled() if enabled is None else enabled
        self._bar = None
        self._tag: Optional[str] = None
        self._saved_description: Any = None
        self._classic = spark is not None and not is_connect(spark)
        self._channel: Optional[ProgressChannel] = None
        self._lock = threading.Lock()
        self.steps: list = []  # the job names set, in order (read by tests)

    # ---- context
    def __enter__(self) -> "FitProgress":
        if self._classic:
            try:
                self._saved_description = self.spark.sparkContext.getLocalProperty("spark.job.description")
            except Exception:  # noqa: BLE001
                self._classic = False
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(done=exc_type is None)

    def close(self, done: bool = True) -> None:
        """End the fit's progress; ``done``: it finished (a loop that converged before its
        ``total`` ends its bar at 100%), else the bar stays where the failure left it."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        self._close_bar(done)
        self._set_tag(None)
        if self._classic:
            try:
                self.spark.sparkContext.setLocalProperty("spark.job.description", self._saved_description)
            except Exception:  # noqa: BLE001
                pass

    # ---- job names
    def step(self, text: str) -> None:
        """Name the Spark jobs that follow ``"<stage>: <text>"``."""
        name = f"{self.stage}: {text}"
        self.steps.append(name)
        if self._classic:
            try:
                self.spark.sparkContext.setJobDescription(name)
            except Exception:  # noqa: BLE001
                pass
        self._set_tag(_tag_of(name))

    def _set_tag(self, tag: Optional[str]) -> None:
        # Connect only.  On a classic session (Spark 4.3) SparkSession.addTag initialises the
        # session's thread-local `threadUuid`, after which MLlib's training summaries, which hold
        # the session, fail to serialize ("Task not serializable: SparkSession$$anon$1"): every
        # later `mllib_model.summary.accuracy` in that session would break.
        if self.spark is None or self._classic:
            return
        try:
            if self._tag is not None:
                self.spark.removeTag(self._tag)
            self._tag = tag
            if tag is not None:
                self.spark.addTag(tag)
        except Exception:  # noqa: BLE001 - sessions without tags (older pyspark)
            self._tag = None

    # ---- the bar
    def bar(self, label: str, total: Optional[int] = None, unit: str = "it", initial: int = 0) -> None:
        """Start a bar ``"<stage> <label>"`` (closing the previous one) of ``total`` units."""
        self._close_bar()
        if not self.enabled:
            return
        try:
            self._bar = _tqdm()(total=total, initial=initial, unit=unit, desc=f"{self.stage} {label}",
                                delay=DELAY_S, mininterval=0.5, file=sys.stderr, leave=True,
                                dynamic_ncols=True)
        except Exception:  # noqa: BLE001
            self._bar = None

    def advance(self, n: int = 1, **values: float) -> None:
        """``n`` more units done; ``values`` (e.g. ``objective=``) shown after the bar."""
        with self._lock:
            if self._bar is None:
                return
            try:
                if values:
                    self._bar.set_postfix({k: (f"{v:.6g}" if isinstance(v, float) else v)
                                           for k, v in values.items()}, refresh=False)
                self._bar.update(n)
            except Exception:  # noqa: BLE001
                pass

    def _close_bar(self, done: bool = True) -> None:
        with self._lock:
            if self._bar is not None:
                try:
                    if done and self._bar.total and self._bar.n < self._bar.total:
                        self._bar.total = self._bar.n  # converged early: complete, not "interrupted"
                    self._bar.close()
                except Exception:  # noqa: BLE001
                    pass
                self._bar = None

    # ---- reports from barrier tasks
    def channel(self, on_message: Optional[Callable[[Dict[str, Any]], Any]] = None,
                always: bool = False) -> Optional[str]:
        """Address (``"host:port:token"``) that :func:`report` and :func:`ask` on an executor send to;
        each message (a dict) goes to ``on_message`` (default: :meth:`advance` with the message's
        values), whose return value answers an :func:`ask`.  ``None`` when progress is off (unless
        ``always``: the channel serves more than the bar) or the executors cannot reach this process
        (a Spark Connect client on another machine than the server)."""
        if not (self.enabled or always):
            return None
        host = _reachable_host(self.spark)
        if host is None:
            return None
        handler = on_message or (lambda msg: self.advance(int(msg.pop("n", 1)), **msg))
        try:
            self._channel = ProgressChannel(host, handler)
        except OSError:
            return None
        return self._channel.address


def _reachable_host(spark) -> Optional[str]:
    """The address executors reach this Python process at: the driver's host on a classic
    session; on Spark Connect only a server on this machine (``local``/``localhost``)."""
    if spark is None:
        return None
    if not is_connect(spark):
        try:
            master = spark.conf.get("spark.master", "") or ""
            if master.startswith("local"):
                return "127.0.0.1"
            host = spark.conf.get("spark.driver.host", None)
            return socket.gethostbyname(host) if host else None
        except Exception:  # noqa: BLE001
            return None
    try:
        server = spark.client.host
    except Exception:  # noqa: BLE001
        return None
    return "127.0.0.1" if server in ("localhost", "127.0.0.1", "::1", "[::1]") else None


class ProgressChannel:
    """A TCP listener on the driver taking JSON lines ``{"token": ..., ...}`` from executors; each
    message with the right token goes to ``handler`` on a daemon thread (one per connection, so
    the messages of one connection are handled in order).  A message flagged ``"ask": true`` (sent
    by :func:`ask`) is a question: the handler's return value goes back on the same connection as
    one JSON line (``null`` when the handler raised).  Bound to ``host`` on an ephemeral port;
    closed by :meth:`close`."""

    def __init__(self, host: str, handler: Callable[[Dict[str, Any]], Any]):
        self.token = secrets.token_hex(8)
        self.handler = handler
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((host, 0))
        self._sock.listen(16)
        self._sock.settimeout(0.5)
        self.address = f"{host}:{self._sock.getsockname()[1]}:{self.token}"
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="sparkml_scale-progress", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with conn, conn.makefile("r", encoding="utf-8") as lines:
            for line in lines:
                try:
                    msg = json.loads(line)
                    if not isinstance(msg, dict) or msg.pop("token", None) != self.token:
                        return  # not ours: drop the connection
                except Exception:  # noqa: BLE001 - a bad report never fails the fit
                    continue
                question = bool(msg.pop("ask", False))
                try:
                    answer = self.handler(msg)
                except Exception:  # noqa: BLE001
                    answer = None
                if question:
                    try:
                        conn.sendall((json.dumps(answer) + "\n").encode("utf-8"))
                    except Exception:  # noqa: BLE001 - the asker gave up (timeout) or the answer is not JSON
                        return

    def close(self) -> None:
        self._closed.set()
        try:
            self._sock.close()
        except OSError:
            pass
        self._thread.join(timeout=2)


_senders: Dict[str, Optional[socket.socket]] = {}


def report(address: Optional[str], **values: Any) -> None:
    """Send ``values`` (JSON-serialisable) to the driver's :class:`ProgressChannel` at
    ``address`` (from :meth:`FitProgress.channel`).  Best effort: never raises, and gives up on an
    address after one failed connection (1 s timeout)."""
    if not address:
        return
    sock = _senders.get(address, False)
    if sock is None:
        return
    try:
        host, port, token = address.rsplit(":", 2)
        if sock is False:
            sock = socket.create_connection((host, int(port)), timeout=1.0)
            _senders[address] = sock
        sock.sendall((json.dumps(dict(values, token=token)) + "\n").encode("utf-8"))
    except Exception:  # noqa: BLE001
        _senders[address] = None


def ask(address: Optional[str], timeout_s: float = 120.0, **values: Any) -> Optional[Dict[str, Any]]:
    """Send ``values`` (JSON-serialisable) to the driver's :class:`ProgressChannel` at ``address``
    as a question and wait up to ``timeout_s`` seconds for its handler's answer: the answer dict,
    or ``None`` when there is no address, the driver cannot be reached (5 s to connect), the
    answer does not come in time or is not a dict.  Never raises.  One connection per question, so
    a late answer can never be taken for the next question's."""
    if not address:
        return None
    try:
        host, port, token = address.rsplit(":", 2)
        with socket.create_connection((host, int(port)), timeout=min(5.0, timeout_s)) as sock:
            sock.settimeout(timeout_s)
            sock.sendall((json.dumps(dict(values, token=token, ask=True)) + "\n").encode("utf-8"))
            with sock.makefile("r", encoding="utf-8") as answers:
                answer = json.loads(answers.readline())
    except Exception:  # noqa: BLE001 - unreachable, timed out, closed or not JSON
        return None
    return answer if isinstance(answer, dict) else None
