"""Hostile HTTP input against the local gateway + inference handler: generated and hand-written.

The promise (design.md, "HTTP API"): no 5xx for a client's mistake, every error is ``{"error": message}``
with the documented status, and every response conforms to the OpenAPI document the gateway serves.

- ``test_schemathesis_*`` (slow, `make harden`): schemathesis generates valid and invalid requests for every
  operation of ``/openapi.json`` and runs its conformance checks on each response.
- ``test_hostile_requests``: a fixed catalogue of nasty requests (malformed JSON, deep nesting, NaN, huge
  numbers, unicode, wrong OIP shapes and datatypes, missing and wrong API keys, path traversal in model
  names) checked for the exact status; fast, part of `make test`.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi import checks as oas_checks

from tests.fixtures.inference import MODEL, ROW, oip_inputs
from tests.hardening.conftest import API_KEY, LiveApi, record_figures

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore:No application metrics to publish")]

# Requests sent by this module, by operation and status: the figures in docs/reliability.md.
SENT: Counter[tuple[str, int]] = Counter()

EXAMPLES_PER_OPERATION = 300
POSITIVE_EXAMPLES = 40  # per scoring operation (hypothesis generates these bodies slowly: about 10 s in all)


def _deployed(live_api: LiveApi, *modes: GenerationMode) -> Any:
    """The deployment's own OpenAPI document, as the gateway serves it at /openapi.json (literal model routes)."""
    schema = schemathesis.openapi.from_dict(live_api.gateway.openapi())
    schema.config.generation.update(modes=list(modes))
    return schema


@pytest.fixture(scope="module", autouse=True)
def figures() -> Any:
    """After the module: requests sent and statuses seen, kept for docs/reliability.md."""
    yield
    if not SENT:
        return
    for kind in ("generated", "hostile"):
        sent = {key: n for key, n in SENT.items() if ("hostile" in key[0]) == (kind == "hostile")}
        if not sent:
            continue
        by_status: Counter[int] = Counter()
        for (_, status), n in sent.items():
            by_status[status] += n
        record_figures(
            "http",
            {
                f"{kind}_requests": sum(sent.values()),
                f"{kind}_operations": len({op for op, _ in sent}),
                f"{kind}_by_status": {str(k): v for k, v in sorted(by_status.items())},
                f"{kind}_5xx": sum(v for k, v in by_status.items() if k >= 500),
            },
        )


def _run(schema: Any, examples: int, methods: tuple[str, ...], check: Any) -> None:
    """Run ``check(case)`` on generated cases of each operation (hypothesis, derandomized)."""
    for operation in schema.get_all_operations():
        op = operation.ok()
        if op.method.upper() not in methods:
            continue

        @given(op.as_strategy())
        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def one(case: Any) -> None:
            check(case)

        one()


