"""Scaling-law fits with bootstrap intervals (numpy only), predictions and plots.

`L(N) = E + A * N^-alpha` is fitted by least squares on the loss. For a fixed exponent the model is linear in
(E, A), so the fit is a one-dimensional search over alpha (a log-spaced grid, then golden-section refinement)
with a linear least-squares solve inside ("variable projection"); E is kept >= 0 and A > 0. The two-variable
law `L(N, D) = E + A * N^-alpha + B * D^-beta` is fitted the same way over a grid of (alpha, beta).

Intervals come from a residual bootstrap: refit on (fitted curve + resampled residuals) `n_boot` times and
take percentiles. Residual resampling, not case resampling, because a ladder has few sizes (a case resample
of three sizes often draws one size twice and cannot determine three parameters). With as many distinct
points as parameters the fit interpolates, the residuals are zero and so is the interval: repeats (seeds)
or more sizes are what make it honest; `dof` reports the points left over.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

ALPHA_GRID = np.exp(np.linspace(math.log(1e-3), math.log(3.0), 200))


@dataclass(frozen=True)
class PowerLawFit:
    """L(N) = E + A * N^-alpha, with bootstrap samples of (E, A, alpha) for intervals."""

    E: float
    A: float
    alpha: float
    n_points: int
    rmse: float
    samples: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)), repr=False)   # rows (E, A, alpha)
    level: float = 0.9

    @property
    def dof(self) -> int:
        return self.n_points - 3

    def __call__(self, n: float | np.ndarray) -> float | np.ndarray:
        return self.E + self.A * np.power(np.asarray(n, dtype=float), -self.alpha)

    def interval(self, name: str) -> tuple[float, float]:
        """The bootstrap interval (at `level`) of E, A or alpha."""
        column = {"E": 0, "A": 1, "alpha": 2}[name]
        if len(self.samples) == 0:
            value = getattr(self, name)
            return value, value
        lo, hi = np.quantile(self.samples[:, column], [(1 - self.level) / 2, (1 + self.level) / 2])
        return float(lo), float(hi)

    def as_dict(self) -> dict:
        return {
            "E": self.E, "A": self.A, "alpha": self.alpha, "n_points": self.n_points, "dof": self.dof,
            "rmse": self.rmse, "level": self.level,
            "intervals": {name: list(self.interval(name)) for name in ("E", "A", "alpha")},
        }


def _solve_linear(x: np.ndarray, y: np.ndarray, alphas: np.ndarray) -> tuple[np.ndarray, ...]:
    """(E, A, sse) arrays for each exponent in `alphas`; x is N over its geometric mean (conditioning).

    The closed-form two-parameter least squares, with E kept >= 0 (an irreducible loss is not negative)
    and A >= 0 (A = 0 is a flat law: the mean).
    """
    f = np.power(x[None, :], -alphas[:, None])
    fm, ym = f.mean(axis=1), y.mean()
    var = ((f - fm[:, None]) ** 2).sum(axis=1)
    a = np.where(var > 0, ((f - fm[:, None]) * (y - ym)).sum(axis=1) / np.maximum(var, 1e-300), 0.0)
    e = ym - a * fm
    negative = e < 0
    a = np.where(negative, (f @ y) / (f * f).sum(axis=1), a)
    e = np.where(negative, 0.0, e)
    flat = a <= 0
    a = np.where(flat, 0.0, a)
    e = np.where(flat, max(ym, 0.0), e)
    residual = y[None, :] - e[:, None] - a[:, None] * f
    return e, a, (residual ** 2).sum(axis=1)


def _fit_scaled(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(E, A_scaled, alpha) minimising the squared error, x already scaled."""
    errors = _solve_linear(x, y, ALPHA_GRID)[2]
    i = int(np.argmin(errors))
    lo, hi = ALPHA_GRID[max(i - 1, 0)], ALPHA_GRID[min(i + 1, len(ALPHA_GRID) - 1)]
    golden = (math.sqrt(5) - 1) / 2
    for _ in range(40):                      # golden-section search in the bracketing grid cells
        c, d = hi - golden * (hi - lo), lo + golden * (hi - lo)
        sse = _solve_linear(x, y, np.array([c, d]))[2]
        if sse[0] < sse[1]:
            hi = d
        else:
            lo = c
    alpha = (lo + hi) / 2
    e, a, _ = _solve_linear(x, y, np.array([alpha]))
    return float(e[0]), float(a[0]), float(alpha)


