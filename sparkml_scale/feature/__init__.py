"""Feature transformers."""
from .hasher import FeatureHasher

__all__ = ["FeatureHasher"]
