"""Data capture: what a captured request and a feedback label look like in S3, sampling, redaction,
and the local Logs → Firehose stand-in delivering every record exactly once."""

from __future__ import annotations

import json
import math
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modeldeck.capture import CAPTURE_LOGGER, read_records
from modeldeck.localcloud import CaptureSink
from modeldeck.serving import CaptureEmitter, Settings
from tests.fixtures.inference import MALIGNANT_ROW, MODEL, ROW, FakeLambdaContext, call, oip_inputs

PREDICT = f"/v1/models/{MODEL}:predict"
INFER = f"/v2/models/{MODEL}/infer"
FEEDBACK = f"/v1/models/{MODEL}:feedback"
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


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
    keys = [k for k in cloud.capture_sink.delivered if k.startswith(f"capture/{MODEL}/dt=")]
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


def test_the_local_sink_delivers_every_record_exactly_once_under_concurrency(served_cloud: Any) -> None:
    cloud, _ = served_cloud
    # Given a sink that flushes in the background every 20 records and a failing first write
    sink = CaptureSink(cloud, max_records=20, interval=0.01)
    failures = {"left": 1}
    real_put = sink._s3.put_object

    def flaky_put(**kwargs: Any) -> Any:
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("transient")
        return real_put(**kwargs)

    sink._s3.put_object = flaky_put
    emitter = CaptureEmitter(Settings(MODEL, 1, cloud.bucket))
    logger = emitter.logger
    logger.addHandler(sink)
    try:
        # When 8 threads emit 100 records each while the sink flushes concurrently
        def work(t: int) -> None:
            for i in range(100):
                emitter.capture(
                    model_version="1",
                    function_version="1",
                    request_id=f"sink-{t}-{i}",
                    rows=1,
                    features={"mean_radius": [1.0]},
                    outputs={"label": ["benign"]},
                    latency_ms=0.1,
                )

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        logger.removeHandler(sink)
        sink.close()
    # Then every record is in S3 exactly once (counting raw lines, before any de-duplication)
    s3 = cloud.client("s3")
    ids: list[str] = []
    for key in sink.delivered:
        body = s3.get_object(Bucket=cloud.bucket, Key=key)["Body"].read()
        ids += [json.loads(line)["id"] for line in body.splitlines() if line]
    ours = [i for i in ids if i.startswith("sink-")]
    assert len(ours) == 800 and len(set(ours)) == 800
    assert failures["left"] == 0  # the failed batch went back into the buffer and was delivered later


def test_lines_that_are_not_records_are_ignored(served_cloud: Any) -> None:
    cloud, _ = served_cloud
    import logging

    sink = cloud.capture_sink
    before = len(sink._buffer)
    logging.getLogger(CAPTURE_LOGGER).info("not json")
    logging.getLogger(CAPTURE_LOGGER).info(json.dumps({"kind": "other", "model": MODEL}))
    assert len(sink._buffer) == before
