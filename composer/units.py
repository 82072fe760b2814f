"""Numbers as a reader wants them: 169K parameters, 1.2M FLOPs, 2 min 5 s."""

from __future__ import annotations

import math


def human(value: float, digits: int = 3) -> str:
    """`digits` significant digits with a K / M / G / T suffix: 999, 1.5K, 169K, 1.23M."""
    if not math.isfinite(value):
        return str(value)
    for suffix, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= size * (1 - 0.5 * 10 ** -digits):     # 999,950 reads 1M, not 1000K
            return f"{value / size:.{digits}g}{suffix}"
    return f"{value:.{digits}g}" if value != int(value) else str(int(value))


def duration(seconds: float) -> str:
    """`42 s`, `3 min 5 s`, `2 h 10 min`."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def metric(value: float) -> str:
    """A quality value: 4 significant digits (0.1283, 3.693)."""
    return f"{value:.4g}"