@pytest.mark.slow
def test_schemathesis_every_operation_conforms_and_never_fails(live_api: LiveApi) -> None:
    def check(case: Any) -> None:
        # Given a generated request (valid or deliberately invalid) for one documented operation
        # When it is sent with the API key to the live gateway
        response = case.call(base_url=live_api.url, headers={"x-api-key": API_KEY}, timeout=30)
        SENT[(case.operation.label, response.status_code)] += 1
        # Then nothing failed server-side, the status is documented, and the body conforms to the document
        assert response.status_code < 500 or response.status_code == 503, (response.status_code, response.text)
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"error"} and isinstance(body["error"], str), body
        case.validate_response(
            response,
            checks=[
                oas_checks.status_code_conformance,
                oas_checks.content_type_conformance,
                oas_checks.response_schema_conformance,
                oas_checks.response_headers_conformance,
                oas_checks.negative_data_rejection,
            ],
            headers={"x-api-key": API_KEY},
        )

    schema = _deployed(live_api, GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    _run(schema, EXAMPLES_PER_OPERATION, ("GET", "POST"), check)


def test_schema_valid_requests_are_accepted(live_api: LiveApi) -> None:
    def check(case: Any) -> None:
        # Given a request the deployment's own document says is valid (:predict, :feedback, infer)
        # When it is sent with the API key
        response = case.call(base_url=live_api.url, headers={"x-api-key": API_KEY}, timeout=30)
        SENT[(case.operation.label, response.status_code)] += 1
        if case.media_type == "application/octet-stream" or "Inference-Header-Content-Length" in (case.headers or {}):
            # A binary infer body's framing (a JSON header of Inference-Header-Content-Length bytes, then the
            # tensors) is beyond what OpenAPI can say, so a generated one is a client error, never a 5xx;
            # tritonclient sends real ones in tests/integration/test_inference_gateway.py.
            assert response.status_code == 400, (case.body, response.status_code, response.text)
            assert set(response.json()) == {"error"}, response.text
            return
        # Then the server accepts it: scored, or the feedback accepted (202 even for an id it has not seen)
        assert 200 <= response.status_code < 300, (case.body, response.status_code, response.text)

    _run(_deployed(live_api, GenerationMode.POSITIVE), POSITIVE_EXAMPLES, ("POST",), check)


def _send(
    api: LiveApi,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str | None] | None = None,
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(api.host, api.port, timeout=30)
    merged: dict[str, str | None] = {"x-api-key": API_KEY, "content-type": "application/json", **(headers or {})}
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn.request(method, path, body=data, headers={k: v for k, v in merged.items() if v is not None})
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    SENT[(f"{method} hostile", response.status)] += 1
    return response.status, json.loads(payload) if payload else None


PREDICT = f"/v1/models/{MODEL}:predict"
INFER = f"/v2/models/{MODEL}/infer"
DEEP = "[" * 100_000 + "]" * 100_000


def _tensors(**override: Any) -> list[dict[str, Any]]:
    return [{**t, **override} for t in oip_inputs([ROW])]


# (id, method, path, body, raw body, extra headers, expected status)
HOSTILE: list[tuple[str, str, str, Any, bytes | None, dict[str, str | None] | None, int]] = [
    ("traversal-encoded", "POST", "/v2/models/..%2f..%2fetc/infer", {"inputs": []}, None, None, 404),
    ("traversal-dots", "GET", "/v2/models/%2e%2e/ready", None, None, None, 404),
    ("traversal-plain", "GET", "/v2/models/../../etc/passwd", None, None, None, 404),
    ("traversal-v1", "POST", "/v1/models/..%2f..%2f:predict", {"instances": [ROW]}, None, None, 404),
    ("nul-in-name", "GET", "/v2/models/%00", None, None, None, 404),
    ("invalid-utf8-name", "GET", "/v2/models/%ff%fe", None, None, None, 404),
    ("long-name", "GET", "/v2/models/" + "a" * 5000, None, None, None, 404),
    ("empty-model-v1", "POST", "/v1/models/:predict", {"instances": [ROW]}, None, None, 404),
    ("unknown-route", "GET", "/etc/passwd", None, None, None, 404),
    ("wrong-method", "PUT", INFER, {}, None, None, 405),
    ("options-method", "OPTIONS", INFER, None, None, None, 405),
    ("made-up-method", "BREW", PREDICT, None, None, None, 404),
    ("malformed-json", "POST", PREDICT, None, b"{not json", None, 400),
    ("deeply-nested", "POST", PREDICT, None, DEEP.encode(), None, 400),
    ("deeply-nested-field", "POST", PREDICT, None, ('{"instances":' + DEEP + "}").encode(), None, 400),
    ("nan-literal", "POST", PREDICT, None, b'{"instances":[{"mean_radius": NaN}]}', None, 400),
    ("infinity-literal", "POST", PREDICT, None, b'{"instances":[{"mean_radius": -Infinity}]}', None, 400),
    (
        "overflow-to-inf",
        "POST",
        PREDICT,
        None,
        json.dumps({"instances": [{**ROW, "mean_radius": 0}]})
        .replace('"mean_radius": 0', '"mean_radius": 1e400')
        .encode(),
        None,
        400,
    ),
    ("huge-integer", "POST", PREDICT, {"instances": [{**ROW, "mean_radius": 10**400}]}, None, None, 400),
    (
        "unicode-category",
        "POST",
        PREDICT,
        {"instances": [{**ROW, "mean_area": "\U0001f600\u202e\u0000"}]},
        None,
        None,
        400,
    ),
    ("string-number", "POST", PREDICT, {"instances": [{**ROW, "mean_radius": "14"}]}, None, None, 400),
    ("bool-number", "POST", PREDICT, {"instances": [{**ROW, "mean_radius": True}]}, None, None, 400),
    ("list-number", "POST", PREDICT, {"instances": [{**ROW, "mean_radius": [1]}]}, None, None, 400),
    ("empty-batch", "POST", PREDICT, {"instances": []}, None, None, 400),
    ("oversized-batch", "POST", PREDICT, {"instances": [ROW] * 1001}, None, None, 400),
    ("huge-batch", "POST", PREDICT, {"instances": [ROW] * 20_000}, None, None, 400),
    ("body-over-6mb", "POST", PREDICT, None, b'{"instances":"' + b"x" * (7 * 1024 * 1024) + b'"}', None, 400),
    ("instances-not-list", "POST", PREDICT, {"instances": "x"}, None, None, 400),
    ("rows-not-objects", "POST", PREDICT, {"instances": [1, 2]}, None, None, 400),
    # (a top-level string or number is admitted: an experiment's unit key)
    ("unknown-field", "POST", PREDICT, {"instances": [ROW], "x": {"a": 1}}, None, None, 400),
    ("body-is-list", "POST", PREDICT, [1], None, None, 400),
    ("not-utf8", "POST", PREDICT, None, b"\xff\xfe{}", None, 400),
    ("empty-body", "POST", PREDICT, None, b"", None, 400),
    ("text-plain", "POST", PREDICT, {"instances": [ROW]}, None, {"content-type": "text/plain"}, 415),
    ("no-api-key", "POST", PREDICT, {"instances": [ROW]}, None, {"x-api-key": None}, 403),
    ("wrong-api-key", "POST", PREDICT, {"instances": [ROW]}, None, {"x-api-key": "wrong"}, 403),
    ("non-ascii-api-key", "GET", f"/v2/models/{MODEL}", None, None, {"x-api-key": "k\u00e9y"}, 403),
    ("no-key-health", "GET", "/v2/health/ready", None, None, {"x-api-key": None}, 403),
    ("oip-missing-inputs", "POST", INFER, {"inputs": oip_inputs([ROW])[:3]}, None, None, 400),
    ("oip-wrong-datatype", "POST", INFER, {"inputs": _tensors(datatype="STRING")}, None, None, 400),
    ("oip-bytes-for-numbers", "POST", INFER, {"inputs": _tensors(datatype="BYTES")}, None, None, 400),
    ("oip-2d-shape", "POST", INFER, {"inputs": _tensors(shape=[2, 3])}, None, None, 400),
    ("oip-negative-shape", "POST", INFER, {"inputs": _tensors(shape=[-1])}, None, None, 400),
    ("oip-huge-shape", "POST", INFER, {"inputs": _tensors(shape=[10**30])}, None, None, 400),
    ("oip-shape-not-list", "POST", INFER, {"inputs": _tensors(shape="x", datatype=5, data={"a": 1})}, None, None, 400),
    (
        "oip-nested-data",
        "POST",
        INFER,
        {"inputs": [{**t, "data": [[t["data"]]]} for t in oip_inputs([ROW])]},
        None,
        None,
        400,
    ),
    ("oip-string-data", "POST", INFER, {"inputs": _tensors(datatype="FP32", data=["abc"])}, None, None, 400),
    ("oip-empty-inputs", "POST", INFER, {"inputs": []}, None, None, 400),
    ("oip-input-not-object", "POST", INFER, {"inputs": [1]}, None, None, 400),
    ("oip-empty-tensor", "POST", INFER, {"inputs": [{}]}, None, None, 400),
    ("oip-numeric-id", "POST", INFER, {"inputs": oip_inputs([ROW]), "id": 5}, None, None, 400),
    ("oip-long-id", "POST", INFER, {"inputs": oip_inputs([ROW]), "id": "i" * 257}, None, None, 400),
    ("oip-outputs-not-list", "POST", INFER, {"inputs": oip_inputs([ROW]), "outputs": "x"}, None, None, 400),
    ("oip-unknown-output", "POST", INFER, {"inputs": oip_inputs([ROW]), "outputs": [{"name": "x"}]}, None, None, 400),
    ("oip-parameters-list", "POST", INFER, {"inputs": oip_inputs([ROW]), "parameters": []}, None, None, 400),
    ("feedback-nested-label", "POST", f"/v1/models/{MODEL}:feedback", {"id": "x", "label": [[1]]}, None, None, 400),
    ("feedback-object-label", "POST", f"/v1/models/{MODEL}:feedback", {"id": "x", "label": {"a": 1}}, None, None, 400),
    ("feedback-empty-label", "POST", f"/v1/models/{MODEL}:feedback", {"id": "x", "label": []}, None, None, 400),
    ("feedback-no-label-or-value", "POST", f"/v1/models/{MODEL}:feedback", {"id": "x"}, None, None, 400),
    ("feedback-string-value", "POST", f"/v1/models/{MODEL}:feedback", {"id": "x", "value": "1"}, None, None, 400),
    ("predict-object-unit-key", "POST", PREDICT, {"instances": [ROW], "user_id": [1]}, None, None, 400),
    ("feedback-no-id", "POST", f"/v1/models/{MODEL}:feedback", {"label": "benign"}, None, None, 400),
    ("unknown-v1-action", "POST", f"/v1/models/{MODEL}:explain", {"instances": [ROW]}, None, None, 404),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "raw", "headers", "expected"),
    [case[1:] for case in HOSTILE],
    ids=[case[0] for case in HOSTILE],
)
def test_hostile_requests_get_the_documented_error(
    live_api: LiveApi,
    method: str,
    path: str,
    body: Any,
    raw: bytes | None,
    headers: dict[str, str | None] | None,
    expected: int,
) -> None:
    # When a hostile request arrives
    status, payload = _send(live_api, method, path, body, raw=raw, headers=headers)
    # Then it gets exactly the documented client error, as {"error": message}
    assert status == expected, payload
    if method != "HEAD":
        assert isinstance(payload, dict) and set(payload) == {"error"} and isinstance(payload["error"], str)


