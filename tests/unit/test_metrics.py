"""The numpy metrics the release gate uses agree with scikit-learn's."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from modeldeck import metrics


@pytest.fixture
def binary() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.where(rng.random(500) < 0.4, "malignant", "benign")
    p1 = np.clip(rng.random(500) * 0.6 + (y == "malignant") * 0.3, 0, 1).round(2)  # rounding creates ties
    proba = np.column_stack([1 - p1, p1])
    pred = np.where(p1 > 0.5, "malignant", "benign")
    return y, pred, proba


def test_binary_metrics_match_sklearn(binary: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    y, pred, proba = binary
    classes = ["benign", "malignant"]
    got = metrics.evaluate("classification", y, pred, proba, classes)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert got["f1"] == pytest.approx(skm.f1_score(y, pred, pos_label="malignant"), abs=1e-12)
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y == "malignant", proba[:, 1]), abs=1e-12)
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, proba, labels=classes), abs=1e-9)


def test_multiclass_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    proba = rng.dirichlet(np.ones(3), 300)
    pred = proba.argmax(axis=1)
    got = metrics.evaluate("classification", y, pred, proba, [0, 1, 2])
    assert got["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=1e-12)
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr", average="macro"), abs=1e-12)


def test_regression_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(size=200)
    pred = y + rng.normal(scale=0.3, size=200)
    got = metrics.evaluate("regression", y, pred)
    assert got["r2"] == pytest.approx(skm.r2_score(y, pred), abs=1e-12)
    assert got["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, pred)), abs=1e-12)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, pred), abs=1e-12)
