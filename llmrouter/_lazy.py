"""Module attributes loaded on first use (PEP 562), so a package's import stays light."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(
    package: str, namespace: dict[str, Any], locations: Mapping[str, str]
) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``locations[name]`` on first use of ``name`` and
    caches the value in ``namespace`` (the module's globals)."""

    def __getattr__(name: str) -> Any:
        module = locations.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
