"""Data capture: what a captured request and a feedback label look like in S3, sampling and redaction. The
records travel as on AWS: the handler's stdout → its log group's subscription filters → Firehose and the
capture processor → S3 (the path itself is tested in test_localcloud_capture)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modeldeck.capture import read_records
from modeldeck.localcloud.lambda_runtime import capture_delivery, routed_stdout
from tests.fixtures.inference import MALIGNANT_ROW, MODEL, ROW, FakeLambdaContext, oip_inputs
from tests.fixtures.inference import call as call_handler

PREDICT = f"/v1/models/{MODEL}:predict"
INFER = f"/v2/models/{MODEL}/infer"
FEEDBACK = f"/v1/models/{MODEL}:feedback"
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")
FUNCTION = "capture-under-test"
_CLOUD: list[Any] = []


@pytest.fixture(autouse=True)
def function_logs(served_cloud: Any) -> Iterator[None]:
    """The handler runs as the function FUNCTION, whose log group has the capture subscription filters."""
    cloud, _ = served_cloud
    capture_delivery(cloud, FUNCTION)
    _CLOUD[:] = [cloud]
    yield


def call(*args: Any, **kwargs: Any) -> Any:
    """Call the handler with its stdout going to FUNCTION's log group, as the Lambda runtime sends it."""
    cloud = _CLOUD[0]
    with routed_stdout().routed_to(lambda line: cloud.logs.put(FUNCTION, line, cloud.clock.time())):
        return call_handler(*args, **kwargs)


def delivered(cloud: Any, kind: str = "capture") -> dict[str, dict[str, Any]]:
    """Records delivered to S3 so far, by id (forcing delivery first)."""
    cloud.flush_capture()
    now = datetime.now(UTC)
    records = read_records(
        cloud.client("s3"), cloud.bucket, kind, MODEL, now - timedelta(hours=1), now + timedelta(minutes=1)
    )
    return {r["id"]: r for r in records}


def test_a_predict_request_is_captured_with_features_outputs_and_versions(served_cloud: Any, handler: Any) -> None:
    cloud, _ = served_cloud
    # When
    reply = call(
        handler,
        "POST",
        PREDICT,
        {"instances": [ROW, {**MALIGNANT_ROW, "mean_texture": None}]},
        context=FakeLambdaContext(function_version="3"),
    )
    # Then one record lands under capture/{model}/dt=.../hour=.../ with the response's id
    record = delivered(cloud)[reply.json["id"]]
    assert set(record) == {
        "kind",
        "model",
        "model_version",
        "function_version",
        "id",
        "ts",
        "rows",
        "shadow",
        "features",
        "outputs",
        "latency_ms",
    }
    assert record["kind"] == "capture" and record["model"] == MODEL and record["model_version"] == "1"
    assert record["function_version"] == "3" and record["rows"] == 2 and record["shadow"] is False
    assert list(record["features"]) == list(ROW)  # columnar, in schema order
    assert record["features"]["mean_radius"] == [14.1, 20.6]
    assert record["features"]["mean_texture"] == [19.3, None]
    assert record["features"]["mean_area"] == [624.0, 1330.0]  # the raw input, not the derived band
    assert record["outputs"] == {"label": reply.json["predictions"], "probabilities": reply.json["probabilities"]}
    assert 0 < record["latency_ms"] < 1000
    keys = [k for k in cloud.firehose.delivered if k.startswith(f"capture/{MODEL}/dt=")]
    assert keys and all("/hour=" in k and k.endswith(".jsonl") for k in keys)


def test_an_oip_request_is_captured_under_the_client_id(served_cloud: Any, handler: Any) -> None:
    cloud, _ = served_cloud
    inputs = [{**t, "data": [[v] for v in t["data"]]} for t in oip_inputs([ROW])]
    reply = call(handler, "POST", INFER, {"id": "oip-capture-1", "inputs": inputs})
    record = delivered(cloud)["oip-capture-1"]
    assert record["features"]["mean_radius"] == [14.1] and record["features"]["mean_area"] == [624.0]
    assert record["outputs"]["label"] == reply.json["outputs"][0]["data"]


def test_rejected_requests_are_not_captured(served_cloud: Any, handler: Any) -> None:
    cloud, _ = served_cloud
    before = len(delivered(cloud))
    call(handler, "POST", PREDICT, {"instances": [{**ROW, "mean_radius": "x"}]})
    assert len(delivered(cloud)) == before


def test_redacted_features_are_left_out_of_the_record_but_not_the_prediction(
    served_cloud: Any, configure_handler: Any
) -> None:
    cloud, _ = served_cloud
    handler = configure_handler(CAPTURE_REDACT="mean_radius, mean_area")
    reply = call(handler, "POST", PREDICT, {"instances": [MALIGNANT_ROW]})
    record = delivered(cloud)[reply.json["id"]]
    assert "mean_radius" not in record["features"] and "mean_area" not in record["features"]
    assert len(record["features"]) == len(ROW) - 2
    assert reply.json["predictions"] == ["malignant"]


def test_sampling_captures_about_the_configured_share(served_cloud: Any, configure_handler: Any) -> None:
    cloud, _ = served_cloud
    # Given a 25% sample
    handler = configure_handler(CAPTURE_SAMPLE_RATE="0.25")
    n, rate = 400, 0.25
    # When
    ids = {call(handler, "POST", PREDICT, {"instances": [ROW]}).json["id"] for _ in range(n)}
    # Then the captured count is binomial(n, rate) within 5 sigma (a flake chance below 1e-6)
    captured = len(ids & set(delivered(cloud)))
    assert abs(captured - n * rate) <= 5 * math.sqrt(n * rate * (1 - rate))


def test_a_zero_sample_rate_captures_nothing_but_still_records_feedback(
    served_cloud: Any, configure_handler: Any
) -> None:
    cloud, _ = served_cloud
    handler = configure_handler(CAPTURE_SAMPLE_RATE="0")
    reply = call(handler, "POST", PREDICT, {"instances": [ROW]})
    call(handler, "POST", FEEDBACK, {"id": reply.json["id"], "label": "benign"})
    assert reply.json["id"] not in delivered(cloud)
    assert delivered(cloud, "feedback")[reply.json["id"]]["label"] == ["benign"]


def test_feedback_joins_its_prediction_by_id(served_cloud: Any, handler: Any) -> None:
    cloud, _ = served_cloud
    # Given a captured two-row prediction
    prediction = call(handler, "POST", PREDICT, {"instances": [ROW, MALIGNANT_ROW]}).json
    # When the ground truth arrives later
    reply = call(handler, "POST", FEEDBACK, {"id": prediction["id"], "label": ["benign", "benign"]})
    assert reply.status == 202
    # Then the feedback record joins the capture record on id, one label per captured row
    feedback = delivered(cloud, "feedback")[prediction["id"]]
    captured = delivered(cloud)[prediction["id"]]
    assert set(feedback) == {"kind", "model", "id", "ts", "label"}
    assert feedback["kind"] == "feedback" and feedback["model"] == MODEL
    assert len(feedback["label"]) == captured["rows"] == 2
    agree = sum(a == b for a, b in zip(captured["outputs"]["label"], feedback["label"], strict=True))
    assert agree == 1
