"""The training pipeline's steps, one Step Functions task each, run by the training Lambda.

Each step is a pure function of its event plus an injected S3 client. Steps hand artifacts to each
other through a staging prefix keyed by the execution (``staging/{model}/{run_id}/``), so a retried
step redoes exactly its own work, and nothing reaches ``models/`` until ``register``. The split is
seeded, so steps recompute it instead of staging the data.

Event (every step): ``{"step": ..., "model": name, "run_id": execution name, "spec": {...}}`` where
``spec`` is the parsed spec (the CLI sends the TOML it was given); without it the step reads
``models/{model}.toml`` from the code bundle.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib

from modeldeck.card import ModelCard
from modeldeck.compare import diff_models
from modeldeck.errors import SpecError
from modeldeck.metrics import evaluate as score
from modeldeck.onnxmodel import OnnxModel
from modeldeck.registry import BASELINE, HOLDOUT, Registry
from modeldeck.spec import ModelSpec, load_spec, parse_spec
from training.datasets import Dataset, load_dataset
from training.train import TrainedModel, fit_model, package_model

REPO = Path(__file__).resolve().parent.parent
STEPS = ("validate", "train", "evaluate", "convert", "compare", "register")


@dataclass(frozen=True)
class StepContext:
    """What a step acts on: the registry bucket (through an injected client, which retries throttling and
    transient errors itself: ``modeldeck.aws.client_config``) and where specs live."""

    s3: Any
    bucket: str
    specs_dir: Path = REPO / "models"

    @property
    def registry(self) -> Registry:
        return Registry(self.s3, self.bucket)


def spec_of(event: dict[str, Any], ctx: StepContext) -> ModelSpec:
    if isinstance(event.get("spec"), dict):
        return parse_spec(event["spec"], origin=f"{event.get('model')} (from the execution input)")
    model = event.get("model")
    if not isinstance(model, str) or "/" in model or not model:
        raise SpecError("the execution input needs 'model' (a model name) or 'spec'")
    return load_spec(ctx.specs_dir / f"{model}.toml")


def _staging(spec: ModelSpec, event: dict[str, Any], filename: str) -> str:
    run_id = str(event.get("run_id") or "manual")
    return f"staging/{spec.name}/{run_id}/{filename}"


def _put(ctx: StepContext, key: str, body: bytes) -> None:
    ctx.s3.put_object(Bucket=ctx.bucket, Key=key, Body=body)


def _get(ctx: StepContext, key: str) -> bytes:
    return bytes(ctx.s3.get_object(Bucket=ctx.bucket, Key=key)["Body"].read())


def _data(spec: ModelSpec, ctx: StepContext) -> Dataset:
    return load_dataset(spec, base_dir=ctx.specs_dir, s3=ctx.s3)


def validate(event: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Check the spec and the dataset against each other; nothing is written."""
    spec = spec_of(event, ctx)
    data = _data(spec, ctx)
    return {"model": spec.name, "rows": data.rows, "dataset_sha256": data.sha256, "spec_sha256": spec.sha256}


def train(event: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Fit the Pipeline and stage it (joblib) for the next steps."""
    spec = spec_of(event, ctx)
    fitted, parts = fit_model(spec, _data(spec, ctx))
    buffer = io.BytesIO()
    joblib.dump(fitted, buffer)
    key = _staging(spec, event, "pipeline.joblib")
    _put(ctx, key, buffer.getvalue())
    return {"pipeline": key, "train_rows": len(parts.train_x), "holdout_rows": len(parts.test_x)}


def _fitted(spec: ModelSpec, event: dict[str, Any], ctx: StepContext) -> Any:
    return joblib.load(io.BytesIO(_get(ctx, _staging(spec, event, "pipeline.joblib"))))


def evaluate(event: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Score the fitted scikit-learn pipeline on the holdout (the ONNX artifact is scored at convert)."""
    from training.pipeline import split

    spec = spec_of(event, ctx)
    parts = split(spec, _data(spec, ctx))
    fitted = _fitted(spec, event, ctx)
    proba = fitted.predict_proba(parts.test_x) if spec.task == "classification" else None
    classes = list(fitted.classes_) if spec.task == "classification" else None
    classes = [c.item() if hasattr(c, "item") else c for c in classes] if classes else None
    metrics = score(spec.task, parts.test_y, fitted.predict(parts.test_x), proba, classes)
    return {"metrics": metrics, "primary_metric": spec.training.primary_metric}


def convert(event: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Convert to ONNX, run the parity gate, profile the baseline; stage the artifact and its card."""
    from training.pipeline import split

    spec = spec_of(event, ctx)
    data = _data(spec, ctx)
    trained = package_model(spec, data, _fitted(spec, event, ctx), split(spec, data))
    _put(ctx, _staging(spec, event, "model.onnx"), trained.onnx)
    _put(ctx, _staging(spec, event, "card.json"), trained.card.to_json())
    _put(ctx, _staging(spec, event, BASELINE), json.dumps(trained.baseline).encode())
    _put(ctx, _staging(spec, event, HOLDOUT), json.dumps(trained.holdout).encode())
    return {"onnx_sha256": trained.card.onnx_sha256, "parity": trained.card.parity, "metrics": trained.card.metrics}


def _staged(spec: ModelSpec, event: dict[str, Any], ctx: StepContext) -> TrainedModel:
    card = ModelCard.from_json(_get(ctx, _staging(spec, event, "card.json")))
    return TrainedModel(
        card=card,
        onnx=_get(ctx, _staging(spec, event, "model.onnx")),
        baseline=json.loads(_get(ctx, _staging(spec, event, BASELINE))),
        holdout=json.loads(_get(ctx, _staging(spec, event, HOLDOUT))),
    )


def compare(event: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """The differential test against the champion, on the candidate's holdout. No champion: it passes."""
    spec = spec_of(event, ctx)
    candidate = _staged(spec, event, ctx)
    registry = ctx.registry
    champion = registry.get_champion(spec.name)
    if champion is None:
        return {"champion": None, "passed": True, "reason": "no champion yet: the first model is compared to nothing"}
    champ_card = registry.get_card(spec.name, champion)
    result = diff_models(
        OnnxModel(champ_card, registry.get_model_bytes(champ_card)),
        OnnxModel(candidate.card, candidate.onnx),
        candidate.holdout,
    )
    verdict = "passes" if result.passed else "fails"
    return {
        "champion": champion,
        "passed": result.passed,
        "agreement": result.agreement,
        "regression": result.regression,
        "metrics_champion": result.metrics_old,
        "metrics_candidate": result.metrics_new,
        "reason": f"{verdict}: {result.primary_metric} regression {result.regression:+.4f} "
        f"(tolerance {result.tolerance}), agreement {result.agreement:.2%}",
    }


def register(event: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Register the staged artifact (card last). Idempotent: a retry returns the same version."""
    spec = spec_of(event, ctx)
    staged = _staged(spec, event, ctx)
    card, created = ctx.registry.register(
        staged.card, staged.onnx, {BASELINE: staged.baseline, HOLDOUT: staged.holdout}
    )
    return {"model": card.name, "version": card.version, "created": created, "onnx_sha256": card.onnx_sha256}


def run_step(event: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    step = event.get("step")
    if step not in STEPS:
        raise SpecError(f"unknown pipeline step {step!r}; expected one of {', '.join(STEPS)}")
    return globals()[step](event, ctx)
