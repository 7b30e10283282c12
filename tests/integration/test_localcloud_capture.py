"""Capture as AWS delivers it, on the local cloud: a function's stdout → its log group → the subscription
filters → CloudWatch Logs' envelopes → the Firehose stream and its processor (``lambdas.capture``) → S3,
deployed from the CaptureDelivery construct's template."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from modeldeck.capture import MAX_LINE_BYTES, parse_ts, read_records
from modeldeck.localcloud import LocalCloud, local_cloud

FUNCTION = "capture-writer"
MODEL = "m"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    """A function whose log group feeds the CaptureDelivery construct, synthesized once, as CDK writes it."""
    import aws_cdk as cdk
    from aws_cdk import aws_lambda as lambda_
    from aws_cdk import aws_s3 as s3

    from infra.constructs.capture import CaptureDelivery
    from infra.constructs.functions import FunctionDefaults, python_function

    app = cdk.App()
    stack = cdk.Stack(app, "CaptureUnderTest")
    bucket = s3.Bucket.from_bucket_name(stack, "Registry", "modeldeck-registry-local")
    code = lambda_.Code.from_inline("# local")
    writer = python_function(
        stack,
        "Writer",
        defaults=FunctionDefaults(),
        handler="tests.fixtures.capture_handlers.writes",
        code=code,
        description="writes capture lines",
        function_name=FUNCTION,
        timeout=cdk.Duration.minutes(1),  # 8 threads share 2 busy cores: no wall-clock timeout on a slow host
    )
    CaptureDelivery(
        stack,
        "Capture",
        bucket=bucket,
        defaults=FunctionDefaults(),
        code=code,
        log_groups=[(MODEL, writer.log_group)],
        stream_name="capture-under-test",
    )
    return app.synth().get_stack_by_name("CaptureUnderTest").template


@pytest.fixture
def cloud(template: dict[str, Any]) -> Iterator[LocalCloud]:
    with local_cloud(templates=[template]) as cloud:
        yield cloud


def record(i: int, kind: str = "capture", **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"kind": kind, "model": MODEL, "id": f"r{i}", "ts": "2026-11-29T08:00:00.000000Z"}
    if kind == "capture":
        base.update(rows=1, shadow=False, features={"x": [float(i)]}, outputs={"label": ["a"]})
    return {**base, **extra}


def write(cloud: LocalCloud, lines: list[str] | None = None, records: list[dict[str, Any]] | None = None) -> None:
    payload = json.dumps({"lines": lines or [], "records": records or []})
    out = cloud.client("lambda").invoke(FunctionName=FUNCTION, Payload=payload)
    assert "FunctionError" not in out, out["Payload"].read()


def objects(cloud: LocalCloud, prefix: str) -> dict[str, bytes]:
    s3 = cloud.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=cloud.bucket, Prefix=prefix).get("Contents", [])]
    return {k: s3.get_object(Bucket=cloud.bucket, Key=k)["Body"].read() for k in keys}


def test_filter_patterns_match_as_cloudwatch_logs_reads_them() -> None:
    """AWS "Filter pattern syntax for metric filters, subscription filters, filter log events, and Live Tail"."""
    from modeldeck.localcloud.logs import filter_matches

    capture = json.dumps({"kind": "capture", "model": "m", "rows": 3, "shadow": False, "nested": {"a": [1, 2]}})
    assert filter_matches('{ $.kind = "capture" }', capture)
    assert not filter_matches('{ $.kind = "feedback" }', capture)
    assert not filter_matches('{ $.kind = "capture" }', "kind capture, not JSON")
    assert filter_matches('{ $.kind = "cap*" && $.rows >= 3 }', capture)
    assert not filter_matches("{ $.rows > 3 }", capture)
    assert filter_matches('{ ($.kind = "feedback" || $.rows = 3) && $.nested.a[1] = 2 }', capture)
    assert filter_matches("{ $.shadow IS FALSE && $.label NOT EXISTS }", capture)
    assert filter_matches('{ $.kind != "feedback" }', capture)
    assert filter_matches("", "anything")
    assert filter_matches('capture "model"', capture) and not filter_matches("ERROR", capture)
    with pytest.raises(ValueError):
        filter_matches("{ $.kind = }", capture)


def test_records_travel_through_logs_and_firehose_into_their_partitions(cloud: LocalCloud) -> None:
    """Each kind's subscription filter sends its events in CloudWatch Logs' gzip envelope; Firehose hands
    them to the processor, whose partition keys and the template's prefix name the S3 objects."""
    # Given a function whose log group feeds the capture stream
    # When it writes two capture records, a feedback record and a line that is not a record
    write(
        cloud,
        lines=["plain text", json.dumps({"kind": "other", "model": MODEL})],
        records=[record(1), record(2), record(1, "feedback", label=["a"])],
    )
    cloud.flush_capture()
    # Then each kind lands once under {kind}/{model}/dt=/hour=/ in an object Firehose names, the rest nowhere
    captured = objects(cloud, f"capture/{MODEL}/dt=2026-11-29/hour=08/")
    feedback = objects(cloud, f"feedback/{MODEL}/dt=2026-11-29/hour=08/")
    assert len(captured) == 1 and len(feedback) == 1
    key, body = next(iter(captured.items()))
    assert key.rsplit("/", 1)[1].startswith("capture-under-test-1-") and key.endswith(".jsonl")
    assert [json.loads(line)["id"] for line in body.splitlines()] == ["r1", "r2"]
    assert [json.loads(line)["label"] for line in next(iter(feedback.values())).splitlines()] == [["a"]]
    assert set(objects(cloud, "")) == set(captured) | set(feedback)


