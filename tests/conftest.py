"""Shared fixtures: one SparkSession for the whole run.

Classic local[2] by default; a Spark Connect session (local server) when
SPARKML_SCALE_TEST_CONNECT=1.  scripts/test.sh runs the suite classic and then
the tests marked ``connect`` again under Connect (the two kinds of session
cannot live in one Python process).
"""
import os
import sys

import pytest

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

CONNECT = os.environ.get("SPARKML_SCALE_TEST_CONNECT") == "1"


@pytest.fixture(scope="session")
def spark():
    from sparkml_scale.core.session import get_session

    conf = {"spark.sql.shuffle.partitions": "4", "spark.default.parallelism": "2"}
    if CONNECT:
        session = get_session("sparkml_scale-tests", remote="local[2]", conf=conf)
    else:
        session = get_session("sparkml_scale-tests", master="local[2]", conf=conf)
    yield session
    session.stop()


def pytest_collection_modifyitems(config, items):
    if CONNECT:
        skip = pytest.mark.skip(reason="classic-only test (run without SPARKML_SCALE_TEST_CONNECT)")
        for item in items:
            if "connect" not in item.keywords:
                item.add_marker(skip)
