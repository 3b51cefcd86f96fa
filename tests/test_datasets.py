"""datasets: Fashion-MNIST idx readers (images and labels), their errors and the Spark loader."""
import gzip
import os

import numpy as np
import pytest

from sparkml_scale.datasets import FASHION_MNIST_PATH, load_fashion_mnist

_HAVE_FMNIST = all(
    os.path.isfile(os.path.join(FASHION_MNIST_PATH, f))
    for f in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
)
needs_fmnist = pytest.mark.skipif(
    not _HAVE_FMNIST, reason=f"Debian package dataset-fashion-mnist not installed ({FASHION_MNIST_PATH})"
)


def _write_idx(folder, images=None, labels=None):
    """Gzipped idx files in ``folder``: ``images`` (magic, n, rows, cols, pixel bytes) and
    ``labels`` (magic, n, label bytes), each a (header tuple, payload bytes) pair."""
    for name, spec in (("train-images-idx3-ubyte.gz", images), ("train-labels-idx1-ubyte.gz", labels)):
        if spec is not None:
            header, payload = spec
            with gzip.open(os.path.join(folder, name), "wb") as fh:
                fh.write(np.array(header, dtype=">u4").tobytes() + payload)
    return str(folder)


def test_small_idx_files_round_trip(tmp_path):
    pix = np.arange(3 * 2 * 2, dtype=np.uint8)
    path = _write_idx(tmp_path, ((2051, 3, 2, 2), pix.tobytes()), ((2049, 3), bytes([7, 0, 9])))
    X, y = load_fashion_mnist(path=path, labels=True)
    np.testing.assert_array_equal(X, pix.reshape(3, 4).astype(float))
    np.testing.assert_array_equal(y, [7.0, 0.0, 9.0])
    assert y.dtype == np.float64
    # without labels: the images alone, as before (the label file is not needed)
    os.remove(os.path.join(path, "train-labels-idx1-ubyte.gz"))
    np.testing.assert_array_equal(load_fashion_mnist(path=path), X)


@pytest.mark.parametrize(
    "labels, message",
    [
        (((2051, 3), bytes(3)), r"train-labels-idx1-ubyte\.gz: not an idx1 label file \(magic 2051"),
        (((2049, 4), bytes(3)), r"train-labels-idx1-ubyte\.gz: truncated or corrupt"),
        (((2049, 2), bytes(2)), r"train-labels-idx1-ubyte\.gz: 2 labels, but .*train-images-idx3-ubyte\.gz holds 3"),
        (((2049,), b""), r"train-labels-idx1-ubyte\.gz: not an idx1 label file \(only 4 bytes"),
    ],
)
def test_bad_label_file_names_the_file(tmp_path, labels, message):
    path = _write_idx(tmp_path, ((2051, 3, 1, 1), bytes(3)), labels)
    with pytest.raises(ValueError, match=message):
        load_fashion_mnist(path=path, labels=True)


def test_missing_label_file_names_the_package(tmp_path):
    path = _write_idx(tmp_path, ((2051, 1, 1, 1), bytes(1)))
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte.gz.*dataset-fashion-mnist"):
        load_fashion_mnist(path=path, labels=True)


@needs_fmnist
def test_fashion_mnist_labels_numpy():
    X, y = load_fashion_mnist(labels=True)
    assert X.shape == (60000, 784) and y.shape == (60000,)
    np.testing.assert_array_equal(np.bincount(y.astype(int)), [6000] * 10)


@needs_fmnist
@pytest.mark.connect
def test_fashion_mnist_labels_dataframe(spark):
    from pyspark.sql import functions as F

    df = load_fashion_mnist(spark, labels=True)
    assert df.columns == ["features", "label"]
    assert dict(df.dtypes)["label"] == "double"
    counts = {r["label"]: r["count"] for r in df.groupBy("label").count().collect()}
    assert counts == {float(k): 6000 for k in range(10)}
    assert sum(counts.values()) == load_fashion_mnist(spark).count() == 60000
    # rows keep file order: the first rows match the idx files
    X, y = load_fashion_mnist(labels=True)
    head = df.head(5)
    np.testing.assert_array_equal([r.label for r in head], y[:5])
    np.testing.assert_array_equal(np.array([r.features.toArray() for r in head]), X[:5])
    assert df.agg(F.min("label"), F.max("label")).first() == (0.0, 9.0)
