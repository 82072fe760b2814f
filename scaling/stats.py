"""Statistics over seeds: a mean with its interval, paired differences, rank agreement with bootstrap intervals.

Confirmation runs train each architecture with a few seeds (3 by default), so every number here is computed
for small samples and says how it was computed:

* `mean_interval`: mean, sample standard deviation and the Student-t interval of the mean.
* `paired_difference`: the per-seed differences between two architectures trained with the same seeds (same
  data order), with two 95% intervals of their mean: the Student-t interval (the primary one) and the
  percentile bootstrap over seeds. The t-interval is primary because a bootstrap over n seeds sees only the
  values it was given: with 3 seeds its 95% interval is the range of the 3 differences (each extreme is a
  resample of probability 1/27 > 2.5%), which under-covers badly, while the t-interval widens by t(0.975, 2)
  = 4.30 for the same sample.
* `rank_agreement`: Spearman's rho and Kendall's tau-b (scaling/transfer.py) between two score vectors (lower
  is better on both sides).
* `rank_agreement_interval`: those two with percentile-bootstrap intervals that resample seeds: each
  architecture's target score is the mean of its seeds drawn with replacement, independently per
  architecture; the proxy scores are fixed.
* `seed_noise_floor`: the agreement between the rankings of every two seeds at one size
  (`scaling.transfer.noise_floor`): no cross-size ranking can be expected to agree better than that.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from scaling.transfer import kendall_tau, noise_floor, spearman

LEVEL = 0.95
N_BOOT = 2000


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """The Student-t interval of the mean (NaN bounds with fewer than two values)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    half = scipy_stats.t.ppf((1 + level) / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def bootstrap_mean_interval(values: Sequence[float], level: float = LEVEL, n_boot: int = N_BOOT,
                            seed: int = 0) -> tuple[float, float]:
    """The percentile-bootstrap interval of the mean (resampling the values with replacement)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and t-interval of one architecture's metric over its seeds."""

    mean: float
    std: float
    n: int
    ci: tuple[float, float]
    values: tuple[float, ...]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ci": list(self.ci), "values": list(self.values)}


def mean_interval(values: Sequence[float], level: float = LEVEL) -> Summary:
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        raise ValueError("no values")
    std = float(x.std(ddof=1)) if len(x) > 1 else math.nan
    return Summary(float(x.mean()), std, len(x), t_interval(x, level), tuple(float(v) for v in x))


@dataclass(frozen=True)
class PairedDifference:
    """mean(a - b) over the seeds both have, with its t-interval (primary) and bootstrap interval."""

    mean: float
    std: float
    n: int
    seeds: tuple[int, ...]
    t_ci: tuple[float, float]
    bootstrap_ci: tuple[float, float]
    level: float
    primary: str = "t"

    @property
    def ci(self) -> tuple[float, float]:
        """The primary interval."""
        return self.t_ci if self.primary == "t" else self.bootstrap_ci

    @property
    def significant(self) -> bool:
        """The primary interval excludes 0."""
        lo, hi = self.ci
        return math.isfinite(lo) and math.isfinite(hi) and (lo > 0 or hi < 0)

    def as_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "n": self.n, "seeds": list(self.seeds),
                "t_ci": list(self.t_ci), "bootstrap_ci": list(self.bootstrap_ci), "level": self.level,
                "primary": self.primary, "ci": list(self.ci), "significant": self.significant}


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], level: float = LEVEL,
                      n_boot: int = N_BOOT, seed: int = 0) -> PairedDifference:
    """a - b paired by seed (`a[seed]`, `b[seed]`); only seeds both have count."""
    seeds = tuple(sorted(set(a) & set(b)))
    if not seeds:
        raise ValueError("the two sides share no seed")
    d = np.array([a[s] - b[s] for s in seeds], dtype=float)
    std = float(d.std(ddof=1)) if len(d) > 1 else math.nan
    return PairedDifference(float(d.mean()), std, len(d), seeds, t_interval(d, level),
                            bootstrap_mean_interval(d, level, n_boot, seed), level)


def rank_agreement(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    return {"spearman": spearman(x, y), "kendall": kendall_tau(x, y)}


def rank_agreement_interval(proxy: Sequence[float], target_seeds: Sequence[Sequence[float]],
                            level: float = LEVEL, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """Spearman and Kendall between `proxy[i]` and the mean of `target_seeds[i]` (architecture i's target
    score per seed), each with a percentile-bootstrap interval that resamples every architecture's seeds
    (independently). Resamples where one side is constant (no ranking) are left out; each measure's
    `resamples` says how many were used."""
    if len(proxy) != len(target_seeds):
        raise ValueError(f"{len(proxy)} proxy scores for {len(target_seeds)} architectures")
    if len(proxy) < 2:
        raise ValueError("need at least two architectures to rank")
    rng = np.random.default_rng(seed)
    means = [float(np.mean(v)) for v in target_seeds]
    point = rank_agreement(proxy, means)
    draws = np.stack([np.asarray(v, float)[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
                      for v in target_seeds], axis=1)          # [n_boot, architectures]
    out: dict[str, Any] = {"n": len(proxy), "level": level}
    for name, function in (("spearman", spearman), ("kendall", kendall_tau)):
        values = np.array([function(proxy, row) for row in draws])
        values = values[np.isfinite(values)]
        ci = (np.quantile(values, [(1 - level) / 2, (1 + level) / 2]).tolist() if len(values)
              else [math.nan, math.nan])
        out[name] = {"value": point[name], "ci": [float(v) for v in ci], "resamples": int(len(values))}
    return out


def seed_noise_floor(per_seed: Sequence[Sequence[float]]) -> dict[str, float]:
    """Mean agreement between every two seeds' score vectors (`per_seed[s][arch]`) at one size."""
    return noise_floor(per_seed)
