"""Model compression for :class:`~sparkml_scale.torch.estimator.TorchModel`: pruning and post-training
quantization, as JSON *recipes* re-applied to the factory's module (no pickle).

A compressed model keeps param ``model`` (its factory) and a recipe: a list of steps, each a JSON
object.  Loading builds the factory's module, replays the steps that change its structure, then loads
the saved ``state_dict`` with ``torch.load(weights_only=True)``.  Steps:

- ``{"op": "prune", "method": "l1_unstructured" | "ln_structured", "amount", "n", "dim", "layers",
  "shrink": false}``: weights set to zero by ``torch.nn.utils.prune`` (``l1_unstructured``: the
  ``amount`` share of each layer's weight entries with the smallest magnitude; ``ln_structured``:
  the ``amount`` share of its rows (``dim=0``: output units / channels) with the smallest L-``n``
  norm), made permanent with ``prune.remove``.  Same shapes, so nothing is replayed on load; the
  zeros are the masks a fine-tuning fit keeps (:func:`masks_of`).
- ``{"op": "prune", "method": "ln_structured", "shrink": true, "removed": [[layer, [idx...]], ...],
  "inputShape"}``: the same rows, *removed* (the layers get smaller, and so does every layer that
  depends on them: the next layer's inputs, a BatchNorm's channels) by Torch-Pruning's dependency
  graph (``torch_pruning.DependencyGraph``, Fang et al., "DepGraph: Towards Any Structural Pruning",
  CVPR 2023; pip extra ``[compression]``).  ``removed`` lists, in order, each pruned layer and the
  output indices removed from it at that point; the load replays exactly that.
- ``{"op": "quantize", "method": "dynamic", "dtype": "qint8", "backend"}``: dynamic
  (weight-only ahead, activations at run time) quantization of ``nn.Linear``, ``nn.LSTM`` and
  ``nn.GRU`` layers.
- ``{"op": "quantize", "method": "static", "dtype": "qint8", "engine", "inputShape", "backend"}``:
  static int8 quantization (weights and activations) by FX graph mode, calibrated on a DataFrame: the
  model must be ``torch.fx``-traceable.  Activation ranges are min/max observers (they combine exactly
  over partitions: the calibration is one ``mapInArrow`` pass whose per-partition minima and maxima are
  reduced on the driver); weights per-channel symmetric.

Quantized models run on CPU only (torch's quantized kernels; ``transform`` keeps them on CPU when
CUDA is present).  Quantization goes through one small interface, :class:`QuantizationBackend`;
:data:`BACKEND` is the one used.  Today it is ``torch.ao.quantization`` (:class:`TorchAOBackend`):
torch 2.13 marks it deprecated ("will be removed in 2.10", a date already past) in favour of the
``torchao`` package, whose int8 CPU path measured about 10x slower than ``quantize_dynamic`` here.
The known deprecation text is silenced in our calls only; ``tests/test_compression.py`` fails when the
API disappears or warns anything else about removal.
"""
from __future__ import annotations

import contextlib
import copy
import warnings
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["PRUNE_METHODS", "QUANT_METHODS", "QUANT_DTYPES", "QuantizationBackend", "TorchAOBackend",
           "BACKEND", "prune_module", "check_recipe", "apply_structure", "build_from", "masks_of", "sparsity_of",
           "weight_counts", "is_quantized", "example_input"]

PRUNE_METHODS = ("l1_unstructured", "ln_structured")
QUANT_METHODS = ("dynamic", "static")
#: float16 dynamic quantization is not offered: torch serializes its packed weights as float32 (no
#: smaller on disk) and its CPU kernels measured no faster.
QUANT_DTYPES = {"dynamic": ("qint8",), "static": ("qint8",)}

#: The torch 2.13 deprecation text of ``torch.ao.quantization`` (silenced in our calls; see the module docstring).
KNOWN_DEPRECATION = r"torch\.ao\.quantization is deprecated and will be removed in 2\.10"
#: Every deprecation/removal text torch 2.13 prints for what :data:`BACKEND` calls (silenced in our calls;
#: ``tests/test_compression.py`` fails on any other).
KNOWN_WARNINGS = (
    KNOWN_DEPRECATION,
    r"quantized tensor creation functions that produce tensors with dtype torch\.quint8, torch\.qint8, and "
    r"torch\.qint32 are deprecated and will be removed in a future PyTorch release",
)


