"""Model and data monitoring: drift detection from binned histograms computed in one pass.

See :mod:`sparkml_scale.monitoring.drift`.
"""
from .drift import PSI_FLOOR, DriftDetector, DriftModel, DriftReport

__all__ = ["DriftDetector", "DriftModel", "DriftReport", "PSI_FLOOR"]
