"""Process-wide torch state a run touches: the CPU thread count (restored after every public entry point),
the device, and peak memory."""

from __future__ import annotations

import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from composer.errors import UserError


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with `threads` torch CPU threads (when given), then restore the previous count."""
    previous = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(threads)
        yield
    finally:
        torch.set_num_threads(previous)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device to train on (default: cuda when available); a UserError for one that this machine lacks."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise UserError(f"expected cpu, cuda, cuda:N or mps, got {str(device)!r}", path="device") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"{device!r}: CUDA is not available on this machine (torch {torch.__version__}, "
                            f"{'built without CUDA' if torch.version.cuda is None else 'no GPU found'})",
                            path="device")
        if resolved.index is not None and resolved.index >= count:
            raise UserError(f"{device!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}",
                            path="device")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{device!r}: MPS is not available on this machine", path="device")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"expected cpu, cuda, cuda:N or mps, got {str(device)!r}", path="device")
    return resolved


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    scale = 1 if sys.platform == "darwin" else 1024    # ru_maxrss is KiB on Linux, bytes on macOS
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)
