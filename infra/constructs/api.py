"""The REST API (design.md §3), with API keys, a usage plan, request validation and JSON access logs.

Routes are literal per model, so each model's routes integrate with *that* model's ``live`` alias and the
handler sees exactly the public path (Lambda proxy integration passes ``event["path"]`` unchanged)::

    GET  /v2/health/live                      → first model's alias (any model answers liveness)
    GET  /v2/health/ready                     → first model's alias
    GET  /v2/models/<model>                   → <model>'s alias
    GET  /v2/models/<model>/ready             → <model>'s alias
    POST /v2/models/<model>/infer             → <model>'s alias (JSON or binary tensors: validated by the function)
    POST /v1/models/<model>:predict           → <model>'s alias (body validated: every raw input, typed)
    POST /v1/models/<model>:feedback          → <model>'s alias (body validated: ``id``, ``label``)
    any other method of those routes          → 405 with ``Allow`` (a MOCK integration)

API Gateway cannot express ``{name}:predict`` (a path parameter must be a whole path part), but a
literal path part may contain ``:``, so ``<model>:predict`` is one literal resource per model. An
unknown model or route never reaches a Lambda: API Gateway answers it (404 below).

Binary bodies (the Open Inference Protocol's binary tensor data extension): every media type (``*/*``) is a
binary media type, so a request body reaches the function base64-encoded whatever its Content-Type
(``tritonclient`` sends none, which API Gateway takes as ``application/json``), and a response the function marks
``isBase64Encoded`` reaches the client as bytes whatever its Accept (developer guide, "Binary media types for
REST APIs"). A JSON body is decoded by the function as before. ``infer`` has no request model: a binary body
is not JSON, and with no Content-Type API Gateway would validate it against the ``application/json`` model
and refuse it, so the function validates infer bodies (JSON or binary) itself, with the same 400s.

Errors API Gateway produces itself use the same ``{"error": "..."}`` body as the handler: a failed body
validation is a 400, an unknown route a 404 (API Gateway calls it "Missing Authentication Token", a 403,
which would mislead clients), throttling and quota a 429, a missing or wrong API key a 403. The request
models come from ``modeldeck.openapi`` (the document's own schema functions): types, ranges, allowed values,
``id`` lengths and the row limit, so a body the function would reject for those reasons is API Gateway's
400 before it costs an invocation. Gateway responses carry ``X-Request-Id`` (``$context.requestId``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.config import pascal as _pascal
from infra.constructs.functions import retention
from modeldeck.openapi import ModelApi, draft4, feedback_request, predict_request

# Every media type is binary: tritonclient sends binary bodies with no Content-Type and no Accept.
BINARY_MEDIA_TYPES = ("*/*",)
ERROR_TEMPLATE = '{"error": $context.error.messageString}'
API_KEY_TEMPLATE = '{"error": "Forbidden: a valid API key is required in the x-api-key header"}'
UNKNOWN_ROUTE_TEMPLATE = (
    '{"error": "no such route: unknown model or path; the routes are /v2/health/live, /v2/health/ready, '
    "/v2/models/<model>, /v2/models/<model>/ready, /v2/models/<model>/infer, /v1/models/<model>:predict "
    'and /v1/models/<model>:feedback"}'
)


def scoring_routes(model: str) -> list[tuple[str, str]]:
    """A model's scoring routes as (method, resource path): what API Gateway's per-method metrics name in
    their ``Method`` and ``Resource`` dimensions (detailed metrics are on for the stage)."""
    return [
        ("POST", f"/v2/models/{model}/infer"),
        ("POST", f"/v1/models/{model}:predict"),
        ("POST", f"/v1/models/{model}:feedback"),
    ]


@dataclass(frozen=True)
class ApiSettings:
    name: str
    stage: str
    throttle_rate: float
    throttle_burst: int
    quota_per_day: int
    log_retention_days: int


def _methods_not_allowed(resource: apigw.Resource, allowed: Sequence[str]) -> None:
    """Every other method of a route answers 405 with ``Allow`` (RFC 9110 §15.5.6), not API Gateway's
    MISSING_AUTHENTICATION_TOKEN: an ``ANY`` method with a MOCK integration. API Gateway prefers a
    resource's explicit methods over ``ANY`` (developer guide, "Set up a proxy integration with a proxy
    resource"), so the allowed ones still reach the function."""
    allow = ", ".join(allowed)
    body = json.dumps({"error": f"method not allowed: this route allows {allow}"})
    resource.add_method(
        "ANY",
        apigw.MockIntegration(
            request_templates={"application/json": '{"statusCode": 405}'},
            passthrough_behavior=apigw.PassthroughBehavior.WHEN_NO_MATCH,
            integration_responses=[
                apigw.IntegrationResponse(
                    status_code="405",
                    response_parameters={
                        "method.response.header.Allow": f"'{allow}'",
                        "method.response.header.X-Request-Id": "context.requestId",
                    },
                    response_templates={"application/json": body},
                )
            ],
        ),
        method_responses=[
            apigw.MethodResponse(
                status_code="405",
                response_parameters={
                    "method.response.header.Allow": True,
                    "method.response.header.X-Request-Id": True,
                },
            )
        ],
    )


