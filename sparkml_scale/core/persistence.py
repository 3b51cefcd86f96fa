"""Saving and loading stages without pickle.

Layout of a saved stage (the same as pyspark.ml's ``DefaultParamsWriter`` so
that ``Pipeline``/``PipelineModel`` persistence finds it):

- ``path/metadata``: one JSON line (class, uid, params, Spark and package versions)
- ``path/data`` (models only): a Parquet table with one row per numeric array:
  ``name string, dtype string, shape array<bigint>, data binary`` (raw
  little-endian bytes).  Only a fixed set of numeric dtypes is accepted on load.

Everything is written and read through DataFrame APIs, so it works on any
Hadoop-compatible filesystem and under Spark Connect.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Type

import numpy as np
from pyspark.ml.util import (
    DefaultParamsReader,
    DefaultParamsWriter,
    MLReadable,
    MLReader,
    MLWritable,
)

from .._version import __version__
from .errors import ModelLoadError

__all__ = [
    "ParamsWriter",
    "ParamsReader",
    "ParamsReadWrite",
    "ArrayModelReadWrite",
    "ModelLoadError",
]

_DTYPES = {"float64", "float32", "int64", "int32", "int8", "bool"}
_ARRAY_SCHEMA = "name string, dtype string, shape array<bigint>, data binary"




def _version_tuple(v: str):
    out = []
    for part in v.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


class ParamsWriter(DefaultParamsWriter):
    """Writes params as JSON metadata (plus numeric arrays for models).

    ``overwrite()`` works under Spark Connect too (no JVM call).
    """

    def save(self, path: str) -> None:
        if not isinstance(path, str):
            raise TypeError(f"path should be a string, got {type(path).__name__}")
        spark = self.sparkSession
        if self.shouldOverwrite:
            # An empty overwrite clears the directory through the DataFrame writer.
            spark.createDataFrame([], "value string").write.mode("overwrite").text(path)
        elif _path_exists(spark, path):
            raise FileExistsError(
                f"path {path!r} already exists; use write().overwrite().save(path) to replace it"
            )
        self.saveImpl(path)

    def saveImpl(self, path: str) -> None:
        inst = self.instance
        extra = {"sparkmlScaleVersion": __version__}
        extra.update(getattr(inst, "_extra_metadata", lambda: {})())
        lineage = getattr(inst, "_data_lineage", None)
        if lineage:
            extra["dataLineage"] = [dict(r) for r in lineage]
        # Stages whose params may hold Python objects (e.g. a torch module factory) give their
        # JSON form (references, never pickles) through ``_json_param_map``.
        json_params = getattr(inst, "_json_param_map", lambda: None)()
        DefaultParamsWriter.saveMetadata(inst, path, self.sparkSession, extraMetadata=extra, paramMap=json_params)
        arrays = getattr(inst, "_model_arrays", None)
        if arrays is not None:
            rows = []
            for name, arr in arrays().items():
                a = np.ascontiguousarray(arr)
                if a.dtype.name not in _DTYPES:
                    raise TypeError(f"cannot save array {name!r} of dtype {a.dtype}")
                rows.append((name, a.dtype.name, list(a.shape), a.astype(a.dtype.newbyteorder("<")).tobytes()))
            self.sparkSession.createDataFrame(rows, _ARRAY_SCHEMA).coalesce(1).write.parquet(
                os.path.join(path, "data")
            )


def _path_exists(spark, path: str) -> bool:
    if "://" not in path or path.startswith("file://"):
        local = path[len("file://"):] if path.startswith("file://") else path
        return os.path.exists(local)
    try:
        spark.read.text(os.path.join(path, "metadata")).limit(1).collect()
        return True
    except Exception:
        return False


class ParamsReader(MLReader):
    """Loads what :class:`ParamsWriter` wrote, checking class and version first.

    ``load`` raises :class:`ModelLoadError` (a ``ValueError``) naming the path for a missing
    or empty directory, unreadable or non-JSON metadata, a stage of another class (another
    sparkml_scale stage or a Spark MLlib one), a stage saved by a newer sparkml_scale
    version, metadata with missing fields, unknown params or param values of the wrong type,
    and model data that is missing, truncated or whose arrays do not match their shape.
    """

    def __init__(self, cls: Type):
        super().__init__()
        self.cls = cls

    def load(self, path: str):
        spark = self.sparkSession
        try:
            metadata = DefaultParamsReader.loadMetadata(path, spark)
        except Exception as exc:  # missing dir, not text, not JSON
            raise ModelLoadError(
                f"cannot read saved stage metadata at {path!r}: not a saved sparkml_scale stage "
                f"({type(exc).__name__})"
            ) from None
        expected = self.cls.__module__ + "." + self.cls.__name__
        found = metadata.get("class")
        if found != expected:
            raise ModelLoadError(f"{path!r} holds a {found!r}, not a {expected!r}")
        saved_version = metadata.get("sparkmlScaleVersion")
        if saved_version is None:
            raise ModelLoadError(f"{path!r} was not written by sparkml_scale (no version in metadata)")
        if not isinstance(saved_version, str):
            raise ModelLoadError(f"{path!r}: metadata field 'sparkmlScaleVersion' is not a version string: "
                                 f"{saved_version!r:.80}")
        if not isinstance(metadata.get("uid"), str):
            raise ModelLoadError(f"{path!r}: metadata field 'uid' is missing or not a string")
        if _version_tuple(saved_version)[:2] > _version_tuple(__version__)[:2]:
            raise ModelLoadError(
                f"{path!r} was saved by sparkml_scale {saved_version}, newer than the installed "
                f"{__version__}; upgrade the package to load it"
            )
        arrays: Optional[Dict[str, np.ndarray]] = None
        if hasattr(self.cls, "_from_arrays"):
            arrays = _read_arrays(spark, os.path.join(path, "data"))
            instance = self.cls._from_arrays(arrays, metadata)
        else:
            instance = self.cls()
        instance._resetUid(metadata["uid"])
        _set_params(instance, metadata, path)
        lineage = metadata.get("dataLineage")
        if lineage:
            if not isinstance(lineage, list) or not all(isinstance(r, dict) for r in lineage):
                raise ModelLoadError(f"{path!r}: metadata field 'dataLineage' is not a list of records")
            instance._data_lineage = [dict(r) for r in lineage]
        return instance


def _set_params(instance, metadata: Dict[str, Any], path: str) -> None:
    """``DefaultParamsReader.getAndSetParams``, raising ``ModelLoadError`` naming the param for an
    unknown param name or a value its type converter rejects."""
    for section, setter in (("paramMap", instance.set), ("defaultParamMap", None)):
        params = metadata.get(section, {})
        if not isinstance(params, dict):
            raise ModelLoadError(f"{path!r}: metadata field {section!r} is not a JSON object")
        for name, value in params.items():
            if not instance.hasParam(name):
                raise ModelLoadError(
                    f"{path!r}: metadata field {section!r} names param {name!r}, which "
                    f"{type(instance).__name__} does not have"
                )
            try:
                if setter is not None:
                    setter(instance.getParam(name), value)
                else:
                    instance._setDefault(**{name: value})
            except (TypeError, ValueError) as exc:
                raise ModelLoadError(
                    f"{path!r}: param {name!r} in metadata field {section!r} has a bad value {value!r:.80} "
                    f"({str(exc)[:200]})"
                ) from None


def _read_arrays(spark, path: str) -> Dict[str, np.ndarray]:
    try:
        rows = spark.read.schema(_ARRAY_SCHEMA).parquet(path).collect()
    except Exception as exc:
        raise ModelLoadError(f"cannot read model data at {path!r} ({type(exc).__name__})") from None
    out: Dict[str, np.ndarray] = {}
    for r in rows:
        if (r["dtype"] not in _DTYPES or r["shape"] is None or r["data"] is None
                or any(s is None or s < 0 for s in r["shape"])):
            raise ModelLoadError(f"model data at {path!r} is corrupted (array {r['name']!r})")
        dt = np.dtype(r["dtype"]).newbyteorder("<")
        shape = tuple(int(s) for s in r["shape"])
        if int(np.prod(shape, dtype=np.int64)) * dt.itemsize != len(r["data"]):
            raise ModelLoadError(f"model data at {path!r} is corrupted (array {r['name']!r} size)")
        out[r["name"]] = np.frombuffer(r["data"], dtype=dt).reshape(shape).astype(dt.newbyteorder("="))
    return out


class ParamsReadWrite(MLReadable, MLWritable):
    """Mixin: ``save``/``load``/``write``/``read`` for stages, JSON + numeric arrays, no pickle."""

    def write(self) -> ParamsWriter:
        return ParamsWriter(self)

    @property
    def dataLineage(self) -> List[Dict[str, Any]]:
        """Tables this model was fitted on, as read by :func:`sparkml_scale.io.read_table`.

        A list of dicts with keys ``path``, ``format``, ``version`` (Delta version or
        ``None``), ``timestamp`` (that version's commit time, ISO 8601 UTC), ``engine``
        and ``as_of``; empty when the training data did not come from ``read_table``.
        Saved with the model and restored by ``load``.
        """
        return [dict(r) for r in getattr(self, "_data_lineage", None) or []]

    @classmethod
    def read(cls) -> ParamsReader:
        return ParamsReader(cls)


# Models mix in the same class; they add ``_model_arrays()`` and ``_from_arrays()``.
ArrayModelReadWrite = ParamsReadWrite



#: Class-path prefixes :func:`load_stage` loads without being told to trust them: Spark's own
#: stages and this package's.
TRUSTED_STAGE_PREFIXES = ("pyspark.ml.", "org.apache.spark.ml.", "sparkml_scale.")
_PIPELINES = ("pyspark.ml.pipeline.Pipeline", "pyspark.ml.pipeline.PipelineModel", "pyspark.ml.Pipeline",
              "pyspark.ml.PipelineModel", "org.apache.spark.ml.Pipeline", "org.apache.spark.ml.PipelineModel")


def _stage_classes(spark, path: str, depth: int = 0) -> List[str]:
    """Class names in the metadata of the stage saved at ``path`` and, for pipelines, of every
    stage inside (read from the metadata files only; nothing is imported)."""
    try:
        metadata = DefaultParamsReader.loadMetadata(path, spark)
    except Exception as exc:  # noqa: BLE001 - missing dir, not text, not JSON
        raise ModelLoadError(f"cannot read saved stage metadata at {path!r} ({type(exc).__name__})") from None
    cls = metadata.get("class")
    if not isinstance(cls, str):
        raise ModelLoadError(f"{path!r}: metadata has no class name")
    out = [cls]
    if cls in _PIPELINES and depth < 16:
        uids = (metadata.get("paramMap") or {}).get("stageUids")
        if not isinstance(uids, list) or not all(isinstance(u, str) for u in uids):
            raise ModelLoadError(f"{path!r}: pipeline metadata has no list of stage uids ('stageUids')")
        width = len(str(len(uids)))
        for i, uid in enumerate(uids):
            out += _stage_classes(spark, os.path.join(path, "stages", f"{i:0{width}d}_{uid}"), depth + 1)
    return out


def _trusted_modules(trusted, spark) -> tuple:
    """Module names from ``trusted`` (a comma-separated string or a list of ``"package.module"``
    / ``"package.module:qualname"`` strings), the Spark conf and the environment variable."""
    from .cluster import conf_value

    if trusted is not None and not isinstance(trusted, (str, list, tuple)):
        raise TypeError(f"trusted must be a list of 'package.module' strings, got {type(trusted).__name__}")
    items = list(trusted.split(",") if isinstance(trusted, str) else trusted or [])
    try:
        items += (conf_value(spark, "spark.sparkml_scale.trusted") or "").split(",")
    except Exception:  # noqa: BLE001 - no readable conf
        pass
    items += os.environ.get("SPARKML_SCALE_TRUSTED", "").split(",")
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"trusted: entries must be strings, got {item!r:.80}")
    return tuple(i.strip().partition(":")[0] for i in items if i.strip())


def load_stage(path: str, spark, trusted=None):
    """Load the pyspark.ml stage (Estimator, Model, Evaluator, Pipeline...) saved at ``path``,
    whatever its class, importing only classes the user trusts.

    Before anything is imported, the class named in its metadata -- and, for a ``Pipeline`` or
    ``PipelineModel``, of every stage inside -- must be Spark's (``pyspark.ml.*``, JVM
    ``org.apache.spark.ml.*``) or sparkml_scale's, or sit in a module listed in ``trusted``
    (``["package.module", ...]``), the Spark conf ``spark.sparkml_scale.trusted`` or the
    environment variable ``SPARKML_SCALE_TRUSTED``.  Raises :class:`ModelLoadError` naming the
    path and the class otherwise.  (pyspark's own ``DefaultParamsReader.loadParamsInstance``
    imports whatever class the metadata names.)
    """
    entries = _trusted_modules(trusted, spark)
    for cls in _stage_classes(spark, path):
        module = cls.rpartition(".")[0]
        if cls.startswith(TRUSTED_STAGE_PREFIXES) or any(module == e or module.startswith(e + ".") for e in entries):
            continue
        raise ModelLoadError(f"{path!r} holds a stage of class {cls!r}, which is not trusted: only Spark's and "
                             "sparkml_scale's stages load unless their module is listed in trusted=[...], the Spark "
                             "conf 'spark.sparkml_scale.trusted' or $SPARKML_SCALE_TRUSTED")
    return DefaultParamsReader.loadParamsInstance(path, spark)
