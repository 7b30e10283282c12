"""From a spec and its dataset to a verified artifact, its card and its drift baseline."""

from __future__ import annotations

import importlib
import os
import platform
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

import modeldeck
from modeldeck.card import ModelCard, TensorSpec
from modeldeck.errors import ParityError, SpecError
from modeldeck.metrics import evaluate
from modeldeck.onnxmodel import OnnxModel
from modeldeck.registry import sha256
from modeldeck.schema import FeatureSchema
from modeldeck.spec import BOOSTER_ESTIMATORS, ModelSpec
from modeldeck.stats import build_baseline
from training import onnx_export, pipeline
from training.datasets import Dataset

HOLDOUT_MAX_ROWS = 5000
Progress = Callable[[str], None]


@dataclass(frozen=True)
class TrainedModel:
    """Everything one training run produces; nothing here has touched the registry yet."""

    card: ModelCard
    onnx: bytes
    baseline: dict[str, Any]
    holdout: dict[str, Any]


def code_version() -> str:
    """The package version plus the git commit it was trained from, when there is one."""
    commit = os.environ.get("MODELDECK_CODE_VERSION")
    if commit is None:
        try:
            commit = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                cwd=Path(__file__).parent,
                timeout=5,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            commit = "unknown"
    return f"{modeldeck.__version__}+{commit}"


def library_versions(spec: ModelSpec | None = None) -> dict[str, str]:
    """The versions of what trained and converted the model; for a booster, its library and onnxmltools too."""
    names = ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy", "pandas")
    versions = {n: metadata.version(n) for n in names}
    if spec is not None and spec.estimator.class_path in BOOSTER_ESTIMATORS:
        # By module: xgboost ships as the distribution xgboost-cpu (or xgboost), the same importable package.
        for module in (spec.estimator.class_path.split(".", 1)[0], "onnxmltools"):
            versions[module] = importlib.import_module(module).__version__
    versions["python"] = platform.python_version()
    return versions


def columns_of(schema: FeatureSchema, frame: Any) -> dict[str, np.ndarray]:
    """A frame as ONNX input columns (float32 numerics, object strings), each (n, 1)."""
    return {f.name: frame[f.name].to_numpy(np.float32 if f.numeric else object).reshape(-1, 1) for f in schema.features}


def fit_model(spec: ModelSpec, data: Dataset) -> tuple[Any, pipeline.Split]:
    """Split deterministically (seeded) and fit the whole Pipeline."""
    parts = pipeline.split(spec, data)
    fitted = pipeline.fit(spec, parts)
    if spec.task == "classification" and not hasattr(fitted, "predict_proba"):
        raise SpecError(
            f"estimator.params: {spec.estimator.class_path.rsplit('.', 1)[-1]} does not give class "
            "probabilities, which modeldeck serves; enable them (for SVC: probability = true)"
        )
    return fitted, parts


def package_model(
    spec: ModelSpec, data: Dataset, fitted: Any, parts: pipeline.Split, progress: Progress = lambda stage: None
) -> TrainedModel:
    """Convert, parity-check, evaluate and profile a fitted pipeline. Raises before anything is registered."""
    progress("convert")
    onnx_bytes = onnx_export.convert(fitted, spec)

    progress("parity")
    # sklearn scores the derived features training computed; the graph derives them from the raw inputs.
    inputs = spec.input_schema
    holdout_cols = columns_of(inputs, parts.test_x)
    draft = _draft_card(spec, data, fitted, onnx_bytes, parts)
    session = _session(draft, onnx_bytes)
    outputs = _run(session, holdout_cols)
    scale = float(np.std(data.target)) if spec.task == "regression" else 1.0
    parity = onnx_export.check_parity(fitted, outputs, parts.test_x, spec.task, target_scale=scale)

    progress("evaluate")
    # Metrics are computed on the ONNX outputs: they describe the artifact that will serve.
    classes = draft.classes
    metrics = evaluate(
        spec.task, parts.test_y, outputs[0].ravel(), outputs[1] if spec.task == "classification" else None, classes
    )

    progress("baseline")
    # Drift is judged on what capture holds: the raw inputs.
    train_cols = columns_of(inputs, parts.train_x)
    train_out = _run(session, train_cols)
    baseline = build_baseline(
        inputs,
        train_cols,
        train_out[0].ravel() if classes else None,
        None if classes else train_out[0].ravel(),
        classes,
    )
    card = replace(draft, metrics=metrics, parity=parity.to_dict())
    return TrainedModel(card=card, onnx=onnx_bytes, baseline=baseline, holdout=_holdout(spec, parts))


