"""What a clean error is: a plain Python exception, nothing of Py4J or the JVM reaching the user.

:func:`assert_clean` is the rule every bad-input check applies to the exception a stage raises;
:func:`expect_clean_error` runs a call and applies it.
"""
from __future__ import annotations

import re
from typing import Callable, Optional, Sequence, Tuple, Type, Union

__all__ = ["assert_clean", "expect_clean_error", "LEAK_MARKERS", "MAX_MESSAGE_LENGTH"]

#: Substrings whose presence in a message shows a JVM/Py4J/gRPC trace leaking through.
LEAK_MARKERS = ("py4j", "org.apache.spark", "at java.", "Traceback", "\tat ", "grpc")
#: The longest message a clean error may have.
MAX_MESSAGE_LENGTH = 1000


def _forbidden_types() -> tuple:
    out = []
    try:
        from py4j.protocol import Py4JError

        out.append(Py4JError)
    except ImportError:  # pragma: no cover - a Connect-only install
        pass
    from pyspark.errors import PySparkException

    out.append(PySparkException)
    try:
        import grpc

        out.append(grpc.RpcError)
    except ImportError:  # pragma: no cover - classic-only install
        pass
    return tuple(out)


def _assert_not_raw(exc: BaseException) -> None:
    """``exc`` and the exceptions a printed traceback would show with it are not Py4J/pyspark/gRPC."""
    bad = _forbidden_types()
    seen, e = 0, exc
    while e is not None and seen < 10:
        assert not isinstance(e, bad), f"raw Spark/Py4J error reaches the user: {type(e).__name__}: {str(e)[:500]}"
        seen += 1
        e = e.__cause__ if e.__cause__ is not None else (None if e.__suppress_context__ else e.__context__)


def assert_clean(exc: BaseException, match: str, allow: Sequence[str] = ()) -> None:
    """Assert that ``exc`` is a clean error; ``AssertionError`` saying what is wrong if not.

    Clean means: ``exc`` is not a Py4J, pyspark (``PySparkException``) or gRPC error, nor is any
    exception a printed traceback would show with it (its ``__cause__``/``__context__`` chain);
    its message matches the regex ``match`` (``re.search``), holds none of
    :data:`LEAK_MARKERS` and is shorter than :data:`MAX_MESSAGE_LENGTH` characters.

    ``allow``: substrings the message may legitimately hold although they contain a leak
    marker (e.g. the JVM class name of a foreign saved stage); they are removed before the
    leak check."""
    _assert_not_raw(exc)
    msg = str(exc)
    assert re.search(match, msg), f"message {msg[:500]!r} does not match {match!r}"
    text = msg
    for a in allow:
        text = text.replace(a, "")
    for s in LEAK_MARKERS:
        assert s not in text, f"message leaks {s!r}: {msg[:500]!r}"
    assert len(msg) < MAX_MESSAGE_LENGTH, f"message too long ({len(msg)} chars): {msg[:300]}..."


ExcTypes = Union[Type[BaseException], Tuple[Type[BaseException], ...]]


def expect_clean_error(call: Callable[[], object], types: ExcTypes, match: str, what: str,
                       also: Optional[Tuple[Optional[type], str]] = None) -> BaseException:
    """Run ``call()``, which must raise one of ``types``, cleanly (:func:`assert_clean`), with a
    message matching ``match``; ``what`` says what was done (for the assertion messages).

    ``also``: ``(type or None, regex)``, a narrower type and a second regex the error must also
    meet.  Returns the exception; raises ``AssertionError`` when ``call`` returns, raises
    another type (the original error chained) or raises unclean."""
    names = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - every error is judged below
        try:
            _assert_not_raw(exc)
        except AssertionError as failed:
            raise AssertionError(f"{what}: {failed}") from exc
        if not isinstance(exc, types):
            raise AssertionError(f"{what}: raised {type(exc).__name__}, expected {names}: "
                                 f"{str(exc)[:500]}") from exc
        try:
            assert_clean(exc, match)
            if also is not None:
                narrower, regex = also
                if narrower is not None:
                    assert isinstance(exc, narrower), f"raised {type(exc).__name__}, expected {narrower.__name__}"
                assert_clean(exc, regex)
        except AssertionError as failed:
            raise AssertionError(f"{what}: {failed}") from exc
        return exc
    raise AssertionError(f"{what}: no error raised (expected {names})")
