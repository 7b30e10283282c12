"""Drift statistics: the one definition of a baseline profile, shared by training and the drift job.

Training profiles the data a version was fitted on (``build_baseline``); the drift job profiles a
window of captured traffic with the *same* functions and the baseline's bin edges, then compares.
Vectorised numpy only: this runs on Lambda, without scikit-learn or scipy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modeldeck.schema import MISSING_CATEGORY, FeatureSchema

BASELINE_FORMAT = 1
N_BINS = 10
# The KS test needs the baseline's values, not only its bins; a bounded, evenly spaced order-statistic
# sample keeps baseline.json small while the ECDF stays within 1/KS_SAMPLE of the full data's.
KS_SAMPLE = 1000


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


def numeric_profile(values: np.ndarray, edges: Sequence[float] | None = None) -> dict[str, Any]:
    """Profile one numeric column. Without ``edges`` the column defines them (a baseline)."""
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
        ordered = np.sort(finite)
        if ordered.size > KS_SAMPLE:
            ordered = ordered[np.linspace(0, ordered.size - 1, KS_SAMPLE).round().astype(int)]
        profile["sample"] = [float(v) for v in ordered]
    return profile


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
# check ks_2samp, chi2.sf and chi2_contingency to 1e-9) without importing scipy, which is too big for the
# drift Lambda. The definitions are in the README, section "Drift monitoring".

PSI_EPSILON = 1e-4
UNSEEN = "(unseen)"
# scipy's ks_2samp(method="auto") is exact up to this many values per sample, asymptotic beyond.
KS_EXACT_MAX_N = 10000


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


def _ks_outside_equal(n: int, h: int) -> float:
    """P(D_{n,n} >= h/n): the reflection formula 2 * sum_k (-1)^(k+1) C(2n, n-kh) / C(2n, n)."""
    k = np.arange(n // h, 0, -1, dtype=np.float64)  # smallest terms first
    lg = np.vectorize(math.lgamma)
    log_ratio = 2 * math.lgamma(n + 1) - lg(n - k * h + 1) - lg(n + k * h + 1)
    signs = np.where(k % 2 == 1, 1.0, -1.0)
    return float(2 * np.sum(signs * np.exp(log_ratio)))


def _ks_outside_lattice(m: int, n: int, g: int, h: int) -> float:
    """P(D_{m,n} >= h*g/(m*n)) for m != n, by counting lattice paths that stay inside the band.

    A uniformly random path from (0, 0) to (m, n) (x counts the first sample, y the second) stays
    inside when |n*x - m*y| < h*g everywhere. ``U(x, y)`` is the share of paths to (x, y) that stayed
    inside; ``U(x, y) = (x*U(x-1, y) + y*U(x, y-1)) / (x + y)``, so values stay in [0, 1] and one
    anti-diagonal (x + y = s) depends only on the previous one: a vectorised sweep of m + n steps.
    """
    limit, total = h * g, m + n
    s = np.arange(total + 1, dtype=np.int64)
    lo = np.maximum.reduce([np.zeros_like(s), s - n, (m * s - limit) // total + 1])
    hi = np.minimum.reduce([np.full_like(s, m), s, -((-(m * s + limit)) // total) - 1])
    if np.any(hi < lo):
        return 1.0
    u = np.ones(1)
    for step in range(1, total + 1):
        x = np.arange(lo[step], hi[step] + 1, dtype=np.float64)
        padded = np.concatenate(([0.0], u, [0.0]))
        base = lo[step] - lo[step - 1] + 1
        left = padded[base - 1 : base - 1 + x.size]  # U(x-1, y)
        down = padded[base : base + x.size]  # U(x, y-1)
        u = (x * left + (step - x) * down) / step
    return float(1.0 - u[-1])


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


def ks_2samp(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample two-sided Kolmogorov-Smirnov test: (statistic, p-value).

    The same method as ``scipy.stats.ks_2samp(a, b, method="auto")``: ties handled through the
    right-continuous ECDFs; the exact distribution when both samples have at most 10,000 values
    (Hodges' lattice-path count), otherwise the one-sample distribution at n = round(m*n/(m+n)).
    """
    a = np.sort(np.asarray(a, dtype=np.float64))
    b = np.sort(np.asarray(b, dtype=np.float64))
    n1, n2 = a.size, b.size
    if min(n1, n2) == 0:
        raise ValueError("both samples need at least one value")
    both = np.concatenate([a, b])
    diff = np.searchsorted(a, both, side="right") / n1 - np.searchsorted(b, both, side="right") / n2
    d = float(max(np.clip(-diff.min(), 0, 1), diff.max()))
    if max(n1, n2) <= KS_EXACT_MAX_N:
        g = math.gcd(n1, n2)
        lcm = (n1 // g) * n2
        h = int(np.round(d * lcm))
        d = h / lcm
        if h == 0:
            return d, 1.0
        p = _ks_outside_equal(n1, h) if n1 == n2 else _ks_outside_lattice(n1, n2, g, h)
        if 0 <= p <= 1:
            return d, float(p)
    big, small = max(n1, n2), min(n1, n2)
    en = big * small / (big + small)
    return d, float(np.clip(kolmogorov_sf(int(np.round(en)), d), 0, 1))


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


@dataclass(frozen=True)
class DriftThresholds:
    """When a feature, and a window, count as drifted. Defaults are documented in the README.

    A feature drifts when ``(p < alpha_per_feature and PSI >= min_effect_psi) or PSI >= psi``, where
    ``alpha_per_feature = alpha / n_features`` with Bonferroni (else ``alpha``). A window breaches when
    any feature drifted, the drifted share reaches ``drifted_share``, the largest feature PSI reaches
    ``psi``, or the prediction PSI reaches ``prediction``. Below ``min_rows`` nothing is judged.
    """

    psi: float = 0.2
    drifted_share: float = 0.3
    alpha: float = 0.01
    bonferroni: bool = True
    min_rows: int = 200
    prediction: float = 0.2
    min_effect_psi: float = 0.01

    def alpha_per_feature(self, n_features: int) -> float:
        return self.alpha / max(n_features, 1) if self.bonferroni else self.alpha


def compare_numeric(baseline: Mapping[str, Any], values: np.ndarray) -> dict[str, Any]:
    """One numeric feature of a window against its baseline profile: PSI on the baseline's bins, KS."""
    values = np.asarray(values, dtype=np.float64).ravel()
    finite = values[np.isfinite(values)]
    edges = baseline.get("edges", [])
    current = bin_counts(edges, finite)
    out: dict[str, Any] = {
        "kind": "numeric",
        "rows": int(values.size),
        "missing_share": float(1 - finite.size / values.size) if values.size else 0.0,
        "baseline_missing_share": (baseline.get("missing", 0) / baseline["count"]) if baseline.get("count") else 0.0,
        "baseline_mean": baseline.get("mean"),
        "current_mean": float(finite.mean()) if finite.size else None,
        "baseline_std": baseline.get("std"),
        "current_std": float(finite.std()) if finite.size else None,
        "edges": list(edges),
        "baseline_counts": list(baseline.get("counts", [])),
        "current_counts": current,
        "psi": psi(baseline.get("counts", []), current) if finite.size else 0.0,
        "test": "ks",
        "statistic": None,
        "p_value": None,
    }
    sample = baseline.get("sample")
    if sample and finite.size:
        out["statistic"], out["p_value"] = ks_2samp(np.asarray(sample, np.float64), finite)
    return out


def compare_categorical(baseline: Mapping[str, Any], values: np.ndarray, top: int = 5) -> dict[str, Any]:
    """One categorical feature against its baseline: PSI and chi-square over the baseline's categories
    plus one bucket for every category the baseline never saw."""
    known = dict(baseline.get("frequencies", {}))
    seen = categorical_profile(values)["frequencies"] if np.asarray(values).size else {}
    names = list(known)
    base = [known[c] for c in names] + [0]
    unseen = {c: n for c, n in seen.items() if c not in known}
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
        "unseen": dict(sorted(unseen.items(), key=lambda kv: -kv[1])[:top]),
        "psi": psi(base, cur) if sum(cur) else 0.0,
        "test": "chi2",
        "statistic": stat,
        "dof": dof,
        "p_value": p if sum(cur) else None,
    }


