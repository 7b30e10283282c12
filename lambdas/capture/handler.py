"""Firehose processor for captured requests: CloudWatch Logs envelopes → JSON lines with partition keys.

A CloudWatch Logs subscription filter delivers each batch of matching log events to Firehose as one
gzip-compressed envelope (``{"messageType": "DATA_MESSAGE", "logEvents": [{"message": ...}, ...]}``).
This processor decompresses it, keeps the log events whose message is a capture or feedback record
(``modeldeck.capture``), and returns them as newline-delimited JSON with the partition keys Firehose's
dynamic partitioning uses for the S3 prefix ``{kind}/{model}/dt={dt}/hour={hour}/``.

Firehose needs exactly one output per input record, so one envelope cannot be split across prefixes.
Each inference function's log group has one subscription filter per kind, so an envelope holds a single
kind of a single model; if its events straddle an hour, the whole batch goes under the first event's
hour (CloudWatch batches cover seconds, and readers filter on each record's ``ts``). Envelopes with no
record (CloudWatch's control messages, or lines that are not records) are dropped.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
from datetime import UTC, datetime
from typing import Any

KINDS = ("capture", "feedback")
logger = logging.getLogger(__name__)


def _timestamp(record: dict[str, Any], fallback_ms: int) -> datetime:
    ts = record.get("ts")
    if isinstance(ts, str):
        try:
            return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        except ValueError:
            pass
    return datetime.fromtimestamp(fallback_ms / 1000, tz=UTC)


def records_of(envelope: dict[str, Any]) -> list[tuple[dict[str, Any], int]]:
    """(record, log event timestamp in ms) for each capture/feedback line in a Logs envelope."""
    if envelope.get("messageType") != "DATA_MESSAGE":
        return []
    out = []
    for event in envelope.get("logEvents", []):
        try:
            record = json.loads(event.get("message", ""))
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("kind") in KINDS and isinstance(record.get("model"), str):
            out.append((record, int(event.get("timestamp", 0))))
    return out


def transform(record_id: str, data: bytes) -> dict[str, Any]:
    """One Firehose output record for one input record (base64-decoded ``data``)."""
    try:
        envelope = json.loads(gzip.decompress(data))
    except (OSError, ValueError):
        return {"recordId": record_id, "result": "ProcessingFailed", "data": base64.b64encode(data).decode()}
    records = records_of(envelope)
    if not records:
        return {"recordId": record_id, "result": "Dropped", "data": ""}
    first, first_ms = records[0]
    ts = _timestamp(first, first_ms)
    body = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r, _ in records)
    return {
        "recordId": record_id,
        "result": "Ok",
        "data": base64.b64encode(body).decode(),
        "metadata": {
            "partitionKeys": {
                "kind": first["kind"],
                "model": first["model"],
                "dt": f"{ts:%Y-%m-%d}",
                "hour": f"{ts:%H}",
            }
        },
    }


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Firehose data-transformation entry point."""
    out = [transform(r["recordId"], base64.b64decode(r["data"])) for r in event.get("records", [])]
    failed = sum(1 for r in out if r["result"] == "ProcessingFailed")
    if failed:
        logger.warning("capture processor: %d of %d records were not gzip JSON", failed, len(out))
    return {"records": out}
