"""Hyperparameter search on Spark: random and Bayesian (TPE) search with Optuna, pruning.

- :class:`HyperparameterSearch` / :class:`HyperparameterSearchModel` (``search``): the
  pyspark.ml Estimator and its model;
- ``space``: search spaces (Params to ``optuna.distributions``) and their checks;
- ``trials``: how one trial fits and scores its folds, and reports for pruning;
- ``report``: trial lines, the live table, MLflow runs; ``persistence``: save/load.
"""
from ..core.optional import ensure_installed

ensure_installed("optuna", extra="tuning", feature="sparkml_scale.tuning")

from .search import PRUNERS, SAMPLERS, HyperparameterSearch, HyperparameterSearchModel, SearchError  # noqa: E402

__all__ = ["HyperparameterSearch", "HyperparameterSearchModel", "SearchError", "SAMPLERS", "PRUNERS"]
