"""Drift statistics: agreement with scipy.stats (the reference) and a textbook PSI."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from modeldeck import stats

RNG_SEED = 20260601


def textbook_psi(expected: list[float], actual: list[float], eps: float = 1e-4) -> float:
    """PSI as the credit-scoring literature writes it, one bucket at a time."""
    te, ta = sum(expected), sum(actual)
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        pe, pa = max(e / te, eps), max(a / ta, eps)
        total += (pa - pe) * math.log(pa / pe)
    return total


def test_kolmogorov_sf_matches_scipy_kstwo_where_it_is_decisive() -> None:
    # The asymptotic branch of ks_2samp: scipy's kstwo.sf at n = round(m*n/(m+n)) ~ 1000
    for n in (141, 500, 990, 5000):
        for x in np.linspace(0.5 / n, 0.6, 60):
            ours, ref = stats.kolmogorov_sf(n, float(x)), float(sps.kstwo.sf(x, n))
            # where scipy switches to the Durbin matrix (n * x**1.5 <= 1.4; p > 0.9) we use Pelz-Good
            tol = 1e-4 if n * x**1.5 <= 1.4 and n * x * x < 2.2 else 1e-9
            assert abs(ours - ref) <= tol, (n, x, ours, ref)


@pytest.mark.parametrize("dof", [1, 2, 3, 5, 9, 29, 100])
def test_chi2_sf_matches_scipy(dof: int) -> None:
    for x in [0.0, 1e-3, 0.3, 1.0, float(dof), 2.0 * dof, 5.0 * dof + 20, 300.0, 1500.0]:
        ours, ref = stats.chi2_sf(x, dof), float(sps.chi2.sf(x, dof))
        assert abs(ours - ref) <= 1e-9 and (ref < 1e-300 or abs(ours - ref) <= 1e-9 * ref + 1e-300), (dof, x)


def test_chi2_homogeneity_matches_scipy_contingency_on_random_counts() -> None:
    rng = np.random.default_rng(RNG_SEED)
    for _ in range(50):
        k = int(rng.integers(2, 8))
        base = rng.multinomial(int(rng.integers(100, 5000)), rng.dirichlet(np.ones(k)))
        cur = rng.multinomial(int(rng.integers(50, 2000)), rng.dirichlet(np.ones(k)))
        stat, dof, p = stats.chi2_homogeneity(base, cur)
        table = np.vstack([base, cur])
        table = table[:, table.sum(axis=0) > 0]
        ref = sps.chi2_contingency(table, correction=False)
        assert stat == pytest.approx(ref.statistic, rel=1e-12)
        assert dof == ref.dof
        assert abs(p - ref.pvalue) <= 1e-9


def test_psi_matches_textbook_including_empty_buckets() -> None:
    rng = np.random.default_rng(RNG_SEED)
    for _ in range(50):
        k = int(rng.integers(2, 12))
        e = rng.integers(0, 500, size=k).astype(float)
        a = rng.integers(0, 500, size=k).astype(float)
        e[0] += 1
        a[-1] += 1
        if k > 3:
            e[1] = 0  # an empty baseline bucket: the epsilon keeps PSI finite
        assert stats.psi(e, a) == pytest.approx(textbook_psi(list(e), list(a)), rel=1e-12)
    assert stats.psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0, abs=1e-15)


def test_numeric_comparison_uses_the_baseline_bins_and_sketch() -> None:
    # Given a baseline profile built by training's own function
    rng = np.random.default_rng(1)
    base = stats.numeric_profile(rng.normal(size=5000))
    current = rng.normal(0.5, 1, size=1000)
    # When a window is compared
    cmp = stats.compare_numeric(base, current)
    # Then PSI is over the baseline's decile bins and KS on the baseline's sketch
    assert cmp["current_counts"] == stats.bin_counts(base["edges"], current)
    assert cmp["psi"] == pytest.approx(textbook_psi(base["counts"], cmp["current_counts"]))
    fine = np.asarray(base["sketch"]["edges"])
    cdf_base = np.cumsum(base["sketch"]["counts"])[:-1] / 5000
    cdf_window = np.searchsorted(np.sort(current), fine, side="right") / 1000
    assert cmp["statistic"] == pytest.approx(np.abs(cdf_base - cdf_window).max(), abs=1e-12)
    assert cmp["p_value"] < 1e-16
    assert cmp["current_mean"] == pytest.approx(current.mean(), rel=1e-12)
    assert cmp["current_std"] == pytest.approx(current.std(), rel=1e-9)


def test_categorical_comparison_counts_unseen_categories_in_one_bucket() -> None:
    base = stats.categorical_profile(np.array(["a"] * 50 + ["b"] * 50, dtype=object))
    cmp = stats.compare_categorical(base, np.array(["a"] * 40 + ["b"] * 40 + ["c"] * 15 + ["d"] * 5, dtype=object))
    assert cmp["categories"] == ["a", "b", stats.UNSEEN]
    assert cmp["current_counts"] == [40, 40, 20]
    assert cmp["unseen"] == {"c": 15, "d": 5}
    assert cmp["psi"] == pytest.approx(textbook_psi([50, 50, 0], [40, 40, 20]))
    ref = sps.chi2_contingency(np.array([[50, 50, 0], [40, 40, 20]]), correction=False)
    assert cmp["p_value"] == pytest.approx(ref.pvalue, abs=1e-9)
    assert cmp["top_changes"][0]["category"] == stats.UNSEEN


def test_a_small_window_is_insufficient_data_and_never_alarms() -> None:
    rng = np.random.default_rng(2)
    baseline = {
        "rows": 100,
        "features": {"x": stats.numeric_profile(rng.normal(size=100))},
        "prediction": {"kind": "classes", "count": 100, "counts": {"a": 50, "b": 50}},
    }
    result = stats.compare_window(
        baseline, {"x": rng.normal(5, 1, size=199)}, np.array(["b"] * 199), stats.DriftThresholds(min_rows=200)
    )
    assert result["status"] == "insufficient_data"
    assert result["alarm"] is False and result["breaches"] == []
