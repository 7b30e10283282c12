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
``Retry-After``). Exceptions become HTTP responses in one place: ``_error`` below. The HTTP layer is
``modeldeck.proxy`` (its router and proxy response), not Powertools' resolver, which cost about 50 µs a request.
Every response carries ``X-Request-Id`` and ``X-Model-Version`` headers; successful bodies carry ``id`` and
``model_version`` too.

``infer`` also takes the OIP binary tensor data extension (``Inference-Header-Content-Length``; decoding in
``modeldeck.oip_binary``) and answers the outputs asked for in binary as ``application/octet-stream`` bytes,
which go back to API Gateway base64-encoded (``isBase64Encoded``): the API treats every media type as binary,
so request bodies, JSON ones included, arrive base64-encoded too.

Environment (parsed once per execution environment into ``modeldeck.serving.Settings``): ``MODEL_NAME``,
``MODEL_VERSION``, ``MODEL_BUCKET``, ``MAX_ROWS`` (1000), ``MAX_BODY_BYTES`` (6 MiB), ``CAPTURE_SAMPLE_RATE``
(1.0), ``CAPTURE_REDACT`` (comma-separated features left out of captured records), plus Powertools'
``POWERTOOLS_SERVICE_NAME``, ``POWERTOOLS_METRICS_NAMESPACE`` (default ``modeldeck``) and log level.

Import does no network I/O by itself: the model is fetched and verified by cached factories. In Lambda's
initialization phase (Lambda sets ``AWS_LAMBDA_INITIALIZATION_TYPE``: ``on-demand``, ``provisioned-concurrency``
or ``snap-start``) :func:`initialize` creates the S3 client and loads the model, so a new execution
environment's first request is not its slowest (init time is not in the ``Duration`` metric); under SnapStart
the loaded model is then in the snapshot. Elsewhere (tests, tools) the first request that needs the model
loads it.

Shadow mirroring: while ``models/{model}/shadow.json`` exists (read at most once per 20 s), each scored
``:predict`` and ``infer`` request is also sent to the candidate version it names as an asynchronous
invocation carrying ``{"modeldeck_shadow": {"id": <live request id>}}``; a function receiving that marker
scores the copy, captures it as a shadow record under the same id, and answers a minimal body.

Experiments (A/B tests): while ``models/{model}/experiment.json`` holds a running experiment (read at most once
per 20 s), each scored request is assigned a variant from its unit key (``modeldeck.experiments.assign``).
The champion's requests are scored here; a challenger's are forwarded to its pinned version as a synchronous
invocation carrying ``{"modeldeck_experiment": {"id", "variant", "unit"}}``, and its response is the client's,
unchanged (or a 502/503/413 ``ChallengerError`` naming the variant when it gave none: never the champion's
answer instead). Every experiment request is captured, by the version that scored it, with its ``experiment``
field; responses carry ``X-Experiment-Variant`` when a variant was assigned.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger

