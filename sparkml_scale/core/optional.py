"""Optional dependencies (pip extras): a missing one is named with the command that installs it."""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Optional

__all__ = ["install_hint", "require", "ensure_installed"]

_DIST = "sparkml-scale"


def install_hint(extra: str) -> str:
    """``pip install 'sparkml-scale[EXTRA]'`` (from a checkout: ``pip install -e ".[EXTRA]"``)."""
    return f"pip install '{_DIST}[{extra}]' (in a source checkout: pip install -e \".[{extra}]\")"


def _error(module: str, extra: str, feature: Optional[str]) -> ModuleNotFoundError:
    need = f"{feature} needs" if feature else "this needs"
    return ModuleNotFoundError(f"{need} the '{module}' package, which is not installed: {install_hint(extra)}",
                               name=module)


def require(module: str, extra: str, feature: Optional[str] = None) -> ModuleType:
    """Import ``module``; if it is not installed, raise ``ModuleNotFoundError`` naming the pip extra.

    Only a missing ``module`` itself gets the hint: an error inside it, or a missing
    dependency of it, is raised unchanged.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] != module.split(".")[0]:
            raise
        raise _error(module, extra, feature) from None


def ensure_installed(module: str, extra: str, feature: Optional[str] = None) -> None:
    """Like :func:`require` without importing ``module`` (for packages whose import must stay cheap)."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing; ``sys.modules[module] = None``
        found = False
    if not found:
        raise _error(module, extra, feature)
