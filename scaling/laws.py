"""Scaling-law fits with bootstrap intervals (numpy only), predictions and plots.

`L(N) = E + A * N^-alpha` is fitted by least squares on the loss. For a fixed exponent the model is linear in
(E, A), so the fit is a one-dimensional search over alpha (a log-spaced grid, then golden-section refinement)
with a bounded linear least-squares solve inside ("variable projection"). E is bounded by the data:
0 <= E < the smallest observed loss (an irreducible loss is not negative, and no model reaches below it), and
A >= 0. The two-variable law `L(N, D) = E + A * N^-alpha + B * D^-beta` is fitted over a grid of (alpha, beta).

Intervals come from a residual bootstrap: refit on (fitted curve + resampled residuals) `n_boot` times and
take percentiles. Residual resampling, not case resampling, because a ladder has few sizes (a case resample
of three sizes often draws one size twice and cannot determine three parameters).

A fit says when it is *unidentifiable* (`PowerLawFit.problems`, `identifiable`) instead of passing off numbers
the data do not determine:

* fewer distinct sizes than parameters + 1 (4): three sizes are interpolated exactly whatever their losses, so
  nothing checks the law's form and the residual bootstrap has nothing to resample;
* E at a bound (0, or the smallest loss) or alpha at the edge of its search range: the optimum lies outside
  what the bounds allow, so the reported value is the bound, not an estimate (with few sizes and a little
  noise, the unbounded optimum is often a negative E with a small alpha);
* alpha's interval spanning an order of magnitude or more.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

ALPHA_GRID = np.exp(np.linspace(math.log(1e-3), math.log(3.0), 200))
N_PARAMETERS = 3                 # E, A, alpha
WIDE_INTERVAL = 10.0             # alpha's interval hi / lo at or above which the exponent is not determined


@dataclass(frozen=True)
class PowerLawFit:
    """L(N) = E + A * N^-alpha, with bootstrap samples of (E, A, alpha) for intervals.

    `problems` lists why the fit is unidentifiable (empty when it is not); see the module docstring.
    """

    E: float
    A: float
    alpha: float
    n_points: int
    rmse: float
    samples: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)), repr=False)   # rows (E, A, alpha)
    level: float = 0.9
    n_sizes: int = 0
    problems: tuple[str, ...] = ()

    @property
    def dof(self) -> int:
        return self.n_points - 3

    @property
    def identifiable(self) -> bool:
        return not self.problems

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
            "E": self.E, "A": self.A, "alpha": self.alpha, "n_points": self.n_points, "n_sizes": self.n_sizes,
            "dof": self.dof, "rmse": self.rmse, "level": self.level,
            "intervals": {name: list(self.interval(name)) for name in ("E", "A", "alpha")},
            "identifiable": self.identifiable, "problems": list(self.problems),
        }


def _solve_linear(x: np.ndarray, y: np.ndarray, alphas: np.ndarray,
                  e_bounds: tuple[float, float]) -> tuple[np.ndarray, ...]:
    """(E, A, sse) arrays for each exponent in `alphas`: least squares with lo <= E <= hi and A >= 0.

    x is N over its geometric mean (conditioning). For a fixed exponent this is a convex problem in (E, A), so
    the optimum is the unconstrained one when it is feasible, else the best of the optima on the edges
    E = lo, E = hi (A by projection, clipped at 0) and A = 0 (E the clipped mean).
    """
    lo, hi = e_bounds
    f = np.power(x[None, :], -alphas[:, None])
    fm, ym = f.mean(axis=1), y.mean()
    var = ((f - fm[:, None]) ** 2).sum(axis=1)
    ff = (f * f).sum(axis=1)
    a_free = np.where(var > 0, ((f - fm[:, None]) * (y - ym)).sum(axis=1) / np.maximum(var, 1e-300), 0.0)
    e_free = ym - a_free * fm
    feasible = (e_free >= lo) & (e_free <= hi) & (a_free >= 0)
    candidates = [(np.where(feasible, e_free, lo), np.where(feasible, a_free, 0.0), feasible)]
    for edge in (lo, hi):
        candidates.append((np.full_like(fm, edge), np.maximum(0.0, (f @ (y - edge)) / ff), None))
    candidates.append((np.full_like(fm, min(max(ym, lo), hi)), np.zeros_like(fm), None))
    best_e, best_a, best_sse = None, None, None
    for e, a, ok in candidates:
        sse = ((y[None, :] - e[:, None] - a[:, None] * f) ** 2).sum(axis=1)
        if ok is not None:
            sse = np.where(ok, sse, np.inf)
        if best_sse is None:
            best_e, best_a, best_sse = e, a, sse
        else:
            better = sse < best_sse
            best_e, best_a, best_sse = (np.where(better, e, best_e), np.where(better, a, best_a),
                                        np.where(better, sse, best_sse))
    return best_e, best_a, best_sse


def e_bounds(loss: np.ndarray) -> tuple[float, float]:
    """The bounds of E given the losses: [0, just below the smallest loss]."""
    smallest = float(np.min(loss))
    return 0.0, max(0.0, smallest - 1e-9 * max(abs(smallest), 1.0))


def _fit_scaled(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(E, A_scaled, alpha) minimising the squared error, x already scaled."""
    bounds = e_bounds(y)
    errors = _solve_linear(x, y, ALPHA_GRID, bounds)[2]
    i = int(np.argmin(errors))
    lo, hi = ALPHA_GRID[max(i - 1, 0)], ALPHA_GRID[min(i + 1, len(ALPHA_GRID) - 1)]
    golden = (math.sqrt(5) - 1) / 2
    for _ in range(40):                      # golden-section search in the bracketing grid cells
        c, d = hi - golden * (hi - lo), lo + golden * (hi - lo)
        sse = _solve_linear(x, y, np.array([c, d]), bounds)[2]
        if sse[0] < sse[1]:
            hi = d
        else:
            lo = c
    alpha = (lo + hi) / 2
    e, a, _ = _solve_linear(x, y, np.array([alpha]), bounds)
    return float(e[0]), float(a[0]), float(alpha)


