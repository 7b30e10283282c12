"""Capture lines fit one CloudWatch Logs event (256 KB): large records are split by rows and joined on read.

CloudWatch Logs truncates a longer event, and a truncated line is not JSON, so the record would be lost on its
way to S3. Lambda sends each stdout line as one event, as plain text; an event counts its UTF-8 message plus
26 bytes (PutLogEvents).
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from moto import mock_aws

from lambdas.capture.handler import lambda_handler as firehose_processor
from modeldeck.capture import read_records
from modeldeck.fastjson import dumps
from modeldeck.serving import CaptureEmitter, Settings

# CloudWatch Logs quotas (PutLogEvents): an event is at most 256 KB, its UTF-8 message plus 26 bytes.
MAX_EVENT_BYTES = 256 * 1024
CLOUDWATCH_EVENT_OVERHEAD = 26


class Lines(logging.Handler):
    """The capture logger's output, line by line, as Lambda's stdout would carry it."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def event_bytes(line: str) -> int:
    """What CloudWatch Logs counts against its event limit for one stdout line."""
    return len(line.encode()) + CLOUDWATCH_EVENT_OVERHEAD


def deliver(lines: list[str]) -> list[dict[str, Any]]:
    """Logs subscription envelope → the Firehose processor → the objects Firehose writes → read_records."""
    envelope = {
        "messageType": "DATA_MESSAGE",
        "logEvents": [{"id": str(i), "timestamp": 0, "message": line} for i, line in enumerate(lines)],
    }
    # CloudWatch batches events into envelopes as it likes: here one per event, in reverse order.
    event = {
        "records": [
            {"recordId": str(i), "data": base64.b64encode(gzip.compress(json.dumps(one).encode())).decode()}
            for i, one in enumerate({**envelope, "logEvents": [e]} for e in reversed(envelope["logEvents"]))
        ]
    }
    out = firehose_processor(event, None)["records"]
    assert all(r["result"] == "Ok" for r in out)
    with mock_aws():
        import boto3

        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="registry")
        for r in out:
            keys = r["metadata"]["partitionKeys"]
            prefix = f"{keys['kind']}/{keys['model']}/dt={keys['dt']}/hour={keys['hour']}/"
            s3.put_object(Bucket="registry", Key=f"{prefix}{r['recordId']}.jsonl", Body=base64.b64decode(r["data"]))
        now = datetime.now(UTC)
        return read_records(
            s3, "registry", "capture", "breast-cancer", now - timedelta(hours=2), now + timedelta(hours=1)
        )


@pytest.fixture
def emitter_and_lines() -> tuple[CaptureEmitter, Lines]:
    lines = Lines()
    logger = logging.getLogger("test.capture.bounds")
    logger.handlers[:] = [lines]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return CaptureEmitter(Settings("breast-cancer", 1, "registry"), logger), lines


def a_request(rows: int, columns: int = 30) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """Columnar features and outputs of a request: ``columns`` full-precision numeric features (the breast-cancer
    data has 30) and a binary classifier's labels and probabilities."""
    rng = np.random.default_rng(3)
    features = {f"feature_{i:02d}": rng.uniform(0, 30, rows).tolist() for i in range(columns)}
    p = rng.uniform(0, 1, rows)
    outputs = {
        "label": ["malignant" if x < 0.5 else "benign" for x in p],
        "probabilities": np.column_stack([p, 1 - p]).tolist(),
    }
    return features, outputs


def test_a_1000_row_capture_is_split_into_lines_that_each_fit_one_log_event(
    emitter_and_lines: tuple[CaptureEmitter, Lines],
) -> None:
    # Given the inference function's capture emitter
    emitter, lines = emitter_and_lines
    features, outputs = a_request(1000)
    # When it captures a 1000-row request (the default MAX_ROWS) of 30 features
    emitter.capture(
        model_version="1",
        function_version="7",
        request_id="gw-1",
        rows=1000,
        features=features,
        outputs=outputs,
        latency_ms=4.2,
    )
    # Then the whole record would not fit one CloudWatch Logs event, and every line that was written does
    assert sum(event_bytes(line) for line in lines.lines) > MAX_EVENT_BYTES and len(lines.lines) >= 2
    assert all(event_bytes(line) <= MAX_EVENT_BYTES for line in lines.lines), [event_bytes(x) for x in lines.lines]
    # And through the Firehose processor and the reader the request is one record again, every row in order
    (record,) = deliver(lines.lines)
    assert record["id"] == "gw-1" and record["rows"] == 1000 and "rows_dropped" not in record
    assert record["features"] == features and record["outputs"] == outputs
    assert record["model_version"] == "1" and record["latency_ms"] == 4.2
    assert not {"part", "parts", "row_offset", "request_rows"} & set(record)


def test_a_capture_that_fits_stays_one_unchanged_line(emitter_and_lines: tuple[CaptureEmitter, Lines]) -> None:
    # Given the capture emitter, when it captures a 100-row request
    emitter, lines = emitter_and_lines
    features, outputs = a_request(100)
    emitter.capture(
        model_version="1",
        function_version="7",
        request_id="gw-2",
        rows=100,
        features=features,
        outputs=outputs,
        latency_ms=1.0,
    )
    # Then it is one line, with no part fields
    (line,) = lines.lines
    assert {"part", "parts", "row_offset", "request_rows"}.isdisjoint(json.loads(line))
    assert deliver(lines.lines)[0]["features"] == features


def test_a_row_too_large_for_any_event_is_left_out_and_the_joined_record_says_so() -> None:
    from modeldeck.capture import bounded_lines, join_parts

    # Given a 3-row capture record whose middle row alone exceeds an event
    record = {
        "kind": "capture",
        "model": "m",
        "id": "r",
        "ts": "2026-11-23T08:00:00.000000Z",
        "rows": 3,
        "shadow": False,
        "features": {"note": ["a", "x" * MAX_EVENT_BYTES, "c"], "n": [1, 2, 3]},
        "outputs": {"label": [0, 1, 0]},
    }
    # When it is bounded
    lines = bounded_lines(record, dumps)
    # Then every line fits, and joining the parts keeps rows 1 and 3 and counts the one left out
    assert all(event_bytes(line) <= MAX_EVENT_BYTES for line in lines)
    joined = join_parts([json.loads(line) for line in lines])
    assert joined["features"] == {"note": ["a", "c"], "n": [1, 3]} and joined["outputs"] == {"label": [0, 0]}
    assert joined["rows"] == 2 and joined["rows_dropped"] == 1
