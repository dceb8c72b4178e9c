"""Lazy package exports (PEP 562): public names imported on first use, not with the package.

A package whose ``__init__`` re-exports heavy submodules (torch models, the secure-aggregation
protocol) declares where each name lives, so that importing one light submodule (a registry, a
config dataclass) does not import the rest. Type checkers read the names from an
``if TYPE_CHECKING:`` import block next to the table.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, where: Mapping[str, str], namespace: dict[str, Any]
) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``name`` from ``where[name]`` on first use.

    Args:
        package: the package's ``__name__`` (for the error message).
        where: public name -> module that defines it.
        namespace: the package's ``globals()``; each name is cached there once imported.
    """

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name]), name)
        namespace[name] = value
        return value

    return __getattr__
