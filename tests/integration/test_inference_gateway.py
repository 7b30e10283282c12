"""The local API gateway without sockets: proxy events, API keys, routing to the alias, limits, failures."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from modeldeck.gateway import Gateway, HttpResponse
from modeldeck.localcloud import deploy_inference_version
from modeldeck.openapi import document
from modeldeck.registry import BASELINE, HOLDOUT, Registry
from tests.fixtures.inference import MODEL, ROW

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")
JSON_HEADERS = {"content-type": ["application/json"]}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def deployed(served_cloud: Any) -> Any:
    """Given the demo model's inference function deployed with alias live → v1."""
    cloud, _ = served_cloud
    deploy_inference_version(cloud, MODEL, 1)
    return cloud


def body(response: HttpResponse) -> Any:
    return json.loads(response.body)


def test_requests_reach_the_model_through_the_alias(deployed: Any) -> None:
    gateway = Gateway(deployed)
    meta = gateway.handle("GET", f"/v2/models/{MODEL}", {}, b"")
    assert meta.status == 200 and body(meta)["name"] == MODEL
    assert meta.headers["X-Executed-Version"] == "1" and meta.headers["X-Model-Version"] == "1"
    reply = gateway.handle(
        "POST", f"/v1/models/{MODEL}:predict", JSON_HEADERS, json.dumps({"instances": [ROW]}).encode()
    )
    assert reply.status == 200 and body(reply)["predictions"] == ["benign"]
    assert body(reply)["id"] == reply.headers["X-Request-Id"]


def test_the_event_is_an_api_gateway_rest_proxy_event(deployed: Any) -> None:
    gateway = Gateway(deployed, api_key="k")
    event = gateway.event(
        "POST",
        f"/v1/models/{MODEL}:predict",
        "/v1/models/{name}:predict",
        {"name": MODEL},
        "a=1&a=2",
        {"x-api-key": ["k"], "content-type": ["application/json"]},
        b"{}",
        "127.0.0.1",
    )
    assert event["resource"] == "/v1/models/{name}:predict" and event["httpMethod"] == "POST"
    assert event["pathParameters"] == {"name": MODEL} and event["body"] == "{}" and event["isBase64Encoded"] is False
    assert event["queryStringParameters"] == {"a": "2"}
    assert event["multiValueQueryStringParameters"] == {"a": ["1", "2"]}
    assert event["headers"]["content-type"] == "application/json"
    assert event["multiValueHeaders"]["x-api-key"] == ["k"]
    ctx = event["requestContext"]
    assert ctx["stage"] == "local" and ctx["requestId"] and ctx["identity"]["apiKey"] == "k"
    assert ctx["path"] == f"/local/v1/models/{MODEL}:predict"
    binary = gateway.event("POST", "/x", "/{proxy+}", {}, "", {}, b"\xff\x00", "127.0.0.1")
    assert binary["isBase64Encoded"] is True and binary["body"] == "/wA="


@pytest.mark.parametrize(("given", "status"), [(None, 403), ("wrong", 403), ("secret", 200)])
def test_the_api_key_is_enforced_when_configured(deployed: Any, given: str | None, status: int) -> None:
    gateway = Gateway(deployed, api_key="secret")
    headers = {"x-api-key": [given]} if given else {}
    reply = gateway.handle("GET", f"/v2/models/{MODEL}/ready", headers, b"")
    assert reply.status == status
    if status == 403:
        assert body(reply) == {"error": "Forbidden: a valid API key is required in the x-api-key header"}


def test_the_openapi_document_is_served_without_a_key(deployed: Any) -> None:
    reply = Gateway(deployed, api_key="secret").handle("GET", "/openapi.json", {}, b"")
    assert reply.status == 200 and body(reply) == document()


@pytest.mark.parametrize(
    ("method", "path", "message"),
    [
        ("GET", "/v2/models/unknown", "model 'unknown' is not deployed (deployed: breast-cancer)"),
        ("POST", "/v1/models/unknown:predict", "model 'unknown' is not deployed"),
        ("GET", "/admin", "no route GET /admin"),
    ],
)
def test_unknown_models_and_routes_are_404_json(deployed: Any, method: str, path: str, message: str) -> None:
    reply = Gateway(deployed).handle(method, path, {}, b"")
    assert reply.status == 404 and body(reply)["error"].startswith(message)


def test_bodies_over_the_gateway_limit_are_413(deployed: Any) -> None:
    reply = Gateway(deployed, max_body_bytes=100).handle(
        "POST", f"/v1/models/{MODEL}:predict", JSON_HEADERS, b" " * 101
    )
    assert reply.status == 413 and body(reply) == {"error": "the request body is larger than 100 bytes"}


def test_health_covers_every_deployed_model(deployed: Any) -> None:
    gateway = Gateway(deployed)
    live = gateway.handle("GET", "/v2/health/live", {}, b"")
    ready = gateway.handle("GET", "/v2/health/ready", {}, b"")
    assert live.status == 200 and body(live)["models"][MODEL] == {"live": True}
    assert ready.status == 200 and body(ready)["models"][MODEL]["model_version"] == "1"


def test_a_failing_function_is_502(deployed: Any) -> None:
    deployed.lambdas.inject_fault(f"{MODEL}-inference", "1", "errors")
    try:
        reply = Gateway(deployed).handle("GET", f"/v2/models/{MODEL}", {}, b"")
    finally:
        deployed.lambdas.faults.clear()
    assert reply.status == 502 and body(reply)["error"].startswith("Internal server error")


def test_new_functions_are_discovered_after_the_cache_expires(deployed: Any, trained_demo: Any) -> None:
    # Given a gateway that has already looked the functions up
    clock = Clock()
    gateway = Gateway(deployed, discovery_ttl=2.0, clock=clock)
    assert set(gateway.functions()) == {MODEL}
    # When another model is registered and deployed
    registry = Registry(deployed.client("s3"), deployed.bucket)
    other = replace(trained_demo.card, name="tumours")
    registry.register(other, trained_demo.onnx, {BASELINE: trained_demo.baseline, HOLDOUT: trained_demo.holdout})
    deploy_inference_version(deployed, "tumours", 1)
    # Then it is routed once the short cache has expired
    assert gateway.handle("GET", "/v2/models/tumours", {}, b"").status == 404
    clock.now += 2.5
    reply = gateway.handle("GET", "/v2/models/tumours", {}, b"")
    assert reply.status == 200 and body(reply)["name"] == "tumours"
