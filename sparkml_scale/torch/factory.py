"""Modules, optimizers and losses by reference: what a saved stage stores instead of pickles.

A *reference* is JSON: ``"package.module:attribute"`` or
``{"factory": "package.module:attribute", "args": [...], "kwargs": {...}}``.
:func:`reference_of` derives one from an importable function, class or
``functools.partial`` of one (with JSON arguments); :func:`resolve` imports it.

A reference names code that gets called, so a reference read from a model directory is
resolved only when it is **trusted** (:class:`Trust`); whether it is is decided from its
text *before* anything is imported.  Trusted are:

- built in, by param: ``model``: the factories of :mod:`sparkml_scale.torch.models` and the
  ``torch.nn.Module`` classes of ``torch.nn``; ``optimizer``: the ``torch.optim.Optimizer``
  classes of ``torch.optim``; ``loss``: the functions of ``torch.nn.functional`` (one plain
  name after the colon, checked after import to be such a class or function defined there:
  ``torch.nn.functional:importlib.import_module`` is refused);
- references of callables given to a stage in this process (:func:`trust_passed`);
- what the user names: ``TorchModel.load(path, trusted=[...])`` / ``TorchEstimator.load``,
  the Spark conf ``spark.sparkml_scale.trusted`` and the environment variable
  ``SPARKML_SCALE_TRUSTED`` (comma-separated; ``PipelineModel.load`` reads these two).  An
  entry ``"package.module:qualname"`` trusts exactly that reference; an entry
  ``"package.module"`` trusts what that module and its submodules define (the resolved
  object's ``__module__`` must lie under it, so a name it merely imports, like ``os``, is not
  trusted with it).

An untrusted reference raises :class:`sparkml_scale.core.persistence.ModelLoadError` naming
it and how to trust it; nothing is imported or called.  Stages resolve references on the
driver and ship the callables to the executors, which never resolve a reference the driver
did not vet (resolving one there trusts only the built-in rules, callables given in that
process and ``SPARKML_SCALE_TRUSTED``).  Loading a saved stage never unpickles anything
stored in the model directory.
"""
from __future__ import annotations

import copy
import functools
import importlib
import inspect
import json
import os
import re
import types
from collections.abc import Iterable
from typing import Any, Callable, List, Optional, Sequence, Tuple

__all__ = ["reference_of", "resolve", "build_module", "make_optimizer", "freeze", "OPTIMIZERS", "Trust",
           "trust_passed", "trusted_entries", "configured_trust", "TRUSTED_CONF", "TRUSTED_ENV"]

#: Optimizers by name (``torch.optim`` classes), called with ``(parameters, lr=learningRate)``.
OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "rmsprop": "RMSprop", "adagrad": "Adagrad"}

#: Spark conf and environment variable with trusted entries (comma-separated).
TRUSTED_CONF = "spark.sparkml_scale.trusted"
TRUSTED_ENV = "SPARKML_SCALE_TRUSTED"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")

#: Exact references ("module:qualname") of callables given to a stage in this process.
_PASSED: set = set()


def _path_of(obj) -> Optional[str]:
    mod, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not isinstance(mod, str) or not isinstance(qual, str) or mod == "__main__" or "<" in qual:
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


def _factory_paths(ref) -> List[str]:
    """The ``"module:qualname"`` strings a reference names (a dict's factory, recursively)."""
    if isinstance(ref, dict):
        return _factory_paths(ref.get("factory"))
    return [ref] if isinstance(ref, str) else []


def trust_passed(value) -> None:
    """Trust, in this process, the reference of ``value``: a callable (or a reference) that the user
    gave a stage.  Values with no reference (lambdas, modules) need none."""
    ref = value if isinstance(value, (str, dict)) else (reference_of(value) if callable(value) else None)
    _PASSED.update(p for p in _factory_paths(ref) if p.count(":") == 1)


def _under(module, prefix: str) -> bool:
    return isinstance(module, str) and (module == prefix or module.startswith(prefix + "."))


def _defined_under(prefix: str) -> Callable[[Any], bool]:
    return lambda obj: callable(obj) and _under(getattr(obj, "__module__", None), prefix)


def _is_module_class(obj) -> bool:
    import torch

    return isinstance(obj, type) and issubclass(obj, torch.nn.Module) and _under(obj.__module__, "torch.nn")


def _is_optimizer_class(obj) -> bool:
    import torch

    return isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer) and _under(obj.__module__, "torch.optim")


def _is_functional(obj) -> bool:
    return inspect.isfunction(obj) and obj.__module__ == "torch.nn.functional"


