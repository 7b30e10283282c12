"""Inference Lambda: Open Inference Protocol v2 and friendly JSON routes for one pinned model version.

Behind an API Gateway REST API with Lambda proxy integration (payload format 1.0) on the alias ``live``.
Routing uses the event's ``path`` (without the stage), never its ``resource``, so either API shape works:

- one greedy resource ``/{proxy+}`` (method ``ANY``) per model API, or
- explicit resources: ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2/models/{name}``,
  ``GET /v2/models/{name}/ready``, ``POST /v2/models/{name}/infer``, and ``POST /v1/models/{name_action}``,
  whose one path segment is ``<model>:predict`` or ``<model>:feedback``. (A REST API resource cannot mix a
  parameter with the literal ``:predict`` in one segment; a per-model literal ``/v1/models/<model>:predict``
  also works.)

Errors are ``{"error": message}``: 400 malformed or invalid, 404 unknown model or route, 413 too many rows or
too large, 415 a Content-Type other than JSON (a missing one is taken as JSON), 503 not ready (with
``Retry-After``). Exceptions become HTTP responses in one place: the resolver's exception handlers below.
Every response carries ``X-Request-Id`` and ``X-Model-Version`` headers; successful bodies carry ``id`` and
``model_version`` too.

Environment (parsed once per execution environment into ``modeldeck.serving.Settings``): ``MODEL_NAME``,
``MODEL_VERSION``, ``MODEL_BUCKET``, ``MAX_ROWS`` (1000), ``MAX_BODY_BYTES`` (6 MiB), ``CAPTURE_SAMPLE_RATE``
(1.0), ``CAPTURE_REDACT`` (comma-separated features left out of captured records), plus Powertools'
``POWERTOOLS_SERVICE_NAME``, ``POWERTOOLS_METRICS_NAMESPACE`` (default ``modeldeck``) and log level.

Import does no network I/O (SnapStart-friendly): the model is fetched and verified on the first request
that needs it (or a readiness probe), from cached factories.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError as RouteNotFoundError
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from modeldeck.capture import capture_logger
from modeldeck.errors import ValidationError
from modeldeck.serving import (
    CaptureEmitter,
    ConfigError,
    HttpError,
    InferenceService,
    LoadedModel,
    ModelStore,
    NotFound,
    Scored,
    Settings,
    class_counts,
    parse_json_body,
    prediction_score,
    status_of,
)

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "modeldeck-inference"))
tracer = Tracer(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "modeldeck-inference"))
# Ephemeral: the local cloud runs several versions in one process; each keeps its own metric set.
metrics = EphemeralMetrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "modeldeck"))
app = APIGatewayRestResolver()
JSON = "application/json"
# Health and metadata requests record no metric; an empty flush is expected, not a warning.
warnings.filterwarnings("ignore", message="No application metrics to publish")


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The typed runtime settings: the only place this function reads its environment."""
    return Settings.from_env(os.environ)


@lru_cache(maxsize=1)
def s3_client() -> Any:
    import boto3

    return boto3.client("s3")


def _registry() -> Any:
    from modeldeck.registry import Registry

    return Registry(s3_client(), settings().model_bucket)


def _loaded(model: LoadedModel) -> None:
    logger.info("model loaded", extra={"model": model.card.name, "model_version": model.version,
                                       "onnx_sha256": model.card.onnx_sha256, "load_ms": round(model.load_ms, 1)})


@lru_cache(maxsize=1)
def service() -> InferenceService:
    """The service with its model store and capture emitter, built once per execution environment."""
    s = settings()
    metrics.set_default_dimensions(model=s.model_name, version=str(s.model_version))
    store = ModelStore(s, _registry, on_load=_loaded, on_failure=lambda msg: logger.error(msg))
    return InferenceService(s, store, CaptureEmitter(s, capture_logger()))


def _function_version() -> str:
    context = app.lambda_context
    return str(getattr(context, "function_version", None) or "$LATEST")


def _gateway_request_id() -> str | None:
    return (app.current_event.get("requestContext") or {}).get("requestId")


