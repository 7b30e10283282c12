"""The inference handler on moto with a fake Lambda context: every route, every error class, metrics."""

from __future__ import annotations

import base64
import json
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modeldeck.gateway import proxy_event
from modeldeck.onnxmodel import OnnxModel
from modeldeck.openapi import ROUTES
from tests.fixtures.inference import (
    MALIGNANT_ROW,
    MODEL,
    ROW,
    FakeLambdaContext,
    call,
    oip_inputs,
)

PREDICT = f"/v1/models/{MODEL}:predict"
INFER = f"/v2/models/{MODEL}/infer"
FEEDBACK = f"/v1/models/{MODEL}:feedback"
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


def emf_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]


# --- routes -----------------------------------------------------------------------------------------


def test_liveness_does_not_load_the_model(handler: ModuleType) -> None:
    # When
    reply = call(handler, "GET", "/v2/health/live")
    # Then
    assert reply.status == 200 and reply.json == {"live": True}
    assert handler.service().store.attempts == 0


def test_readiness_loads_and_reports_the_pinned_version(handler: ModuleType) -> None:
    reply = call(handler, "GET", "/v2/health/ready")
    assert reply.status == 200
    assert reply.json == {"ready": True, "model_name": MODEL, "model_version": "1"}
    assert reply.headers["X-Model-Version"] == "1"


def test_model_metadata_comes_from_the_card(handler: ModuleType, served_card: Any) -> None:
    reply = call(handler, "GET", f"/v2/models/{MODEL}")
    assert reply.status == 200
    assert reply.json["name"] == MODEL and reply.json["versions"] == ["1"] and reply.json["platform"] == "onnx"
    assert reply.json["inputs"] == [
        {"name": t.name, "datatype": t.datatype, "shape": t.shape} for t in served_card.inputs
    ]
    assert reply.json["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
    ]


def test_model_ready(handler: ModuleType) -> None:
    reply = call(handler, "GET", f"/v2/models/{MODEL}/ready")
    assert reply.status == 200 and reply.json == {"name": MODEL, "ready": True, "model_version": "1"}


def test_predict_returns_predictions_probabilities_version_and_the_gateway_request_id(handler: ModuleType) -> None:
    # Given a benign-looking and a malignant-looking row
    event = proxy_event(
        "POST",
        PREDICT,
        json.dumps({"instances": [ROW, MALIGNANT_ROW]}).encode(),
        headers={"content-type": ["application/json"]},
    )
    # When
    result = handler.lambda_handler(event, FakeLambdaContext())
    body = json.loads(result["body"])
    # Then
    assert result["statusCode"] == 200
    assert body["predictions"] == ["benign", "malignant"]
    assert np.allclose(np.sum(body["probabilities"], axis=1), 1.0, atol=1e-5)
    assert body["model_version"] == "1"
    headers = {**result.get("headers", {}), **{k: v[0] for k, v in result.get("multiValueHeaders", {}).items()}}
    assert body["id"] == event["requestContext"]["requestId"] == headers["X-Request-Id"]


def test_predict_agrees_with_the_onnx_model_on_the_whole_holdout(handler: ModuleType, trained_demo: Any) -> None:
    # Given the holdout rows as :predict instances
    cols = trained_demo.holdout["columns"]
    names = list(cols)
    instances = [dict(zip(names, values, strict=True)) for values in zip(*cols.values(), strict=True)]
    # When
    reply = call(handler, "POST", PREDICT, {"instances": instances})
    # Then the handler answers exactly what the session answers
    model = OnnxModel(trained_demo.card, trained_demo.onnx)
    expected = model.predict(trained_demo.card.schema.columns_from_records(instances, 10_000))
    assert reply.status == 200
    assert reply.json["predictions"] == expected.labels.tolist()
    assert np.allclose(reply.json["probabilities"], expected.probabilities, atol=1e-6)


