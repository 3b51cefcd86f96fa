"""Classifiers."""
from .logistic_regression import (
    BinaryLogisticRegressionTrainingSummary,
    LogisticRegressionTrainingSummary,
    LogisticRegression,
    LogisticRegressionModel,
    SGDLogisticRegression,
)

__all__ = [
    "LogisticRegression",
    "LogisticRegressionModel",
    "SGDLogisticRegression",
    "LogisticRegressionTrainingSummary",
    "BinaryLogisticRegressionTrainingSummary",
]
