"""modeldeck.sequential: calibration by simulation (vectorized, seeded) and agreement with scipy/statsmodels."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from scipy import stats

from modeldeck import sequential as sq

ALPHA = 0.05


def _peeked_proportions(rng: np.random.Generator, runs: int, looks: int, batch: int, pa: float, pb: float):
    """Cumulative (successes_a, successes_b, n) after each batch of ``batch`` units per arm, for ``runs``
    independent experiments: arrays of shape (runs, looks)."""
    sa = rng.binomial(batch, pa, size=(runs, looks)).cumsum(axis=1)
    sb = rng.binomial(batch, pb, size=(runs, looks)).cumsum(axis=1)
    n = batch * np.arange(1, looks + 1)
    return sa, sb, np.broadcast_to(n, sa.shape)


def _always_valid_p(sa, sb, n, tau):
    pooled = (sa + sb) / (2 * n)
    return sq.msprt_p_value((sb - sa) / n, pooled * (1 - pooled) * 2 / n, tau * tau)


def test_aa_experiments_checked_after_every_batch_declare_a_false_winner_at_most_at_alpha():
    # Given 4000 A/A experiments at a 10% conversion rate, looked at after every batch of 200 units per arm
    rng = np.random.default_rng(14)
    sa, sb, n = _peeked_proportions(rng, runs=4000, looks=50, batch=200, pa=0.10, pb=0.10)
    # When the always-valid p-value is read at every look, and stopping at the first p < alpha
    p = _always_valid_p(sa, sb, n, sq.DEFAULT_MIXING_SD_PROPORTION)
    false_winners = float((p < ALPHA).any(axis=1).mean())
    # Then the false-winner rate stays at or below alpha (within the simulation's error) ...
    assert false_winners <= ALPHA + 2 * math.sqrt(ALPHA * (1 - ALPHA) / 4000)
    # ... while the fixed-horizon z test, peeked the same way, would be fooled far more often
    pooled = (sa + sb) / (2 * n)
    z = (sb - sa) / n / np.sqrt(np.maximum(pooled * (1 - pooled) * 2 / n, 1e-300))
    assert float((np.abs(z) > stats.norm.ppf(1 - ALPHA / 2)).any(axis=1).mean()) > 2 * ALPHA


def test_aa_means_checked_after_every_batch_stay_at_alpha():
    # Given 1500 A/A experiments on a skewed revenue value (lognormal), looked at after every 80 units per arm
    rng = np.random.default_rng(7)
    runs, looks, batch = 1500, 30, 80
    a = rng.lognormal(0, 1, size=(runs, looks, batch))
    b = rng.lognormal(0, 1, size=(runs, looks, batch))
    n = batch * np.arange(1, looks + 1)
    ma, mb = a.sum(axis=2).cumsum(axis=1) / n, b.sum(axis=2).cumsum(axis=1) / n
    va = (a**2).sum(axis=2).cumsum(axis=1) / n - ma**2
    vb = (b**2).sum(axis=2).cumsum(axis=1) / n - mb**2
    tau = sq.DEFAULT_MIXING_EFFECT_SIZE * np.sqrt((va + vb) / 2)
    p = sq.msprt_p_value(mb - ma, (va + vb) / n, tau * tau)
    assert float((p < ALPHA).any(axis=1).mean()) <= ALPHA + 2 * math.sqrt(ALPHA * (1 - ALPHA) / runs)


def test_a_lift_from_10_to_12_percent_is_detected_with_the_requested_power_at_the_computed_sample_size():
    # Given the sample size the experiment computes for 10% -> 12% at alpha 0.05 and power 0.8
    n_units = sq.sample_size_proportions(0.10, 0.02, alpha=ALPHA, power=0.8)
    # (the price of peeking: more than the fixed-horizon n, by less than a factor 2.5)
    assert sq.fixed_sample_size_proportions(0.10, 0.02) < n_units < 2.5 * sq.fixed_sample_size_proportions(0.10, 0.02)
    # When 2000 such experiments with a real lift are looked at 25 times up to that size
    looks = 25
    batch = math.ceil(n_units / looks)
    sa, sb, n = _peeked_proportions(np.random.default_rng(3), runs=2000, looks=looks, batch=batch, pa=0.10, pb=0.12)
    p = _always_valid_p(sa, sb, n, 0.02)
    detected = ((p < ALPHA) & (sb > sa)).any(axis=1)
    # Then the lift is found at least as often as the requested power
    assert float(detected.mean()) >= 0.8


def test_compare_proportions_uses_the_same_msprt_as_the_vectorized_path_and_agrees_with_statsmodels():
    from statsmodels.stats.proportion import proportions_ztest

    c = sq.compare_proportions(1000, 10000, 1100, 10000, names=("A", "B"))
    assert (c.control, c.treatment, c.control_mean, c.treatment_mean) == ("A", "B", 0.1, 0.11)
    assert c.p_value == pytest.approx(float(_always_valid_p(np.array(1000), np.array(1100), 10000, 0.02)))
    assert c.ci_low < c.effect < c.ci_high
    # the sequential interval is wider than the fixed one: the price of validity under peeking
    assert c.ci_low < c.fixed_ci_low and c.ci_high > c.fixed_ci_high
    _, p = proportions_ztest([1100, 1000], [10000, 10000])
    assert c.fixed_p_value == pytest.approx(p, rel=1e-9)
    half = stats.norm.ppf(0.975) * math.sqrt(0.1 * 0.9 / 10000 + 0.11 * 0.89 / 10000)
    assert c.fixed_ci_low == pytest.approx(0.01 - half) and c.fixed_ci_high == pytest.approx(0.01 + half)
    one_sided = sq.compare_proportions(1000, 10000, 1100, 10000, alternative="greater")
    assert one_sided.fixed_p_value == pytest.approx(
        proportions_ztest([1100, 1000], [10000, 10000], alternative="larger")[1]
    )
    # one-sided mixing over the favourable half only: stronger evidence in that direction, none in the other
    assert one_sided.p_value < c.p_value
    assert sq.compare_proportions(1100, 10000, 1000, 10000, alternative="greater").p_value == pytest.approx(
        1.0, abs=1e-3
    )


def test_compare_means_agrees_with_welch_t_test_from_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(10, 3, 40), rng.normal(11.5, 5, 55)
    c = sq.compare_means(len(a), a.sum(), (a**2).sum(), len(b), b.sum(), (b**2).sum(), metric="revenue")
    ref = stats.ttest_ind(b, a, equal_var=False)
    assert c.fixed_p_value == pytest.approx(ref.pvalue, rel=1e-7)
    ci = ref.confidence_interval(0.95)
    assert (c.fixed_ci_low, c.fixed_ci_high) == (pytest.approx(ci.low, rel=1e-7), pytest.approx(ci.high, rel=1e-7))
    assert c.effect == pytest.approx(b.mean() - a.mean())
    greater = sq.compare_means(len(a), a.sum(), (a**2).sum(), len(b), b.sum(), (b**2).sum(), alternative="greater")
    assert greater.fixed_p_value == pytest.approx(stats.ttest_ind(b, a, equal_var=False, alternative="greater").pvalue)


@pytest.mark.parametrize("df", [0.7, 3, 12.5, 200])
def test_t_and_normal_distributions_agree_with_scipy(df):
    for t in (-4.0, -1.0, 0.3, 2.2, 9.0):
        assert sq.t_sf(t, df) == pytest.approx(stats.t.sf(t, df), rel=1e-8, abs=1e-14)
    for q in (0.6, 0.975, 0.999):
        assert sq.t_ppf(q, df) == pytest.approx(stats.t.ppf(q, df), rel=1e-9)
    x = np.linspace(-8, 8, 33)
    assert np.allclose(sq.normal_cdf(x), stats.norm.cdf(x), rtol=2e-7, atol=1e-12)
    for q in (1e-9, 0.01, 0.3, 0.8, 0.999999):
        assert sq.normal_ppf(q) == pytest.approx(stats.norm.ppf(q), rel=1e-10)


def test_srm_flags_a_52_48_split_of_20000_units_and_not_a_50_3_49_7_one():
    broken = sq.srm([10400, 9600], [0.5, 0.5])
    assert broken.mismatch and broken.dof == 1
    assert broken.p_value == pytest.approx(stats.chisquare([10400, 9600]).pvalue, rel=1e-9)
    healthy = sq.srm([10060, 9940], [0.5, 0.5])
    assert not healthy.mismatch and healthy.p_value > 0.3
    three = sq.srm([5100, 2400, 2500], [0.5, 0.25, 0.25])
    ref = stats.chisquare([5100, 2400, 2500], [5000, 2500, 2500])
    assert (three.chi2, three.p_value) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue, rel=1e-9))


@pytest.mark.parametrize("dof,stat", [(1, 3.2), (2, 0.5), (3, 40.0), (9, 12.0), (40, 55.0)])
def test_chi_square_survival_function_agrees_with_scipy(dof, stat):
    from modeldeck.stats import chi2_sf

    assert chi2_sf(stat, dof) == pytest.approx(stats.chi2.sf(stat, dof), rel=1e-9)


def test_fixed_horizon_sample_sizes_agree_with_statsmodels():
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    for base, mde, power in ((0.10, 0.02, 0.8), (0.30, 0.05, 0.9), (0.02, 0.005, 0.8)):
        h = proportion_effectsize(base + mde, base)
        ref = NormalIndPower().solve_power(effect_size=h, alpha=ALPHA, power=power, ratio=1.0)
        assert sq.fixed_sample_size_proportions(base, mde, power=power) == math.ceil(ref)
    ref = NormalIndPower().solve_power(effect_size=0.25, alpha=ALPHA, power=0.8, ratio=1.0)
    assert sq.fixed_sample_size_means(4.0, 1.0) == math.ceil(ref)
    assert sq.sample_size_means(4.0, 1.0) > sq.fixed_sample_size_means(4.0, 1.0)


def test_bad_inputs_are_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="alpha"):
        sq.compare_proportions(1, 10, 2, 10, alpha=1.5)
    with pytest.raises(ValueError, match="between 0 and n"):
        sq.compare_proportions(11, 10, 2, 10)
    with pytest.raises(ValueError, match="minimum detectable effect"):
        sq.sample_size_proportions(0.1, 0)
    with pytest.raises(ValueError, match="one count per weight"):
        sq.srm([1, 2, 3], [0.5, 0.5])
    # no data yet: nothing significant, infinite intervals
    empty = sq.compare_proportions(0, 0, 0, 0)
    assert empty.p_value == 1.0 and empty.fixed_p_value == 1.0


START = datetime(2026, 11, 29, 3, tzinfo=UTC)


def _decide(*comparisons, units=None, srm_result=None, days=1.0, **kw):
    return sq.decide(
        comparisons,
        units=units or {"A": 100, "B": 100},
        min_units=1000,
        started_at=START,
        now=START + timedelta(days=days),
        max_days=14,
        srm_result=srm_result,
        **kw,
    )


def test_decide_winner_keep_champion_futility_max_duration_and_srm():
    better = sq.compare_proportions(1000, 10000, 1300, 10000)
    worse = sq.compare_proportions(1300, 10000, 1000, 10000)
    same = sq.compare_proportions(1000, 10000, 1005, 10000)
    d = _decide(better)
    assert (d.outcome, d.winner) == ("winner", "B") and "always-valid p" in d.reason
    d = _decide(worse)
    assert (d.outcome, d.winner) == ("winner", "A") and "keep the champion" in d.reason
    # the same evidence on a lower-is-better metric flips the direction
    assert _decide(worse, higher_is_better=False).winner == "B"
    assert _decide(same).outcome == "continue"
    assert _decide(same, units={"A": 1000, "B": 1000}, mde=0.02).outcome == "futility"
    # the interval still reaches a 1-point lift: not futile yet
    assert _decide(same, units={"A": 1000, "B": 1000}, mde=0.005).outcome == "continue"
    assert _decide(same, days=14).outcome == "max-duration"
    # a broken split never yields a winner, however strong the effect
    d = _decide(better, srm_result=sq.srm([10400, 9600], [0.5, 0.5]))
    assert (d.outcome, d.winner) == ("srm", None) and "mismatch" in d.reason
    # Bonferroni over challengers: p just under alpha is not enough with two of them
    c = sq.compare_proportions(1000, 10000, 1000, 10000)
    borderline = sq.Comparison(**{**better.to_dict(), "p_value": 0.04})
    assert _decide(borderline).outcome == "winner"
    assert _decide(borderline, sq.Comparison(**{**c.to_dict(), "treatment": "C"})).outcome == "continue"


def test_decide_accepts_iso_timestamps():
    c = sq.compare_proportions(1000, 10000, 1005, 10000)
    d = sq.decide(
        [c],
        units={"A": 1, "B": 1},
        min_units=10,
        started_at="2026-11-01T00:00:00Z",
        now="2026-11-29T00:00:00Z",
        max_days=14,
    )
    assert d.outcome == "max-duration"
