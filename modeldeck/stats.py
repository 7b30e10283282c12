"""Drift statistics: the one definition of a baseline profile, shared by training and the drift job.

Training profiles the data a version was fitted on (``build_baseline``); the drift job profiles a
window of captured traffic with the *same* functions and the baseline's bin edges, then compares.
Vectorised numpy only: this runs on Lambda, without scikit-learn or scipy.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modeldeck.schema import MISSING_CATEGORY, FeatureSchema

BASELINE_FORMAT = 2
N_BINS = 10
# The quantile sketch: counts on SKETCH_BINS fine bins whose edges are the baseline's quantiles (plus the decile
# edges, so PSI's bins are unions of sketch bins). Counts on fixed edges merge exactly by addition, which a
# KLL sketch would not (its merge is randomised and its error grows with merges); with the baseline's own
# quantiles as edges each bin holds at most ~1/SKETCH_BINS of the baseline, which bounds what the KS statistic
# can lose on the grid (see ``ks_sketch``). 1000 bins cost what the old 1,000-point KS sample cost.
SKETCH_BINS = 1000


def quantile_edges(values: np.ndarray, n_bins: int = N_BINS) -> list[float]:
    """Inner bin edges at the baseline's deciles; duplicates (from ties) are dropped."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return []
    qs = np.quantile(finite.astype(np.float64), np.linspace(0, 1, n_bins + 1)[1:-1])
    return [float(e) for e in np.unique(qs)]


def bin_counts(edges: Sequence[float], values: np.ndarray) -> list[int]:
    """Counts per bin (-inf, e1], (e1, e2], ..., (ek, inf); missing values are not counted."""
    finite = values[np.isfinite(values)].astype(np.float64)
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), finite, side="left")
    return np.bincount(idx, minlength=len(edges) + 1).astype(int).tolist()


def sketch_edges(finite: np.ndarray, coarse: Sequence[float]) -> list[float]:
    """The sketch's fine edges: the baseline's quantiles at k/SKETCH_BINS (at most one per value) and the
    decile edges."""
    if finite.size == 0:
        return []
    levels = np.linspace(0, 1, min(SKETCH_BINS, finite.size) + 1)[1:-1]
    fine = np.quantile(finite, levels) if levels.size else np.empty(0)
    return [float(e) for e in np.unique(np.concatenate([fine, np.asarray(coarse, np.float64)]))]


def numeric_profile(values: np.ndarray, edges: Sequence[float] | None = None) -> dict[str, Any]:
    """Profile one numeric column. Without ``edges`` the column defines them (a baseline, with its sketch)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    finite = values[np.isfinite(values)]
    is_baseline = edges is None
    edges = quantile_edges(values) if edges is None else list(edges)
    profile: dict[str, Any] = {
        "count": int(values.size),
        "missing": int(values.size - finite.size),
        "mean": float(finite.mean()) if finite.size else None,
        "std": float(finite.std()) if finite.size else None,
        "edges": edges,
        "counts": bin_counts(edges, values),
    }
    if is_baseline:
        fine = sketch_edges(finite, edges)
        profile["sketch"] = {"edges": fine, "counts": bin_counts(fine, finite)}
    return profile


_SKETCHES: dict[int, tuple[Any, np.ndarray, np.ndarray]] = {}


def baseline_sketch(profile: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """A baseline feature's sketch (fine edges, counts) as arrays. Baselines written before the sketch (format 1)
    kept a 1,000-point order-statistic sample instead: it stands in as a 1,000-row baseline."""
    source: Any = profile.get("sketch") or profile.get("sample") or []
    held = _SKETCHES.get(id(source))
    if held is not None and held[0] is source:  # a baseline is judged against many windows: convert it once
        return held[1], held[2]
    if "sketch" in profile:
        edges = np.asarray(source["edges"], np.float64)
        counts = np.asarray(source["counts"], np.int64)
    else:
        sample = np.asarray(source, np.float64)
        fine = sketch_edges(sample, profile.get("edges", []))
        edges, counts = np.asarray(fine, np.float64), np.asarray(bin_counts(fine, sample), np.int64)
    if len(_SKETCHES) >= 1024:
        _SKETCHES.clear()
    _SKETCHES[id(source)] = (source, edges, counts)
    return edges, counts


def categorical_profile(values: np.ndarray) -> dict[str, Any]:
    """Category frequencies; missing values are counted under ``MISSING_CATEGORY``."""
    cats, counts = np.unique(np.asarray(values, dtype=object).ravel().astype(str), return_counts=True)
    freq = {str(c): int(n) for c, n in zip(cats, counts, strict=True)}
    return {"count": int(sum(freq.values())), "missing": freq.get(MISSING_CATEGORY, 0), "frequencies": freq}


def prediction_profile(
    labels: np.ndarray | None,
    scores: np.ndarray | None,
    classes: Sequence[Any] | None,
    edges: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Class proportions (classifiers) or the score distribution (regressors)."""
    if classes is not None and labels is not None:
        labels = np.asarray(labels).ravel()
        counts = {str(c): int(np.sum(labels == c)) for c in classes}
        return {"kind": "classes", "count": int(labels.size), "counts": counts}
    assert scores is not None
    profile = numeric_profile(np.asarray(scores).ravel(), edges)
    profile["kind"] = "scores"
    return profile


