"""Names a package imports on first use (PEP 562), so that importing it stays cheap.

``__getattr__ = lazy_names(__name__, {"predictor": ("Predictor",), ...})`` in a package's
``__init__``: ``package.Predictor`` imports ``package.predictor`` the first time it is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_names(package: str, modules: Mapping[str, Iterable[str]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving the names of ``modules`` (submodule of ``package`` -> its names)."""
    names = {name: module for module, served in modules.items() for name in served}

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
