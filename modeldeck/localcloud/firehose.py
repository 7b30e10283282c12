"""Amazon Data Firehose: delivery streams from the templates, delivering into S3 on the virtual clock.

What a stream does, per the Firehose developer guide:
- "Configure buffering hints": records are buffered and delivered when the buffer reaches ``SizeInMBs`` or
  is ``IntervalInSeconds`` old, whichever comes first. A data-transformation Lambda has its own hints (the
  processor's ``BufferSizeInMBs`` and ``BufferIntervalInSeconds``): Firehose buffers incoming data up to
  them before it invokes the function.
- "Transform source data in Amazon Data Firehose": the function gets ``{"invocationId", "deliveryStreamArn",
  "region", "records": [{"recordId", "approximateArrivalTimestamp", "data"}]}`` (``data`` base64) and
  returns one ``{"recordId", "result", "data"}`` per record: ``Ok`` is delivered, ``Dropped`` is not,
  ``ProcessingFailed`` (or a failed invocation) goes to the error output prefix.
- "Partition streaming data": with dynamic partitioning, ``!{partitionKeyFromLambda:key}`` in the prefix
  comes from each output record's ``metadata.partitionKeys``; one object holds one partition.
- "Configure Amazon S3 object name format": objects are named
  ``{prefix}{stream}-{version}-{yyyy-MM-dd-HH-mm-ss}-{random}{extension}``; ``!{timestamp:...}`` takes the
  time of the oldest record, UTC; ``!{firehose:error-output-type}`` is ``processing-failed``.
- Firehose calls the function and writes to S3 as the stream's role.

Records arrive by ``put_record_batch`` (CloudWatch Logs' subscription filters call it, ``logs.py``). The
clock's minute listener calls ``tick``; ``flush`` delivers everything now (tests and the demo).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from modeldeck.localcloud.iam import acting_as

if TYPE_CHECKING:
    from modeldeck.localcloud.cloud import LocalCloud

MB = 1024 * 1024
# Java DateTimeFormatter letters Firehose's !{timestamp:...} accepts, as strftime directives.
_JAVA_TIME = {"yyyy": "%Y", "MM": "%m", "dd": "%d", "HH": "%H", "mm": "%M", "ss": "%S"}


@dataclass
class _Buffer:
    """Records waiting for one stage of delivery, with the arrival time of the oldest."""

    items: list[Any] = field(default_factory=list)
    size: int = 0
    since: float | None = None

    def add(self, item: Any, size: int, at: float) -> None:
        self.items.append(item)
        self.size += size
        self.since = at if self.since is None else self.since

    def take(self) -> list[Any]:
        items, self.items, self.size, self.since = self.items, [], 0, None
        return items


@dataclass
class DeliveryStream:
    """One ``AWS::KinesisFirehose::DeliveryStream`` with an ExtendedS3 destination."""

    name: str
    arn: str
    bucket: str
    prefix: str
    error_prefix: str
    extension: str
    role_arn: str | None
    interval: float
    size_bytes: int
    processor_arn: str | None
    processor_interval: float
    processor_bytes: int
    incoming: _Buffer = field(default_factory=_Buffer)
    partitions: dict[str, _Buffer] = field(default_factory=dict)
    delivered: list[str] = field(default_factory=list)

    @classmethod
    def from_template(cls, props: dict[str, Any], arn: str) -> DeliveryStream:
        """The stream a resolved template definition describes (defaults as documented for each field)."""
        dest = props.get("ExtendedS3DestinationConfiguration") or props["S3DestinationConfiguration"]
        hints = dest.get("BufferingHints") or {}
        processing = dest.get("ProcessingConfiguration") or {}
        params: dict[str, str] = {}
        if processing.get("Enabled"):
            for processor in processing.get("Processors") or []:
                if processor.get("Type") == "Lambda":
                    params = {p["ParameterName"]: str(p["ParameterValue"]) for p in processor.get("Parameters", [])}
        return cls(
            name=str(props["DeliveryStreamName"]),
            arn=arn,
            bucket=str(dest["BucketARN"]).split(":::", 1)[1],
            prefix=str(dest.get("Prefix") or ""),
            error_prefix=str(dest.get("ErrorOutputPrefix") or ""),
            extension=str(dest.get("FileExtension") or ""),
            role_arn=dest.get("RoleARN"),
            interval=float(hints.get("IntervalInSeconds", 300)),
            size_bytes=int(float(hints.get("SizeInMBs", 5)) * MB),
            processor_arn=params.get("LambdaArn"),
            processor_interval=float(params.get("BufferIntervalInSeconds", 60)),
            processor_bytes=int(float(params.get("BufferSizeInMBs", 1)) * MB),
        )


class Firehose:
    """The local cloud's delivery streams (see the module docstring for what they do)."""

    def __init__(self, cloud: LocalCloud) -> None:
        self.cloud = cloud
        self.streams: dict[str, DeliveryStream] = {}
        self._lock = threading.RLock()

    def create(self, props: dict[str, Any]) -> str:
        """Create (or replace) the stream from its resolved template properties; returns its ARN."""
        name = str(props["DeliveryStreamName"])
        arn = f"arn:aws:firehose:{self.cloud.region}:{self.cloud.iam.account}:deliverystream/{name}"
        with self._lock:
            self.streams[name] = DeliveryStream.from_template(props, arn)
        return arn

    def stream(self, name_or_arn: str) -> DeliveryStream:
        return self.streams[name_or_arn.rsplit("/", 1)[-1]]

    @property
    def delivered(self) -> list[str]:
        """Every S3 key the streams have written, oldest first."""
        return [key for s in self.streams.values() for key in s.delivered]

    def put_record_batch(self, stream_name: str, records: list[bytes]) -> None:
        """PutRecordBatch: the records join the stream's buffer (the processor's, when it has one)."""
        now = self.cloud.clock.time()
        with self._lock:
            stream = self.stream(stream_name)
            for data in records:
                stream.incoming.add((uuid.uuid4().hex, data, now), len(data), now)
            self._deliver(stream, now, force=False)

    def tick(self, at: datetime | None = None) -> None:
        """Deliver what has been buffered for its interval (called at each virtual minute)."""
        now = max(self.cloud.clock.time(), at.timestamp() if at is not None else 0.0)
        with self._lock:
            for stream in list(self.streams.values()):
                self._deliver(stream, now, force=False)

    def flush(self) -> None:
        """Deliver every buffered record now."""
        now = self.cloud.clock.time()
        with self._lock:
            for stream in list(self.streams.values()):
                self._deliver(stream, now, force=True)

    # -- delivery ----------------------------------------------------------------------------------
    def _deliver(self, stream: DeliveryStream, now: float, *, force: bool) -> None:
        incoming = stream.incoming
        limit, interval = (
            (stream.processor_bytes, stream.processor_interval) if stream.processor_arn else (stream.size_bytes, 0.0)
        )
        if incoming.items and (force or incoming.size >= limit or _due(incoming, now, interval)):
            records = incoming.take()
            if stream.processor_arn:
                for batch in _batches(records, stream.processor_bytes):
                    self._transform(stream, batch, now)
            else:
                for _, data, at in records:
                    self._buffer(stream, self._render(stream.prefix, {}, at), data, at)
        for prefix, buffer in list(stream.partitions.items()):
            if buffer.items and (force or buffer.size >= stream.size_bytes or _due(buffer, now, stream.interval)):
                self._write(stream, prefix, buffer)

    def _buffer(self, stream: DeliveryStream, prefix: str, data: bytes, at: float) -> None:
        stream.partitions.setdefault(prefix, _Buffer()).add(data, len(data), at)

    def _transform(self, stream: DeliveryStream, batch: list[tuple[str, bytes, float]], now: float) -> None:
        event = {
            "invocationId": str(uuid.uuid4()),
            "deliveryStreamArn": stream.arn,
            "region": self.cloud.region,
            "records": [
                {"recordId": rid, "approximateArrivalTimestamp": int(at * 1000), "data": base64.b64encode(d).decode()}
                for rid, d, at in batch
            ],
        }
        outputs: dict[str, dict[str, Any]] = {}
        error = "Lambda.InvokeFailed"
        try:
            with acting_as(self.cloud.iam.policies.role(stream.role_arn)):
                reply = self.cloud.client("lambda").invoke(
                    FunctionName=stream.processor_arn, Payload=json.dumps(event).encode()
                )
            payload = reply["Payload"].read()
            if "FunctionError" in reply:
                error = "Lambda.FunctionError"
            else:
                outputs = {r["recordId"]: r for r in json.loads(payload).get("records", [])}
                error = "Lambda.MissingRecordId"
        except Exception as exc:  # any failure of the call is the processing's failure
            error = f"Lambda.InvokeFailed: {exc}"
        for rid, data, at in batch:
            out = outputs.get(rid)
            result = out.get("result") if out else None
            if result == "Dropped":
                continue
            if result == "Ok" and out is not None:
                keys = ((out.get("metadata") or {}).get("partitionKeys")) or {}
                self._buffer(stream, self._render(stream.prefix, keys, at), base64.b64decode(out["data"]), at)
                continue
            code = "Lambda.ProcessingFailedStatus" if result == "ProcessingFailed" else error
            failed = {
                "attemptsMade": 1,
                "arrivalTimestamp": int(at * 1000),
                "errorCode": code,
                "errorMessage": f"The Lambda function returned {result}" if result else code,
                "attemptEndingTimestamp": int(now * 1000),
                "rawData": base64.b64encode(data).decode(),
                "lambdaArn": stream.processor_arn,
            }
            line = json.dumps(failed).encode() + b"\n"
            prefix = self._render(stream.error_prefix, {}, at, error_type="processing-failed")
            self._buffer(stream, prefix, line, at)

    def _render(self, template: str, keys: dict[str, str], at: float, error_type: str | None = None) -> str:
        def value(match: re.Match[str]) -> str:
            kind, _, arg = match.group(1).partition(":")
            if kind == "partitionKeyFromLambda":
                return str(keys[arg])
            if kind == "timestamp":
                fmt = re.sub("|".join(_JAVA_TIME), lambda m: _JAVA_TIME[m.group(0)], arg)
                return datetime.fromtimestamp(at, UTC).strftime(fmt)
            if kind == "firehose" and arg == "error-output-type" and error_type:
                return error_type
            raise ValueError(f"prefix expression not emulated: !{{{match.group(1)}}}")

        rendered = re.sub(r"!\{([^}]+)\}", value, template)
        if not template:  # the default prefix: the UTC hour of the oldest record
            rendered = datetime.fromtimestamp(at, UTC).strftime("%Y/%m/%d/%H/")
        return rendered

    def _write(self, stream: DeliveryStream, prefix: str, buffer: _Buffer) -> None:
        oldest = buffer.since or self.cloud.clock.time()
        stamp = datetime.fromtimestamp(oldest, UTC).strftime("%Y-%m-%d-%H-%M-%S")
        key = f"{prefix}{stream.name}-1-{stamp}-{uuid.uuid4()}{stream.extension}"
        body = b"".join(buffer.items)
        with acting_as(self.cloud.iam.policies.role(stream.role_arn)):
            self.cloud.client("s3").put_object(Bucket=stream.bucket, Key=key, Body=body)
        buffer.take()
        stream.delivered.append(key)


def _due(buffer: _Buffer, now: float, interval: float) -> bool:
    # The clock's minute listeners run just after each boundary: a buffer that arrived at one minute's listener
    # is due at the listener one interval later, whichever ran a little later.
    return now - (buffer.since if buffer.since is not None else now) >= interval - 1.0


def _batches(records: list[tuple[str, bytes, float]], limit: int) -> list[list[tuple[str, bytes, float]]]:
    """Records grouped so each invocation carries at most ``limit`` bytes of data (at least one record)."""
    batches: list[list[tuple[str, bytes, float]]] = [[]]
    size = 0
    for record in records:
        if batches[-1] and size + len(record[1]) > limit:
            batches.append([])
            size = 0
        batches[-1].append(record)
        size += len(record[1])
    return batches
