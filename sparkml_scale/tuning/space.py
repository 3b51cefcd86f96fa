"""The search space of :class:`~sparkml_scale.tuning.HyperparameterSearch`: Params to Optuna distributions.

A search space is a dict from Params of the estimator -- or of a stage inside it, when it is a
``Pipeline`` (nested ones too) -- to ``optuna.distributions`` objects::

    {lr.regParam: FloatDistribution(1e-4, 1.0, log=True),
     lr.elasticNetParam: FloatDistribution(0.0, 1.0),
     hasher.numFeatures: CategoricalDistribution([1 << 14, 1 << 16, 1 << 18])}

A key may also be a param name (``"regParam"``) when exactly one stage of the estimator has a
Param of that name.  :func:`resolve_space` checks everything before any trial runs and raises
``ValueError``/``TypeError`` naming param ``searchSpace`` and the Param: a Param of another
estimator, an empty space, a value that is not a distribution, a distribution of the wrong kind
for the Param's type (a ``FloatDistribution`` for an integer Param, a numeric one for a string
or boolean Param), bounds or choices the Param rejects (its type converter, and a sparkml_scale
stage's declared constraints, e.g. ``elasticNetParam`` in [0, 1]).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from pyspark.ml import Pipeline
from pyspark.ml.param import Param, Params, TypeConverters

__all__ = ["SpaceEntry", "resolve_space", "stages_of", "space_to_json", "space_from_json"]


@dataclass(frozen=True)
class SpaceEntry:
    """One searched Param: the Param, its short name (the key of ``bestParams`` and of a trial's
    ``params``), the stage owning it and the Optuna distribution."""

    param: Param
    name: str
    stage: Params
    distribution: Any


def stages_of(estimator) -> List[Params]:
    """The estimator and, for a ``Pipeline``, every stage inside it (depth first)."""
    out = [estimator]
    if isinstance(estimator, Pipeline):
        for stage in estimator.getStages() if estimator.isDefined(estimator.stages) else []:
            out.extend(stages_of(stage))
    return out


def _describe(stage: Params) -> str:
    return f"{type(stage).__name__} {stage.uid!r}"


def _find(key, stages: List[Params]) -> Tuple[Param, Params]:
    if isinstance(key, str):
        owners = [s for s in stages if s.hasParam(key)]
        if not owners:
            raise ValueError(f"param 'searchSpace' names {key!r}, which no stage of the estimator has "
                             f"(stages: {', '.join(_describe(s) for s in stages)})")
        if len(owners) > 1:
            raise ValueError(f"param 'searchSpace' names {key!r}, which several stages have "
                             f"({', '.join(_describe(s) for s in owners)}): use the Param itself, e.g. "
                             f"stage.{key}")
        return owners[0].getParam(key), owners[0]
    if not isinstance(key, Param):
        raise TypeError(f"param 'searchSpace' keys must be Params (e.g. lr.regParam) or param names, "
                        f"got {type(key).__name__} {key!r:.80}")
    for stage in stages:
        if stage.uid == key.parent and stage.hasParam(key.name):
            return stage.getParam(key.name), stage
    raise ValueError(f"param 'searchSpace' names {key.parent}.{key.name}, a Param of another estimator: "
                     f"not of the search's estimator or its stages ({', '.join(_describe(s) for s in stages)})")


def _convert(param: Param, value: Any) -> Any:
    try:
        return param.typeConverter(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"param 'searchSpace': {param.name} cannot take {value!r} ({str(exc)[:160]})") from None


def _constraint_check(stage: Params, param: Param, value: Any) -> None:
    from ..core.params import Required, _constraints

    spec = getattr(stage, "_param_constraints", {}).get(param.name)
    if spec is None:
        return
    others = [c for c in _constraints(spec) if not isinstance(c, Required)]
    if others and not any(c(value) for c in others):
        raise ValueError(f"param 'searchSpace': {param.name} must {' or '.join(c.describe() for c in others)}, "
                         f"but its distribution can give {value!r}")


def _check_distribution(param: Param, stage: Params, dist) -> None:
    from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,
                                      IntDistribution)

    if not isinstance(dist, BaseDistribution):
        raise TypeError(f"param 'searchSpace': the value for {param.name} must be an optuna.distributions object "
                        "(FloatDistribution, IntDistribution or CategoricalDistribution), "
                        f"got {type(dist).__name__} {dist!r:.80}")
    conv = param.typeConverter
    if isinstance(dist, CategoricalDistribution):
        values = list(dist.choices)
    elif isinstance(dist, (FloatDistribution, IntDistribution)):
        if conv in (TypeConverters.toString, TypeConverters.toBoolean, TypeConverters.toListString,
                    TypeConverters.toListFloat, TypeConverters.toListInt, TypeConverters.toVector,
                    TypeConverters.toMatrix):
            raise TypeError(f"param 'searchSpace': {param.name} takes {_kind(conv)} values, so it needs a "
                            f"CategoricalDistribution, not a {type(dist).__name__}")
        if isinstance(dist, FloatDistribution):
            probe = dist.low + (dist.high - dist.low) * 0.37 + 1e-9
            try:
                ok_int = param.typeConverter(probe) is not None
            except (TypeError, ValueError):
                ok_int = False
            if not ok_int and dist.high > dist.low:
                raise TypeError(f"param 'searchSpace': {param.name} takes integers, so it needs an IntDistribution "
                                "(or a CategoricalDistribution), not a FloatDistribution")
        values = [dist.low, dist.high]
    else:
        raise TypeError(f"param 'searchSpace': {type(dist).__name__} for {param.name} is not supported; use "
                        "FloatDistribution, IntDistribution or CategoricalDistribution")
    for v in values:
        converted = _convert(param, v)
        if isinstance(v, float) and math.isnan(v):
            raise ValueError(f"param 'searchSpace': {param.name} cannot take NaN")
        _constraint_check(stage, param, converted)


def _kind(conv) -> str:
    return {TypeConverters.toString: "string", TypeConverters.toBoolean: "boolean"}.get(conv, "non-numeric")


def resolve_space(estimator, space) -> List[SpaceEntry]:
    """Check ``space`` against ``estimator`` (see the module docstring) and return its entries in
    the given order.  Names: the Param's name, or ``"<stage uid>.<name>"`` when two searched
    Params share a name."""
    if space is None or not isinstance(space, dict):
        raise TypeError("param 'searchSpace' must be a dict from the estimator's Params to optuna distributions, "
                        f"got {type(space).__name__}")
    if not space:
        raise ValueError("param 'searchSpace' is empty: give at least one Param and its distribution")
    stages = stages_of(estimator)
    found: List[Tuple[Param, Params, Any]] = []
    seen = set()
    for key, dist in space.items():
        param, stage = _find(key, stages)
        if (param.parent, param.name) in seen:
            raise ValueError(f"param 'searchSpace' names {param.name} of {_describe(stage)} twice")
        seen.add((param.parent, param.name))
        _check_distribution(param, stage, dist)
        found.append((param, stage, dist))
    names = [p.name for p, _, _ in found]
    return [SpaceEntry(p, p.name if names.count(p.name) == 1 else f"{p.parent}.{p.name}", s, d)
            for p, s, d in found]


def space_to_json(entries: List[SpaceEntry]) -> List[Dict[str, Any]]:
    """JSON form: ``[{"parent": uid, "param": name, "distribution": optuna's JSON}, ...]``."""
    from optuna.distributions import distribution_to_json

    return [{"parent": e.param.parent, "param": e.param.name, "distribution": json.loads(distribution_to_json(e.distribution))}
            for e in entries]


def space_from_json(items, estimator) -> Dict[Param, Any]:
    """The search space dict back from :func:`space_to_json`'s form, with the (loaded)
    ``estimator``'s Params as keys.  Raises ``ValueError`` for a malformed entry."""
    from optuna.distributions import json_to_distribution

    stages = {s.uid: s for s in stages_of(estimator)}
    out: Dict[Param, Any] = {}
    for item in items or []:
        if not isinstance(item, dict) or not {"parent", "param", "distribution"} <= set(item):
            raise ValueError(f"malformed search space entry {item!r:.120}")
        stage: Optional[Params] = stages.get(item["parent"])
        if stage is None or not stage.hasParam(item["param"]):
            raise ValueError(f"search space entry names {item['parent']}.{item['param']}, not a Param of the "
                             "saved estimator")
        out[stage.getParam(item["param"])] = json_to_distribution(json.dumps(item["distribution"]))
    return out
