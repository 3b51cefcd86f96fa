"""Readable reprs of stages and summaries, for consoles and notebooks.

pyspark's ``Identifiable.__repr__`` prints only the uid, so a fitted model shows nothing useful in
Jupyter.  :class:`ReadableRepr` (first in a class's bases, before the pyspark classes; the template bases
``VectorEstimator``/``VectorModel`` carry it, so their stages only list their fields) gives:

- ``repr(obj)``: one line.  Stages use MLlib's ``toString`` form, ``LogisticRegressionModel:
  uid=..., numClasses=2, numFeatures=262144, solverUsed='allreduce', ...`` (what pyspark users see
  for MLlib's models; pyspark's own docstring examples print it); summaries, which have no uid,
  ``LogisticRegressionTrainingSummary(numClasses=2, totalIterations=23, ...)``.
- ``obj._repr_html_()``: a small HTML table (the class name as caption, one row per field, then
  the uid), which Jupyter shows instead of the line.  The table has every field; the line leaves
  out the ones marked :func:`detail` (long or secondary values such as coefficient summaries).

Each class lists its fields with one method, ``_repr_fields(self) -> [(name, value), ...]``.  A
value of ``None`` is left out (an unset optional value: absent, not an error); :func:`lazy` wraps a
value computed at display time (an exception there shows as ``<error: ...>`` in that field only);
:func:`detail` marks a table-only field.  The default fields of a ``Params`` object are its
explicitly set params (what an estimator was configured with).

Values are summarised by :func:`format_value`: vectors, matrices and arrays as their type, shape,
number of non-zeros and at most the first :data:`MAX_ITEMS` values; floats with six significant
digits; long strings and lists cut.  A repr never raises: when building it fails it falls back to
pyspark's form (the uid), or ``object``'s for a summary.
"""
from __future__ import annotations

import functools
import html
import itertools
from typing import Any, Callable, List, Optional, Tuple

import numpy as np

__all__ = ["ReadableRepr", "lazy", "lazy_attrs", "detail", "format_value", "MAX_ITEMS"]

#: Values shown of a vector, matrix, array, list or dict (the rest counted, not shown).
MAX_ITEMS = 5
#: Longest string shown in full (longer ones are cut with an ellipsis).
MAX_TEXT = 60


class _Lazy:
    """A field value to compute when the repr is built (see :func:`lazy`)."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], Any]):
        self.fn = fn


class _Text(str):
    """A text shown as it is (not quoted), e.g. a row of ``name=value`` pairs."""


class _Detail:
    """A table-only field value (see :func:`detail`)."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


def lazy(fn: Callable[[], Any]) -> _Lazy:
    """A field value computed when the repr is built; if ``fn`` raises, that field alone shows
    ``<error: Type: message>``."""
    return _Lazy(fn)


def detail(value: Any) -> _Detail:
    """A field shown in the HTML table only, not in the one-line repr."""
    return _Detail(value)


def lazy_attrs(obj: Any, *names: str, table_only: bool = False) -> List[Tuple[str, Any]]:
    """``(name, lazy(obj.name))`` fields (``detail`` ones with ``table_only``): attributes such as
    metrics read, and computed, only when the repr is built."""
    fields = [(n, lazy(functools.partial(getattr, obj, n))) for n in names]
    return [(n, detail(v)) for n, v in fields] if table_only else fields