from modeldeck import oip_binary
from modeldeck.aws import client_config
from modeldeck.capture import capture_logger
from modeldeck.emf import EmfMetrics
from modeldeck.errors import ValidationError
from modeldeck.experiments import EXPERIMENT_MARKER, assign, experiment_key, record_field, unit_of
from modeldeck.fastbase64 import b64encode
from modeldeck.fastjson import dumps
from modeldeck.observability import ONE_INVOCATION_AT_A_TIME, tracer_for
from modeldeck.proxy import JSON, NoRoute, Request, Response, Router
from modeldeck.serving import (
    SHADOW_MARKER,
    CaptureEmitter,
    ChallengerError,
    ConfigError,
    ExperimentConfig,
    HttpError,
    InferenceService,
    LoadedModel,
    ModelStore,
    NotFound,
    Scored,
    Settings,
    ShadowConfig,
    forward,
    mirror,
    parse_infer_body,
    prediction_score,
    shadow_key,
    status_of,
)

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "modeldeck-inference")
logger = Logger(service=SERVICE)
# Powertools' Tracer; without the X-Ray SDK (and its import cost) when tracing is off.
tracer = tracer_for(SERVICE)
# One EMF line per invocation, per module instance: the local cloud runs several versions in one process.
# Each metric per model and version, and per model alone: the live alarms watch a model whatever version
# serves it (infra.constructs.monitoring).
metrics = EmfMetrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "modeldeck"), rollups=[["model"]])
app = Router()
MS, COUNT, NONE = "Milliseconds", "Count", "None"


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The typed runtime settings: the only place this function reads its environment."""
    return Settings.from_env(os.environ)


@lru_cache(maxsize=1)
def _botocore_session() -> Any:
    # botocore directly: boto3's Session adds an import and a resource loader the handler never uses.
    import botocore.session

    return botocore.session.get_session()


@lru_cache(maxsize=1)
def s3_client() -> Any:
    return _botocore_session().create_client("s3", config=client_config())


@lru_cache(maxsize=1)
def lambda_client() -> Any:
    """For mirroring to a shadow candidate; created on the first mirrored request only."""
    return _botocore_session().create_client("lambda", config=client_config())


def _registry() -> Any:
    from modeldeck.registry import Registry

    return Registry(s3_client(), settings().model_bucket)


def _loaded(model: LoadedModel) -> None:
    logger.info(
        "model loaded",
        extra={
            "model": model.card.name,
            "model_version": model.version,
            "onnx_sha256": model.card.onnx_sha256,
            "load_ms": round(model.load_ms, 1),
        },
    )


@lru_cache(maxsize=1)
def service() -> InferenceService:
    """The service with its model store and capture emitter, built once per execution environment."""
    s = settings()
    metrics.set_default_dimensions(model=s.model_name, version=str(s.model_version))
    store = ModelStore(s, _registry, on_load=_loaded, on_failure=lambda msg: logger.error(msg))
    return InferenceService(s, store, CaptureEmitter(s, capture_logger()))


def _read_document(key: str) -> bytes | None:
    s = settings()
    client = s3_client()
    try:
        return bytes(client.get_object(Bucket=s.model_bucket, Key=key)["Body"].read())
    except client.exceptions.NoSuchKey:
        return None


@lru_cache(maxsize=1)
def shadow_config() -> ShadowConfig:
    """Whether to mirror to a shadow candidate: one S3 read per TTL per execution environment."""
    return ShadowConfig(
        lambda: _read_document(shadow_key(settings().model_name)), on_error=lambda msg: logger.warning(msg)
    )


@lru_cache(maxsize=1)
def experiment_config() -> ExperimentConfig:
    """The model's running experiment, if any: one S3 read per TTL per execution environment."""
    return ExperimentConfig(
        lambda: _read_document(experiment_key(settings().model_name)), on_error=lambda msg: logger.warning(msg)
    )


@lru_cache(maxsize=4)
def experiment_client(read_timeout: int = 60) -> Any:
    """For forwarding to an experiment's variant, synchronously. One attempt: the client waits, so a throttled
    variant is a 503 with Retry-After at once rather than after the SDK's backoff, and a slow one is never
    invoked twice. ``read_timeout`` (whole seconds, so one client serves nearly every request) ends the wait
    before this function's own timeout would, so the client still gets a JSON error naming the variant."""
    from botocore.config import Config

    config = client_config().merge(
        Config(retries={"mode": "standard", "total_max_attempts": 1}, read_timeout=read_timeout, connect_timeout=2)
    )
    return _botocore_session().create_client("lambda", config=config)


