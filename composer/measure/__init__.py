"""Measured inference costs: prefill speed, decoding speed, peak memory and state bytes of an architecture at a
context length, on the device it will run on, without training.

    from composer.measure import MeasureSettings, measure
    rows = measure(spec, [1024, 8192], MeasureSettings(device="cpu", threads=4))
    rows[0]["decode_ms_per_token"]["median"], rows[0]["peak_memory_bytes"], rows[0]["state_bytes"]

The parts, one concept each: metrics.py (the names, `metric@context` keys, context lengths and their bounds),
protocol.py (how one context is measured, `MeasureSettings`), child.py (each measurement in a fresh process, with a
timeout), cache.py (measurements kept in a run folder by arch_id, device, threads and context). `composer bench`
(composer/cli/bench.py) prints them; a search space takes them as objectives and constraints
(`{metric: decode_ms_per_token, context: 8192}`), measured once per distinct architecture before it trains.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable
from typing import Any

from composer.errors import UserError
from composer.measure.cache import MeasureCache
from composer.measure.child import MeasureError, measure_in_child
from composer.measure.metrics import (
    MAX_MEASURED_CONTEXT,
    METRICS,
    TIMED,
    check_within,
    is_measured,
    key,
    parse_context,
    read_context,
    split_key,
)
from composer.measure.protocol import MeasureSettings, value_of

Runner = Callable[[Any, int, MeasureSettings], dict[str, Any]]


def check_device(settings: MeasureSettings, path: str = "device") -> MeasureSettings:
    """`settings` with its device checked on this machine (a UserError naming `path` for one it lacks: no CUDA,
    no such index, not a device) and written as torch writes it (`cuda:1`, `cpu`)."""
    from composer.training.runtime import resolve_device

    if not isinstance(settings.device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", settings.device):
        raise UserError(f"expected cpu, cuda or cuda:N, got {settings.device!r}", path=path)
    try:
        device = resolve_device(settings.device)
    except UserError as e:
        raise UserError(e.message, path=path) from None
    return dataclasses.replace(settings, device=str(device))


def measure(spec: Any, contexts: Iterable[int], settings: MeasureSettings | None = None,
            cache: MeasureCache | None = None, runner: Runner | None = None) -> list[dict[str, Any]]:
    """One measurement per context (composer/measure/protocol.py), each in its own process, reused from `cache`
    when it holds it and kept there when new. The caller has checked the contexts (`check_within`) and the device
    (`check_device`). `runner` measures one context (default: `measure_in_child`)."""
    from composer.canonical_form import arch_id

    settings = settings or MeasureSettings()
    runner = runner or measure_in_child
    ident = arch_id(spec)
    out = []
    for context in contexts:
        found = cache.get(ident, context, settings) if cache is not None else None
        if found is None:
            found = runner(spec, context, settings)
            if cache is not None:
                cache.put(found, settings)
        out.append(found)
    return out


__all__ = ["MAX_MEASURED_CONTEXT", "METRICS", "TIMED", "MeasureCache", "MeasureError", "MeasureSettings",
           "check_device", "check_within", "is_measured", "key", "measure", "measure_in_child", "parse_context",
           "read_context", "split_key", "value_of"]
