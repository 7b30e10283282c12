"""The REST API's contract in the template: request models are the OpenAPI document's schemas, every other method
of a route is a 405 with ``Allow``, and API Gateway's own answers carry ``X-Request-Id``."""

from __future__ import annotations

from typing import Any

import jsonschema

from modeldeck.openapi import ModelApi, draft4, feedback_request, predict_request
from modeldeck.spec import load_spec
from tests.fixtures.inference import MODEL, ROW
from tests.infra.conftest import ROOT, Synth


def _paths(synth: Synth) -> dict[str, str]:
    parts = {
        k.split("/")[1]: r["Properties"] for k, r in synth.resources("AWS::ApiGateway::Resource", "Serving").items()
    }

    def path(logical: str) -> str:
        props = parts[logical]
        parent = props["ParentId"]
        return ("" if "Fn::GetAtt" in parent else path(parent["Ref"])) + "/" + props["PathPart"]

    return {logical: path(logical) for logical in parts}


def _methods(synth: Synth) -> dict[tuple[str, str], dict[str, Any]]:
    paths = _paths(synth)
    return {
        (paths[m["Properties"]["ResourceId"]["Ref"]], m["Properties"]["HttpMethod"]): m["Properties"]
        for m in synth.resources("AWS::ApiGateway::Method", "Serving").values()
    }


def test_request_models_are_the_documents_schemas_for_the_models_spec(synth: Synth) -> None:
    # Given the demo model's spec, as the API is synthesized from it
    model = ModelApi.from_spec(load_spec(ROOT / "models" / f"{MODEL}.toml"), synth.config.api.max_rows)
    models = {k.split("/")[1]: m["Properties"]["Schema"] for k, m in synth.resources("AWS::ApiGateway::Model").items()}
    methods = _methods(synth)

    def schema(path: str) -> dict[str, Any]:
        return models[methods[(path, "POST")]["RequestModels"]["application/json"]["Ref"]]

    # Then each POST route's model is the schema function's output, as JSON Schema draft 4
    assert schema(f"/v1/models/{MODEL}:predict") == draft4(predict_request(model))
    # infer has none: its body may be binary tensors (the function validates it), see test_stacks
    assert "RequestModels" not in methods[(f"/v2/models/{MODEL}/infer", "POST")]
    assert schema(f"/v1/models/{MODEL}:feedback") == draft4(feedback_request(model))
    # and the README's own examples pass them, while a row with 2 of the 10 features does not
    check = jsonschema.Draft4Validator
    assert check(schema(f"/v1/models/{MODEL}:predict")).is_valid({"instances": [ROW]})
    assert not check(schema(f"/v1/models/{MODEL}:predict")).is_valid({"instances": [{"mean_radius": 14.1}]})


def test_every_other_method_of_a_route_is_a_mock_405_with_allow(synth: Synth) -> None:
    methods = _methods(synth)
    routed = {(path, verb) for path, verb in methods if verb != "ANY"}
    # Then every routed resource also has ANY, a MOCK integration answering 405 with the allowed method
    for path, verb in routed:
        catch_all = methods[(path, "ANY")]
        integration = catch_all["Integration"]
        assert integration["Type"] == "MOCK"
        (response,) = integration["IntegrationResponses"]
        assert response["StatusCode"] == "405"
        assert response["ResponseParameters"]["method.response.header.Allow"] == f"'{verb}'"
        (declared,) = catch_all["MethodResponses"]
        assert declared["ResponseParameters"]["method.response.header.Allow"] is True


def test_api_gateways_own_answers_carry_the_request_id(synth: Synth) -> None:
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in synth.resources("AWS::ApiGateway::GatewayResponse", "Serving").values()
    }
    # Then the key, route, body, throttling and default responses all set X-Request-Id from the context
    for kind in (
        "INVALID_API_KEY",
        "ACCESS_DENIED",
        "MISSING_AUTHENTICATION_TOKEN",
        "BAD_REQUEST_BODY",
        "THROTTLED",
        "QUOTA_EXCEEDED",
        "DEFAULT_4XX",
        "DEFAULT_5XX",
    ):
        assert responses[kind]["ResponseParameters"] == {"gatewayresponse.header.X-Request-Id": "context.requestId"}
    assert responses["INVALID_API_KEY"]["StatusCode"] == "403"


def test_every_media_type_is_binary_so_tritonclients_bodies_reach_the_function_intact(synth: Synth) -> None:
    # Given tritonclient's default mode: binary tensors with no Content-Type (application/json to API Gateway)
    # and no Accept. Only a binary media type reaches a Lambda proxy base64-encoded instead of as UTF-8 text
    # (bytes that are not UTF-8 would be replaced), and only a binary media type in Accept turns an
    # isBase64Encoded response back into bytes. So every media type is binary.
    (api,) = synth.resources("AWS::ApiGateway::RestApi", "Serving").values()
    assert api["Properties"]["BinaryMediaTypes"] == ["*/*"]
    # And infer has no JSON request model that would refuse a binary body
    assert "RequestModels" not in _methods(synth)[(f"/v2/models/{MODEL}/infer", "POST")]
