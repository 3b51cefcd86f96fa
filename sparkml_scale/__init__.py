"""sparkml_scale: Spark-native ML stages with an Arrow-vectorised hot path.

Importing the package is cheap: no SparkSession is started and nothing heavy
(torch, sklearn) is imported.  Stages live in subpackages::

    from sparkml_scale.feature import FeatureHasher
    from sparkml_scale.classification import LogisticRegression
"""
from ._version import __version__

__all__ = ["__version__"]
