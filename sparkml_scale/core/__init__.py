"""Shared machinery: sessions, Arrow <-> numpy blocks, map-reduce, persistence, params checks.

The names below are loaded on first use (PEP 562), so that importing a light submodule such
as ``sparkml_scale.core.optional`` (which ``sparkml_scale.torch`` does) does not import
pyspark: the per-rank torch loop runs where only torch is installed.
"""
import importlib

_EXPORTS = {
    "VECTOR_ARROW_TYPE": ".arrow",
    "block_to_vectors": ".arrow",
    "dense_to_vectors": ".arrow",
    "numeric_to_numpy": ".arrow",
    "vectors_to_block": ".arrow",
    "decode_arrays": ".mapreduce",
    "encode_arrays": ".mapreduce",
    "tree_aggregate": ".mapreduce",
    "get_session": ".session",
    "is_connect": ".session",
    "set_progress": ".progress",
    "progress_bars": ".progress",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
