"""The one benchmark report (``python -m benchmarks``): rows, Markdown, chart, README table, and every
benchmark script speaking the common ``--size``/``--json`` interface.  No Spark here."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import report as rep  # noqa: E402
from benchmarks.harness import result_row  # noqa: E402


def _report(rows, benchmarks=None):
    return {"date": "2026-12-06 16:00 UTC", "size": "small", "commit": "abc1234",
            "machine": {"cpu": "Test CPU", "cores": 2, "memory_gib": 24.0, "python": "3.11", "pyspark": "4.3.0",
                        "torch": "2.13.0", "java": "openjdk 17"},
            "benchmarks": benchmarks or [{"name": "hasher", "script": "bench_feature_hasher.py", "status": "ok",
                                          "rows": len(rows), "log": "benchmarks/results/logs/hasher.log"}],
            "rows": rows}


def test_result_row_ratio_and_verdict():
    fast = result_row("a", 1.0, "Spark", 2.0, target=0.7, check="equal", check_ok=True)
    assert fast["ratio"] == 0.5 and fast["met"] is True
    slow = result_row("b", 1.5, "Spark", 2.0, target=0.7, check_ok=True)
    assert slow["ratio"] == 0.75 and slow["met"] is False
    # a fast run whose outputs differ does not meet its target
    wrong = result_row("c", 1.0, "Spark", 2.0, target=0.7, check="equal", check_ok=False)
    assert wrong["met"] is False
    assert result_row("d", 1.0, "Spark", 2.0)["met"] is None


def test_markdown_lists_every_row_with_its_verdict_and_the_failures():
    rows = [dict(result_row("flights 2^18", 1.0, "Spark FeatureHasher", 2.0, target=0.7, check="equal on 2000 rows",
                            check_ok=True), benchmark="hasher"),
            dict(result_row("wide | 30 cols", 3.0, "Spark FeatureHasher", 2.0, target=0.7, check="equal",
                            check_ok=False), benchmark="hasher"),
            dict(result_row("write", 1.2, "Spark Parquet", 1.0), benchmark="io")]
    benches = [{"name": "hasher", "script": "bench_feature_hasher.py", "status": "ok", "rows": 2, "log": "l1"},
               {"name": "io", "script": "bench_io.py", "status": "ok", "rows": 1, "log": "l2"},
               {"name": "pca", "script": "bench_pca.py", "status": "failed (exit 1)", "rows": 0, "log": "l3"}]
    md = rep.markdown(_report(rows, benches))
    lines = md.splitlines()
    table = [ln for ln in lines if ln.startswith("| hasher") or ln.startswith("| io")]
    assert len(table) == 3
    assert "0.50x" in table[0] and "<= 0.7" in table[0] and "| met |" in table[0]
    assert "1.50x" in table[1] and "NOT met" in table[1] and "FAILED: equal" in table[1]
    assert "wide \\| 30 cols" in table[1]  # a | in a case does not break the table
    assert table[2].count("|") == 10 and "1.20x" in table[2]
    assert "- `bench_pca.py`: failed (exit 1) (log `l3`)" in md
    assert "Targets met: 1 of 2." in md
    assert "2026-12-06" in md and "Test CPU" in md and "2 cores" in md


def test_chart_is_a_png(tmp_path):
    rows = [dict(result_row(f"case {i}", 1.0 + i, "anchor", 2.0, target=0.7 if i else None), benchmark="x")
            for i in range(3)]
    path = tmp_path / "ratios.png"
    rep.chart(_report(rows), str(path))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_readme_table_is_replaced_between_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{rep.BEGIN}\nold table\n{rep.END}\noutro\n")
    rep.update_readme("| new |\n", str(readme))
    assert readme.read_text() == f"intro\n{rep.BEGIN}\n| new |\n{rep.END}\noutro\n"
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="markers"):
        rep.update_readme("| new |\n", str(readme))


def test_the_projects_readme_has_the_markers():
    text = open(os.path.join(ROOT, "README.md")).read()
    assert text.count(rep.BEGIN) == 1 and text.count(rep.END) == 1
    assert text.index(rep.BEGIN) < text.index(rep.END)


def test_run_benchmark_collects_rows_and_a_failure(tmp_path):
    ok = tmp_path / "ok.py"
    ok.write_text("import json, sys\n"
                  "a = sys.argv\n"
                  "assert a[a.index('--size') + 1] == 'small'\n"
                  "json.dump([{'case': 'c', 'ours_s': 1.0, 'anchor': 'x', 'anchor_s': 2.0, 'ratio': 0.5,"
                  " 'target': None, 'check': '', 'check_ok': None, 'met': None}], open(a[a.index('--json') + 1], 'w'))\n"
                  "print('hello')\n")
    bad = tmp_path / "bad.py"
    bad.write_text("raise SystemExit(3)\n")
    out = tmp_path / "out"
    r = rep.run_benchmark("ok", str(ok), "small", str(out), 60)
    assert r["status"] == "ok" and r["rows"][0]["benchmark"] == "ok" and r["rows"][0]["ratio"] == 0.5
    assert "hello" in (out / "logs" / "ok.log").read_text()
    r = rep.run_benchmark("bad", str(bad), "small", str(out), 60)
    assert r["status"] == "failed (exit 3)" and r["rows"] == []


def test_from_json_rerenders_without_running(tmp_path):
    rows = [dict(result_row("a", 1.0, "Spark", 2.0, target=0.7, check_ok=True), benchmark="hasher")]
    src = tmp_path / "report.json"
    src.write_text(json.dumps(_report(rows)))
    assert rep.main(["--from-json", str(src)]) == 0
    assert (tmp_path / "report.md").read_text().count("| hasher |") == 1
    assert (tmp_path / "ratios.png").exists()
    rows[0] = dict(result_row("a", 3.0, "Spark", 2.0, target=0.7, check_ok=True), benchmark="hasher")
    src.write_text(json.dumps(_report(rows)))
    assert rep.main(["--from-json", str(src)]) == 1  # a target not met: exit 1
    other = tmp_path / "elsewhere"
    assert rep.main(["--from-json", str(src), "--out", str(other)]) == 1  # --out is honoured
    assert (other / "report.md").exists() and (other / "ratios.png").exists()


def test_commit_is_flagged_when_the_code_changed_at_the_start_or_by_the_end():
    assert rep._either_changed("abc1234", "abc1234") == "abc1234"
    assert rep._either_changed("abc1234+changes", "abc1234") == "abc1234+changes"
    assert rep._either_changed("abc1234", "abc1234+changes") == "abc1234+changes"
    assert rep._either_changed("abc1234", "def5678") == "abc1234+changes"  # HEAD moved while it ran
    assert rep._either_changed(None, "abc1234") == "abc1234"


@pytest.mark.parametrize("name,script", [(b[0], b[1]) for b in rep.BENCHMARKS])
def test_every_benchmark_takes_size_and_json(name, script):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--size {small,full}" in out.stdout and "--json" in out.stdout, f"{script}: {out.stdout[-800:]}"
