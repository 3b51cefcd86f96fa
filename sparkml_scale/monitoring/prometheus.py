"""Prometheus export of a :class:`~sparkml_scale.monitoring.DriftReport` (``prometheus_client``).

Metrics (all gauges; ``model`` is the report's model name, ``feature`` a monitored feature):

``sparkml_scale_drift_score{model, feature, metric}``
    ``metric`` is one of ``psi``, ``ks_statistic``, ``ks_pvalue``, ``ks_error_bound`` (numeric
    features), ``js_distance``, ``chi2_pvalue`` (categorical features) and ``missing_rate``.
    Values that are NaN in the report (e.g. KS of a feature without non-missing values) are left
    out rather than exported as NaN.
``sparkml_scale_drift_detected{model, feature}``
    1 when the feature drifted (``drifted`` column), else 0.
``sparkml_scale_drift_rows{model, feature}``
    Current rows of the feature (``count``).
``sparkml_scale_drift_features_drifted{model}``
    Number of drifted features.
``sparkml_scale_model_performance{model, metric, data}``
    With ``labelCol``: ``metric`` ``auc``/``accuracy``/``rmse``, ``data`` ``reference`` or ``current``.
``sparkml_scale_drift_report_timestamp_seconds{model}``
    When the report was made (Unix seconds): alert when it is stale.

A windowed report exports its last window (Prometheus stamps samples at scrape or push time).
The Grafana dashboard ``docker/grafana/sparkml-scale-drift.json`` plots these metrics.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

#: Report column -> ``metric`` label of ``sparkml_scale_drift_score``.
SCORE_COLUMNS = {"psi": "psi", "ksStatistic": "ks_statistic", "ksPValue": "ks_pvalue",
                 "ksErrorBound": "ks_error_bound", "jsDistance": "js_distance", "chi2PValue": "chi2_pvalue",
                 "missingRate": "missing_rate"}
METRIC_NAMES = ("sparkml_scale_drift_score", "sparkml_scale_drift_detected", "sparkml_scale_drift_rows",
                "sparkml_scale_drift_features_drifted", "sparkml_scale_model_performance",
                "sparkml_scale_drift_report_timestamp_seconds")


def _client():
    try:
        import prometheus_client
    except ImportError:
        raise ImportError("Prometheus export needs prometheus_client: pip install 'sparkml-scale[monitoring]'") from None
    return prometheus_client


def registry_of(report, model: Optional[str] = None):
    """A fresh ``prometheus_client.CollectorRegistry`` holding the report's gauges (see the module
    docstring).  ``ValueError`` for an empty model name."""
    pc = _client()
    name = report.model if model is None else model
    if not isinstance(name, str) or not name:
        raise ValueError(f"model: the metrics' model label must be a non-empty string, got {name!r}")
    reg = pc.CollectorRegistry(auto_describe=True)
    score = pc.Gauge("sparkml_scale_drift_score", "Drift statistic of a feature (metric label: the test)",
                     ["model", "feature", "metric"], registry=reg)
    detected = pc.Gauge("sparkml_scale_drift_detected", "1 when the feature drifted, else 0",
                        ["model", "feature"], registry=reg)
    rows = pc.Gauge("sparkml_scale_drift_rows", "Current rows of the feature", ["model", "feature"], registry=reg)
    n_drifted = pc.Gauge("sparkml_scale_drift_features_drifted", "Number of drifted features", ["model"],
                         registry=reg)
    stamp = pc.Gauge("sparkml_scale_drift_report_timestamp_seconds", "Time of the drift report (Unix seconds)",
                     ["model"], registry=reg)
    table = report.toPandas()
    if "window" in table:
        table = table[table["window"] == table["window"].max()]
    for r in table.itertuples(index=False):
        for col, metric in SCORE_COLUMNS.items():
            v = float(getattr(r, col))
            if not math.isnan(v):
                score.labels(name, r.feature, metric).set(v)
        detected.labels(name, r.feature).set(1.0 if r.drifted else 0.0)
        rows.labels(name, r.feature).set(float(r.count))
    n_drifted.labels(name).set(float(table["drifted"].sum()))
    stamp.labels(name).set(report.created)
    perf = report.performance
    if perf is not None and len(perf):
        g = pc.Gauge("sparkml_scale_model_performance", "Model metric on the reference and the current data",
                     ["model", "metric", "data"], registry=reg)
        last = perf.iloc[-1]
        for data in ("reference", "current"):
            v = float(last[data])
            if not math.isnan(v):
                g.labels(name, str(last["metric"]), data).set(v)
    return reg


def exposition(report, model: Optional[str] = None) -> str:
    """The report's metrics in the text exposition format (``prometheus_client.generate_latest``)."""
    return _client().generate_latest(registry_of(report, model)).decode("utf-8")


def write_textfile(report, path: str, model: Optional[str] = None) -> None:
    """``prometheus_client.write_to_textfile``: a temporary file beside ``path``, renamed over it."""
    _client().write_to_textfile(str(path), registry_of(report, model))


def push(report, url: str, job: str, model: Optional[str] = None, grouping_key: Optional[Dict[str, str]] = None,
         timeout: float = 30.0) -> None:
    """``prometheus_client.push_to_gateway`` (PUT) of the report's metrics under ``job``."""
    if not isinstance(job, str) or not job:
        raise ValueError(f"job: the Pushgateway job name must be a non-empty string, got {job!r}")
    _client().push_to_gateway(url, job=job, registry=registry_of(report, model), grouping_key=grouping_key or {},
                              timeout=timeout)