def build_baseline(
    schema: FeatureSchema,
    columns: Mapping[str, np.ndarray],
    labels: np.ndarray | None,
    scores: np.ndarray | None,
    classes: Sequence[Any] | None,
) -> dict[str, Any]:
    """The drift baseline of a version: one profile per feature plus the prediction distribution."""
    features = {
        f.name: (numeric_profile(columns[f.name]) if f.numeric else categorical_profile(columns[f.name]))
        for f in schema.features
    }
    rows = int(next(iter(columns.values())).shape[0])
    return {
        "format": BASELINE_FORMAT,
        "rows": rows,
        "features": features,
        "prediction": prediction_profile(labels, scores, classes),
    }


# --- Comparing a window of traffic with a baseline -------------------------------------------------------
#
# Everything below is the drift job's arithmetic. It reproduces scipy.stats' reference results (the tests
# check kstwo.sf, chi2.sf and chi2_contingency to 1e-9) without importing scipy, which is too big for the
# drift Lambda. The definitions are in the README, section "Drift monitoring".
#
# A window is first reduced to a *profile* (``window_profile``): counts on the baseline's sketch bins,
# category and prediction counts, and shifted sums for the means. Profiles of partitions of a window merge
# exactly (``merge_profiles``: integer counts add), and ``judge_window`` judges a profile, so the map/reduce
# drift job and the single pass give the same verdict.

PSI_EPSILON = 1e-4
UNSEEN = "(unseen)"
# Windows up to this size get Massart's bound for the KS tail; kolmogorov_sf is accurate beyond it.
KS_SMALL_N = 140
KS_EXACT_TAIL_MAX_N = 10000
PROFILE_FORMAT = 1


