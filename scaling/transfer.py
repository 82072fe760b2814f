"""Rank transfer: does the ranking of architectures at a small size hold at a larger one?

Three agreement measures between two score vectors over the same architectures (lower loss = better):

* Spearman's rho: the Pearson correlation of the ranks (ties get their average rank).
* Kendall's tau-b: (concordant - discordant) / sqrt((pairs - ties in x) * (pairs - ties in y)).
* Pairwise decision accuracy: over all pairs, the fraction a small-scale comparison orders as the large
  one does (a pair tied on one side counts one half): what picking the better of two would get right.

These are the one implementation of the two rank correlations (scaling/stats.py's intervals use them; a test holds
them equal to scipy's). The noise floor is the same measures between two seeds at one size: two rankings cannot be
expected to agree better across sizes than one size agrees with itself across seeds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties given their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def _check(x: Sequence[float], y: Sequence[float]) -> None:
    if len(x) != len(y):
        raise ValueError(f"score vectors differ in length: {len(x)} and {len(y)}")
    if len(x) < 2:
        raise ValueError("need at least two architectures to rank")


def _has_nan(x: Sequence[float], y: Sequence[float]) -> bool:
    return any(math.isnan(v) for v in (*x, *y))


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (NaN when one side is constant or holds a NaN)."""
    _check(x, y)
    if _has_nan(x, y):
        return float("nan")
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else float("nan")


def _sign(v: float) -> int:
    return int(v > 0) - int(v < 0)          # int(): numpy booleans do not subtract


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (NaN when one side is constant or holds a NaN)."""
    _check(x, y)
    if _has_nan(x, y):
        return float("nan")
    concordant = discordant = ties_x = ties_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        sx, sy = _sign(x[i] - x[j]), _sign(y[i] - y[j])
        ties_x += sx == 0
        ties_y += sy == 0
        if sx and sy:
            concordant += sx == sy
            discordant += sx != sy
    pairs = len(x) * (len(x) - 1) // 2
    denominator = math.sqrt((pairs - ties_x) * (pairs - ties_y))
    return (concordant - discordant) / denominator if denominator > 0 else float("nan")


def pairwise_accuracy(x: Sequence[float], y: Sequence[float]) -> float:
    """Fraction of pairs ordered the same way by x and y; a pair tied on either side counts 1/2."""
    _check(x, y)
    score = 0.0
    pairs = list(itertools.combinations(range(len(x)), 2))
    for i, j in pairs:
        sx, sy = _sign(x[i] - x[j]), _sign(y[i] - y[j])
        score += 0.5 if sx == 0 or sy == 0 else float(sx == sy)
    return score / len(pairs)


def agreement(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    return {"spearman": spearman(x, y), "kendall": kendall_tau(x, y), "pairwise": pairwise_accuracy(x, y)}


def noise_floor(per_seed: Sequence[Sequence[float]]) -> dict[str, float]:
    """Mean agreement between every two seeds' score vectors at one size (`per_seed[s][arch]`)."""
    if len(per_seed) < 2:
        return {"spearman": float("nan"), "kendall": float("nan"), "pairwise": float("nan"), "seed_pairs": 0}
    values = [agreement(a, b) for a, b in itertools.combinations(per_seed, 2)]
    out = {key: sum(v[key] for v in values) / len(values) for key in values[0]}
    out["seed_pairs"] = len(values)
    return out


def transfer_report(losses: Mapping[str, Mapping[str, Sequence[float]]], sizes: Sequence[str]) -> dict:
    """Agreement of the smallest size's ranking with every larger one, beside the seed noise floor.

    `losses[arch][size]` lists the final loss of each seed; rankings use the mean over seeds, the noise
    floor the seeds separately (only seeds every architecture has at that size).
    """
    archs = [a for a in losses if all(losses[a].get(s) for s in sizes)]
    if len(archs) < 2:
        raise ValueError("need at least two architectures with results at every size")
    mean = {s: [sum(losses[a][s]) / len(losses[a][s]) for a in archs] for s in sizes}
    floors = {}
    for s in sizes:
        n_seeds = min(len(losses[a][s]) for a in archs)
        floors[s] = noise_floor([[losses[a][s][k] for a in archs] for k in range(n_seeds)])
    base = sizes[0]
    return {
        "architectures": archs,
        "base_size": base,
        "ranking": {s: [archs[i] for i in sorted(range(len(archs)), key=lambda i: mean[s][i])]
                    for s in sizes},
        "transfer": {s: agreement(mean[base], mean[s]) for s in sizes[1:]},
        "noise_floor": floors,
    }
