"""The handler's ``Requests`` count: the canary's error-rate denominator, emitted for every scoring request of
a model version whatever its answer, under the same dimension sets as ``ServerErrors``."""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

import pytest

from modeldeck.gateway import proxy_event
from modeldeck.serving import SHADOW_MARKER
from tests.fixtures.inference import MODEL, ROW, FakeLambdaContext, call

PREDICT = f"/v1/models/{MODEL}:predict"
INFER = f"/v2/models/{MODEL}/infer"
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


def emf_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]


def test_an_answered_request_is_counted_with_the_server_errors_dimension_sets(
    handler: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the handler serving v1; when a client scores a row
    reply = call(handler, "POST", PREDICT, {"instances": [ROW]})
    # Then one Requests, under (model, version) and (model), next to the answered-only metrics
    assert reply.status == 200
    (emf,) = emf_lines(capsys.readouterr().out)
    directive = emf["_aws"]["CloudWatchMetrics"][0]
    assert directive["Dimensions"] == [["model", "version"], ["model"]]
    assert {"Name": "Requests", "Unit": "Count"} in directive["Metrics"]
    assert emf["Requests"] == [1.0] and emf["model"] == MODEL and emf["version"] == "1"
    assert "PredictionScore" in emf and "Latency" in emf


def test_a_version_failing_every_request_counts_requests_but_emits_no_latency_or_score(
    configure_handler: Any, served_card: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a function pinning a model version it cannot load (no card: 503 on every scoring request)
    handler = configure_handler(MODEL_VERSION="9")
    # When clients score rows through both scoring routes
    replies = [
        call(handler, "POST", PREDICT, {"instances": [ROW]}),
        call(
            handler, "POST", INFER, {"inputs": [{"name": "mean_radius", "shape": [1], "datatype": "FP32", "data": [1]}]}
        ),
    ]
    # Then each is a server error and a request, and nothing the canary could divide by is missing
    assert [r.status for r in replies] == [503, 503]
    docs = emf_lines(capsys.readouterr().out)
    assert [d["Requests"] for d in docs] == [[1.0], [1.0]]
    assert [d["ServerErrors"] for d in docs] == [[1.0], [1.0]]
    assert all(d["version"] == "9" for d in docs)
    assert not any("Latency" in d or "PredictionScore" in d for d in docs)
    names = {m["Name"] for d in docs for m in d["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"Requests", "ServerErrors"} <= names


def test_other_routes_and_shadow_copies_are_not_requests(
    handler: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the handler; when health, metadata, an unknown action and a mirrored shadow copy arrive
    call(handler, "GET", "/v2/health/ready")
    call(handler, "GET", f"/v2/models/{MODEL}")
    call(handler, "POST", f"/v1/models/{MODEL}:explain", {"instances": [ROW]})
    event = proxy_event("POST", PREDICT, json.dumps({"instances": [ROW]}).encode(), headers={})
    event[SHADOW_MARKER] = {"id": "live-request-1"}
    handler.lambda_handler(event, FakeLambdaContext())
    # Then none of them is counted as a scoring request of this version
    assert not any("Requests" in d for d in emf_lines(capsys.readouterr().out))