def test_head_gets_headers_only_and_the_connection_stays_usable(live_api: LiveApi) -> None:
    # Regression: http.server answered HEAD/OPTIONS/unknown methods with an HTML 501.
    conn = http.client.HTTPConnection(live_api.host, live_api.port, timeout=10)
    conn.request("HEAD", PREDICT, headers={"x-api-key": API_KEY})
    response = conn.getresponse()
    assert response.status == 405 and response.getheader("Allow") == "POST" and response.read() == b""
    conn.request("POST", PREDICT, body=json.dumps({"instances": [ROW]}), headers={"x-api-key": API_KEY})
    response = conn.getresponse()
    assert response.status == 200 and json.loads(response.read())["predictions"]
    conn.close()


def test_a_body_over_the_gateway_limit_is_refused_before_it_is_read(live_api: LiveApi) -> None:
    # Given a request that declares 11 MB (over API Gateway's 10 MB) and sends only its headers
    with socket.create_connection((live_api.host, live_api.port), timeout=10) as sock:
        sock.sendall(
            (
                f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nx-api-key: {API_KEY}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {11 * 1024 * 1024}\r\n\r\n"
            ).encode()
        )
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    # Then the gateway answers 413 as JSON without waiting for the body
    head, _, body = reply.partition(b"\r\n\r\n")
    SENT[("POST hostile", 413)] += 1
    assert head.startswith(b"HTTP/1.1 413") and set(json.loads(body)) == {"error"}
