"""Turning Spark's errors (Py4J/JVM traces, Connect's gRPC errors) into one clear Python line."""
from __future__ import annotations

import re

__all__ = ["first_line", "task_error", "DistributedTaskError", "ModelLoadError"]


class ModelLoadError(ValueError):
    """A saved stage is missing, corrupted, of another class or from a newer package version,
    or names code that is not trusted (see ``sparkml_scale.torch.factory``)."""


def first_line(exc: BaseException) -> str:
    """A short, trace-free summary of a (possibly Py4J/JVM) error."""
    text = str(exc).strip()
    for line in text.splitlines():
        if line.startswith("\tat "):
            continue
        line = line.strip()
        if line and not line.startswith(("An error occurred while calling", "Traceback", "JVM stacktrace")):
            return line[:500]
    return type(exc).__name__


_PY_ERROR = re.compile(r"^\s*(?:[A-Za-z_][\w]*\.)*([A-Za-z_]\w*(?:Error|Exception|Fault|Interrupt))\s*:\s*(.+)$")


def task_error(exc: BaseException, what: str) -> Exception:
    """A clear exception for a Spark job that failed in a Python task: the task's own error
    line (its exception type and message) without the JVM trace.  ``ValueError`` and
    ``TypeError`` keep their type (bad data or params found in a task); anything else
    becomes :class:`DistributedTaskError`."""
    text = str(exc)
    found = None
    for line in text.splitlines():
        if line.startswith("\tat ") or "SQLSTATE" in line or "Py4J" in line:
            continue
        m = _PY_ERROR.match(line)
        if m and m.group(1) not in ("PythonException", "SparkException", "Py4JJavaError"):
            found = m
    if found is None:
        return DistributedTaskError(f"{what} failed: {first_line(exc)}")
    kind, msg = found.group(1), found.group(2).strip()
    if kind in ("ValueError", "TypeError"):
        return (ValueError if kind == "ValueError" else TypeError)(msg)
    return DistributedTaskError(f"{what} failed after Spark's retries: {kind}: {msg[:500]}")


class DistributedTaskError(RuntimeError):
    """A Spark task of a fit or transform failed (every retry): the task's error, without the JVM trace."""
