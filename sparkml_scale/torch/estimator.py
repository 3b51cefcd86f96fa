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
import hashlib
import logging
import os
import re
from typing import Any, Dict, List, Optional

import numpy as np
import pyarrow as pa
from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.linalg import VectorUDT
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasFeaturesCol, HasLabelCol, HasPredictionCol, HasProbabilityCol, HasSeed
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from ..core.cluster import conf_value as _conf, task_slots
from ..core.faults import maybe_fail
from ..core.persistence import ModelLoadError, ParamsReader, ParamsReadWrite
from ..core.lineage import RecordsLineage
from ..core.schema import check_column, check_new_column, col, distinct_names
from .factory import Trust, configured_trust, reference_of, resolve, trust_passed, trusted_entries
from .loop import LOSSES

__all__ = ["TorchEstimator", "TorchModel"]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch_distributor", "horovod")
_REF_PARAMS = ("model", "optimizer", "loss")


class _TorchParams(HasFeaturesCol, HasLabelCol, HasPredictionCol, HasProbabilityCol, HasSeed):
    model: "Param[Any]" = Param(
        Params._dummy(), "model",
        "the network: a torch.nn.Module, a zero-argument factory returning one, or 'package.module:factory'")
    optimizer: "Param[Any]" = Param(
        Params._dummy(), "optimizer",
        "optimizer: a name (adam, adamw, sgd, rmsprop, adagrad), a factory f(parameters) or a reference; "
        "unset = Adam")
    loss: "Param[Any]" = Param(
        Params._dummy(), "loss", "loss: 'cross_entropy', 'mse', 'bce_with_logits', a callable loss(output, "
        "target) or 'package.module:function'")
    inputShape: "Param[List[int]]" = Param(
        Params._dummy(), "inputShape", "shape of one input row, e.g. [1, 28, 28]; unset = a flat vector",
        typeConverter=TypeConverters.toListInt)
    batchSize: "Param[int]" = Param(Params._dummy(), "batchSize",
                                    "global mini-batch size (rows per optimizer step, over all processes)",
                                    typeConverter=TypeConverters.toInt)
    epochs: "Param[int]" = Param(Params._dummy(), "epochs", "passes over the training rows (>= 1)",
                                 typeConverter=TypeConverters.toInt)
    learningRate: "Param[float]" = Param(Params._dummy(), "learningRate", "learning rate (> 0)",
                                         typeConverter=TypeConverters.toFloat)
    numProc: "Param[int]" = Param(Params._dummy(), "numProc", "training processes (barrier tasks), >= 1",
                                  typeConverter=TypeConverters.toInt)
    backend: "Param[str]" = Param(Params._dummy(), "backend",
                                  "'auto' (horovod when it imports with Gloo, else torch_distributor), "
                                  "'torch_distributor' or 'horovod'", typeConverter=TypeConverters.toString)
    useGpu: "Param[str]" = Param(Params._dummy(), "useGpu",
                                 "'auto' (CUDA when the executors have it), 'true' or 'false'",
                                 typeConverter=TypeConverters.toString)
    validationFraction: "Param[float]" = Param(
        Params._dummy(), "validationFraction", "share of rows held out for validation, in [0, 1)",
        typeConverter=TypeConverters.toFloat)
    validationCol: "Param[str]" = Param(Params._dummy(), "validationCol",
                                        "boolean column: true marks a validation row (instead of validationFraction)",
                                        typeConverter=TypeConverters.toString)
    earlyStoppingPatience: "Param[int]" = Param(
        Params._dummy(), "earlyStoppingPatience",
        "stop after this many epochs without a lower validation loss and keep the best weights (0 = off)",
        typeConverter=TypeConverters.toInt)
    checkpointDir: "Param[str]" = Param(Params._dummy(), "checkpointDir",
                                        "directory for one checkpoint per epoch (visible to rank 0 and the driver)",
                                        typeConverter=TypeConverters.toString)
    resumeFromCheckpoint: "Param[bool]" = Param(
        Params._dummy(), "resumeFromCheckpoint", "continue from the last checkpoint in checkpointDir",
        typeConverter=TypeConverters.toBoolean)
    frozenLayers: "Param[List[str]]" = Param(
        Params._dummy(), "frozenLayers", "parameter name prefixes not to train (e.g. ['features'])",
        typeConverter=TypeConverters.toListString)
    inferenceBatchSize: "Param[int]" = Param(Params._dummy(), "inferenceBatchSize",
                                             "rows per forward pass in transform", typeConverter=TypeConverters.toInt)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._setDefault(loss="cross_entropy", batchSize=64, epochs=10, learningRate=1e-3, numProc=1,
                         backend="auto", useGpu="auto", validationFraction=0.0, earlyStoppingPatience=0,
                         resumeFromCheckpoint=False, frozenLayers=[], inferenceBatchSize=256, seed=42)

    # getters -------------------------------------------------------------------------------
    def getModel(self) -> Any:
        return self.getOrDefault(self.model)

    def getOptimizer(self) -> Any:
        return self.getOrDefault(self.optimizer) if self.isDefined(self.optimizer) else None

    def getLoss(self) -> Any:
        return self.getOrDefault(self.loss)

    def getInputShape(self) -> Optional[List[int]]:
        return self.getOrDefault(self.inputShape) if self.isDefined(self.inputShape) else None

    def getBatchSize(self) -> int:
        return self.getOrDefault(self.batchSize)

    def getEpochs(self) -> int:
        return self.getOrDefault(self.epochs)

    def getLearningRate(self) -> float:
        return self.getOrDefault(self.learningRate)

    def getNumProc(self) -> int:
        return self.getOrDefault(self.numProc)

    def getBackend(self) -> str:
        return self.getOrDefault(self.backend)

    def getUseGpu(self) -> str:
        return self.getOrDefault(self.useGpu)

    def getValidationFraction(self) -> float:
        return self.getOrDefault(self.validationFraction)

    def getValidationCol(self) -> Optional[str]:
        return self.getOrDefault(self.validationCol) if self.isDefined(self.validationCol) else None

    def getEarlyStoppingPatience(self) -> int:
        return self.getOrDefault(self.earlyStoppingPatience)

    def getCheckpointDir(self) -> Optional[str]:
        return self.getOrDefault(self.checkpointDir) if self.isDefined(self.checkpointDir) else None

    def getResumeFromCheckpoint(self) -> bool:
        return self.getOrDefault(self.resumeFromCheckpoint)

    def getFrozenLayers(self) -> List[str]:
        return self.getOrDefault(self.frozenLayers)

    def getInferenceBatchSize(self) -> int:
        return self.getOrDefault(self.inferenceBatchSize)

    # checks --------------------------------------------------------------------------------
    def _loss_name(self) -> Optional[str]:
        loss = self.getLoss()
        return loss if isinstance(loss, str) and loss in LOSSES else None

    def _check_loss(self) -> None:
        loss = self.getLoss()
        if isinstance(loss, str) and loss not in LOSSES and ":" not in loss:
            raise ValueError(f"param 'loss' must be one of {', '.join(LOSSES)}, a callable or "
                             f"'package.module:function', got {loss!r}")
        if not isinstance(loss, (str, dict)) and not callable(loss):
            raise TypeError(f"param 'loss' must be a name or a callable, got {type(loss).__name__}")

    def _check_features(self, schema: T.StructType) -> None:
        col = self.getFeaturesCol()
        dt = check_column(schema, col, "featuresCol")
        ok = isinstance(dt, VectorUDT) or (isinstance(dt, T.ArrayType) and isinstance(dt.elementType, T.NumericType))
        if not ok:
            raise TypeError(f"column {col!r} (param 'featuresCol') must be a vector or an array of numbers, "
                            f"got {dt.simpleString()}")
        shape = self.getInputShape()
        if shape is not None and (not shape or any(s < 1 for s in shape)):
            raise ValueError(f"param 'inputShape' must be a non-empty list of positive sizes, got {shape}")
        if self.getInferenceBatchSize() < 1:
            raise ValueError(f"param 'inferenceBatchSize' must be >= 1, got {self.getInferenceBatchSize()}")

    def _json_param_map(self) -> Dict[str, Any]:
        """Params as JSON for saving: module factory, optimizer and loss as import references
        (a callable's reference is trusted in this process: the user gave that callable)."""
        out: Dict[str, Any] = {}
        for p, v in self._paramMap.items():
            if p.name in _REF_PARAMS and not isinstance(v, (str, dict)) and v is not None:
                ref = reference_of(v)
                if ref is None:
                    raise ValueError(
                        f"param {p.name!r} holds {v!r}, which cannot be saved: saved stages refer to code by "
                        "import path, never by pickle. Pass a module-level factory (or a functools.partial of "
                        "one with JSON arguments) or a 'package.module:factory' string")
                trust_passed(v)
                v = ref
            out[p.name] = v
        return out

    # trust ---------------------------------------------------------------------------------
    #: Exact references vetted when this stage was loaded (trusted by the ``load`` call).
    _vetted: frozenset = frozenset()

    def _trust(self, spark=None) -> Trust:
        """What this stage may resolve on the driver: the references vetted at its load, and the
        Spark conf / environment entries (plus the built-in rules and callables given in this process)."""
        return Trust(sorted(self._vetted) + list(configured_trust(spark)))

    def _resolved(self, name: str, spark=None):
        """Param ``name`` with a reference replaced by the callable it names (if trusted)."""
        value = self.getOrDefault(name) if self.isDefined(name) else None
        if isinstance(value, dict) or (isinstance(value, str) and ":" in value):
            return resolve(value, name, self._trust(spark))
        return value

    def _copyValues(self, to, extra=None):
        to = super()._copyValues(to, extra)
        if isinstance(to, _TorchParams):  # a model fitted by a loaded estimator keeps what its load vetted
            to._vetted = to._vetted | self._vetted
        return to

    @classmethod
    def read(cls, trusted=None) -> "_TorchReader":
        """A reader that resolves only trusted references (see :meth:`load`)."""
        return _TorchReader(cls, trusted)

    @classmethod
    def load(cls, path: str, trusted=None):
        """Load a saved stage.  Its module factory, optimizer and loss references are checked and
        imported (never called) here, and only trusted ones are: built in, ``model``:
        :mod:`sparkml_scale.torch.models` factories and ``torch.nn`` module classes, ``optimizer``:
        ``torch.optim`` optimizers, ``loss``: ``torch.nn.functional`` functions; references of
        callables given to a stage in this process; and the entries of ``trusted`` (a list, or a
        comma-separated string, of ``"package.module"``, which trusts what that module and its
        submodules define, or ``"package.module:qualname"``, which trusts exactly that; modules and
        callables are taken too), of the Spark conf ``spark.sparkml_scale.trusted`` and of the
        environment variable ``SPARKML_SCALE_TRUSTED`` (``PipelineModel.load`` reads these two).

        Raises :class:`~sparkml_scale.core.persistence.ModelLoadError` (a ``ValueError``) naming the
        path and the reference, and how to trust it, for an untrusted, malformed or unimportable
        reference (nothing is imported from an untrusted module and nothing is called), and for the
        other problems listed in :class:`~sparkml_scale.core.persistence.ParamsReader`;
        ``TypeError``/``ValueError`` naming ``trusted`` for a bad ``trusted`` value.
        """
        return cls.read(trusted).load(path)


