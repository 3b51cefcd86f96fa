"""Deep-model (PyTorch) training and inference on Spark.

- :class:`TorchEstimator` / :class:`TorchModel` (``estimator``): pyspark.ml stages; ``params``:
  the params they share; ``inference``: ``transform``'s per-batch function.
- ``launch``: the TorchDistributor and Horovod backends; ``worker``: what each training
  process runs; ``data``: a rank's share of the rows; ``loop.train_epochs``: the per-rank
  training loop (plain torch, no Spark); ``models``: small reference networks.

Importing this package does not import torch (``TorchEstimator`` is loaded on first use), but
fails at once, naming the pip extra, when torch is not installed: every module here needs it.
"""
from ..core.optional import ensure_installed

ensure_installed("torch", extra="torch", feature="sparkml_scale.torch")

__all__ = ["TorchEstimator", "TorchModel"]


def __getattr__(name):
    if name in __all__:
        from . import estimator

        return getattr(estimator, name)
    raise AttributeError(name)
