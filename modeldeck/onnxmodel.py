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

    def run(self, columns: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Raw outputs, in the card's output order."""
        return self.session.run(self.output_names, dict(columns))

    def predict(self, columns: Mapping[str, np.ndarray]) -> Prediction:
        outputs = self.run(columns)
        if self.card.task == "classification":
            return Prediction(labels=outputs[0].ravel(), probabilities=outputs[1])
        return Prediction(labels=outputs[0].ravel(), probabilities=None)


def json_values(array: np.ndarray) -> list[Any]:
    """A flat JSON-ready list from an output tensor."""
    return array.ravel().tolist()
