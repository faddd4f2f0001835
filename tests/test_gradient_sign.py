"""The statistics of ``experiments/gradient_sign.py``: scipy's Spearman and bootstrap, as used."""


import numpy as np
import pytest
from conftest import experiment


@pytest.fixture(scope="module")
def study():
    return experiment("gradient_sign")


def test_spearman_of_monotone_series_is_one(study):
    x = np.array([0.0, 0.1, 0.15, 0.4, 0.9])
    assert study.spearman(x, np.exp(x)) == pytest.approx(1.0)
    assert study.spearman(x, -(x**3)) == pytest.approx(-1.0)
    # A constant variable has no ranks: NaN, not a warning or an error.
    assert np.isnan(study.spearman(np.zeros(5), x))


def test_bootstrap_interval_holds_the_statistic_and_is_reproducible(study):
    rng = np.random.default_rng(1)
    x = rng.random(15)
    y = x + 0.3 * rng.standard_normal(15)
    lo, hi = study.bootstrap_ci(x, y)
    assert -1 <= lo <= study.spearman(x, y) <= hi <= 1
    assert study.bootstrap_ci(x, y) == (lo, hi)


def test_bootstrap_interval_leaves_out_resamples_without_a_correlation(study):
    # Half the x at zero, as for cross-entropy and exp-MSE members: with n = 4 about 7% of the
    # resamples have a constant x, where scipy alone would give a NaN interval.
    x, y = np.array([0.0, 0.0, 0.2, 0.3]), np.array([0.5, 0.7, 0.6, 0.9])
    lo, hi = study.bootstrap_ci(x, y)
    assert np.isfinite([lo, hi]).all() and lo <= study.spearman(x, y) <= hi
