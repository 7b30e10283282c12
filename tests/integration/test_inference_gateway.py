"""The local API gateway, built from the deployed templates (no sockets): routing to the alias the integration
URI names, API keys, request models, gateway responses with their headers, 405s, the usage plan, limits."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

from modeldeck.gateway import Gateway, HttpResponse, RestApi
from modeldeck.localcloud import deploy_inference_version
from tests.fixtures.gateway import deployed_api, model_function
from tests.fixtures.inference import MODEL, ROW, oip_inputs

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")
KEY = "test-key"
HEADERS = {"content-type": ["application/json"], "x-api-key": [KEY]}
PREDICT = f"/v1/models/{MODEL}:predict"


@pytest.fixture(scope="module")
def deployed(trained_demo: Any) -> Iterator[Any]:
    """Given the app's templates deployed and the demo model's v1 released to its alias live."""
    with deployed_api(trained_demo) as cloud:
        yield cloud


@pytest.fixture
def gateway(deployed: Any) -> Gateway:
    return Gateway(deployed, api_key=KEY)


def body(response: HttpResponse) -> Any:
    return json.loads(response.body)


def post(gateway: Gateway, path: str, payload: Any, headers: dict[str, list[str]] = HEADERS) -> HttpResponse:
    return gateway.handle("POST", path, headers, json.dumps(payload).encode())


def _api_with(cloud: Any, kind: str, **properties: Any) -> RestApi:
    """The deployed REST API with ``properties`` changed on its resource of type ``kind``."""
    resources = copy.deepcopy(cloud.deployer.resources)
    for res in resources.values():
        if res["Type"] == kind:
            res["Properties"].update(properties)
    return RestApi.from_template(resources, cloud.deployer.resolve)


def test_each_route_invokes_the_alias_its_integration_uri_names(deployed: Any, gateway: Gateway) -> None:
    # Given the template's integrations (Lambda proxy, to the model function's alias live)
    targets = gateway.api.lambda_targets()
    # Then every model route, and the health routes (the first model's), go to that function's live alias
    assert set(targets) == {
        "/v2/health/live",
        "/v2/health/ready",
        f"/v2/models/{MODEL}",
        f"/v2/models/{MODEL}/ready",
        f"/v2/models/{MODEL}/infer",
        f"/v1/models/{MODEL}:predict",
        f"/v1/models/{MODEL}:feedback",
    }
    assert set(targets.values()) == {(model_function(deployed), "live")}
    # When a request is sent
    reply = post(gateway, PREDICT, {"instances": [ROW]})
    # Then the alias's version answered it, with the function's headers and the local debugging one
    live = deployed.client("lambda").get_alias(FunctionName=model_function(deployed), Name="live")
    assert reply.status == 200 and body(reply)["predictions"] == ["benign"]
    assert reply.headers["X-Executed-Version"] == live["FunctionVersion"]
    assert reply.headers["X-Model-Version"] == "1" and reply.headers["X-Request-Id"] == body(reply)["id"]


def test_the_function_gets_a_rest_proxy_event_for_the_templates_resource(deployed: Any, gateway: Gateway) -> None:
    # Given a request routed to the literal resource /v1/models/<model>:predict
    routed = gateway.api.route("POST", PREDICT)
    assert routed is not None
    _, params = routed
    from modeldeck.gateway import _Request

    request = _Request("POST", PREDICT, "a=1&a=2", HEADERS, b"{}", "127.0.0.1", gateway.api.stage, PREDICT, params)
    # When the gateway builds the proxy event
    event = gateway.event(request)
    # Then it is payload format 1.0, for that resource and stage, with API Gateway's request id and the key
    assert event["resource"] == PREDICT and event["httpMethod"] == "POST" and event["pathParameters"] is None
    assert event["queryStringParameters"] == {"a": "2"}
    assert event["multiValueQueryStringParameters"] == {"a": ["1", "2"]}
    ctx = event["requestContext"]
    assert ctx["stage"] == "dev" and ctx["path"] == f"/dev{PREDICT}" and ctx["requestId"] == request.request_id
    assert ctx["identity"]["apiKey"] == KEY and ctx["resourcePath"] == PREDICT


@pytest.mark.parametrize("given", [None, "wrong"])
def test_a_missing_or_wrong_key_is_api_gateways_403_with_a_request_id(gateway: Gateway, given: str | None) -> None:
    # Given a method that requires the API key (every method does)
    headers = {"x-api-key": [given]} if given else {}
    # When it is called without the right key
    reply = gateway.handle("GET", f"/v2/models/{MODEL}/ready", headers, b"")
    # Then API Gateway answers INVALID_API_KEY as the template shapes it: 403, our body, X-Request-Id
    assert reply.status == 403
    assert body(reply) == {"error": "Forbidden: a valid API key is required in the x-api-key header"}
    assert reply.headers["X-Request-Id"] == reply.headers["x-amzn-RequestId"]
    # and no model answered, so there is no model version
    assert "X-Model-Version" not in reply.headers and "X-Executed-Version" not in reply.headers


@pytest.mark.parametrize(
    "path",
    ["/admin", "/v2/models/unknown", "/v1/models/unknown:predict", "/v2/models", f"/v2/models/{MODEL}/ready/x"],
)
def test_unknown_routes_and_models_are_the_templates_404(gateway: Gateway, path: str) -> None:
    # When a path that no resource of the API matches is requested (with the key)
    reply = gateway.handle("GET", path, HEADERS, b"")
    # Then API Gateway answers MISSING_AUTHENTICATION_TOKEN with the template's status and body
    assert reply.status == 404 and body(reply)["error"].startswith("no such route")
    assert reply.headers["X-Request-Id"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", f"/v2/models/{MODEL}", "GET"),
        ("POST", "/v2/health/ready", "GET"),
        ("GET", PREDICT, "POST"),
        ("PUT", f"/v2/models/{MODEL}/infer", "POST"),
    ],
)
def test_a_method_the_route_does_not_support_is_405_with_allow(
    gateway: Gateway, method: str, path: str, allow: str
) -> None:
    # When a route is called with a method it does not support
    reply = gateway.handle(method, path, HEADERS, b"")
    # Then the template's MOCK integration answers 405 with the allowed methods
    assert reply.status == 405 and reply.headers["Allow"] == allow
    assert body(reply) == {"error": f"method not allowed: this route allows {allow}"}
    assert reply.headers["X-Request-Id"]


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        (PREDICT, {"instances": [{**ROW, "mean_radius": "big"}]}),
        (PREDICT, {"instances": [{**ROW, "mean_radius": 101.0}]}),
        (PREDICT, {"instances": [{k: v for k, v in ROW.items() if k != "mean_area"}]}),
        (PREDICT, {"instances": [ROW] * 1001}),
        (f"/v1/models/{MODEL}:feedback", {"id": "", "label": "benign"}),
    ],
    ids=["type", "range", "missing", "rows", "empty-id"],
)
def test_a_body_the_model_refuses_is_api_gateways_400(gateway: Gateway, path: str, payload: Any) -> None:
    # When a body violates the method's request model (types, ranges, features, rows, id lengths)
    reply = post(gateway, path, payload)
    # Then API Gateway answers BAD_REQUEST_BODY itself (the function never sees it)
    assert reply.status == 400 and body(reply) == {"error": "Invalid request body"}
    assert "X-Executed-Version" not in reply.headers and reply.headers["X-Request-Id"]


def test_a_body_that_is_not_json_is_api_gateways_400(gateway: Gateway) -> None:
    reply = gateway.handle("POST", PREDICT, HEADERS, b'{"instances": [NaN]}')
    assert reply.status == 400 and body(reply) == {"error": "Invalid request body"}


def test_bodies_over_api_gateways_limit_are_413(deployed: Any) -> None:
    reply = Gateway(deployed, api_key=KEY, max_body_bytes=100).handle("POST", PREDICT, HEADERS, b" " * 101)
    assert reply.status == 413 and body(reply) == {"error": "Request Too Long"}


def test_health_routes_go_to_the_first_model_with_its_headers(deployed: Any, gateway: Gateway) -> None:
    # When the health routes are called
    live = gateway.handle("GET", "/v2/health/live", HEADERS, b"")
    ready = gateway.handle("GET", "/v2/health/ready", HEADERS, b"")
    # Then the first model's function answers them, with X-Request-Id and X-Model-Version
    assert live.status == 200 and body(live) == {"live": True}
    assert ready.status == 200 and body(ready)["model_version"] == "1"
    for reply in (live, ready):
        assert reply.headers["X-Model-Version"] == "1" and reply.headers["X-Request-Id"]


def test_a_not_ready_model_answers_503_with_retry_after_on_the_health_route(deployed: Any, gateway: Gateway) -> None:
    # Given the live alias moved to a version that pins no model yet (MODEL_VERSION=0)
    function = model_function(deployed)
    deploy_inference_version(deployed, MODEL, 0, function_name=function)
    try:
        # When readiness is asked
        reply = gateway.handle("GET", "/v2/health/ready", HEADERS, b"")
    finally:
        deploy_inference_version(deployed, MODEL, 1, function_name=function)
    # Then it is a 503 with Retry-After and both promised headers
    assert reply.status == 503 and int(reply.headers["Retry-After"]) >= 1
    assert reply.headers["X-Request-Id"] and reply.headers["X-Model-Version"] == "0"


def test_the_usage_plan_throttles_each_key_with_a_token_bucket(deployed: Any) -> None:
    # Given a usage plan of 1 request per 100 seconds with a burst of 2 (a slow refill: a loaded host may take
    # a wall second over these requests, and the cloud's time follows wall time)
    api = _api_with(deployed, "AWS::ApiGateway::UsagePlan", Throttle={"RateLimit": 0.01, "BurstLimit": 2})
    gateway = Gateway(deployed, api_key=KEY, api=api)
    with deployed.clock.hold():  # no jump of virtual time between the requests
        # When three requests arrive at once
        statuses = [gateway.handle("GET", "/v2/health/live", HEADERS, b"").status for _ in range(3)]
        throttled = gateway.handle("GET", "/v2/health/live", HEADERS, b"")
    # Then the burst passes and the rest is API Gateway's THROTTLED 429, in our format
    assert statuses == [200, 200, 429]
    assert throttled.status == 429 and body(throttled) == {"error": "Too Many Requests"}
    # and 100 seconds of the cloud's time later the bucket holds a token again
    deployed.clock.advance(100.0)
    assert gateway.handle("GET", "/v2/health/live", HEADERS, b"").status == 200


def test_the_usage_plan_quota_is_429_once_used_up(deployed: Any) -> None:
    # Given a quota of 2 requests a day
    api = _api_with(deployed, "AWS::ApiGateway::UsagePlan", Quota={"Limit": 2, "Period": "DAY"})
    gateway = Gateway(deployed, api_key=KEY, api=api)
    # When a third request is sent the same day
    statuses = [gateway.handle("GET", "/v2/health/live", HEADERS, b"").status for _ in range(3)]
    over = gateway.handle("GET", "/v2/health/live", HEADERS, b"")
    # Then it is QUOTA_EXCEEDED: 429 "Limit Exceeded"
    assert statuses == [200, 200, 429] and body(over) == {"error": "Limit Exceeded"}


# --- the OIP binary tensor data extension through the gateway ------------------------------------------


def test_the_api_treats_every_media_type_as_binary_and_infer_reaches_the_function(
    deployed: Any, gateway: Gateway
) -> None:
    # Given the template's RestApi: every media type is binary, and infer has no JSON request model
    assert gateway.api.binary_media_types == ("*/*",)
    # When a JSON infer body the function refuses is sent (an id over 256 characters)
    reply = post(gateway, f"/v2/models/{MODEL}/infer", {"id": "x" * 257, "inputs": oip_inputs([ROW])})
    # Then the function answers it (API Gateway does not validate infer bodies), with its own 400
    assert reply.status == 400 and reply.headers["X-Executed-Version"]
    assert body(reply)["error"].startswith("'id' must be a non-empty string")


@pytest.fixture
def served_url(gateway: Gateway) -> Iterator[str]:
    """The gateway over loopback HTTP: what ``modeldeck serve`` runs (``modeldeck.gateway.serve``)."""
    import threading

    from modeldeck.gateway import serve

    server = serve(gateway, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield gateway.server_url.removeprefix("http://")
    server.shutdown()
    server.server_close()


def test_tritonclient_in_its_default_binary_mode_and_in_json_mode_gets_the_same_answer(served_url: str) -> None:
    import numpy as np
    import tritonclient.http as triton

    rows = [ROW, {**ROW, "mean_radius": 20.6, "worst_radius": 25.7, "worst_concave_points": 0.25}]
    client = triton.InferenceServerClient(served_url, connection_timeout=30, network_timeout=30)
    try:

        def infer(binary: bool) -> Any:
            inputs = []
            for name in ROW:
                tensor = triton.InferInput(name, [len(rows), 1], "FP32")
                tensor.set_data_from_numpy(np.array([[r[name]] for r in rows], np.float32), binary_data=binary)
                inputs.append(tensor)
            outputs = (
                None
                if binary
                else [triton.InferRequestedOutput(o, binary_data=False) for o in ("label", "probabilities")]
            )
            return client.infer(MODEL, inputs, outputs=outputs, headers={"x-api-key": KEY})

        # When the same rows are sent in tritonclient's default mode (binary tensors, no Content-Type) and in JSON
        binary, plain = infer(True), infer(False)
    finally:
        client.close()
    # Then the binary answer's outputs are binary, and decode to the JSON answer's
    assert all("binary_data_size" in o["parameters"] for o in binary.get_response()["outputs"])
    np.testing.assert_array_equal(binary.as_numpy("probabilities"), plain.as_numpy("probabilities"))
    assert [v.decode() for v in binary.as_numpy("label").ravel()] == plain.as_numpy("label").ravel().tolist()


def test_a_binary_body_is_base64_to_the_function_only_for_the_apis_binary_media_types(deployed: Any) -> None:
    import numpy as np
    from tritonclient.http import InferInput
    from tritonclient.http._utils import _get_inference_request

    # Given an API whose only binary media type is application/octet-stream
    api = _api_with(deployed, "AWS::ApiGateway::RestApi", BinaryMediaTypes=["application~1octet-stream"])
    gateway = Gateway(deployed, api_key=KEY, api=api)
    inputs = []
    for name in ROW:
        tensor = InferInput(name, [1, 1], "FP32")
        tensor.set_data_from_numpy(np.array([[ROW[name]]], np.float32))
        inputs.append(tensor)
    raw, length = _get_inference_request(inputs, "", None, 0, False, False, 0, None, None)
    path = f"/v2/models/{MODEL}/infer"
    base = {"x-api-key": [KEY], "inference-header-content-length": [str(length)]}
    # When it comes with no Content-Type (application/json to API Gateway): passed as text, its bytes mangled
    mangled = gateway.handle("POST", path, base, raw)
    assert mangled.status == 400 and "follow the Inference-Header-Content-Length" in body(mangled)["error"]
    # When it is declared application/octet-stream: base64 to the function, scored; but the client's Accept
    # (none: application/json) is not binary, so it gets the binary answer as base64 text
    octet = {**base, "content-type": ["application/octet-stream"]}
    as_text = gateway.handle("POST", path, octet, raw)
    assert as_text.status == 200 and as_text.headers["Content-Type"] == "application/octet-stream"
    import base64

    decoded = base64.b64decode(as_text.body)
    header = int(as_text.headers["Inference-Header-Content-Length"])
    assert json.loads(decoded[:header])["outputs"][0]["name"] == "label"
    # And with Accept: application/octet-stream it gets the bytes themselves
    as_bytes = gateway.handle("POST", path, {**octet, "accept": ["application/octet-stream"]}, raw)
    length = int(as_bytes.headers["Inference-Header-Content-Length"])
    assert as_bytes.status == 200 and as_bytes.body[length:] == decoded[header:]
    assert json.loads(as_bytes.body[:length])["outputs"] == json.loads(decoded[:header])["outputs"]


def test_a_function_that_cannot_start_is_502(deployed: Any, gateway: Gateway) -> None:
    # Given live moved to a published version whose handler cannot be imported (a broken deployment: Lambda
    # answers Runtime.ImportModuleError instead of a response)
    lam, function = deployed.client("lambda"), model_function(deployed)
    lam.update_function_configuration(FunctionName=function, Handler="lambdas.inference.absent.lambda_handler")
    broken = lam.publish_version(FunctionName=function)["Version"]
    lam.update_alias(FunctionName=function, Name="live", FunctionVersion=broken)
    # When a client calls the model
    reply = gateway.handle("GET", f"/v2/models/{MODEL}", HEADERS, b"")
    # Then API Gateway answers 502 with its own message
    assert reply.status == 502 and body(reply) == {"error": "Internal server error"}


def test_the_openapi_document_is_served_without_a_key_and_describes_the_live_version(gateway: Gateway) -> None:
    # When the document is fetched without a key
    reply = gateway.handle("GET", "/openapi.json", {}, b"")
    # Then it lists the deployed model's literal routes, with its features and its classes
    assert reply.status == 200
    doc = body(reply)
    predict = doc["paths"][PREDICT]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(predict["properties"]["instances"]["items"]["required"]) == set(ROW)
    feedback = doc["paths"][f"/v1/models/{MODEL}:feedback"]["post"]["requestBody"]["content"]["application/json"]
    assert feedback["schema"]["properties"]["label"]["anyOf"][0] == {"enum": ["benign", "malignant"]}
