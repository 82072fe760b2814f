"""Composer's version: written once here (pyproject.toml reads it), and the installed distribution's."""

from __future__ import annotations

from importlib import metadata

__version__ = "0.1.0"


def installed_version() -> str:
    """The installed distribution's version, else this source tree's `__version__` (a checkout not installed)."""
    try:
        return metadata.version("hybrid-composer")
    except metadata.PackageNotFoundError:
        return __version__
