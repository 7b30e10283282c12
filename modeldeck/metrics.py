"""Evaluation metrics in plain numpy, so the release gate can score models on Lambda without sklearn.

Training uses the same functions, so the card's metrics and the gate's are computed one way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def f1(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[Any]) -> float:
    """Binary F1 on the positive (last) class; macro F1 for more than two classes."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = [classes[-1]] if len(classes) == 2 else list(classes)
    scores = []
    for label in labels:
        tp = np.sum((y_pred == label) & (y_true == label))
        fp = np.sum((y_pred == label) & (y_true != label))
        fn = np.sum((y_pred != label) & (y_true == label))
        denom = 2 * tp + fp + fn
        scores.append(0.0 if denom == 0 else 2 * tp / denom)
    return float(np.mean(scores))


def _binary_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney U with average ranks for ties (equals sklearn's roc_auc_score)."""
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(scores.size, dtype=np.float64)
    # Average ranks over runs of tied scores.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [scores.size]))
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[Any]) -> float:
    """Binary AUC on the last class's probability; one-vs-rest macro AUC for multiclass."""
    y_true = np.asarray(y_true)
    if len(classes) == 2:
        return _binary_auc(y_true == classes[1], proba[:, 1].astype(np.float64))
    return float(np.mean([_binary_auc(y_true == c, proba[:, i].astype(np.float64)) for i, c in enumerate(classes)]))


def log_loss(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[Any]) -> float:
    index = {c: i for i, c in enumerate(classes)}
    idx = np.array([index[v] for v in np.asarray(y_true).tolist()])
    p = np.clip(proba.astype(np.float64), 1e-15, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(p[np.arange(idx.size), idx])))


def r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = np.asarray(y_true, np.float64).ravel(), np.asarray(y_pred, np.float64).ravel()
    ss_tot = np.sum((y_true - y_true.mean()) ** 2)
    return float(1 - np.sum((y_true - y_pred) ** 2) / ss_tot) if ss_tot else 0.0


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    diff = np.asarray(y_true, np.float64).ravel() - np.asarray(y_pred, np.float64).ravel()
    return float(np.sqrt(np.mean(diff**2)))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    diff = np.asarray(y_true, np.float64).ravel() - np.asarray(y_pred, np.float64).ravel()
    return float(np.mean(np.abs(diff)))


def evaluate(
    task: str,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    proba: np.ndarray | None = None,
    classes: Sequence[Any] | None = None,
) -> dict[str, float]:
    """Every metric the spec can name as primary, for the task."""
    if task == "regression":
        return {"r2": r2(y_true, y_pred), "rmse": rmse(y_true, y_pred), "mae": mae(y_true, y_pred)}
    assert proba is not None and classes is not None
    return {
        "accuracy": accuracy(y_true, y_pred),
        "f1": f1(y_true, y_pred, classes),
        "roc_auc": roc_auc(y_true, proba, classes),
        "log_loss": log_loss(y_true, proba, classes),
    }
