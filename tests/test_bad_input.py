"""Bad-input catalogue (issue 7 item 2): every stage, every kind of bad input, one clear error.

The generic cases, the same for every stage of a kind (missing or wrong-typed input column,
null vector, vectors of mixed sizes, NaN feature, missing/null/NaN label, negative weight,
existing output column, empty DataFrame), are the public bad-input checks of
:mod:`sparkml_scale.testing` (``sparkml_scale/testing/bad_input.py``), run over every stage by
tests/test_conformance.py with each stage's stricter regexes (``StageCase.raises``).  This file
keeps the cases specific to a stage: its params, its label rules, wrong-typed label and weight
columns, infinite values, weights that are null/NaN/zero, partialFit, the torch per-process
checks, and saved stages tampered with.

Each case feeds one stage one kind of bad input and expects a plain Python exception of a
given type whose message matches a regex naming the column or param (or, for saved stages,
the path or array).  :func:`assert_clean` (:func:`sparkml_scale.testing.assert_clean`) also
checks that nothing of Py4J or the JVM reaches the user: the exception (and what it chains
to) is not a Py4J/pyspark error, and its message carries no stack trace and stays short.

The data are a few rows built once per module; most cases fail on the driver before any
Spark job (schema and param checks) or in the one pass that already reads the data.
"""
from __future__ import annotations

import functools
import glob
import json
import os
import shutil
from dataclasses import dataclass
from typing import Callable, Optional

import pytest
from pyspark.ml.linalg import Vectors, VectorUDT
from pyspark.sql import types as T

from sparkml_scale.classification import LogisticRegression, SGDLogisticRegression
from sparkml_scale.core.persistence import ModelLoadError
from sparkml_scale.feature import PCA, FeatureHasher, PCAModel
from sparkml_scale.regression import LinearRegression, LinearRegressionModel
from sparkml_scale.testing import CHECK_NAMES, assert_clean  # noqa: F401 - assert_clean: also for test_torch_trust

SCHEMA = T.StructType(
    [
        T.StructField("id", T.LongType()),
        T.StructField("features", VectorUDT()),
        T.StructField("label", T.DoubleType()),
        T.StructField("w", T.DoubleType()),
        T.StructField("s", T.StringType()),
    ]
)
INF = float("inf")

# --------------------------------------------------------------------------- data, built once
class Data:
    """Tiny inputs shared by the cases, created on first use."""

    def __init__(self, spark, tmp):
        self.spark = spark
        self.tmp = tmp
        self._n = 0

    def frame(self, rows):
        """DataFrame of ``(id, features, label, w, s)`` rows (``s`` defaults to ``"a"``)."""
        rows = [tuple(r) + ("a",) * (5 - len(r)) for r in rows]
        return self.spark.createDataFrame(rows, SCHEMA)

    @functools.cached_property
    def base(self):
        """8 rows, 2-d dense features, labels 0/1, weights 1."""
        rows = [(i, Vectors.dense([0.5 * i, (i % 3) - 1.0]), float(i % 2), 1.0, f"s{i}") for i in range(8)]
        return self.frame(rows).cache()

    def with_features(self, bad):
        """``base``-like rows where row 3's features are ``bad`` (a vector, or None)."""
        return self.frame([(i, bad if i == 3 else Vectors.dense([0.5 * i, (i % 3) - 1.0]), float(i % 2), 1.0)
                           for i in range(8)])

    def expr(self, **cols):
        """``base`` with some columns replaced by SQL expressions (``id``, ``features``, ``label``,
        ``w``, ``s`` in scope)."""
        sel = [f"{cols.pop(c)} AS {c}" if c in cols else c for c in SCHEMA.names]
        sel += [f"{e} AS {c}" for c, e in cols.items()]
        return self.base.selectExpr(*sel)

    def fresh_dir(self, name: str) -> str:
        self._n += 1
        return os.path.join(self.tmp, f"{name}-{self._n}")

    # saved stages: fitted once, then copied and tampered with per case
    @functools.cached_property
    def lr_model(self):
        return LinearRegression().fit(self.base)

    @functools.cached_property
    def lr_path(self):
        path = os.path.join(self.tmp, "saved-linreg")
        self.lr_model.save(path)
        return path

    @functools.cached_property
    def pca_path(self):
        path = os.path.join(self.tmp, "saved-pca")
        PCA(k=1, inputCol="features", outputCol="p").fit(self.base).save(path)
        return path

    @functools.cached_property
    def logreg_model(self):
        return LogisticRegression(maxIter=1, solver="mapreduce").fit(self.base)

    @functools.cached_property
    def torch_path(self):
        """A TorchModel with untrained weights (what is under test is loading, not training)."""
        import io

        import torch

        from sparkml_scale.torch import TorchModel
        from sparkml_scale.torch.models import mlp

        factory = functools.partial(mlp, 2, [4], 2)
        buf = io.BytesIO()
        torch.save(factory().state_dict(), buf)
        model = TorchModel._create(buf.getvalue(), [], 2, "none", False, None)
        model._set(model=factory)
        path = os.path.join(self.tmp, "saved-torch")
        model.save(path)
        return path

    def copy_of(self, path: str) -> str:
        new = self.fresh_dir(os.path.basename(path))
        shutil.copytree(path, new)
        return new


