"""DriftReport export: Prometheus text format (parsed back with prometheus_client's parser), the
textfile collector file, a Pushgateway PUT (to a local HTTP server), the histograms, toDict, and the
Grafana dashboard's queries against the exported metric names and labels."""
import http.server
import json
import math
import os
import re
import threading

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sparkml_scale.monitoring import DriftDetector
from sparkml_scale.monitoring.prometheus import METRIC_NAMES

DASHBOARD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docker", "grafana",
                         "sparkml-scale-drift.json")


@pytest.fixture(scope="module")
def data(spark):
    df = spark.range(20_000, numPartitions=2).selectExpr(
        "id", "timestamp_seconds(1700000000 + id * 20) AS ts",
        "CASE WHEN id < 10000 THEN rand(1) ELSE rand(2) + 0.4 END AS x",
        "CASE WHEN id % 5 = 0 THEN NULL ELSE rand(3) END AS y",
        "CASE WHEN id % 3 = 0 THEN 'a' WHEN id % 3 = 1 THEN 'b' ELSE 'c' END AS c",
        "CAST(rand(4) > 0.5 AS DOUBLE) AS label")
    df = df.selectExpr("*", "CASE WHEN id < 10000 THEN label ELSE 1.0 - label END AS prediction")
    return df.where("id < 10000"), df.where("id >= 10000"), df


@pytest.fixture(scope="module")
def report(data):
    model = DriftDetector(inputCols=["x", "y", "c"], predictionCol="prediction", labelCol="label").fit(data[0])
    return model, model.evaluate(data[1])


def _samples(text):
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_exposition_parses_back_to_the_report(report):
    model, rep = report
    t = rep.toPandas().set_index("feature")
    assert rep.model == model.uid
    s = _samples(rep.toPrometheus(model="flights-lr"))
    for f in ["x", "y", "c", "prediction"]:
        assert s[("sparkml_scale_drift_score", (("feature", f), ("metric", "psi"), ("model", "flights-lr")))] == \
            pytest.approx(t.loc[f, "psi"], rel=1e-12)
        assert s[("sparkml_scale_drift_detected", (("feature", f), ("model", "flights-lr")))] == float(t.loc[f, "drifted"])
        assert s[("sparkml_scale_drift_rows", (("feature", f), ("model", "flights-lr")))] == t.loc[f, "count"]
    key = ("sparkml_scale_drift_score", (("feature", "x"), ("metric", "ks_statistic"), ("model", "flights-lr")))
    assert s[key] == pytest.approx(t.loc["x", "ksStatistic"], rel=1e-12)
    key = ("sparkml_scale_drift_score", (("feature", "y"), ("metric", "missing_rate"), ("model", "flights-lr")))
    assert s[key] == pytest.approx(0.2, abs=1e-12)
    # categorical features have no KS and numeric ones no chi-square: left out, never exported as NaN
    assert ("sparkml_scale_drift_score", (("feature", "c"), ("metric", "ks_pvalue"), ("model", "flights-lr"))) not in s
    assert ("sparkml_scale_drift_score", (("feature", "x"), ("metric", "chi2_pvalue"), ("model", "flights-lr"))) not in s
    assert not any(math.isnan(v) for v in s.values())
    assert s[("sparkml_scale_drift_features_drifted", (("model", "flights-lr"),))] == len(rep.drifted) > 0
    perf = rep.performance.iloc[0]
    assert s[("sparkml_scale_model_performance", (("data", "current"), ("metric", "accuracy"),
                                                  ("model", "flights-lr")))] == pytest.approx(perf["current"])
    assert perf["current"] == 0.0 and perf["reference"] == 1.0
    assert s[("sparkml_scale_drift_report_timestamp_seconds", (("model", "flights-lr"),))] == rep.created
    with pytest.raises(ValueError, match="model"):
        rep.toPrometheus(model="")


