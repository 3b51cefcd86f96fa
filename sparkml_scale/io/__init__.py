"""Table input/output with data-version lineage: Delta Lake (two engines), Parquet, CSV.

>>> df, lineage = read_table(spark, "/data/flights", format="delta", version=3)
>>> model = LogisticRegression().fit(prepare(df))
>>> model.dataLineage          # [{'path': '/data/flights', 'format': 'delta', 'version': 3, ...}]
>>> write_table(model.transform(df).select(...), "/data/preds", mode="append").version

Delta engines (:func:`delta_engine`): Delta Lake's Spark data source when its jars are
on the classpath (``jars/README.md``), otherwise the ``deltalake`` (delta-rs) package
for the transaction log with Spark doing the Parquet I/O.  Tables written through
either are ordinary Delta tables.
"""
from ..core.lineage import TableLineage, lineage_of
from .common import TableNotFoundError, TableWriteError, WriteConflictError
from .tables import ENGINE_ENV, delta_engine, read_table, write_table

__all__ = [
    "read_table",
    "write_table",
    "delta_engine",
    "lineage_of",
    "model_lineage",
    "TableLineage",
    "TableNotFoundError",
    "TableWriteError",
    "WriteConflictError",
    "ENGINE_ENV",
]


def model_lineage(model):
    """Lineage records of a fitted model or ``PipelineModel`` (all stages, without duplicates)."""
    stages = getattr(model, "stages", None)
    out = []
    for m in stages if isinstance(stages, list) else [model]:
        for r in getattr(m, "dataLineage", []) or []:
            if r not in out:
                out.append(r)
    return out
