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

A record whose line would exceed a CloudWatch Logs event (256 KB; a longer one is truncated and lost)
is written as several lines, ``parts`` of them, each with the rows ``[row_offset, row_offset + rows)``
of the ``request_rows`` the request had (:func:`bounded_lines`). :func:`read_records` joins them again, so
readers always see one record per request; a row that alone exceeds the limit is left out, and the joined
record says how many rows are missing in ``rows_dropped``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

CAPTURE_LOGGER = "modeldeck.capture"
KINDS = ("capture", "feedback")
# CloudWatch Logs quotas: a log event is at most 256 KB, counted as its UTF-8 message plus 26 bytes
# (PutLogEvents). Lambda sends each line the function writes to stdout as one event, as plain text (the JSON
# log format structures only the logging module's records that reach the runtime's handler, not this
# logger's own stdout lines; see "Using Lambda advanced logging controls with Python").
MAX_EVENT_BYTES = 256 * 1024
EVENT_OVERHEAD_BYTES = 26
MAX_LINE_BYTES = MAX_EVENT_BYTES - EVENT_OVERHEAD_BYTES
# Room for the part fields, whose numbers are only known once the record is split.
_PART_FIELDS_BYTES = 128


def bounded_lines(record: dict[str, Any], encode: Callable[[Any], str], max_bytes: int = MAX_LINE_BYTES) -> list[str]:
    """The record as JSON lines that each fit one CloudWatch Logs event (at most ``max_bytes`` of UTF-8).

    A record that fits (almost all of them) is one line, unchanged. A larger capture record is split by
    rows into parts (see the module docstring); a row that alone does not fit is dropped, so a line is never
    truncated on the way to S3. ``encode`` is the caller's JSON encoder (the hot path's).
    """
    line = encode(record)
    if len(line) * 4 <= max_bytes or len(line.encode()) <= max_bytes:  # UTF-8 is at most 4 bytes a character
        return [line]
    rows = int(record.get("rows") or 0)
    if record.get("kind") != "capture" or rows < 1:
        raise ValueError(f"a {record.get('kind')} record of {len(line.encode())} bytes cannot be split into lines")
    budget = max_bytes - _PART_FIELDS_BYTES
    chunks: list[tuple[int, int]] = []
    pending = [(0, rows)]
    while pending:
        lo, hi = pending.pop()
        if len(encode(_rows_of(record, lo, hi, rows)).encode()) <= budget:
            chunks.append((lo, hi))
        elif hi - lo > 1:
            mid = (lo + hi) // 2
            pending += [(mid, hi), (lo, mid)]  # popped low half first: parts stay in row order
        # else: one row larger than an event on its own; it is left out (rows_dropped when joined)
    return [
        encode({**_rows_of(record, lo, hi, rows), "part": i, "parts": len(chunks), "row_offset": lo})
        for i, (lo, hi) in enumerate(chunks)
    ]


def _rows_of(record: dict[str, Any], lo: int, hi: int, rows: int) -> dict[str, Any]:
    """The record restricted to rows ``[lo, hi)``: every per-row list (features and outputs) is sliced."""

    def rows_only(columns: dict[str, Any]) -> dict[str, Any]:
        return {k: v[lo:hi] if isinstance(v, list) and len(v) == rows else v for k, v in columns.items()}

    return {
        **record,
        "rows": hi - lo,
        "request_rows": rows,
        "features": rows_only(record.get("features") or {}),
        "outputs": rows_only(record.get("outputs") or {}),
    }


def join_parts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One record from the parts of a split capture record that arrived (any order, at least one)."""
    parts = sorted(parts, key=lambda p: p["row_offset"])
    first = parts[0]
    joined = {k: v for k, v in first.items() if k not in ("part", "parts", "row_offset", "request_rows")}

    def concat(field: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for part in parts:
            for k, v in (part.get(field) or {}).items():
                if isinstance(v, list) and len(v) == part["rows"]:
                    out.setdefault(k, []).extend(v)
                else:
                    out.setdefault(k, v)
        return out

    joined["rows"] = sum(int(p["rows"]) for p in parts)
    joined["features"], joined["outputs"] = concat("features"), concat("outputs")
    missing = int(first.get("request_rows", joined["rows"])) - joined["rows"]
    if missing > 0:
        joined["rows_dropped"] = missing
    return joined


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is when a line is written (Lambda sends stdout to CloudWatch Logs;
    a host that swaps stdout, as the local cloud's Lambda runtime does, is followed)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def capture_logger() -> logging.Logger:
    """The logger whose lines the subscription filter forwards. Messages are complete JSON documents."""
    logger = logging.getLogger(CAPTURE_LOGGER)
    if not logger.handlers:
        handler = _StdoutHandler()
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

    Firehose delivers at least once, so a record may arrive twice; the id makes that harmless. The parts of
    a split record are joined into one (:func:`join_parts`).
    """
    seen: dict[str, dict[str, Any]] = {}
    paginator = s3.get_paginator("list_objects_v2")
    for prefix in hour_prefixes(kind, model, start, end):
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                for record in iter_lines(body):
                    key = record.get("id", "") + ("#shadow" if record.get("shadow") else "")
                    if "part" in record:
                        key += f"#part{record['part']}"
                    if key not in seen and start <= parse_ts(record["ts"]) < end:
                        seen[key] = record
    whole: dict[str, dict[str, Any]] = {}
    split: dict[str, list[dict[str, Any]]] = {}
    for key, record in seen.items():
        if "part" in record:
            split.setdefault(key.rpartition("#part")[0], []).append(record)
        else:
            whole[key] = record
    whole.update({key: join_parts(parts) for key, parts in split.items()})
    return sorted(whole.values(), key=lambda r: r["ts"])


def iter_lines(body: bytes) -> Iterator[dict[str, Any]]:
    for line in body.splitlines():
        line = line.strip()
        if line:
            yield json.loads(line)


def encode_batch(records: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)
