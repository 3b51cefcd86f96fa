"""Schema checks run on the driver before any Spark job."""
from __future__ import annotations

from typing import Iterable

from pyspark.sql import types as T

__all__ = ["check_column", "check_new_column", "check_vector_column", "check_numeric_column"]


def check_column(schema: T.StructType, name: str, param: str) -> T.DataType:
    """Return the type of column ``name``; ``ValueError`` naming ``param`` if it is missing."""
    if not name:
        raise ValueError(f"param {param!r} is empty: set it to a column name")
    if name not in schema.names:
        raise ValueError(
            f"column {name!r} (param {param!r}) is not in the DataFrame; available columns: {schema.names}"
        )
    return schema[name].dataType


def check_vector_column(schema: T.StructType, name: str, param: str) -> None:
    from pyspark.ml.linalg import VectorUDT

    dt = check_column(schema, name, param)
    if not isinstance(dt, VectorUDT):
        raise TypeError(
            f"column {name!r} (param {param!r}) must be of type vector (pyspark.ml.linalg.VectorUDT), "
            f"got {dt.simpleString()}; assemble features with VectorAssembler or FeatureHasher first"
        )


def check_numeric_column(schema: T.StructType, name: str, param: str) -> None:
    dt = check_column(schema, name, param)
    if not isinstance(dt, (T.NumericType, T.BooleanType)):
        raise TypeError(f"column {name!r} (param {param!r}) must be numeric, got {dt.simpleString()}")


def check_new_column(schema: T.StructType, name: str, param: str) -> None:
    if name in schema.names:
        raise ValueError(f"output column {name!r} (param {param!r}) already exists in the DataFrame")


def distinct_names(names: Iterable[str], param: str) -> None:
    seen = set()
    for n in names:
        if n in seen:
            raise ValueError(f"param {param!r} names column {n!r} twice")
        seen.add(n)