def psi(
    expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray, epsilon: float = PSI_EPSILON
) -> float:
    """Population stability index of two histograms over the same buckets.

    ``PSI = sum_i (a_i - e_i) * ln(a_i / e_i)`` with ``e_i``, ``a_i`` each bucket's share of its
    histogram, floored at ``epsilon`` so an empty bucket contributes a large but finite term.
    """
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.sum() <= 0 or a.sum() <= 0:
        return 0.0
    e = np.maximum(e / e.sum(), epsilon)
    a = np.maximum(a / a.sum(), epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


def _log_comb(n: int, k: np.ndarray) -> np.ndarray:
    lg = np.vectorize(math.lgamma, otypes=[np.float64])
    return math.lgamma(n + 1) - lg(k + 1) - lg(n - k + 1)


def _smirnov_sf(n: int, x: float) -> float:
    """One-sided P(D_n^+ >= x), exact (Birnbaum and Tingey, 1951)."""
    if x <= 0:
        return 1.0
    if x >= 1:
        return 0.0
    j = np.arange(0, math.floor(n * (1 - x)) + 1)
    rest = 1 - x - j / n
    keep = rest > 0
    j, rest = j[keep], rest[keep]
    logs = _log_comb(n, j) + (n - j) * np.log(rest) + (j - 1) * np.log(x + j / n)
    return float(min(1.0, x * np.sum(np.exp(logs))))


def _pelz_good_cdf(n: int, x: float) -> float:
    """P(D_n <= x) by the Pelz-Good (1976) expansion of the Li-Chien/Korolyuk series in 1/sqrt(n)."""
    z = math.sqrt(n) * x
    z2 = z * z
    if -(math.pi**2) / 8 / z2 < -708:
        return 0.0
    pi2, pi4, pi6 = math.pi**2, math.pi**4, math.pi**6
    kmax = math.ceil(16 * z / math.pi)
    odd = 2 * np.arange(1, kmax + 1, dtype=np.float64) - 1  # (2k - 1)
    q = np.exp(-(odd**2) * pi2 / 8 / z2)
    o2, o4, o6 = odd**2, odd**4, odd**6
    root = math.sqrt(2 * math.pi)
    k0 = root / z * np.sum(q)
    k1 = root / (6 * z**4) * np.sum((pi2 * o2 / 4 - z2) * q)
    k2 = (
        root
        / (72 * z**7)
        * np.sum((6 * z**6 + 2 * z**4 + pi2 * o2 * (2 * z**4 - 5 * z2) / 4 + pi4 * o4 * (1 - 2 * z2) / 16) * q)
    )
    k3 = (
        root
        / (6480 * z**10)
        * np.sum(
            (
                pi6 * o6 * (5 - 30 * z2) / 64
                + pi4 * o4 * (212 * z**4 - 60 * z2) / 16
                + pi2 * o2 * (135 * z**4 - 96 * z**6) / 4
                - 30 * z**6
                - 90 * z**8
            )
            * q
        )
    )
    ks = np.arange(1, kmax + 1, dtype=np.float64)
    qk = np.exp(-(ks**2) * pi2 / 2 / z2)
    k2 -= pi2 * root / (36 * z**3) * np.sum(ks**2 * qk)
    k3 += pi2 * root / (216 * z**6) * np.sum((3 * z2 - pi2 * ks**2) * ks**2 * qk)
    return float(k0 + k1 / n**0.5 + k2 / n + k3 / n**1.5)


def kolmogorov_sf(n: int, x: float) -> float:
    """P(D_n >= x) of the one-sample two-sided KS statistic (scipy's ``kstwo.sf``), for n > 140.

    Follows Simard and L'Ecuyer (2011) as scipy does: Ruben-Gambino at the extremes, twice the exact
    one-sided tail where it is small, and 1 - Pelz-Good otherwise. (Where ``n * x**1.5 <= 1.4`` scipy
    uses the Durbin matrix instead; the p-value there is above 0.9 and the two agree to about 1e-5.)
    """
    if x >= 1:
        return 0.0
    if x <= 0:
        return 1.0
    t = n * x
    if t <= 1.0:
        if t <= 0.5:
            return 1.0
        return float(1.0 - math.exp(math.lgamma(n + 1) - n * math.log(n) + n * math.log(2 * t - 1)))
    if t >= n - 1:
        return float(2 * (1 - x) ** n)
    if x >= 0.5 or t * x >= 2.2:
        return 0.0 if t * x >= 370 else min(1.0, 2 * _smirnov_sf(n, x))
    return float(min(1.0, max(0.0, 1.0 - _pelz_good_cdf(n, x))))


def _gamma_q(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x): a series below a + 1, a continued fraction above."""
    if x <= 0:
        return 1.0
    log_front = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        ap = a
        for _ in range(10000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-17:
                break
        return max(0.0, 1.0 - total * math.exp(log_front))
    # Modified Lentz on the continued fraction of Q.
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 10000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-16:
            break
    return float(math.exp(log_front) * h)


def chi2_sf(statistic: float, dof: int) -> float:
    """Survival function of the chi-square distribution (``scipy.stats.chi2.sf``)."""
    if dof <= 0:
        return 1.0
    if dof == 1:
        return math.erfc(math.sqrt(max(statistic, 0.0) / 2))
    return _gamma_q(dof / 2, statistic / 2)


def chi2_homogeneity(
    baseline: Sequence[float] | np.ndarray, current: Sequence[float] | np.ndarray
) -> tuple[float, int, float]:
    """Pearson's chi-square test that two count vectors share one distribution: (statistic, dof, p).

    The 2 x k contingency table (``scipy.stats.chi2_contingency(correction=False)``); buckets empty in
    both rows are dropped, so an unseen-category bucket only counts when the window has one.
    """
    table = np.vstack([np.asarray(baseline, np.float64), np.asarray(current, np.float64)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 0, 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    stat = float(np.sum((table - expected) ** 2 / expected))
    dof = table.shape[1] - 1
    return stat, dof, chi2_sf(stat, dof)


def window_sf(n: int, x: float) -> float:
    """P(sup |F_n - F| >= x) for a window of n values from F (at most this, for a discontinuous F).

    Kolmogorov's distribution (``kolmogorov_sf``) where it is cheap; Massart's bound ``2 exp(-2 n x^2)``, valid
    for every n and a little conservative, below KS_SMALL_N values and in the far tail of large windows
    (n > KS_EXACT_TAIL_MAX_N and n x^2 >= 2.2, p < 0.025), where the exact one-sided sum has n terms."""
    if x <= 0 or n == 0:
        return 1.0
    if n > KS_SMALL_N and (n <= KS_EXACT_TAIL_MAX_N or n * x * x < 2.2):
        return kolmogorov_sf(n, x)
    return min(1.0, 2.0 * math.exp(-2.0 * n * x * x))


def ks_sketch(base_counts: Sequence[int] | np.ndarray, cur_counts: Sequence[int] | np.ndarray, alpha: float) -> dict:
    """The KS test of a window against its baseline, on the sketch's grid, given that baseline.

    ``D = max_e |F_baseline(e) - F_window(e)|`` over the sketch's edges. The grid can only make D smaller than
    the exact statistic, by at most the largest share one sketch bin holds in either sample (``grid_error``;
    about 1/SKETCH_BINS for the baseline), so the test stays conservative.

    Every window of a version is compared with one fixed baseline, so the test is conditional on it: with
    probability 1 - alpha the baseline's ECDF lies within ``t_b = sqrt(ln(2/alpha) / (2 N_b))`` of its
    population's everywhere (Dvoretzky-Kiefer-Wolfowitz with Massart's constant). Then ``D - t_b`` bounds
    the window's own deviation from the population, whose Kolmogorov distribution gives the p-value: for
    such a baseline, a window from the unchanged population has p < alpha with probability at most alpha.
    A two-sample test would hold alpha only on average over baselines, and a small baseline would alarm on
    most windows for ever once it happens to be off.
    """
    b = np.asarray(base_counts, np.float64)
    c = np.asarray(cur_counts, np.float64)
    nb, n = float(b.sum()), float(c.sum())
    if nb == 0 or n == 0:
        return {"statistic": None, "p_value": None, "baseline_error": None, "grid_error": None}
    diff = np.cumsum(b)[:-1] / nb - np.cumsum(c)[:-1] / n
    d = float(np.abs(diff).max()) if diff.size else 0.0
    t_b = math.sqrt(math.log(2.0 / alpha) / (2.0 * nb))
    return {
        "statistic": d,
        "p_value": window_sf(int(n), d - t_b),
        "baseline_error": t_b,
        "grid_error": float(max(b.max() / nb, c.max() / n)),
    }


@dataclass(frozen=True)
class DriftThresholds:
    """When a feature, and a window, count as drifted. Defaults are documented in the README.

    A feature drifts when ``(p < alpha_per_feature and PSI >= min_effect_psi) or PSI >= psi``, where
    ``alpha_per_feature = alpha / n_features`` with Bonferroni (else ``alpha``). A window breaches when
    any feature drifted, the drifted share reaches ``drifted_share``, the largest feature PSI reaches
    ``psi``, or the prediction PSI reaches ``prediction``. Below ``min_rows`` nothing is judged.
    ``min_effect_psi`` is the decile PSI of a 0.07 sigma mean shift of a normal feature (0.1 sigma gives
    0.0096), so a 0.1 sigma shift of a large window counts, as Evidently's default (normed Wasserstein 0.1).
    """

    psi: float = 0.2
    drifted_share: float = 0.3
    alpha: float = 0.01
    bonferroni: bool = True
    min_rows: int = 200
    prediction: float = 0.2
    min_effect_psi: float = 0.005

    def alpha_per_feature(self, n_features: int) -> float:
        return self.alpha / max(n_features, 1) if self.bonferroni else self.alpha


# --- Window profiles: what a partition of a window reduces to, and how profiles merge ---------------------


def _shift(baseline: Mapping[str, Any]) -> float:
    # Sums are taken around the baseline's mean, the same for every partition, so the variance keeps its digits.
    mean = baseline.get("mean")
    return float(mean) if mean is not None else 0.0


def numeric_window(baseline: Mapping[str, Any], values: np.ndarray) -> dict[str, Any]:
    """A numeric column of a window as counts on the baseline's sketch bins plus shifted sums."""
    values = np.asarray(values, dtype=np.float64).ravel()
    finite = values[np.isfinite(values)]
    fine, _ = baseline_sketch(baseline)
    # Sorting the window and locating the edges in it is ~10x faster than locating every value among the edges.
    at_or_below = np.searchsorted(np.sort(finite), fine, side="right")
    counts = np.diff(np.concatenate([[0], at_or_below, [finite.size]]))
    dev = finite - _shift(baseline)
    return {
        "kind": "numeric",
        "count": int(values.size),
        "missing": int(values.size - finite.size),
        "sum": float(dev.sum()),
        "sumsq": float((dev * dev).sum()),  # not np.dot: BLAS threads cost more than they save here
        "sketch": counts,  # an array until it is written (JSON lists)
    }