class InferenceApi(Construct):
    """The REST API over the models' ``live`` aliases; ``models`` is ``[(what the model accepts, alias), ...]``.

    Each model's request models are built from the same schema functions as the OpenAPI document
    (``modeldeck.openapi``), from the model's spec: its raw inputs with their types, ranges and allowed values.
    """

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        settings: ApiSettings,
        models: Sequence[tuple[ModelApi, lambda_.IAlias]],
    ) -> None:
        super().__init__(scope, id_)
        if not models:
            raise ValueError("the API needs at least one model")
        access_logs = logs.LogGroup(
            self, "AccessLogs", retention=retention(settings.log_retention_days), removal_policy=RemovalPolicy.RETAIN
        )
        self.api = apigw.RestApi(
            self,
            "RestApi",
            rest_api_name=settings.name,
            description="modeldeck inference: Open Inference Protocol v2 and friendly JSON routes",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            binary_media_types=list(BINARY_MEDIA_TYPES),
            # Execution logging needs API Gateway's account-level CloudWatch role.
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            default_method_options=apigw.MethodOptions(api_key_required=True),
            deploy_options=apigw.StageOptions(
                stage_name=settings.stage,
                tracing_enabled=True,
                metrics_enabled=True,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,
                throttling_rate_limit=settings.throttle_rate,
                throttling_burst_limit=settings.throttle_burst,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=False,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=False,
                ),
            ),
        )
        self._error_responses()
        validator = self.api.add_request_validator(
            "BodyValidator", validate_request_body=True, validate_request_parameters=True
        )

        def integrate(alias: lambda_.IAlias) -> apigw.LambdaIntegration:
            # Test-invoke permissions are not needed in production and double the resource policy.
            return apigw.LambdaIntegration(alias, proxy=True, allow_test_invoke=False)

        def body(model: ModelApi, kind: str, schema: dict[str, object]) -> dict[str, object]:
            # An L1 model: the schema is plain JSON Schema draft 4 (type lists and all), which the L2
            # JsonSchema class cannot express.
            cfn = apigw.CfnModel(
                self,
                f"{_pascal(model.name)}{kind}",
                rest_api_id=self.api.rest_api_id,
                content_type="application/json",
                schema=draft4(schema),
            )
            ref = apigw.Model.from_model_name(self, f"{_pascal(model.name)}{kind}Ref", cfn.ref)
            return {"request_validator": validator, "request_models": {"application/json": ref}}

        root = self.api.root
        health = root.add_resource("v2").add_resource("health")
        first = integrate(models[0][1])
        get_only: list[apigw.Resource] = [health.add_resource("live"), health.add_resource("ready")]
        for resource in get_only:
            resource.add_method("GET", first)
        v2_models = root.get_resource("v2").add_resource("models")  # type: ignore[union-attr]
        v1_models = root.add_resource("v1").add_resource("models")
        self.routes: list[str] = ["GET /v2/health/live", "GET /v2/health/ready"]
        for model, alias in models:
            name = model.name
            target = integrate(alias)
            model_res = v2_models.add_resource(name)
            model_res.add_method("GET", target)
            ready = model_res.add_resource("ready")
            ready.add_method("GET", target)
            get_only += [model_res, ready]
            infer = model_res.add_resource("infer")
            infer.add_method("POST", target)  # JSON or binary tensors: no JSON Schema can validate both
            _methods_not_allowed(infer, ["POST"])
            posts = [
                (v1_models.add_resource(f"{name}:predict"), "PredictRequest", predict_request(model)),
                (v1_models.add_resource(f"{name}:feedback"), "FeedbackRequest", feedback_request(model)),
            ]
            for resource, kind, schema in posts:
                resource.add_method("POST", target, **body(model, kind, schema))  # type: ignore[arg-type]
                _methods_not_allowed(resource, ["POST"])
            self.routes += [
                f"GET /v2/models/{name}",
                f"GET /v2/models/{name}/ready",
                f"POST /v2/models/{name}/infer",
                f"POST /v1/models/{name}:predict",
                f"POST /v1/models/{name}:feedback",
            ]
        for resource in get_only:
            _methods_not_allowed(resource, ["GET"])

        self.api_key = self.api.add_api_key("ApiKey", description="modeldeck client key (x-api-key)")
        self.usage_plan = self.api.add_usage_plan(
            "UsagePlan",
            description="modeldeck clients: throttling and a daily quota",
            throttle=apigw.ThrottleSettings(rate_limit=settings.throttle_rate, burst_limit=settings.throttle_burst),
            quota=apigw.QuotaSettings(limit=settings.quota_per_day, period=apigw.Period.DAY),
            api_stages=[apigw.UsagePlanPerApiStage(api=self.api, stage=self.api.deployment_stage)],
        )
        self.usage_plan.add_api_key(self.api_key)

    def _error_responses(self) -> None:
        json_type = {"application/json": ERROR_TEMPLATE}
        responses = {
            "Default4xx": (apigw.ResponseType.DEFAULT_4_XX, None, ERROR_TEMPLATE),
            "Default5xx": (apigw.ResponseType.DEFAULT_5_XX, None, ERROR_TEMPLATE),
            # validationErrorString holds unescaped quotes, so only the (quoted) message is safe in JSON.
            "BadBody": (apigw.ResponseType.BAD_REQUEST_BODY, "400", ERROR_TEMPLATE),
            # Gateway response templates are plain variable substitution, not VTL (API Gateway developer
            # guide, "x-amazon-apigateway-gateway-responses.responseTemplates"): nothing can escape a value,
            # so the client's path (which may hold quotes or backslashes) stays out of the JSON body.
            "UnknownRoute": (apigw.ResponseType.MISSING_AUTHENTICATION_TOKEN, "404", UNKNOWN_ROUTE_TEMPLATE),
            "Throttled": (apigw.ResponseType.THROTTLED, "429", ERROR_TEMPLATE),
            "QuotaExceeded": (apigw.ResponseType.QUOTA_EXCEEDED, "429", ERROR_TEMPLATE),
            "TooLarge": (apigw.ResponseType.REQUEST_TOO_LARGE, "413", ERROR_TEMPLATE),
            # A missing or wrong x-api-key, and any other authorization failure.
            "InvalidApiKey": (apigw.ResponseType.INVALID_API_KEY, "403", API_KEY_TEMPLATE),
            "AccessDenied": (apigw.ResponseType.ACCESS_DENIED, "403", ERROR_TEMPLATE),
        }
        for id_, (kind, status, template) in responses.items():
            self.api.add_gateway_response(
                id_,
                type=kind,
                status_code=status,
                templates={"application/json": template} if template else json_type,
                # Every response carries X-Request-Id (README "Serving"); API Gateway's own answers have no
                # model version, so no X-Model-Version.
                response_headers={"X-Request-Id": "context.requestId"},
            )