def _layer_types():
    import torch.nn as nn

    return (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


# ---------------------------------------------------------------------------------------- pruning
def prunable_layers(module, layers: Optional[Sequence[str]] = None, param: str = "layers",
                    skip_last: bool = False) -> List[Tuple[str, Any]]:
    """``(name, layer)`` of the ``nn.Linear`` / ``nn.ConvNd`` layers of ``module`` in definition order:
    all of them (without the last when ``skip_last``), or those named in ``layers`` or lying under
    a named prefix.  ``ValueError`` naming ``param`` for a name that matches no such layer."""
    from .factory import _under

    found = [(n, m) for n, m in module.named_modules() if isinstance(m, _layer_types())]
    if not found:
        raise ValueError(f"param {param!r}: the model has no Linear or Conv layer to compress")
    if layers is None:
        return found[:-1] if skip_last and len(found) > 1 else found
    if isinstance(layers, str) or not all(isinstance(x, str) for x in layers):
        raise TypeError(f"param {param!r} must be a list of layer names, got {layers!r:.200}")
    out = []
    for pre in layers:
        hits = [(n, m) for n, m in found if _under(n, pre)]
        if not hits:
            raise ValueError(f"param {param!r}: {pre!r} names no Linear or Conv layer of the model "
                             f"(layers: {[n for n, _ in found][:12]})")
        out += [h for h in hits if h[0] not in {n for n, _ in out}]
    return out


def example_input(module, input_shape: Optional[Sequence[int]]):
    """A zero float32 input ``(1, *input_shape)``; without ``input_shape`` the first layer must be an
    ``nn.Linear`` (its ``in_features``), else ``ValueError`` naming param 'inputShape'."""
    import torch

    if input_shape:
        return torch.zeros((1,) + tuple(int(s) for s in input_shape))
    first = next((m for m in module.modules() if isinstance(m, _layer_types())), None)
    if isinstance(first, torch.nn.Linear):
        return torch.zeros((1, first.in_features))
    raise ValueError("set param 'inputShape' (the shape of one input row): tracing this model needs an example input")


def _check_amount(amount) -> float:
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0.0 < float(amount) < 1.0:
        raise ValueError(f"param 'amount' must be a fraction in (0, 1), got {amount!r}")
    return float(amount)


def prune_module(module, amount: float, method: str = "l1_unstructured", layers: Optional[Sequence[str]] = None,
                 n: float = 2, dim: int = 0, shrink: bool = False,
                 input_shape: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """Prune ``module`` in place (see the module docstring) and return the recipe step.

    ``amount``: the share of each chosen layer's weight entries (``l1_unstructured``) or rows
    (``ln_structured``) to prune, in (0, 1).  ``layers``: layer names or prefixes (default: every
    Linear/Conv layer; for ``ln_structured`` every one but the last, whose rows are the model's
    outputs).  ``n``: the norm of ``ln_structured`` (``1``, ``2``, ``float('inf')``...); ``dim``: the
    weight dimension whose slices are pruned (0: output units/channels; 1: inputs).  ``shrink``:
    remove the pruned rows (``ln_structured`` with ``dim=0`` only; needs ``torch-pruning``, and
    ``input_shape`` unless the first layer is Linear).  Raises ``ValueError``/``TypeError`` naming the
    param for anything else, ``ImportError`` naming the pip extra without ``torch-pruning``."""
    import torch.nn.utils.prune as prune

    amount = _check_amount(amount)
    if method not in PRUNE_METHODS:
        raise ValueError(f"param 'method' must be one of {', '.join(PRUNE_METHODS)}, got {method!r}")
    if not isinstance(shrink, bool):
        raise TypeError(f"param 'shrink' must be a bool, got {shrink!r}")
    structured = method == "ln_structured"
    if shrink and not structured:
        raise ValueError("param 'shrink' needs method='ln_structured': unstructured zeros cannot be removed from a layer")
    if structured:
        if isinstance(n, bool) or not isinstance(n, (int, float)) or not n > 0:
            raise ValueError(f"param 'n' (the norm of ln_structured) must be > 0, got {n!r}")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            raise ValueError(f"param 'dim' must be a non-negative weight dimension, got {dim!r}")
        if shrink and dim != 0:
            raise ValueError(f"param 'shrink' removes output units/channels: it needs dim=0, got dim={dim}")
    targets = prunable_layers(module, layers, skip_last=structured)
    names = [name for name, _ in targets]
    step: Dict[str, Any] = {"op": "prune", "method": method, "amount": amount, "layers": names, "shrink": shrink}
    if structured:
        step.update(n=float(n), dim=int(dim))
    if not shrink:
        for name, layer in targets:
            if structured:
                if dim >= layer.weight.dim():
                    raise ValueError(f"param 'dim': layer {name!r} has a {layer.weight.dim()}-d weight, got dim={dim}")
                prune.ln_structured(layer, "weight", amount=amount, n=n, dim=dim)
            else:
                prune.l1_unstructured(layer, "weight", amount=amount)
            prune.remove(layer, "weight")
        return step
    tp = _torch_pruning()
    example = example_input(module, input_shape)
    graph = _graph(tp, module, example)
    outputs = set(_output_layers(module, example))
    for name, layer in targets:
        if layer in outputs:
            raise ValueError(f"param 'layers': {name!r} produces the model's output; removing its units would "
                             "remove outputs (leave it out, or use shrink=False)")

    def lowest(layer) -> List[int]:  # the rows ln_structured would zero
        mask = prune.LnStructured(amount, n=n, dim=0).compute_mask(layer.weight.detach(),
                                                                     default_mask=_ones_like(layer.weight))
        return [int(i) for i in np.flatnonzero(mask.flatten(1).sum(1).cpu().numpy() == 0)]

    # chosen on the weights as trained (as ln_structured chooses), before any removal changes a
    # later layer's inputs; a layer that a coupled group already shrank is chosen again
    chosen = {name: (layer.weight.shape[0], lowest(layer)) for name, layer in targets}
    removed = []
    for name, layer in targets:
        size, idxs = chosen[name]
        if layer.weight.shape[0] != size:
            idxs = lowest(layer)
        if not idxs:
            continue
        group = graph.get_pruning_group(layer, _out_fn(tp, layer), idxs=idxs)
        if not graph.check_pruning_group(group):
            raise ValueError(f"param 'amount': pruning {len(idxs)} units of layer {name!r} would leave it "
                             "(or a layer tied to it) empty")
        group.prune()
        removed.append([name, idxs])
    step["removed"] = removed
    step["inputShape"] = [int(s) for s in example.shape[1:]]
    return step


def _ones_like(t):
    import torch

    return torch.ones_like(t, dtype=t.dtype)


def _out_fn(tp, layer):
    import torch.nn as nn

    return tp.prune_linear_out_channels if isinstance(layer, nn.Linear) else tp.prune_conv_out_channels


def _output_layers(module, example) -> List[Any]:
    """The Linear/Conv layers whose output is (a view of) the model's output (their units are outputs)."""
    import torch

    seen = []
    hooks = [m.register_forward_hook(lambda mod, i, o: seen.append((mod, o)))
             for m in module.modules() if isinstance(m, _layer_types())]
    try:
        with torch.no_grad():
            out = module(example)
    finally:
        for h in hooks:
            h.remove()
    return [mod for mod, o in seen if isinstance(out, torch.Tensor) and isinstance(o, torch.Tensor)
            and o.data_ptr() == out.data_ptr()] or ([seen[-1][0]] if seen else [])


def _torch_pruning():
    try:
        import torch_pruning as tp
    except ImportError:
        raise ImportError("structured pruning with shrink=True needs the package 'torch-pruning': "
                          "pip install 'sparkml-scale[compression]'") from None
    return tp


def _graph(tp, module, example):
    """Torch-Pruning's dependency graph of ``module`` (traced through autograd: on even under ``no_grad``)."""
    import torch

    with torch.enable_grad():
        return tp.DependencyGraph().build_dependency(module, example_inputs=example, verbose=False)


def _replay_shrink(module, step: Dict[str, Any]) -> None:
    tp = _torch_pruning()
    example = example_input(module, step.get("inputShape"))
    graph = _graph(tp, module, example)
    layers = dict(module.named_modules())
    for name, idxs in step["removed"]:
        layer = layers.get(name)
        if not isinstance(layer, _layer_types()):
            raise ValueError(f"recipe names layer {name!r}, which the model's factory does not build")
        graph.get_pruning_group(layer, _out_fn(tp, layer), idxs=[int(i) for i in idxs]).prune()


# ------------------------------------------------------------------------------------ quantization
class QuantizationBackend:
    """What :meth:`TorchModel.quantize` needs from a quantization library (one implementation in
    use: :data:`BACKEND`).  ``name`` is stored in recipes."""

    name = ""

    def quantize_dynamic(self, module, dtype: str):
        """``module`` (float, eval mode) with its Linear/LSTM/GRU layers dynamically quantized."""
        raise NotImplementedError

    def prepare_static(self, module, example):
        """An observed copy of ``module`` (eval mode) to calibrate: run data through it."""
        raise NotImplementedError

    def observer_state(self, prepared) -> Dict[str, Any]:
        """The calibration statistics of ``prepared`` (tensor name -> ``min``/``max`` tensors)."""
        raise NotImplementedError

    def convert_static(self, prepared, state: Optional[Dict[str, Any]] = None):
        """The quantized module from ``prepared``, with the statistics ``state`` loaded first if given."""
        raise NotImplementedError


@contextlib.contextmanager
def _quiet_known():
    """Silence the known ``torch.ao.quantization`` deprecation text and its uncalibrated-observer notice
    (a rebuilt skeleton gets its qparams from the saved weights), nothing else."""
    with warnings.catch_warnings():
        for text in KNOWN_WARNINGS:  # filterwarnings matches at the message's start: anywhere instead
            warnings.filterwarnings("ignore", message=".*" + text)
        warnings.filterwarnings("ignore", message=r"must run observer before calling calculate_qparams")
        yield


class TorchAOBackend(QuantizationBackend):
    """``torch.ao.quantization``: ``quantize_dynamic`` and FX graph mode ``prepare_fx``/``convert_fx``
    with the ``x86`` engine's default mapping (fbgemm/oneDNN kernels) and min/max activation observers
    (range 0..127: the x86 engine's ``reduce_range``, which avoids overflow in its int8 kernels)."""

    name = "torch.ao"

    def _engine(self) -> str:
        import torch

        engines = torch.backends.quantized.supported_engines
        for e in ("x86", "fbgemm", "qnnpack"):
            if e in engines:
                return e
        raise RuntimeError(f"this torch build has no quantized CPU engine (supported: {engines})")

    def quantize_dynamic(self, module, dtype: str):
        import torch
        import torch.nn as nn

        torch.backends.quantized.engine = self._engine()
        with _quiet_known():
            from torch.ao.quantization import quantize_dynamic

            return quantize_dynamic(module.eval(), {nn.Linear, nn.LSTM, nn.GRU}, dtype=getattr(torch, dtype))

    def _mapping(self, engine: str):
        import torch
        from torch.ao.quantization import QConfig, get_default_qconfig_mapping
        from torch.ao.quantization.observer import MinMaxObserver, default_per_channel_weight_observer

        qconfig = QConfig(activation=MinMaxObserver.with_args(dtype=torch.quint8, quant_min=0, quant_max=127),
                          weight=default_per_channel_weight_observer)
        return get_default_qconfig_mapping(engine).set_global(qconfig)

    def prepare_static(self, module, example):
        import torch

        engine = self._engine()
        torch.backends.quantized.engine = engine
        with _quiet_known():
            from torch.ao.quantization.quantize_fx import prepare_fx

            try:
                return prepare_fx(copy.deepcopy(module).eval(), self._mapping(engine), (example,))
            except Exception as exc:  # noqa: BLE001 - torch.fx tracing errors are varied
                raise ValueError(f"static quantization traces the model with torch.fx, which failed: "
                                 f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]} (use method='dynamic')") from None

    def observer_state(self, prepared) -> Dict[str, Any]:
        from torch.ao.quantization.observer import ObserverBase

        out = {}
        for name, m in prepared.named_modules():
            if isinstance(m, ObserverBase) and hasattr(m, "min_val"):
                out[name] = {"min": m.min_val.detach().clone(), "max": m.max_val.detach().clone()}
        return out

    def convert_static(self, prepared, state: Optional[Dict[str, Any]] = None):
        from torch.ao.quantization.observer import ObserverBase

        if state:
            for name, m in prepared.named_modules():
                if isinstance(m, ObserverBase) and name in state:
                    # resize: a per-channel observer starts with empty buffers
                    m.min_val.resize_(state[name]["min"].shape).copy_(state[name]["min"])
                    m.max_val.resize_(state[name]["max"].shape).copy_(state[name]["max"])
        with _quiet_known():
            from torch.ao.quantization.quantize_fx import convert_fx

            return convert_fx(prepared)


#: The backend :meth:`TorchModel.quantize` uses (see the module docstring for why).
BACKEND: QuantizationBackend = TorchAOBackend()
_BACKENDS = {BACKEND.name: BACKEND}


def combine_observer_states(states: Iterable[Dict[str, Any]]) -> Dict[str, Any]:
    """Elementwise min of the minima and max of the maxima over partitions' observer states (empty
    observers, +inf/-inf, drop out)."""
    import torch

    out: Dict[str, Any] = {}
    for st in states:
        for name, mm in st.items():
            if name not in out:
                out[name] = {"min": mm["min"].clone(), "max": mm["max"].clone()}
            elif mm["min"].shape == out[name]["min"].shape:
                out[name]["min"] = torch.minimum(out[name]["min"], mm["min"])
                out[name]["max"] = torch.maximum(out[name]["max"], mm["max"])
            elif out[name]["min"].numel() == 0:
                out[name] = {"min": mm["min"].clone(), "max": mm["max"].clone()}
    return out


# ------------------------------------------------------------------------------------------ recipes
def check_recipe(recipe: Any, where: str = "recipe") -> List[Dict[str, Any]]:
    """``recipe`` if it is a well-formed list of steps, else ``ValueError`` naming ``where``."""
    if not isinstance(recipe, list):
        raise ValueError(f"{where}: expected a list of compression steps, got {type(recipe).__name__}")
    quantized = False
    for i, step in enumerate(recipe):
        op = step.get("op") if isinstance(step, dict) else None
        if quantized:
            raise ValueError(f"{where}: step {i} follows a quantization step (only the last step may quantize)")
        if op == "prune":
            if step.get("method") not in PRUNE_METHODS or not isinstance(step.get("layers"), list):
                raise ValueError(f"{where}: step {i} is not a valid prune step: {step!r:.200}")
            if step.get("shrink"):
                removed = step.get("removed")
                if not isinstance(removed, list) or not all(
                        isinstance(r, list) and len(r) == 2 and isinstance(r[0], str) and isinstance(r[1], list)
                        and all(isinstance(j, int) and j >= 0 for j in r[1]) for r in removed):
                    raise ValueError(f"{where}: step {i} has no valid 'removed' list")
        elif op == "quantize":
            method = step.get("method")
            if method not in QUANT_METHODS or step.get("dtype") not in QUANT_DTYPES[method]:
                raise ValueError(f"{where}: step {i} is not a valid quantize step: {step!r:.200}")
            if step.get("backend") not in _BACKENDS:
                raise ValueError(f"{where}: step {i} names quantization backend {step.get('backend')!r}; this "
                                 f"version has {sorted(_BACKENDS)}")
            quantized = True
        else:
            raise ValueError(f"{where}: step {i} has unknown op {op!r:.80}")
    return recipe


def is_quantized(recipe: Sequence[Dict[str, Any]]) -> bool:
    return any(step.get("op") == "quantize" for step in recipe)


def apply_structure(module, recipe: Sequence[Dict[str, Any]]):
    """``module`` (fresh from the factory) with the recipe's structural steps replayed: removed units
    (shrink) and quantization.  Returns the module to load the saved ``state_dict`` into (a new object
    when quantized).  Zeroing steps change no structure and are skipped."""
    import torch

    module = module.eval()
    for step in recipe:
        if step["op"] == "prune" and step.get("shrink"):
            _replay_shrink(module, step)
        elif step["op"] == "quantize":
            backend = _BACKENDS[step["backend"]]
            if step["method"] == "dynamic":
                module = backend.quantize_dynamic(module, step["dtype"])
            else:
                engine = step.get("engine") or "x86"
                if engine not in torch.backends.quantized.supported_engines:
                    raise RuntimeError(f"this model was quantized for the {engine!r} engine, which this torch "
                                       f"build lacks ({torch.backends.quantized.supported_engines})")
                example = example_input(module, step.get("inputShape"))
                module = backend.convert_static(backend.prepare_static(module, example))
    return module


def build_from(skeleton, steps: Sequence[Dict[str, Any]]):
    """A zero-argument factory's body for the executors: a copy of the float module ``skeleton`` with
    ``steps`` (quantization) applied.  (FX-quantized modules do not survive pickling, so the
    executors rebuild them from a float module and the recipe.)"""
    return apply_structure(copy.deepcopy(skeleton), steps)


def masks_of(module, recipe: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """``{parameter name: bool mask}`` for the weights that the recipe's zeroing steps pruned: True where
    the weight is non-zero now (what fine-tuning keeps trainable).  Empty without such steps."""
    layers = {name for step in recipe if step["op"] == "prune" and not step.get("shrink") for name in step["layers"]}
    params = dict(module.named_parameters())
    return {f"{name}.weight": params[f"{name}.weight"].detach() != 0 for name in sorted(layers)
            if f"{name}.weight" in params}


def _flat_tensors(value) -> Iterable[Any]:
    import torch

    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _flat_tensors(v)


def weight_counts(state: Dict[str, Any]) -> Tuple[int, int]:
    """``(entries, non-zero entries)`` of the weights in a ``state_dict``: floating-point tensors and
    quantized tensors (a quantized entry counts as zero when it equals its zero point), including
    packed ``(weight, bias)`` tuples, excluding 0-d tensors (scalars such as a quantized layer's
    output scale and zero point)."""
    import torch

    total = nonzero = 0
    for value in state.values():
        for t in _flat_tensors(value):
            if t.dim() == 0:
                continue
            if t.is_quantized:
                q = t.int_repr().to(torch.int32)
                if t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                    shape = [1] * t.dim()
                    shape[t.q_per_channel_axis()] = -1
                    zp = t.q_per_channel_zero_points().to(torch.int32).reshape(shape)
                else:
                    zp = int(t.q_zero_point())
                total += t.numel()
                nonzero += int((q != zp).sum())
            elif t.is_floating_point():
                total += t.numel()
                nonzero += int(torch.count_nonzero(t))
    return total, nonzero


def sparsity_of(module) -> Dict[str, Any]:
    """``{"overall": share of zero weight entries over all Linear/Conv weights, "layers": {layer: share}}``
    of a float or quantized module."""
    import torch

    layers: Dict[str, float] = {}
    zeros = total = 0
    for name, m in module.named_modules():
        w = getattr(m, "weight", None)
        w = w() if callable(w) and not isinstance(w, torch.Tensor) else w  # quantized layers: weight()
        if not isinstance(w, torch.Tensor) or w.dim() < 2 or name == "":
            continue
        t, nz = weight_counts({"w": w})
        if t:
            layers[name] = 1.0 - nz / t
            zeros += t - nz
            total += t
    return {"overall": zeros / total if total else 0.0, "layers": layers}