def category_counts(values: np.ndarray, known: Sequence[str] = ()) -> dict[str, int]:
    """Counts per category (as text) of a window's column. A numpy text array is compared with the ``known``
    categories vectorised; anything else is counted in one hashing pass (faster than numpy on objects)."""
    arr = np.asarray(values).ravel()
    counts: dict[str, int] = {}
    if arr.dtype.kind == "U" and known:
        rest = np.ones(arr.size, dtype=bool)
        for category in known:
            hit = arr == category
            if n := int(np.count_nonzero(hit)):
                counts[category] = n
                rest &= ~hit
        arr = arr[rest]
    for value, n in Counter(arr.tolist()).items():
        key = str(value)
        counts[key] = counts.get(key, 0) + n
    return counts


def window_profile(
    baseline: Mapping[str, Any], columns: Mapping[str, np.ndarray], predictions: np.ndarray
) -> dict[str, Any]:
    """The mergeable profile of (a partition of) a window, against one version's baseline.

    ``columns`` maps each baseline feature to its values (a feature absent from ``columns`` is missing in
    every row); ``predictions`` holds the predicted labels (classifiers) or scores (regressors).
    """
    predictions = np.asarray(predictions).ravel()
    rows = int(predictions.size)
    features: dict[str, Any] = {}
    for name, profile in baseline["features"].items():
        values = columns.get(name)
        if "frequencies" in profile:
            if values is None:
                counts = {MISSING_CATEGORY: rows} if rows else {}
            else:
                counts = category_counts(values, list(profile["frequencies"]))
            features[name] = {"kind": "categorical", "counts": counts}
        else:
            features[name] = numeric_window(profile, values if values is not None else np.full(rows, np.nan))
    pred_base = baseline["prediction"]
    if pred_base.get("kind") == "classes":
        classes = list(pred_base["counts"])
        prediction: dict[str, Any] = {"kind": "classes", "counts": category_counts(predictions, classes)}
    else:
        prediction = numeric_window(pred_base, predictions.astype(np.float64))
        prediction["kind"] = "scores"
    return {"format": PROFILE_FORMAT, "rows": rows, "features": features, "prediction": prediction}


