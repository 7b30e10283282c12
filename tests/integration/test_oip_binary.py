"""The Open Inference Protocol's binary tensor data extension through the inference handler.

Bodies are built by tritonclient's own request encoder (``binary_data=True`` is its default) and responses
read back with its decoder, so the tests check the wire format a real client sends and reads, with the
events API Gateway sends (a binary body arrives base64-encoded, ``isBase64Encoded``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from modeldeck.gateway import proxy_event
from tests.fixtures.inference import MALIGNANT_ROW, MODEL, ROW, FakeLambdaContext, call, oip_inputs

tritonclient = pytest.importorskip("tritonclient.http")
from tritonclient.http import InferInput, InferRequestedOutput, InferResult  # noqa: E402
from tritonclient.http._utils import _get_inference_request  # noqa: E402

INFER = f"/v2/models/{MODEL}/infer"
ROWS = [ROW, MALIGNANT_ROW, ROW]
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


def triton_inputs(rows: list[dict[str, Any]], *, binary: bool | set[str] = True) -> list[InferInput]:
    """One FP32 tensor [n, 1] per feature; ``binary`` True, False, or the names sent in binary."""
    out = []
    for name in rows[0]:
        tensor = InferInput(name, [len(rows), 1], "FP32")
        as_binary = binary if isinstance(binary, bool) else name in binary
        tensor.set_data_from_numpy(np.array([[r[name]] for r in rows], dtype=np.float32), binary_data=as_binary)
        out.append(tensor)
    return out


def encode(inputs: list[InferInput], outputs: list[InferRequestedOutput] | None = None) -> tuple[bytes, int | None]:
    return _get_inference_request(inputs, "", outputs, 0, False, False, 0, None, None)  # type: ignore[no-any-return]


def send(handler: ModuleType, body: bytes, header_length: int | str | None, **extra: str) -> dict[str, Any]:
    """POST infer as API Gateway delivers a binary body: base64-encoded, tritonclient's headers (no Content-Type)."""
    headers = {k.lower(): [v] for k, v in extra.items()}
    if header_length is not None:
        headers["inference-header-content-length"] = [str(header_length)]
    event = proxy_event("POST", INFER, body, headers=headers)
    if not event["isBase64Encoded"]:
        event.update(body=base64.b64encode(body).decode(), isBase64Encoded=True)
    return handler.lambda_handler(event, FakeLambdaContext())  # type: ignore[no-any-return]


def result_of(response: dict[str, Any]) -> InferResult:
    """The response as tritonclient reads it."""
    assert response["statusCode"] == 200, response["body"]
    raw = base64.b64decode(response["body"]) if response["isBase64Encoded"] else response["body"].encode()
    length = headers_of(response).get("inference-header-content-length")
    return InferResult.from_response_body(raw, header_length=None if length is None else int(length))


def headers_of(response: dict[str, Any]) -> dict[str, str]:
    merged = {k.lower(): str(v) for k, v in (response.get("headers") or {}).items()}
    merged.update({k.lower(): ", ".join(map(str, v)) for k, v in (response.get("multiValueHeaders") or {}).items()})
    return merged


def error_of(response: dict[str, Any]) -> str:
    assert response["statusCode"] == 400, response
    return str(json.loads(response["body"])["error"])


@pytest.fixture(scope="module")
def handler(served_cloud: tuple[Any, Any]) -> Iterator[ModuleType]:
    """The handler serving the demo model with default settings, warm for the whole module (one cold start:
    these tests are about bodies, not loading)."""
    from lambdas.inference import handler as module

    env = {"MODEL_NAME": MODEL, "MODEL_VERSION": "1", "MODEL_BUCKET": served_cloud[0].bucket}
    with pytest.MonkeyPatch.context() as patch:
        for key in ("MAX_ROWS", "MAX_BODY_BYTES", "CAPTURE_SAMPLE_RATE", "CAPTURE_REDACT"):
            patch.delenv(key, raising=False)
        for key, value in env.items():
            patch.setenv(key, value)
        for factory in (module.settings, module._botocore_session, module.s3_client, module.service):
            factory.cache_clear()
        yield module
        for factory in (module.settings, module._botocore_session, module.s3_client, module.service):
            factory.cache_clear()


