"""``TorchModel.transform``'s batched inference: the function each Arrow batch goes through.

What runs on the executors:

- ``_predict_udf_fn(model_spec, state, kind, col, input_shape, batch, use_gpu, threads)`` returns
  ``predict(feats)``, the body of the scalar Arrow UDF (``pyspark.sql.functions.arrow_udf``) that
  ``TorchModel.transform`` applies to the features column alone: one Arrow array of features in,
  the new columns out (one array, or a struct array with the fields ``c0``, ``c1``, ... when there
  are two; the stage selects its fields).  The other columns of the rows never leave the JVM.
- ``_predict_columns`` does its work.  ``model_spec`` is what
  :func:`sparkml_scale.torch.factory.build_module` takes (the driver resolves and vets references
  first; a raw reference that reaches a task is resolved only when
  :meth:`~sparkml_scale.torch.factory.Trust.default` trusts it, else ``ModelLoadError``), ``state``
  the ``torch.save`` bytes of the ``state_dict``.  The features column (named ``col`` in errors)
  becomes one float32 array ``(n, *input_shape)`` (see
  :func:`sparkml_scale.torch.data.features_to_float32`, which raises ``ShardDataError`` on ragged
  rows or a wrong size); the module runs ``batch`` rows at a time under ``torch.no_grad()`` with
  ``threads`` torch threads, on CUDA when ``use_gpu`` ("auto"/"true"/"false", see
  :func:`sparkml_scale.torch.loop.pick_device`) asks and finds it.  Null feature rows give null
  outputs.  The worker's glibc malloc thresholds are pinned first
  (:func:`sparkml_scale.torch.malloc.pin_malloc_thresholds`: activations reuse freed heap instead
  of page-faulting fresh memory in every batch).
- ``_outputs(out, kind)``: the new columns from the float64 outputs ``(n, k)``: ``kind="softmax"``:
  prediction (double, argmax) and probability (dense vectors, softmax); ``"sigmoid"``: prediction
  (1.0 when the logit > 0) and probability ``[1 - p, p]``; ``"raw"``: the output, double for
  ``k == 1``, else dense vectors.
- ``_cached_module`` / ``_MODULES``: each Python worker builds a model once per (weights hash,
  device), keeping at most four.

These functions live in the ``sparkml_scale`` package, so cloudpickle ships them by reference (the
executors import the package); only the ``predict`` closure goes by value.
"""
from __future__ import annotations

import hashlib
from typing import Any, Dict, List

import numpy as np
import pyarrow as pa



#: Modules built by Python workers, by (weights hash, device); a worker builds each model once.
_MODULES: Dict[Any, Any] = {}


def _cached_module(model_spec, state: bytes, key: str, use_gpu: str):
    from .factory import build_module
    from .loop import pick_device
    from .worker import load_checkpoint_bytes

    device = pick_device(use_gpu)
    k = (key, str(device))
    if k not in _MODULES:
        if len(_MODULES) >= 4:
            _MODULES.pop(next(iter(_MODULES)))
        from .compression import _quiet_known

        m = build_module(model_spec)
        with _quiet_known():  # torch 2.13 warns when a quantized weight is rebuilt
            m.load_state_dict(load_checkpoint_bytes(state))
        _MODULES[k] = (m.to(device).eval(), device)
    return _MODULES[k]


def _predict_udf_fn(model_spec, state: bytes, kind: str, col: str, input_shape, batch: int, use_gpu: str,
                    threads: int):
    """``predict(feats)`` for a scalar Arrow UDF (``pyspark.sql.functions.arrow_udf``) over the
    features column alone: the new columns (see :func:`_outputs`) for the batch ``feats`` -- one
    array when there is one, else a struct array with the fields ``c0``, ``c1``, ... (null feature
    rows: null fields).  The input columns stay on the JVM side (Spark joins the result to its rows),
    so only the features go to Python and only the outputs come back."""
    key = hashlib.sha1(state).hexdigest()

    def predict(feats):
        new = _predict_columns(model_spec, state, key, kind, feats, col, input_shape, batch, use_gpu, threads)
        if len(new) == 1:
            return new[0]
        return pa.StructArray.from_arrays(new, names=[f"c{i}" for i in range(len(new))])

    return predict


