"""CloudWatch Logs: what Lambda functions write to stdout lands in their log groups, and the log groups'
subscription filters send matching events, in CloudWatch Logs' envelopes, to their Firehose destinations
(``firehose.py``), which deliver them into S3.

- "Lambda function logging": each line a function writes to stdout is one log event in the function's log
  group (its ``LoggingConfig.LogGroup``, or ``/aws/lambda/{name}``).
- "CloudWatch Logs quotas": an event is at most 256 KB (its UTF-8 message plus 26 bytes); a longer one is
  truncated to fit.
- "Filter pattern syntax for metric filters, subscription filters, filter log events, and Live Tail":
  JSON patterns ``{ SELECTOR OP VALUE }`` joined by ``&&`` and ``||`` with parentheses; OP is ``=``/``!=``
  for strings (``*`` a wildcard) and ``=``/``!=``/``<``/``<=``/``>``/``>=`` for numbers; ``IS NULL``,
  ``IS TRUE``/``IS FALSE`` and ``NOT EXISTS``. A message that is not JSON never matches a JSON pattern.
  A space-separated pattern matches messages that hold every term; an empty pattern matches every event.
- "Using CloudWatch Logs subscription filters" (Firehose destination): the events are sent as gzip-
  compressed JSON ``{"messageType": "DATA_MESSAGE", "owner", "logGroup", "logStream",
  "subscriptionFilters", "logEvents": [{"id", "timestamp", "message"}]}``, one record per batch.
  Subscription delivery is near real time; here a batch is sent at each virtual minute and on ``flush``.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import threading
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modeldeck.localcloud.cloud import LocalCloud

# "CloudWatch Logs quotas": 256 KB an event, counting 26 bytes of overhead; a subscription batch (one Firehose
# record) at most 1,000 KiB, Firehose's record limit.
MAX_EVENT_BYTES = 256 * 1024
EVENT_OVERHEAD_BYTES = 26
MAX_BATCH_BYTES = 1000 * 1024


def truncate(message: str) -> str:
    """The message as CloudWatch Logs stores it: cut to 256 KB less the event overhead (UTF-8 bytes)."""
    raw = message.encode()
    limit = MAX_EVENT_BYTES - EVENT_OVERHEAD_BYTES
    return message if len(raw) <= limit else raw[:limit].decode(errors="ignore")


# -- filter patterns -------------------------------------------------------------------------------------
_TOKEN = re.compile(
    r"""\s*(?:(?P<open>\()|(?P<close>\))|(?P<and>&&)|(?P<or>\|\|)|(?P<op>!=|<=|>=|=|<|>)"""
    r"""|(?P<string>"(?:[^"\\]|\\.)*")|(?P<word>[^\s()&|!=<>"]+))"""
)
_MISSING = object()


def _select(document: Any, selector: str) -> Any:
    """The value at a ``$.a.b[0]`` selector, or _MISSING."""
    value = document
    for name, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", selector[1:]):
        if name and isinstance(value, dict) and name in value:
            value = value[name]
        elif index and isinstance(value, list) and int(index) < len(value):
            value = value[int(index)]
        else:
            return _MISSING
    return value


def _compare(value: Any, op: str, literal: str, quoted: bool) -> bool:
    if value is _MISSING:
        return False
    if not quoted:
        try:
            number = float(literal)
        except ValueError:
            number = None
        if number is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            return {
                "=": value == number,
                "!=": value != number,
                "<": value < number,
                "<=": value <= number,
                ">": value > number,
                ">=": value >= number,
            }[op]
    if op not in ("=", "!="):
        return False
    if not isinstance(value, str):
        return op == "!="
    text = json.loads(literal) if quoted else literal
    equal = re.fullmatch(".*".join(re.escape(part) for part in text.split("*")), value) is not None
    return equal if op == "=" else not equal


class _JsonPattern:
    """A parsed JSON filter pattern: ``||`` of ``&&`` of conditions or parenthesized patterns."""

    def __init__(self, text: str) -> None:
        body = text.strip()
        if not (body.startswith("{") and body.endswith("}")):
            raise ValueError(f"not a JSON filter pattern: {text!r}")
        self.tokens = [(m.lastgroup, m.group(m.lastgroup or 0)) for m in _TOKEN.finditer(body[1:-1]) if m.lastgroup]
        self.pos = 0
        self.tree = self._or()
        if self.pos != len(self.tokens):
            raise ValueError(f"invalid filter pattern near {self.tokens[self.pos][1]!r}: {text!r}")

    def _peek(self) -> tuple[str | None, str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else (None, "")

    def _next(self) -> tuple[str | None, str]:
        token = self._peek()
        self.pos += 1
        return token

    def _or(self) -> Any:
        node = self._and()
        while self._peek()[0] == "or":
            self._next()
            node = ("or", node, self._and())
        return node

    def _and(self) -> Any:
        node = self._term()
        while self._peek()[0] == "and":
            self._next()
            node = ("and", node, self._term())
        return node

    def _term(self) -> Any:
        kind, text = self._next()
        if kind == "open":
            node = self._or()
            if self._next()[0] != "close":
                raise ValueError("unbalanced parentheses in filter pattern")
            return node
        if kind != "word" or not text.startswith("$"):
            raise ValueError(f"expected a selector ($.field) in filter pattern, got {text!r}")
        selector = text
        kind, text = self._next()
        if kind == "word" and text.upper() == "IS":
            return ("is", selector, self._next()[1].upper())
        if kind == "word" and text.upper() == "NOT":
            if self._next()[1].upper() != "EXISTS":
                raise ValueError("expected NOT EXISTS in filter pattern")
            return ("not-exists", selector)
        if kind != "op":
            raise ValueError(f"expected an operator after {selector} in filter pattern")
        value_kind, value = self._next()
        if value_kind not in ("string", "word"):
            raise ValueError(f"expected a value after {selector} {text} in filter pattern")
        return ("cmp", selector, text, value, value_kind == "string")

    def matches(self, document: Any, node: Any = None) -> bool:
        node = self.tree if node is None else node
        if node[0] == "or":
            return self.matches(document, node[1]) or self.matches(document, node[2])
        if node[0] == "and":
            return self.matches(document, node[1]) and self.matches(document, node[2])
        value = _select(document, node[1])
        if node[0] == "not-exists":
            return value is _MISSING
        if node[0] == "is":
            return {"NULL": value is None, "TRUE": value is True, "FALSE": value is False}.get(node[2], False)
        return _compare(value, node[2], node[3], node[4])


def filter_matches(pattern: str, message: str) -> bool:
    """Whether a log event's ``message`` matches a CloudWatch Logs filter ``pattern`` (see the module doc)."""
    text = pattern.strip()
    if not text:
        return True
    if text.startswith("{"):
        try:
            document = json.loads(message)
        except ValueError:
            return False
        return _JsonPattern(text).matches(document)
    terms = [json.loads(t) if t.startswith('"') else t for t in re.findall(r'"(?:[^"\\]|\\.)*"|\S+', text)]
    return all(term in message for term in terms)


