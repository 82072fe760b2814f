"""Composer's library of layers. Importing this package registers every built-in primitive.

Each family lives in its own module (`primitives/<family>.py`); every module here except `base` and
`ops` is imported automatically, so a new family only needs a new file.
"""

import importlib
import pkgutil

from primitives.base import (
    ConfigError,
    Cost,
    Primitive,
    State,
    get_primitive,
    register,
    registered,
    unregister,
)

__all__ = [
    "Cost",
    "ConfigError",
    "Primitive",
    "State",
    "get_primitive",
    "register",
    "registered",
    "unregister",
]

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "ops") and not _module.name.startswith("_"):
        importlib.import_module(f"primitives.{_module.name}")