def _headers(request_id: str | None) -> dict[str, str]:
    headers = {}
    with contextlib.suppress(ConfigError):
        headers["X-Model-Version"] = str(settings().model_version)
    if request_id:
        headers["X-Request-Id"] = request_id
    return headers


def _json(status: int, body: dict[str, Any], request_id: str | None, extra: dict[str, str] | None = None) -> Response:
    headers = _headers(request_id)
    if extra:
        headers.update(extra)
    return Response(status, JSON, json.dumps(body, separators=(",", ":")), headers)


def _body() -> dict[str, Any]:
    event = app.current_event
    return parse_json_body(event.get("body"), base64_encoded=bool(event.get("isBase64Encoded")),
                           content_type=event.headers.get("content-type"), max_bytes=settings().max_body_bytes)


def _record(scored: Scored) -> Response:
    metrics.add_metric("Latency", MetricUnit.Milliseconds, scored.latency_ms)
    metrics.add_metric("Rows", MetricUnit.Count, scored.rows)
    metrics.add_metric("PredictionScore", MetricUnit.NoUnit, prediction_score(scored.prediction))
    if scored.prediction.probabilities is not None:
        for label, count in class_counts(scored.prediction.labels).items():
            metrics.add_metric(f"Predicted.{label}"[:255], MetricUnit.Count, count)
    return _json(200, scored.body, scored.id)


@app.get("/v2/health/live")
def health_live() -> Response:
    return _json(200, {"live": True}, _gateway_request_id())


@app.get("/v2/health/ready")
def health_ready() -> Response:
    return _json(200, service().health_ready(), _gateway_request_id())


@app.get("/v2/models/<name>")
def model_metadata(name: str) -> Response:
    return _json(200, service().metadata(name), _gateway_request_id())


@app.get("/v2/models/<name>/ready")
def model_ready(name: str) -> Response:
    return _json(200, service().ready(name), _gateway_request_id())


@app.post("/v2/models/<name>/infer")
def infer(name: str) -> Response:
    svc = service()
    svc.model(name)  # an unknown model is a 404 before the body is even read
    return _record(svc.infer(name, _body(), _gateway_request_id(), _function_version()))


@app.post("/v1/models/<name_action>")
def v1_action(name_action: str) -> Response:
    name, sep, action = name_action.rpartition(":")
    svc = service()
    if not sep or action not in ("predict", "feedback"):
        raise NotFound(f"no route POST /v1/models/{name_action}: use /v1/models/<name>:predict or :feedback")
    svc.model(name)
    if action == "predict":
        return _record(svc.predict(name, _body(), _gateway_request_id(), _function_version()))
    result = svc.feedback(name, _body(), _gateway_request_id())
    metrics.add_metric("FeedbackLabels", MetricUnit.Count, result["labels"])
    return _json(202, result, result["id"])


@app.exception_handler([HttpError, ValidationError])
def client_or_availability_error(exc: HttpError | ValidationError) -> Response:
    status = status_of(exc)
    metrics.add_metric("ServerErrors" if status >= 500 else "ClientErrors", MetricUnit.Count, 1)
    if status < 500:
        logger.info("request rejected", extra={"status": status, "error": str(exc)})
    return _json(status, {"error": str(exc)}, _gateway_request_id(), dict(getattr(exc, "headers", {}) or {}))


@app.not_found
def route_not_found(exc: RouteNotFoundError) -> Response:
    event = app.current_event
    metrics.add_metric("ClientErrors", MetricUnit.Count, 1)
    message = f"no route {event.http_method} {event.path}; see /openapi.json for the API"
    return _json(404, {"error": message}, _gateway_request_id())


@app.exception_handler(Exception)
def unexpected_error(exc: Exception) -> Response:
    # A bug, never a client mistake: log it with the traceback, tell the client only the request id.
    metrics.add_metric("ServerErrors", MetricUnit.Count, 1)
    logger.exception("unhandled error")
    request_id = _gateway_request_id()
    return _json(500, {"error": f"internal error (request id {request_id})"}, request_id)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    # Settings and default dimensions exist before any metric is recorded; a misconfigured function
    # answers 503 from the route instead (the one exception-to-HTTP mapping).
    with contextlib.suppress(ConfigError):
        service()
    return app.resolve(event, context)