def _cut(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _num(x: Any, digits: int = 6) -> str:
    """A number: ints as they are, floats with ``digits`` significant digits."""
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{float(x):.{digits}g}"


def _items(values, total: int, digits: int = 4) -> str:
    """``[v0, v1, ...]`` of the first values, ``…`` when ``total`` is larger."""
    shown = [_num(v, digits) for v in values[:MAX_ITEMS]]
    return "[" + ", ".join(shown) + (", …" if total > len(shown) else "") + "]"


def _sparse_items(indices, values, total: int) -> str:
    shown = [f"{int(i)}: {_num(v, 4)}" for i, v in zip(indices[:MAX_ITEMS], values[:MAX_ITEMS])]
    return "{" + ", ".join(shown) + (", …" if total > len(shown) else "") + "}"


def _factory_text(value: Any) -> Optional[str]:
    """``module:name(args)`` for a code reference (a saved ``{"factory", "args", "kwargs"}`` dict, a
    ``functools.partial``, a function or class: what a torch stage's ``model`` holds), else None."""
    if isinstance(value, dict) and isinstance(value.get("factory"), str) and set(value) <= {"factory", "args", "kwargs"}:
        name, args, kwargs = value["factory"], list(value.get("args") or []), dict(value.get("kwargs") or {})
    elif isinstance(value, functools.partial):
        name, args, kwargs = _factory_text(value.func) or repr(value.func), list(value.args), dict(value.keywords)
    elif callable(value) and hasattr(value, "__qualname__"):
        module = getattr(value, "__module__", None)
        return f"{module}:{value.__qualname__}" if module and module != "builtins" else value.__qualname__
    else:
        return None
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{name}({_cut(', '.join(parts), 2 * MAX_TEXT)})"


def format_value(value: Any) -> str:
    """A short text for ``value`` (see the module docstring): never a full dump of a large vector."""
    from pyspark.ml.linalg import DenseMatrix, DenseVector, SparseMatrix, SparseVector

    if isinstance(value, _Text):
        return _cut(value, 4 * MAX_TEXT)
    if value is None or isinstance(value, (bool, np.bool_)):
        return str(value if value is None else bool(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        return _num(value)
    if isinstance(value, str):
        return repr(_cut(value))
    if isinstance(value, SparseVector):
        nnz = len(value.indices)
        return f"SparseVector(size={value.size}, nnz={nnz}, {_sparse_items(value.indices, value.values, nnz)})"
    if isinstance(value, DenseVector):
        return f"DenseVector(size={len(value)}, {_items(value.values, len(value))})"
    if isinstance(value, SparseMatrix):
        nnz = len(value.values)
        return f"SparseMatrix({value.numRows}x{value.numCols}, nnz={nnz})"
    if isinstance(value, DenseMatrix):
        r, c = value.numRows, value.numCols
        first = [value[i, j] for i, j in itertools.islice(itertools.product(range(r), range(c)), MAX_ITEMS)]
        return f"DenseMatrix({r}x{c}, {_items(first, r * c)})"
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biuf":
            nnz = f"nnz={np.count_nonzero(value)}, " if value.size > MAX_ITEMS else ""
            return f"array(shape={value.shape}, {value.dtype}, {nnz}{_items(value.flat[:MAX_ITEMS], value.size)})"
        return f"array(shape={value.shape}, {value.dtype})"
    factory = _factory_text(value)
    if factory is not None:
        return factory
    if isinstance(value, (list, tuple)):
        inner = ", ".join(format_value(v) for v in value[:MAX_ITEMS])
        more = f", … (+{len(value) - MAX_ITEMS} more)" if len(value) > MAX_ITEMS else ""
        return ("[{}]" if isinstance(value, list) else "({})").format(inner + more)
    if isinstance(value, dict):
        items = list(value.items())
        inner = ", ".join(f"{format_value(k)}: {format_value(v)}" for k, v in items[:MAX_ITEMS])
        return "{" + inner + (f", … (+{len(items) - MAX_ITEMS} more)" if len(items) > MAX_ITEMS else "") + "}"
    uid = getattr(value, "uid", None)
    if isinstance(uid, str):  # another stage: its class and uid, never its own repr (no recursion)
        return f"{type(value).__name__}(uid={uid})"
    text = repr(value)
    if "\n" in text:  # e.g. an nn.Module instance
        return f"{type(value).__name__}(…)"
    return _cut(text, 2 * MAX_TEXT)


class ReadableRepr:
    """Mixin: ``__repr__`` (one line) and ``_repr_html_`` (a table) from ``_repr_fields``."""

    def _repr_fields(self) -> List[Tuple[str, Any]]:
        """Hook: ``(name, value)`` of each field, in display order (see the module docstring).
        Default: the explicitly set params of a ``Params`` object, by name."""
        return self._repr_set_params()

    # ------------------------------------------------------------------ helpers for the hooks
    def _repr_set_params(self) -> List[Tuple[str, Any]]:
        """The params set explicitly (``_paramMap``, not the defaults), sorted by name."""
        param_map = getattr(self, "_paramMap", None) or {}
        return sorted(((p.name, v) for p, v in param_map.items()), key=lambda kv: kv[0])

    def _repr_param(self, name: str) -> Any:
        """The value of param ``name`` (set or default), or None when it has neither."""
        param = self.getParam(name)
        return self.getOrDefault(param) if self.isDefined(param) else None

    def _repr_params_text(self) -> Optional[str]:
        """The set params as one ``name=value, ...`` text (a table row of a model), or None."""
        fields = self._repr_set_params()
        return _Text(", ".join(f"{k}={format_value(v)}" for k, v in fields)) if fields else None

    # ------------------------------------------------------------------ rendering
    def _repr_rows(self) -> List[Tuple[str, str, bool]]:
        """``(name, text, in_line)`` of every field that has a value."""
        rows = []
        for name, value in self._repr_fields():
            in_line = not isinstance(value, _Detail)
            if not in_line:
                value = value.value
            if isinstance(value, _Lazy):
                try:
                    value = value.fn()
                except Exception as exc:  # noqa: BLE001 - a repr never raises
                    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    rows.append((name, f"<error: {type(exc).__name__}{': ' + _cut(message) if message else ''}>",
                                 in_line))
                    continue
            if value is not None:
                try:
                    text = format_value(value)
                except Exception:  # noqa: BLE001 - a repr never raises
                    text = f"<{type(value).__name__}>"
                rows.append((name, text, in_line))
        return rows

    def _repr_fallback(self) -> str:
        try:
            uid = getattr(self, "uid", None)
        except Exception:  # noqa: BLE001
            uid = None
        return uid if isinstance(uid, str) else object.__repr__(self)

    def __repr__(self) -> str:
        try:
            fields = ", ".join(f"{k}={v}" for k, v, in_line in self._repr_rows() if in_line)
            uid = getattr(self, "uid", None)
            if isinstance(uid, str):  # a stage: MLlib's toString form
                return f"{type(self).__name__}: uid={uid}" + (f", {fields}" if fields else "")
            return f"{type(self).__name__}({fields})"
        except Exception:  # noqa: BLE001 - a repr never raises
            return self._repr_fallback()

    def _repr_html_(self) -> str:
        try:
            rows = [(k, v) for k, v, _ in self._repr_rows()]
            uid = getattr(self, "uid", None)
            if isinstance(uid, str):
                rows.append(("uid", uid))
            cell = 'style="text-align:left; padding:1px 8px"'
            body = "".join(f"<tr><th {cell}>{html.escape(k)}</th><td {cell}><code>{html.escape(v)}</code></td></tr>"
                           for k, v in rows)
            return (f'<table class="sparkml-scale-repr"><caption style="text-align:left"><b>'
                    f"{html.escape(type(self).__name__)}</b></caption>{body}</table>")
        except Exception:  # noqa: BLE001 - a repr never raises
            return f"<code>{html.escape(self._repr_fallback())}</code>"
