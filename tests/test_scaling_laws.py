"""Scaling-law fits recover known laws; intervals cover the truth; plots are written."""

import numpy as np
import pytest

from scaling.laws import fit_joint_law, fit_power_law, plot_fits, predict

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
