"""The report's figures (matplotlib, Agg): each function returns PNG bytes, or None when there is no data.

Trials are named by their number, as in the leaderboard. Cost axes read in human units (169K, 1.2M) with a
handful of ticks: a log scale when the costs span more than a decade, else a linear one.
"""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

from composer.report.run_data import COST_KEYS, RunData, Trial, measured_columns  # noqa: E402
from composer.spec import iter_layers  # noqa: E402
from composer.units import human  # noqa: E402
from primitives import get_primitive  # noqa: E402

PALETTE = plt.get_cmap("tab20").colors
# Below this many finished trials, fANOVA importances are mostly noise: the figure says so.
MIN_IMPORTANCE_TRIALS = 20
MAX_LABELS = 25     # up to this many points per panel, each carries its trial number; above it, the front only


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def op_symbol(op: str) -> str:
    """The primitive's letter(s) in stripes (`Primitive.symbol`)."""
    return get_primitive(op).symbol


def pareto_front(points: list[tuple[float, float]], lower_is_better: bool) -> list[tuple[float, float]]:
    """Points (cost, quality) not dominated by a cheaper-or-equal point of better-or-equal quality."""
    sign = 1 if lower_is_better else -1
    front, best = [], math.inf
    for cost, quality in sorted(points, key=lambda p: (p[0], sign * p[1])):
        if sign * quality < best:
            front.append((cost, quality))
            best = sign * quality
    return front


class HumanFormatter(ticker.Formatter):
    """Tick labels in human units with just enough digits to tell neighbouring ticks apart (168K, 168.5K)."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return human(x)

    def format_ticks(self, values) -> list[str]:
        labels = [human(v) for v in values]
        for digits in range(4, 8):
            if len(set(labels)) == len(labels):
                break
            labels = [human(v, digits) for v in values]
        return labels


def cost_axis(ax, values: list[float]) -> None:
    """Human tick labels (169K, 1.2M) on the x axis, at most ~5 of them; log scale only when the values span
    more than a decade (on a narrow range a log axis labels its minor ticks, which then overlap)."""
    positive = [v for v in values if v > 0]
    span = max(positive) / min(positive) if positive and len(positive) == len(values) else 0
    if span > 10:
        ax.set_xscale("log")
        subs = (1.0, 2.0, 5.0) if span <= 100 else (1.0,)      # 2K 5K 10K 20K on one or two decades
        ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=subs, numticks=8))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    else:
        ax.xaxis.set_major_locator(ticker.MaxNLocator(nbins=4, steps=[1, 2, 5, 10]))
    ax.xaxis.set_major_formatter(HumanFormatter())


def pareto_figure(run: RunData, include_pruned: bool = False) -> bytes | None:
    """Quality against each cost; the front over full-budget trials, its points labelled with trial numbers.

    Trials stopped early (pruned, partial budget) are left out unless `include_pruned`; then they are drawn
    apart (grey crosses) and never enter the front, since their quality was measured on a shorter budget.
    """
    axes_data = pareto_panels(run, include_pruned)
    if not axes_data:
        return None
    columns = min(len(axes_data), 4)
    rows = math.ceil(len(axes_data) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.4 * columns, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(axes_data):]:
        ax.set_visible(False)
    for ax, (label, pts, others) in zip(axes.flat, axes_data):
        if others:
            ax.scatter([p[0] for p in others], [p[1] for p in others], s=22, marker="x", color="0.6",
                       label="stopped early")
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=22, alpha=0.7, label="full budget")
            front = pareto_front([(c, q) for c, q, _ in pts], run.lower_is_better)
            ax.plot(*zip(*front), "r.-", label="Pareto front")
            on_front = set(front)
            labelled = pts if len(pts) <= MAX_LABELS else [p for p in pts if (p[0], p[1]) in on_front]
            for c, q, trial_id in labelled:
                ax.annotate(trial_id, (c, q), textcoords="offset points", xytext=(4, 4), fontsize=8,
                            color="r" if (c, q) in on_front else "0.3")
        ax.margins(0.12)
        cost_axis(ax, [p[0] for p in pts + others])
        ax.set_xlabel(label)
        ax.set_ylabel(run.quality_key)
        ax.legend(fontsize=7)
    fig.suptitle("quality against cost (labels: trial numbers, red: on the Pareto front)")
    fig.tight_layout()
    return _png(fig)


def pareto_panels(run: RunData, include_pruned: bool = False) -> list[tuple[str, list, list]]:
    """Per cost with data: (axis label, full-budget points, points of trials stopped early), each point
    (cost, quality, trial number); the second list is empty unless `include_pruned`."""
    full = [t for t in run.leaderboard if t.full_budget]
    partial = [t for t in run.leaderboard if not t.full_budget] if include_pruned else []
    panels = []
    measured = [(key, measured_label(key, run.summary)) for key in measured_axes(run)]
    for key, label in (*COST_KEYS, *measured):
        pts, others = _points(run, full, key), _points(run, partial, key)
        if pts or others:
            panels.append((label, pts, others))
    return panels


MEASURED_LABELS = {"prefill_tokens_per_s": "prefill tokens / s", "decode_ms_per_token": "decode ms / token",
                   "peak_memory_bytes": "peak memory (bytes)", "state_bytes": "state (bytes)"}


def measured_axes(run: RunData) -> list[str]:
    """The measured costs drawn against quality: the measured objectives, then decode ms / token and peak memory
    at the longest context measured (costs where lower is better; a speed such as prefill tokens / s is not drawn,
    its front runs the other way)."""
    columns = [c for c in measured_columns(run.columns) if c != run.quality_key
               and not c.startswith("prefill_tokens_per_s@")]
    if not columns:
        return []
    longest = max(int(c.partition("@")[2]) for c in columns)
    wanted = [o["metric"] for o in run.objectives if o["metric"] in columns]
    wanted += [f"{m}@{longest}" for m in ("decode_ms_per_token", "peak_memory_bytes") if f"{m}@{longest}" in columns]
    return list(dict.fromkeys(wanted))


def measured_label(key: str, summary: dict) -> str:
    """`decode ms / token at 8K, measured (cpu)` for the column `decode_ms_per_token@8192`."""
    metric, _, context = key.partition("@")
    device = (summary.get("measure") or {}).get("device")
    return (f"{MEASURED_LABELS.get(metric, metric)} at {human(int(context))}, measured"
            + (f" ({device})" if device else ""))


def _points(run: RunData, trials: list[Trial], key: str) -> list[tuple[float, float, str]]:
    return [(float(t.row[key]), q, t.trial_id) for t in trials
            if isinstance(t.row.get(key), (int, float)) and (q := run.quality(t)) is not None]


def best_so_far_figure(run: RunData) -> bytes | None:
    """Each trial's quality by trial number, and the best full-budget result so far."""
    trials = sorted((t for t in run.trials if run.quality(t) is not None and t.trial_id.isdigit()),
                    key=lambda t: int(t.trial_id))
    if not trials:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.4))
    full = [(int(t.trial_id), run.quality(t)) for t in trials if t.full_budget]
    partial = [(int(t.trial_id), run.quality(t)) for t in trials if not t.full_budget]
    if partial:
        ax.scatter(*zip(*partial), s=18, marker="x", color="0.6", label="stopped early (partial budget)")
    if full:
        ax.scatter(*zip(*full), s=18, alpha=0.7, label="full budget")
        best, running = [], None
        for _, v in full:
            running = v if running is None else (min(running, v) if run.lower_is_better else max(running, v))
            best.append(running)
        last = int(trials[-1].trial_id)
        ax.step([n for n, _ in full] + [last], best + best[-1:], where="post", color="r", label="best so far")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(run.quality_key)
    ax.legend(fontsize=7)
    return _png(fig)


