"""The model card: everything needed to trace a prediction back to its artifact, data and code."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from modeldeck.schema import FeatureSchema
from modeldeck.tensor import TensorInput

CARD_FORMAT = 1


@dataclass(frozen=True)
class TensorSpec:
    """An ONNX input or output as OIP metadata describes it."""

    name: str
    datatype: str
    shape: list[int]


@dataclass(frozen=True)
class ModelCard:
    """The registry's record of one immutable model version (``card.json``, written last)."""

    name: str
    task: str
    schema: FeatureSchema
    outputs: list[TensorSpec]
    onnx_sha256: str
    onnx_bytes: int
    opset: dict[str, int]
    dataset: dict[str, Any]
    spec: dict[str, Any]
    spec_sha256: str
    estimator: str
    hyperparameters: dict[str, Any]
    metrics: dict[str, float]
    primary_metric: str
    parity: dict[str, Any]
    seed: int
    code_version: str
    libraries: dict[str, str]
    classes: list[Any] | None = None
    version: int = 0
    parent_version: int | None = None
    created_at: str = ""
    format: int = CARD_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """Identity of the content: the same spec, data and artifact register as the same version."""
        raw = f"{self.spec_sha256}:{self.dataset.get('sha256')}:{self.onnx_sha256}"
        return hashlib.sha256(raw.encode()).hexdigest()

    @property
    def byo(self) -> dict[str, Any]:
        """How a bring-your-own model is read (``modeldeck.byo``); empty for a model modeldeck trained."""
        return dict(self.extra.get("byo") or {})

    @property
    def tensor_input(self) -> TensorInput | None:
        """The one input tensor of a tensor-input model; its ``schema`` then holds the summary features."""
        raw = self.byo.get("input")
        return None if raw is None else TensorInput.from_dict(raw)

    @property
    def inputs(self) -> list[TensorSpec]:
        tensor = self.tensor_input
        if tensor is not None:
            return [TensorSpec(tensor.name, tensor.datatype, list(tensor.shape))]
        return [TensorSpec(f.name, f.datatype, [-1, 1]) for f in self.schema.features]

    def with_version(self, version: int, parent: int | None, created_at: str) -> ModelCard:
        return replace(self, version=version, parent_version=parent, created_at=created_at)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["schema"] = self.schema.to_dict()
        data["fingerprint"] = self.fingerprint
        return data

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True).encode()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["schema"] = FeatureSchema.from_dict(data["schema"])
        fields["outputs"] = [TensorSpec(**o) for o in data["outputs"]]
        return cls(**fields)

    @classmethod
    def from_json(cls, raw: bytes | str) -> ModelCard:
        return cls.from_dict(json.loads(raw))
