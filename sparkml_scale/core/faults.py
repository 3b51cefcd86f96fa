"""Fault injection for reliability tests: make one task fail at a named point.

Off unless the environment variable ``SPARKML_SCALE_FAULT_DIR`` names a directory when
the SparkSession starts (local and local-cluster masters pass the driver's environment
to the Python workers).  Then every call of :func:`maybe_fail` with a point name looks
for the file ``<dir>/<point>.arm``, which holds a number ``N`` (fail the N-th time any
task reaches the point; 1 = the first), ``N+`` (the N-th and every later arrival) or
``always``.  Arrivals are counted with files
created atomically (``O_EXCL``) in the same directory, so exactly one task fails however
many run at once, and its retry (a later arrival) succeeds.  Each failure leaves
``<point>.fired.<arrival>`` behind so a test can check that the fault really happened.

Points (each the first statement of the task-side code of one stage):

- ``mapreduce.map``: the per-partition map of :func:`sparkml_scale.core.mapreduce.tree_aggregate`
  (PCA, LinearRegression, LogisticRegression's ``mapreduce`` solver, their summaries);
- ``blocks.build``: LogisticRegression's block building (the cached training blocks);
- ``allreduce.task``: a barrier task of :func:`sparkml_scale.core.allreduce.run_barrier`
  (LogisticRegression's ``allreduce`` solver);
- ``transform.batch``: each Arrow batch of the vector UDFs of ``transform`` (PCAModel,
  LinearRegressionModel, LogisticRegressionModel, FeatureHasher) and of TorchModel's
  ``mapInArrow``;
- ``torch.epoch_end``: rank 0 of TorchEstimator's training, after an epoch's checkpoint;
- ``torch.checkpoint_dir``: each training process's check that it can write ``checkpointDir``
  (a failure here stands for a rank that cannot write it).

The check is one ``os.environ`` lookup when the variable is unset.
"""
from __future__ import annotations

import os

__all__ = ["FAULT_DIR_ENV", "InjectedFault", "maybe_fail"]

FAULT_DIR_ENV = "SPARKML_SCALE_FAULT_DIR"


class InjectedFault(RuntimeError):
    """The failure :func:`maybe_fail` raises (only in fault-injection runs)."""


def maybe_fail(point: str) -> None:
    """Raise :class:`InjectedFault` if ``point`` is armed for this arrival (see the module doc)."""
    directory = os.environ.get(FAULT_DIR_ENV)
    if not directory:
        return
    arm = os.path.join(directory, point + ".arm")
    try:
        with open(arm) as f:
            when = f.read().strip()
    except OSError:
        return
    arrival = 1
    while True:
        try:
            os.close(os.open(os.path.join(directory, f"{point}.arrival.{arrival}"), os.O_CREAT | os.O_EXCL))
            break
        except FileExistsError:
            arrival += 1
    fire = when == "always" or (when.isdigit() and int(when) == arrival)
    fire = fire or (when.endswith("+") and when[:-1].isdigit() and arrival >= int(when[:-1]))
    if fire:
        open(os.path.join(directory, f"{point}.fired.{arrival}"), "w").close()
        raise InjectedFault(f"injected fault at {point} (arrival {arrival})")