def compare_prediction(baseline: Mapping[str, Any], labels: np.ndarray) -> dict[str, Any]:
    """Prediction drift: PSI (and chi-square) of predicted-class counts, or PSI of the score histogram."""
    labels = np.asarray(labels).ravel()
    if baseline.get("kind") == "classes":
        classes = list(baseline["counts"])
        as_text = labels.astype(str)
        cur = [int(np.sum(as_text == c)) for c in classes]
        cur.append(int(labels.size - sum(cur)))
        base = [baseline["counts"][c] for c in classes] + [0]
        stat, dof, p = chi2_homogeneity(base, cur)
        return {
            "kind": "classes",
            "categories": [*classes, UNSEEN],
            "baseline_counts": base,
            "current_counts": cur,
            "psi": psi(base, cur) if labels.size else 0.0,
            "statistic": stat,
            "dof": dof,
            "p_value": p,
        }
    result = compare_numeric(baseline, labels.astype(np.float64))
    result["kind"] = "scores"
    return result


def compare_window(
    baseline: Mapping[str, Any],
    columns: Mapping[str, np.ndarray],
    predictions: np.ndarray,
    thresholds: DriftThresholds = DriftThresholds(),
) -> dict[str, Any]:
    """Judge one window of one model version against that version's baseline.

    ``columns`` maps each baseline feature to its values in the window (missing ones count as missing);
    ``predictions`` holds the predicted labels (classifiers) or scores (regressors).
    """
    rows = int(predictions.size) if predictions is not None else 0
    features = baseline["features"]
    result: dict[str, Any] = {"rows": rows, "baseline_rows": baseline.get("rows"), "min_rows": thresholds.min_rows}
    if rows < thresholds.min_rows:
        result.update(status="insufficient_data", features={}, drifted_features=[], breaches=[], alarm=False)
        return result
    alpha = thresholds.alpha_per_feature(len(features))
    judged: dict[str, dict[str, Any]] = {}
    for name, profile in features.items():
        values = columns.get(name)
        if "frequencies" in profile:
            cmp = compare_categorical(profile, values if values is not None else np.full(rows, MISSING_CATEGORY))
        else:
            cmp = compare_numeric(profile, values if values is not None else np.full(rows, np.nan))
        p = cmp["p_value"]
        cmp["significant"] = p is not None and p < alpha
        cmp["drifted"] = bool(
            (cmp["significant"] and cmp["psi"] >= thresholds.min_effect_psi) or cmp["psi"] >= thresholds.psi
        )
        judged[name] = cmp
    drifted = sorted((n for n, c in judged.items() if c["drifted"]), key=lambda n: -judged[n]["psi"])
    worst = max(judged, key=lambda n: judged[n]["psi"]) if judged else None
    prediction = compare_prediction(baseline["prediction"], predictions)
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