def _predict_columns(model_spec, state: bytes, key: str, kind: str, feats, col: str, input_shape, batch: int,
                     use_gpu: str, threads: int) -> List[pa.Array]:
    """The new columns (see :func:`_outputs`) for one Arrow batch of the features column ``feats``
    (null rows: null outputs), the module built once per Python worker (:func:`_cached_module`)."""
    import torch

    _prepare_worker(threads)
    module, device = _cached_module(model_spec, state, key, use_gpu)
    valid, X = _valid_features(feats, col, input_shape)
    outs = []
    with torch.no_grad():
        for s in range(0, len(X), batch):
            outs.append(module(_tensor(X[s:s + batch]).to(device)).float().cpu())
    out = torch.cat(outs).numpy().astype(np.float64) if outs else np.zeros((0, 1))
    if out.ndim == 1:
        out = out[:, None]
    new = _outputs(out, kind)
    if valid is not None:
        idx = np.full(len(valid), -1, dtype=np.int64)
        idx[valid] = np.arange(int(valid.sum()))
        take = pa.array(idx, mask=~valid)
        new = [a.take(take) for a in new]
    return new


def _prepare_worker(threads: int) -> None:
    """Before a worker's forward passes: glibc's malloc thresholds pinned (once per process, see
    :mod:`sparkml_scale.torch.malloc`) and ``threads`` torch threads."""
    import torch

    from .malloc import pin_malloc_thresholds

    pin_malloc_thresholds()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _tensor(x: np.ndarray):
    """A CPU tensor of the float32 rows ``x``: shares their memory, or copies them when they are a
    read-only view of an Arrow buffer (torch wants writable arrays)."""
    import torch

    if not x.flags.writeable or not x.flags.c_contiguous:
        x = np.array(x, order="C")
    return torch.from_numpy(x)


def _valid_features(feats, col: str, input_shape):
    """``(valid, X)``: the non-null rows of a features column as one float32 array ``(n, *input_shape)``
    (see :func:`sparkml_scale.torch.data.features_to_float32`) and the row validity mask (``None``
    when no row is null)."""
    from .data import features_to_float32

    if not feats.null_count:
        return None, features_to_float32(feats, col, input_shape)
    return (feats.is_valid().to_numpy(zero_copy_only=False),
            features_to_float32(feats.filter(feats.is_valid()), col, input_shape))


def _calibrate_fn(module, example_shape, col: str, input_shape, batch: int, threads: int):
    """``calibrate(batches)`` for ``mapInArrow``: runs the features (column 0, named ``col`` in errors;
    null rows skipped) through the float ``module`` prepared for static quantization (with an example
    input of ``example_shape``) ``batch`` rows at a time and
    yields one row: ``stats`` (``torch.save`` bytes of its observers' min/max, see
    :meth:`sparkml_scale.torch.compression.QuantizationBackend.observer_state`) and ``rows``."""

    def calibrate(batches):
        import io

        import torch

        from .compression import BACKEND

        _prepare_worker(threads)
        prepared = BACKEND.prepare_static(module, torch.zeros((1,) + tuple(example_shape)))
        rows = 0
        for b in batches:
            X = _valid_features(b.column(0), col, input_shape)[1]
            with torch.no_grad():
                for s in range(0, len(X), batch):
                    prepared(_tensor(X[s:s + batch]))
            rows += len(X)
        buf = io.BytesIO()
        torch.save(BACKEND.observer_state(prepared) if rows else {}, buf)
        yield pa.RecordBatch.from_arrays([pa.array([buf.getvalue()], pa.binary()), pa.array([rows], pa.int64())],
                                         names=["stats", "rows"])

    return calibrate


def _outputs(out: np.ndarray, kind: str) -> List[pa.Array]:
    from ..core.arrow import dense_to_vectors

    if kind == "softmax":
        p = np.exp(out - out.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        return [pa.array(out.argmax(axis=1).astype(np.float64)), dense_to_vectors(p)]
    if kind == "sigmoid":
        p = 1.0 / (1.0 + np.exp(-out[:, 0]))
        return [pa.array((out[:, 0] > 0).astype(np.float64)), dense_to_vectors(np.column_stack([1 - p, p]))]
    if out.shape[1] == 1:
        return [pa.array(out[:, 0])]
    return [dense_to_vectors(out)]
