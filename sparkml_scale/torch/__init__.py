"""Deep-model (PyTorch) training and inference on Spark.

``loop.train_epochs`` is the per-rank training loop (plain torch, no Spark).  Importing
this package does not import torch; the submodules do.
"""
__all__ = ["loop"]