def _merge_part(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    first = parts[0]
    if "counts" in first and isinstance(first["counts"], dict):
        counts: dict[str, int] = {}
        for part in parts:
            for key, n in part["counts"].items():
                counts[key] = counts.get(key, 0) + int(n)
        return {"kind": first["kind"], "counts": dict(sorted(counts.items()))}
    sketch = np.zeros(len(first["sketch"]), np.int64)
    for part in parts:
        sketch += np.asarray(part["sketch"], np.int64)
    return {
        "kind": first["kind"],
        "count": sum(int(p["count"]) for p in parts),
        "missing": sum(int(p["missing"]) for p in parts),
        "sum": math.fsum(float(p["sum"]) for p in parts),
        "sumsq": math.fsum(float(p["sumsq"]) for p in parts),
        "sketch": sketch,
    }


def merge_profiles(profiles: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge window profiles of one version (partitions of a window) into the profile of their union.

    Counts add, so the merge is exact, associative and commutative, and the verdict of the merged profile
    equals the single pass's. The shifted sums behind the displayed means add in floating point (to about
    1e-15 relative).
    """
    if not profiles:
        raise ValueError("nothing to merge")
    first = profiles[0]
    return {
        "format": PROFILE_FORMAT,
        "rows": sum(int(p["rows"]) for p in profiles),
        "features": {name: _merge_part([p["features"][name] for p in profiles]) for name in first["features"]},
        "prediction": _merge_part([p["prediction"] for p in profiles]),
    }


# --- Judging a window profile against its baseline -----------------------------------------------------------


def compare_numeric_profile(baseline: Mapping[str, Any], window: Mapping[str, Any], alpha: float) -> dict[str, Any]:
    """One numeric feature of a window (its profile) against its baseline: PSI on the baseline's deciles, KS
    on the sketch (``ks_sketch``)."""
    fine, base_fine = baseline_sketch(baseline)
    cur_fine = np.asarray(window["sketch"], np.int64)
    edges = list(baseline.get("edges", []))
    # The decile edges are sketch edges, so a decile bin is a run of sketch bins.
    starts = np.concatenate([[0], np.searchsorted(fine, np.asarray(edges, np.float64)) + 1]).astype(np.intp)
    current = np.add.reduceat(cur_fine, starts).astype(int).tolist()
    n_finite = int(cur_fine.sum())
    rows = int(window["count"])
    mean = std = None
    if n_finite:
        m1 = window["sum"] / n_finite
        mean = _shift(baseline) + m1
        std = math.sqrt(max(window["sumsq"] / n_finite - m1 * m1, 0.0))
    out: dict[str, Any] = {
        "kind": "numeric",
        "rows": rows,
        "missing_share": float(1 - n_finite / rows) if rows else 0.0,
        "baseline_missing_share": (baseline.get("missing", 0) / baseline["count"]) if baseline.get("count") else 0.0,
        "baseline_mean": baseline.get("mean"),
        "current_mean": mean,
        "baseline_std": baseline.get("std"),
        "current_std": std,
        "edges": edges,
        "baseline_counts": list(baseline.get("counts", [])),
        "current_counts": current,
        "psi": psi(baseline.get("counts", []), current) if n_finite else 0.0,
        "test": "ks",
    }
    out.update(ks_sketch(base_fine, cur_fine, alpha))
    return out


def compare_numeric(baseline: Mapping[str, Any], values: np.ndarray, alpha: float = 0.01) -> dict[str, Any]:
    """One numeric feature of a window (its values) against its baseline profile."""
    return compare_numeric_profile(baseline, numeric_window(baseline, values), alpha)


def compare_categorical_counts(baseline: Mapping[str, Any], seen: Mapping[str, int], top: int = 5) -> dict[str, Any]:
    """One categorical feature (its category counts) against its baseline: PSI and chi-square over the
    baseline's categories plus one bucket for every category the baseline never saw."""
    known = dict(baseline.get("frequencies", {}))
    names = list(known)
    base = [known[c] for c in names] + [0]
    unseen = {c: n for c, n in seen.items() if c not in known and n}
    cur = [seen.get(c, 0) for c in names] + [sum(unseen.values())]
    stat, dof, p = chi2_homogeneity(base, cur)
    b_total, c_total = max(sum(base), 1), max(sum(cur), 1)
    shares = [
        {"category": c, "baseline_share": b / b_total, "current_share": n / c_total}
        for c, b, n in zip([*names, UNSEEN], base, cur, strict=True)
    ]
    shares.sort(key=lambda s: -abs(s["current_share"] - s["baseline_share"]))
    return {
        "kind": "categorical",
        "rows": int(sum(cur)),
        "categories": [*names, UNSEEN],
        "baseline_counts": base,
        "current_counts": cur,
        "top_changes": shares[:top],
        "unseen": dict(sorted(unseen.items(), key=lambda kv: (-kv[1], kv[0]))[:top]),
        "psi": psi(base, cur) if sum(cur) else 0.0,
        "test": "chi2",
        "statistic": stat,
        "dof": dof,
        "p_value": p if sum(cur) else None,
    }


def compare_categorical(baseline: Mapping[str, Any], values: np.ndarray, top: int = 5) -> dict[str, Any]:
    """One categorical feature of a window (its values) against its baseline."""
    return compare_categorical_counts(baseline, category_counts(values), top)


def compare_prediction_profile(baseline: Mapping[str, Any], window: Mapping[str, Any], alpha: float) -> dict[str, Any]:
    """Prediction drift: PSI (and chi-square) of predicted-class counts, or PSI of the score histogram."""
    if baseline.get("kind") == "classes":
        classes = list(baseline["counts"])
        seen = window["counts"]
        cur = [int(seen.get(c, 0)) for c in classes]
        cur.append(int(sum(seen.values()) - sum(cur)))
        base = [baseline["counts"][c] for c in classes] + [0]
        stat, dof, p = chi2_homogeneity(base, cur)
        return {
            "kind": "classes",
            "categories": [*classes, UNSEEN],
            "baseline_counts": base,
            "current_counts": cur,
            "psi": psi(base, cur) if sum(cur) else 0.0,
            "statistic": stat,
            "dof": dof,
            "p_value": p,
        }
    result = compare_numeric_profile(baseline, window, alpha)
    result["kind"] = "scores"
    return result


def judge_window(
    baseline: Mapping[str, Any], profile: Mapping[str, Any], thresholds: DriftThresholds = DriftThresholds()
) -> dict[str, Any]:
    """Judge one window (its profile, ``window_profile`` or ``merge_profiles``) against its version's baseline."""
    rows = int(profile["rows"])
    features = baseline["features"]
    result: dict[str, Any] = {"rows": rows, "baseline_rows": baseline.get("rows"), "min_rows": thresholds.min_rows}
    if rows < thresholds.min_rows:
        result.update(status="insufficient_data", features={}, drifted_features=[], breaches=[], alarm=False)
        return result
    alpha = thresholds.alpha_per_feature(len(features))
    judged: dict[str, dict[str, Any]] = {}
    for name, base in features.items():
        window = profile["features"][name]
        if "frequencies" in base:
            cmp = compare_categorical_counts(base, window["counts"])
        else:
            cmp = compare_numeric_profile(base, window, alpha)
        p = cmp["p_value"]
        cmp["significant"] = p is not None and p < alpha
        cmp["drifted"] = bool(
            (cmp["significant"] and cmp["psi"] >= thresholds.min_effect_psi) or cmp["psi"] >= thresholds.psi
        )
        judged[name] = cmp
    drifted = sorted((n for n, c in judged.items() if c["drifted"]), key=lambda n: -judged[n]["psi"])
    worst = max(judged, key=lambda n: judged[n]["psi"]) if judged else None
    prediction = compare_prediction_profile(baseline["prediction"], profile["prediction"], alpha)
    result.update(
        status="ok",
        alpha_per_feature=alpha,
        features=judged,
        drifted_features=drifted,
        drifted_count=len(drifted),
        drifted_share=len(drifted) / len(judged) if judged else 0.0,
        max_psi=judged[worst]["psi"] if worst else 0.0,
        max_psi_feature=worst,
        prediction=prediction,
        prediction_drift=prediction["psi"],
    )
    result["breaches"] = breaches(result, thresholds)
    result["alarm"] = bool(result["breaches"])
    return result


def compare_window(
    baseline: Mapping[str, Any],
    columns: Mapping[str, np.ndarray],
    predictions: np.ndarray,
    thresholds: DriftThresholds = DriftThresholds(),
) -> dict[str, Any]:
    """Judge one window of one model version (its columns) against that version's baseline.

    ``columns`` maps each baseline feature to its values in the window (missing ones count as missing);
    ``predictions`` holds the predicted labels (classifiers) or scores (regressors).
    """
    predictions = np.asarray(predictions) if predictions is not None else np.asarray([])
    if predictions.size < thresholds.min_rows:
        return judge_window(baseline, {"rows": int(predictions.size)}, thresholds)
    return judge_window(baseline, window_profile(baseline, columns, predictions), thresholds)


def breaches(result: Mapping[str, Any], thresholds: DriftThresholds) -> list[dict[str, Any]]:
    """The alarm rule, as the per-model CloudWatch alarms apply it to the published metrics."""
    if result.get("status") != "ok":
        return []
    checks = [
        ("DriftedFeatures", float(result["drifted_count"]), 1.0),
        ("DriftedShare", result["drifted_share"], thresholds.drifted_share),
        ("MaxFeaturePSI", result["max_psi"], thresholds.psi),
        ("PredictionDrift", result["prediction_drift"], thresholds.prediction),
    ]
    return [{"metric": m, "value": v, "threshold": t} for m, v, t in checks if v >= t]
