"""The Firehose processor: CloudWatch Logs envelopes in, JSON lines with partition keys out."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

from lambdas.capture.handler import lambda_handler, transform
from modeldeck.capture import parse_ts, partition_key


def envelope(*messages: str, message_type: str = "DATA_MESSAGE") -> bytes:
    body = {
        "messageType": message_type,
        "owner": "123456789012",
        "logGroup": "/aws/lambda/x",
        "logStream": "s",
        "subscriptionFilters": ["modeldeck-capture"],
        "logEvents": [{"id": str(i), "timestamp": 1_795_000_000_000, "message": m} for i, m in enumerate(messages)],
    }
    return gzip.compress(json.dumps(body).encode())


def capture(ts: str = "2026-11-23T08:15:00.000000Z", **extra: Any) -> str:
    return json.dumps({"kind": "capture", "model": "breast-cancer", "id": "r1", "ts": ts, "rows": 1, **extra})


def test_records_become_json_lines_partitioned_like_the_capture_layout() -> None:
    out = transform("rec-1", envelope(capture(), capture(id="r2")))
    assert out["result"] == "Ok"
    keys = out["metadata"]["partitionKeys"]
    assert keys == {"kind": "capture", "model": "breast-cancer", "dt": "2026-11-23", "hour": "08"}
    prefix = f"{keys['kind']}/{keys['model']}/dt={keys['dt']}/hour={keys['hour']}/"
    assert prefix == partition_key("capture", "breast-cancer", parse_ts("2026-11-23T08:15:00.000000Z"))
    lines = base64.b64decode(out["data"]).decode().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["r1", "r2"]


def test_non_record_lines_and_control_messages_are_dropped() -> None:
    assert transform("a", envelope('{"level": "INFO", "message": "hello"}', "not json"))["result"] == "Dropped"
    assert transform("b", envelope(message_type="CONTROL_MESSAGE"))["result"] == "Dropped"


def test_feedback_records_partition_under_feedback() -> None:
    line = json.dumps(
        {
            "kind": "feedback",
            "model": "breast-cancer",
            "id": "r1",
            "ts": "2026-01-02T23:59:59.000001Z",
            "label": ["benign"],
        }
    )
    keys = transform("c", envelope(line))["metadata"]["partitionKeys"]
    assert keys == {"kind": "feedback", "model": "breast-cancer", "dt": "2026-01-02", "hour": "23"}


def test_undecodable_data_is_reported_as_failed_not_raised() -> None:
    out = lambda_handler({"records": [{"recordId": "x", "data": base64.b64encode(b"plain").decode()}]}, None)
    assert out["records"][0]["result"] == "ProcessingFailed"
    assert out["records"][0]["recordId"] == "x"


def test_handler_answers_every_record_once() -> None:
    event = {
        "records": [{"recordId": str(i), "data": base64.b64encode(envelope(capture())).decode()} for i in range(3)]
    }
    assert [r["recordId"] for r in lambda_handler(event, None)["records"]] == ["0", "1", "2"]
