"""Derived features (``[[dataset.derive]]``) are part of the model: no skew between training and serving.

The demo bins ``mean_area`` into ``size_band`` (edges 500 and 1000). Clients send ``mean_area``; the served
ONNX graph derives ``size_band`` itself. The derived value is not an output, so these tests pin it through
the prediction: the demo's logistic regression gives each band (and the missing category) a distinct
probability for the same row, so matching scikit-learn's probability on the training-time band, and no
other, shows the graph derived that band.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modeldeck.batch import score_file
from modeldeck.onnxmodel import OnnxModel
from modeldeck.spec import ModelSpec
from tests.fixtures.inference import MODEL, ROW, call

PREDICT = f"/v1/models/{MODEL}:predict"
# A raw client row: the demo's numeric inputs, without mean_area.
BASE: dict[str, Any] = {k: v for k, v in ROW.items() if k != "mean_area"}
# mean_area on each edge, just above it, below the first, above the last, and missing; with the band
# pandas.cut gives on right-closed bins.
AREAS: list[tuple[float | None, str]] = [
    (500.0, "small"),
    (500.5, "medium"),
    (1000.0, "medium"),
    (1000.5, "large"),
    (100.0, "small"),
    (3000.0, "large"),
    (None, ""),
]
BANDS = ("small", "medium", "large", "")


def raw_rows() -> list[dict[str, Any]]:
    return [{**BASE, "mean_area": area} for area, _ in AREAS]


@pytest.fixture(scope="module")
def fitted(demo_spec: ModelSpec) -> tuple[Any, list[str]]:
    """The demo's scikit-learn Pipeline, fitted as training fits it, and the columns it was fitted on."""
    from training.datasets import load_dataset
    from training.train import fit_model

    pipeline, parts = fit_model(demo_spec, load_dataset(demo_spec))
    return pipeline, list(parts.train_x.columns)


def sklearn_proba(fitted: tuple[Any, list[str]], rows: list[dict[str, Any]], bands: list[str]) -> np.ndarray:
    """scikit-learn's probabilities for raw rows whose size_band is given."""
    pipeline, columns = fitted
    frame = pd.DataFrame([{**r, "size_band": b} for r, b in zip(rows, bands, strict=True)])
    frame["mean_area"] = frame["mean_area"].astype(np.float64)
    return np.asarray(pipeline.predict_proba(frame[columns]))


def test_batch_scores_raw_data_that_lacks_the_derived_column(trained_demo: Any, tmp_path: Path) -> None:
    # Given a CSV of raw rows: mean_area, and no size_band column
    source = tmp_path / "raw.csv"
    pd.DataFrame(raw_rows()).to_csv(source, index=False)
    # When it is scored in batch
    result = score_file(OnnxModel(trained_demo.card, trained_demo.onnx), source, tmp_path / "scored.csv")
    # Then every row is scored
    assert result.rows == len(AREAS)


def test_a_raw_row_gets_the_same_band_and_prediction_online_in_batch_and_in_training(
    handler: ModuleType, trained_demo: Any, fitted: tuple[Any, list[str]], tmp_path: Path
) -> None:
    rows = raw_rows()
    # Given raw rows (mean_area on and around the bin edges, and missing)
    # When they are scored online, through the inference handler
    reply = call(handler, "POST", PREDICT, {"instances": rows})
    assert reply.status == 200, reply.json
    online = np.asarray(reply.json["probabilities"])
    # And in batch, from a file
    source, scored = tmp_path / "raw.csv", tmp_path / "scored.jsonl"
    pd.DataFrame(rows).to_csv(source, index=False)
    score_file(OnnxModel(trained_demo.card, trained_demo.onnx), source, scored)
    batch_rows = [json.loads(line) for line in scored.read_text().splitlines()]
    batch = np.asarray([r["probabilities"] for r in batch_rows])
    # And as training derives them
    from training.datasets import derive_column

    derivation = trained_demo.card.schema.derived[0]
    areas = np.array([np.nan if a is None else a for a, _ in AREAS], dtype=np.float32).astype(np.float64)
    trained_bands = derive_column(areas, derivation)
    training = sklearn_proba(fitted, rows, trained_bands)
    # Then training derives the band pandas.cut gives on right-closed bins (NaN: the missing category)
    assert trained_bands == [band for _, band in AREAS]
    # And online, batch and training agree on every row's probabilities and predictions
    assert np.allclose(online, training, atol=1e-6) and np.allclose(batch, training, atol=1e-6)
    labels = [trained_demo.card.classes[i] for i in training.argmax(axis=1)]
    assert reply.json["predictions"] == [r["prediction"] for r in batch_rows] == labels
    # And no other band would have given those probabilities: the served graph derived the same band
    for i, band in enumerate(trained_bands):
        for other in BANDS:
            if other != band:
                gap = np.abs(sklearn_proba(fitted, [rows[i]], [other])[0] - online[i]).max()
                assert gap > 1e-3, f"row {i}: band {other!r} is indistinguishable from {band!r}"
