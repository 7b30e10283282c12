"""CloudWatch Logs → Firehose → S3: capture and feedback records delivered into the bucket."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modeldeck.localcloud.cloud import LocalCloud


class CaptureSink(logging.Handler):
    """The local stand-in for CloudWatch Logs → subscription filter → Firehose → S3.

    Attached to the ``modeldeck.capture`` logger while a local cloud is active, it buffers capture and
    feedback records and writes them as ``.jsonl`` batches into the registry bucket under
    ``capture.partition_key(kind, model, ts)`` (``{kind}/{model}/dt=.../hour=.../{batch}.jsonl``), as
    Firehose's dynamic partitioning does. A background thread flushes every ``interval`` seconds or when
    ``max_records`` are waiting; ``flush()`` delivers everything now. A record is taken out of the buffer
    exactly once, and put back if its batch could not be written, so none is lost or duplicated.

    A record's ``ts`` was read from the host clock by the handler; the sink moves it onto the local cloud's
    virtual clock (the handler's sandbox time), as it arrives.
    """

    def __init__(self, cloud: LocalCloud, max_records: int = 500, interval: float = 1.0) -> None:
        super().__init__(level=logging.INFO)
        self.cloud = cloud
        self.max_records, self.interval = max_records, interval
        self._buffer: list[dict[str, Any]] = []
        self._buffer_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._s3 = cloud.client("s3")
        self.delivered: list[str] = []
        self._thread = threading.Thread(target=self._loop, name="local-capture-delivery", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = json.loads(record.getMessage())
        except (TypeError, ValueError):
            return  # not a record: the subscription filter would not match it either
        if not isinstance(data, dict) or data.get("kind") not in ("capture", "feedback") or not data.get("model"):
            return
        offset = self.cloud.clock.offset
        if offset and isinstance(data.get("ts"), str):
            from modeldeck.capture import parse_ts

            with contextlib.suppress(ValueError):
                moved = parse_ts(data["ts"]) + timedelta(seconds=offset)
                data["ts"] = moved.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with self._buffer_lock:
            self._buffer.append(data)
            full = len(self._buffer) >= self.max_records
        if full:
            self._wake.set()

    def _loop(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception as exc:  # keep delivering; the batch went back into the buffer
                print(f"local cloud: capture delivery failed, will retry: {exc}", file=sys.stderr)

    def flush(self) -> None:
        """Write every buffered record to S3 now (one object per kind, model and hour)."""
        from modeldeck.capture import encode_batch, parse_ts, partition_key

        with self._write_lock:
            with self._buffer_lock:
                batch, self._buffer = self._buffer, []
            groups: dict[str, list[dict[str, Any]]] = {}
            for rec in batch:
                try:
                    ts = parse_ts(rec["ts"])
                except (KeyError, TypeError, ValueError):
                    ts = self.cloud.clock.now()
                groups.setdefault(partition_key(rec["kind"], rec["model"], ts), []).append(rec)
            pending = list(groups.items())
            try:
                while pending:
                    prefix, records = pending[0]
                    key = f"{prefix}{self.cloud.clock.now():%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.jsonl"
                    self._s3.put_object(
                        Bucket=self.cloud.bucket,
                        Key=key,
                        Body=encode_batch(records),
                        ContentType="application/x-ndjson",
                    )
                    self.delivered.append(key)
                    pending.pop(0)
            finally:
                if pending:
                    with self._buffer_lock:
                        self._buffer[:0] = [r for _, records in pending for r in records]

    def close(self) -> None:
        """Stop the delivery thread and deliver what is left."""
        self._closed.set()
        self._wake.set()
        self._thread.join(timeout=5)
        self.flush()
        super().close()
