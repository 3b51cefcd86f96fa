"""``TorchEstimator`` / ``TorchModel``: PyTorch training and batched inference as pyspark.ml stages.

Training (``fit``) runs ``numProc`` training processes over the DataFrame's rows through
one of two backends (see :mod:`sparkml_scale.torch.launch`): pyspark's
``TorchDistributor`` (DDP) or Horovod (Gloo).  Each process trains on its share with
the plain loop :func:`sparkml_scale.torch.loop.train_epochs`; ``batchSize`` is the
global mini-batch (split over the processes, gradients averaged), and an epoch is
``ceil(rows / batchSize)`` optimizer steps, as in one process.

Inference (``transform``) is one ``mapInArrow`` pass: each Python worker builds the
module once (cached by the weights' hash), converts each Arrow batch's features to one
float32 tensor and runs the model ``inferenceBatchSize`` rows at a time (default 256: on CPU
larger chunks of a conv net fall out of cache, measured 4.1 s vs 3.4 s per 20,000 images)
under ``torch.no_grad()``, with ``spark.task.cpus`` torch threads.  No Python object per row.
That per-batch function is in :mod:`sparkml_scale.torch.inference`; the params both stages share
(declarations, defaults, getters, checks, the trust-vetting reader) are in
:mod:`sparkml_scale.torch.params`.

Persistence: params as JSON (the module factory, optimizer and loss by import
reference, see :mod:`sparkml_scale.torch.factory`), the weights as the bytes of
``torch.save(state_dict)`` in the model's array table, read back with
``torch.load(weights_only=True)``.  Nothing is pickled.  ``load`` resolves only trusted
references (built-in ones, those of callables given to a stage in this process, and what
``load(path, trusted=[...])``, the Spark conf ``spark.sparkml_scale.trusted`` or the
environment variable ``SPARKML_SCALE_TRUSTED`` name) and raises ``ModelLoadError`` for any
other, before importing or calling anything.  The driver resolves the references (checking
them again) and ships the callables to the executors, so no executor resolves a reference
the driver did not vet.
"""
from __future__ import annotations

import glob
import logging
import os
import re
import threading
from typing import Any, Dict, List, Optional

import numpy as np
from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.linalg import VectorUDT
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from ..core.cluster import conf_value as _conf, task_slots
from ..core.display import ReadableRepr, detail, lazy
from ..core.persistence import ModelLoadError, ParamsReadWrite
from ..core.progress import FitProgress
from ..core.lineage import RecordsLineage
from ..core.schema import check_column, check_new_column, col, distinct_names
from .factory import trust_passed
from .inference import _predict_fn
from .params import BACKENDS, _REF_PARAMS, _EpochCallbackParam, _TorchParams

__all__ = ["TorchEstimator", "TorchModel"]

log = logging.getLogger(__name__)


