"""Schema checks run on the driver before any Spark job, and column references that quote names.

Column names may hold dots, spaces or backticks: ``F.col("a.b")`` reads a field ``b`` of a
struct ``a``, so every stage refers to its columns through :func:`col` (or :func:`quote` in
SQL text), never ``F.col(name)``.
"""
from __future__ import annotations

from typing import Iterable

from pyspark.sql import types as T

__all__ = ["check_column", "check_new_column", "check_vector_column", "check_numeric_column", "quote", "col",
           "check_roles"]


def quote(name: str) -> str:
    """``name`` as a backtick-quoted identifier (embedded backticks doubled), for SQL text and
    ``F.col``: ``a.b`` -> ```a.b```."""
    return "`" + name.replace("`", "``") + "`"


def col(name: str):
    """``pyspark.sql.functions.col`` of the column literally named ``name`` (dots, spaces and
    backticks included)."""
    from pyspark.sql import functions as F

    return F.col(quote(name))


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


#: Column roles a stage can declare (``_input_roles``), with the check each role's column gets.
ROLE_CHECKS = {"vector": check_vector_column, "numeric": check_numeric_column, "any": check_column}


def check_roles(stage, schema: T.StructType, roles, outputs=()) -> None:
    """Check ``schema`` against a stage's declared column roles before any Spark job.

    ``roles``: ``(param name, kind, optional)`` triples (kind ``"vector"``, ``"numeric"`` or
    ``"any"``); an optional role whose param is unset or empty is skipped.  ``outputs``: param
    names of new columns, which must not exist yet (empty names are skipped).  Raises
    ``ValueError`` (missing column, existing output) or ``TypeError`` (wrong type) naming the
    column and the param.
    """
    for param, kind, optional in roles:
        name = stage.getOrDefault(param) if stage.isDefined(stage.getParam(param)) else None
        if optional and not name:
            continue
        if name is None:
            raise ValueError(f"param {param!r} is not set: set it to a column name")
        ROLE_CHECKS[kind](schema, name, param)
    for param in outputs:
        name = stage.getOrDefault(param) if stage.isDefined(stage.getParam(param)) else None
        if name:
            check_new_column(schema, name, param)
