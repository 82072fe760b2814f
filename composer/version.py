"""Composer's version: written once here (pyproject.toml reads it), the installed distribution's, and whether
another installed distribution claims one of its import names.

The import packages `composer`, `primitives` and `scaling` are names other distributions use too (MosaicML's
`composer` is the best known). Two distributions providing one package in one environment overwrite each other's
files or shadow each other on `sys.path`, and `import composer` then resolves to whichever comes first while the
`composer` command runs whichever was installed last. `name_conflicts()` finds them through the installed
distributions' metadata, so the CLI can say so in one line (and `hybrid-composer`, the second name of the
command, is never ambiguous).
"""

from __future__ import annotations

import functools
from importlib import metadata
from pathlib import Path

__version__ = "0.1.0"
DISTRIBUTION = "hybrid-composer"
IMPORT_NAMES = ("composer", "primitives", "scaling")


def installed_version() -> str:
    """The installed distribution's version, else this source tree's `__version__` (a checkout not installed)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return __version__


@functools.lru_cache(maxsize=1)
def name_conflicts() -> dict[str, list[str]]:
    """Import name -> the other installed distributions providing it (`mosaicml 0.31.0`), for each of Composer's
    import names that another distribution also provides; empty when none does (read once per process)."""
    owners = metadata.packages_distributions()
    out: dict[str, list[str]] = {}
    for name in IMPORT_NAMES:
        others = sorted({d for d in owners.get(name, []) if _normal(d) != _normal(DISTRIBUTION)})
        if others:
            out[name] = [f"{d} {_version_of(d)}" for d in others]
    return out


def conflict_warning() -> str | None:
    """One line naming the distributions that also provide Composer's import names and where `import composer`
    resolves here; None when there are none."""
    conflicts = name_conflicts()
    if not conflicts:
        return None
    named = "; ".join(f"`{name}` also by {', '.join(owners)}" for name, owners in conflicts.items())
    return (f"warning: another installed distribution provides Composer's import names ({named}); here `import "
            f"composer` is {Path(__file__).resolve().parent}: install Hybrid Composer in an environment of its own "
            "(README: \"Beside another `composer`\"); `hybrid-composer` is this command's unambiguous name")


def _normal(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _version_of(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "(version unknown)"
