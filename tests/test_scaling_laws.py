"""Scaling-law fits recover known laws; intervals cover the truth; plots are written."""

import numpy as np
import pytest

from scaling.laws import describe_fit, fit_joint_law, fit_power_law, plot_fits, predict

SIZES = np.array([1e5, 3e5, 1e6, 3e6, 1e7, 3e7])


@pytest.mark.parametrize("E, A, alpha", [(1.7, 40.0, 0.34), (0.5, 8.0, 0.1), (2.5, 400.0, 0.7)])
def test_fit_recovers_a_noiseless_law(E, A, alpha):
    fit = fit_power_law(SIZES, E + A * SIZES ** -alpha, n_boot=0)
    assert fit.alpha == pytest.approx(alpha, rel=0.05)
    assert fit.E == pytest.approx(E, rel=0.05)
    assert fit.A == pytest.approx(A, rel=0.05)
    assert fit.rmse < 1e-6


def test_fit_recovers_the_exponent_from_noisy_repeats_and_the_interval_covers_it():
    rng = np.random.default_rng(1)
    n = np.repeat(SIZES, 3)
    loss = 1.7 + 40.0 * n ** -0.34 + rng.normal(0, 0.003, len(n))
    fit = fit_power_law(n, loss, n_boot=300, level=0.95)
    assert fit.alpha == pytest.approx(0.34, rel=0.05)
    lo, hi = fit.interval("alpha")
    assert lo < 0.34 < hi and hi - lo < 0.1
    value, low, high = predict(fit, 1e8)
    truth = 1.7 + 40.0 * 1e8 ** -0.34
    assert low <= truth <= high and value == pytest.approx(truth, abs=0.02)
    assert fit.dof == len(n) - 3


def test_an_interpolating_fit_has_a_zero_width_interval():
    n = np.array([1e5, 1e6, 1e7])
    fit = fit_power_law(n, 2.0 + 10 * n ** -0.3)
    assert fit.dof == 0 and len(fit.samples) == 0
    value, low, high = predict(fit, 1e9)
    assert low == value == high


def test_fit_keeps_the_irreducible_loss_nonnegative():
    fit = fit_power_law(SIZES, 30.0 * SIZES ** -0.2, n_boot=0)   # E = 0 exactly: the fit must not go below
    assert fit.E >= 0 and fit.alpha == pytest.approx(0.2, rel=0.05)


def test_fit_needs_two_sizes():
    with pytest.raises(ValueError, match="two distinct positive sizes"):
        fit_power_law([1e6, 1e6], [3.0, 3.1])


def test_joint_law_recovers_both_exponents():
    n, d = np.meshgrid(SIZES, np.array([1e7, 3e7, 1e8, 3e8]))
    n, d = n.ravel(), d.ravel()
    fit = fit_joint_law(n, d, 1.5 + 30 * n ** -0.3 + 200 * d ** -0.25)
    assert fit.alpha == pytest.approx(0.3, rel=0.05)
    assert fit.beta == pytest.approx(0.25, rel=0.05)
    assert fit.E == pytest.approx(1.5, rel=0.05)


def test_plot_writes_a_png(tmp_path):
    n = np.repeat(SIZES[:4], 2)
    loss = 2.0 + 10 * n ** -0.3 + np.tile([0.01, -0.01], 4)
    fit = fit_power_law(n, loss, n_boot=50)
    path = tmp_path / "fits.png"
    plot_fits({"a": (n, loss), "b": (SIZES[:2], [3.0, 2.9])}, {"a": fit}, str(path), target=1e8)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_three_sizes_are_reported_unidentifiable():
    """Three sizes determine the three parameters exactly: the fit keeps its numbers but says it is unchecked."""
    n = np.repeat([2.5e4, 1e5, 4e5], 2)
    fit = fit_power_law(n, 2.0 + 10 * n ** -0.3 + np.tile([0.01, -0.01], 3), n_boot=50)
    assert not fit.identifiable and fit.n_sizes == 3
    assert any("3 distinct sizes for 3 parameters" in p for p in fit.problems)
    described = describe_fit(fit.as_dict())
    assert described.startswith("unidentifiable: 3 distinct sizes") and "E=" not in described
    assert fit.as_dict()["identifiable"] is False


def test_a_well_determined_fit_is_identifiable():
    rng = np.random.default_rng(1)
    n = np.repeat(SIZES, 3)
    fit = fit_power_law(n, 1.7 + 40.0 * n ** -0.34 + rng.normal(0, 0.003, len(n)), n_boot=100)
    assert fit.identifiable and fit.problems == ()
    assert describe_fit(fit.as_dict()).startswith("E=1.70")


def test_irreducible_loss_is_bounded_by_the_data():
    """Over four sizes the loss falls a little faster with each decade (no power law with E >= 0 bends that
    way): the unbounded optimum is a negative E; the fit stops at 0 and says so instead of printing E = 0 as a
    finding. E never exceeds the smallest observed loss."""
    n = np.repeat([2.5e4, 1e5, 4e5, 1.6e6], 2)
    decades = np.log10(n / 2.5e4)
    loss = 2.3 - 0.1 * decades - 0.01 * decades ** 2 + np.tile([0.005, -0.005], 4)
    fit = fit_power_law(n, loss, n_boot=100)
    assert fit.E == 0.0
    assert any(p.startswith("E at its lower bound 0") for p in fit.problems)
    for seed in range(20):                        # flattening, noisy losses: E stays below the smallest loss
        rng = np.random.default_rng(seed)
        y = 2.0 + 3.0 * SIZES ** -0.5 + rng.normal(0, 0.02, len(SIZES))
        fit = fit_power_law(SIZES, y, n_boot=0)
        assert 0 <= fit.E < y.min()


def test_bounded_fit_matches_a_general_bounded_optimiser():
    """The variable-projection fit against scipy's L-BFGS-B on the same bounds (the slow reference), from many
    starting points: the fit's squared error is never worse."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(3)
    for _ in range(3):
        n = np.repeat(SIZES[:4], 2)
        y = rng.uniform(1, 3) + rng.uniform(1, 50) * n ** -rng.uniform(0.1, 0.6) + rng.normal(0, 0.02, len(n))
        fit = fit_power_law(n, y, n_boot=0)
        scale = float(np.exp(np.log(n).mean()))
        sse = lambda p, y=y, x=n / scale: float(((y - p[0] - p[1] * x ** -p[2]) ** 2).sum())
        ours = sse((fit.E, fit.A * scale ** -fit.alpha, fit.alpha))
        best = min(minimize(sse, start, method="L-BFGS-B",
                            bounds=[(0, y.min()), (0, None), (1e-3, 3.0)]).fun
                   for start in [(e, 1.0, al) for e in (0.0, y.min() / 2) for al in (0.1, 0.5, 1.5)])
        assert ours <= best + 1e-9


def test_a_wide_exponent_interval_is_unidentifiable():
    rng = np.random.default_rng(5)
    n = np.repeat([1e5, 2e5, 4e5, 8e5], 2)
    loss = 3.0 + 0.5 * n ** -0.05 + rng.normal(0, 0.05, len(n))     # noise swamps the trend
    fit = fit_power_law(n, loss, n_boot=200)
    assert not fit.identifiable
