"""Shared machinery: sessions, Arrow <-> numpy blocks, map-reduce, persistence, params checks."""
from .arrow import VECTOR_ARROW_TYPE, block_to_vectors, dense_to_vectors, numeric_to_numpy, vectors_to_block
from .mapreduce import decode_arrays, encode_arrays, tree_aggregate
from .session import get_session, is_connect

__all__ = [
    "VECTOR_ARROW_TYPE",
    "block_to_vectors",
    "dense_to_vectors",
    "numeric_to_numpy",
    "vectors_to_block",
    "decode_arrays",
    "encode_arrays",
    "tree_aggregate",
    "get_session",
    "is_connect",
]