#: Built-in trust: (param, module prefix, check of the imported object, what it admits).
_BUILTIN = (
    ("model", "sparkml_scale.torch.models", _defined_under("sparkml_scale.torch.models"),
     "sparkml_scale.torch.models factories"),
    ("model", "torch.nn", _is_module_class, "torch.nn.Module classes of torch.nn"),
    ("optimizer", "torch.optim", _is_optimizer_class, "torch.optim optimizer classes"),
    ("loss", "torch.nn.functional", _is_functional, "torch.nn.functional functions"),
)


def _untrusted(path: str, param: str, found=None):
    """``ModelLoadError`` for an untrusted reference: refused from its text (``found`` None, nothing
    imported) or after import (``found``: the object it named, not among what its module trust admits)."""
    from ..core.errors import ModelLoadError

    mod = path.partition(":")[0]
    builtin = "; ".join(text for p, _, _, text in _BUILTIN if p == param) or "none"
    if found is None:
        what, done, entries = "", "nothing was imported or run", f"[{path!r}] (or the module {mod!r})"
    else:
        where = getattr(found, "__module__", None)
        what = f" (a {type(found).__name__}" + (f" from {where!r})" if isinstance(where, str) else ")")
        done, entries = "it was not called", f"[{path!r}] (this exact reference)"
    return ModelLoadError(
        f"param {param!r} names {path!r}{what}, which is not trusted: {done}. A stage's references are resolved "
        f"only when trusted (built in for {param!r}: {builtin}; and callables given to a stage in this process); "
        f"to trust it, pass trusted={entries} to TorchModel.load / TorchEstimator.load, or list it in the Spark "
        f"conf {TRUSTED_CONF!r} or the environment variable {TRUSTED_ENV!r} (comma-separated; read by "
        "PipelineModel.load too)")


