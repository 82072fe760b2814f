"""Rank agreement measures against hand-computed values, their properties, and the transfer report."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaling.transfer import kendall_tau, noise_floor, pairwise_accuracy, ranks, spearman, transfer_report


def test_known_values():
    x, y = [1, 2, 3, 4], [1, 3, 2, 4]          # one swapped pair of six
    assert spearman(x, y) == pytest.approx(0.8)             # 1 - 6*2 / (4*15)
    assert kendall_tau(x, y) == pytest.approx(4 / 6)        # (5 - 1) / 6
    assert pairwise_accuracy(x, y) == pytest.approx(5 / 6)
    assert spearman(x, x[::-1]) == pytest.approx(-1.0)
    assert kendall_tau(x, x[::-1]) == pytest.approx(-1.0)
    assert pairwise_accuracy(x, x[::-1]) == 0.0


def test_ties():
    assert ranks([3.0, 1.0, 3.0, 2.0]) == [3.5, 1.0, 3.5, 2.0]
    # x ties the first two; pairs: (0,1) tie in x, others concordant: tau-b = 5 / sqrt(5 * 6)
    x, y = [1, 1, 2, 3], [1, 2, 3, 4]
    assert kendall_tau(x, y) == pytest.approx(5 / math.sqrt(30))
    assert pairwise_accuracy(x, y) == pytest.approx(5.5 / 6)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-1000, 1000), min_size=2, max_size=12, unique=True), st.randoms())
def test_properties_without_ties(x, rnd):
    y = x[:]
    rnd.shuffle(y)
    assert spearman(x, x) == pytest.approx(1.0)
    assert pairwise_accuracy(x, y) == pytest.approx((kendall_tau(x, y) + 1) / 2)
    monotone = [v ** 3 + 5 for v in y]                 # rank measures ignore monotone transforms
    assert spearman(x, monotone) == pytest.approx(spearman(x, y))
    assert kendall_tau(x, monotone) == pytest.approx(kendall_tau(x, y))


def test_lengths_must_match():
    with pytest.raises(ValueError, match="differ in length"):
        spearman([1, 2], [1, 2, 3])


def test_noise_floor_averages_seed_pairs():
    assert noise_floor([[1, 2, 3], [1, 2, 3], [1, 2, 3]])["spearman"] == 1.0
    floor = noise_floor([[1, 2, 3, 4], [1, 3, 2, 4]])
    assert floor["kendall"] == pytest.approx(4 / 6) and floor["seed_pairs"] == 1
    assert math.isnan(noise_floor([[1, 2, 3]])["spearman"])


def test_transfer_report():
    losses = {
        "a": {"s": [3.0, 3.1], "l": [2.0, 2.1]},
        "b": {"s": [3.2, 3.3], "l": [1.9, 1.95]},
        "c": {"s": [3.5, 3.25], "l": [2.5, 2.4]},
    }
    report = transfer_report(losses, ["s", "l"])
    assert report["ranking"] == {"s": ["a", "b", "c"], "l": ["b", "a", "c"]}
    assert report["transfer"]["l"]["pairwise"] == pytest.approx(2 / 3)
    assert report["noise_floor"]["s"]["spearman"] == pytest.approx(0.5)   # seed 1 swaps b and c
