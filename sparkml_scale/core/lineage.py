"""Data lineage: which table (and which Delta version) a DataFrame was read from.

:func:`sparkml_scale.io.read_table` returns a DataFrame whose logical plan carries a
marker (a ``SubqueryAlias`` named ``sparkml_lineage_<16 hex digits>``) and registers a
:class:`TableLineage` record for it in this process.  The marker survives everything
that keeps the plan (``select``, ``filter``, joins, ``randomSplit``, ``cache``,
``mapInArrow``, the transforms of a ``Pipeline``), because Spark's *analyzed* plan
keeps aliases even where the optimizer substitutes a cached relation.
:func:`lineage_of` finds the markers in ``DataFrame.explain(extended=True)`` output: a
public API on classic and Spark Connect sessions alike, and no Spark job.

Every estimator of this package calls :func:`lineage_of` on its training DataFrame in
``fit`` (through :class:`RecordsLineage`) and stores the records in the model's saved
metadata, so ``Model.load(path).dataLineage`` tells which table version a model was
trained on.  A DataFrame built from scratch (``createDataFrame``, ``toPandas`` round
trips) has no lineage.
"""
from __future__ import annotations

import contextlib
import io
import re
import threading
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional

__all__ = ["TableLineage", "lineage_of", "register", "RecordsLineage"]

_PREFIX = "sparkml_lineage_"
_TOKEN = re.compile(_PREFIX + r"[0-9a-f]{16}")
_REGISTRY: Dict[str, "TableLineage"] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class TableLineage:
    """Where a DataFrame's rows came from.

    Attributes
    ----------
    path : str
        Table location as given to ``read_table`` (absolute for local paths).
    format : str
        ``"delta"``, ``"parquet"`` or ``"csv"``.
    version : int or None
        Delta table version read (the snapshot's version, also when the latest was
        requested); ``None`` for formats without versions.
    timestamp : str or None
        Commit time of that Delta version, ISO 8601 in UTC (``...Z``); ``None`` otherwise.
    engine : str
        ``"delta-spark"``, ``"delta-rs"`` or ``"spark"`` (plain Parquet/CSV).
    as_of : str or None
        The ``timestamp=`` argument of a time-travel read (ISO 8601), if one was given.
    """

    path: str
    format: str
    version: Optional[int] = None
    timestamp: Optional[str] = None
    engine: str = "spark"
    as_of: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TableLineage":
        return cls(**{k: d.get(k) for k in ("path", "format", "version", "timestamp", "engine", "as_of")})


def register(df, record: TableLineage):
    """Return ``df`` marked with ``record`` (an alias in its plan); see :func:`lineage_of`."""
    token = _PREFIX + uuid.uuid4().hex[:16]
    with _LOCK:
        _REGISTRY[token] = record
    return df.alias(token)


_EXPLAIN_LOCK = threading.Lock()


def _plan_text(df) -> str:
    """``df.explain(extended=True)``'s text, without printing it.  Fits run from several driver
    threads at once (HyperparameterSearch's trials), so the plan is never read by swapping
    ``sys.stdout`` while another thread may print: Connect has ``_explain_string``, a classic
    DataFrame its JVM ``queryExecution``; only as a last resort is stdout redirected, under a lock."""
    explain_string = getattr(df, "_explain_string", None)  # Spark Connect: no stdout round trip
    if callable(explain_string):
        return explain_string(extended=True)
    jdf = getattr(df, "_jdf", None)
    if jdf is not None:
        try:
            return str(jdf.queryExecution().toString())
        except Exception:  # noqa: BLE001 - fall back to explain below
            pass
    buf = io.StringIO()
    with _EXPLAIN_LOCK, contextlib.redirect_stdout(buf):
        df.explain(extended=True)
    return buf.getvalue()


def lineage_of(df) -> List[TableLineage]:
    """The tables ``df`` was read from through ``read_table``, in plan order, without duplicates.

    Empty when no table was read through ``read_table`` in this process (then no plan is
    inspected at all) or when ``df`` does not derive from one.  Never raises: lineage is
    metadata, and a plan that cannot be explained gives ``[]``.
    """
    if not _REGISTRY:
        return []
    try:
        text = _plan_text(df)
    except Exception:  # noqa: BLE001 - lineage must never fail a fit
        return []
    out: List[TableLineage] = []
    seen = set()
    for token in _TOKEN.findall(text):
        record = _REGISTRY.get(token)
        if record is not None and record not in seen:
            seen.add(record)
            out.append(record)
    return out


class RecordsLineage:
    """Estimator mixin (list it before ``Estimator``): models remember their training tables.

    After ``fit`` each returned model gets ``_data_lineage`` (a list of
    :meth:`TableLineage.to_dict` records), which :class:`~sparkml_scale.core.persistence.ParamsWriter`
    saves in the metadata and the reader restores; read it as ``model.dataLineage``.
    """

    def fit(self, dataset, params=None):
        models = super().fit(dataset, params)  # type: ignore[misc]
        records = [r.to_dict() for r in lineage_of(dataset)]
        if records:
            for m in models if isinstance(models, list) else [models]:
                m._data_lineage = [dict(r) for r in records]
        return models
