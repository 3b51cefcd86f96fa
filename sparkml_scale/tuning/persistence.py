"""Saving and loading searches and their models without pickle.

Layout (pyspark.ml.tuning's, with JSON instead of Python objects):

- ``path/metadata``: class, uid, the plain params (numTrials, sampler, seed...) and, in the
  extra metadata, the search space (``[{"parent": uid, "param": name, "distribution": Optuna's
  JSON}]``) and, for a model, the trials table, the best trial's number and the timings;
- ``path/estimator`` and ``path/evaluator``: saved with their own writers;
- ``path/bestModel`` (models only): saved with its own writer.

Loading reads the metadata through :class:`~sparkml_scale.core.persistence.ParamsReader` (class
and version checks) and the nested stages through
:func:`~sparkml_scale.core.persistence.load_stage`, which imports only Spark's and
sparkml_scale's classes unless told to trust others (``load(path, trusted=[...])``).
"""
from __future__ import annotations

import os
from typing import Any, Dict, List

from pyspark.ml.util import MLReadable, MLWritable

from ..core.persistence import ModelLoadError, ParamsReader, ParamsWriter, load_stage
from .space import resolve_space, space_from_json, space_to_json

__all__ = ["SearchReadWrite"]

_OBJECT_PARAMS = ("estimator", "evaluator", "searchSpace")


class _SearchWriter(ParamsWriter):
    def saveImpl(self, path: str) -> None:
        super().saveImpl(path)
        inst = self.instance
        for name in ("estimator", "evaluator"):
            if inst.isDefined(name) and inst.getOrDefault(name) is not None:
                inst.getOrDefault(name).write().save(os.path.join(path, name))
        best = getattr(inst, "bestModel", None)
        if best is not None:
            best.write().save(os.path.join(path, "bestModel"))


class _SearchReader(ParamsReader):
    def __init__(self, cls, trusted=None):
        super().__init__(cls)
        self.trusted = trusted

    def load(self, path: str):
        from pyspark.ml.util import DefaultParamsReader

        spark = self.sparkSession
        instance = super().load(path)
        extra = DefaultParamsReader.loadMetadata(path, spark)
        try:
            estimator = load_stage(os.path.join(path, "estimator"), spark, self.trusted)
            evaluator = load_stage(os.path.join(path, "evaluator"), spark, self.trusted)
            instance._set(estimator=estimator, evaluator=evaluator)
            instance._set(searchSpace=space_from_json(extra.get("searchSpace"), estimator))
        except ModelLoadError:
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged save
            raise ModelLoadError(f"{path!r}: cannot load the saved search ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
        if hasattr(instance, "_restore"):
            best = load_stage(os.path.join(path, "bestModel"), spark, self.trusted)
            try:
                instance._restore(extra, best)
            except (TypeError, ValueError, KeyError) as exc:
                raise ModelLoadError(f"{path!r}: the saved trials cannot be read ({exc})") from None
        return instance


class SearchReadWrite(MLReadable, MLWritable):
    """Mixin: ``save``/``load``/``write``/``read`` for the search and its model (see the module
    docstring).  ``load(path, trusted=None)``: ``trusted`` lists modules whose stage classes may be
    imported besides Spark's and sparkml_scale's."""

    def write(self) -> _SearchWriter:
        return _SearchWriter(self)

    @classmethod
    def read(cls, trusted=None) -> _SearchReader:
        return _SearchReader(cls, trusted)

    @classmethod
    def load(cls, path: str, trusted=None):
        return cls.read(trusted).load(path)

    def _json_param_map(self) -> Dict[str, Any]:
        return {p.name: v for p, v in self._paramMap.items() if p.name not in _OBJECT_PARAMS}

    def _extra_metadata(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        if self.isDefined("searchSpace") and self.getOrDefault("searchSpace") is not None:
            out["searchSpace"] = space_to_json(resolve_space(self.getOrDefault("estimator"),
                                                             self.getOrDefault("searchSpace")))
        trials: List[Dict[str, Any]] = getattr(self, "_trials", None)
        if trials is not None and hasattr(self, "_best_number"):
            out.update(trials=trials, bestTrialNumber=self._best_number,
                       searchSeconds=self.searchSeconds, refitSeconds=self.refitSeconds)
        return out