def test_oip_infer_echoes_the_client_id_and_returns_output_tensors(handler: ModuleType) -> None:
    reply = call(handler, "POST", INFER, {"id": "req-42", "parameters": {}, "inputs": oip_inputs([ROW, MALIGNANT_ROW])})
    assert reply.status == 200
    assert reply.json["model_name"] == MODEL and reply.json["model_version"] == "1" and reply.json["id"] == "req-42"
    label, proba = reply.json["outputs"]
    assert label == {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["benign", "malignant"]}
    assert proba["name"] == "probabilities" and proba["shape"] == [2, 2] and len(proba["data"]) == 4
    assert reply.headers["X-Request-Id"] == "req-42"


def test_oip_infer_accepts_nested_data_and_returns_only_requested_outputs(handler: ModuleType) -> None:
    inputs = [{**t, "data": [[v] for v in t["data"]]} for t in oip_inputs([ROW])]
    reply = call(handler, "POST", INFER, {"inputs": inputs, "outputs": [{"name": "label"}]})
    assert reply.status == 200
    assert [o["name"] for o in reply.json["outputs"]] == ["label"]
    assert reply.json["id"]  # the gateway's request id when the client sends none


def test_feedback_is_accepted(handler: ModuleType) -> None:
    reply = call(handler, "POST", FEEDBACK, {"id": "pred-1", "label": ["benign", "malignant"]})
    assert reply.status == 202
    assert reply.json["prediction_id"] == "pred-1" and reply.json["labels"] == 2
    assert reply.json["model_version"] == "1" and reply.json["id"]


def test_a_missing_content_type_is_taken_as_json(handler: ModuleType) -> None:
    assert call(handler, "POST", PREDICT, {"instances": [ROW]}, content_type=None).status == 200


def test_a_base64_encoded_body_is_decoded(handler: ModuleType) -> None:
    raw = json.dumps({"instances": [ROW]}).encode()
    event = proxy_event("POST", PREDICT, headers={"content-type": ["application/json"]})
    event.update(body=base64.b64encode(raw).decode(), isBase64Encoded=True)
    assert handler.lambda_handler(event, FakeLambdaContext())["statusCode"] == 200


@pytest.mark.parametrize("route", [r for r in ROUTES if r.path != "/openapi.json"], ids=lambda r: r.operation_id)
def test_every_documented_route_is_served(handler: ModuleType, route: Any) -> None:
    # Given the documented path for the demo model
    path = route.path.replace("{name}", MODEL)
    body = (
        {"instances": [ROW]}
        if route.request == "PredictRequest"
        else (
            {"inputs": oip_inputs([ROW])}
            if route.request == "InferRequest"
            else {"id": "x", "label": "benign"}
            if route.request == "FeedbackRequest"
            else None
        )
    )
    # When
    reply = call(handler, route.method, path, body)
    # Then it answers with the documented status
    assert reply.status == route.status, reply.json


# --- 404 ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/models/other"),
        ("GET", "/v2/models/other/ready"),
        ("POST", "/v2/models/other/infer"),
        ("POST", "/v1/models/other:predict"),
        ("POST", "/v1/models/other:feedback"),
    ],
)
def test_another_model_is_404(handler: ModuleType, method: str, path: str) -> None:
    reply = call(handler, method, path, {"instances": [ROW]})
    assert reply.status == 404
    assert reply.json == {"error": f"model 'other' is not served here (this endpoint serves '{MODEL}')"}


@pytest.mark.parametrize(
    ("method", "path", "message"),
    [
        ("GET", "/nowhere", "no route GET /nowhere"),
        ("DELETE", f"/v2/models/{MODEL}", f"no route DELETE /v2/models/{MODEL}"),
        ("POST", f"/v1/models/{MODEL}:explain", f"no route POST /v1/models/{MODEL}:explain"),
        ("POST", f"/v1/models/{MODEL}", f"no route POST /v1/models/{MODEL}"),
    ],
)
def test_unknown_routes_are_404(handler: ModuleType, method: str, path: str, message: str) -> None:
    reply = call(handler, method, path, {})
    assert reply.status == 404 and reply.json["error"].startswith(message)


