"""Feature transformers and estimators."""
from .hasher import FeatureHasher
from .pca import PCA, PCAModel

__all__ = ["FeatureHasher", "PCA", "PCAModel"]