class _TorchReader(ParamsReader):
    """:class:`ParamsReader` that vets the loaded stage's references (before anything calls them)."""

    def __init__(self, cls, trusted=None):
        super().__init__(cls)
        self.trusted = trusted_entries(trusted)

    def load(self, path: str):
        instance = super().load(path)
        trust = Trust(self.trusted + configured_trust(self.sparkSession))
        vetted = set()
        for name in _REF_PARAMS:
            param = instance.getParam(name)
            for values in (instance._paramMap, instance._defaultParamMap):
                value = values.get(param)
                if isinstance(value, dict) or (isinstance(value, str) and ":" in value):
                    try:
                        vetted.update(trust.vet(value, name))
                    except ValueError as exc:  # untrusted (ModelLoadError), malformed or not importable
                        raise ModelLoadError(f"{path!r}: {exc}") from None
        instance._vetted = frozenset(vetted)
        return instance


class TorchEstimator(RecordsLineage, _TorchParams, Estimator, ParamsReadWrite):
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
                 seed=42) -> None:
        super().__init__()
        self._set_passed(**{k: v for k, v in self._input_kwargs.items() if v is not None})

    @keyword_only
    def setParams(self, *, model=None, optimizer=None, loss=None, featuresCol=None, labelCol=None,
                  predictionCol=None, probabilityCol=None, inputShape=None, batchSize=None, epochs=None,
                  learningRate=None, numProc=None, backend=None, useGpu=None, validationFraction=None,
                  validationCol=None, earlyStoppingPatience=None, checkpointDir=None, resumeFromCheckpoint=None,
                  frozenLayers=None, inferenceBatchSize=None, seed=None) -> "TorchEstimator":
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
                log.info("resuming from %s (epoch %d done)", last, int(state["epoch"]))
                if int(state["epoch"]) + 1 >= self.getEpochs():
                    log.info("the checkpoint already has %d epochs (param 'epochs' = %d): nothing to train",
                             int(state["epoch"]) + 1, self.getEpochs())
                    return self._model_from_checkpoint(state)
        backend = self._resolve_backend()
        check_slots(spark, num_proc)
        self._check_checkpoint_dir()
        cols = [self.getFeaturesCol(), self.getLabelCol()] + ([self.getValidationCol()] if self.getValidationCol() else [])
        # positional aliases: Spark's mapInArrow rejects column names with dots or backticks
        df = dataset.select(*[col(c).alias(f"_c{i}") for i, c in enumerate(cols)])
        spec = self._spec(spark, num_proc, resume)
        spec["columnNames"] = cols
        result = launch(df, spec, num_proc, backend, self._gpu_wanted(spark))
        for m in result["history"]:
            log.info("epoch %d: %s", int(m["epoch"]), {k: round(v, 5) for k, v in m.items() if k != "epoch"})
        model = TorchModel._create(result["state"], result["history"], int(result["num_outputs"]),
                                   backend, bool(result.get("stopped_early")), result.get("best_epoch"))
        return self._copyValues(model)

    def _model_from_checkpoint(self, state: Dict[str, Any]) -> "TorchModel":
        import io

        import torch

        weights = state.get("best_model") if self.getEarlyStoppingPatience() > 0 and "best_model" in state else state["model"]
        buf = io.BytesIO()
        torch.save(weights, buf)
        model = TorchModel._create(buf.getvalue(), list(state.get("history", [])), -1, "checkpoint", False, None)
        return self._copyValues(model)