# --- 400 / 413 / 415 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"instances": [', "malformed JSON: Expecting value at line 1 column 16"),
        (b'{"instances": [{"mean_radius": NaN}]}', "malformed JSON: NaN is not valid JSON"),
        (b"[1, 2]", "the body must be a JSON object, got a list"),
        (b'"text"', "the body must be a JSON object, got a string"),
        (b"", "the request body is empty"),
        (b"\xff\xfe", "malformed JSON: the body is not UTF-8"),
    ],
)
def test_malformed_bodies_are_400(handler: ModuleType, raw: bytes, message: str) -> None:
    reply = call(handler, "POST", PREDICT, raw=raw)
    assert reply.status == 400
    assert reply.json["error"].startswith(message), reply.json


def _row(**changes: Any) -> dict[str, Any]:
    row = {**ROW, **changes}
    return {k: v for k, v in row.items() if v is not ...}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # Other top-level strings and numbers are admitted (an experiment's unit key); objects and lists are not
        ({"instances": [ROW], "extra": {"a": 1}}, "unknown field(s) 'extra'; expected instances (other fields"),
        ({"instances": [ROW], "extra": True}, "unknown field(s) 'extra'"),
        ({"rows": [ROW]}, "unknown field(s) 'rows'; expected instances"),
        ({}, "missing field 'instances'"),
        ({"instances": {"a": 1}}, "'instances' must be a list of objects"),
        ({"instances": []}, "the batch is empty"),
        ({"instances": [1]}, "instances[0] must be an object"),
        ({"instances": [_row(mean_radius=...)]}, "instances[0]: missing feature(s) 'mean_radius'"),
        ({"instances": [_row(colour="red")]}, "instances[0]: unknown feature(s) 'colour'"),
        ({"instances": [ROW, _row(mean_radius="big")]}, "instances[1].mean_radius must be a number, got a string"),
        ({"instances": [_row(mean_radius=True)]}, "instances[0].mean_radius must be a number, got a boolean"),
        ({"instances": [_row(mean_radius=-3.0)]}, "instances[0].mean_radius = -3 is outside"),
        ({"instances": [_row(mean_area="big")]}, "instances[0].mean_area must be a number, got a string"),
        # size_band is derived inside the model from mean_area: clients do not send it.
        ({"instances": [_row(size_band="medium")]}, "instances[0]: unknown feature(s) 'size_band'"),
    ],
)
def test_invalid_predict_requests_are_400_with_the_field(handler: ModuleType, body: Any, message: str) -> None:
    reply = call(handler, "POST", PREDICT, body)
    assert reply.status == 400
    assert reply.json["error"].startswith(message), reply.json


def test_a_number_overflowing_to_infinity_is_400(handler: ModuleType) -> None:
    raw = json.dumps({"instances": [ROW]}).replace("14.1", "1e999").encode()
    reply = call(handler, "POST", PREDICT, raw=raw)
    assert reply.status == 400
    assert reply.json == {"error": "instances[0].mean_radius must be finite, got inf"}


def _tensors(**changes: Any) -> list[dict[str, Any]]:
    tensors = oip_inputs([ROW])
    tensors[0] = {**tensors[0], **changes}
    return tensors


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"inputs": _tensors(), "model": "x"}, "unknown field(s) 'model'"),
        ({"id": 7, "inputs": _tensors()}, "'id' must be a non-empty string"),
        ({"inputs": _tensors(), "parameters": []}, "'parameters' must be an object"),
        ({"inputs": _tensors(), "outputs": [{"name": "score"}]}, "unknown output(s) 'score'"),
        ({"inputs": []}, "'inputs' must be a non-empty list"),
        ({"inputs": _tensors(datatype="BYTES")}, "input 'mean_radius': datatype 'BYTES' does not match"),
        ({"inputs": _tensors(shape=[2, 1])}, "input 'mean_radius': shape [2, 1] says 2 values but data has 1"),
        ({"inputs": _tensors(shape=[1, 3])}, "input 'mean_radius': shape [1, 3] is not supported"),
        ({"inputs": _tensors(name="radius")}, "unknown input(s) 'radius'"),
    ],
)
def test_invalid_oip_requests_are_400(handler: ModuleType, body: Any, message: str) -> None:
    reply = call(handler, "POST", INFER, body)
    assert reply.status == 400
    assert reply.json["error"].startswith(message), reply.json


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"label": "benign"}, "missing field 'id'"),
        ({"id": "", "label": "benign"}, "'id' must be the prediction's id"),
        ({"id": "x", "label": "maybe"}, "label: 'maybe' is not one of the model's classes 'benign', 'malignant'"),
        ({"id": "x", "label": ["benign", 1]}, "label[1]: 1 is not one of the model's classes"),
        ({"id": "x", "label": []}, "'label' is empty"),
    ],
)
def test_invalid_feedback_is_400(handler: ModuleType, body: Any, message: str) -> None:
    reply = call(handler, "POST", FEEDBACK, body)
    assert reply.status == 400
    assert reply.json["error"].startswith(message), reply.json


