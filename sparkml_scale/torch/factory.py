"""Modules, optimizers and losses by reference: what a saved stage stores instead of pickles.

A *reference* is JSON: ``"package.module:attribute"`` or
``{"factory": "package.module:attribute", "args": [...], "kwargs": {...}}``.
:func:`reference_of` derives one from an importable function, class or
``functools.partial`` of one (with JSON arguments); :func:`resolve` imports it.
Loading a saved stage imports the named module from the installed packages; it never
unpickles or executes anything stored in the model directory.
"""
from __future__ import annotations

import copy
import functools
import importlib
import json
from typing import Any, Optional, Sequence

__all__ = ["reference_of", "resolve", "build_module", "make_optimizer", "freeze", "OPTIMIZERS"]

#: Optimizers by name (``torch.optim`` classes), called with ``(parameters, lr=learningRate)``.
OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "rmsprop": "RMSprop", "adagrad": "Adagrad"}


def _path_of(obj) -> Optional[str]:
    mod, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not mod or not qual or mod == "__main__" or "<" in qual:
        return None
    try:
        target = importlib.import_module(mod)
        for part in qual.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError):
        return None
    return f"{mod}:{qual}" if target is obj else None


def reference_of(obj) -> Optional[Any]:
    """A JSON reference to ``obj`` (string, or a dict for partials), or ``None`` if it has none
    (a lambda, a local or ``__main__`` function, an ``nn.Module`` instance, non-JSON arguments)."""
    if isinstance(obj, (str, dict)):
        return obj
    if isinstance(obj, functools.partial):
        path = _path_of(obj.func)
        ref = {"factory": path, "args": list(obj.args), "kwargs": dict(obj.keywords)}
        try:
            json.dumps(ref)
        except (TypeError, ValueError):
            return None
        return ref if path else None
    return _path_of(obj) if callable(obj) else None


def resolve(ref, param: str = "model"):
    """The callable a reference names (a partial when it carries arguments)."""
    if isinstance(ref, dict):
        if "factory" not in ref:
            raise ValueError(f"param {param!r}: reference {ref!r} has no 'factory' entry")
        fn = resolve(ref["factory"], param)
        return functools.partial(fn, *ref.get("args", []), **ref.get("kwargs", {}))
    if not isinstance(ref, str) or ":" not in ref:
        raise ValueError(f"param {param!r}: expected 'package.module:attribute', got {ref!r}")
    mod, _, qual = ref.partition(":")
    try:
        target = importlib.import_module(mod)
        for part in qual.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"param {param!r}: cannot import {ref!r} ({exc})") from None
    return target


def build_module(model):
    """A fresh ``torch.nn.Module`` from param ``model``: a module (deep-copied), a zero-argument
    factory, or a reference.  Raises ``TypeError`` naming param 'model' otherwise."""
    import torch

    if isinstance(model, torch.nn.Module):
        return copy.deepcopy(model)
    fn = resolve(model) if isinstance(model, (str, dict)) else model
    if not callable(fn):
        raise TypeError(f"param 'model' must be a torch.nn.Module, a zero-argument factory or "
                        f"'package.module:factory', got {type(model).__name__}")
    module = fn()
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"param 'model': the factory returned {type(module).__name__}, not a torch.nn.Module")
    return module


def make_optimizer(optimizer, parameters, lr: float):
    """``optimizer``: ``None`` (Adam), a name in :data:`OPTIMIZERS`, a reference, or a factory
    ``f(parameters) -> torch.optim.Optimizer``; the learning rate is set to ``lr`` in every group."""
    import torch

    params = [p for p in parameters if p.requires_grad]
    if not params:
        raise ValueError("param 'frozenLayers' freezes every parameter of the model: nothing to train")
    if optimizer is None or (isinstance(optimizer, str) and optimizer.lower() in OPTIMIZERS):
        cls = getattr(torch.optim, OPTIMIZERS[(optimizer or "adam").lower()])
        return cls(params, lr=lr)
    fn = resolve(optimizer, "optimizer") if isinstance(optimizer, (str, dict)) else optimizer
    if not callable(fn):
        raise TypeError(f"param 'optimizer' must be a name ({', '.join(OPTIMIZERS)}), a factory or a "
                        f"reference, got {type(optimizer).__name__}")
    opt = fn(params)
    if not isinstance(opt, torch.optim.Optimizer):
        raise TypeError(f"param 'optimizer': the factory returned {type(opt).__name__}, not a torch.optim.Optimizer")
    for group in opt.param_groups:
        group["lr"] = lr
    return opt


def freeze(module, prefixes: Sequence[str]) -> int:
    """Turn off gradients of the parameters whose dotted name is a prefix in ``prefixes`` or
    lies under one (``"features"`` freezes ``features.0.weight``...).  Returns how many tensors
    were frozen; a prefix that names no parameter raises ``ValueError`` naming 'frozenLayers'."""
    names = [n for n, _ in module.named_parameters()]
    count = 0
    for pre in prefixes:
        hits = [n for n in names if n == pre or n.startswith(pre + ".")]
        if not hits:
            raise ValueError(f"param 'frozenLayers': {pre!r} names no parameter of the model "
                             f"(parameters: {names[:8]}{'...' if len(names) > 8 else ''})")
    for n, p in module.named_parameters():
        if any(n == pre or n.startswith(pre + ".") for pre in prefixes):
            p.requires_grad_(False)
            count += 1
    return count