def test_tritonclients_default_binary_request_gets_binary_outputs_equal_to_the_json_ones(handler: ModuleType) -> None:
    # Given the same rows sent in tritonclient's default (binary inputs, binary outputs) and in JSON
    body, length = encode(triton_inputs(ROWS))
    assert length is not None
    binary = send(handler, body, length)
    json_body, none = encode(
        triton_inputs(ROWS, binary=False),
        [InferRequestedOutput(o, binary_data=False) for o in ("label", "probabilities")],
    )
    assert none is None
    plain = send(handler, json_body, None)
    # Then the binary answer is the extension's (octet-stream, header length, base64 to API Gateway)
    headers = headers_of(binary)
    assert headers["content-type"] == "application/octet-stream" and binary["isBase64Encoded"] is True
    got, want = result_of(binary), result_of(plain)
    assert (
        "data" not in got.get_output("probabilities")
        and got.get_output("probabilities")["parameters"]["binary_data_size"] == 3 * 2 * 4
    )
    # And it decodes to exactly the JSON outputs: labels (BYTES) and probabilities (FP32), same shapes
    np.testing.assert_array_equal(got.as_numpy("probabilities"), want.as_numpy("probabilities"))
    labels = [v.decode() for v in got.as_numpy("label").ravel()]
    assert labels == want.as_numpy("label").ravel().tolist() == ["benign", "malignant", "benign"]
    assert got.as_numpy("label").shape == want.as_numpy("label").shape


def test_the_binary_and_json_paths_score_the_same_columns(handler: ModuleType) -> None:
    # Given the handler's JSON infer answer for rows (flat data) and the same rows in binary, JSON outputs asked
    plain = call(handler, "POST", INFER, {"inputs": oip_inputs(ROWS)})
    body, length = encode(triton_inputs(ROWS), [InferRequestedOutput("probabilities", binary_data=False)])
    reply = send(handler, body, length)
    # Then the answer is plain JSON (no binary output was asked for) with the very same numbers
    assert reply["isBase64Encoded"] is False and "inference-header-content-length" not in headers_of(reply)
    (probabilities,) = json.loads(reply["body"])["outputs"]
    assert probabilities == next(o for o in plain.json["outputs"] if o["name"] == "probabilities")


def test_json_and_binary_inputs_mix_in_one_request(handler: ModuleType) -> None:
    # Given two features in JSON data and the rest in binary (as the extension allows)
    body, length = encode(triton_inputs(ROWS, binary=set(list(ROW)[2:])))
    header = json.loads(body[:length])
    assert sum("data" in t for t in header["inputs"]) == 2
    # Then it scores as the all-binary request does
    mixed, full = result_of(send(handler, body, length)), result_of(send(handler, *encode(triton_inputs(ROWS))))
    np.testing.assert_array_equal(mixed.as_numpy("probabilities"), full.as_numpy("probabilities"))


def test_binary_data_output_in_a_json_request_returns_binary_outputs(handler: ModuleType) -> None:
    # Given a plain JSON request asking for every output in binary (request-level binary_data_output)
    raw = json.dumps({"inputs": oip_inputs(ROWS), "parameters": {"binary_data_output": True}}).encode()
    reply = send(handler, raw, None, **{"Content-Type": "application/json"})
    # Then both outputs come back in binary, in the card's order, sizes in the header
    result = result_of(reply)
    sizes = [o["parameters"]["binary_data_size"] for o in result.get_response()["outputs"]]
    assert sizes == [sum(4 + len(v) for v in ("benign", "malignant", "benign")), 3 * 2 * 4]


def test_a_value_the_schema_refuses_is_the_same_400_in_binary_and_in_json(handler: ModuleType) -> None:
    # Given a row out of the feature's range, in JSON and in binary
    bad = [{**ROW, "mean_radius": 1000.0}]
    plain = call(handler, "POST", INFER, {"inputs": oip_inputs(bad)})
    binary = send(handler, *encode(triton_inputs(bad)))
    # Then both are the schema's 400 with the same message
    assert plain.status == 400 and error_of(binary) == plain.json["error"]


def test_a_bytes_tensor_for_a_numeric_feature_is_the_json_paths_400(handler: ModuleType) -> None:
    inputs = triton_inputs(ROWS)
    text = InferInput("mean_radius", [3, 1], "BYTES")
    text.set_data_from_numpy(np.array([["a"], ["bc"], ["d"]], dtype=object))
    inputs[0] = text
    message = error_of(send(handler, *encode(inputs)))
    assert message.startswith("input 'mean_radius': datatype 'BYTES' does not match the feature")


# --- malformed bodies: 400s that say what is wrong ----------------------------------------------------


