"""Measured objectives and constraints of a search: each candidate measured (composer/measure) before it trains, at
every context the space's objectives and constraints name, on the space's `measure:` device. A measurement is kept
in the run folder's `measure/` (by arch_id, device, threads, context), so each distinct architecture is measured
once, a duplicate or a resumed trial reads it back. The values go into the candidate's costs as `metric@context`
(every report, result.json and the leaderboard); a candidate that breaks a measured bound is rejected before it
trains (status `constraint`), one whose measurement fails or times out is `failed` with the reason.

The measurement runs in the driver, one at a time, in its own process; trials that train meanwhile share the
machine, so on a busy CPU give the measurement a device of its own (`measure: {device: cuda}`) or run the trials
one at a time (`resources: {max_concurrent: 1}`) when the timings must be clean.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from composer.measure import METRICS, MeasureCache, MeasureError, check_device, key, measure, value_of
from composer.measure.cache import FOLDER
from composer.search.space import SearchSpace


def measure_candidate(space: SearchSpace, spec: Any, run_root: str | None) -> tuple[dict[str, float], str | None,
                                                                                     str | None]:
    """(values by `metric@context`, status, reason): status None when the candidate may train."""
    settings = check_device(space.measure, "measure.device")
    cache = MeasureCache(Path(run_root) / FOLDER) if run_root else None
    values: dict[str, float] = {}
    for context in sorted(space.measured_needs()):
        if context > spec.max_seq_len:
            return values, "invalid", (f"measured at context {context:,}, beyond the candidate's max_seq_len "
                                       f"{spec.max_seq_len:,}")
        try:
            [found] = measure(spec, [context], settings, cache)
        except MeasureError as e:
            return values, "failed", e.message
        values.update({key(metric, context): value_of(found, metric) for metric in METRICS})
    for metric, bound in space.constraints.measured().items():
        name = key(metric, bound.context)
        broken = bound.broken_by(values[name])
        if broken:
            return values, "constraint", (f"{name} {number(values[name])} {broken} (measured on {settings.device}, "
                                          f"{settings.threads} thread(s))")
    return values, None, None


def number(value: float) -> str:
    """69,632 for a count of bytes, 2.512 for milliseconds."""
    return f"{value:,.0f}" if abs(value) >= 1e4 or isinstance(value, int) else f"{value:.4g}"
