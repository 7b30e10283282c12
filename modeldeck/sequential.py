"""Sequential statistics for experiments and the canary's gate: tests that stay valid however often you look.

A fixed-horizon test (a z or t test) is valid only if it is run once, at a sample size chosen in advance;
checked after every batch, an A/A experiment "finds" a winner far more often than alpha. The tests here are
*always valid* (Johari, Koomen, Pekelis & Walsh, "Always valid inference: continuous monitoring of A/B
tests", Operations Research 2022; arXiv:1512.04922): the mixture sequential probability ratio test (mSPRT).

For a difference ``theta = treatment - control`` estimated by ``d`` with variance ``V`` (the normal
approximation: ``V = var_a / n_a + var_b / n_b``), the likelihood ratio of ``theta`` against 0, mixed over a
normal prior ``theta ~ N(0, tau^2)``, is in closed form::

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2)))

Under ``theta = 0`` it is a non-negative martingale with mean 1, so by Ville's inequality
``P(Lambda ever >= 1/alpha) <= alpha``: ``p = min(1, 1/Lambda)`` is a p-value at *any* stopping time, and
``{theta: Lambda(theta) < 1/alpha}`` (``d`` plus or minus a closed-form radius) a confidence sequence.
The one-sided test ("treatment is greater", used by the canary's gate) mixes over a half-normal prior
on ``theta > 0``, which multiplies ``Lambda`` by ``2 Phi(tau d / sqrt(V (V + tau^2)))``.

The mixing scale ``tau`` is the effect size the test is tuned for: Johari et al. show the mSPRT is close to
optimal for effects near ``tau``, so an experiment passes its minimum detectable effect (``mixing_sd=mde``).
Without one, proportions use ``DEFAULT_MIXING_SD_PROPORTION`` (2 points) and means
``DEFAULT_MIXING_EFFECT_SIZE`` (0.2) pooled standard deviations, Cohen's "small" effect. A sequence of
scales mixes over all of them equally: an average of mixture ratios is still a martingale with mean 1, so the
test stays valid and is quick for small and large effects alike (the canary's gate does this).

The normal approximation is the one assumption: the martingale property holds for the limiting Gaussian
process (the variance is estimated, and the traffic split is roughly constant), so with a handful of
observations per arm the test is less conservative than its alpha share; the calibration tests and
``benchmarks/experiments.py`` measure the rates actually reached.

Everything is computed from sufficient statistics (counts, sums, sums of squares), so results merge across
shards and days, and from numpy and ``math`` only (this runs on Lambda, without scipy).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from modeldeck.stats import chi2_sf

DEFAULT_MIXING_SD_PROPORTION = 0.02
DEFAULT_MIXING_EFFECT_SIZE = 0.2
# The usual threshold for a sample-ratio mismatch: the SRM check runs on every look at an experiment, and
# at 0.001 a healthy split is flagged about once in a thousand looks while a real mismatch of a point or
# more on tens of thousands of units still has p far below it (Fabijan et al., "Diagnosing sample ratio
# mismatch in online controlled experiments", KDD 2019).
SRM_THRESHOLD = 0.001
OUTCOMES = ("continue", "winner", "futility", "max-duration", "srm")
ALTERNATIVES = ("two-sided", "greater", "less")


@dataclass(frozen=True)
class Comparison:
    """One challenger (treatment) against the champion (control) on one metric.

    ``effect`` is ``treatment_mean - control_mean`` (absolute). ``p_value``, ``ci_low`` and ``ci_high`` are
    always valid (the mSPRT's p-value and confidence sequence at ``alpha``); the ``fixed_*`` figures are the
    fixed-horizon cross-check (a two-proportion z test, or Welch's t test), valid only for one look.
    """

    metric: str
    control: str
    treatment: str
    control_mean: float
    treatment_mean: float
    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    fixed_p_value: float
    fixed_ci_low: float
    fixed_ci_high: float
    n_control: int = 0
    n_treatment: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The comparison as a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class Srm:
    """A sample-ratio-mismatch check: Pearson's chi-square of the assignment counts against the weights."""

    chi2: float
    dof: int
    p_value: float
    mismatch: bool
    observed: tuple[int, ...] = ()
    expected: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The check as a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class Decision:
    """What to do with an experiment now: ``outcome`` is one of ``OUTCOMES``; ``winner`` names the variant
    to keep or promote (the champion when the challengers are worse), or ``None``; ``reason`` is a sentence."""

    outcome: str
    winner: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """The decision as a JSON-ready dict."""
        return asdict(self)


# ---------------------------------------------------------------------------------------------- normal law


def _erfc(x: np.ndarray) -> np.ndarray:
    """Complementary error function, vectorized (Numerical Recipes' Chebyshev fit, relative error < 1.2e-7)."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = (
        -z * z
        - 1.26551223
        + t
        * (
            1.00002368
            + t
            * (
                0.37409196
                + t
                * (
                    0.09678418
                    + t
                    * (
                        -0.18628806
                        + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))
                    )
                )
            )
        )
    )
    ans = t * np.exp(poly)
    return np.where(x >= 0, ans, 2.0 - ans)


def normal_cdf(x: Any) -> Any:
    """Standard normal CDF, vectorized over numpy arrays (scalars give a float)."""
    if np.ndim(x) == 0:
        return 0.5 * math.erfc(-float(x) / math.sqrt(2))
    return 0.5 * _erfc(-np.asarray(x, np.float64) / math.sqrt(2))


def normal_ppf(q: float) -> float:
    """Standard normal quantile (Acklam's rational approximation, refined by one Halley step on erfc)."""
    if not 0 < q < 1:
        raise ValueError(f"a quantile needs 0 < q < 1, got {q}")
    a = (
        -3.969683028665376e01,
        2.209460984245205e02,
        -2.759285104469687e02,
        1.383577518672690e02,
        -3.066479806614716e01,
        2.506628277459239e00,
    )
    b = (
        -5.447609879822406e01,
        1.615858368580409e02,
        -1.556989798598866e02,
        6.680131188771972e01,
        -1.328068155288572e01,
    )
    c = (
        -7.784894002430293e-03,
        -3.223964580411365e-01,
        -2.400758277161838e00,
        -2.549732539343734e00,
        4.374664141464968e00,
        2.938163982698783e00,
    )
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    if q < 0.02425:
        r = math.sqrt(-2 * math.log(q))
        x = (((((c[0] * r + c[1]) * r + c[2]) * r + c[3]) * r + c[4]) * r + c[5]) / (
            (((d[0] * r + d[1]) * r + d[2]) * r + d[3]) * r + 1
        )
    elif q > 1 - 0.02425:
        r = math.sqrt(-2 * math.log(1 - q))
        x = -(((((c[0] * r + c[1]) * r + c[2]) * r + c[3]) * r + c[4]) * r + c[5]) / (
            (((d[0] * r + d[1]) * r + d[2]) * r + d[3]) * r + 1
        )
    else:
        r = q - 0.5
        s = r * r
        x = (
            (((((a[0] * s + a[1]) * s + a[2]) * s + a[3]) * s + a[4]) * s + a[5])
            * r
            / (((((b[0] * s + b[1]) * s + b[2]) * s + b[3]) * s + b[4]) * s + 1)
        )
    e = 0.5 * math.erfc(-x / math.sqrt(2)) - q
    u = e * math.sqrt(2 * math.pi) * math.exp(x * x / 2)
    return x - u / (1 + x * u / 2)


# ------------------------------------------------------------------------------------------- Student's t


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (tiny if abs(d) < tiny else d)
    h = d
    for m in range(1, 10000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1 + aa * d
        d = 1 / (tiny if abs(d) < tiny else d)
        c = 1 + aa / c
        c = tiny if abs(c) < tiny else c
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1 + aa * d
        d = 1 / (tiny if abs(d) < tiny else d)
        c = 1 + aa / c
        c = tiny if abs(c) < tiny else c
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta ``I_x(a, b)`` (``scipy.special.betainc``)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1 - front * _betacf(b, a, 1 - x) / b


def t_sf(t: float, df: float) -> float:
    """Survival function of Student's t with ``df`` (possibly fractional) degrees of freedom
    (``scipy.stats.t.sf``), exact through the incomplete beta function."""
    if not math.isfinite(df) or df > 1e7:
        return 0.5 * math.erfc(t / math.sqrt(2))
    tail = 0.5 * _betainc(df / 2, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1 - tail


def t_ppf(q: float, df: float) -> float:
    """Quantile of Student's t (``scipy.stats.t.ppf``): Newton's method on ``t_sf`` from the normal quantile,
    with bisection as the fallback, to a relative 1e-12."""
    if q == 0.5:
        return 0.0
    if q < 0.5:
        return -t_ppf(1 - q, df)
    if not math.isfinite(df) or df > 1e7:
        return normal_ppf(q)
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    x = max(normal_ppf(q), 1e-3)
    for _ in range(50):
        pdf = math.exp(log_norm - (df + 1) / 2 * math.log1p(x * x / df))
        step = (t_sf(x, df) - (1 - q)) / pdf
        nxt = x + step
        if not math.isfinite(nxt) or nxt <= 0:
            break
        if abs(step) <= 1e-13 * nxt:
            return nxt
        x = nxt
    lo, hi = 0.0, max(1.0, normal_ppf(q)) * 2
    while t_sf(hi, df) > 1 - q:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_sf(mid, df) > 1 - q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * hi:
            break
    return (lo + hi) / 2


# --------------------------------------------------------------------------------------------------- mSPRT


def msprt_log_lr(estimate: Any, variance: Any, tau2: Any, alternative: str = "two-sided") -> Any:
    """log Lambda, the mSPRT's mixture likelihood ratio against "no difference", vectorized over numpy
    arrays (see the module docstring); 0 where the variance is zero or not finite (no data yet)."""
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    d = np.asarray(estimate, np.float64)
    v = np.asarray(variance, np.float64)
    ok = np.isfinite(v) & (v > 0) & np.isfinite(d)
    v = np.where(ok, v, 1.0)
    d = np.where(ok, d, 0.0)
    tau2 = np.asarray(tau2, np.float64)
    log_lr = 0.5 * np.log(v / (v + tau2)) + tau2 * d * d / (2 * v * (v + tau2))
    if alternative != "two-sided":
        sign = 1.0 if alternative == "greater" else -1.0
        z = sign * d * np.sqrt(tau2 / (v * (v + tau2)))
        log_lr = log_lr + np.log(2.0) + _log_normal_cdf(z)
    return np.where(ok, log_lr, 0.0)


def msprt_p_value(estimate: Any, variance: Any, tau2: Any, alternative: str = "two-sided") -> Any:
    """The mSPRT's always-valid p-value, ``min(1, 1/Lambda)``, vectorized over numpy arrays.

    ``estimate`` is the observed difference, ``variance`` its variance, ``tau2`` the mixing variance.
    ``alternative`` "greater" tests ``theta > 0`` (half-normal mixture), "less" ``theta < 0``.
    A zero or non-finite variance (no data yet) gives p = 1.
    """
    log_lr = msprt_log_lr(estimate, variance, tau2, alternative)
    p = np.minimum(1.0, np.exp(-np.minimum(log_lr, 700.0)))
    return float(p) if p.ndim == 0 else p


def _mixture(
    estimate: float, p_var: float, ci_var: float, scales: Sequence[float], alpha: float, alternative: str
) -> tuple[float, float, float]:
    """p-value and confidence sequence of an equal-weight mixture over several mixing scales.

    An average of mixture likelihood ratios is itself a mixture likelihood ratio (a martingale with mean 1
    under the null), so ``1 / mean(Lambda)`` is still always valid, and it is never worse than the best
    scale by more than a factor ``k`` in Lambda: a test that is quick for small *and* large effects. The
    confidence sequence intersects the ``k`` sequences at ``alpha / k`` each (a union bound)."""
    # Scalar math, not numpy: a canary's gate runs these on every look, and 0-d arrays cost more than the sums.
    if not (math.isfinite(p_var) and p_var > 0 and math.isfinite(estimate)):
        p = 1.0
    else:
        total = 0.0
        for t in scales:
            tau2 = t * t
            log_lr = 0.5 * math.log(p_var / (p_var + tau2)) + tau2 * estimate**2 / (2 * p_var * (p_var + tau2))
            if alternative != "two-sided":
                z = (1.0 if alternative == "greater" else -1.0) * estimate * math.sqrt(tau2 / (p_var * (p_var + tau2)))
                tail = _log_normal_cdf(np.asarray(z)) if z < -37 else math.log(0.5 * math.erfc(-z / math.sqrt(2)))
                log_lr += math.log(2.0) + float(tail)
            total += math.exp(min(log_lr, 700.0))
        p = min(1.0, len(scales) / total)
    if not (math.isfinite(ci_var) and ci_var > 0):
        return p, -math.inf, math.inf
    level = 2 * math.log(len(scales) / alpha)
    radius = min(
        math.sqrt(ci_var * (ci_var + t * t) / (t * t) * (level + math.log((ci_var + t * t) / ci_var))) for t in scales
    )
    return p, estimate - radius, estimate + radius


def _log_normal_cdf(z: np.ndarray) -> np.ndarray:
    """log Phi(z), accurate in the far left tail (Mills' ratio asymptote) where Phi underflows."""
    z = np.asarray(z, np.float64)
    safe = np.maximum(z, -37.0)
    direct = np.log(np.maximum(np.asarray(normal_cdf(safe), np.float64), 1e-300))
    zz = np.minimum(z, -37.0)
    tail = -zz * zz / 2 - np.log(-zz) - 0.5 * math.log(2 * math.pi) + np.log1p(-1 / (zz * zz))
    return np.where(z < -37.0, tail, direct)


def confidence_sequence(estimate: Any, variance: Any, tau2: Any, alpha: float = 0.05) -> tuple[Any, Any]:
    """The mSPRT's (two-sided) confidence sequence at level ``1 - alpha``: ``estimate`` plus or minus
    ``sqrt(V (V + tau^2) / tau^2 * (2 log(1/alpha) + log((V + tau^2) / V)))``. Vectorized."""
    d = np.asarray(estimate, np.float64)
    v = np.asarray(variance, np.float64)
    tau2 = np.asarray(tau2, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        radius = np.sqrt(v * (v + tau2) / tau2 * (2 * math.log(1 / alpha) + np.log((v + tau2) / v)))
    radius = np.where(np.isfinite(radius) & (v > 0), radius, np.inf)
    low, high = d - radius, d + radius
    if low.ndim == 0:
        return float(low), float(high)
    return low, high


# ---------------------------------------------------------------------------------------------- comparisons


def _scales(mixing_sd: float | Sequence[float]) -> tuple[float, ...]:
    return (float(mixing_sd),) if isinstance(mixing_sd, (int, float)) else tuple(float(t) for t in mixing_sd)


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")


def compare_proportions(
    successes_a: int,
    n_a: int,
    successes_b: int,
    n_b: int,
    *,
    alpha: float = 0.05,
    names: tuple[str, str] = ("A", "B"),
    metric: str = "conversion",
    mixing_sd: float | Sequence[float] | None = None,
    alternative: str = "two-sided",
    fixed: bool = True,
) -> Comparison:
    """Compare the rates ``successes_b / n_b`` (treatment, ``names[1]``) and ``successes_a / n_a`` (control).

    Sequential: the mSPRT on the difference of proportions, mixing scale ``mixing_sd`` (absolute, default 2
    points); its p-value uses the pooled variance ``p (1 - p) (1/n_a + 1/n_b)`` (the variance under "equal
    rates"), its confidence sequence the unpooled ``p_a (1 - p_a) / n_a + p_b (1 - p_b) / n_b``. A sequence
    of mixing scales mixes over all of them, equally weighted (quick for small and large effects alike).
    ``alternative`` "greater" / "less" make the test one-sided. ``fixed=False`` skips the fixed-horizon
    figures (NaN), for callers that look often and never read them (the canary's gate).
    Fixed horizon: the two-proportion z test with the pooled variance (``statsmodels``'
    ``proportions_ztest``) and a Wald interval for the difference.
    """
    _check_alpha(alpha)
    for s, n in ((successes_a, n_a), (successes_b, n_b)):
        if n < 0 or s < 0 or s > n:
            raise ValueError(f"successes must lie between 0 and n, got {s} of {n}")
    pa = successes_a / n_a if n_a else 0.0
    pb = successes_b / n_b if n_b else 0.0
    effect = pb - pa
    var = pa * (1 - pa) / n_a + pb * (1 - pb) / n_b if n_a and n_b else math.inf
    pooled = (successes_a + successes_b) / (n_a + n_b) if n_a and n_b else 0.0
    pooled_var = pooled * (1 - pooled) * (1 / n_a + 1 / n_b) if n_a and n_b else math.inf
    scales = _scales(DEFAULT_MIXING_SD_PROPORTION if mixing_sd is None else mixing_sd)
    # The p-value tests "equal rates", so it uses the variance under that hypothesis (pooled): it stays
    # positive when one arm is all 0s and the other all 1s (a candidate failing every request), where the
    # unpooled variance is 0. The interval is around the observed rates (unpooled; pooled when that is 0).
    p_value, low, high = _mixture(effect, pooled_var, var if var > 0 else pooled_var, scales, alpha, alternative)
    if not fixed:
        fixed_p, half = math.nan, math.nan
    elif n_a and n_b:
        z = effect / math.sqrt(pooled_var) if pooled_var > 0 else 0.0
        fixed_p = _normal_p(z, alternative)
        half = normal_ppf(1 - alpha / 2) * math.sqrt(var)
    else:
        fixed_p, half = 1.0, math.inf
    return Comparison(
        metric,
        names[0],
        names[1],
        pa,
        pb,
        effect,
        low,
        high,
        p_value,
        fixed_p,
        effect - half,
        effect + half,
        int(n_a),
        int(n_b),
    )


def _normal_p(z: float, alternative: str) -> float:
    if alternative == "greater":
        return 0.5 * math.erfc(z / math.sqrt(2))
    if alternative == "less":
        return 0.5 * math.erfc(-z / math.sqrt(2))
    return math.erfc(abs(z) / math.sqrt(2))


def mean_and_variance(n: int, total: float, sumsq: float) -> tuple[float, float]:
    """Mean and (n - 1) sample variance from sufficient statistics; the variance is 0 below two values."""
    if n <= 0:
        return 0.0, 0.0
    mean = total / n
    var = max(0.0, (sumsq - n * mean * mean) / (n - 1)) if n > 1 else 0.0
    return mean, var


def compare_means(
    n_a: int,
    sum_a: float,
    sumsq_a: float,
    n_b: int,
    sum_b: float,
    sumsq_b: float,
    *,
    alpha: float = 0.05,
    names: tuple[str, str] = ("A", "B"),
    metric: str = "value",
    mixing_sd: float | Sequence[float] | None = None,
    alternative: str = "two-sided",
    fixed: bool = True,
) -> Comparison:
    """Compare the means of a numeric outcome from sufficient statistics (count, sum, sum of squares).

    Sequential: the mSPRT on the difference of means, normal approximation with ``V = s_a^2/n_a + s_b^2/n_b``,
    mixing scale ``mixing_sd`` (default 0.2 pooled standard deviations). Fixed horizon: Welch's t test with
    the Welch-Satterthwaite degrees of freedom and the exact t distribution (``scipy.stats.ttest_ind``
    with ``equal_var=False``), and its confidence interval. ``mixing_sd`` and ``fixed`` are as in
    ``compare_proportions``.
    """
    _check_alpha(alpha)
    ma, va = mean_and_variance(n_a, sum_a, sumsq_a)
    mb, vb = mean_and_variance(n_b, sum_b, sumsq_b)
    effect = mb - ma
    if n_a > 1 and n_b > 1 and (va > 0 or vb > 0):
        ea, eb = va / n_a, vb / n_b
        var = ea + eb
        df = var * var / (ea * ea / (n_a - 1) + eb * eb / (n_b - 1))
        if fixed:
            t = effect / math.sqrt(var)
            sf = t_sf(abs(t), df)
            fixed_p = {"two-sided": 2 * sf, "greater": t_sf(t, df), "less": t_sf(-t, df)}[alternative]
            half = t_ppf(1 - alpha / 2, df) * math.sqrt(var)
        else:
            fixed_p, half = math.nan, math.nan
        pooled_sd = math.sqrt(((n_a - 1) * va + (n_b - 1) * vb) / (n_a + n_b - 2))
    else:
        var, fixed_p, half, pooled_sd = math.inf, 1.0, math.inf, 0.0
    scales = _scales(DEFAULT_MIXING_EFFECT_SIZE * pooled_sd if mixing_sd is None else mixing_sd)
    if min(scales) > 0:
        p_value, low, high = _mixture(effect, var, var, scales, alpha, alternative)
    else:
        p_value, low, high = 1.0, -math.inf, math.inf
    return Comparison(
        metric,
        names[0],
        names[1],
        ma,
        mb,
        effect,
        low,
        high,
        p_value,
        fixed_p if math.isnan(fixed_p) else min(1.0, fixed_p),
        effect - half,
        effect + half,
        int(n_a),
        int(n_b),
    )


# ------------------------------------------------------------------------------------------------------ SRM


def srm(counts: Sequence[int], weights: Sequence[float], *, threshold: float = SRM_THRESHOLD) -> Srm:
    """Sample-ratio mismatch: Pearson's chi-square goodness of fit of the assignment ``counts`` to the
    traffic ``weights`` (normalized), ``k - 1`` degrees of freedom (``scipy.stats.chisquare``); the split is
    broken (``mismatch``) when ``p < threshold``."""
    if len(counts) != len(weights) or len(counts) < 2:
        raise ValueError("srm needs one count per weight, for at least two variants")
    w = np.asarray(weights, np.float64)
    if (w <= 0).any() or not np.isfinite(w).all():
        raise ValueError(f"weights must be positive, got {list(weights)}")
    observed = np.asarray(counts, np.float64)
    total = observed.sum()
    if total <= 0:
        return Srm(0.0, len(counts) - 1, 1.0, False, tuple(int(c) for c in counts), tuple(0.0 for _ in counts))
    expected = total * w / w.sum()
    stat = float(np.sum((observed - expected) ** 2 / expected))
    dof = len(counts) - 1
    p = chi2_sf(stat, dof)
    return Srm(stat, dof, p, p < threshold, tuple(int(c) for c in counts), tuple(float(e) for e in expected))


# ---------------------------------------------------------------------------------------------- sample size


def _check_power(alpha: float, power: float, mde: float) -> None:
    _check_alpha(alpha)
    if not 0 < power < 1:
        raise ValueError(f"power must be between 0 and 1, got {power}")
    if not mde > 0:
        raise ValueError(f"the minimum detectable effect must be positive, got {mde}")


def fixed_sample_size_proportions(baseline: float, mde: float, *, alpha: float = 0.05, power: float = 0.8) -> int:
    """Units per variant for a two-sided two-proportion z test to detect ``baseline -> baseline + mde``
    with the given power: the arcsine (Cohen's h) formula of ``statsmodels``' ``NormalIndPower``."""
    _check_power(alpha, power, mde)
    if not 0 < baseline < 1 or not 0 < baseline + mde < 1:
        raise ValueError(f"the baseline rate and baseline + mde must lie in (0, 1), got {baseline} and {mde}")
    h = 2 * math.asin(math.sqrt(baseline + mde)) - 2 * math.asin(math.sqrt(baseline))
    z = normal_ppf(1 - alpha / 2) + normal_ppf(power)
    return math.ceil(2 * (z / h) ** 2)


def fixed_sample_size_means(sd: float, mde: float, *, alpha: float = 0.05, power: float = 0.8) -> int:
    """Units per variant for a two-sided two-sample z test on means (``NormalIndPower`` with effect size
    ``mde / sd``)."""
    _check_power(alpha, power, mde)
    if not sd > 0:
        raise ValueError(f"the standard deviation must be positive, got {sd}")
    z = normal_ppf(1 - alpha / 2) + normal_ppf(power)
    return math.ceil(2 * (z * sd / mde) ** 2)


def _sequential_n(sd_pair: Any, mde: float, alpha: float, power: float, tau2: float, start: int) -> int:
    """The smallest n per variant at which the confidence sequence excludes 0 with probability ``power``
    when the true difference is ``mde``: ``P(d - radius(V_n) > 0) = Phi((mde - radius) / sqrt(V_n))``.
    Crossing earlier only adds detections, so this n is a (slightly conservative) sample size for the
    sequential test. ``sd_pair(n)`` gives ``V_n``."""
    zb = normal_ppf(power)

    def met(n: int) -> bool:
        v = sd_pair(n)
        _, high = confidence_sequence(0.0, v, tau2, alpha)
        return (mde - high) / math.sqrt(v) >= zb

    hi = max(2, start)
    while not met(hi):
        hi *= 2
    lo = hi // 2 if hi > 2 else 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if met(mid):
            hi = mid
        else:
            lo = mid
    return hi


def sample_size_proportions(
    baseline: float, mde: float, *, alpha: float = 0.05, power: float = 0.8, mixing_sd: float | None = None
) -> int:
    """Minimum units per variant for an experiment on a rate: the n at which the always-valid test
    (``compare_proportions`` with ``mixing_sd``, default ``mde``) detects ``baseline -> baseline + mde``
    with probability ``power``. It is larger than the fixed-horizon n (``fixed_sample_size_proportions``),
    the price of looking whenever you like."""
    fixed = fixed_sample_size_proportions(baseline, mde, alpha=alpha, power=power)
    pa, pb = baseline, baseline + mde
    tau = mde if mixing_sd is None else mixing_sd
    return _sequential_n(lambda n: (pa * (1 - pa) + pb * (1 - pb)) / n, mde, alpha, power, tau * tau, fixed)


def sample_size_means(
    sd: float, mde: float, *, alpha: float = 0.05, power: float = 0.8, mixing_sd: float | None = None
) -> int:
    """Minimum units per variant for an experiment on a mean with standard deviation ``sd``: the n at which
    the always-valid test (``compare_means`` with ``mixing_sd``, default ``mde``) detects a difference of
    ``mde`` with probability ``power`` (see ``sample_size_proportions``)."""
    fixed = fixed_sample_size_means(sd, mde, alpha=alpha, power=power)
    tau = mde if mixing_sd is None else mixing_sd
    return _sequential_n(lambda n: 2 * sd * sd / n, mde, alpha, power, tau * tau, fixed)


# --------------------------------------------------------------------------------------------------- decide


def _when(value: datetime | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def decide(
    comparisons: Sequence[Comparison],
    *,
    units: Mapping[str, int],
    min_units: int,
    started_at: datetime | str,
    now: datetime | str,
    max_days: float,
    alpha: float = 0.05,
    srm_result: Srm | None = None,
    mde: float | None = None,
    higher_is_better: bool = True,
) -> Decision:
    """Decide an experiment from its comparisons (each challenger against the champion, one metric).

    In order:
    - ``srm``: the split is broken (``srm_result.mismatch``); no winner is ever declared on a broken split.
    - ``winner``: a challenger's always-valid p-value is below ``alpha / k`` (Bonferroni over the ``k``
      challengers) and its effect is favourable (the largest such effect wins); if instead every challenger
      is significantly *worse*, the winner is the champion (keep it).
    - ``futility``: every variant has ``min_units`` units and no challenger can still be better by the MDE:
      each confidence sequence's favourable bound is below ``mde`` (``ci_high < mde``, or ``ci_low > -mde``
      when lower is better). Without ``mde``, reaching ``min_units`` (the sample size that has the requested
      power at the MDE) without a winner is futility.
    - ``max-duration``: ``max_days`` have passed since ``started_at``.
    - ``continue`` otherwise.
    """
    _check_alpha(alpha)
    if srm_result is not None and srm_result.mismatch:
        return Decision(
            "srm",
            None,
            f"sample ratio mismatch: assignment counts {list(srm_result.observed)} do not match the weights "
            f"(chi-square {srm_result.chi2:.1f}, p = {srm_result.p_value:.2g}); fix the split before reading results",
        )
    if not comparisons:
        raise ValueError("decide needs at least one comparison")
    level = alpha / len(comparisons)
    sign = 1.0 if higher_is_better else -1.0
    better = [c for c in comparisons if c.p_value < level and sign * c.effect > 0]
    worse = [c for c in comparisons if c.p_value < level and sign * c.effect < 0]
    if better:
        best = max(better, key=lambda c: sign * c.effect)
        return Decision(
            "winner",
            best.treatment,
            f"{best.treatment} beats {best.control} on {best.metric}: {best.treatment_mean:.4g} vs "
            f"{best.control_mean:.4g} (effect {best.effect:+.4g}, always-valid p = {best.p_value:.2g} < {level:.3g})",
        )
    if len(worse) == len(comparisons):
        champion = comparisons[0].control
        ps = ", ".join(f"{c.treatment} p = {c.p_value:.2g}" for c in worse)
        return Decision(
            "winner",
            champion,
            f"every challenger is worse than {champion} on {comparisons[0].metric} ({ps}); keep the champion",
        )
    if units and min(units.values()) >= min_units:
        if mde is None:
            futile = True
        elif higher_is_better:
            futile = all(c.ci_high < mde for c in comparisons)
        else:
            futile = all(c.ci_low > -mde for c in comparisons)
        if futile:
            return Decision(
                "futility",
                None,
                f"every variant reached {min_units} units and no challenger can still beat the champion"
                + (f" by the minimum detectable effect ({mde:g})" if mde is not None else " at the planned power"),
            )
    elapsed = (_when(now) - _when(started_at)).total_seconds() / 86400
    if elapsed >= max_days:
        return Decision("max-duration", None, f"the experiment reached its maximum duration ({max_days:g} days)")
    return Decision("continue", None, "no decision yet: keep collecting")