def _forward_timeout(request: Request) -> int:
    """Whole seconds the forward may wait: this invocation's remaining time less one second to answer."""
    remaining = getattr(request.context, "get_remaining_time_in_millis", None)
    return max(1, int(remaining() // 1000) - 1) if callable(remaining) else 60


def _function_version(request: Request) -> str:
    return str(getattr(request.context, "function_version", None) or "$LATEST")


def _shadow_id(request: Request) -> str | None:
    """The live request's id when this invocation is a mirrored copy (the marker only the live function
    sets: API Gateway events have no such top-level key)."""
    marker = request.event.get(SHADOW_MARKER)
    if isinstance(marker, dict) and isinstance(marker.get("id"), str) and marker["id"]:
        return str(marker["id"])
    return None


def _experiment_marker(request: Request) -> dict[str, Any] | None:
    """The experiment field when the live function forwarded this request to this version (a variant)."""
    marker = request.event.get(EXPERIMENT_MARKER)
    if isinstance(marker, dict) and isinstance(marker.get("id"), str) and isinstance(marker.get("variant"), str):
        return {"id": marker["id"], "variant": marker["variant"], "unit": marker.get("unit")}
    return None


def _headers(request: Request, request_id: str | None) -> dict[str, str | list[str]]:
    headers: dict[str, str | list[str]] = {}
    with contextlib.suppress(ConfigError):
        headers["X-Model-Version"] = str(settings().model_version)
    if request_id:
        headers["X-Request-Id"] = request_id
    marker = _experiment_marker(request)
    if marker is not None:  # a variant's answers name it, errors included
        headers["X-Experiment-Variant"] = marker["variant"]
    return headers


def _json(
    request: Request,
    status: int,
    body: dict[str, Any],
    request_id: str | None,
    extra: Mapping[str, str] | None = None,
) -> Response:
    headers = _headers(request, request_id)
    if extra:
        headers.update(extra)
    return Response(status, dumps(body), JSON, headers)


def _body(request: Request) -> dict[str, Any]:
    # The binary tensor data extension (Inference-Header-Content-Length) is OIP infer's alone.
    binary_header = request.header(oip_binary.HEADER) if request.path.endswith("/infer") else None
    return parse_infer_body(
        request.event.get("body"),
        base64_encoded=bool(request.event.get("isBase64Encoded")),
        content_type=request.header("content-type"),
        header_length=binary_header,
        max_bytes=settings().max_body_bytes,
    )


def _reply(request: Request, scored: Scored) -> Response:
    """The scored request's answer: JSON, or with binary outputs the extension's JSON header then their bytes,
    base64-encoded for API Gateway to decode (``isBase64Encoded``)."""
    if scored.binary is None:
        return _json(request, 200, scored.body, scored.id)
    header = dumps(scored.body).encode()
    headers = _headers(request, scored.id)
    headers[oip_binary.HEADER] = str(len(header))
    body = b64encode(oip_binary.response(header, scored.binary))
    return Response(200, body, oip_binary.OCTET_STREAM, headers, base64=True)


def _count_request(request: Request) -> None:
    """``Requests``: one per scoring request this version receives, whatever its outcome (shadow copies
    aside), so a canary's error rate has a denominator even when it answers nothing but 5xx. ``Latency`` and
    ``PredictionScore`` exist only for answered requests: a version failing every request has none."""
    # A forwarded request was counted by the live function.
    if _shadow_id(request) is None and _experiment_marker(request) is None:
        metrics.add_metric("Requests", COUNT, 1)


def _score(request: Request, route: Any, name: str, kind: str) -> Response:
    """Score a ``:predict`` or ``infer`` (``kind``) request: here, or by the experiment's variant it is assigned
    to; mirrored to the shadow candidate when one is set."""
    gateway_id, version = request.gateway_request_id, _function_version(request)
    shadow_id = _shadow_id(request)
    if shadow_id is not None:
        return _record(request, route(name, _body(request), gateway_id, version, shadow_id=shadow_id))
    marker = _experiment_marker(request)
    if marker is not None:
        scored = route(name, _body(request), gateway_id, version, experiment=marker)
        return _with_variant(_record(request, scored), marker)
    body = _body(request)
    assigned = None
    experiment = experiment_config().running() if settings().model_version else None
    if experiment is not None:
        unit = unit_of(experiment, body, request.headers, kind)
        variant = assign(experiment, unit)
        assigned = record_field(experiment, variant, unit)
        if variant.name != experiment.champion and variant.qualifier != version:
            return _forwarded(request, variant, assigned)
    target = None
    if settings().model_version:
        target = shadow_config().target()
        if target is not None and target.qualifier == version:
            target = None  # the candidate itself (already promoted): nothing to compare against
    scored = route(name, body, gateway_id, version, always_capture=target is not None, experiment=assigned)
    if target is not None:
        try:
            if not mirror(lambda_client(), target, request.event, scored.id):
                logger.info("request too large to mirror to the shadow candidate", extra={"id": scored.id})
        except Exception as exc:  # mirroring is best effort: the live answer never depends on it
            logger.warning(
                "mirroring to the shadow candidate failed", extra={"error": str(exc), "target": target.function_name}
            )
    return _with_variant(_record(request, scored), assigned)


def _forwarded(request: Request, variant: Any, assigned: dict[str, Any]) -> Response:
    """The variant's own response to the request (status, headers, body, binary or not), or a ChallengerError."""
    response = forward(experiment_client(_forward_timeout(request)), variant, request.event, assigned)
    headers: dict[str, Any] = dict(response.get("headers") or {})
    headers.update(response.get("multiValueHeaders") or {})
    body = response.get("body") or ""
    return Response(response["statusCode"], body, None, headers, base64=bool(response.get("isBase64Encoded")))


def _with_variant(response: Response, assigned: dict[str, Any] | None) -> Response:
    if assigned is not None and assigned.get("variant"):
        response.headers["X-Experiment-Variant"] = assigned["variant"]
    return response


def _record(request: Request, scored: Scored) -> Response:
    if scored.shadow:
        # A mirrored copy: only this version's own shadow metrics, never the live dashboards' names.
        metrics.add_metric("ShadowLatency", MS, scored.latency_ms)
        metrics.add_metric("ShadowRows", COUNT, scored.rows)
        return _json(request, 200, scored.body, scored.id)
    metrics.add_metric("Latency", MS, scored.latency_ms)
    metrics.add_metric("Rows", COUNT, scored.rows)
    metrics.add_metric("PredictionScore", NONE, prediction_score(scored.prediction))
    if scored.label_counts:
        for label, count in scored.label_counts.items():
            metrics.add_metric(f"Predicted.{label}"[:255], COUNT, count)
    return _reply(request, scored)


@app.get("/v2/health/live")
def health_live(request: Request) -> Response:
    return _json(request, 200, {"live": True}, request.gateway_request_id)


@app.get("/v2/health/ready")
def health_ready(request: Request) -> Response:
    return _json(request, 200, service().health_ready(), request.gateway_request_id)


@app.get("/v2/models/<name>")
def model_metadata(request: Request, name: str) -> Response:
    return _json(request, 200, service().metadata(name), request.gateway_request_id)


@app.get("/v2/models/<name>/ready")
def model_ready(request: Request, name: str) -> Response:
    return _json(request, 200, service().ready(name), request.gateway_request_id)


@app.post("/v2/models/<name>/infer")
def infer(request: Request, name: str) -> Response:
    _count_request(request)  # before anything that can fail: an unloadable model's 503 is a request too
    svc = service()
    svc.model(name)  # an unknown model is a 404 before the body is even read
    return _score(request, svc.infer, name, "infer")


@app.post("/v1/models/<name_action>")
def v1_action(request: Request, name_action: str) -> Response:
    name, sep, action = name_action.rpartition(":")
    if sep and action == "predict":
        _count_request(request)
    svc = service()
    if not sep or action not in ("predict", "feedback"):
        raise NotFound(f"no route POST /v1/models/{name_action}: use /v1/models/<name>:predict or :feedback")
    svc.model(name)
    if action == "predict":
        return _score(request, svc.predict, name, "predict")
    result = svc.feedback(name, _body(request), request.gateway_request_id)
    if result["labels"]:
        metrics.add_metric("FeedbackLabels", COUNT, result["labels"])
    if result.get("values"):
        metrics.add_metric("FeedbackValues", COUNT, result["values"])
    return _json(request, 202, result, result["id"])


def _error_metric(request: Request, status: int) -> None:
    if _shadow_id(request) is not None:
        metrics.add_metric("ShadowErrors", COUNT, 1)
    else:
        metrics.add_metric("ServerErrors" if status >= 500 else "ClientErrors", COUNT, 1)


def _error(request: Request, exc: Exception) -> Response:
    """The one place exceptions become HTTP responses: a client's mistake or unavailability (4xx/503, with the
    message), a variant that gave no response, an unknown route, or a bug (500, naming only the request id)."""
    if isinstance(exc, (HttpError, ValidationError)):
        status = status_of(exc)
        if isinstance(exc, ChallengerError):
            _variant_failed(exc)
        else:
            _error_metric(request, status)
        if status < 500:
            logger.info("request rejected", extra={"status": status, "error": str(exc)})
        extra = dict(getattr(exc, "headers", {}) or {})
        return _json(request, status, {"error": str(exc)}, request.gateway_request_id, extra)
    if isinstance(exc, NoRoute):
        _error_metric(request, 404)
        message = f"no route {request.method} {request.path}; see /openapi.json for the API"
        return _json(request, 404, {"error": message}, request.gateway_request_id)
    _error_metric(request, 500)
    logger.exception("unhandled error")
    request_id = request.gateway_request_id
    return _json(request, 500, {"error": f"internal error (request id {request_id})"}, request_id)


def _variant_failed(exc: ChallengerError) -> None:
    """A variant that gave no response: its error is counted under its own model version (the live version did
    not fail), in an EMF line of its own."""
    logger.warning(
        "experiment variant failed",
        extra={"error": str(exc), "function": exc.variant.function_name, "qualifier": exc.variant.qualifier},
    )
    variant_metrics = EmfMetrics(namespace=metrics.namespace, rollups=metrics.rollups)
    variant_metrics.set_default_dimensions(**{**metrics.default_dimensions, "version": str(exc.variant.version)})
    variant_metrics.add_metric("ServerErrors" if exc.status >= 500 else "ClientErrors", COUNT, 1)
    variant_metrics.flush()


_cold_start = True


@lru_cache(maxsize=1)
def _log_keys() -> Any:
    # The logger's formatter, found once: ``logger.append_keys`` looks its handler up on every call.
    return logger.registered_formatter


def _log_context(request: Request) -> None:
    """The keys Powertools' ``inject_lambda_context`` puts on every log line (the invocation, its cold start,
    and the API Gateway request id as ``correlation_id``), set directly: the decorator's context model and
    JMESPath query cost 30 µs per request."""
    global _cold_start
    context = request.context
    _log_keys().append_keys(
        cold_start=_cold_start,
        function_name=getattr(context, "function_name", None),
        function_memory_size=getattr(context, "memory_limit_in_mb", None),
        function_arn=getattr(context, "invoked_function_arn", None),
        function_request_id=getattr(context, "aws_request_id", None),
        correlation_id=request.gateway_request_id,
    )
    _cold_start = False


@metrics.log_metrics
def _handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    request = Request(event, context)
    _log_context(request)
    try:
        # Settings and default dimensions exist before any metric is recorded; a misconfigured function
        # answers 503 from the route instead.
        with contextlib.suppress(ConfigError):
            service()
        response = app.dispatch(request)
    except Exception as exc:
        response = _error(request, exc)
    return response.proxy()


if not tracer.disabled:  # X-Ray segments only when tracing is on: the disabled decorator still costs 10 µs
    _handle = tracer.capture_lambda_handler(_handle)


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The entry point. The lock only matters where several handlers share a process (the local cloud)."""
    with ONE_INVOCATION_AT_A_TIME:
        return _handle(event, context)


def initialize(env: Mapping[str, str]) -> None:
    """Lambda's initialization phase: create the S3 client and load the model before the first request.

    AWS's advice ("Best practices for working with AWS Lambda functions": initialize SDK clients outside the
    handler) matters here beyond speed: init time is not in the ``Duration`` metric, while a first request
    that loads the model is, and with a few canary requests a minute the canary's p99 latency is its slowest
    request, so a lazy load would put every new version's cold start in its latency alarm. Under SnapStart the
    model is then in the snapshot, and capture sampling is reseeded after each restore (a snapshot would
    otherwise give every environment the same random sequence). Outside Lambda (no
    ``AWS_LAMBDA_INITIALIZATION_TYPE``) nothing happens.
    """
    init_type = env.get("AWS_LAMBDA_INITIALIZATION_TYPE")
    if not init_type:
        return
    try:
        service().store.get()
    except Exception as exc:  # the first request retries, as it would without this
        logger.warning("model not loaded during initialization", extra={"error": str(exc)})
    if init_type != "snap-start":
        return
    try:
        from snapshot_restore_py import register_after_restore  # only in Lambda's Python runtime
    except ImportError:
        return
    register_after_restore(lambda: service().capture_emitter.rng.seed())


initialize(os.environ)
