"""Batch Lambda: one step of the batch state machine (``event["action"]``: plan, score, manifest).

Logic lives in ``modeldeck.batch``; the model is loaded with the same registry and ONNX session code as the
inference function (``modeldeck.onnxmodel``), once per container and version. A Distributed Map child calls
it with ``{"Items": [...], "BatchInput": {...}}`` (the ItemBatcher's batch), which is the ``score`` action.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger, Tracer

from modeldeck.batch import JobSettings, plan, score_batch, write_manifest
from modeldeck.onnxmodel import OnnxModel
from modeldeck.registry import Registry

logger = Logger(service="modeldeck-batch")
tracer = Tracer(service="modeldeck-batch")


@lru_cache(maxsize=1)
def s3() -> Any:
    from modeldeck.aws import client

    return client("s3")


@lru_cache(maxsize=1)
def settings() -> JobSettings:
    return JobSettings.from_env(os.environ)


@lru_cache(maxsize=1)
def registry() -> Registry:
    return Registry(s3(), os.environ["MODEL_BUCKET"])


@lru_cache(maxsize=4)
def model(name: str, version: int) -> OnnxModel:
    """The pinned version's session; one intra-op thread, as the inference function's, so scores match."""
    card = registry().get_card(name, version)
    return OnnxModel(card, registry().get_model_bytes(card))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    job, models = settings(), registry()  # parsed once, at the cold start, whatever the first action
    if "Items" in event:
        return score_batch(event, s3(), model)
    action = event.get("action")
    logger.append_keys(action=action)
    if action == "plan":
        return plan(event.get("request"), models, job, event.get("execution", ""))
    if action == "manifest":
        return write_manifest(event["state"], s3())
    raise ValueError(f"unknown action {action!r}")
