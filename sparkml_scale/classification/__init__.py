"""Classifiers."""
from .logistic_regression import (
    BinaryLogisticRegressionTrainingSummary,
    LogisticRegression,
    LogisticRegressionModel,
)

__all__ = ["LogisticRegression", "LogisticRegressionModel", "BinaryLogisticRegressionTrainingSummary"]