def learning_curves_figure(run: RunData, top: int = 5) -> bytes | None:
    curves, x_keys = [], set()
    for trial in run.leaderboard:
        x_key = "tokens" if trial.history and "tokens" in trial.history[0] else "step"
        points = [(h.get(x_key), h.get(run.quality_key)) for h in trial.history]
        points = [(x, y) for x, y in points if isinstance(x, (int, float)) and isinstance(y, (int, float))]
        if points:
            curves.append((trial.trial_id, points))
            x_keys.add(x_key)
        if len(curves) == top:
            break
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for trial_id, points in curves:
        ax.plot(*zip(*points), marker=".", label=f"trial {trial_id}")
    ax.set_xlabel(x_keys.pop() if len(x_keys) == 1 else "tokens or step")
    ax.xaxis.set_major_formatter(HumanFormatter())
    ax.set_ylabel(run.quality_key)
    ax.legend(fontsize=7)
    ax.set_title(f"learning curves of the top {len(curves)}")
    return _png(fig)


def stripes_figure(run: RunData, top: int = 12) -> bytes | None:
    """Each architecture as a row of coloured cells, one per layer, labelled with its primitive's letter."""
    rows, seen = [], set()
    for t in run.leaderboard:        # ranked; an architecture that several trials share is drawn once
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
        for c, layer in enumerate(iter_layers(spec.layers)):
            ax.add_patch(plt.Rectangle((c, -r - 1), 0.95, 0.9, color=colours[layer.op]))
            ax.text(c + 0.47, -r - 0.55, op_symbol(layer.op), ha="center", va="center", fontsize=7)
    ax.set_xlim(0, width)
    ax.set_ylim(-len(rows) - 0.1, 0)
    ax.set_yticks([-r - 0.55 for r in range(len(rows))], [f"trial {t}" for t, _ in rows], fontsize=7)
    ax.set_xticks([])
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[op]) for op in ops]
    ax.legend(handles, [f"{op_symbol(op)} {op}" for op in ops], fontsize=7, loc="upper left",
              bbox_to_anchor=(1.01, 1.0))
    ax.set_title("architectures (best first)")
    return _png(fig)


def importances_figure(importances: dict[str, float] | None, n_trials: int = 0) -> bytes | None:
    """fANOVA importances; below MIN_IMPORTANCE_TRIALS finished trials the title carries the caveat."""
    if not importances:
        return None
    names = list(importances)[:20][::-1]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(names) + 1.4))
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel("importance (fANOVA)")
    title = "which search choices mattered"
    if n_trials < MIN_IMPORTANCE_TRIALS:
        title += f"\n(only {n_trials} finished trials: a rough indication, not a finding)"
    ax.set_title(title, fontsize=10)
    return _png(fig)
