"""Running a registered ONNX pipeline: the one place that turns validated columns into predictions.

Used by the inference Lambda, batch scoring, diffs and the release gate. Imports onnxruntime and
numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from modeldeck.card import ModelCard


@dataclass(frozen=True)
class Prediction:
    """What a model returned for a batch. ``probabilities`` is None for regressors."""

    labels: np.ndarray
    probabilities: np.ndarray | None

    def __len__(self) -> int:
        return int(self.labels.shape[0])


class OnnxModel:
    """An onnxruntime session plus the card that describes it."""

    def __init__(self, card: ModelCard, model_bytes: bytes, threads: int = 1) -> None:
        options = ort.SessionOptions()
        # One intra-op thread: Lambda's small batches are latency-bound, and a thread pool's wake-ups
        # cost more than they save below a few thousand rows.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.card = card
        self.session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]
        byo = card.byo
        self._reading: dict[str, Any] | None = byo.get("output")
        self._packed: dict[str, Any] | None = byo.get("packed_input")
        self._classes = np.array(card.classes) if self._reading is not None and card.classes else None
        self.tensor = card.tensor_input if "input" in byo else None

    def run(self, columns: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Raw outputs, in the card's output order."""
        if self._packed is not None:
            # A bring-your-own tabular graph taking one [N, F] tensor: the features, in the schema's order.
            dtype = np.float64 if self._packed["datatype"] == "FP64" else np.float32
            matrix = np.hstack([columns[name] for name in self.card.schema.names]).astype(dtype, copy=False)
            return self.session.run(self.output_names, {self._packed["name"]: matrix})
        return self.session.run(self.output_names, dict(columns))

    def predict(self, columns: Mapping[str, np.ndarray]) -> Prediction:
        return self.interpret(self.run(columns))

    def interpret(self, outputs: list[np.ndarray]) -> Prediction:
        """Labels and probabilities from raw outputs: modeldeck's own graphs give ``label`` then
        ``probabilities``; a bring-your-own graph is read as its card declares (``modeldeck.byo``)."""
        reading = self._reading
        if reading is None:
            if self.card.task == "classification":
                return Prediction(labels=outputs[0].ravel(), probabilities=outputs[1])
            return Prediction(labels=outputs[0].ravel(), probabilities=None)
        by_name = dict(zip(self.output_names, outputs, strict=True))
        if self.card.task == "regression":
            return Prediction(labels=by_name[reading["value"]].ravel(), probabilities=None)
        scores = by_name[reading["probabilities"]]
        proba = read_probabilities(scores.reshape(scores.shape[0], -1), reading["postprocess"])
        threshold = float(reading.get("threshold", 0.5))
        if proba.shape[1] == 1:  # one column: the probability of the second (positive) class
            proba = np.hstack([1.0 - proba, proba])
        index = (proba[:, 1] >= threshold).astype(np.intp) if proba.shape[1] == 2 else proba.argmax(axis=1)
        assert self._classes is not None
        labels = by_name[reading["label"]].ravel() if reading.get("label") else self._classes[index]
        return Prediction(labels=labels, probabilities=proba)


def read_probabilities(scores: np.ndarray, postprocess: str) -> np.ndarray:
    """Class probabilities (float32) from a graph's scores: as they are, or through softmax or a sigmoid."""
    scores = scores.astype(np.float32, copy=False)
    if postprocess == "softmax":
        exp = np.exp(scores - scores.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)
    if postprocess == "sigmoid":
        return 1.0 / (1.0 + np.exp(-scores))
    return scores


def json_values(array: np.ndarray) -> list[Any]:
    """A flat JSON-ready list from an output tensor."""
    return array.ravel().tolist()