def test_delivery_waits_for_the_buffering_interval_on_the_virtual_clock(cloud: LocalCloud) -> None:
    """AWS "Configure buffering hints": Firehose delivers when a buffer is IntervalInSeconds old (60 s here),
    after the processor's own buffer (BufferIntervalInSeconds 60); nothing is written before."""
    write(cloud, records=[record(1)])
    cloud.clock.advance(30)
    assert objects(cloud, "capture/") == {}
    cloud.clock.advance(150)
    assert len(objects(cloud, "capture/")) == 1


def test_every_record_is_delivered_exactly_once_under_concurrency(cloud: LocalCloud) -> None:
    """Many invocations at once: the processor gets batches of at most its 0.2 MB buffer, and every record
    arrives once (counting raw lines, before any reader's de-duplication)."""

    def work(t: int) -> None:
        for i in range(10):
            write(cloud, records=[record(t * 1000 + k) for k in range(i * 10, i * 10 + 10)])

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cloud.flush_capture()
    ids = [json.loads(line)["id"] for body in objects(cloud, "capture/").values() for line in body.splitlines()]
    assert len(ids) == 800 and len(set(ids)) == 800


def test_a_line_over_256_kb_is_truncated_and_never_delivered_but_split_records_arrive_whole(
    cloud: LocalCloud,
) -> None:
    """AWS "CloudWatch Logs quotas": an event is at most 256 KB and a longer one is truncated. A truncated JSON
    line no longer matches the JSON filter, so it is lost; the product writes large records in parts under
    the limit (modeldeck.capture.bounded_lines), which readers join."""
    # Given one raw line over the limit, and a 2000-row record the product splits
    raw = json.dumps(record(1, features={"x": ["y" * (MAX_LINE_BYTES + 10)]}))
    rows = 2000
    big = record(2, rows=rows, features={"x": ["v" * 200 for _ in range(rows)]}, outputs={"label": ["a"] * rows})
    # When the function writes both
    write(cloud, lines=[raw], records=[big])
    cloud.flush_capture()
    # Then the raw line was truncated and not delivered, and the split record arrives whole
    assert cloud.logs.truncated == 1
    at = parse_ts(big["ts"])
    got = read_records(cloud.client("s3"), cloud.bucket, "capture", MODEL, at, at + timedelta(minutes=1))
    assert [r["id"] for r in got] == ["r2"] and got[0]["rows"] == rows and "rows_dropped" not in got[0]


def test_a_record_the_processor_cannot_read_goes_to_the_error_prefix(cloud: LocalCloud) -> None:
    """AWS "Transform source data": a ProcessingFailed record is written under the ErrorOutputPrefix, with
    !{firehose:error-output-type} = processing-failed, carrying its raw data."""
    stream = "capture-under-test"
    cloud.firehose.put_record_batch(stream, [b"not a gzip envelope"])
    cloud.flush_capture()
    errors = objects(cloud, "capture/_errors/processing-failed/")
    assert len(errors) == 1
    failed = json.loads(next(iter(errors.values())))
    assert failed["errorCode"] == "Lambda.ProcessingFailedStatus"
    import base64

    assert base64.b64decode(failed["rawData"]) == b"not a gzip envelope"