def trusted_entries(value, source: str = "trusted") -> Tuple[str, ...]:
    """Trusted entries from ``value``: ``None``, a comma-separated string, or an iterable of
    ``"package.module"`` / ``"package.module:qualname"`` strings, modules and importable callables.
    Raises ``TypeError``/``ValueError`` naming ``source`` for anything else."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if isinstance(items, (bytes, dict)) or not isinstance(items, Iterable):
        raise TypeError(f"{source} must be a list of 'package.module' or 'package.module:qualname' entries, "
                        f"got {type(value).__name__}")
    out = []
    for item in items:
        if isinstance(item, types.ModuleType):
            item = item.__name__
        elif callable(item) and not isinstance(item, str):
            path = _path_of(item)
            if path is None:
                raise ValueError(f"{source}: {item!r} has no import path; name it as 'package.module:qualname'")
            item = path
        if not isinstance(item, str):
            raise TypeError(f"{source}: entries must be strings, modules or callables, got {item!r:.80}")
        item = item.strip()
        if not item:
            continue
        mod, sep, qual = item.partition(":")
        if not _NAME.fullmatch(mod) or (sep and not _NAME.fullmatch(qual)):
            raise ValueError(f"{source}: {item!r:.200} is not 'package.module' or 'package.module:qualname'")
        out.append(item)
    return tuple(out)


def configured_trust(spark=None) -> Tuple[str, ...]:
    """Entries of the Spark conf ``spark.sparkml_scale.trusted`` (of ``spark``, else the active
    session, if any) and of the environment variable ``SPARKML_SCALE_TRUSTED``."""
    conf = None
    try:
        if spark is None:
            from pyspark.sql import SparkSession

            spark = SparkSession.getActiveSession()
        if spark is not None:
            from ..core.cluster import conf_value as _conf

            conf = _conf(spark, TRUSTED_CONF)
    except ImportError:  # pragma: no cover - a process without pyspark (torchrun on its own)
        pass
    return (trusted_entries(conf, f"Spark conf {TRUSTED_CONF!r}")
            + trusted_entries(os.environ.get(TRUSTED_ENV), f"environment variable {TRUSTED_ENV!r}"))


class Trust:
    """Which references :func:`resolve` may import: the built-in rules, references of callables
    given to a stage in this process, and ``entries`` (see the module docstring)."""

    def __init__(self, entries: Iterable[str] = ()):
        self.entries = trusted_entries(entries)

    @classmethod
    def default(cls) -> "Trust":
        """Built-in rules, callables given in this process and ``SPARKML_SCALE_TRUSTED``."""
        return cls(trusted_entries(os.environ.get(TRUSTED_ENV), f"environment variable {TRUSTED_ENV!r}"))

    def checks(self, path, param: str) -> Tuple[str, str, Optional[List[Callable[[Any], bool]]]]:
        """``(module, qualname, checks)`` for reference string ``path``, from its text alone (nothing
        imported): ``checks`` is ``None`` when it is trusted exactly, else the tests one of which the
        imported object must pass.  Raises ``ValueError`` for a malformed reference and
        ``ModelLoadError`` for an untrusted one."""
        mod, sep, qual = path.partition(":") if isinstance(path, str) else ("", "", "")
        if not sep or not _NAME.fullmatch(mod) or not _NAME.fullmatch(qual):
            raise ValueError(f"param {param!r}: expected 'package.module:attribute', got {path!r:.200}")
        if any(part.startswith("__") for part in qual.split(".")):
            raise ValueError(f"param {param!r}: reference {path!r:.200} names a special attribute ('__...'), "
                             "which is never resolved")
        if path in _PASSED or path in self.entries:
            return mod, qual, None
        found = [_defined_under(e) for e in self.entries if ":" not in e and _under(mod, e)]
        if "." not in qual and not qual.startswith("_"):
            found += [check for p, prefix, check, _ in _BUILTIN if p == param and _under(mod, prefix)]
        if not found:
            raise _untrusted(path, param)
        return mod, qual, found

    def vet(self, ref, param: str) -> List[str]:
        """Resolve ``ref`` (nothing is called) and return the exact paths it names; raises like
        :func:`resolve`."""
        resolve(ref, param, self)
        return _factory_paths(ref)


def resolve(ref, param: str = "model", trust: Optional[Trust] = None):
    """The callable a reference names (a partial when it carries arguments), if ``trust``
    (default :meth:`Trust.default`) trusts it; its module is imported only then.

    Raises ``ValueError`` naming ``param`` for a malformed or unimportable reference and
    :class:`sparkml_scale.core.persistence.ModelLoadError` (a ``ValueError``) naming the reference
    and how to trust it for an untrusted one."""
    trust = Trust.default() if trust is None else trust
    if isinstance(ref, dict):
        if "factory" not in ref:
            raise ValueError(f"param {param!r}: reference {ref!r:.200} has no 'factory' entry")
        args, kwargs = ref.get("args", []), ref.get("kwargs", {})
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise ValueError(f"param {param!r}: reference {ref!r:.200}: 'args' must be a list and 'kwargs' "
                             "an object")
        fn = resolve(ref["factory"], param, trust)
        return functools.partial(fn, *args, **kwargs)
    mod, qual, checks = trust.checks(ref, param)
    try:
        target = importlib.import_module(mod)
        for part in qual.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"param {param!r}: cannot import {ref!r} ({exc})") from None
    if checks is not None and not any(check(target) for check in checks):
        raise _untrusted(ref, param, target)
    return target


def build_module(model, trust: Optional[Trust] = None):
    """A fresh ``torch.nn.Module`` from param ``model``: a module (deep-copied), a zero-argument
    factory, or a reference (resolved if ``trust`` trusts it, see :func:`resolve`).  Raises
    ``TypeError`` naming param 'model' otherwise."""
    import torch

    if isinstance(model, torch.nn.Module):
        return copy.deepcopy(model)
    fn = resolve(model, "model", trust) if isinstance(model, (str, dict)) else model
    if not callable(fn):
        raise TypeError(f"param 'model' must be a torch.nn.Module, a zero-argument factory or "
                        f"'package.module:factory', got {type(model).__name__}")
    module = fn()
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"param 'model': the factory returned {type(module).__name__}, not a torch.nn.Module")
    return module


def make_optimizer(optimizer, parameters, lr: float, trust: Optional[Trust] = None):
    """``optimizer``: ``None`` (Adam), a name in :data:`OPTIMIZERS`, a reference (resolved if
    ``trust`` trusts it, see :func:`resolve`), or a factory ``f(parameters) -> torch.optim.Optimizer``;
    the learning rate is set to ``lr`` in every group."""
    import torch

    params = [p for p in parameters if p.requires_grad]
    if not params:
        raise ValueError("param 'frozenLayers' freezes every parameter of the model: nothing to train")
    if optimizer is None or (isinstance(optimizer, str) and optimizer.lower() in OPTIMIZERS):
        cls = getattr(torch.optim, OPTIMIZERS[(optimizer or "adam").lower()])
        return cls(params, lr=lr)
    fn = resolve(optimizer, "optimizer", trust) if isinstance(optimizer, (str, dict)) else optimizer
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
