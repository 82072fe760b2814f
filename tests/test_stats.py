"""Statistics over seeds against known values: scipy's rank correlations, hand-computed t and bootstrap
intervals, and the verdict wording built on them."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from composer.confirm.analysis import verdict
from scaling import transfer
from scaling.stats import (
    bootstrap_mean_interval,
    mean_interval,
    paired_difference,
    rank_agreement,
    rank_agreement_interval,
    seed_noise_floor,
    t_interval,
)
from scaling.transfer import kendall_tau as kendall
from scaling.transfer import spearman

T_975_3 = 3.182446305284263      # Student t quantile 0.975 with 3 degrees of freedom
T_975_2 = 4.302652729911275      # ... with 2


def test_t_interval_by_hand():
    # [1, 2, 3, 4]: mean 2.5, sample sd sqrt(5/3), standard error sqrt(5/3) / 2
    lo, hi = t_interval([1, 2, 3, 4])
    half = T_975_3 * math.sqrt(5 / 3) / 2
    assert (lo, hi) == pytest.approx((2.5 - half, 2.5 + half))
    assert (lo, hi) == pytest.approx((0.4457397, 4.5542603))
    s = mean_interval([1, 2, 3, 4])
    assert (s.mean, s.std, s.n) == (2.5, pytest.approx(math.sqrt(5 / 3)), 4) and s.ci == (lo, hi)
    assert all(math.isnan(v) for v in t_interval([3.0]))


def test_paired_difference_by_hand():
    """Per-seed differences 0.03, 0.05, 0.04: mean 0.04, sd 0.01; seed 3 of one side has no partner."""
    a = {0: 3.03, 1: 3.05, 2: 3.04, 3: 9.0}
    b = {0: 3.00, 1: 3.00, 2: 3.00}
    d = paired_difference(a, b)
    assert d.seeds == (0, 1, 2) and d.n == 3
    assert d.mean == pytest.approx(0.04) and d.std == pytest.approx(0.01)
    half = T_975_2 * 0.01 / math.sqrt(3)
    assert d.t_ci == pytest.approx((0.04 - half, 0.04 + half))
    assert d.t_ci == pytest.approx((0.0151587, 0.0648413), abs=1e-6)
    # the bootstrap over 3 seeds: each extreme resample (all three the smallest, or the largest difference)
    # has probability 1/27 > 2.5%, so the 95% percentile interval is exactly the range of the differences
    assert d.bootstrap_ci == pytest.approx((0.03, 0.05))
    assert d.primary == "t" and d.ci == d.t_ci and d.significant
    assert not paired_difference({0: 1.0, 1: 2.0}, {0: 1.5, 1: 1.5}).significant
    with pytest.raises(ValueError, match="no seed"):
        paired_difference({0: 1.0}, {1: 1.0})


def test_bootstrap_of_two_values_by_hand():
    # resample means of [1, 3]: 1 (p 1/4), 2 (p 1/2), 3 (p 1/4): the 95% interval is [1, 3], the 50% one [2, 2]
    assert bootstrap_mean_interval([1.0, 3.0]) == pytest.approx((1.0, 3.0))
    assert bootstrap_mean_interval([1.0, 3.0], level=0.5) == pytest.approx((2.0, 2.0))


def test_rank_correlations_equal_scipy_and_the_pure_versions():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(3, 12))
        x = rng.integers(0, 5, n).astype(float)          # ties on purpose
        y = x + rng.normal(0, 2, n)
        if len(set(x)) < 2:
            continue
        rho, tau = scipy_stats.spearmanr(x, y)[0], scipy_stats.kendalltau(x, y)[0]
        assert spearman(x, y) == pytest.approx(rho) == pytest.approx(transfer.spearman(list(x), list(y)))
        assert kendall(x, y) == pytest.approx(tau) == pytest.approx(transfer.kendall_tau(list(x), list(y)))
    assert rank_agreement([1, 2, 3, 4], [1, 3, 2, 4]) == {"spearman": pytest.approx(0.8),
                                                         "kendall": pytest.approx(4 / 6)}
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_rank_agreement_interval_resamples_seeds():
    # separated seeds: every resample ranks as the means do
    out = rank_agreement_interval([1, 2, 3], [[1.0, 1.1], [2.0, 2.1], [3.0, 3.1]])
    for name in ("spearman", "kendall"):
        assert out[name]["value"] == pytest.approx(1.0) and out[name]["ci"] == pytest.approx([1.0, 1.0])
    assert out["n"] == 3
    # by hand: B's seeds agree (2.0); A's mean is 1.0, 1.8 or 2.6 with probability 1/4, 1/2, 1/4, so A ranks
    # ahead of B (rho = +1) with probability 3/4 and behind (rho = -1) with probability 1/4
    out = rank_agreement_interval([0, 1], [[1.0, 2.6], [2.0, 2.0]])
    assert out["spearman"]["value"] == pytest.approx(1.0) and out["spearman"]["ci"] == pytest.approx([-1.0, 1.0])
    assert out["spearman"]["resamples"] == 2000
    with pytest.raises(ValueError, match="proxy scores"):
        rank_agreement_interval([1, 2], [[1.0]])


def test_noise_floor_is_the_seed_to_seed_agreement():
    per_seed = [[1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]]
    floor = seed_noise_floor(per_seed)
    assert floor["spearman"] == pytest.approx(0.8) and floor["kendall"] == pytest.approx(4 / 6)
    assert floor["seed_pairs"] == 1


@pytest.mark.parametrize("a, b, words", [
    ({0: 2.10, 1: 2.12, 2: 2.11}, {0: 2.0, 1: 2.0, 2: 2.0}, "X beats Y by 0.110 nats of test loss, 95% CI [0.085, 0.135], 3 seeds"),
    ({0: 1.90, 1: 1.88, 2: 1.89}, {0: 2.0, 1: 2.0, 2: 2.0}, "X loses to Y by 0.110 nats of test loss, 95% CI [0.085, 0.135], 3 seeds"),
    ({0: 2.05, 1: 1.97, 2: 2.01}, {0: 2.0, 1: 2.0, 2: 2.0}, "no significant difference between X and Y: +0.010 nats of "
                                                            "test loss in favour of X, 95% CI [-0.089, +0.109], 3 seeds"),
])
def test_verdict_words(a, b, words):
    diff = paired_difference(a, b)          # a = the other side's loss, b = X's: positive when X is better
    line = verdict("4M parameters", "X", "Y", diff, "test_loss")
    assert line.startswith("at 4M parameters ") and line.endswith(words)


def test_verdict_names_the_metric_it_reads():
    """Counts further apart than the tolerance never reach a verdict (tests/test_confirm.py: refused); the verdict
    names the split it judges on."""
    diff = paired_difference({0: 2.1, 1: 2.1}, {0: 2.0, 1: 2.0})
    assert "nats of val loss" in verdict("1M parameters", "X", "Y", diff)
    assert "nats of test loss" in verdict("1M parameters", "X", "Y", diff, "test_loss")
