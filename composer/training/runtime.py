"""Process-wide torch state a run touches: the CPU thread count (restored after every public entry point),
the device, and peak memory."""

from __future__ import annotations

import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch


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
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    scale = 1 if sys.platform == "darwin" else 1024    # ru_maxrss is KiB on Linux, bytes on macOS
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)
