"""Data capture: the one definition of a captured request, a feedback label, and where they land.

The inference handler emits each sampled request as one JSON log line (``kind = "capture"``) on the
``modeldeck.capture`` logger. In AWS, a CloudWatch Logs subscription filter sends those lines through
Kinesis Data Firehose, which buffers them into S3 under ``capture/{model}/`` (feedback under
``feedback/{model}/``). The handler therefore pays for one ``json.dumps`` and one write to stdout, never a
synchronous S3 call. In local mode ``modeldeck.localcloud`` stands in for Logs + Firehose.

S3 layout (what Firehose writes, and what the drift job reads)::

    capture/{model}/dt=YYYY-MM-DD/hour=HH/{batch}.jsonl
    feedback/{model}/dt=YYYY-MM-DD/hour=HH/{batch}.jsonl

Records (one JSON object per line)::

    {"kind": "capture", "model": "breast-cancer", "model_version": "2", "function_version": "3",
     "id": "<request id>", "ts": "2026-11-23T08:00:00.000000Z", "rows": 2, "shadow": false,
     "features": {"mean_radius": [14.1, 20.3], "size_band": ["small", "large"]},
     "outputs": {"label": ["benign", "malignant"], "probabilities": [[0.9, 0.1], [0.2, 0.8]]},
     "latency_ms": 0.41}
    {"kind": "feedback", "model": "breast-cancer", "id": "<request id>", "ts": "...",
     "label": ["benign", "malignant"]}

``features`` is columnar (one list per feature, in schema order). A feedback ``label`` holds one value
per row of the captured request it answers, joined on ``id``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

CAPTURE_LOGGER = "modeldeck.capture"
KINDS = ("capture", "feedback")


def capture_logger() -> logging.Logger:
    """The logger whose lines the subscription filter forwards. Messages are complete JSON documents."""
    logger = logging.getLogger(CAPTURE_LOGGER)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def partition_key(kind: str, model: str, ts: datetime) -> str:
    """The S3 prefix a record lands under (Firehose's dynamic partitioning uses the same format)."""
    return f"{kind}/{model}/dt={ts:%Y-%m-%d}/hour={ts:%H}/"


def parse_ts(ts: str) -> datetime:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def hour_prefixes(kind: str, model: str, start: datetime, end: datetime) -> list[str]:
    """Every hourly prefix that may hold records in [start, end)."""
    prefixes = []
    hour = start.replace(minute=0, second=0, microsecond=0)
    while hour < end:
        prefixes.append(partition_key(kind, model, hour))
        hour += timedelta(hours=1)
    return prefixes


def read_records(s3: Any, bucket: str, kind: str, model: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Records of one kind for [start, end), de-duplicated by request id (the first delivery wins).

    Firehose delivers at least once, so a record may arrive twice; the id makes that harmless.
    """
    seen: dict[str, dict[str, Any]] = {}
    paginator = s3.get_paginator("list_objects_v2")
    for prefix in hour_prefixes(kind, model, start, end):
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                for record in iter_lines(body):
                    key = record.get("id", "") + ("#shadow" if record.get("shadow") else "")
                    if key not in seen and start <= parse_ts(record["ts"]) < end:
                        seen[key] = record
    return sorted(seen.values(), key=lambda r: r["ts"])


def iter_lines(body: bytes) -> Iterator[dict[str, Any]]:
    for line in body.splitlines():
        line = line.strip()
        if line:
            yield json.loads(line)


def encode_batch(records: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)
