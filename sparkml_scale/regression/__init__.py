"""Regression estimators."""
from .linear_regression import LinearRegression, LinearRegressionModel, LinearRegressionTrainingSummary

__all__ = ["LinearRegression", "LinearRegressionModel", "LinearRegressionTrainingSummary"]