@dataclass
class SubscriptionFilter:
    """One ``AWS::Logs::SubscriptionFilter`` (a Firehose destination)."""

    name: str
    log_group: str
    pattern: str
    destination: str
    events: list[dict[str, Any]]


class Logs:
    """The local cloud's CloudWatch Logs: functions' log groups and their subscription filters."""

    def __init__(self, cloud: LocalCloud) -> None:
        self.cloud = cloud
        self.groups: dict[str, str] = {}  # function name -> log group name
        self.filters: dict[str, list[SubscriptionFilter]] = {}  # log group -> its filters
        self.truncated = 0
        self._lock = threading.RLock()
        # Batches taken by one thread's flush and not yet handed to Firehose (see ``settle``).
        self._in_flight = 0
        self._sent = threading.Condition(threading.Lock())

    def attach(self, function_name: str, log_group: str) -> None:
        """The function logs to ``log_group`` (its LoggingConfig; Lambda's default is /aws/lambda/{name})."""
        with self._lock:
            self.groups[function_name] = log_group

    def put_subscription_filter(self, props: dict[str, Any]) -> None:
        """Add (or replace, by name) a log group's subscription filter, from resolved template properties."""
        group, name = str(props["LogGroupName"]), str(props.get("FilterName") or uuid.uuid4().hex)
        flt = SubscriptionFilter(name, group, str(props.get("FilterPattern") or ""), str(props["DestinationArn"]), [])
        if flt.pattern.strip().startswith("{"):
            _JsonPattern(flt.pattern)  # PutSubscriptionFilter refuses an invalid pattern
        with self._lock:
            filters = [f for f in self.filters.get(group, []) if f.name != name]
            if len(filters) >= 2:
                raise ValueError(f"LimitExceededException: log group {group} already has two subscription filters")
            self.filters[group] = [*filters, flt]

    def put(self, function_name: str, message: str, at: float) -> None:
        """A line the function wrote to stdout, at virtual epoch seconds ``at``.

        A capture or feedback record's ``ts`` was read from the host clock by the handler; it is moved onto the
        virtual clock (the sandbox's time), as embedded-metric timestamps are."""
        stored = truncate(self._sandbox_time(message))
        if stored != message:
            self.truncated += 1
        with self._lock:
            group = self.groups.get(function_name, f"/aws/lambda/{function_name}")
            for flt in self.filters.get(group, []):
                if filter_matches(flt.pattern, stored):
                    event = {"id": uuid.uuid4().hex, "timestamp": int(at * 1000), "message": stored}
                    flt.events.append(event)

    def _sandbox_time(self, message: str) -> str:
        offset = self.cloud.clock.offset
        if not offset or not message.startswith("{") or '"ts"' not in message:
            return message
        try:
            record = json.loads(message)
        except ValueError:
            return message
        if not isinstance(record, dict) or record.get("kind") not in ("capture", "feedback"):
            return message
        from modeldeck.capture import parse_ts

        with contextlib.suppress(TypeError, ValueError):
            moved = parse_ts(record["ts"]) + timedelta(seconds=offset)
            record["ts"] = moved.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            return json.dumps(record, separators=(",", ":"))
        return message

    def flush(self) -> None:
        """Send every pending batch to its destination (a Firehose stream)."""
        with self._lock:
            batches = [(flt, flt.events) for filters in self.filters.values() for flt in filters if flt.events]
            for flt, _ in batches:
                flt.events = []
            with self._sent:
                self._in_flight += 1
        try:
            self._send(batches)
        finally:
            with self._sent:
                self._in_flight -= 1
                self._sent.notify_all()

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until every batch another thread's flush took (the minute's delivery) has reached Firehose, so
        a flush of Firehose that follows finds it."""
        with self._sent:
            self._sent.wait_for(lambda: self._in_flight == 0, timeout)

    def _send(self, batches: list[tuple[SubscriptionFilter, list[dict[str, Any]]]]) -> None:
        for flt, events in batches:
            records: list[bytes] = []
            chunk: list[dict[str, Any]] = []
            size = 0
            for event in events:
                length = len(event["message"].encode()) + EVENT_OVERHEAD_BYTES
                if chunk and size + length > MAX_BATCH_BYTES:
                    records.append(self._envelope(flt, chunk))
                    chunk, size = [], 0
                chunk.append(event)
                size += length
            if chunk:
                records.append(self._envelope(flt, chunk))
            if ":firehose:" not in flt.destination:
                raise ValueError(f"subscription destination not emulated: {flt.destination}")
            self.cloud.firehose.put_record_batch(flt.destination, records)

    def _envelope(self, flt: SubscriptionFilter, events: list[dict[str, Any]]) -> bytes:
        body = {
            "messageType": "DATA_MESSAGE",
            "owner": self.cloud.iam.account,
            "logGroup": flt.log_group,
            "logStream": f"{self.cloud.clock.now():%Y/%m/%d}/[$LATEST]local",
            "subscriptionFilters": [flt.name],
            "logEvents": events,
        }
        return gzip.compress(json.dumps(body).encode())
