"""Drift statistics: the one definition of a baseline profile, shared by training and the drift job.

Training profiles the data a version was fitted on (``build_baseline``); the drift job profiles a
window of captured traffic with the *same* functions and the baseline's bin edges, then compares.
Vectorised numpy only: this runs on Lambda, without scikit-learn or scipy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def prediction_profile(labels: np.ndarray | None, scores: np.ndarray | None,
                       classes: Sequence[Any] | None, edges: Sequence[float] | None = None) -> dict[str, Any]:
    """Class proportions (classifiers) or the score distribution (regressors)."""
    if classes is not None and labels is not None:
        labels = np.asarray(labels).ravel()
        counts = {str(c): int(np.sum(labels == c)) for c in classes}
        return {"kind": "classes", "count": int(labels.size), "counts": counts}
    assert scores is not None
    profile = numeric_profile(np.asarray(scores).ravel(), edges)
    profile["kind"] = "scores"
    return profile


def build_baseline(schema: FeatureSchema, columns: Mapping[str, np.ndarray], labels: np.ndarray | None,
                   scores: np.ndarray | None, classes: Sequence[Any] | None) -> dict[str, Any]:
    """The drift baseline of a version: one profile per feature plus the prediction distribution."""
    features = {f.name: (numeric_profile(columns[f.name]) if f.numeric else categorical_profile(columns[f.name]))
                for f in schema.features}
    rows = int(next(iter(columns.values())).shape[0])
    return {"format": BASELINE_FORMAT, "rows": rows, "features": features,
            "prediction": prediction_profile(labels, scores, classes)}
