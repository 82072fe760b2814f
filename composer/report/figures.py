"""The report's figures (matplotlib, Agg): each function returns PNG bytes, or None when there is no data."""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from composer.graph import symbol  # noqa: E402
from composer.report.run_data import COST_KEYS, RunData  # noqa: E402
from composer.spec import ArchSpec, iter_layers  # noqa: E402

PALETTE = plt.get_cmap("tab20").colors


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def pareto_front(points: list[tuple[float, float]], lower_is_better: bool) -> list[tuple[float, float]]:
    """Points (cost, quality) not dominated by a cheaper-or-equal point of better-or-equal quality."""
    sign = 1 if lower_is_better else -1
    front, best = [], math.inf
    for cost, quality in sorted(points, key=lambda p: (p[0], sign * p[1])):
        if sign * quality < best:
            front.append((cost, quality))
            best = sign * quality
    return front


def pareto_figure(run: RunData) -> bytes | None:
    axes_data = []
    for key, label in COST_KEYS:
        pts = [(float(t.row[key]), q) for t in run.trials
               if isinstance(t.row.get(key), (int, float)) and (q := run.quality(t)) is not None]
        if pts:
            axes_data.append((label, pts))
    if not axes_data:
        return None
    fig, axes = plt.subplots(1, len(axes_data), figsize=(4.2 * len(axes_data), 3.4), squeeze=False)
    for ax, (label, pts) in zip(axes[0], axes_data):
        ax.scatter(*zip(*pts), s=18, alpha=0.6, label="trials")
        front = pareto_front(pts, run.lower_is_better)
        ax.plot(*zip(*front), "r.-", label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(run.quality_key)
        ax.legend(fontsize=7)
    fig.suptitle("quality against cost")
    return _png(fig)


def best_so_far_figure(run: RunData) -> bytes | None:
    def order(t):
        value = t.row.get("number", t.trial_id)
        return (0, float(value), "") if isinstance(value, (int, float)) or str(value).isdigit() else (1, 0, str(value))

    trials = sorted((t for t in run.trials if run.quality(t) is not None), key=order)
    if not trials:
        return None
    values = [run.quality(t) for t in trials]
    best, running = [], None
    for v in values:
        running = v if running is None else (min(running, v) if run.lower_is_better else max(running, v))
        best.append(running)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.scatter(range(1, len(values) + 1), values, s=14, alpha=0.5, label="trial")
    ax.step(range(1, len(best) + 1), best, where="post", color="r", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(run.quality_key)
    ax.legend(fontsize=8)
    return _png(fig)


def learning_curves_figure(run: RunData, top: int = 5) -> bytes | None:
    curves, x_keys = [], set()
    for trial in run.trials[:top]:      # a reused duplicate has no curve of its own: it is skipped
        x_key = "tokens" if trial.history and "tokens" in trial.history[0] else "step"
        points = [(h.get(x_key), h.get(run.quality_key)) for h in trial.history]
        points = [(x, y) for x, y in points if isinstance(x, (int, float)) and isinstance(y, (int, float))]
        if points:
            curves.append((trial.trial_id, points))
            x_keys.add(x_key)
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for trial_id, points in curves:
        ax.plot(*zip(*points), marker=".", label=f"trial {trial_id}")
    ax.set_xlabel(x_keys.pop() if len(x_keys) == 1 else "tokens or step")
    ax.set_ylabel(run.quality_key)
    ax.legend(fontsize=7)
    ax.set_title(f"learning curves of the top {len(curves)}")
    return _png(fig)


def stripes_figure(run: RunData, top: int = 12) -> bytes | None:
    """Each architecture as a row of coloured cells, one per layer, labelled with its primitive's letter."""
    rows, seen = [], set()
    for t in run.trials:        # ranked; a reused duplicate (same arch_id) is drawn once
        key = t.row.get("arch_id", t.trial_id)
        if t.spec is not None and key not in seen and len(rows) < top:
            rows.append((t.trial_id, t.spec))
            seen.add(key)
    if not rows:
        return None
    ops = sorted({layer.op for _, spec in rows for layer in iter_layers(spec.layers)})
    colours = {op: PALETTE[i % len(PALETTE)] for i, op in enumerate(ops)}
    width = max(len(list(iter_layers(spec.layers))) for _, spec in rows)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * width + 1.5), 0.45 * len(rows) + 1.0))
    for r, (_, spec) in enumerate(rows):
        for c, op in enumerate(_ops(spec)):
            ax.add_patch(plt.Rectangle((c, -r - 1), 0.95, 0.9, color=colours[op]))
            ax.text(c + 0.47, -r - 0.55, symbol(op), ha="center", va="center", fontsize=7)
    ax.set_xlim(0, width)
    ax.set_ylim(-len(rows) - 0.1, 0)
    ax.set_yticks([-r - 0.55 for r in range(len(rows))], [f"trial {t}" for t, _ in rows], fontsize=7)
    ax.set_xticks([])
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[op]) for op in ops]
    ax.legend(handles, [f"{symbol(op)} {op}" for op in ops], fontsize=7, loc="upper left",
              bbox_to_anchor=(1.01, 1.0))
    ax.set_title("architectures (best first)")
    return _png(fig)


def _ops(spec: ArchSpec) -> list[str]:
    return [layer.op for layer in iter_layers(spec.layers)]


def importances_figure(importances: dict[str, float] | None) -> bytes | None:
    if not importances:
        return None
    names = list(importances)[:20][::-1]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(names) + 1.2))
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel("importance (fANOVA)")
    ax.set_title("which search choices mattered")
    return _png(fig)
