"""The Pareto front of a multi-objective search and its hypervolume.

The hypervolume is the volume the front dominates up to a reference point (larger is better). Optuna computes it
only in private code (`optuna._hypervolume`) or inside a plot (`plot_hypervolume_history`), so it is computed here,
exactly, by slicing along the last objective (`dominated_volume`), and tested against hand-computed volumes and
against Optuna's plot. It is taken over the full-budget trials with a finite value for every objective. The reference
point is, per objective, the worst of those values moved out by a tenth of their range (by a tenth of its size, or 1,
when every trial has the same value), so that the worst trials still add volume; it is reported with the number,
since a hypervolume means something only beside its reference point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def finite_points(rows: list[dict[str, Any]], metrics: list[str]) -> list[list[float]]:
    """The objective values of the completed rows that have a finite value for every metric."""
    points = []
    for row in rows:
        values = [row.get(m) for m in metrics]
        if row.get("status") == "completed" and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                    and math.isfinite(v) for v in values):
            points.append([float(v) for v in values])
    return points


def reference_point(points: list[list[float]], modes: list[str]) -> list[float]:
    out = []
    for i, mode in enumerate(modes):
        column = [p[i] for p in points]
        worst = max(column) if mode == "min" else min(column)
        margin = 0.1 * (max(column) - min(column)) or 0.1 * abs(worst) or 1.0
        out.append(worst + margin if mode == "min" else worst - margin)
    return out


def non_dominated(points: Sequence[Sequence[float]]) -> list[tuple[float, ...]]:
    """The points no other point dominates (all objectives minimised), duplicates once."""
    kept: list[tuple[float, ...]] = []
    for p in sorted(set(map(tuple, points))):     # lexicographic: a point's dominators come before it
        if not any(all(k <= v for k, v in zip(q, p)) for q in kept):
            kept.append(p)
    return kept


def dominated_volume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """The volume of the union of the boxes [point, reference] (all objectives minimised); points not strictly
    better than the reference in every objective add nothing."""
    inside = [p for p in points if all(v < r for v, r in zip(p, reference))]
    return _sliced(non_dominated(inside), tuple(reference))


def _sliced(points: list[tuple[float, ...]], reference: tuple[float, ...]) -> float:
    if not points:
        return 0.0
    if len(reference) == 1:
        return reference[0] - min(p[0] for p in points)
    if len(reference) == 2:                       # a sweep along x: each point adds the strip below the last best y
        volume, best_y = 0.0, reference[1]
        for x, y in sorted(points):
            if y < best_y:
                volume, best_y = volume + (reference[0] - x) * (best_y - y), y
        return volume
    # slices along the last objective: between two consecutive values, the points at or below the lower one
    ordered = sorted(points, key=lambda p: p[-1])
    volume = 0.0
    for i, p in enumerate(ordered):
        top = ordered[i + 1][-1] if i + 1 < len(ordered) else reference[-1]
        if top > p[-1]:
            below = [q[:-1] for q in ordered[:i + 1]]      # the 2-D sweep skips dominated points by itself
            volume += (top - p[-1]) * _sliced(below if len(below[0]) == 2 else non_dominated(below), reference[:-1])
    return volume


def hypervolume(rows: list[dict[str, Any]], metrics: list[str], modes: list[str],
                reference: list[float] | None = None) -> dict[str, Any] | None:
    """{hypervolume, reference_point, trials} of the completed rows, None with fewer than two objectives or no
    such row. `reference` (default: from the rows, see the module docstring) is given to compare several searches
    on one scale."""
    points = finite_points(rows, metrics)
    if len(metrics) < 2 or not points:
        return None
    reference = list(reference) if reference is not None else reference_point(points, modes)
    sign = [1.0 if mode == "min" else -1.0 for mode in modes]
    minimised = [[s * v for s, v in zip(sign, p)] for p in points]
    volume = dominated_volume(minimised, [s * r for s, r in zip(sign, reference)])
    return {"hypervolume": volume, "reference_point": reference, "trials": len(points)}
