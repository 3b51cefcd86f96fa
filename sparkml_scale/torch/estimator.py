"""``TorchEstimator`` / ``TorchModel``: PyTorch training and batched inference as pyspark.ml stages.

Training (``fit``) runs ``numProc`` training processes over the DataFrame's rows through
one of two backends (see :mod:`sparkml_scale.torch.launch`): pyspark's
``TorchDistributor`` (DDP) or Horovod (Gloo).  Each process trains on its share with
the plain loop :func:`sparkml_scale.torch.loop.train_epochs`; ``batchSize`` is the
global mini-batch (split over the processes, gradients averaged), and an epoch is
``ceil(rows / batchSize)`` optimizer steps, as in one process.

Inference (``transform``) is one scalar Arrow UDF over the features column alone (the other
columns never go to Python): each Python worker builds the
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
from .inference import _predict_udf_fn
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
        self._initial_model: Optional["TorchModel"] = None
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

    def setInitialModel(self, model: Optional["TorchModel"]) -> "TorchEstimator":
        """Warm start / fine-tuning: training begins at ``model``'s weights (a fitted
        :class:`TorchModel`, e.g. one from :meth:`TorchModel.prune`; ``None`` clears it).  The weights
        that its pruning steps set to zero stay zero during training (their masks are applied after
        every optimizer step, on every process), and a model shrunk by structured pruning keeps its
        smaller layers; the fitted model carries the same pruning steps.  Param ``model`` may be left
        unset (the initial model's factory is used); when set it must be the same factory.  A quantized
        model cannot be trained (fine-tune before quantizing: ``ValueError`` at ``fit``).  Not saved
        with the estimator; kept by ``copy``."""
        if model is not None and not isinstance(model, TorchModel):
            raise TypeError(f"initialModel must be a fitted TorchModel, got {type(model).__name__}")
        self._initial_model = model
        return self

    def getInitialModel(self) -> Optional["TorchModel"]:
        return self._initial_model

    def setEpochCallback(self, value) -> "TorchEstimator":
        """Set param ``epochCallback`` (``None`` clears it); see the class docstring."""
        return self._set(epochCallback=value)

    # ---------------------------------------------------------------------------------------
    def _check_initial_model(self) -> None:
        from .compression import is_quantized
        from .factory import reference_of

        init = self._initial_model
        if init is None:
            return
        if is_quantized(init._compression):
            raise ValueError("initialModel is quantized and cannot be trained: fine-tune the float (pruned) model, "
                             "then quantize the result")
        if self.isDefined(self.model) and self.getModel() is not None:
            mine, theirs = self.getModel(), init.getModel()
            ref_a, ref_b = reference_of(mine), reference_of(theirs)
            if not (mine is theirs or (ref_a is not None and ref_a == ref_b)):
                raise ValueError("param 'model' differs from initialModel's factory: leave 'model' unset to train "
                                 "the initial model's network, or set the same factory")

    def _validate(self, schema: T.StructType) -> None:
        self._check_initial_model()
        if self._initial_model is None and (not self.isDefined(self.model) or self.getModel() is None):
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
        init = self._initial_model
        if init is not None:  # the module itself (weights, shrunk layers) and the masks of its zeros
            from .compression import masks_of

            module = init.module(spark).train()
            model_spec: Any = module
            masks = {k: v.cpu().numpy() for k, v in masks_of(module, init._compression).items()}
        else:
            model_spec, masks = self._resolved("model", spark), None
        return {
            # references resolved here, on the driver, and shipped as callables (see the module docstring)
            "model": model_spec, "masks": masks, "optimizer": self._resolved("optimizer", spark),
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
        return self._with_initial(self._copyValues(model))

    def _with_initial(self, model: "TorchModel") -> "TorchModel":
        """The fitted model of a fit from ``initialModel``: its factory and pruning steps."""
        init = self._initial_model
        if init is not None:
            model._set(model=init.getModel())
            model._compression = [dict(s) for s in init._compression]
            model._baseline = init
        return model

    def _model_from_checkpoint(self, state: Dict[str, Any]) -> "TorchModel":
        import io

        import torch

        weights = state.get("best_model") if self.getEarlyStoppingPatience() > 0 and "best_model" in state else state["model"]
        buf = io.BytesIO()
        torch.save(weights, buf)
        model = TorchModel._create(buf.getvalue(), list(state.get("history", [])), -1, "checkpoint", False, None)
        return self._with_initial(self._copyValues(model))


def _step_text(step: Dict[str, Any]) -> str:
    if step["op"] == "prune":
        return f"prune {step['method']} {step['amount']:g}" + (" shrink" if step.get("shrink") else "")
    return f"quantize {step['method']} {step['dtype']}"


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
        self._compression: List[Dict[str, Any]] = []  # recipe steps (see sparkml_scale.torch.compression)
        self._baseline: Optional["TorchModel"] = None  # the model this one was compressed from (in memory)

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
                  "_stopped_by_callback", "_compression", "_baseline"):
            setattr(that, a, getattr(self, a))
        return that

    # persistence ---------------------------------------------------------------------------
    def _model_arrays(self) -> Dict[str, np.ndarray]:
        return {"torch_state": np.frombuffer(self._state, dtype=np.int8)}

    def _extra_metadata(self) -> Dict[str, Any]:
        return {"history": self._history, "numOutputs": self._num_outputs, "backendUsed": self._backend_used,
                "stoppedEarly": self._stopped_early, "bestEpoch": self._best_epoch,
                "stoppedByCallback": self._stopped_by_callback, "compression": self._compression}

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
        from .compression import check_recipe

        try:
            recipe = check_recipe(metadata.get("compression", []), "saved TorchModel metadata 'compression'")
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from None
        m = cls._create(state, metadata.get("history", []), int(metadata.get("numOutputs", -1)),
                        metadata.get("backendUsed", ""), bool(metadata.get("stoppedEarly", False)),
                        metadata.get("bestEpoch"), bool(metadata.get("stoppedByCallback", False)))
        m._compression = recipe
        return m

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
        """The trained weights (CPU tensors; quantized tensors for a quantized model)."""
        from .worker import load_checkpoint_bytes

        return load_checkpoint_bytes(self._state)

    def module(self, spark=None):
        """A fresh ``nn.Module`` (from param ``model``, with :attr:`compression`'s structural steps
        replayed) holding the trained weights, in eval mode.

        Raises :class:`~sparkml_scale.core.persistence.ModelLoadError` when param ``model`` is a
        reference that is not trusted (see :meth:`load`), before importing or calling it, and
        ``ImportError`` naming the pip extra for a shrunk model without ``torch-pruning``."""
        from .compression import _quiet_known, apply_structure
        from .factory import build_module

        m = apply_structure(build_module(self._resolved("model", spark)), self._compression)
        with _quiet_known():  # torch 2.13 warns when a quantized weight is rebuilt
            m.load_state_dict(self.state_dict())
        return m.eval()

    # compression ---------------------------------------------------------------------------
    @property
    def compression(self) -> List[Dict[str, Any]]:
        """The compression steps applied to this model, oldest first (JSON objects, see
        :mod:`sparkml_scale.torch.compression`); empty for a model as trained.  Saved."""
        import copy as _copy

        return _copy.deepcopy(self._compression)

    @property
    def sparsity(self) -> Dict[str, Any]:
        """``{"overall": float, "layers": {layer name: float}}``: the share (0..1) of zero entries in the
        weight matrices/kernels of the Linear and Conv layers (a quantized entry is zero when it
        equals its zero point), overall and per layer."""
        from .compression import sparsity_of

        return sparsity_of(self.module())

    def _derive(self, module, step: Dict[str, Any]) -> "TorchModel":
        import io

        import torch

        buf = io.BytesIO()
        torch.save(module.state_dict(), buf)
        that = self.copy()
        that._state = buf.getvalue()
        that._compression = self._compression + [step]
        that._baseline = self
        return that

    def prune(self, amount: float, method: str = "l1_unstructured", layers: Optional[List[str]] = None,
              n: float = 2, dim: int = 0, shrink: bool = False) -> "TorchModel":
        """A new TorchModel with pruned weights (this one is unchanged); the pruning is permanent
        (``torch.nn.utils.prune`` then ``prune.remove``).

        - ``method="l1_unstructured"``: the ``amount`` share (0 < amount < 1) of each layer's weight
          entries with the smallest absolute value are set to zero;
        - ``method="ln_structured"``: the ``amount`` share of each layer's slices along ``dim`` (0:
          output units/channels, 1: inputs) with the smallest L-``n`` norm are set to zero;
          ``shrink=True`` (``dim=0``) removes them instead, and the inputs of the layers that read
          them, through Torch-Pruning's dependency graph (pip extra ``[compression]``): the model
          gets smaller and its forward pass faster on CPU, not only sparser.

        ``layers``: names (or name prefixes) of Linear/Conv layers; default every one (for
        ``ln_structured``: every one but the last, whose units are the model's outputs).  Biases are
        not pruned.  Fine-tune with ``TorchEstimator(...).setInitialModel(pruned)``: the pruned
        weights stay zero.  See :attr:`sparsity` and :meth:`compressionReport`.  Source: Han et al.,
        "Learning both Weights and Connections for Efficient Neural Networks" (NeurIPS 2015) for
        magnitude pruning; Li et al., "Pruning Filters for Efficient ConvNets" (ICLR 2017) for norm-based
        channel pruning.

        Raises ``ValueError``/``TypeError`` naming the param (``amount``, ``method``, ``layers``, ``n``,
        ``dim``, ``shrink``, ``inputShape`` when tracing needs it) and ``ValueError`` for a quantized
        model (prune before quantizing)."""
        from .compression import is_quantized, prune_module

        if is_quantized(self._compression):
            raise ValueError("this model is quantized: prune (and fine-tune) the float model, then quantize")
        module = self.module()
        step = prune_module(module, amount, method, layers, n, dim, shrink, self.getInputShape())
        return self._derive(module, step)

    def quantize(self, method: str = "dynamic", dtype: str = "qint8", calibrationData: Optional[DataFrame] = None,
                 calibrationRows: Optional[int] = None) -> "TorchModel":
        """A new TorchModel with int8 (or float16) weights for CPU inference (this one is unchanged).

        - ``method="dynamic"``: post-training dynamic quantization of the ``nn.Linear``, ``nn.LSTM`` and
          ``nn.GRU`` layers (weights stored as ``dtype`` ``"qint8"`` or ``"float16"``; int8 activations
          quantized per batch at run time); needs no data;
        - ``method="static"``: post-training static int8 quantization of weights (per channel) and
          activations (per tensor) of a ``torch.fx``-traceable model, e.g. a conv net, calibrated on
          ``calibrationData``: a DataFrame with the features column (``featuresCol``), its rows run
          through the observed model on the executors in one ``mapInArrow`` pass (at most
          ``calibrationRows`` rows when set: a few hundred to a few thousand suffice); the activation
          ranges (min/max per tensor) are combined on the driver.

        Quantized models run on CPU (``transform`` keeps them there with a GPU present), transform,
        save and load like any TorchModel.  Source: Jacob et al., "Quantization and Training of Neural
        Networks for Efficient Integer-Arithmetic-Only Inference" (CVPR 2018); torch's
        ``torch.ao.quantization`` (see :mod:`sparkml_scale.torch.compression` on that choice).

        Raises ``ValueError``/``TypeError`` naming the param (``method``, ``dtype``,
        ``calibrationData``, ``calibrationRows``, the features column, ``inputShape``), and
        ``ValueError`` for an already quantized model, a model with no quantizable layer, or one
        torch.fx cannot trace (static)."""
        import torch.nn as nn

        from .compression import BACKEND, QUANT_DTYPES, QUANT_METHODS, example_input, is_quantized

        if method not in QUANT_METHODS:
            raise ValueError(f"param 'method' must be one of {', '.join(QUANT_METHODS)}, got {method!r}")
        if dtype not in QUANT_DTYPES[method]:
            raise ValueError(f"param 'dtype' must be one of {', '.join(QUANT_DTYPES[method])} for method={method!r}, "
                             f"got {dtype!r}")
        if is_quantized(self._compression):
            raise ValueError("this model is already quantized")
        module = self.module()
        step: Dict[str, Any] = {"op": "quantize", "method": method, "dtype": dtype, "backend": BACKEND.name}
        if method == "dynamic":
            if calibrationData is not None:
                raise ValueError("param 'calibrationData' is for method='static' (dynamic quantization needs no data)")
            if not any(isinstance(m, (nn.Linear, nn.LSTM, nn.GRU)) for m in module.modules()):
                raise ValueError("method='dynamic' quantizes Linear/LSTM/GRU layers and this model has none; "
                                 "use method='static' for a conv net")
            return self._derive(BACKEND.quantize_dynamic(module, dtype), step)
        if not isinstance(calibrationData, DataFrame):
            raise TypeError(f"param 'calibrationData' must be a DataFrame with column {self.getFeaturesCol()!r} for "
                            f"method='static', got {type(calibrationData).__name__}")
        if calibrationRows is not None and (isinstance(calibrationRows, bool) or not isinstance(calibrationRows, int)
                                            or calibrationRows < 1):
            raise ValueError(f"param 'calibrationRows' must be a positive int or None, got {calibrationRows!r}")
        self._check_features(calibrationData.schema)
        example = example_input(module, self.getInputShape())
        prepared = BACKEND.prepare_static(module, example)
        state = self._calibrate(module, example, calibrationData, calibrationRows)
        import torch

        step.update(engine=torch.backends.quantized.engine, inputShape=[int(s) for s in example.shape[1:]])
        return self._derive(BACKEND.convert_static(prepared, state), step)

    def compressionReport(self, dataset: DataFrame, baseline: Optional["TorchModel"] = None,
                          labelCol: Optional[str] = None, repeats: int = 3):
        """This model vs ``baseline`` (default: the model it was compressed from, when that happened in
        this process; a loaded model has none) on ``dataset``, as a pandas DataFrame with one row per
        model (baseline first) and the columns:

        - ``model``: ``"baseline"`` or the compression steps (e.g. ``"prune l1_unstructured 0.5 ->
          quantize dynamic qint8"``; ``"as trained"`` for none);
        - ``sizeBytes`` (int): bytes of the serialized weights, what ``save`` writes besides its small
          JSON metadata; ``parameters`` / ``nonZeroParameters`` (int): weight entries, all and non-zero
          (see :func:`sparkml_scale.torch.compression.weight_counts`);
        - ``accuracy`` (share of ``prediction == label``; models with softmax/sigmoid outputs) or
          ``rmse`` (one regression output) on ``dataset``'s rows with a label (``labelCol``, default
          this model's ``labelCol``; NaN when ``dataset`` has no such column);
        - ``rowsPerSecond`` (float): rows through ``transform`` per second of wall time, the best of
          ``repeats`` runs of ``transform(dataset).write.format("noop")`` (the first run also builds the
          module on the workers);
        - ``sizeRatio`` / ``speedup``: the baseline's size over this row's, this row's throughput over
          the baseline's.

        ``dataset`` is cached for the measurement (and unpersisted after) unless it already is.  Raises
        ``ValueError``/``TypeError`` naming the column or param for a bad ``dataset``, ``labelCol`` or
        ``repeats``."""
        import time

        import pandas as pd
        from pyspark.sql import functions as F

        from .compression import weight_counts

        if not isinstance(dataset, DataFrame):
            raise TypeError(f"param 'dataset' must be a DataFrame, got {type(dataset).__name__}")
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
            raise ValueError(f"param 'repeats' must be a positive int, got {repeats!r}")
        if baseline is not None and not isinstance(baseline, TorchModel):
            raise TypeError(f"param 'baseline' must be a TorchModel, got {type(baseline).__name__}")
        if baseline is None:
            baseline = self._baseline
            while baseline is not None and baseline._baseline is not None and baseline._compression:
                baseline = baseline._baseline  # the model as trained, before every step
        label = labelCol or self.getLabelCol()
        has_label = label in dataset.columns
        if labelCol is not None and not has_label:
            check_column(dataset.schema, labelCol, "labelCol")
        cached = dataset.is_cached
        if not cached:
            dataset = dataset.cache()
        rows = []
        try:
            n = dataset.count()
            for name, m in ([("baseline", baseline)] if baseline is not None else []) + [(None, self)]:
                m = m.copy()
                for p in ("predictionCol", "probabilityCol"):  # output names that cannot clash
                    m._set(**{p: f"_compression_report_{p}"})
                out = m.transform(dataset)
                best = float("inf")
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    out.write.format("noop").mode("overwrite").save()
                    best = min(best, time.perf_counter() - t0)
                total, nonzero = weight_counts(m.state_dict())
                steps = " -> ".join(_step_text(s) for s in m._compression) or "as trained"
                row = {"model": name or steps, "sizeBytes": len(m._state), "parameters": total,
                       "nonZeroParameters": nonzero, "rowsPerSecond": n / best if best > 0 else float("nan")}
                pred, kind = F.col("_compression_report_predictionCol"), m._output_kind()
                if kind in ("softmax", "sigmoid"):
                    metric = "accuracy"
                    value = (out.where(F.col(label).isNotNull()).agg(F.avg((pred == F.col(label)).cast("double")))
                             .first()[0] if has_label else None)
                else:
                    metric = "rmse"
                    value = (out.where(F.col(label).isNotNull()).agg(F.sqrt(F.avg((pred - F.col(label)) ** 2)))
                             .first()[0] if has_label and m._num_out() == 1 else None)
                row[metric] = float("nan") if value is None else float(value)
                rows.append(row)
        finally:
            if not cached:
                dataset.unpersist()
        frame = pd.DataFrame(rows)
        frame["sizeRatio"] = frame["sizeBytes"].iloc[0] / frame["sizeBytes"]
        frame["speedup"] = frame["rowsPerSecond"] / frame["rowsPerSecond"].iloc[0]
        return frame

    def _calibrate(self, module, example, df: DataFrame, rows: Optional[int]) -> Dict[str, Any]:
        """Run ``df``'s features through ``module`` prepared for static quantization on the executors
        (one ``mapInArrow`` pass; each task prepares its own copy, the same observers as the driver's);
        the per-partition observer minima/maxima come back as ``torch.save`` bytes, combined here."""
        from .compression import combine_observer_states
        from .inference import _calibrate_fn
        from .worker import load_checkpoint_bytes

        if rows is not None:
            df = df.limit(rows)
        feats = df.select(col(self.getFeaturesCol()).alias("_c0"))
        threads = max(1, int(_conf(df.sparkSession, "spark.task.cpus") or 1))
        fn = _calibrate_fn(module, tuple(example.shape[1:]), self.getFeaturesCol(), self.getInputShape(), self.getInferenceBatchSize(), threads)
        parts = feats.mapInArrow(fn, "stats binary, rows long").collect()
        if not sum(int(r["rows"]) for r in parts):
            raise ValueError(f"param 'calibrationData': no non-null rows in column {self.getFeaturesCol()!r} to "
                             "calibrate on")
        return combine_observer_states(load_checkpoint_bytes(bytes(r["stats"])) for r in parts if r["rows"])

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
            import torch

            m = self.module()
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

    def _executor_model(self, spark=None):
        """What the executors build their module from: the factory (callable); for a model whose recipe
        changes its structure, the driver-built float module with the removed units gone, and for a
        quantized one a factory that quantizes a copy of it (quantized FX modules cannot be pickled)."""
        import functools

        from .compression import apply_structure, build_from
        from .factory import build_module

        model = self._resolved("model", spark)
        shrink = [s for s in self._compression if s.get("shrink")]
        quant = [s for s in self._compression if s["op"] == "quantize"]
        if shrink or quant:
            model = apply_structure(build_module(model), shrink)
        return functools.partial(build_from, model, quant) if quant else model

    def _transform(self, dataset: DataFrame) -> DataFrame:
        from ..core.session import vector_arrow_udf
        from .compression import is_quantized

        self.transformSchema(dataset.schema)
        new = self._output_fields()
        # one torch thread per task core: the tasks of an executor share its cores
        threads = max(1, int(_conf(dataset.sparkSession, "spark.task.cpus") or 1))
        # the driver resolves (and vets) the reference; the executors get the callable (a compressed
        # model: the module skeleton with the recipe's structure, built here)
        model = self._executor_model(dataset.sparkSession)
        use_gpu = "false" if is_quantized(self._compression) else self.getUseGpu().lower()
        # A scalar Arrow UDF over the features column alone (not a mapInArrow pass over whole rows):
        # the other columns stay in the JVM, only the features go to Python and only the outputs come
        # back.  Two outputs: one struct, whose fields are selected (Spark evaluates the call once).
        fn = _predict_udf_fn(model, self._state, self._output_kind(), self.getFeaturesCol(), self.getInputShape(),
                             self.getInferenceBatchSize(), use_gpu, threads)
        ret = new[0].dataType if len(new) == 1 else T.StructType(
            [T.StructField(f"c{i}", f.dataType, True) for i, f in enumerate(new)])
        pred = vector_arrow_udf(dataset.sparkSession, fn, ret)(col(self.getFeaturesCol()))
        if len(new) == 1:
            return dataset.select("*", pred.alias(new[0].name))
        return dataset.select("*", *[pred.getField(f"c{i}").alias(f.name) for i, f in enumerate(new)])

    def _repr_fields(self):
        """``repr``: the module (its factory reference), the number of weights, the epochs trained and
        the last epoch's training/validation metrics, the compression steps; the table adds the loss,
        backend, early stopping and set params.  ``numParameters`` counts the weight entries of the
        state_dict (float or quantized tensors of one dimension or more: parameters and float buffers
        such as BatchNorm statistics; see :func:`~sparkml_scale.torch.compression.weight_counts`)."""
        from .compression import weight_counts

        def num_parameters():
            if getattr(self, "_repr_numel", (None,))[0] is not self._state:  # cached per weights
                numel = weight_counts(self.state_dict())[0]
                self._repr_numel = (self._state, numel)
            return self._repr_numel[1]

        last = self._history[-1] if self._history else {}
        return [
            ("module", self._repr_param("model")), ("numParameters", lazy(num_parameters) if self._state else None),
            ("compression", " -> ".join(_step_text(s) for s in self._compression) or None),
            ("epochsTrained", int(last["epoch"]) + 1 if "epoch" in last else None),
            ("trainLoss", last.get("loss")), ("valLoss", last.get("val_loss")),
            ("valAccuracy", last.get("val_accuracy")), ("loss", detail(self._repr_param("loss"))),
            ("backendUsed", detail(self._backend_used or None)), ("stoppedEarly", detail(self._stopped_early)),
            ("stoppedByCallback", detail(self._stopped_by_callback)), ("bestEpoch", detail(self._best_epoch)),
            ("params", detail(self._repr_params_text())),
        ]