def train_model(spec: ModelSpec, data: Dataset, progress: Progress = lambda stage: None) -> TrainedModel:
    """Train, convert, parity-check, evaluate and profile: everything short of registering."""
    progress("train")
    fitted, parts = fit_model(spec, data)
    return package_model(spec, data, fitted, parts, progress)


def _session(card: ModelCard, onnx_bytes: bytes) -> OnnxModel:
    try:
        return OnnxModel(card, onnx_bytes)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ParityError(
            f"onnxruntime cannot load the converted graph: {str(exc).splitlines()[0][:300]}. Nothing was registered."
        ) from None


def _run(model: OnnxModel, columns: dict[str, np.ndarray]) -> list[np.ndarray]:
    try:
        return model.run(columns)
    except Exception as exc:  # onnxruntime raises its own exception types
        first_line = str(exc).splitlines()[0][:300]
        raise ParityError(
            f"onnxruntime cannot run the converted graph of {model.card.estimator}: {first_line}. "
            "Nothing was registered."
        ) from None


def _draft_card(spec: ModelSpec, data: Dataset, fitted: Any, onnx_bytes: bytes, parts: pipeline.Split) -> ModelCard:
    estimator = fitted.named_steps["estimator"]
    classes = [c.item() if isinstance(c, np.generic) else c for c in getattr(estimator, "classes_", [])] or None
    schema = spec.input_schema
    if spec.schema.categorical:
        encoder = fitted.named_steps["preprocess"].named_transformers_["categorical"]
        cats = zip(spec.schema.categorical, encoder.categories_, strict=True)
        # Only raw categorical inputs keep what training saw; a derived feature's categories are its labels.
        schema = schema.with_categories({f.name: [str(c) for c in seen] for f, seen in cats})
    label_type = "BYTES" if classes and isinstance(classes[0], str) else "INT64"
    outputs = (
        [TensorSpec("label", label_type, [-1]), TensorSpec("probabilities", "FP32", [-1, len(classes)])]
        if classes
        else [TensorSpec("variable", "FP32", [-1, 1])]
    )
    return ModelCard(
        name=spec.name,
        task=spec.task,
        schema=schema,
        outputs=outputs,
        onnx_sha256=sha256(onnx_bytes),
        onnx_bytes=len(onnx_bytes),
        opset=onnx_export.opset_of(onnx_bytes),
        dataset={
            "source": data.source,
            "version_id": data.version_id,
            "sha256": data.sha256,
            "rows": data.rows,
            "train_rows": len(parts.train_x),
            "holdout_rows": len(parts.test_x),
        },
        spec=spec.to_dict(),
        spec_sha256=spec.sha256,
        estimator=spec.estimator.class_path,
        hyperparameters=pipeline.hyperparameters(fitted),
        metrics={},
        primary_metric=spec.training.primary_metric,
        parity={},
        seed=spec.training.seed,
        code_version=code_version(),
        libraries=library_versions(spec),
        classes=classes,
        extra={"scaled": pipeline.wants_scaling(spec)},
    )


def _holdout(spec: ModelSpec, parts: pipeline.Split) -> dict[str, Any]:
    """Holdout rows for diffs and the release gate, capped (evenly spaced) so the file stays small."""
    n = len(parts.test_x)
    idx = np.arange(n) if n <= HOLDOUT_MAX_ROWS else np.linspace(0, n - 1, HOLDOUT_MAX_ROWS).round().astype(int)
    columns = {f.name: parts.test_x[f.name].to_numpy()[idx].tolist() for f in spec.input_schema.features}
    target = parts.test_y[idx]
    return {"columns": columns, "target": target.tolist()}
