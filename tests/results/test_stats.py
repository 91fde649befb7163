"""ablate.results.stats: seed statistics against numbers worked out by hand and against scipy.

Every expected value below is computed here from its formula (or printed in a power
table), never by the function under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from ablate.results.stats import (ONE_SEED, format_p, minimum_detectable_difference, pooled_std, power_two_sample,
                          repeats_needed, summarize, verdict, welch_test)

# t quantiles by hand from a printed t table (two-sided 95 %): df 1, 2, 4
T975 = {1: 12.7062, 2: 4.3027, 4: 2.7764}


# --------------------------------------------------------------------------- summaries


def test_summary_of_three_runs_by_hand():
    s = summarize([80.0, 82.0, 84.0])
    assert (s.n, s.mean, s.std) == (3, 82.0, pytest.approx(2.0))  # sqrt((4 + 0 + 4) / 2)
    half = T975[2] * 2.0 / math.sqrt(3)  # 4.968
    assert s.ci95 == pytest.approx((82.0 - half, 82.0 + half), abs=2e-4)
    assert s.half_width == pytest.approx(half, abs=1e-4) and not s.constant


def test_summary_of_five_runs_by_hand():
    s = summarize([1.0, 2.0, 3.0, 4.0, 10.0])
    assert s.mean == 4.0
    assert s.std == pytest.approx(math.sqrt((9 + 4 + 1 + 0 + 36) / 4))  # sqrt(12.5)
    assert s.ci95[1] - s.mean == pytest.approx(T975[4] * math.sqrt(12.5) / math.sqrt(5), abs=1e-3)


def test_one_run_has_no_spread_and_no_interval():
    s = summarize([71.5])
    assert (s.n, s.mean, s.std, s.ci95, s.half_width, s.constant) == (1, 71.5, None, None, None, False)


def test_a_constant_sample_is_exact_and_a_point():
    x = 0.1 + 0.2  # a value whose sums would round
    s = summarize([x, x, x])
    assert s.mean == x and s.std == 0.0 and s.ci95 == (x, x) and s.constant


def test_summary_refuses_nothing_and_non_numbers():
    with pytest.raises(ValueError, match="at least one"):
        summarize([])
    with pytest.raises(ValueError, match="finite"):
        summarize([1.0, float("nan")])


# --------------------------------------------------------------------------- Welch


def test_welch_by_hand():
    a, b = [85.0, 86.0, 90.0], [80.0, 82.0, 84.0]
    c = welch_test(a, b)
    va, vb = 7.0 / 3, 4.0 / 3  # s² / n: s_a² = (4 + 1 + 9) / 2 = 7, s_b² = 4
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)  # Welch–Satterthwaite: 3.7231
    assert c.diff == 5.0 and c.df == pytest.approx(df) and df == pytest.approx(3.7231, abs=1e-4)
    half = sps.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert c.ci95 == pytest.approx((5.0 - half, 5.0 + half))
    assert c.p == pytest.approx(2 * sps.t.sf(5.0 / math.sqrt(va + vb), df))


@pytest.mark.parametrize("seed", range(8))
def test_welch_matches_scipy_ttest_ind(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(80, rng.uniform(0.2, 3), size=int(rng.integers(2, 9)))
    b = rng.normal(80 + rng.uniform(-3, 3), rng.uniform(0.2, 3), size=int(rng.integers(2, 9)))
    ours = welch_test(a.tolist(), b.tolist())
    ref = sps.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert ours.p == pytest.approx(ref.pvalue, rel=1e-9)
    assert ours.df == pytest.approx(ref.df, rel=1e-9)
    assert ours.ci95 == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert ours.diff == pytest.approx(a.mean() - b.mean())


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # scipy on a constant sample
def test_welch_with_one_constant_sample_is_ordinary_welch():
    a, b = [2.0, 2.0, 2.0], [1.0, 2.0, 4.0]
    ref = sps.ttest_ind(a, b, equal_var=False)
    ours = welch_test(a, b)
    assert ours.p == pytest.approx(ref.pvalue) and ours.df == pytest.approx(2.0)  # all the variance is b's


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # scipy on constant samples
def test_welch_zero_variance_rule():
    same = welch_test([0.05, 0.05, 0.05], [0.05, 0.05])
    assert (same.diff, same.ci95, same.p, same.df) == (0.0, (0.0, 0.0), 1.0, None)
    other = welch_test([0.09, 0.09], [0.05, 0.05, 0.05])
    assert other.diff == pytest.approx(0.04) and other.ci95 == (other.diff, other.diff) and other.p == 0.0
    # why the rule exists: scipy divides 0 by 0 (NaN), or rounding noise by rounding noise
    assert np.isnan(sps.ttest_ind([2.0, 2.0], [2.0, 2.0, 2.0], equal_var=False).pvalue)
    assert welch_test([2.0, 2.0], [2.0, 2.0, 2.0]).p == 1.0


def test_welch_needs_two_runs_on_each_side():
    assert welch_test([1.0], [1.0, 2.0]) is None
    assert welch_test([1.0, 2.0], [3.0]) is None


# --------------------------------------------------------------------------- noise floor and power


def test_pooled_std_by_hand():
    # s² = 4 (n 3), 7 (n 3), 0.25 (n 3); a single run adds nothing
    got = pooled_std([[80, 82, 84], [85, 86, 90], [70, 70.5, 71], [99.0]])
    assert got == pytest.approx(math.sqrt((2 * 4 + 2 * 7 + 2 * 0.25) / 6))
    # unequal n: weights are the degrees of freedom
    assert pooled_std([[0, 2], [0, 3, 6, 9]]) == pytest.approx(math.sqrt((1 * 2 + 3 * 15) / 4))
    assert pooled_std([[1.0], [2.0]]) is None and pooled_std([]) is None


def test_power_of_the_t_test_matches_published_tables():
    # Cohen (1988) / G*Power, two-sided α = 0.05, two samples: d = 1 needs 17 per group,
    # d = 0.8 needs 26, d = 0.5 needs 64, d = 0.2 needs 394 (G*Power: total 788)
    assert [repeats_needed(d, 1.0) for d in (1.0, 0.8, 0.5, 0.2)] == [17, 26, 64, 394]
    assert power_two_sample(17, 1.0, 1.0) >= 0.8 > power_two_sample(16, 1.0, 1.0)
    assert power_two_sample(17, 1.0, 1.0) == pytest.approx(0.807, abs=1e-3)
    # the scale does not matter: only diff / sigma does
    assert repeats_needed(1.5, 3.0) == repeats_needed(0.5, 1.0) == 64


def test_power_at_zero_difference_is_alpha():
    assert power_two_sample(5, 0.0, 1.0) == pytest.approx(0.05)


def test_minimum_detectable_difference_is_where_the_power_reaches_80_percent():
    for n in (2, 3, 5, 10):
        d = minimum_detectable_difference(n, 2.0)
        assert power_two_sample(n, d, 2.0) == pytest.approx(0.8, abs=1e-9)
    assert minimum_detectable_difference(3, 1.0) == pytest.approx(3.0709, abs=1e-4)
    # the normal-approximation formula is smaller than the exact answer at small n, close at large n
    approx = (sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) * math.sqrt(2 / 3)
    assert approx == pytest.approx(2.2875, abs=1e-4) and approx < minimum_detectable_difference(3, 1.0)
    assert minimum_detectable_difference(200, 1.0) == pytest.approx(2.8016 * math.sqrt(2 / 200), rel=0.01)
    assert minimum_detectable_difference(1, 1.0) is None and minimum_detectable_difference(3, 0.0) == 0.0


def test_repeats_needed_edges():
    assert repeats_needed(0.0, 1.0) is None
    assert repeats_needed(0.3, 0.0) == 1
    assert repeats_needed(1e-6, 1.0, max_n=1000) is None
    n = repeats_needed(1.2, 0.6)  # the MDE at that n is at most the difference, one fewer is not enough
    assert minimum_detectable_difference(n, 0.6) <= 1.2 < minimum_detectable_difference(n - 1, 0.6)


# --------------------------------------------------------------------------- words


def test_verdicts():
    assert verdict(0.012) == "differs (p = 0.012)"
    assert verdict(0.0004) == "differs (p < 0.001)"
    assert verdict(0.0) == "differs (p < 0.001)"
    assert verdict(0.3) == verdict(1.0) == verdict(0.05) == "within noise"
    assert verdict(None) == ONE_SEED == "1 seed: no error bars"
    assert format_p(0.04996) == "p = 0.04996" and format_p(0.0504) == "p = 0.05"  # never rounds across α
    assert format_p(0.051) == "p = 0.051" and format_p(0.5) == "p = 0.5"
