"""Where a result came from: the versions, the code's git commit, the device and the host.

`provenance()` is recorded in a search's `summary.json`, each trial's `result.json`, a ladder's `ladder.json`
and a bundle's `config.json`, so a number can be traced to the code and machine that produced it.
"""

from __future__ import annotations

import functools
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = {"torch": "torch", "ray": "ray", "optuna": "optuna"}   # key -> distribution name
SOURCE_ROOT = Path(__file__).resolve().parent.parent


def provenance(device: Any = None) -> dict[str, Any]:
    """Versions (composer, torch, ray, optuna, python), the git commit of Composer's source tree when it is a
    checkout (`git_dirty`: it has uncommitted changes), the device (`device`, else the default one) and the host.
    Values that cannot be found are None; this never raises."""
    git = _git()
    return {**_versions(), "git_commit": git[0], "git_dirty": git[1], "device": describe_device(device),
            "host": socket.gethostname(), "platform": platform.platform()}


@functools.lru_cache(maxsize=1)
def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"composer": _composer_version()}
    for key, distribution in PACKAGES.items():
        try:
            out[key] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            out[key] = None
    out["python"] = platform.python_version()
    return out


def _composer_version() -> str | None:
    from composer.version import installed_version

    return installed_version()


@functools.lru_cache(maxsize=1)
def _git() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout holding Composer's source; (None, None) when it is not one."""
    if not (SOURCE_ROOT / ".git").exists():
        return None, None
    try:
        commit = subprocess.run(["git", "-C", str(SOURCE_ROOT), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(SOURCE_ROOT), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(status.strip())


def describe_device(device: Any = None) -> str:
    """`cuda:0 (NVIDIA H200)`, `mps`, `cpu (x86_64)`: the given device, else the one torch would pick."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        return str(device)
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "cpu":
        return f"cpu ({platform.machine() or 'unknown'})"
    return str(device)