class TorchModel(_TorchParams, Model, ParamsReadWrite):
    """A trained network: ``transform`` adds predictions by batched inference.

    Output columns, by ``loss``:

    - ``"cross_entropy"``: ``predictionCol`` (double, argmax class) and ``probabilityCol``
      (dense vector, softmax);
    - ``"bce_with_logits"`` with one output: ``predictionCol`` (1.0 when the logit > 0) and
      ``probabilityCol`` (``[1 - p, p]``);
    - anything else (``"mse"``, callables): ``predictionCol`` = the output (double for one
      output, dense vector otherwise).

    Null feature rows give null outputs.  ``history`` holds the per-epoch training metrics.

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

    @classmethod
    def _create(cls, state: bytes, history, num_outputs: int, backend: str, stopped_early: bool,
                best_epoch) -> "TorchModel":
        m = cls()
        m._state = bytes(state)
        m._history = [dict(h) for h in history]
        m._num_outputs = int(num_outputs)
        m._backend_used = backend
        m._stopped_early = bool(stopped_early)
        m._best_epoch = None if best_epoch is None else int(best_epoch)
        return m

    def copy(self, extra=None) -> "TorchModel":
        that = super().copy(extra)
        for a in ("_state", "_history", "_num_outputs", "_backend_used", "_stopped_early", "_best_epoch"):
            setattr(that, a, getattr(self, a))
        return that

    # persistence ---------------------------------------------------------------------------
    def _model_arrays(self) -> Dict[str, np.ndarray]:
        return {"torch_state": np.frombuffer(self._state, dtype=np.int8)}

    def _extra_metadata(self) -> Dict[str, Any]:
        return {"history": self._history, "numOutputs": self._num_outputs, "backendUsed": self._backend_used,
                "stoppedEarly": self._stopped_early, "bestEpoch": self._best_epoch}

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
                           metadata.get("bestEpoch"))

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


#: Modules built by Python workers, by (weights hash, device); a worker builds each model once.
_MODULES: Dict[Any, Any] = {}


def _cached_module(model_spec, state: bytes, key: str, use_gpu: str):
    from .factory import build_module
    from .loop import pick_device
    from .worker import load_checkpoint_bytes

    device = pick_device(use_gpu)
    k = (key, str(device))
    if k not in _MODULES:
        if len(_MODULES) >= 4:
            _MODULES.pop(next(iter(_MODULES)))
        m = build_module(model_spec)
        m.load_state_dict(load_checkpoint_bytes(state))
        _MODULES[k] = (m.to(device).eval(), device)
    return _MODULES[k]


def _predict_fn(model_spec, state: bytes, kind: str, col: str, col_index: int, input_shape, batch: int,
                use_gpu: str, new_names: List[str], threads: int):
    key = hashlib.sha1(state).hexdigest()

    def predict(batches):
        import torch

        from .data import features_to_float32

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        module, device = _cached_module(model_spec, state, key, use_gpu)
        for b in batches:
            maybe_fail("transform.batch")
            feats = b.column(col_index)
            valid = feats.is_valid().to_numpy(zero_copy_only=False) if feats.null_count else None
            X = features_to_float32(feats.filter(feats.is_valid()) if valid is not None else feats, col, input_shape)
            outs = []
            with torch.no_grad():
                for s in range(0, len(X), batch):
                    outs.append(module(torch.from_numpy(np.ascontiguousarray(X[s:s + batch])).to(device)).float().cpu())
            out = torch.cat(outs).numpy().astype(np.float64) if outs else np.zeros((0, 1))
            if out.ndim == 1:
                out = out[:, None]
            new = _outputs(out, kind)
            if valid is not None:
                idx = np.full(len(valid), -1, dtype=np.int64)
                idx[valid] = np.arange(int(valid.sum()))
                take = pa.array(idx, mask=~valid)
                new = [a.take(take) for a in new]
            yield pa.RecordBatch.from_arrays(list(b.columns) + new, names=list(b.schema.names) + new_names)

    return predict


def _outputs(out: np.ndarray, kind: str) -> List[pa.Array]:
    from ..core.arrow import dense_to_vectors

    if kind == "softmax":
        p = np.exp(out - out.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        return [pa.array(out.argmax(axis=1).astype(np.float64)), dense_to_vectors(p)]
    if kind == "sigmoid":
        p = 1.0 / (1.0 + np.exp(-out[:, 0]))
        return [pa.array((out[:, 0] > 0).astype(np.float64)), dense_to_vectors(np.column_stack([1 - p, p]))]
    if out.shape[1] == 1:
        return [pa.array(out[:, 0])]
    return [dense_to_vectors(out)]
