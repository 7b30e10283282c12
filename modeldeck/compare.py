"""The differential test: two versions scored side by side on the newer version's holdout.

Both artifacts run through onnxruntime (no scikit-learn), so the release gate can use this on Lambda.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from modeldeck.errors import RegistryError, ValidationError
from modeldeck.metrics import evaluate
from modeldeck.onnxmodel import OnnxModel
from modeldeck.registry import HOLDOUT, Registry
from modeldeck.spec import LOWER_IS_BETTER


@dataclass(frozen=True)
class Diff:
    name: str
    old: int
    new: int
    rows: int
    agreement: float
    metrics_old: dict[str, float]
    metrics_new: dict[str, float]
    primary_metric: str
    tolerance: float

    @property
    def regression(self) -> float:
        """How much worse the new version is on the primary metric (negative means better)."""
        old, new = self.metrics_old[self.primary_metric], self.metrics_new[self.primary_metric]
        return new - old if self.primary_metric in LOWER_IS_BETTER else old - new

    @property
    def passed(self) -> bool:
        return self.regression <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "regression": self.regression, "passed": self.passed}


def load_model(registry: Registry, name: str, version: int) -> OnnxModel:
    card = registry.get_card(name, version)
    return OnnxModel(card, registry.get_model_bytes(card))


def diff(registry: Registry, name: str, old: int, new: int) -> Diff:
    """Score registered versions ``old`` and ``new`` on ``new``'s holdout."""
    return diff_models(
        load_model(registry, name, old), load_model(registry, name, new), registry.get_json(name, new, HOLDOUT)
    )


def diff_models(old_model: OnnxModel, new_model: OnnxModel, holdout: dict[str, Any]) -> Diff:
    """Metrics side by side and prediction agreement of two models on one holdout."""
    target = np.asarray(holdout["target"])
    results = []
    for model in (old_model, new_model):
        tensor = model.card.tensor_input
        try:
            if tensor is not None:  # a tensor model's holdout: its input batch, nested (modeldeck.byo)
                if "tensor" not in holdout:
                    raise ValidationError(f"no input tensor {tensor.name!r} in the holdout")
                columns = {tensor.name: np.asarray(holdout["tensor"], dtype=tensor.dtype)}
            else:
                columns = model.card.schema.columns_from_arrays(holdout["columns"])
        except ValidationError as exc:
            raise RegistryError(
                f"cannot score v{model.card.version} on v{new_model.card.version}'s holdout: {exc}"
            ) from None
        pred = model.predict(columns)
        metrics = evaluate(model.card.task, target, pred.labels, pred.probabilities, model.card.classes)
        results.append((pred, metrics))
    (pred_old, m_old), (pred_new, m_new) = results
    if new_model.card.task == "classification":
        agree = float(np.mean(pred_old.labels == pred_new.labels))
    else:
        scale = float(np.std(target)) or 1.0
        # Regressors "agree" when they are within 5% of the target's spread of each other.
        agree = float(np.mean(np.abs(pred_old.labels - pred_new.labels) <= 0.05 * scale))
    spec = new_model.card.spec["training"]
    return Diff(
        name=new_model.card.name,
        old=old_model.card.version,
        new=new_model.card.version,
        rows=int(target.size),
        agreement=agree,
        metrics_old=m_old,
        metrics_new=m_new,
        primary_metric=spec["primary_metric"],
        tolerance=float(spec["tolerance"]),
    )
