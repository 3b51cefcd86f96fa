"""Declarative param validation: each stage lists, per param, the values it accepts.

A stage declares a class attribute ``_param_constraints``, a dict from param name to a
constraint (or a list of constraints: the value must satisfy one of them), after
scikit-learn's ``_parameter_constraints`` and ``sklearn.utils._param_validation``::

    _param_constraints = {
        "maxIter": Interval(int, 0, None),
        "elasticNetParam": Interval(float, 0.0, 1.0),
        "solver": Options("auto", "mapreduce", "allreduce", "sgd"),
        "k": [Required(), Interval(int, 1, None)],
        "thresholds": Check(_thresholds_ok, "hold >= 2 finite values >= 0 with at most one 0"),
    }

:func:`validate_params` (run by the stage template before any Spark job) checks every
declared param that is defined and raises ``ValueError`` with one wording per condition:
``param 'maxIter' must be >= 0, got -1``, ``param 'solver' must be one of 'auto', 'mapreduce',
got 'newton'``, ``param 'k' is not set: <doc>``.  Conditions that tie several params together
stay in the stage's ``_validate_extra`` hook.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

__all__ = ["Interval", "Options", "Required", "Check", "validate_params"]


class Interval:
    """A real or integer value in an interval; ``None`` bounds are open-ended.

    ``closed``: ``"both"`` (default), ``"left"``, ``"right"`` or ``"neither"``.  Values must be
    finite (NaN and infinities fail) unless ``allow_inf``.
    """

    def __init__(self, kind: type, left: Optional[float], right: Optional[float], closed: str = "both",
                 allow_inf: bool = False):
        self.kind, self.left, self.right, self.closed, self.allow_inf = kind, left, right, closed, allow_inf

    def __call__(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind is int and not float(value).is_integer():
            return False
        if math.isnan(value) or (math.isinf(value) and not self.allow_inf):
            return False
        lo_ok = self.left is None or (value >= self.left if self.closed in ("both", "left") else value > self.left)
        hi_ok = self.right is None or (value <= self.right if self.closed in ("both", "right") else value < self.right)
        return lo_ok and hi_ok

    def describe(self) -> str:
        lo = ">=" if self.closed in ("both", "left") else ">"
        hi = "<=" if self.closed in ("both", "right") else "<"
        if self.left is not None and self.right is not None:
            lb = "[" if lo == ">=" else "("
            rb = "]" if hi == "<=" else ")"
            return f"be in {lb}{self.left}, {self.right}{rb}"
        if self.left is not None:
            return f"be {lo} {self.left}"
        if self.right is not None:
            return f"be {hi} {self.right}"
        return "be a finite number"


class Options:
    """One of the given values (strings compared exactly, as Spark's params are)."""

    def __init__(self, *values: Any, note: str = ""):
        self.values = values
        self.note = note

    def __call__(self, value: Any) -> bool:
        return value in self.values

    def describe(self) -> str:
        return "be one of " + ", ".join(map(repr, self.values)) + (f" ({self.note})" if self.note else "")


class Required:
    """The param must be set (or have a default); a non-empty value for strings."""

    def __init__(self, what: str = ""):
        self.what = what

    def __call__(self, value: Any) -> bool:
        return value is not None and value != ""

    def describe(self) -> str:
        return "be set" + (f" ({self.what})" if self.what else "")


class Check:
    """Any predicate, with the text that completes ``param 'x' must ...`` (e.g. ``"hold two values"``)."""

    def __init__(self, predicate: Callable[[Any], bool], text: str):
        self.predicate, self.text = predicate, text

    def __call__(self, value: Any) -> bool:
        try:
            return bool(self.predicate(value))
        except (TypeError, ValueError):
            return False

    def describe(self) -> str:
        return self.text


def _constraints(spec) -> Sequence:
    return spec if isinstance(spec, (list, tuple)) else [spec]


def validate_params(stage, constraints: Optional[dict] = None) -> None:
    """Check ``stage``'s params against ``constraints`` (default: ``stage._param_constraints``).

    A param with a :class:`Required` constraint must be defined and non-empty (``ValueError``
    ``param 'k' is not set ...``); every other constraint applies to defined params only.  A
    value passes when it satisfies at least one of its non-``Required`` constraints.  Raises
    ``ValueError`` naming the param, the accepted values and the value given.
    """
    constraints = getattr(stage, "_param_constraints", {}) if constraints is None else constraints
    for name, spec in constraints.items():
        specs = _constraints(spec)
        param = stage.getParam(name)
        required = [c for c in specs if isinstance(c, Required)]
        value = stage.getOrDefault(param) if stage.isDefined(param) else None
        if required and not required[0](value):
            what = required[0].what or param.doc
            raise ValueError(f"param {name!r} is not set: {what}")
        if value is None:
            continue
        others = [c for c in specs if not isinstance(c, Required)]
        if others and not any(c(value) for c in others):
            desc = " or ".join(c.describe() for c in others)
            raise ValueError(f"param {name!r} must {desc}, got {value!r}")