def fit_problems(n_sizes: int, E: float, A: float, alpha: float, bounds: tuple[float, float],
                 alpha_interval: tuple[float, float] | None, level: float) -> tuple[str, ...]:
    """Why a fit with these values is unidentifiable (empty when it is not); see the module docstring."""
    out = []
    if n_sizes < N_PARAMETERS + 1:
        out.append(f"{n_sizes} distinct sizes for {N_PARAMETERS} parameters: the law passes through any "
                   f"{N_PARAMETERS} points, so nothing checks it (give at least {N_PARAMETERS + 1} sizes)")
    lo, hi = bounds
    tiny = 1e-6 * max(abs(hi), 1.0)
    if A <= 0:
        out.append("A = 0: the loss does not fall with size in these data")
    elif E <= lo + tiny:
        out.append("E at its lower bound 0: the data do not bound the irreducible loss from below")
    elif E >= hi - tiny:
        out.append(f"E at its upper bound (the smallest loss, {hi:.4g}): the data do not bound it from above")
    grid_lo, grid_hi = float(ALPHA_GRID[0]), float(ALPHA_GRID[-1])
    if A > 0 and (alpha <= grid_lo * 1.01 or alpha >= grid_hi * 0.99):
        out.append(f"alpha at the edge of its range [{grid_lo:g}, {grid_hi:g}]")
    if alpha_interval is not None:
        a_lo, a_hi = alpha_interval
        if a_lo <= 0 or a_hi / a_lo >= WIDE_INTERVAL:
            out.append(f"alpha's {level:.0%} interval [{a_lo:.3g}, {a_hi:.3g}] spans an order of magnitude or more")
    return tuple(out)


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
    fit = PowerLawFit(E=e, A=a * scale ** alpha, alpha=alpha, n_points=len(y),
                      rmse=float(np.sqrt(np.mean(residuals ** 2))),
                      samples=np.asarray(samples).reshape(-1, 3), level=level, n_sizes=len(np.unique(n_arr)))
    interval = fit.interval("alpha") if len(fit.samples) else None
    problems = fit_problems(fit.n_sizes, e, a, alpha, e_bounds(y), interval, level)
    return dataclasses.replace(fit, problems=problems)


def describe_fit(fit: dict) -> str:
    """One line for a fit in its `as_dict` form: the values with alpha's interval (at the fit's level), or why
    it is unidentifiable (then no values: they would be read as findings)."""
    if fit.get("identifiable") is False:
        return "unidentifiable: " + "; ".join(fit.get("problems") or [])
    lo, hi = fit["intervals"]["alpha"]
    return f"E={fit['E']:.3f} A={fit['A']:.3g} alpha={fit['alpha']:.3f} [{lo:.3f}, {hi:.3f}]"


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
    """A PNG of each architecture's points, fitted curve and interval band (log-scaled size axis); an
    unidentifiable fit is drawn dashed, without a band, and its legend entry says so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    sizes = [s for n, _ in points.values() for s in n]
    right = max(sizes + ([target] if target else []))
    grid = np.exp(np.linspace(math.log(min(sizes) * 0.8), math.log(right * 1.25), 100))
    for i, (name, (n, loss)) in enumerate(points.items()):
        color = f"C{i % 10}"
        fit = fits.get(name)
        unidentifiable = fit is not None and not fit.identifiable
        ax.scatter(n, loss, color=color, s=14, label=name + (" (fit unidentifiable)" if unidentifiable else ""))
        if fit is not None and unidentifiable:
            ax.plot(grid, fit(grid), color=color, lw=0.8, ls="--")
        elif fit is not None:
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