class TorchEstimator(ReadableRepr, RecordsLineage, _TorchParams, _EpochCallbackParam, Estimator, ParamsReadWrite):
    """Train a PyTorch model on a DataFrame with ``numProc`` processes (DDP or Horovod).

    Input: ``featuresCol`` (``VectorUDT`` or ``array<numeric>``; each row reshaped to
    ``inputShape`` when set, float32), ``labelCol`` (numeric: class index 0..K-1 for
    ``loss="cross_entropy"``, 0/1 for ``"bce_with_logits"``, a number for ``"mse"``),
    optionally ``validationCol`` (boolean).  ``fit`` returns a :class:`TorchModel`
    with the trained ``state_dict`` and ``history`` (one dict per epoch: ``epoch``,
    ``loss``, ``samples``, ``seconds``, ``samples_per_s``, and ``val_loss``/
    ``val_accuracy`` with validation rows).

    Backends: see :mod:`sparkml_scale.torch.launch`.  Before launching, the
    configured task slots are checked against ``numProc`` (``ValueError`` when short).
    With ``checkpointDir`` rank 0 writes ``checkpoint-epochNNNN.pt`` after every
    epoch (model, optimizer, history, early-stopping state); with
    ``resumeFromCheckpoint=True`` ``fit`` continues after the last one (epoch numbers
    continue; ``epochs`` is the total).  ``earlyStoppingPatience=p``: stop after ``p``
    epochs without a lower validation loss and return the best epoch's weights.
    ``frozenLayers``: parameter-name prefixes left untrained (transfer learning).

    ``epochCallback``: a callable ``fn(record) -> bool`` run on the driver (in a thread of the
    driver process, one call at a time) after each epoch trained, with that epoch's ``history``
    record (the dict above: ``epoch`` as a float, ``loss``, ``samples``, ``seconds``,
    ``samples_per_s``, and ``val_loss``/``val_accuracy`` with validation rows).  Returning a true
    value stops training after that epoch in every process: the model is that epoch's (or, with
    ``earlyStoppingPatience``, the best epoch's), ``history`` holds the epochs trained and
    :attr:`TorchModel.stoppedByCallback` is True.  Rank 0 waits for each answer (up to
    :data:`~sparkml_scale.torch.worker.CALLBACK_TIMEOUT_S` s; after one missed answer it trains on
    without asking and the driver calls the callback after the fit for the epochs it missed).  A
    callback that raises is logged with its traceback and counts as "continue".  It works with
    progress bars on or off.  When the training processes cannot reach the driver (a Spark Connect
    client on another machine than the server), a warning says it cannot stop training and it is
    called after the fit once per epoch, its return value ignored.  A runtime hook: kept by
    ``copy()`` and ``fit(df, {est.epochCallback: fn})``, never saved (a loaded estimator has none),
    never sent to the executors, and not passed on to the fitted model.

    Raises ``ValueError``/``TypeError`` naming the param or column for bad params,
    missing or mistyped columns, an empty DataFrame, null or NaN/inf labels, NaN/inf or null
    features, labels that do not fit the loss (found on the executors, reported before
    training starts),
    :class:`~sparkml_scale.core.persistence.ModelLoadError` when ``model``, ``optimizer`` or
    ``loss`` is a reference that is not trusted (see :meth:`load`; e.g. one that a param map read
    from disk sets), before importing or calling it, and
    :class:`sparkml_scale.torch.launch.TrainingError` when a training process fails.
    """

    @keyword_only
    def __init__(self, *, model=None, optimizer=None, loss="cross_entropy", featuresCol="features",
                 labelCol="label", predictionCol="prediction", probabilityCol="probability",
                 inputShape=None, batchSize=64, epochs=10, learningRate=1e-3, numProc=1, backend="auto",
                 useGpu="auto", validationFraction=0.0, validationCol=None, earlyStoppingPatience=0,
                 checkpointDir=None, resumeFromCheckpoint=False, frozenLayers=None, inferenceBatchSize=256,
                 seed=42, epochCallback=None) -> None:
        super().__init__()
        self._set_passed(**{k: v for k, v in self._input_kwargs.items() if v is not None})

    @keyword_only
    def setParams(self, *, model=None, optimizer=None, loss=None, featuresCol=None, labelCol=None,
                  predictionCol=None, probabilityCol=None, inputShape=None, batchSize=None, epochs=None,
                  learningRate=None, numProc=None, backend=None, useGpu=None, validationFraction=None,
                  validationCol=None, earlyStoppingPatience=None, checkpointDir=None, resumeFromCheckpoint=None,
                  frozenLayers=None, inferenceBatchSize=None, seed=None, epochCallback=None) -> "TorchEstimator":
        return self._set_passed(**{k: v for k, v in self._input_kwargs.items() if v is not None})

    def _set_passed(self, **kwargs) -> "TorchEstimator":
        """``_set`` for values the user gives: the references of model/optimizer/loss callables (and
        reference strings) passed here are trusted in this process (see
        :mod:`sparkml_scale.torch.factory`).  Internal copies (``copy``, param maps) use ``_set``."""
        for name in _REF_PARAMS:
            if kwargs.get(name) is not None:
                trust_passed(kwargs[name])
        return self._set(**kwargs)

    def setModel(self, value) -> "TorchEstimator":
        return self._set_passed(model=value)

    def setOptimizer(self, value) -> "TorchEstimator":
        return self._set_passed(optimizer=value)

    def setLoss(self, value) -> "TorchEstimator":
        return self._set_passed(loss=value)

    def setFeaturesCol(self, value: str) -> "TorchEstimator":
        return self._set(featuresCol=value)

    def setLabelCol(self, value: str) -> "TorchEstimator":
        return self._set(labelCol=value)

    def setPredictionCol(self, value: str) -> "TorchEstimator":
        return self._set(predictionCol=value)

    def setProbabilityCol(self, value: str) -> "TorchEstimator":
        return self._set(probabilityCol=value)

    def setInputShape(self, value: List[int]) -> "TorchEstimator":
        return self._set(inputShape=value)

    def setBatchSize(self, value: int) -> "TorchEstimator":
        return self._set(batchSize=value)

    def setEpochs(self, value: int) -> "TorchEstimator":
        return self._set(epochs=value)

    def setLearningRate(self, value: float) -> "TorchEstimator":
        return self._set(learningRate=value)

    def setNumProc(self, value: int) -> "TorchEstimator":
        return self._set(numProc=value)

    def setBackend(self, value: str) -> "TorchEstimator":
        return self._set(backend=value)

    def setUseGpu(self, value: str) -> "TorchEstimator":
        return self._set(useGpu=value)

    def setValidationFraction(self, value: float) -> "TorchEstimator":
        return self._set(validationFraction=value)

    def setValidationCol(self, value: str) -> "TorchEstimator":
        return self._set(validationCol=value)

    def setEarlyStoppingPatience(self, value: int) -> "TorchEstimator":
        return self._set(earlyStoppingPatience=value)

    def setCheckpointDir(self, value: str) -> "TorchEstimator":
        return self._set(checkpointDir=value)

    def setResumeFromCheckpoint(self, value: bool) -> "TorchEstimator":
        return self._set(resumeFromCheckpoint=value)

    def setFrozenLayers(self, value: List[str]) -> "TorchEstimator":
        return self._set(frozenLayers=value)

    def setInferenceBatchSize(self, value: int) -> "TorchEstimator":
        return self._set(inferenceBatchSize=value)

    def setSeed(self, value: int) -> "TorchEstimator":
        return self._set(seed=value)

    def setEpochCallback(self, value) -> "TorchEstimator":
        """Set param ``epochCallback`` (``None`` clears it); see the class docstring."""
        return self._set(epochCallback=value)

    # ---------------------------------------------------------------------------------------
    def _validate(self, schema: T.StructType) -> None:
        if not self.isDefined(self.model) or self.getModel() is None:
            raise ValueError("param 'model' is not set: pass a torch.nn.Module or a factory returning one")
        checks = [("batchSize", self.getBatchSize() >= 1, ">= 1"), ("epochs", self.getEpochs() >= 1, ">= 1"),
                  ("learningRate", self.getLearningRate() > 0, "> 0"), ("numProc", self.getNumProc() >= 1, ">= 1"),
                  ("validationFraction", 0.0 <= self.getValidationFraction() < 1.0, "in [0, 1)"),
                  ("earlyStoppingPatience", self.getEarlyStoppingPatience() >= 0, ">= 0")]
        for name, ok, want in checks:
            if not ok:
                raise ValueError(f"param {name!r} must be {want}, got {self.getOrDefault(name)!r}")
        if self.getBatchSize() < self.getNumProc():
            raise ValueError(f"param 'batchSize' ({self.getBatchSize()}) must be >= param 'numProc' "
                             f"({self.getNumProc()}): it is the global mini-batch, split over the processes")
        if self.getBackend() not in BACKENDS:
            raise ValueError(f"param 'backend' must be one of {', '.join(BACKENDS)}, got {self.getBackend()!r}")
        if self.getUseGpu().lower() not in ("auto", "true", "false"):
            raise ValueError(f"param 'useGpu' must be 'auto', 'true' or 'false', got {self.getUseGpu()!r}")
        self._check_loss()
        self._check_features(schema)
        dt = check_column(schema, self.getLabelCol(), "labelCol")
        if not isinstance(dt, (T.NumericType, T.BooleanType)):
            raise TypeError(f"column {self.getLabelCol()!r} (param 'labelCol') must be numeric, got {dt.simpleString()}")
        vcol = self.getValidationCol()
        if vcol:
            vdt = check_column(schema, vcol, "validationCol")
            if not isinstance(vdt, T.BooleanType):
                raise TypeError(f"column {vcol!r} (param 'validationCol') must be boolean, got {vdt.simpleString()}")
            if self.getValidationFraction() > 0:
                raise ValueError("set either param 'validationCol' or param 'validationFraction', not both")
        if self.getEarlyStoppingPatience() > 0 and not vcol and self.getValidationFraction() == 0:
            raise ValueError("param 'earlyStoppingPatience' needs validation rows: set validationFraction or validationCol")
        if self.getResumeFromCheckpoint() and not self.getCheckpointDir():
            raise ValueError("param 'resumeFromCheckpoint' needs param 'checkpointDir'")
        distinct_names([c for c in (self.getFeaturesCol(), self.getLabelCol(), vcol) if c], "featuresCol/labelCol/validationCol")

    def _resolve_backend(self) -> str:
        from .launch import horovod_available

        backend = self.getBackend()
        if backend == "auto":
            backend = "horovod" if horovod_available() else "torch_distributor"
            log.info("TorchEstimator backend 'auto' -> %r", backend)
        return backend

    def _gpu_wanted(self, spark) -> bool:
        use = self.getUseGpu().lower()
        if use != "auto":
            return use == "true"
        amount = _conf(spark, "spark.task.resource.gpu.amount")
        return bool(amount) and float(amount) > 0

    def _threads(self, spark, num_proc: int) -> int:
        """Torch threads per process: a local master's cores shared by the processes, else spark.task.cpus."""
        master = _conf(spark, "spark.master") or ""
        if master.startswith("local"):
            return max(1, (task_slots(spark) or os.cpu_count() or 1) // num_proc)
        return max(1, int(_conf(spark, "spark.task.cpus") or 1))

    def _spec(self, spark, num_proc: int, resume: Optional[bytes]) -> Dict[str, Any]:
        return {
            # references resolved here, on the driver, and shipped as callables (see the module docstring)
            "model": self._resolved("model", spark), "optimizer": self._resolved("optimizer", spark),
            "loss": self._resolved("loss", spark), "learningRate": self.getLearningRate(),
            "batchSize": self.getBatchSize(), "epochs": self.getEpochs(), "seed": self.getSeed(),
            "featuresCol": self.getFeaturesCol(), "labelCol": self.getLabelCol(),
            "validationCol": self.getValidationCol(), "validationFraction": self.getValidationFraction(),
            "inputShape": self.getInputShape(), "earlyStoppingPatience": self.getEarlyStoppingPatience(),
            "checkpointDir": self.getCheckpointDir(), "resume": resume, "frozenLayers": self.getFrozenLayers(),
            "useGpu": self.getUseGpu().lower(), "threads": self._threads(spark, num_proc),
        }

    def _last_checkpoint(self) -> Optional[str]:
        from .worker import CHECKPOINT_PREFIX

        d = self.getCheckpointDir()
        files = sorted(glob.glob(os.path.join(d, f"{CHECKPOINT_PREFIX}[0-9]*.pt"))) if d else []
        files = [f for f in files if re.fullmatch(rf"{CHECKPOINT_PREFIX}\d+\.pt", os.path.basename(f))]
        return files[-1] if files else None

    def _check_checkpoint_dir(self) -> None:
        """ValueError naming 'checkpointDir' when the driver cannot create and write it (the
        driver reads the checkpoints back on resume; the training processes check it too)."""
        from .worker import probe_checkpoint_dir

        error = probe_checkpoint_dir(self.getCheckpointDir(), "the driver")
        if error:
            raise ValueError(error)

    def _fit(self, dataset: DataFrame) -> "TorchModel":
        from .launch import check_slots, launch
        from .worker import load_checkpoint_bytes

        self._validate(dataset.schema)
        spark = dataset.sparkSession
        num_proc = self.getNumProc()
        resume = None
        epochs_done = 0  # in the checkpoint resumed from
        if self.getResumeFromCheckpoint():
            last = self._last_checkpoint()
            if last is None:
                log.info("no checkpoint in %s: training from epoch 0", self.getCheckpointDir())
            else:
                with open(last, "rb") as f:
                    resume = f.read()
                try:
                    state = load_checkpoint_bytes(resume)
                except Exception as exc:  # noqa: BLE001 - corrupted or foreign file
                    raise ValueError(f"checkpoint {last!r} (param 'checkpointDir') cannot be read: {exc}") from None
                epochs_done = int(state["epoch"]) + 1
                log.info("resuming from %s (epoch %d done)", last, epochs_done - 1)
                if epochs_done >= self.getEpochs():
                    log.info("the checkpoint already has %d epochs (param 'epochs' = %d): nothing to train",
                             epochs_done, self.getEpochs())
                    return self._model_from_checkpoint(state)
        backend = self._resolve_backend()
        check_slots(spark, num_proc)
        self._check_checkpoint_dir()
        cols = [self.getFeaturesCol(), self.getLabelCol()] + ([self.getValidationCol()] if self.getValidationCol() else [])
        # positional aliases: Spark's mapInArrow rejects column names with dots or backticks
        df = dataset.select(*[col(c).alias(f"_c{i}") for i, c in enumerate(cols)])
        spec = self._spec(spark, num_proc, resume)
        spec["columnNames"] = cols
        callback = _EpochCallback(self.getEpochCallback()) if self.getEpochCallback() is not None else None
        with FitProgress(spark, "TorchEstimator") as progress:
            progress.bar("epochs", total=self.getEpochs(), initial=epochs_done, unit="epoch")
            if callback is None:
                spec["progress"] = progress.channel()  # rank 0 reports each epoch's losses
            else:  # rank 0 asks: the bar advances and the callback answers, bars on or off
                spec["progress"] = progress.channel(callback.on_message(progress), always=True)
                spec["epochCallback"] = spec["progress"] is not None
                if spec["progress"] is None:
                    log.warning("param 'epochCallback' cannot stop training: the training processes cannot reach "
                                "this driver process (e.g. a Spark Connect client on another machine than the "
                                "server); it is called after the fit for each epoch, its return value ignored")
            progress.step(f"training with {backend} in {num_proc} process{'es' if num_proc > 1 else ''}")
            result = launch(df, spec, num_proc, backend, self._gpu_wanted(spark))
        for m in result["history"]:
            log.info("epoch %d: %s", int(m["epoch"]), {k: round(v, 5) for k, v in m.items() if k != "epoch"})
        if callback is not None:
            callback.call_missed(result["history"], epochs_done)
        model = TorchModel._create(result["state"], result["history"], int(result["num_outputs"]),
                                   backend, bool(result.get("stopped_early")), result.get("best_epoch"),
                                   bool(result.get("stopped_by_callback")))
        return self._copyValues(model)

    def _model_from_checkpoint(self, state: Dict[str, Any]) -> "TorchModel":
        import io

        import torch

        weights = state.get("best_model") if self.getEarlyStoppingPatience() > 0 and "best_model" in state else state["model"]
        buf = io.BytesIO()
        torch.save(weights, buf)
        model = TorchModel._create(buf.getvalue(), list(state.get("history", [])), -1, "checkpoint", False, None)
        return self._copyValues(model)


class _EpochCallback:
    """One fit's ``epochCallback`` on the driver: calls it one record at a time, never raising (an
    exception is logged and means "continue"), and remembers the epochs it was called for."""

    def __init__(self, fn):
        self.fn = fn
        self.seen: set = set()
        self._lock = threading.Lock()

    def __call__(self, record: Dict[str, Any]) -> bool:
        with self._lock:
            self.seen.add(int(record.get("epoch", -1)))
            try:
                return bool(self.fn(dict(record)))
            except Exception:  # noqa: BLE001 - a failing callback never fails the fit
                log.exception("param 'epochCallback' raised after epoch %s (counted as \"continue\")",
                              record.get("epoch"))
                return False

    def on_message(self, progress: FitProgress):
        """The progress channel's handler: every message advances the bar; one that carries a
        ``record`` (rank 0's question after an epoch) gets ``{"stop": bool}`` back."""
        def handle(msg: Dict[str, Any]) -> Optional[Dict[str, bool]]:
            record = msg.pop("record", None)
            progress.advance(int(msg.pop("n", 1)), **msg)
            return None if record is None else {"stop": self(record)}

        return handle

    def call_missed(self, history: List[Dict[str, float]], first_epoch: int) -> None:
        """After the fit: the call for each epoch trained in it (from ``first_epoch``) that the
        callback did not see (driver unreachable, an answer that came too late); answers ignored."""
        for record in history:
            if int(record["epoch"]) >= first_epoch and int(record["epoch"]) not in self.seen:
                self(record)


class TorchModel(ReadableRepr, _TorchParams, Model, ParamsReadWrite):
    """A trained network: ``transform`` adds predictions by batched inference.

    Output columns, by ``loss``:

    - ``"cross_entropy"``: ``predictionCol`` (double, argmax class) and ``probabilityCol``
      (dense vector, softmax);
    - ``"bce_with_logits"`` with one output: ``predictionCol`` (1.0 when the logit > 0) and
      ``probabilityCol`` (``[1 - p, p]``);
    - anything else (``"mse"``, callables): ``predictionCol`` = the output (double for one
      output, dense vector otherwise).

    Null feature rows give null outputs.  ``history`` holds the per-epoch training metrics (of the
    epochs trained), ``stoppedEarly`` / ``stoppedByCallback`` say whether early stopping or
    ``TorchEstimator``'s ``epochCallback`` ended the training.

    ``transform`` raises ``ValueError``/``TypeError`` naming the column or param for a missing or
    mistyped features column or an output column that exists, and
    :class:`~sparkml_scale.core.persistence.ModelLoadError` when param ``model`` is a reference
    that is not trusted (see :meth:`load`; e.g. one set after loading), before importing or calling it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._state: bytes = b""
        self._history: List[Dict[str, float]] = []
        self._num_outputs = -1
        self._backend_used = ""
        self._stopped_early = False
        self._best_epoch: Optional[int] = None
        self._stopped_by_callback = False

    @classmethod
    def _create(cls, state: bytes, history, num_outputs: int, backend: str, stopped_early: bool,
                best_epoch, stopped_by_callback: bool = False) -> "TorchModel":
        m = cls()
        m._state = bytes(state)
        m._history = [dict(h) for h in history]
        m._num_outputs = int(num_outputs)
        m._backend_used = backend
        m._stopped_early = bool(stopped_early)
        m._best_epoch = None if best_epoch is None else int(best_epoch)
        m._stopped_by_callback = bool(stopped_by_callback)
        return m

    def copy(self, extra=None) -> "TorchModel":
        that = super().copy(extra)
        for a in ("_state", "_history", "_num_outputs", "_backend_used", "_stopped_early", "_best_epoch",
                  "_stopped_by_callback"):
            setattr(that, a, getattr(self, a))
        return that

    # persistence ---------------------------------------------------------------------------
    def _model_arrays(self) -> Dict[str, np.ndarray]:
        return {"torch_state": np.frombuffer(self._state, dtype=np.int8)}

    def _extra_metadata(self) -> Dict[str, Any]:
        return {"history": self._history, "numOutputs": self._num_outputs, "backendUsed": self._backend_used,
                "stoppedEarly": self._stopped_early, "bestEpoch": self._best_epoch,
                "stoppedByCallback": self._stopped_by_callback}

    @classmethod
    def _from_arrays(cls, arrays: Dict[str, np.ndarray], metadata: Dict[str, Any]) -> "TorchModel":
        from .worker import load_checkpoint_bytes

        if "torch_state" not in arrays:
            raise ModelLoadError("saved TorchModel data has no weights (array 'torch_state')")
        state = arrays["torch_state"].astype(np.int8).tobytes()
        try:
            sd = load_checkpoint_bytes(state)
        except Exception as exc:  # noqa: BLE001 - tampered or foreign bytes
            raise ModelLoadError(f"saved TorchModel weights cannot be read with torch.load(weights_only=True): "
                                 f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
        if not isinstance(sd, dict):
            raise ModelLoadError("saved TorchModel weights are not a state_dict")
        return cls._create(state, metadata.get("history", []), int(metadata.get("numOutputs", -1)),
                           metadata.get("backendUsed", ""), bool(metadata.get("stoppedEarly", False)),
                           metadata.get("bestEpoch"), bool(metadata.get("stoppedByCallback", False)))

    # accessors -----------------------------------------------------------------------------
    @property
    def history(self) -> List[Dict[str, float]]:
        """Per-epoch metrics (see :class:`TorchEstimator`)."""
        return [dict(h) for h in self._history]

    @property
    def backendUsed(self) -> str:
        return self._backend_used

    @property
    def stoppedEarly(self) -> bool:
        return self._stopped_early

    @property
    def stoppedByCallback(self) -> bool:
        """True when ``TorchEstimator``'s ``epochCallback`` returned true after the last epoch in
        ``history`` (and so ended the training; also when that was the last epoch anyway).  Saved;
        False for models saved before this field existed."""
        return self._stopped_by_callback

    @property
    def bestEpoch(self) -> Optional[int]:
        return self._best_epoch

    def state_dict(self) -> Dict[str, Any]:
        """The trained weights (CPU tensors)."""
        from .worker import load_checkpoint_bytes

        return load_checkpoint_bytes(self._state)

    def module(self):
        """A fresh ``nn.Module`` (from param ``model``) holding the trained weights, in eval mode.

        Raises :class:`~sparkml_scale.core.persistence.ModelLoadError` when param ``model`` is a
        reference that is not trusted (see :meth:`load`), before importing or calling it."""
        from .factory import build_module

        m = build_module(self._resolved("model"))
        m.load_state_dict(self.state_dict())
        return m.eval()

    def setFeaturesCol(self, value: str) -> "TorchModel":
        return self._set(featuresCol=value)

    def setPredictionCol(self, value: str) -> "TorchModel":
        return self._set(predictionCol=value)

    def setProbabilityCol(self, value: str) -> "TorchModel":
        return self._set(probabilityCol=value)

    def setInferenceBatchSize(self, value: int) -> "TorchModel":
        return self._set(inferenceBatchSize=value)

    def setUseGpu(self, value: str) -> "TorchModel":
        return self._set(useGpu=value)

    # transform -----------------------------------------------------------------------------
    def _num_out(self) -> int:
        if self._num_outputs < 0:
            from .factory import build_module
            import torch

            m = build_module(self._resolved("model"))
            m.load_state_dict(self.state_dict())
            shape = self.getInputShape()
            x = torch.zeros((1,) + tuple(shape)) if shape else None
            if x is None:
                raise ValueError("cannot tell the model's output size: set param 'inputShape'")
            with torch.no_grad():
                out = m.eval()(x)
            self._num_outputs = int(out.shape[1]) if out.dim() == 2 else 1
        return self._num_outputs

    def _output_kind(self) -> str:
        loss = self._loss_name()
        if loss == "cross_entropy":
            return "softmax"
        if loss == "bce_with_logits" and self._num_out() == 1:
            return "sigmoid"
        return "raw"

    def _output_fields(self) -> List[T.StructField]:
        kind = self._output_kind()
        if kind in ("softmax", "sigmoid"):
            return [T.StructField(self.getPredictionCol(), T.DoubleType(), True),
                    T.StructField(self.getProbabilityCol(), VectorUDT(), True)]
        dtype = T.DoubleType() if self._num_out() == 1 else VectorUDT()
        return [T.StructField(self.getPredictionCol(), dtype, True)]

    def transformSchema(self, schema: T.StructType) -> T.StructType:
        self._check_features(schema)
        self._check_loss()
        new = self._output_fields()
        for f, p in zip(new, ("predictionCol", "probabilityCol")):
            check_new_column(schema, f.name, p)
        return T.StructType(list(schema.fields) + new)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        out_schema = self.transformSchema(dataset.schema)
        col_index = dataset.schema.names.index(self.getFeaturesCol())
        # one torch thread per task core: the tasks of an executor share its cores
        threads = max(1, int(_conf(dataset.sparkSession, "spark.task.cpus") or 1))
        # the driver resolves (and vets) the reference; the executors get the callable
        model = self._resolved("model", dataset.sparkSession)
        # Spark's mapInArrow rejects column names with dots or backticks: positional names in the
        # stage, the real ones restored after it.
        safe = [f"_c{i}" for i in range(len(out_schema.fields))]
        n_in = len(dataset.columns)
        fn = _predict_fn(model, self._state, self._output_kind(), self.getFeaturesCol(), col_index,
                         self.getInputShape(), self.getInferenceBatchSize(), self.getUseGpu().lower(),
                         safe[n_in:], threads)
        safe_schema = T.StructType([T.StructField(n, f.dataType, f.nullable, f.metadata)
                                    for n, f in zip(safe, out_schema.fields)])
        out = dataset.toDF(*safe[:n_in]).mapInArrow(fn, safe_schema)
        return out.toDF(*[f.name for f in out_schema.fields])

    def _repr_fields(self):
        """``repr``: the module (its factory reference), the number of weights, the epochs trained and
        the last epoch's training/validation metrics; the table adds the loss, backend, early
        stopping and set params.  ``numParameters`` counts the floating-point entries of the
        state_dict (parameters and float buffers such as BatchNorm statistics)."""
        def num_parameters():
            if getattr(self, "_repr_numel", (None,))[0] is not self._state:  # cached per weights
                numel = sum(int(t.numel()) for t in self.state_dict().values() if t.is_floating_point())
                self._repr_numel = (self._state, numel)
            return self._repr_numel[1]

        last = self._history[-1] if self._history else {}
        return [
            ("module", self._repr_param("model")), ("numParameters", lazy(num_parameters) if self._state else None),
            ("epochsTrained", int(last["epoch"]) + 1 if "epoch" in last else None),
            ("trainLoss", last.get("loss")), ("valLoss", last.get("val_loss")),
            ("valAccuracy", last.get("val_accuracy")), ("loss", detail(self._repr_param("loss"))),
            ("backendUsed", detail(self._backend_used or None)), ("stoppedEarly", detail(self._stopped_early)),
            ("stoppedByCallback", detail(self._stopped_by_callback)), ("bestEpoch", detail(self._best_epoch)),
            ("params", detail(self._repr_params_text())),
        ]
