"""pyspark's own docstring examples, run with our stages in place of MLlib's.

A drop-in replacement must pass the examples pyspark ships in the class docstrings
of the stages it replaces.  Each case finds the class docstring's examples with
``doctest.DocTestFinder`` on the *pyspark* class and runs them with the globals
pyspark's own ``_test()`` (bottom of ``pyspark/ml/feature.py``, ``regression.py``,
``classification.py``) sets up: a copy of the pyspark module's ``__dict__``, with
our classes bound under the same names, ``spark``, ``temp_path`` (a fresh
directory) and, where the examples use it, ``sc``; option flags ``ELLIPSIS`` as
there.  Relative paths read by Spark resolve against ``tests/`` during the
examples, which holds ``data/mllib/...`` (Spark's sample data the
LogisticRegression examples read, copied from Apache Spark's repository, Apache
License 2.0).  The examples themselves are never edited.
"""
import contextlib
import doctest
import importlib
import os
import re
import traceback

import pytest

from helpers import CONNECT
from sparkml_scale.classification import LogisticRegression, LogisticRegressionModel
from sparkml_scale.feature import PCA, FeatureHasher, PCAModel
from sparkml_scale.regression import LinearRegression, LinearRegressionModel

DATA_ROOT = os.path.dirname(os.path.abspath(__file__))  # holds data/mllib/

CASES = [
    pytest.param("pyspark.ml.feature", "PCA", {"PCA": PCA, "PCAModel": PCAModel}, id="PCA"),
    pytest.param("pyspark.ml.feature", "FeatureHasher", {"FeatureHasher": FeatureHasher}, id="FeatureHasher"),
    pytest.param(
        "pyspark.ml.regression",
        "LinearRegression",
        {"LinearRegression": LinearRegression, "LinearRegressionModel": LinearRegressionModel},
        id="LinearRegression",
    ),
    pytest.param(
        "pyspark.ml.classification",
        "LogisticRegression",
        {"LogisticRegression": LogisticRegression, "LogisticRegressionModel": LogisticRegressionModel},
        id="LogisticRegression",
        # its examples build DataFrames with sc.parallelize: classic sessions only
        marks=pytest.mark.skipif(CONNECT, reason="the examples use sc (no SparkContext under Connect)"),
    ),
]


class _Recorder(doctest.DocTestRunner):
    """Runs every example and records the failing ones (source, expected, got)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.failed = []

    def report_failure(self, out, test, example, got):
        self.failed.append((example, f"expected:\n{example.want}got:\n{got}"))

    def report_unexpected_exception(self, out, test, example, exc_info):
        tb = "".join(traceback.format_exception_only(exc_info[0], exc_info[1]))
        self.failed.append((example, f"raised:\n{tb}"))


def pyspark_examples(module_name: str, class_name: str):
    """The examples of the pyspark class's own docstring (not its methods'), as one DocTest."""
    mod = importlib.import_module(module_name)
    cls = getattr(mod, class_name)
    tests = doctest.DocTestFinder(recurse=False).find(cls, class_name, module=mod)
    tests = [t for t in tests if t.examples]
    assert len(tests) == 1, f"{module_name}.{class_name}: expected one docstring with examples, found {len(tests)}"
    return mod, tests[0]


def run_examples(spark, tmp_path, module_name, class_name, ours):
    """Run the pyspark examples with ``ours`` substituted; returns the DocTest and the failures
    as ``(example, what happened)``."""
    mod, test = pyspark_examples(module_name, class_name)
    globs = dict(mod.__dict__)
    globs.update(ours)
    globs["spark"] = spark
    temp = tmp_path / "temp_path"
    temp.mkdir()
    globs["temp_path"] = str(temp)
    if any(re.search(r"\bsc\.", e.source) for e in test.examples):
        globs["sc"] = spark.sparkContext
    test.globs = globs
    runner = _Recorder(optionflags=doctest.ELLIPSIS, verbose=False)
    reads_sample_data = any("data/mllib/" in e.source for e in test.examples)
    with _jvm_working_directory(spark, DATA_ROOT if reads_sample_data else None):
        runner.run(test, out=lambda s: None, clear_globs=True)
    return test, runner.failed


@contextlib.contextmanager
def _jvm_working_directory(spark, path):
    """Resolve Spark's relative local paths against ``path`` for the block (as pyspark's examples,
    run from a Spark checkout, expect ``data/mllib/...``): the JVM resolves them against its
    local FileSystem's working directory, not Python's."""
    if path is None:
        yield
        return
    jvm = spark.sparkContext._jvm
    fs = jvm.org.apache.hadoop.fs.FileSystem.getLocal(spark.sparkContext._jsc.hadoopConfiguration())
    before = fs.getWorkingDirectory()
    fs.setWorkingDirectory(jvm.org.apache.hadoop.fs.Path(path))
    try:
        yield
    finally:
        fs.setWorkingDirectory(before)


@pytest.mark.connect
@pytest.mark.parametrize("module_name, class_name, ours", CASES)
def test_pyspark_docstring_examples_pass_with_our_classes(spark, tmp_path, module_name, class_name, ours):
    test, failed = run_examples(spark, tmp_path, module_name, class_name, ours)
    n = len(test.examples)
    assert n > 5
    if failed:
        site = os.path.dirname(os.path.dirname(importlib.import_module("pyspark").__file__))
        where = os.path.relpath(test.filename, site)
        lines = [f"{len(failed)} of {n} examples of {module_name}.{class_name} fail with sparkml_scale's classes:"]
        for ex, what in failed:
            lines.append(f"{where}:{test.lineno + ex.lineno + 1}: >>> {ex.source.strip()}\n{what}")
        pytest.fail("\n".join(lines), pytrace=False)


def test_recorder_reports_each_failing_example():
    """The harness itself: a wrong output and an exception are both recorded, a right one is not."""
    doc = '''
    >>> 1 + 1
    2
    >>> 1 + 1
    3
    >>> undefined_name
    42
    >>> "a" * 3
    'a...'
    '''
    test = doctest.DocTestParser().get_doctest(doc, {}, "t", "t.py", 0)
    runner = _Recorder(optionflags=doctest.ELLIPSIS, verbose=False)
    runner.run(test, out=lambda s: None)
    assert [ex.source.strip() for ex, _ in runner.failed] == ["1 + 1", "undefined_name"]
    assert "expected:\n3\ngot:\n2" in runner.failed[0][1]
    assert "NameError" in runner.failed[1][1]
