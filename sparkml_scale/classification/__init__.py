"""Classifiers."""
from .logistic_regression import (
    BinaryLogisticRegressionTrainingSummary,
    LogisticRegressionTrainingSummary,
    LogisticRegression,
    LogisticRegressionModel,
)

__all__ = [
    "LogisticRegression",
    "LogisticRegressionModel",
    "LogisticRegressionTrainingSummary",
    "BinaryLogisticRegressionTrainingSummary",
]