def _drop_crc(folder: str) -> None:
    # Hadoop's local file system checks .crc side files on read: drop them after editing.
    for f in glob.glob(os.path.join(folder, ".*.crc")):
        os.unlink(f)


def _edit_metadata(path: str, edit: Callable[[dict], Optional[str]]) -> None:
    """Rewrite ``path/metadata``'s JSON line with ``edit(meta)`` (its return value, if a string,
    replaces the whole line)."""
    (part,) = [f for f in glob.glob(os.path.join(path, "metadata", "part-*")) if not f.endswith(".crc")]
    with open(part) as f:
        meta = json.loads(f.readline())
    line = edit(meta)
    with open(part, "w") as f:
        f.write((line if isinstance(line, str) else json.dumps(meta)) + "\n")
    _drop_crc(os.path.join(path, "metadata"))


def _edit_arrays(path: str, edit: Callable) -> None:
    """Rewrite the arrays table ``path/data`` (pyarrow table -> pyarrow table)."""
    import pyarrow.parquet as pq

    (part,) = glob.glob(os.path.join(path, "data", "*.parquet"))
    pq.write_table(edit(pq.read_table(part)), part)
    _drop_crc(os.path.join(path, "data"))


def _truncate_data(path: str) -> None:
    (part,) = glob.glob(os.path.join(path, "data", "*.parquet"))
    size = os.path.getsize(part)
    with open(part, "r+b") as f:
        f.truncate(size // 2)
    _drop_crc(os.path.join(path, "data"))


def _shorten_array(name: str):
    import pyarrow as pa

    def edit(table):
        rows = table.to_pylist()
        for r in rows:
            if r["name"] == name:
                r["data"] = r["data"][:-8]
        return pa.Table.from_pylist(rows, schema=table.schema)

    return edit


def _drop_array(name: str):
    def edit(table):
        import pyarrow.compute as pc

        return table.filter(pc.not_equal(table["name"], name))

    return edit


def _flip_bytes(name: str):
    import pyarrow as pa

    def edit(table):
        rows = table.to_pylist()
        for r in rows:
            if r["name"] == name:
                r["data"] = bytes(b ^ 0x5A for b in r["data"][:64]) + r["data"][64:]
        return pa.Table.from_pylist(rows, schema=table.schema)

    return edit


def _tampered(d: Data, which: str, metadata=None, arrays=None, truncate=False, remove=None) -> str:
    path = d.copy_of(getattr(d, which))
    if metadata is not None:
        _edit_metadata(path, metadata)
    if arrays is not None:
        _edit_arrays(path, arrays)
    if truncate:
        _truncate_data(path)
    if remove:
        shutil.rmtree(os.path.join(path, remove))
    return path


def _empty_dir(d: Data) -> str:
    path = d.fresh_dir("empty")
    os.makedirs(path)
    return path


def _mllib_stage(d: Data) -> str:
    """A stage saved by pyspark's own MLlib (JVM metadata, another class)."""
    from pyspark.ml.feature import Binarizer

    path = d.fresh_dir("mllib-binarizer")
    Binarizer(threshold=0.5, inputCol="label", outputCol="b").save(path)
    return path


def _set(key, value):
    def edit(meta):
        meta[key] = value

    return edit


def _del(key):
    def edit(meta):
        del meta[key]

    return edit


def _set_param(name, value):
    def edit(meta):
        meta["paramMap"][name] = value

    return edit


# --------------------------------------------------------------------------- torch helpers
def _torch_est(**kw):
    from sparkml_scale.torch import TorchEstimator
    from sparkml_scale.torch.models import mlp

    kw.setdefault("model", functools.partial(mlp, 2, [4], 2))
    kw.setdefault("epochs", 1)
    kw.setdefault("batchSize", 4)
    kw.setdefault("backend", "auto")  # horovod when built (no 10 s torchrun start-up)
    return TorchEstimator(**kw)


def _shard(d: Data, label):
    """What a training process does with its share: read it from an Arrow stream (no Spark)."""
    import pyarrow as pa

    from sparkml_scale.torch.data import RankShard

    path = d.fresh_dir("shard") + ".arrow"
    table = pa.table({"features": pa.array([[1.0, 2.0]] * len(label)), "label": pa.array(label, pa.float64())})
    with pa.OSFile(path, "wb") as f, pa.ipc.new_stream(f, table.schema) as w:
        w.write_table(table)
    return RankShard.from_arrow_file(path, "features", "label")


def _torch_model(d: Data):
    from sparkml_scale.torch import TorchModel

    return TorchModel.load(d.torch_path)


# --------------------------------------------------------------------------- the catalogue
@dataclass
class Case:
    id: str
    category: str
    run: Callable[[Data], object]
    exc: type
    match: str
    connect: bool = True
    torch: bool = False
    allow: tuple = ()


def _fh(d, **kw):
    kw.setdefault("outputCol", "h")
    return FeatureHasher(**kw).transform(d.base).collect()


def _pca(df, **kw):
    kw.setdefault("k", 1)
    kw.setdefault("inputCol", "features")
    kw.setdefault("outputCol", "p")
    return PCA(**kw).fit(df)


def _lin(df, **kw):
    return LinearRegression(**kw).fit(df)


def _log(df, **kw):
    kw.setdefault("maxIter", 5)
    return LogisticRegression(**kw).fit(df)


C = Case
CASES = [
    # ---- FeatureHasher (Transformer: every check runs in transform, before any job)
    C("hasher-inputCols-unset", "bad param", lambda d: _fh(d), ValueError, r"'inputCols'"),
    C("hasher-numFeatures-0", "numFeatures out of range", lambda d: _fh(d, inputCols=["id"], numFeatures=0),
      ValueError, r"'numFeatures'.*got 0"),
    C("hasher-numFeatures-negative", "numFeatures out of range",
      lambda d: _fh(d, inputCols=["id"], numFeatures=-8), ValueError, r"'numFeatures'.*-8"),
    C("hasher-numFeatures-above-int32", "numFeatures out of range",
      lambda d: _fh(d, inputCols=["id"], numFeatures=2**31), ValueError, r"'numFeatures'.*2147483647"),
    # ---- PCA / PCAModel
    C("pca-k-unset", "k out of range", lambda d: PCA(inputCol="features", outputCol="p").fit(d.base),
      ValueError, r"'k' is not set"),
    C("pca-k-0", "k out of range", lambda d: _pca(d.base, k=0), ValueError, r"'k' must be >= 1"),
    C("pca-k-above-numFeatures", "k out of range", lambda d: _pca(d.base, k=3),
      ValueError, r"'k' = 3 .*d = 2 .*'features'"),
    C("pca-one-row", "empty data", lambda d: _pca(d.base.limit(1)), ValueError, r"'features'.*at least 2 rows"),
    # ---- LinearRegression / LinearRegressionModel
    C("linreg-vector-label", "wrong-typed column", lambda d: _lin(d.expr(label="features")),
      TypeError, r"'label'.*'labelCol'.*numeric"),
    C("linreg-string-weight", "wrong-typed column", lambda d: _lin(d.base, weightCol="s"),
      TypeError, r"'s'.*'weightCol'.*numeric"),
    C("linreg-inf-features", "NaN/inf features", lambda d: _lin(d.with_features(Vectors.dense([INF, 1.0]))),
      ValueError, r"'features'.*infinite"),
    C("linreg-null-weight", "bad weights", lambda d: _lin(d.expr(w="IF(id = 3, NULL, w)"), weightCol="w"),
      ValueError, r"'w' \(weightCol\).*null"),
    C("linreg-nan-weight", "bad weights",
      lambda d: _lin(d.expr(w="IF(id = 3, double('NaN'), w)"), weightCol="w"), ValueError, r"'w' \(weightCol\)"),
    C("linreg-zero-weights", "bad weights", lambda d: _lin(d.expr(w="0.0"), weightCol="w"),
      ValueError, r"'w' \(weightCol\).*sum to zero"),
    C("linreg-regParam-negative", "bad param", lambda d: _lin(d.base, regParam=-0.1),
      ValueError, r"'regParam'.*-0.1"),
    C("linreg-solver-unknown", "bad param", lambda d: _lin(d.base, solver="l-bfgs"),
      ValueError, r"'solver'.*'l-bfgs'"),
    # ---- LogisticRegression / SGDLogisticRegression / LogisticRegressionModel
    C("logreg-string-label", "wrong-typed column", lambda d: _log(d.expr(label="s")),
      TypeError, r"'label'.*'labelCol'.*numeric"),
    C("logreg-inf-label", "NaN/inf label", lambda d: _log(d.expr(label="IF(id = 3, double('Infinity'), label)")),
      ValueError, r"'label' \(labelCol\)"),
    C("logreg-one-class", "one class only", lambda d: _log(d.expr(label="0.0")),
      ValueError, r"'label' \(labelCol\) holds only label 0.*two classes"),
    C("logreg-negative-label", "labels outside 0..K-1", lambda d: _log(d.expr(label="IF(id = 3, -1.0, label)")),
      ValueError, r"'label' \(labelCol\).*not class indices"),
    C("logreg-fractional-label", "labels outside 0..K-1", lambda d: _log(d.expr(label="label * 0.5")),
      ValueError, r"'label' \(labelCol\).*not class indices"),
    C("logreg-label-2-binomial", "labels outside 0..K-1",
      lambda d: _log(d.expr(label="CAST(id % 3 AS DOUBLE)"), family="binomial"),
      ValueError, r"'label' \(labelCol\).*other than 0 and 1"),
    C("logreg-label-above-max-classes", "labels outside 0..K-1", lambda d: _log(d.expr(label="label * 5000")),
      ValueError, r"'label' \(labelCol\).*999"),
    C("logreg-null-weight", "bad weights", lambda d: _log(d.expr(w="IF(id = 3, NULL, w)"), weightCol="w"),
      ValueError, r"'w' \(weightCol\).*null"),
    C("logreg-nan-weight", "bad weights",
      lambda d: _log(d.expr(w="IF(id = 3, double('NaN'), w)"), weightCol="w"), ValueError, r"'w' \(weightCol\)"),
    C("logreg-regParam-negative", "bad param", lambda d: _log(d.base, regParam=-1.0), ValueError, r"'regParam'"),
    C("logreg-elasticNetParam-above-1", "bad param", lambda d: _log(d.base, elasticNetParam=1.5),
      ValueError, r"'elasticNetParam'.*1.5"),
    C("logreg-maxIter-negative", "bad param", lambda d: _log(d.base, maxIter=-1), ValueError, r"'maxIter'.*-1"),
    C("logreg-solver-unknown", "bad param", lambda d: _log(d.base, solver="newton"), ValueError, r"'solver'.*'newton'"),
    C("logreg-family-unknown", "bad param", lambda d: _log(d.base, family="poisson"),
      ValueError, r"'family'.*'poisson'"),
    C("sgd-negative-label", "labels outside 0..K-1",
      lambda d: SGDLogisticRegression(epochs=1).fit(d.expr(label="label - 1.0")),
      ValueError, r"'label' \(labelCol\)"),
    C("sgd-epochs-0", "bad param", lambda d: SGDLogisticRegression(epochs=0).fit(d.base), ValueError, r"'epochs'"),
    C("logregmodel-partialFit-more-features", "mixed vector sizes",
      lambda d: d.logreg_model.copy().partialFit(d.frame([(0, Vectors.dense([1.0, 2.0, 3.0]), 1.0, 1.0)])),
      ValueError, r"'features' \(featuresCol\) has 3 features, the model has 2"),
    C("logregmodel-partialFit-label-2", "labels outside 0..K-1",
      lambda d: d.logreg_model.copy().partialFit(d.expr(label="label + 1.0")),
      ValueError, r"'label' \(labelCol\).*other than 0 and 1"),
    # ---- TorchEstimator / TorchModel (validation before any job, except the 'launch' ones)
    C("torch-model-unset", "bad param", lambda d: _torch_est(model=None).fit(d.base), ValueError, r"'model'",
      torch=True),
    C("torch-string-label", "wrong-typed column", lambda d: _torch_est().fit(d.expr(label="s")),
      TypeError, r"'label'.*'labelCol'.*numeric", torch=True),
    C("torch-loss-unknown", "bad param", lambda d: _torch_est(loss="hinge").fit(d.base), ValueError, r"'loss'",
      torch=True),
    C("torch-epochs-0", "bad param", lambda d: _torch_est(epochs=0).fit(d.base), ValueError, r"'epochs'",
      torch=True),
    # a case that launches TorchDistributor (one process): an empty partition, reported on the
    # driver as a plain ValueError (a NaN feature and no partition at all: the package's
    # check_nan_feature and check_fit_empty_dataframe, tests/test_conformance.py)
    C("torch-empty-partition-launch", "empty data", lambda d: _torch_est().fit(d.base.filter("id < 0")),
      ValueError, r"'features'.*'featuresCol'.*empty or has fewer rows than param 'numProc' \(1\)", torch=True),
    # the same per-process checks without launching (what each training process runs on its share)
    C("torch-null-label-shard", "null label", lambda d: _shard(d, label=[0.0, None]),
      ValueError, r"'label'.*'labelCol'.*1 null", torch=True),
    C("torch-inf-label-shard", "NaN/inf label", lambda d: _shard(d, label=[0.0, INF]),
      ValueError, r"'label'.*'labelCol'.*NaN or infinite", torch=True),
    # ---- saved stages
    C("load-missing-path", "corrupted or foreign saved model",
      lambda d: LinearRegressionModel.load(d.fresh_dir("nothing-here")), ModelLoadError, r"nothing-here"),
    C("load-empty-dir", "corrupted or foreign saved model", lambda d: LinearRegressionModel.load(_empty_dir(d)),
      ModelLoadError, r"empty-\d+.*not a saved sparkml_scale stage"),
    C("load-mllib-stage", "corrupted or foreign saved model", lambda d: LinearRegressionModel.load(_mllib_stage(d)),
      ModelLoadError, r"org\.apache\.spark\.ml\.feature\.Binarizer.*LinearRegressionModel",
      allow=("org.apache.spark.ml.feature.Binarizer",)),
    C("load-other-sparkml-class", "corrupted or foreign saved model", lambda d: LinearRegressionModel.load(d.pca_path),
      ModelLoadError, r"PCAModel.*not a .*LinearRegressionModel"),
    C("load-metadata-not-json", "corrupted or foreign saved model",
      lambda d: LinearRegressionModel.load(_tampered(d, "lr_path", metadata=lambda m: "{not json")),
      ModelLoadError, r"metadata at '.*saved-linreg-\d+'.*JSON"),
    C("load-metadata-no-uid", "corrupted or foreign saved model",
      lambda d: LinearRegressionModel.load(_tampered(d, "lr_path", metadata=_del("uid"))),
      ModelLoadError, r"saved-linreg-\d+.*'uid'"),
    C("load-metadata-unknown-param", "corrupted or foreign saved model",
      lambda d: LinearRegressionModel.load(_tampered(d, "lr_path", metadata=_set_param("nope", 1))),
      ModelLoadError, r"saved-linreg-\d+.*'nope'"),
    C("load-metadata-bad-param-value", "corrupted or foreign saved model",
      lambda d: LinearRegressionModel.load(_tampered(d, "lr_path", metadata=_set_param("regParam", "lots"))),
      ModelLoadError, r"saved-linreg-\d+.*'regParam'"),
    C("load-newer-version", "model saved by a newer package version",
      lambda d: LinearRegressionModel.load(_tampered(d, "lr_path", metadata=_set("sparkmlScaleVersion", "99.0.0"))),
      ModelLoadError, r"saved by sparkml_scale 99\.0\.0, newer than the installed"),
    C("load-version-not-a-string", "corrupted or foreign saved model",
      lambda d: LinearRegressionModel.load(_tampered(d, "lr_path", metadata=_set("sparkmlScaleVersion", 2))),
      ModelLoadError, r"saved-linreg-\d+.*sparkmlScaleVersion"),
    C("load-data-missing", "corrupted or foreign saved model",
      lambda d: LinearRegressionModel.load(_tampered(d, "lr_path", remove="data")),
      ModelLoadError, r"saved-linreg-\d+/data"),
    C("load-data-truncated", "corrupted or foreign saved model",
      lambda d: LinearRegressionModel.load(_tampered(d, "lr_path", truncate=True)),
      ModelLoadError, r"saved-linreg-\d+/data"),
    C("load-array-wrong-size", "corrupted or foreign saved model",
      lambda d: LinearRegressionModel.load(_tampered(d, "lr_path", arrays=_shorten_array("coefficients"))),
      ModelLoadError, r"saved-linreg-\d+/data.*'coefficients'"),
    C("load-array-missing", "corrupted or foreign saved model",
      lambda d: LinearRegressionModel.load(_tampered(d, "lr_path", arrays=_drop_array("intercept"))),
      ModelLoadError, r"LinearRegressionModel.*intercept"),
    C("load-pca-array-missing", "corrupted or foreign saved model",
      lambda d: PCAModel.load(_tampered(d, "pca_path", arrays=_drop_array("pc"))),
      ModelLoadError, r"PCAModel.*incomplete"),
    C("load-torch-tampered-weights", "corrupted or foreign saved model",
      lambda d: _torch_model_from(_tampered(d, "torch_path", arrays=_flip_bytes("torch_state"))),
      ModelLoadError, r"TorchModel weights", torch=True),
]


def _torch_model_from(path):
    from sparkml_scale.torch import TorchModel

    return TorchModel.load(path)


_PYTHON_ONLY = ("bad param", "numFeatures out of range")


def _params():
    out = []
    for c in CASES:
        # Param checks run in Python before any Spark call: the same code under Connect, so they
        # run classic only (suite time); everything that touches data or files runs under both.
        marks = [pytest.mark.connect] if c.connect and c.category not in _PYTHON_ONLY else []
        out.append(pytest.param(c, id=c.id, marks=marks))
    return out


@pytest.fixture(scope="module")
def data(spark, tmp_path_factory):
    d = Data(spark, str(tmp_path_factory.mktemp("bad_input")))
    yield d
    if "base" in d.__dict__:
        d.base.unpersist()


# the categories of the issue that the package's generic checks cover (for every stage of a kind)
GENERIC = {
    "missing column": ("check_missing_input_column", "check_missing_label_column"),
    "wrong-typed column": ("check_input_column_wrong_type",),
    "null features": ("check_null_vector",),
    "null label": ("check_null_label",),
    "NaN/inf features": ("check_nan_feature",),
    "NaN/inf label": ("check_nan_label",),
    "mixed vector sizes": ("check_mixed_vector_sizes",),
    "empty data": ("check_fit_empty_dataframe",),
    "bad weights": ("check_negative_weight",),
    "bad param": ("check_output_column_exists",),
}


def test_catalogue_is_broad():
    """At least 30 cases, every category of the issue (here or in the package's generic checks),
    every public stage."""
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)
    cats = {c.category for c in CASES}
    for names in GENERIC.values():
        assert set(names) <= set(CHECK_NAMES), names
    for want in ("missing column", "wrong-typed column", "null features", "null label", "NaN/inf features",
                 "NaN/inf label", "mixed vector sizes", "empty data", "one class only", "labels outside 0..K-1",
                 "bad weights", "k out of range", "numFeatures out of range", "bad param",
                 "corrupted or foreign saved model", "model saved by a newer package version"):
        assert want in cats or want in GENERIC, want
    for prefix in ("hasher", "pca", "linreg", "logreg", "sgd", "torch", "load"):
        assert any(c.id.startswith(prefix) for c in CASES), prefix


@pytest.mark.parametrize("case", _params())
def test_bad_input(data, case):
    if case.torch:
        pytest.importorskip("torch")
    with pytest.raises(case.exc) as info:
        case.run(data)
    assert_clean(info.value, case.match, case.allow)