def test_textfile_and_pushgateway(report, tmp_path):
    _, rep = report
    path = tmp_path / "drift.prom"
    rep.writeTextfile(str(path))
    assert _samples(path.read_text()) == _samples(rep.toPrometheus())
    assert [p.name for p in tmp_path.iterdir()] == ["drift.prom"]       # the temporary file was renamed

    got = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):
            got["path"] = self.path
            got["body"] = self.rfile.read(int(self.headers["Content-Length"])).decode()
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.handle_request, daemon=True).start()
    try:
        rep.pushToGateway(f"127.0.0.1:{server.server_port}", job="drift", model="m1", groupingKey={"env": "prod"})
    finally:
        server.server_close()
    assert got["path"] == "/metrics/job/drift/env/prod"
    assert _samples(got["body"]) == _samples(rep.toPrometheus(model="m1"))
    with pytest.raises(ValueError, match="job"):
        rep.pushToGateway("127.0.0.1:9", job="")


def test_histograms_and_dict(report):
    model, rep = report
    h = rep.histogram("x")
    assert list(h.columns) == ["bin", "reference", "current"]
    np.testing.assert_array_equal(h["reference"].to_numpy(), model.referenceHistogram("x"))
    assert h["current"].sum() == 10_000 and h["bin"].iloc[-1] == "missing" and h["bin"].iloc[0].startswith("<= ")
    assert len(h) == len(model.binEdges("x")) + 2
    c = rep.histogram("c")
    assert c["bin"].tolist() == model.categories("c") + ["other", "missing"]
    d = json.loads(json.dumps(rep.toDict(), allow_nan=False))     # NaN became null
    assert [r["feature"] for r in d["features"]] == ["x", "y", "c", "prediction"]
    assert d["features"][2]["ksPValue"] is None and d["histograms"]["x"]["current"] == h["current"].tolist()
    assert d["performance"][0]["metric"] == "accuracy"
    with pytest.raises(ValueError, match="'nope'"):
        rep.histogram("nope")


def test_windowed_report_exports_its_last_window(report, data):
    model, _ = report
    rep = model.evaluate(data[2], windowCol="ts", windowDuration="1 day")
    t = rep.toPandas()
    last = t[t["window"] == t["window"].max()].set_index("feature")
    assert len(rep.windows) == t["window"].nunique() > 1
    s = _samples(rep.toPrometheus())
    key = ("sparkml_scale_drift_rows", (("feature", "x"), ("model", model.uid)))
    assert s[key] == last.loc["x", "count"]
    first = rep.histogram("x", window=rep.windows[0])
    assert first["current"].sum() == t[(t["window"] == rep.windows[0]) & (t["feature"] == "x")]["count"].iloc[0]
    assert rep.histogram("x")["current"].sum() == last.loc["x", "count"]
    d = rep.toDict()
    assert isinstance(d["features"][0]["window"], str)


def test_grafana_dashboard_queries_use_exported_metrics_and_labels(report):
    _, rep = report
    exported = {}
    for fam in text_string_to_metric_families(rep.toPrometheus()):
        for smp in fam.samples:
            exported.setdefault(smp.name, set()).update(smp.labels)
    assert set(exported) == set(METRIC_NAMES)
    dash = json.load(open(DASHBOARD))
    variables = {v["name"] for v in dash["templating"]["list"]}
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) >= 8
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dash["templating"]["list"] if "definition" in v]
    used = set()
    for e in exprs:
        for var in re.findall(r"\$(\w+)", e):
            assert var in variables or var.startswith("__"), (var, e)
        for name, matchers in re.findall(r"(sparkml_scale_\w+)(?:\{([^}]*)\})?", e):
            assert name in exported, (name, e)
            used.add(name)
            for label in re.findall(r"(\w+)\s*=~?", matchers):
                assert label in exported[name], (label, name, e)
            for label in re.findall(r"by \(([^)]*)\)", e):
                for lab in label.split(","):
                    assert lab.strip() in exported[name], (lab, name, e)
        for m in re.findall(r'metric(?:=|=~)"([^"]+)"', e):
            for alt in m.split("|"):
                assert alt in {"psi", "ks_statistic", "ks_pvalue", "ks_error_bound", "js_distance", "chi2_pvalue",
                               "missing_rate"}, (alt, e)
    assert used == set(METRIC_NAMES)
    for p in dash["panels"]:
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]) and p["datasource"]["uid"] == "${datasource}"