def test_too_many_rows_is_413(configure_handler: Any, served_card: Any) -> None:
    handler = configure_handler(MAX_ROWS="3")
    reply = call(handler, "POST", PREDICT, {"instances": [ROW] * 4})
    assert reply.status == 413 and reply.json == {"error": "too many rows: 4 (the limit is 3 per request)"}
    assert call(handler, "POST", INFER, {"inputs": oip_inputs([ROW] * 4)}).status == 413
    assert call(handler, "POST", FEEDBACK, {"id": "x", "label": ["benign"] * 4}).status == 413
    assert call(handler, "POST", PREDICT, {"instances": [ROW] * 3}).status == 200


def test_a_body_over_the_limit_is_413(configure_handler: Any, served_card: Any) -> None:
    handler = configure_handler(MAX_BODY_BYTES="2048")
    reply = call(handler, "POST", PREDICT, {"instances": [ROW] * 10})
    assert reply.status == 413 and reply.json["error"].endswith("the limit is 2048")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "text/csv"])
def test_a_non_json_content_type_is_415(handler: ModuleType, content_type: str) -> None:
    reply = call(handler, "POST", PREDICT, {"instances": [ROW]}, content_type=content_type)
    assert reply.status == 415
    assert reply.json == {"error": f"unsupported Content-Type {content_type!r}: send application/json"}


def test_json_with_a_charset_or_a_json_suffix_is_accepted(handler: ModuleType) -> None:
    for content_type in ("application/json; charset=utf-8", "application/vnd.handler+json"):
        assert call(handler, "POST", PREDICT, {"instances": [ROW]}, content_type=content_type).status == 200


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
        max_leaves=12,
    ),
    path=st.sampled_from([PREDICT, INFER, FEEDBACK]),
)
def test_no_client_body_is_ever_a_500(handler: ModuleType, body: Any, path: str) -> None:
    raw = json.dumps(body).encode()
    reply = call(handler, "POST", path, raw=raw)
    assert 200 <= reply.status < 500, (raw, reply.json)
    if reply.status >= 400:
        assert set(reply.json) == {"error"}


# --- metrics -----------------------------------------------------------------------------------------


def test_predictions_emit_emf_metrics_with_model_and_version(
    handler: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    call(handler, "POST", PREDICT, {"instances": [ROW, ROW, MALIGNANT_ROW]})
    (emf,) = emf_lines(capsys.readouterr().out)
    assert emf["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "modeldeck"
    assert emf["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["model", "version"], ["model"]]
    assert emf["model"] == MODEL and emf["version"] == "1"
    assert emf["Rows"] == [3.0] and emf["Predicted.benign"] == [2.0] and emf["Predicted.malignant"] == [1.0]
    assert emf["Latency"][0] > 0 and 0 < emf["PredictionScore"][0] < 1


def test_errors_are_counted_as_client_or_server_errors(
    configure_handler: Any, served_card: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = configure_handler()
    call(handler, "POST", PREDICT, {"instances": []})
    handler = configure_handler(MODEL_VERSION="9")
    call(handler, "POST", PREDICT, {"instances": [ROW]})
    client, server = emf_lines(capsys.readouterr().out)
    assert client["ClientErrors"] == [1.0] and "ServerErrors" not in client
    assert server["ServerErrors"] == [1.0] and server["version"] == "9"
