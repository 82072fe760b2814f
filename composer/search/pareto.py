"""The Pareto front of a multi-objective search and its hypervolume, as Optuna computes it.

The hypervolume is the volume the front dominates up to a reference point (larger is better). It is computed by
Optuna (`optuna.visualization.matplotlib.plot_hypervolume_history`, whose last value is the hypervolume of all the
trials given) over the full-budget trials with a finite value for every objective, told to an in-memory study with
the search's directions. The reference point is, per objective, the worst of those values moved out by a tenth of
their range (by a tenth of its size, or 1, when every trial has the same value), so that the worst trials still add
volume; it is reported with the number, since a hypervolume means something only beside its reference point.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from composer.search.optuna_search import DIRECTIONS


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


def hypervolume(rows: list[dict[str, Any]], metrics: list[str], modes: list[str],
                reference: list[float] | None = None) -> dict[str, Any] | None:
    """{hypervolume, reference_point, trials} of the completed rows, None with fewer than two objectives or no
    such row. `reference` (default: from the rows, see the module docstring) is given to compare several searches
    on one scale."""
    points = finite_points(rows, metrics)
    if len(metrics) < 2 or not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization.matplotlib import plot_hypervolume_history

    reference = list(reference) if reference is not None else reference_point(points, modes)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(directions=[DIRECTIONS[m] for m in modes])
        study.add_trials([optuna.trial.create_trial(values=p) for p in points])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            axes = plot_hypervolume_history(study, reference)
    finally:
        optuna.logging.set_verbosity(verbosity)
    value = float(axes.lines[0].get_ydata()[-1])
    plt.close(axes.figure)
    return {"hypervolume": value, "reference_point": reference, "trials": len(points)}
