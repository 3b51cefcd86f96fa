"""The params shared by :class:`~sparkml_scale.torch.estimator.TorchEstimator` and
:class:`~sparkml_scale.torch.estimator.TorchModel`, and the reader that vets what a load brings in.

- ``_TorchParams``: the param declarations (``model``, ``optimizer``, ``loss``, ``inputShape``,
  ``batchSize``, ..., ``inferenceBatchSize``) with their defaults and getters; the checks both
  stages run (``_check_loss``: ``ValueError``/``TypeError`` naming param ``loss``;
  ``_check_features``: ``ValueError``/``TypeError`` naming the features column or param
  ``inputShape``/``inferenceBatchSize``); ``_json_param_map`` (params as JSON for saving, the
  callables of ``model``/``optimizer``/``loss`` as import references, ``ValueError`` for one that
  has none); and trust: ``_resolved(name)`` turns a reference param into its callable only when
  it is trusted (else :class:`~sparkml_scale.core.persistence.ModelLoadError`), ``load(path,
  trusted=...)`` / ``read(trusted)``.
- ``_TorchReader``: the :class:`~sparkml_scale.core.persistence.ParamsReader` behind ``load``; it
  vets every reference of the loaded stage (``ModelLoadError`` naming the path) before anything
  imports or calls it, and records the vetted ones on the stage.
- ``_EpochCallbackParam``: ``TorchEstimator``'s runtime hook ``epochCallback`` (a callable run on
  the driver after each epoch; never saved, so never a reference to vet).
- ``BACKENDS`` (values of param ``backend``), ``_REF_PARAMS`` (the params that may hold code
  references) and ``_RUNTIME_PARAMS`` (the params ``save`` skips).

The stage classes themselves stay in :mod:`sparkml_scale.torch.estimator`: saved stages record
that class path.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from pyspark.ml.linalg import VectorUDT
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasFeaturesCol, HasLabelCol, HasPredictionCol, HasProbabilityCol, HasSeed
from pyspark.sql import types as T

from ..core.persistence import ModelLoadError, ParamsReader
from ..core.schema import check_column
from .factory import Trust, configured_trust, reference_of, resolve, trust_passed, trusted_entries
from .loop import LOSSES

BACKENDS = ("auto", "torch_distributor", "horovod")
_REF_PARAMS = ("model", "optimizer", "loss")
#: Runtime hooks: kept by ``copy()`` and param maps, never written by ``save`` (a loaded stage has them unset).
_RUNTIME_PARAMS = ("epochCallback",)


def _to_callback(value: Any) -> Any:
    if value is not None and not callable(value):
        raise TypeError(f"param 'epochCallback' must be a callable fn(record) -> bool or None, "
                        f"got {type(value).__name__}")
    return value


class _EpochCallbackParam(Params):
    """``epochCallback`` (``TorchEstimator`` only: a fitted ``TorchModel`` does not carry it)."""

    epochCallback: "Param[Any]" = Param(
        Params._dummy(), "epochCallback",
        "fn(record: dict) -> bool|None, called on the driver after each epoch with that epoch's metrics "
        "(keys as in TorchModel.history: epoch, loss, samples, seconds, samples_per_s, and val_loss/"
        "val_accuracy with validation rows); returning True stops training after that epoch on every "
        "process (the model is that epoch's, or the best one with earlyStoppingPatience). An exception is "
        "logged and counts as 'continue'. A runtime hook: not saved. When the training processes cannot "
        "reach the driver (a Spark Connect client on another machine) it is called after the fit for each "
        "epoch and cannot stop training. Unset = none",
        typeConverter=_to_callback)

    def getEpochCallback(self) -> Any:
        return self.getOrDefault(self.epochCallback) if self.isDefined(self.epochCallback) else None


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
        (a callable's reference is trusted in this process: the user gave that callable); the
        runtime hooks (``_RUNTIME_PARAMS``: ``epochCallback``) are left out."""
        out: Dict[str, Any] = {}
        for p, v in self._paramMap.items():
            if p.name in _RUNTIME_PARAMS:
                continue  # a callable run in this process only: never written
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
