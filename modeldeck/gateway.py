"""The local API gateway: the REST API of the synthesized templates, emulated over loopback HTTP.

Nothing here is a route table of its own. :class:`RestApi` reads the ``AWS::ApiGateway::*`` resources that the
local cloud deployed (``cloud.deployer``) and :class:`Gateway` answers each request the way API Gateway
documents it (developer guide, "REST APIs"):

1. **Routing** ("Set up API resources"): the request path is matched against the resources' paths, a literal
   path part before a ``{param}`` before a greedy ``{proxy+}``, and the HTTP method against the resource's
   methods, an explicit one before ``ANY``. No match is the ``MISSING_AUTHENTICATION_TOKEN`` gateway response.
2. **API keys** ("Choose an API key source"): a method with ``ApiKeyRequired`` needs a key of the usage plan in
   ``x-api-key``; otherwise ``INVALID_API_KEY`` (403).
3. **Usage plan** ("Throttle requests", "Usage plans"): per key, a token bucket of ``BurstLimit`` tokens refilled
   at ``RateLimit`` per second, and a quota of ``Limit`` requests per ``Period`` (429 ``THROTTLED`` /
   ``QUOTA_EXCEEDED``); the stage's method throttling (``MethodSettings``) is a bucket per method for all
   clients. Time is the local cloud's virtual clock.
4. **Request validation** ("Use request validation"): with a validator that validates bodies, the body must be
   JSON valid against the method's model for its Content-Type (JSON Schema draft 4, checked with
   ``jsonschema``); otherwise ``BAD_REQUEST_BODY`` (400, message "Invalid request body").
5. **Integration**: ``AWS_PROXY`` invokes the function (and alias) named in the integration URI with a REST
   proxy event (payload format 1.0) and returns its response; a function error or a malformed response is a
   502 "Internal server error" (``DEFAULT_5XX``). ``MOCK`` answers from its integration response.
   **Binary media types** ("Binary media types for REST APIs", "Content type conversions in API Gateway",
   "Return binary media from a Lambda proxy integration"): the body reaches the function base64-encoded
   (``isBase64Encoded``) only when the request's Content-Type matches one of the RestApi's
   ``BinaryMediaTypes`` (``*/*`` matches all, ``type/*`` a whole type); otherwise it is passed as UTF-8 text, so
   bytes that are not UTF-8 arrive replaced. A response with ``isBase64Encoded`` is decoded to bytes only when
   the request's first ``Accept`` media type matches; otherwise the client gets the base64 text. A missing
   Content-Type or Accept counts as ``application/json``, as API Gateway assumes for request models.
6. **Gateway responses** ("Gateway response types"): an error API Gateway answers itself uses the template's
   ``AWS::ApiGateway::GatewayResponse`` of that type (else ``DEFAULT_4XX``/``DEFAULT_5XX``, else API
   Gateway's default ``{"message": ...}``): its status code, its ``responseParameters`` headers and its
   template, whose ``$context`` variables are substituted (plain substitution, no VTL).

Bodies over 10 MB are ``REQUEST_TOO_LARGE`` (413), API Gateway's payload limit. Local only: ``GET /openapi.json``
serves the deployment's OpenAPI document without a key, and each function response carries
``X-Executed-Version``, the Lambda version that answered (a debugging header; API Gateway does not send it).
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from modeldeck.openapi import ModelApi, document, match

if TYPE_CHECKING:
    from modeldeck.localcloud import LocalCloud

MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit.
_APIGW = "AWS::ApiGateway::"
_HTTP_METHODS = frozenset({"DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"})  # what ANY stands for
STAGE = "local"

# Gateway response types: default status and the message API Gateway puts in $context.error.message.
_RESPONSE_TYPES: dict[str, tuple[int, str]] = {
    "MISSING_AUTHENTICATION_TOKEN": (403, "Missing Authentication Token"),
    "INVALID_API_KEY": (403, "Forbidden"),
    "ACCESS_DENIED": (403, "Forbidden"),
    "THROTTLED": (429, "Too Many Requests"),
    "QUOTA_EXCEEDED": (429, "Limit Exceeded"),
    "BAD_REQUEST_BODY": (400, "Invalid request body"),
    "BAD_REQUEST_PARAMETERS": (400, "Missing required request parameters"),
    "REQUEST_TOO_LARGE": (413, "Request Too Long"),
    "INTEGRATION_FAILURE": (502, "Internal server error"),
    "API_CONFIGURATION_ERROR": (500, "Internal server error"),
}
_ERROR_TYPES = {  # the x-amzn-ErrorType API Gateway sends with its own answers
    "MISSING_AUTHENTICATION_TOKEN": "MissingAuthenticationTokenException",
    "INVALID_API_KEY": "ForbiddenException",
    "ACCESS_DENIED": "AccessDeniedException",
    "THROTTLED": "TooManyRequestsException",
    "QUOTA_EXCEEDED": "LimitExceededException",
    "BAD_REQUEST_BODY": "BadRequestException",
    "BAD_REQUEST_PARAMETERS": "BadRequestException",
    "REQUEST_TOO_LARGE": "RequestTooLargeException",
    "INTEGRATION_FAILURE": "InternalServerErrorException",
    "API_CONFIGURATION_ERROR": "InternalServerErrorException",
}


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Integration:
    """A method's integration: ``AWS_PROXY`` to ``function`` (qualified by ``qualifier``), or ``MOCK``."""

    kind: str
    function: str | None = None
    qualifier: str | None = None
    request_templates: Mapping[str, str] = field(default_factory=dict)
    responses: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class Method:
    """One ``AWS::ApiGateway::Method``: what a route needs and where it goes."""

    http_method: str
    resource_path: str
    integration: Integration
    api_key_required: bool = False
    validate_body: bool = False
    validate_parameters: bool = False
    request_models: Mapping[str, str] = field(default_factory=dict)
    request_parameters: Mapping[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class GatewayResponse:
    """One ``AWS::ApiGateway::GatewayResponse``."""

    status: int | None
    parameters: Mapping[str, str]
    templates: Mapping[str, str]


@dataclass(frozen=True)
class Throttle:
    rate: float
    burst: int


@dataclass(frozen=True)
class Quota:
    limit: int
    period: str
    offset: int = 0


@dataclass
class RestApi:
    """The REST API as the template defines it (one ``AWS::ApiGateway::RestApi``)."""

    methods: dict[str, dict[str, Method]]  # resource path → HTTP method (or ANY) → method
    models: dict[str, dict[str, Any]]  # model name → JSON schema
    responses: dict[str, GatewayResponse]  # response type → response
    stage: str = STAGE
    api_id: str = ""  # the RestApi as the deployed templates name it (its invocations' aws:SourceArn)
    stage_throttle: Throttle | None = None
    plan_throttle: Throttle | None = None
    quota: Quota | None = None
    binary_media_types: tuple[str, ...] = ()

    @classmethod
    def from_template(cls, resources: Mapping[str, Any], resolve: Callable[[Any], Any]) -> RestApi:
        """Read the API from a template's resources; ``resolve`` evaluates intrinsic functions (the
        deployer's), so an integration URI names the deployed function and alias."""
        by_type: dict[str, dict[str, dict[str, Any]]] = {}
        for logical, res in resources.items():
            by_type.setdefault(res["Type"], {})[logical] = res.get("Properties", {})
        apis = by_type.get("AWS::ApiGateway::RestApi", {})
        if len(apis) != 1:
            raise ValueError(f"expected one AWS::ApiGateway::RestApi in the templates, found {len(apis)}")
        (api_id,) = apis

        def ref(value: Any) -> str | None:
            if isinstance(value, dict) and "Ref" in value:
                return str(value["Ref"])
            return None

        parts = {k: p for k, p in by_type.get("AWS::ApiGateway::Resource", {}).items()}
        paths: dict[str, str] = {}

        def path_of(logical: str | None) -> str:
            if logical is None or logical not in parts:  # the root resource (Fn::GetAtt RootResourceId)
                return ""
            if logical not in paths:
                props = parts[logical]
                paths[logical] = f"{path_of(ref(props['ParentId']))}/{props['PathPart']}"
            return paths[logical]

        models = {
            logical: dict(props["Schema"]) for logical, props in by_type.get("AWS::ApiGateway::Model", {}).items()
        }
        validators = by_type.get("AWS::ApiGateway::RequestValidator", {})
        methods: dict[str, dict[str, Method]] = {}
        for props in by_type.get("AWS::ApiGateway::Method", {}).values():
            resource_id = ref(props.get("ResourceId"))
            path = path_of(resource_id) or "/"
            validator = validators.get(ref(props.get("RequestValidatorId")) or "", {})
            method = Method(
                http_method=props["HttpMethod"],
                resource_path=path,
                integration=_integration(props.get("Integration") or {}, resolve),
                api_key_required=bool(props.get("ApiKeyRequired", False)),
                validate_body=bool(validator.get("ValidateRequestBody", False)),
                validate_parameters=bool(validator.get("ValidateRequestParameters", False)),
                request_models={ct: ref(m) or str(m) for ct, m in (props.get("RequestModels") or {}).items()},
                request_parameters=dict(props.get("RequestParameters") or {}),
            )
            methods.setdefault(path, {})[method.http_method] = method
        responses = {
            props["ResponseType"]: GatewayResponse(
                int(props["StatusCode"]) if props.get("StatusCode") else None,
                dict(props.get("ResponseParameters") or {}),
                dict(props.get("ResponseTemplates") or {}),
            )
            for props in by_type.get("AWS::ApiGateway::GatewayResponse", {}).values()
        }
        api = cls(methods, models, responses, api_id=str(resolve({"Ref": api_id})))
        # "~1" is how a "/" is escaped in binaryMediaTypes patch paths; accept either spelling.
        types = apis[api_id].get("BinaryMediaTypes") or []
        api.binary_media_types = tuple(str(t).replace("~1", "/").lower() for t in types)
        for props in by_type.get("AWS::ApiGateway::Stage", {}).values():
            api.stage = str(props.get("StageName", STAGE))
            for setting in props.get("MethodSettings") or []:
                if setting.get("ThrottlingRateLimit") is not None and setting.get("HttpMethod") == "*":
                    api.stage_throttle = Throttle(
                        float(setting["ThrottlingRateLimit"]), int(setting.get("ThrottlingBurstLimit", 0))
                    )
        for props in by_type.get("AWS::ApiGateway::UsagePlan", {}).values():
            if not any(ref(s.get("ApiId")) == api_id for s in props.get("ApiStages") or []):
                continue
            throttle, quota = props.get("Throttle") or {}, props.get("Quota") or {}
            if throttle.get("RateLimit") is not None:
                api.plan_throttle = Throttle(float(throttle["RateLimit"]), int(throttle.get("BurstLimit", 0)))
            if quota.get("Limit") is not None:
                api.quota = Quota(int(quota["Limit"]), str(quota.get("Period", "DAY")), int(quota.get("Offset", 0)))
        return api

    def is_binary(self, media_type: str | None) -> bool:
        """Whether a Content-Type (or an Accept media type) is one of the API's binary media types; a missing one is
        ``application/json``."""
        media = (media_type or "application/json").split(";", 1)[0].strip().lower() or "application/json"
        kind = media.split("/", 1)[0]
        return any(t in ("*/*", media, f"{kind}/*") for t in self.binary_media_types)

    def route(self, method: str, path: str) -> tuple[Method, dict[str, str]] | None:
        """The method a request reaches, with its path parameters; None when API Gateway has no route."""
        candidates = [p for p in self.methods if _path_pattern(p).match(path)]
        # A literal path part wins over a parameter, a parameter over a greedy one.
        candidates.sort(key=lambda p: (p.count("+}"), p.count("{"), -len(p)))
        for resource_path in candidates:
            by_method = self.methods[resource_path]
            found = by_method.get(method) or (by_method.get("ANY") if method in _HTTP_METHODS else None)
            if found is not None:
                params = _path_pattern(resource_path).match(path).groupdict()  # type: ignore[union-attr]
                return found, {k: v for k, v in params.items() if v is not None}
            return None  # the resource exists but has no such method: no route
        return None

    def lambda_targets(self) -> dict[str, tuple[str, str | None]]:
        """Resource path → (function, qualifier) of each method with a Lambda proxy integration."""
        return {
            m.resource_path: (m.integration.function, m.integration.qualifier)
            for by_method in self.methods.values()
            for m in by_method.values()
            if m.integration.kind == "AWS_PROXY" and m.integration.function
        }


def _integration(props: Mapping[str, Any], resolve: Callable[[Any], Any]) -> Integration:
    kind = str(props.get("Type", "MOCK"))
    if kind in ("AWS_PROXY", "AWS"):
        uri = str(resolve(props.get("Uri", "")))
        # arn:aws:apigateway:{region}:lambda:path/2015-03-31/functions/{function ARN}/invocations
        found = re.search(r"/functions/(arn:[^/]+)/invocations", uri)
        if found is None:
            raise ValueError(f"unsupported integration URI {uri!r}")
        arn = found.group(1).split(":")
        return Integration(kind, function=arn[6], qualifier=arn[7] if len(arn) > 7 else None)
    return Integration(
        kind,
        request_templates=dict(props.get("RequestTemplates") or {}),
        responses=tuple(props.get("IntegrationResponses") or ()),
    )


def _path_pattern(resource_path: str) -> re.Pattern[str]:
    regex = ""
    for part in resource_path.strip("/").split("/") if resource_path != "/" else []:
        if part.startswith("{") and part.endswith("+}"):
            regex += f"/(?P<{part[1:-2]}>.+)"
        elif part.startswith("{") and part.endswith("}"):
            regex += f"/(?P<{part[1:-1]}>[^/]+)"
        else:
            regex += "/" + re.escape(part)
    return re.compile(f"^{regex or '/'}$")


class TokenBucket:
    """API Gateway's throttling: ``burst`` tokens, refilled at ``rate`` per second; a request takes one
    (developer guide, "Throttle requests to your REST APIs": the token bucket algorithm)."""

    def __init__(self, throttle: Throttle, now: float) -> None:
        self.rate, self.capacity = throttle.rate, float(max(throttle.burst, 1))
        self.tokens, self.at = self.capacity, now

    def take(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def _quota_window(quota: Quota, now: datetime) -> datetime:
    """The start of the quota period ``now`` falls in (UTC; ``Offset`` days into a week or a month)."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if quota.period == "WEEK":  # Offset 0 is Sunday
        return day - timedelta(days=(day.weekday() + 1 - quota.offset) % 7)
    if quota.period == "MONTH":
        start = day.replace(day=1) + timedelta(days=quota.offset)
        if start > day:
            previous = (day.replace(day=1) - timedelta(days=1)).replace(day=1)
            start = previous + timedelta(days=quota.offset)
        return start
    return day


class Gateway:
    """Answers HTTP requests as the deployed REST API does; independent of the HTTP server.

    ``api_key`` is the value of the template's API key (API Gateway generates it on AWS; locally the caller
    chooses it, else a random one is made: ``gateway.api_key``). ``api`` defaults to the REST API the local
    cloud deployed; the API is read again when the cloud's templates change.
    """

    def __init__(
        self,
        cloud: LocalCloud,
        api_key: str | None = None,
        *,
        api: RestApi | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.cloud = cloud
        self.api_key = api_key or secrets.token_urlsafe(24)
        self.max_body_bytes = max_body_bytes
        self._api = api
        self._api_from: int | None = None if api is not None else -1
        self._lock = threading.Lock()
        self._buckets: dict[Any, TokenBucket] = {}
        self._quota_used: dict[tuple[str, datetime], int] = {}
        self.server_url = ""

    @property
    def api(self) -> RestApi:
        """The REST API of the deployed templates (read again after a redeploy)."""
        deployer = self.cloud.deployer
        with self._lock:
            # A redeploy replaces the API's resource definitions: read the API again when they change.
            generation = hash(tuple(id(r) for r in deployer.resources.values() if r["Type"].startswith(_APIGW)))
            if self._api is None or (self._api_from is not None and self._api_from != generation):
                self._api = RestApi.from_template(deployer.resources, deployer.resolve)
                self._api_from = generation
            return self._api

    def functions(self) -> dict[str, str]:
        """Model name → the function its routes invoke (from the integrations of ``/v2/models/<model>``)."""
        out: dict[str, str] = {}
        for path, (function, _) in self.api.lambda_targets().items():
            parts = path.split("/")
            if len(parts) == 4 and parts[1:3] == ["v2", "models"]:
                out[parts[3]] = function
        return out

    def openapi(self) -> dict[str, Any]:
        """The deployment's OpenAPI document: each routed model as its live version's card describes it (its
        schema, classes and outputs), or as its spec does until a version is released."""
        from modeldeck.registry import Registry

        models = []
        targets = self.api.lambda_targets()
        lam = self.cloud.client("lambda")
        for model, function in self.functions().items():
            qualifier = targets[f"/v2/models/{model}"][1]
            config = lam.get_function_configuration(FunctionName=function, Qualifier=qualifier or "$LATEST")
            env = (config.get("Environment") or {}).get("Variables") or {}
            max_rows = int(env.get("MAX_ROWS", 1000))
            version = int(env.get("MODEL_VERSION", "0") or 0)
            try:
                card = Registry(self.cloud.client("s3"), env.get("MODEL_BUCKET", self.cloud.bucket)).get_card(
                    model, version
                )
                models.append(ModelApi.from_card(card, max_rows))
            except Exception:  # nothing released yet: the spec the API was synthesized from
                spec = _spec(model)
                if spec is not None:
                    models.append(ModelApi.from_spec(spec, max_rows))
        return document(models, self.server_url or None)

    def handle(
        self, method: str, target: str, headers: dict[str, list[str]], body: bytes, source_ip: str = "127.0.0.1"
    ) -> HttpResponse:
        """One HTTP request → one HTTP response. ``headers`` maps lower-case names to their values."""
        split = urlsplit(target)
        path = unquote(split.path) or "/"
        if method == "GET" and path == "/openapi.json":
            return HttpResponse(200, {"Content-Type": "application/json"}, json.dumps(self.openapi()).encode())
        request = _Request(method, path, split.query, headers, body, source_ip, self.api.stage)
        if len(body) > self.max_body_bytes:
            return self.gateway_response("REQUEST_TOO_LARGE", request)
        api = self.api
        routed = api.route(method, path)
        if routed is None:
            return self.gateway_response("MISSING_AUTHENTICATION_TOKEN", request)
        route, params = routed
        request.resource_path, request.path_params = route.resource_path, params
        if route.api_key_required:
            given = (headers.get("x-api-key") or [""])[-1]
            if not hmac.compare_digest(given.encode(), self.api_key.encode()):
                return self.gateway_response("INVALID_API_KEY", request)
            refused = self._usage_plan(api, route, given)
            if refused:
                return self.gateway_response(refused, request)
        elif not self._stage_allows(api, route):
            return self.gateway_response("THROTTLED", request)
        problem = _validate(api, route, request)
        if problem:
            return self.gateway_response(problem, request)
        if route.integration.kind == "MOCK":
            return _mock(route.integration, request)
        return self._invoke(route, request)

    def _take(self, key: Any, throttle: Throttle) -> bool:
        now = self.cloud.clock.time()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(throttle, now)
            return bucket.take(now)

    def _stage_allows(self, api: RestApi, route: Method) -> bool:
        """The stage's method throttling: one bucket per method, for all clients."""
        if api.stage_throttle is None:
            return True
        return self._take(("stage", route.resource_path, route.http_method), api.stage_throttle)

    def _usage_plan(self, api: RestApi, route: Method, key: str) -> str | None:
        """THROTTLED or QUOTA_EXCEEDED when the key's usage plan, or the stage's method throttling, refuses."""
        if api.plan_throttle is not None and not self._take(("key", key), api.plan_throttle):
            return "THROTTLED"
        if not self._stage_allows(api, route):
            return "THROTTLED"
        if api.quota is not None:
            window = (key, _quota_window(api.quota, self.cloud.clock.now()))
            with self._lock:
                if self._quota_used.get(window, 0) >= api.quota.limit:
                    return "QUOTA_EXCEEDED"
                self._quota_used[window] = self._quota_used.get(window, 0) + 1
        return None

    def gateway_response(self, kind: str, request: _Request) -> HttpResponse:
        """API Gateway's own answer of type ``kind``, as the API's gateway responses shape it."""
        status, message = _RESPONSE_TYPES[kind]
        fallback = "DEFAULT_5XX" if status >= 500 else "DEFAULT_4XX"
        api = self.api
        response = api.responses.get(kind) or api.responses.get(fallback)
        context = request.context(message=message, response_type=kind, status=status)
        headers = {"Content-Type": "application/json", "x-amzn-ErrorType": _ERROR_TYPES[kind]}
        body = '{"message":$context.error.messageString}'  # API Gateway's default template
        if response is not None:
            if response.status is not None:
                status = response.status
            elif kind not in api.responses and api.responses.get(fallback) and api.responses[fallback].status:
                status = api.responses[fallback].status  # type: ignore[assignment]
            for name, source in response.parameters.items():
                if name.startswith("gatewayresponse.header."):
                    headers[name.split(".", 2)[2]] = request.parameter(source, context)
            if response.templates:
                body = response.templates.get("application/json") or next(iter(response.templates.values()))
        headers["x-amzn-RequestId"] = request.request_id
        return HttpResponse(status, headers, _substitute(body, context).encode())

    def event(self, request: _Request) -> dict[str, Any]:
        """The Lambda proxy event (payload format 1.0) for a routed request."""
        return proxy_event(
            request.method,
            request.path,
            request.body,
            resource=request.resource_path,
            params=request.path_params,
            query=request.query,
            headers=request.headers,
            source_ip=request.source_ip,
            account_id=self.cloud.lambdas.account_id,
            api_key=_last(request.headers, "x-api-key"),
            request_id=request.request_id,
            stage=request.stage,
            binary=self.api.is_binary(_last(request.headers, "content-type")),
        )

    def _invoke(self, route: Method, request: _Request) -> HttpResponse:
        function, qualifier = route.integration.function, route.integration.qualifier
        assert function is not None
        try:
            # API Gateway invokes as its service principal: the function's resource policy must allow it.
            source = f"{self.api.api_id}/{request.stage}/{request.method}{route.resource_path}"
            with self.cloud.iam.invoking_as("apigateway.amazonaws.com", "execute-api", source):
                result, version = self.cloud.lambdas.invoke(function, qualifier, self.event(request))
        except Exception:  # the function failed: API Gateway answers 502
            return self._bad_gateway(request)
        if not isinstance(result, dict) or not isinstance(result.get("statusCode"), int):
            return self._bad_gateway(request)
        headers = {k: str(v) for k, v in (result.get("headers") or {}).items()}
        for key, values in (result.get("multiValueHeaders") or {}).items():
            headers[key] = ", ".join(map(str, values))
        headers["x-amzn-RequestId"] = request.request_id
        headers["X-Executed-Version"] = version  # local only: which Lambda version answered
        body = result.get("body") or ""
        accept = (_last(request.headers, "accept") or "").split(",", 1)[0] or None
        if result.get("isBase64Encoded") and self.api.is_binary(accept):
            try:
                raw = base64.b64decode(body, validate=True)
            except ValueError:
                return self._bad_gateway(request)
        else:
            raw = str(body).encode()  # not a binary media type for this client: the base64 text as it is
        return HttpResponse(int(result["statusCode"]), headers, raw)

    def _bad_gateway(self, request: _Request) -> HttpResponse:
        """A failed invocation or a malformed proxy response: 502 "Internal server error", shaped by the
        API's ``DEFAULT_5XX`` gateway response."""
        return self.gateway_response("INTEGRATION_FAILURE", request)


@dataclass
class _Request:
    method: str
    path: str
    query: str
    headers: dict[str, list[str]]
    body: bytes
    source_ip: str
    stage: str
    resource_path: str = ""
    path_params: dict[str, str] = field(default_factory=dict)
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def context(self, *, message: str, response_type: str, status: int, validation: str = "") -> dict[str, str]:
        return {
            "context.requestId": self.request_id,
            "context.extendedRequestId": self.request_id,
            "context.httpMethod": self.method,
            "context.resourcePath": self.resource_path,
            "context.path": f"/{self.stage}{self.path}",
            "context.stage": self.stage,
            "context.identity.sourceIp": self.source_ip,
            "context.error.message": message,
            "context.error.messageString": json.dumps(message),
            "context.error.responseType": response_type,
            "context.error.validationErrorString": validation,
            "context.status": str(status),
        }

    def parameter(self, source: str, context: Mapping[str, str]) -> str:
        """A response parameter's value: a 'literal', a context variable, or a request parameter."""
        if source.startswith("'") and source.endswith("'"):
            return source[1:-1]
        if source in context:
            return context[source]
        for prefix, values in (
            ("method.request.header.", {k: v[-1] for k, v in self.headers.items()}),
            ("method.request.querystring.", {k: v[-1] for k, v in parse_qs(self.query).items()}),
            ("method.request.path.", self.path_params),
        ):
            if source.startswith(prefix):
                name = source[len(prefix) :]
                return str(values.get(name.lower() if "header" in prefix else name, ""))
        return ""


def _substitute(template: str, context: Mapping[str, str]) -> str:
    """Gateway response templates substitute ``$context`` variables (``$x`` or ``${x}``), nothing more."""

    def value(found: re.Match[str]) -> str:
        return context.get(found.group(1) or found.group(2), "")

    return re.sub(r"\$\{(context(?:\.\w+)+)\}|\$(context(?:\.\w+)+)", value, template)


def _validate(api: RestApi, route: Method, request: _Request) -> str | None:
    """BAD_REQUEST_PARAMETERS or BAD_REQUEST_BODY when the method's request validator refuses the request."""
    if route.validate_parameters:
        for name, required in route.request_parameters.items():
            if not required:
                continue
            where, _, key = name.removeprefix("method.request.").partition(".")
            present = {
                "header": key.lower() in request.headers,
                "querystring": key in parse_qs(request.query),
                "path": key in request.path_params,
            }.get(where, True)
            if not present:
                return "BAD_REQUEST_PARAMETERS"
    if not (route.validate_body and route.request_models):
        return None
    # The model for the request's Content-Type (none sent is application/json), else the $default one; with no
    # match the body is not validated (developer guide, "Request validation for REST APIs").
    content_type = (request.headers.get("content-type") or ["application/json"])[-1].split(";")[0].strip().lower()
    model = route.request_models.get(content_type) or route.request_models.get("$default")
    schema = api.models.get(model or "")
    if schema is None:
        return None
    import jsonschema

    try:
        payload = json.loads(request.body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):  # nested deeper than the parser goes
        return "BAD_REQUEST_BODY"
    validator = jsonschema.Draft4Validator(schema)
    return "BAD_REQUEST_BODY" if not validator.is_valid(payload) else None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # API Gateway's JSON parser takes no NaN or Infinity


def _mock(integration: Integration, request: _Request) -> HttpResponse:
    """A MOCK integration: the request template's ``statusCode`` picks the integration response (by its
    ``SelectionPattern``, else the default one), whose parameters and template make the response."""
    template = integration.request_templates.get("application/json", "")
    try:
        status = str(json.loads(template).get("statusCode", 200))
    except (ValueError, AttributeError):
        status = "200"
    chosen = next(
        (r for r in integration.responses if r.get("SelectionPattern") and re.fullmatch(r["SelectionPattern"], status)),
        next((r for r in integration.responses if not r.get("SelectionPattern")), {}),
    )
    context = request.context(message="", response_type="", status=int(chosen.get("StatusCode", 200)))
    headers = {"Content-Type": "application/json", "x-amzn-RequestId": request.request_id}
    for name, source in (chosen.get("ResponseParameters") or {}).items():
        if name.startswith("method.response.header."):
            headers[name.split(".", 3)[3]] = request.parameter(source, context)
    body = (chosen.get("ResponseTemplates") or {}).get("application/json", "")
    return HttpResponse(int(chosen.get("StatusCode", 200)), headers, body.encode())


def _spec(model: str) -> Any:
    """The model's spec in the repository's models/ (what the API was synthesized from), if there is one."""
    from modeldeck.byo import load_any_spec
    from modeldeck.localcloud import REPO_ROOT

    path = REPO_ROOT / "models" / f"{model}.toml"
    return load_any_spec(path) if path.is_file() else None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes; no 40 ms delayed-ACK stall

    def _serve(self) -> None:
        gateway = self.server.gateway
        headers: dict[str, list[str]] = {}
        for key, value in self.headers.items():
            headers.setdefault(key.lower(), []).append(value)
        length = int(self.headers.get("Content-Length") or 0)
        if length > gateway.max_body_bytes:
            response = gateway.gateway_response(
                "REQUEST_TOO_LARGE",
                _Request(self.command, self.path, "", headers, b"", self.client_address[0], gateway.api.stage),
            )
            self.close_connection = True
        else:
            body = self.rfile.read(length) if length else b""
            response = gateway.handle(self.command, self.path, headers, body, self.client_address[0])
        self.send_response(response.status)
        for key, value in response.headers.items():
            if key.lower() not in ("content-length", "connection"):
                # http.server encodes header values as Latin-1; send anything else as its UTF-8 bytes.
                self.send_header(key, value.encode("utf-8").decode("latin-1"))
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":  # a HEAD response has headers only
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    def __getattr__(self, name: str) -> Any:
        # Any other method (HEAD, OPTIONS, TRACE, made-up ones) goes to the API like the others, not to
        # http.server's HTML 501.
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.access_log is not None:
            self.server.access_log(f"{self.address_string()} {format % args}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], gateway: Gateway, access_log: Callable[[str], None] | None) -> None:
        super().__init__(address, _Handler)
        self.gateway = gateway
        self.access_log = access_log


def serve(gateway: Gateway, port: int = 8080, access_log: Callable[[str], None] | None = None) -> _Server:
    """An HTTP server on 127.0.0.1 only (``port`` 0 picks a free one); call ``serve_forever`` on it."""
    server = _Server(("127.0.0.1", port), gateway, access_log)
    gateway.server_url = f"http://127.0.0.1:{server.server_address[1]}"
    return server


def proxy_event(
    method: str,
    path: str,
    body: bytes = b"",
    *,
    resource: str | None = None,
    params: dict[str, str] | None = None,
    query: str = "",
    headers: dict[str, list[str]] | None = None,
    source_ip: str = "127.0.0.1",
    account_id: str = "123456789012",
    api_key: str | None = None,
    request_id: str | None = None,
    stage: str = STAGE,
    binary: bool | None = None,
) -> dict[str, Any]:
    """An API Gateway REST API proxy event (payload format 1.0), as the Lambda receives it.

    ``binary`` says whether the request's Content-Type is a binary media type of the API (the body is then
    base64-encoded, else passed as UTF-8 text with undecodable bytes replaced, as API Gateway does); None, for
    callers without an API, base64-encodes only a body that is not UTF-8.
    """
    headers = headers or {}
    if resource is None:
        route, found = match(method, path)
        resource, params = (route.path, found) if route else ("/{proxy+}", {"proxy": path.lstrip("/")})
    multi_query = parse_qs(query, keep_blank_values=True) if query else {}
    text: str | None = None
    is_b64 = False
    if body and binary:
        text, is_b64 = base64.b64encode(body).decode(), True
    elif body and binary is False:
        text = body.decode("utf-8", errors="replace")
    elif body:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text, is_b64 = base64.b64encode(body).decode(), True
    request_id = request_id or str(uuid.uuid4())
    now = time.time()
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": {k: v[-1] for k, v in headers.items()} or None,
        "multiValueHeaders": dict(headers) or None,
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": params or None,
        "stageVariables": None,
        "requestContext": {
            "accountId": account_id,
            "apiId": "local",
            "resourceId": "local",
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/{stage}{path}",
            "stage": stage,
            "protocol": "HTTP/1.1",
            "requestId": request_id,
            "extendedRequestId": request_id,
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "requestTimeEpoch": int(now * 1000),
            "identity": {
                "apiKey": api_key,
                "sourceIp": source_ip,
                "userAgent": _last(headers, "user-agent"),
            },
        },
        "body": text,
        "isBase64Encoded": is_b64,
    }


def _last(headers: dict[str, list[str]], name: str) -> str | None:
    values = headers.get(name)
    return values[-1] if values else None
