"""Seed statistics for repeated runs: summaries, Welch's t-test, the noise floor, power.

A study with ``repeats: N`` trains every configuration N times with seeds ``train.seed +
r``. Whether one configuration beats another is then a question about two small samples,
and everything the readers say about it comes from the pure functions here (no I/O, no
globals; scipy.stats does the distributions):

* :func:`summarize` — n, mean, sample standard deviation and the 95 % Student-t
  interval of the mean of one configuration's runs.
* :func:`welch_test` — the difference of two configurations' means, its 95 % interval
  (Welch–Satterthwaite degrees of freedom) and the two-sided p-value, as
  ``scipy.stats.ttest_ind(equal_var=False)`` computes them.
* :func:`pooled_std` — the seed-to-seed standard deviation pooled over configurations:
  the study's noise floor.
* :func:`minimum_detectable_difference` and :func:`repeats_needed` — the smallest true
  difference a two-sided two-sample t-test with n runs per configuration detects with
  the given power, and the n a difference needs. Both are exact: the power of the
  t-test comes from the noncentral t distribution (``scipy.stats.nct``), not from the
  normal approximation ``(z_{1-α/2} + z_{power}) σ √(2/n)``, which promises too much
  at the handful of seeds a study can afford (at n = 3 it gives 2.29 σ, the exact answer
  is 3.07 σ).

Samples whose values are all identical (a FLOP count, which does not depend on the seed)
are *constant*: their standard deviation is 0 and their interval is the point ``[x, x]``.
Two constant samples have no noise at all, so Welch's statistic is 0/0; the rule here is
that identical constants do not differ (p = 1, difference interval ``[0, 0]``) and
different constants differ with certainty (p = 0, interval ``[d, d]``). scipy returns NaN
for both cases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Summary", "Comparison", "summarize", "welch_test", "pooled_std", "power_two_sample",
           "minimum_detectable_difference", "repeats_needed", "verdict", "format_p", "ALPHA", "POWER",
           "ONE_SEED"]

#: Significance level of every test and interval the readers print (two-sided).
ALPHA = 0.05
#: Power at which the readers state the minimum detectable difference.
POWER = 0.8
#: What every output says where a configuration has a single run.
ONE_SEED = "1 seed: no error bars"


@dataclass(frozen=True)
class Summary:
    """One sample (one configuration's runs) in numbers.

    Attributes:
        n: Number of values.
        mean: Their mean.
        std: Sample standard deviation (ddof = 1); None for n = 1, where it is undefined.
        ci95: ``(lo, hi)``: the 95 % Student-t interval of the mean, ``mean ± t_{0.975,
            n-1} · std / √n``; None for n = 1. A constant sample's is ``(mean, mean)``.
        constant: Every value is the same (std 0): a deterministic quantity, shown once.
    """

    n: int
    mean: float
    std: float | None
    ci95: tuple[float, float] | None
    constant: bool

    @property
    def half_width(self) -> float | None:
        """Half the interval's width (the "±" a table prints), None without an interval."""
        return None if self.ci95 is None else (self.ci95[1] - self.ci95[0]) / 2


@dataclass(frozen=True)
class Comparison:
    """Welch's t-test of two samples ``a`` and ``b``.

    Attributes:
        diff: ``mean(a) - mean(b)``.
        ci95: 95 % interval of the difference (Welch–Satterthwaite degrees of freedom).
        p: Two-sided p-value of "the means are equal".
        df: The Welch–Satterthwaite degrees of freedom (None when both samples are constant).
    """

    diff: float
    ci95: tuple[float, float]
    p: float
    df: float | None


def _values(values: Sequence[float]) -> list[float]:
    out = [float(v) for v in values]
    if any(math.isnan(v) or math.isinf(v) for v in out):
        raise ValueError(f"sample values must be finite numbers, got {values!r}")
    return out


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """n, mean, sample std and Student-t interval of the mean of ``values``.

    The t interval (not a normal one) because a study has a handful of seeds: at n = 3 the
    t quantile is 4.30, not 1.96, and a normal interval would be less than half as wide
    as it must be.

    Args:
        values: The runs of one configuration (at least one).
        confidence: Coverage of the interval.

    Raises:
        ValueError: no values, or a value that is not finite.
    """
    from scipy import stats

    xs = _values(values)
    n = len(xs)
    if n == 0:
        raise ValueError("summarize needs at least one value")
    constant = all(x == xs[0] for x in xs)
    if constant:  # exact: no rounding from summing n copies
        return Summary(n=n, mean=xs[0], std=0.0 if n > 1 else None, ci95=(xs[0], xs[0]) if n > 1 else None,
                       constant=n > 1)
    mean = math.fsum(xs) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return Summary(n=n, mean=mean, std=std, ci95=(mean - half, mean + half), constant=False)


def welch_test(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Comparison | None:
    """Welch's unequal-variance t-test of ``mean(a) - mean(b)``.

    Welch's rather than Student's because two configurations need not have the same seed
    noise (a deeper model can be steadier). The interval is ``d ± t_{0.975, ν} · se`` with
    ``se = √(s_a²/n_a + s_b²/n_b)`` and the Welch–Satterthwaite ν; the p-value is the
    two-sided tail of ``d / se`` under t with ν degrees of freedom. Both agree with
    ``scipy.stats.ttest_ind(a, b, equal_var=False)``.

    Zero variance in both samples (see the module docstring): equal constants give
    p = 1 and the interval ``[0, 0]``; different constants give p = 0 and ``[d, d]``.
    One constant sample is ordinary Welch (its variance term is 0).

    Returns:
        None when either sample has fewer than 2 values: one run carries no estimate of
        its noise, and no test is possible.
    """
    from scipy import stats

    xa, xb = _values(a), _values(b)
    if len(xa) < 2 or len(xb) < 2:
        return None
    sa, sb = summarize(xa), summarize(xb)
    diff = sa.mean - sb.mean
    va, vb = sa.std ** 2 / sa.n, sb.std ** 2 / sb.n  # type: ignore[operator]
    se2 = va + vb
    if se2 == 0.0:
        return Comparison(diff=diff, ci95=(diff, diff), p=1.0 if diff == 0 else 0.0, df=None)
    df = se2 ** 2 / ((va ** 2 / (sa.n - 1) if va else 0.0) + (vb ** 2 / (sb.n - 1) if vb else 0.0))
    se = math.sqrt(se2)
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    p = float(2 * stats.t.sf(abs(diff) / se, df))
    return Comparison(diff=diff, ci95=(diff - half, diff + half), p=min(p, 1.0), df=df)


def pooled_std(samples: Sequence[Sequence[float]]) -> float | None:
    """The seed-to-seed standard deviation pooled over configurations.

    ``√(Σ (n_i - 1) s_i² / Σ (n_i - 1))`` over the samples with n_i ≥ 2: each
    configuration's spread around its own mean, so differences between configurations do
    not count as noise. None when no sample has two values.
    """
    num = dof = 0.0
    for sample in samples:
        xs = _values(sample)
        if len(xs) < 2:
            continue
        s = summarize(xs)
        num += (s.n - 1) * (s.std or 0.0) ** 2
        dof += s.n - 1
    return math.sqrt(num / dof) if dof else None


def power_two_sample(n: int, diff: float, sigma: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided two-sample t-test (n per group, common σ) to detect ``diff``.

    Exact: under the alternative ``t = d̂ / (s √(2/n))`` follows a noncentral t with
    ``2n - 2`` degrees of freedom and noncentrality ``δ = diff / (σ √(2/n))``; the power
    is the probability that ``|t|`` exceeds the two-sided critical value.

    Raises:
        ValueError: n < 2 or sigma <= 0.
    """
    from scipy import stats

    if n < 2:
        raise ValueError(f"a two-sample t-test needs n >= 2 per group, got {n=}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma=}")
    df = 2 * n - 2
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    delta = abs(diff) / (sigma * math.sqrt(2.0 / n))
    upper = float(stats.nct.sf(crit, df, delta))
    lower = float(stats.nct.sf(crit, df, -delta))  # P(t < -crit), by symmetry; nct.cdf gives NaN far out
    return (upper if not math.isnan(upper) else 1.0) + (lower if not math.isnan(lower) else 0.0)


def minimum_detectable_difference(n: int, sigma: float, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """The smallest true difference of means that n runs per configuration detect.

    Solves :func:`power_two_sample` ``(n, d, σ, α) = power`` for d with a root finder
    (Brent's method on the exact noncentral-t power, which rises monotonically in d).
    With α = 0.05 and power 0.8: 5.65 σ at n = 2, 3.07 σ at n = 3, 2.02 σ at n = 5, 0.99 σ at n = 17.

    Returns:
        None for n < 2 (no test is possible); 0.0 for σ = 0 (noise-free: any difference shows).
    """
    from scipy.optimize import brentq

    if n < 2:
        return None
    if sigma == 0:
        return 0.0
    if not sigma > 0:
        raise ValueError(f"sigma must be >= 0, got {sigma=}")
    if not alpha < power < 1:
        raise ValueError(f"power must lie in (alpha, 1), got {power=} with {alpha=}")
    hi = sigma
    while power_two_sample(n, hi, sigma, alpha) < power:
        hi *= 2
    return float(brentq(lambda d: power_two_sample(n, d, sigma, alpha) - power, 0.0, hi, xtol=1e-12 * sigma,
                        rtol=1e-12))


def repeats_needed(diff: float, sigma: float, alpha: float = ALPHA, power: float = POWER,
                   max_n: int = 100_000) -> int | None:
    """The smallest number of runs per configuration that detects ``diff`` with ``power``.

    The answer to "how many seeds before I can tell a 0.5-point gain from noise": the
    smallest n ≥ 2 with :func:`power_two_sample` ``(n, diff, σ, α) >= power`` (exact,
    noncentral t). σ = 0 (no seed noise) needs 1 run for any nonzero difference.

    Returns:
        None when ``diff`` is 0 (never detectable) or more than ``max_n`` runs are needed.
    """
    if diff == 0:
        return None
    if sigma == 0:
        return 1
    if not sigma > 0:
        raise ValueError(f"sigma must be >= 0, got {sigma=}")
    if power_two_sample(max_n, diff, sigma, alpha) < power:
        return None
    lo, hi = 2, 2
    while power_two_sample(hi, diff, sigma, alpha) < power:  # power rises with n: bracket, then bisect
        lo, hi = hi, min(hi * 2, max_n)
    if power_two_sample(lo, diff, sigma, alpha) >= power:
        return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if power_two_sample(mid, diff, sigma, alpha) >= power:
            hi = mid
        else:
            lo = mid
    return hi


def format_p(p: float, alpha: float = ALPHA) -> str:
    """``"p = 0.012"`` (two significant digits, more when rounding would cross α), ``"p < 0.001"``."""
    if p < 0.001:
        return "p < 0.001"
    for digits in range(2, 8):
        text = f"{p:.{digits}g}"
        if (float(text) < alpha) == (p < alpha):
            break
    return f"p = {text}"


def verdict(p: float | None, alpha: float = ALPHA) -> str:
    """What a table says about a difference: ``"differs (p = 0.012)"``, ``"within noise"``,
    or :data:`ONE_SEED` when there was no test (a configuration with one run)."""
    if p is None:
        return ONE_SEED
    return f"differs ({format_p(p, alpha)})" if p < alpha else "within noise"