def fit_power_law(n: Sequence[float], loss: Sequence[float], *, n_boot: int = 500, level: float = 0.9,
                  seed: int = 0) -> PowerLawFit:
    """Fit L(N) = E + A * N^-alpha to points (repeats of one N allowed) with a residual-bootstrap interval."""
    n_arr, y = np.asarray(n, dtype=float), np.asarray(loss, dtype=float)
    if n_arr.shape != y.shape or n_arr.ndim != 1:
        raise ValueError("n and loss must be 1-d sequences of the same length")
    if len(np.unique(n_arr)) < 2 or np.any(n_arr <= 0) or not np.all(np.isfinite(y)):
        raise ValueError("need at least two distinct positive sizes and finite losses")
    scale = float(np.exp(np.log(n_arr).mean()))
    x = n_arr / scale
    e, a, alpha = _fit_scaled(x, y)
    fitted = e + a * np.power(x, -alpha)
    residuals = y - fitted
    rng = np.random.default_rng(seed)
    samples = []
    if np.sqrt(np.mean(residuals ** 2)) > 1e-9 * np.abs(y).mean():     # else the fit interpolates
        for _ in range(n_boot):
            resampled = fitted + rng.choice(residuals, size=len(y), replace=True)
            be, ba, balpha = _fit_scaled(x, resampled)
            samples.append((be, ba * scale ** balpha, balpha))
    return PowerLawFit(E=e, A=a * scale ** alpha, alpha=alpha, n_points=len(y),
                       rmse=float(np.sqrt(np.mean(residuals ** 2))),
                       samples=np.asarray(samples).reshape(-1, 3), level=level)


def predict(fit: PowerLawFit, n: float) -> tuple[float, float, float]:
    """(loss, low, high): the fitted loss at size `n` and its bootstrap interval at `fit.level`."""
    value = float(fit(n))
    if len(fit.samples) == 0:
        return value, value, value
    e, a, alpha = fit.samples.T
    spread = e + a * np.power(float(n), -alpha)
    lo, hi = np.quantile(spread, [(1 - fit.level) / 2, (1 + fit.level) / 2])
    return value, float(lo), float(hi)


@dataclass(frozen=True)
class JointFit:
    """L(N, D) = E + A * N^-alpha + B * D^-beta (parameters N, training tokens D)."""

    E: float
    A: float
    alpha: float
    B: float
    beta: float
    rmse: float

    def __call__(self, n: float | np.ndarray, d: float | np.ndarray) -> float | np.ndarray:
        return (self.E + self.A * np.power(np.asarray(n, float), -self.alpha)
                + self.B * np.power(np.asarray(d, float), -self.beta))

    def as_dict(self) -> dict:
        return {"E": self.E, "A": self.A, "alpha": self.alpha, "B": self.B, "beta": self.beta,
                "rmse": self.rmse}


def fit_joint_law(n: Sequence[float], d: Sequence[float], loss: Sequence[float]) -> JointFit:
    """Fit L(N, D) by a coarse (alpha, beta) grid refined three times around the best cell."""
    n_arr, d_arr, y = (np.asarray(v, dtype=float) for v in (n, d, loss))
    if len(y) < 5:
        raise ValueError("the joint law has 5 parameters: give at least 5 points")
    sn, sd = float(np.exp(np.log(n_arr).mean())), float(np.exp(np.log(d_arr).mean()))
    xn, xd = n_arr / sn, d_arr / sd

    def solve(alpha: float, beta: float) -> tuple[float, np.ndarray]:
        design = np.stack([np.ones_like(y), xn ** -alpha, xd ** -beta], axis=1)
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        coef = np.maximum(coef, 0.0)
        r = y - design @ coef
        return float(r @ r), coef

    lo_a, hi_a, lo_b, hi_b = math.log(1e-3), math.log(3.0), math.log(1e-3), math.log(3.0)
    best = (0.5, 0.5)
    for _ in range(4):
        grid_a = np.exp(np.linspace(lo_a, hi_a, 40))
        grid_b = np.exp(np.linspace(lo_b, hi_b, 40))
        scores = np.array([[solve(a, b)[0] for b in grid_b] for a in grid_a])
        i, j = np.unravel_index(int(np.argmin(scores)), scores.shape)
        best = (float(grid_a[i]), float(grid_b[j]))
        step_a, step_b = (hi_a - lo_a) / 39, (hi_b - lo_b) / 39
        lo_a, hi_a = math.log(best[0]) - 2 * step_a, math.log(best[0]) + 2 * step_a
        lo_b, hi_b = math.log(best[1]) - 2 * step_b, math.log(best[1]) + 2 * step_b
    sse, (e, a, b) = solve(*best)
    alpha, beta = best
    return JointFit(E=float(e), A=float(a) * sn ** alpha, alpha=alpha, B=float(b) * sd ** beta, beta=beta,
                    rmse=math.sqrt(sse / len(y)))


def plot_fits(points: dict[str, tuple[Sequence[float], Sequence[float]]], fits: dict[str, PowerLawFit],
              path: str, target: float | None = None, title: str = "") -> None:
    """A PNG of each architecture's points, fitted curve and interval band (log-scaled size axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    sizes = [s for n, _ in points.values() for s in n]
    right = max(sizes + ([target] if target else []))
    grid = np.exp(np.linspace(math.log(min(sizes) * 0.8), math.log(right * 1.25), 100))
    for i, (name, (n, loss)) in enumerate(points.items()):
        color = f"C{i % 10}"
        ax.scatter(n, loss, color=color, s=14, label=name)
        if name in fits:
            fit = fits[name]
            ax.plot(grid, fit(grid), color=color, lw=1.2)
            bands = np.array([predict(fit, g)[1:] for g in grid])
            ax.fill_between(grid, bands[:, 0], bands[:, 1], color=color, alpha=0.15, lw=0)
    if target:
        ax.axvline(target, color="gray", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("validation loss")
    ax.set_title(title or "L(N) = E + A N^-alpha")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
