"""The training pipeline's steps, one Step Functions task each, run by the training Lambda.

Each step is a pure function of its event plus an injected S3 client. Steps hand artifacts to each
other through a staging prefix keyed by the execution (``staging/{model}/{run_id}/``), so a retried
step redoes exactly its own work, and nothing reaches ``models/`` until ``register``. The split is
seeded, so steps recompute it instead of staging the data.

Event (every step): ``{"step": ..., "model": name, "run_id": execution name, "spec": {...}, "spec_dir": dir}``
where ``spec`` is the parsed spec (the CLI sends the TOML it was given); without it the step reads
``models/{model}.toml`` from the code bundle. ``spec_dir`` (may be empty) is where a relative dataset path is
read from; the card keeps the path as the spec wrote it.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
from botocore.exceptions import ClientError

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
# Run before the steps by the state machine (one training per model at a time).
CONTROL_STEPS = ("lock",)


@dataclass(frozen=True)
class StepContext:
    """What a step acts on: the registry bucket (through an injected client, which retries throttling and
    transient errors itself: ``modeldeck.aws.client_config``) and where specs live."""

    s3: Any
    bucket: str
    specs_dir: Path = REPO / "models"
    states: Any = None  # Step Functions, to tell a live lock holder from a dead one (lock)

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


def _data(spec: ModelSpec, event: dict[str, Any], ctx: StepContext) -> Dataset:
    """The spec's dataset; a relative path is read from the execution's ``spec_dir`` (where the CLI found the
    spec), else from the bundled specs' directory."""
    base = Path(event["spec_dir"]) if event.get("spec_dir") else ctx.specs_dir
    return load_dataset(spec, base_dir=base, s3=ctx.s3)


def validate(event: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Check the spec and the dataset against each other, and stage the execution's spec as given.

    The staged spec (``staged_spec``) is what a SageMaker train job reads: job hyperparameters are limited
    to 2,500 characters each, too small for a spec.
    """
    spec = spec_of(event, ctx)
    data = _data(spec, event, ctx)
    staged = _staging(spec, event, "spec.json")
    _put(ctx, staged, json.dumps(event.get("spec", "bundled")).encode())
    return {
        "model": spec.name,
        "rows": data.rows,
        "dataset_sha256": data.sha256,
        "spec_sha256": spec.sha256,
        "staged_spec": staged,
    }


def train(event: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Fit the Pipeline and stage it (joblib) for the next steps."""
    spec = spec_of(event, ctx)
    fitted, parts = fit_model(spec, _data(spec, event, ctx))
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
    parts = split(spec, _data(spec, event, ctx))
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
    data = _data(spec, event, ctx)
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


def _lock_key(event: dict[str, Any]) -> str:
    model = event.get("model")
    if not isinstance(model, str) or "/" in model or not model:
        raise SpecError("the execution input needs 'model' (a model name)")
    return f"staging/{model}/lock.json"


def _running(ctx: StepContext, execution: str) -> bool:
    try:
        return bool(ctx.states.describe_execution(executionArn=execution)["status"] == "RUNNING")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ExecutionDoesNotExist":
            return False
        raise


def lock(event: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """One training per model at a time: take ``staging/{model}/lock.json`` for this execution.

    Several drift alarms of one model fire together, and each starts the training state machine. The lock
    is an S3 conditional write (``If-None-Match: *``; S3 is strongly consistent, "Amazon S3 conditional
    requests"), re-entrant for the same execution (a retried step). It is free as soon as its holder no
    longer runs (Step Functions ``DescribeExecution``), whatever way that execution ended (succeeded,
    rejected, failed, timed out, stopped), so no state has to release it; the next execution takes it over
    with ``If-Match`` on the old lock's ETag, so two takers cannot both win.
    """
    key, me = _lock_key(event), str(event["execution"])
    body = json.dumps({"execution": me}).encode()
    try:
        ctx.s3.put_object(Bucket=ctx.bucket, Key=key, Body=body, IfNoneMatch="*")
        return {"acquired": True}
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "ConditionalRequestConflict"):
            raise
    held = ctx.s3.get_object(Bucket=ctx.bucket, Key=key)
    holder = json.loads(held["Body"].read()).get("execution")
    if holder == me:
        return {"acquired": True}
    if holder and _running(ctx, holder):
        return {"acquired": False, "holder": holder}
    try:
        ctx.s3.put_object(Bucket=ctx.bucket, Key=key, Body=body, IfMatch=held["ETag"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "ConditionalRequestConflict"):
            raise
        return {"acquired": False, "holder": "another execution that took over the same stale lock"}
    return {"acquired": True, "took_over": holder}


def run_step(event: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    step = event.get("step")
    if step not in STEPS + CONTROL_STEPS:
        raise SpecError(f"unknown pipeline step {step!r}; expected one of {', '.join(STEPS + CONTROL_STEPS)}")
    return globals()[step](event, ctx)
