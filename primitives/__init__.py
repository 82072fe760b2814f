"""Composer's library of layers. Importing this package registers every built-in primitive.

Each family lives in its own module (`primitives/<family>.py`); every module here except `base`, `common`
(layers several families share) and `ops` (the sequence operators) is imported automatically, so a new family
only needs a new file (and its operator in `ops/`).
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

SHARED_MODULES = ("base", "common", "ops")  # not families: imported by the families that use them

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
    if _module.name not in SHARED_MODULES and not _module.name.startswith("_"):
        importlib.import_module(f"primitives.{_module.name}")