@pytest.fixture(scope="module")
def good() -> tuple[bytes, int]:
    body, length = encode(triton_inputs(ROWS))
    assert length is not None
    return body, length


def test_lengths_that_do_not_add_up_are_400(handler: ModuleType, good: tuple[bytes, int]) -> None:
    body, length = good
    short = error_of(send(handler, body[:-4], length))
    assert short == (
        "the inputs' binary_data_size add up to 120 bytes but 116 bytes follow the Inference-Header-Content-Length "
        "(10 binary inputs)"
    )
    assert "add up to 120 bytes but 124 bytes" in error_of(send(handler, body + b"\0" * 4, length))


def test_a_header_length_past_the_end_of_the_body_is_400(handler: ModuleType, good: tuple[bytes, int]) -> None:
    body, _ = good
    message = error_of(send(handler, body, len(body) + 1))
    assert (
        message == f"Inference-Header-Content-Length is {len(body) + 1} bytes but the body has only {len(body)} bytes"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "12abc",
            "Inference-Header-Content-Length must be a non-negative integer (the JSON header's length), got '12abc'",
        ),
        ("-5", "Inference-Header-Content-Length must be a non-negative integer (the JSON header's length), got '-5'"),
        ("0", "Inference-Header-Content-Length is 0: the body must start with the JSON inference header"),
    ],
)
def test_a_header_that_is_not_a_length_is_400(
    handler: ModuleType, good: tuple[bytes, int], value: str, message: str
) -> None:
    assert error_of(send(handler, good[0], value)) == message


def test_a_header_length_that_cuts_the_json_is_400(handler: ModuleType, good: tuple[bytes, int]) -> None:
    body, length = good
    assert error_of(send(handler, body, length - 3)).startswith("malformed JSON")


def test_a_size_that_does_not_match_shape_and_datatype_is_400(handler: ModuleType) -> None:
    # Given mean_radius declared [3, 1] FP32 (12 bytes) but sent as 3 FP64 values (24 bytes)
    inputs = triton_inputs(ROWS)
    wide = InferInput("mean_radius", [3, 1], "FP32")
    wide.set_data_from_numpy(np.zeros((3, 1), dtype=np.float32))
    wide._raw_data = np.zeros(3, dtype=np.float64).tobytes()
    wide._parameters["binary_data_size"] = 24
    inputs[0] = wide
    message = error_of(send(handler, *encode(inputs)))
    assert (
        message
        == "input 'mean_radius': binary_data_size is 24 bytes but shape [3, 1] of FP32 (4 bytes each) is 12 bytes"
    )


def test_a_binary_body_api_gateway_passed_as_text_is_a_400_not_a_500(
    handler: ModuleType, good: tuple[bytes, int]
) -> None:
    # Given a binary body whose Content-Type is not a binary media type: API Gateway hands it over as UTF-8
    # text, so bytes that were not UTF-8 are replaced and the lengths no longer add up
    body, length = good
    event = proxy_event("POST", INFER, b"", headers={"inference-header-content-length": [str(length)]})
    event.update(body=body.decode("utf-8", errors="replace"), isBase64Encoded=False)
    reply = handler.lambda_handler(event, FakeLambdaContext())
    assert (
        reply["statusCode"] == 400
        and "follow the Inference-Header-Content-Length" in json.loads(reply["body"])["error"]
    )


def test_a_content_type_that_is_neither_binary_nor_json_is_415(handler: ModuleType, good: tuple[bytes, int]) -> None:
    reply = send(handler, *good, **{"Content-Type": "text/csv"})
    assert reply["statusCode"] == 415
    assert json.loads(reply["body"])["error"].startswith("unsupported Content-Type 'text/csv' for a binary request")


def test_a_binary_body_over_the_limit_is_413(configure_handler: Any) -> None:
    handler = configure_handler(MAX_BODY_BYTES="1024")
    body, length = encode(triton_inputs(ROWS * 20))
    reply = send(handler, body, length)
    assert reply["statusCode"] == 413, reply


def test_a_binary_body_without_its_header_length_is_a_400_naming_the_header(
    handler: ModuleType, good: tuple[bytes, int]
) -> None:
    # Given a binary body sent as application/octet-stream without Inference-Header-Content-Length
    # When it reaches the function
    reply = send(handler, good[0], None, **{"Content-Type": "application/octet-stream"})
    # Then it is a client error naming the missing header (not a 415 telling a binary client to send JSON)
    assert reply["statusCode"] == 400, reply
    assert "needs the Inference-Header-Content-Length header" in json.loads(reply["body"])["error"]
