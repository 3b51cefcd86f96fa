"""Running the checks: :func:`all_checks`, :func:`check_stage`, :func:`parametrize_with_checks`."""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from .bad_input import BAD_INPUT_CHECKS
from .case import StageCase, as_case
from .checks import CONFORMANCE_CHECKS

__all__ = ["Check", "all_checks", "check_stage", "parametrize_with_checks", "CHECK_NAMES"]

_ALL = CONFORMANCE_CHECKS + BAD_INPUT_CHECKS
#: Every check's name, conformance checks first, then the bad-input checks.
CHECK_NAMES: Tuple[str, ...] = tuple(name for name, _, _ in _ALL)


class Check:
    """One check bound to a case's options: call it as ``check(stage, spark)``.

    ``name`` is the check's name (e.g. ``"check_params"``); ``case`` the
    :class:`~sparkml_scale.testing.StageCase` whose options it uses (``stage`` replaces the case's
    stage when it is another object)."""

    def __init__(self, name: str, fn: Callable[[StageCase, Any], None], case: StageCase):
        self.name, self.fn, self.case = name, fn, case

    def __call__(self, stage, spark) -> None:
        case = self.case if stage is self.case.stage else self.case.replace(stage=stage)
        self.fn(case, spark)

    def __repr__(self) -> str:
        return self.name


def _select(names: Optional[Iterable[str]]) -> Optional[set]:
    if names is None:
        return None
    names = set(names)
    unknown = names - set(CHECK_NAMES)
    if unknown:
        raise ValueError(f"unknown check names {sorted(unknown)}; the checks are {list(CHECK_NAMES)}")
    return names


def all_checks(stage, checks: Optional[Iterable[str]] = None, **options) -> Iterator[Tuple[str, Check]]:
    """Yield ``(name, check)`` for every check that applies to ``stage``'s kind, in running order.

    ``stage``: an Estimator/Transformer (with its required params set) or a
    :class:`~sparkml_scale.testing.StageCase`; ``options``: :class:`StageCase` fields (applied to
    the case); ``checks``: only these check names (``ValueError`` for an unknown name).  Each
    ``check`` is a :class:`Check`, called as ``check(stage, spark)``; skip/expected-failure
    options are not applied here (see :func:`check_stage`, :func:`parametrize_with_checks`)."""
    case = as_case(stage, **options)
    wanted = _select(checks)
    for name, fn, applies in _ALL:
        if (wanted is None or name in wanted) and applies(case):
            yield name, Check(name, fn, case)


def check_stage(stage, spark, checks: Optional[Iterable[str]] = None, **options) -> Dict[str, str]:
    """Run every applicable check on ``stage`` in ``spark``; the scikit-learn ``check_estimator``
    of pyspark.ml stages.

    ``stage`` and ``options`` as in :func:`all_checks`; the case's ``skip`` and
    ``expected_failures`` checks are not run.  Returns ``{check name: "passed" | "skipped: why" |
    "expected failure: why"}``.  Raises ``AssertionError`` naming every failed check with its
    message (chained to the first failure) after running them all; an error other than
    ``AssertionError`` inside a check counts as a failure of that check."""
    case = as_case(stage, **options)
    results: Dict[str, str] = {}
    failures: List[Tuple[str, BaseException]] = []
    for name, check in all_checks(case, checks):
        if name in case.skip:
            results[name] = f"skipped: {case.skip[name]}"
            continue
        if name in case.expected_failures:
            results[name] = f"expected failure: {case.expected_failures[name]}"
            continue
        try:
            check(case.stage, spark)
        except Exception as exc:  # noqa: BLE001 - reported below, by check
            failures.append((name, exc))
            results[name] = "failed"
        else:
            results[name] = "passed"
    if failures:
        lines = [f"{name}: {type(exc).__name__}: {str(exc).strip()[:800]}" for name, exc in failures]
        raise AssertionError(f"{case.name} failed {len(failures)} check(s):\n" + "\n".join(lines)) from failures[0][1]
    return results


def parametrize_with_checks(stages: Sequence[Any], checks: Optional[Iterable[str]] = None, **options):
    """A ``pytest.mark.parametrize("stage, check", ...)`` decorator over every applicable
    ``(stage, check)`` pair of ``stages``, with ids ``"<case id>-<check name>"``.

    ``stages``: Estimators/Transformers or :class:`~sparkml_scale.testing.StageCase` objects;
    ``options``: :class:`StageCase` fields applied to every stage that is not already a case;
    ``checks``: only these check names.  A case's ``skip`` entries become ``pytest.mark.skip``
    and its ``expected_failures`` ``pytest.mark.xfail`` (not strict) marks.  The decorated test
    takes ``stage``, ``check`` and a SparkSession fixture and calls ``check(stage, spark)``::

        @parametrize_with_checks([MyEstimator(k=2), StageCase(MyOther(), n_classes=3)])
        def test_conformance(stage, check, spark):
            check(stage, spark)

    pytest is imported here, not when the package is."""
    import pytest

    params = []
    seen = set()
    for stage in stages:
        case = stage if isinstance(stage, StageCase) else as_case(stage, **options)
        if case.name in seen:
            raise ValueError(f"two stages have the id {case.name!r}: give StageCase(..., id=...)")
        seen.add(case.name)
        for name, check in all_checks(case, checks):
            marks = []
            if name in case.skip:
                marks.append(pytest.mark.skip(reason=case.skip[name]))
            if name in case.expected_failures:
                marks.append(pytest.mark.xfail(reason=case.expected_failures[name], strict=False))
            params.append(pytest.param(case.stage, check, id=f"{case.name}-{name}", marks=marks))
    return pytest.mark.parametrize("stage, check", params)
