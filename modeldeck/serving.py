"""Online inference logic: settings, model loading, request parsing, scoring and data capture.

Pure logic with injected dependencies: the Lambda entry point (``lambdas/inference/handler.py``) parses
settings once, builds these objects from cached factories and maps the exceptions below to HTTP in one
place. Batch scoring (``modeldeck predict``) reuses the same model, schema validation and output shaping.

Imports numpy, onnxruntime and the core only: never scikit-learn, scipy or pandas.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from operator import itemgetter
from typing import Any, Generic, TypeVar

import numpy as np

from modeldeck import oip_binary
from modeldeck.capture import CAPTURE_LOGGER, bounded_lines
from modeldeck.card import ModelCard
from modeldeck.errors import ModeldeckError, PayloadTooLarge, ValidationError
from modeldeck.experiments import EXPERIMENT_MARKER, EXPERIMENT_TTL_S, Experiment, Variant, finite_number
from modeldeck.fastbase64 import b64decode
from modeldeck.fastjson import dumps, orjson
from modeldeck.onnxmodel import OnnxModel, Prediction
from modeldeck.schema import NUMERIC_DATATYPES

DEFAULT_MAX_ROWS = 1000
DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024  # Lambda's synchronous invocation payload limit.
MAX_ID_LENGTH = 256
PREDICT_FIELDS = frozenset({"instances"})
OIP_FIELDS = frozenset({"id", "parameters", "inputs", "outputs"})
FEEDBACK_FIELDS = frozenset({"id", "label", "value"})
T = TypeVar("T")


class HttpError(ModeldeckError):
    """An error with an HTTP status; its message is what the client sees in ``{"error": ...}``."""

    status = 500
    headers: Mapping[str, str] = {}


class ConfigError(HttpError):
    """The function's environment is invalid: a deployment mistake, not the client's (HTTP 503)."""

    status = 503


class NotFound(HttpError):
    """An unknown model or route (HTTP 404)."""

    status = 404


class UnsupportedMediaType(ValidationError):
    """A request body that is not declared as JSON (HTTP 415)."""

    status = 415


class NotReady(HttpError):
    """The model cannot serve yet: loading failed or is backing off (HTTP 503, with Retry-After)."""

    status = 503

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(max(1, math.ceil(retry_after)))}


def status_of(exc: BaseException) -> int:
    """The HTTP status for an exception: client mistakes are 4xx, anything unforeseen 500."""
    return int(getattr(exc, "status", 500)) if isinstance(exc, (HttpError, ValidationError)) else 500


@dataclass(frozen=True)
class Settings:
    """The inference function's runtime settings, parsed once per execution environment."""

    model_name: str
    model_version: int
    model_bucket: str
    max_rows: int = DEFAULT_MAX_ROWS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    capture_sample_rate: float = 1.0
    capture_redact: frozenset[str] = frozenset()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Parse and validate; every problem is reported at once."""
        problems: list[str] = []

        def required(key: str) -> str:
            value = env.get(key, "").strip()
            if not value:
                problems.append(f"{key} is required")
            return value

        def number(key: str, default: float, kind: type, lo: float, hi: float) -> Any:
            raw = env.get(key, "").strip()
            if not raw:
                return kind(default)
            try:
                value = kind(raw)
            except ValueError:
                problems.append(f"{key} must be a{'n integer' if kind is int else ' number'}, got {raw!r}")
                return kind(default)
            if not lo <= value <= hi:
                problems.append(f"{key} must be between {lo:g} and {hi:g}, got {raw}")
            return value

        name, bucket = required("MODEL_NAME"), required("MODEL_BUCKET")
        version_raw = required("MODEL_VERSION")
        version = 0
        if version_raw:
            if version_raw.isdigit():
                version = int(version_raw)  # 0: deployed, but no version released yet (not ready)
            else:
                problems.append(f"MODEL_VERSION must be a version number (0 = none released yet), got {version_raw!r}")
        settings = cls(
            model_name=name,
            model_version=version,
            model_bucket=bucket,
            max_rows=number("MAX_ROWS", DEFAULT_MAX_ROWS, int, 1, 1_000_000),
            max_body_bytes=number("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, int, 1024, 10 * 1024 * 1024),
            capture_sample_rate=number("CAPTURE_SAMPLE_RATE", 1.0, float, 0.0, 1.0),
            capture_redact=frozenset(s.strip() for s in env.get("CAPTURE_REDACT", "").split(",") if s.strip()),
        )
        if problems:
            raise ConfigError("invalid inference settings: " + "; ".join(problems))
        return settings


@dataclass(frozen=True)
class LoadedModel:
    """A verified model ready to serve, with what the handler needs precomputed once."""

    card: ModelCard
    model: OnnxModel
    version: str
    metadata: dict[str, Any]
    load_ms: float
    fast_path: RecordsFastPath


def monotonic() -> float:
    """``time.monotonic``, looked up at each call rather than bound at import: the TTLs and backoffs of an
    execution environment then follow its sandbox's time, which the local cloud runs on its virtual clock."""
    return time.monotonic()


class ModelStore:
    """Loads the pinned model version once per execution environment, and never serves a wrong one.

    The artifact is fetched through the registry (S3 calls retried with backoff) and verified against the
    card's SHA-256. A failure is not cached forever: requests get 503 with ``Retry-After`` while the
    store backs off (doubling from ``backoff`` to ``max_backoff`` seconds), then the next request tries
    again, so the function recovers on its own when S3 does.
    """

    def __init__(
        self,
        settings: Settings,
        registry: Callable[[], Any],
        *,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        clock: Callable[[], float] = monotonic,
        on_load: Callable[[LoadedModel], None] | None = None,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self._registry = registry
        self._backoff, self._max_backoff, self._clock = backoff, max_backoff, clock
        self._on_load, self._on_failure = on_load, on_failure
        self._loaded: LoadedModel | None = None
        self._lock = threading.Lock()
        self._failures = 0
        self._failure = ""
        self._retry_at = 0.0
        self.attempts = 0

    @property
    def loaded(self) -> LoadedModel | None:
        return self._loaded

    def get(self) -> LoadedModel:
        """The loaded model, loading it if needed; raises NotReady while it cannot be served."""
        loaded = self._loaded
        if loaded is not None:
            return loaded
        with self._lock:
            if self._loaded is not None:
                return self._loaded
            now = self._clock()
            if self._failures and now < self._retry_at:
                raise NotReady(f"{self._failure} (next attempt in {self._retry_at - now:.1f} s)", self._retry_at - now)
            self.attempts += 1
            started = time.perf_counter()
            try:
                loaded = self._load(started)
            except Exception as exc:
                self._failures += 1
                delay = min(self._max_backoff, self._backoff * 2 ** (self._failures - 1))
                self._retry_at = self._clock() + delay
                s = self.settings
                self._failure = f"model {s.model_name} v{s.model_version} is not ready: {exc}"
                if self._on_failure is not None:
                    self._on_failure(self._failure)
                raise NotReady(self._failure, delay) from exc
            self._loaded, self._failures, self._failure = loaded, 0, ""
        if self._on_load is not None:
            self._on_load(loaded)
        return loaded

    def _load(self, started: float) -> LoadedModel:
        s = self.settings
        if s.model_version == 0:
            raise ModeldeckError("no model version has been released to this function yet (MODEL_VERSION=0)")
        registry = self._registry()
        card = registry.get_card(s.model_name, s.model_version)
        if card.name != s.model_name or card.version != s.model_version:
            raise ModeldeckError(f"the card at {s.model_name} v{s.model_version} describes {card.name} v{card.version}")
        model = OnnxModel(card, registry.get_model_bytes(card))
        version = str(card.version)
        metadata = {
            "name": card.name,
            "versions": [version],
            "platform": "onnx",
            "inputs": [_tensor(t) for t in card.inputs],
            "outputs": [_tensor(t) for t in card.outputs],
        }
        return LoadedModel(
            card, model, version, metadata, (time.perf_counter() - started) * 1000, RecordsFastPath(card.schema)
        )


def _tensor(spec: Any) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


def _reject_constant(token: str) -> Any:
    raise ValidationError(f"malformed JSON: {token} is not valid JSON; send null for a missing value")


def _base64_body(body: str | bytes, max_bytes: int) -> bytes:
    """A body API Gateway passed base64-encoded, decoded; its size is checked first (decoding a huge body only
    to reject it wastes the function's memory)."""
    if len(body) * 3 // 4 > max_bytes:
        raise PayloadTooLarge(f"the request body is larger than {max_bytes} bytes")
    try:
        return b64decode(body, validate=True)
    except ValueError:
        raise ValidationError("malformed base64 body") from None


def parse_json_body(
    body: str | bytes | None, *, base64_encoded: bool, content_type: str | None, max_bytes: int
) -> dict[str, Any]:
    """A request body as a JSON object, or the precise client error (400, 413 or 415).

    A missing Content-Type is accepted as JSON; any other type than ``application/json`` (or a
    ``+json`` type) is 415. ``NaN`` and ``Infinity`` are rejected: they are not JSON.
    """
    if content_type:
        media = content_type.split(";", 1)[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            raise UnsupportedMediaType(f"unsupported Content-Type {media!r}: send application/json")
    if body is None or body == "" or body == b"":
        raise ValidationError("the request body is empty: send a JSON object")
    raw: str | bytes = _base64_body(body, max_bytes) if base64_encoded else body
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode())
    if size > max_bytes:
        raise PayloadTooLarge(f"the request body is {size} bytes; the limit is {max_bytes}")
    if orjson is not None:
        # The fast parser takes what is plainly valid JSON (it rejects NaN and Infinity too); whatever it
        # refuses goes through the stdlib below, which names the problem precisely (or accepts what orjson
        # alone refuses, such as 1e999, which validation then reports as out of range).
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
        else:
            if not isinstance(data, dict):
                raise ValidationError(f"the body must be a JSON object, got {_json_type(data)}")
            return data
    try:
        # JSON is UTF-8 (RFC 8259); json.loads would otherwise guess UTF-16/32 from a byte-order mark.
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise ValidationError("malformed JSON: the body is not UTF-8") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ValidationError("malformed JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise ValidationError(f"the body must be a JSON object, got {_json_type(data)}")
    return data


def parse_infer_body(
    body: str | bytes | None,
    *,
    base64_encoded: bool,
    content_type: str | None,
    header_length: str | None,
    max_bytes: int,
) -> dict[str, Any]:
    """An ``infer`` body: JSON, or with ``Inference-Header-Content-Length`` the binary tensor data extension (a
    JSON header, then the binary inputs, attached to their tensors by ``oip_binary.attach_inputs``)."""
    length = oip_binary.header_length(header_length)
    if length is None:
        if content_type and content_type.split(";", 1)[0].strip().lower() == oip_binary.OCTET_STREAM:
            raise ValidationError(
                f"a {oip_binary.OCTET_STREAM} infer request needs the Inference-Header-Content-Length header "
                "(the length of its JSON inference header)"
            )
        return parse_json_body(body, base64_encoded=base64_encoded, content_type=content_type, max_bytes=max_bytes)
    if content_type:
        media = content_type.split(";", 1)[0].strip().lower()
        if media not in (oip_binary.OCTET_STREAM, "application/json") and not media.endswith("+json"):
            raise UnsupportedMediaType(
                f"unsupported Content-Type {media!r} for a binary request: send {oip_binary.OCTET_STREAM} (or none)"
            )
    if body is None or body == "" or body == b"":
        raise ValidationError("the request body is empty: send the JSON inference header and the binary tensors")
    if base64_encoded:
        raw = _base64_body(body, max_bytes)
    elif isinstance(body, str):
        # API Gateway passed the body as text (its Content-Type is not a binary media type of the API): its
        # bytes are only intact if they were UTF-8, which the lengths below then check.
        raw = body.encode()
    else:
        raw = body
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"the request body is {len(raw)} bytes; the limit is {max_bytes}")
    header, data = oip_binary.split(raw, length)
    parsed = parse_json_body(header, base64_encoded=False, content_type=None, max_bytes=max_bytes)
    oip_binary.attach_inputs(parsed, data)
    return parsed


def _json_type(value: Any) -> str:
    return {
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def check_fields(
    body: Mapping[str, Any], allowed: frozenset[str], required: tuple[str, ...], *, scalar_extras: bool = False
) -> None:
    """Wrong top-level fields are a 400 that names them and what is expected.

    ``scalar_extras`` admits other fields whose value is a string (of at most ``MAX_ID_LENGTH`` characters), a
    number or null: a ``:predict`` body may carry an experiment's unit key (its name is chosen per experiment,
    at run time), and a client keeps sending it after the experiment ends.
    """
    unknown = sorted(k for k in set(body) - allowed if not (scalar_extras and _is_scalar_extra(body[k])))
    if unknown:
        also = (
            f" (other fields may only be strings of at most {MAX_ID_LENGTH} characters or numbers, such as an "
            "experiment's unit key)"
            if scalar_extras
            else ""
        )
        raise ValidationError(
            f"unknown field(s) {', '.join(map(repr, unknown))}; expected {', '.join(sorted(allowed))}{also}"
        )
    for key in required:
        if key not in body:
            raise ValidationError(f"missing field {key!r}")


def _is_scalar_extra(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) <= MAX_ID_LENGTH
    return value is None or finite_number(value)


def request_id(client_id: Any, gateway_id: str | None) -> str:
    """The id every response carries: the client's OIP id, else API Gateway's request id, else a uuid."""
    if client_id is not None:
        if not isinstance(client_id, str) or not client_id or len(client_id) > MAX_ID_LENGTH:
            raise ValidationError(f"'id' must be a non-empty string of at most {MAX_ID_LENGTH} characters")
        return client_id
    return gateway_id or str(uuid.uuid4())


@dataclass(frozen=True)
class Scored:
    """One scored request: what the handler reports as metrics and the client receives."""

    id: str
    rows: int
    prediction: Prediction
    latency_ms: float
    body: dict[str, Any]
    shadow: bool = False
    binary: tuple[bytes, ...] | None = None  # the binary outputs' data, after ``body`` (binary tensor extension)
    label_counts: dict[str, int] | None = None  # a classifier's rows per label (``class_counts``)


def prediction_score(prediction: Prediction) -> float:
    """The release's prediction-shift signal: mean positive-class probability (binary), mean top-class
    probability (multiclass), or mean prediction (regression)."""
    # np.add.reduce rather than .mean(): the same float32 pairwise sum without numpy's Python-level wrapper,
    # which costs more than the sum itself at one row.
    if prediction.probabilities is None:
        labels = prediction.labels
        return float(np.add.reduce(labels, dtype=np.float64)) / labels.shape[0]
    proba = prediction.probabilities
    column = proba[:, 1] if proba.shape[1] == 2 else np.maximum.reduce(proba, axis=1)
    return float(np.add.reduce(column)) / column.shape[0]


def class_counts(
    labels: np.ndarray, classes: list[Any] | None = None, codes: np.ndarray | None = None
) -> dict[str, int]:
    """How many rows got each label (the ``Predicted.<class>`` metrics), from the predicted labels, or from
    their ``codes`` in the model's ``classes`` (``class_codes``) when they have them."""
    if labels.shape[0] == 1:
        return {str(labels[0]): 1}
    if codes is not None:
        assert classes is not None
        return {str(classes[i]): int(n) for i, n in enumerate(np.bincount(codes, minlength=len(classes))) if n}
    # Counter counts in C; a Python loop over a 1000-row batch cost more than the model.
    counts: dict[str, int] = {}
    for label, count in Counter(labels.tolist()).items():
        counts[str(label)] = counts.get(str(label), 0) + count
    return counts


# Up to this many classes, and from this many rows (below, hashing a few labels is cheaper than the numpy
# calls), a classifier's labels are coded as class indices (see class_codes).
CODED_CLASSES = 16
CODED_MIN_ROWS = 16


def class_codes(
    labels: np.ndarray, classes: list[Any] | None, probabilities: np.ndarray | None = None
) -> np.ndarray | None:
    """Each label's index in ``classes`` (a model card's), or None when a label is not one of them, the types
    differ, or there are too many classes to code.

    onnxruntime makes a new str object per row, so hashing the labels (a dict, Counter, set) computes every
    hash, at about 50 ns a row. The classifier's own argmax of ``probabilities`` is the usual answer, checked
    in one equality pass over the rows (numpy's loop, no hashing); failing that, one pass per class.
    """
    if not classes or len(classes) > CODED_CLASSES or labels.ndim != 1 or labels.shape[0] < CODED_MIN_ROWS:
        return None
    if labels.dtype == object:
        if type(labels[0]) is not type(classes[0]):
            return None
    elif labels.dtype.kind not in "iu" or not all(type(c) is int for c in classes):
        return None  # integer labels (numpy's) are coded against integer classes only
    known = _class_array(tuple(classes), labels.dtype)
    if probabilities is not None and probabilities.shape == (labels.shape[0], len(classes)):
        if len(classes) == 2:  # argmax along a short axis is slow; the first maximum on a tie, as argmax
            guess = (probabilities[:, 1] > probabilities[:, 0]).astype(np.intp)
        else:
            guess = probabilities.argmax(axis=1)
        if (labels == known[guess]).all():
            return guess
    codes = np.full(labels.shape[0], -1, dtype=np.intp)
    for i, cls in enumerate(known):
        codes[labels == cls] = i
    return None if (codes < 0).any() else codes


@functools.lru_cache(maxsize=64)
def _class_array(classes: tuple[Any, ...], dtype: np.dtype[Any]) -> np.ndarray:
    return np.array(classes, dtype=dtype)


def _codes(loaded: LoadedModel, prediction: Prediction) -> np.ndarray | None:
    if prediction.probabilities is None:
        return None
    return class_codes(prediction.labels, loaded.card.classes, prediction.probabilities)


def _label_counts(loaded: LoadedModel, prediction: Prediction, codes: np.ndarray | None) -> dict[str, int] | None:
    """A classifier's ``class_counts``, from the ``codes`` the caller took once with ``_codes`` (None: none)."""
    if prediction.probabilities is None:
        return None
    return class_counts(prediction.labels, loaded.card.classes, codes)


def oip_outputs(
    card: ModelCard,
    outputs: list[np.ndarray],
    wanted: list[str] | None = None,
    binary: frozenset[str] = frozenset(),
    data: list[bytes] | None = None,
    labels: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> list[dict[str, Any]]:
    """OIP output tensors (flat row-major data) in the card's order, optionally only the requested ones.

    The outputs named in ``binary`` carry ``parameters.binary_data_size`` instead of ``data``; their bytes are
    appended to ``data`` in the same order (the binary tensor data extension). ``labels`` are the prediction's
    labels and their class codes: the output they are a view of is encoded by class."""
    tensors = []
    for spec, array in zip(card.outputs, outputs, strict=True):
        if wanted is not None and spec.name not in wanted:
            continue
        tensor: dict[str, Any] = {"name": spec.name, "datatype": spec.datatype, "shape": list(array.shape)}
        if spec.name in binary and data is not None:
            if labels is not None and labels[1] is not None and labels[0].base is array and card.classes:
                chunk = oip_binary.encode_classes(labels[1], card.classes)
            else:
                chunk = oip_binary.encode_tensor(spec.datatype, array)
            data.append(chunk)
            tensor["parameters"] = {"binary_data_size": len(chunk)}
        else:
            tensor["data"] = array.ravel().tolist()
        tensors.append(tensor)
    return tensors


class RecordsFastPath:
    """Vectorized fast paths for requests that are plainly valid; ``None`` means "use the schema".

    ``FeatureSchema.columns_from_records`` and ``columns_from_oip`` validate value by value, which costs more
    than the model at small batches. These accept only what they can prove valid under the schema's own rules
    (exact feature set, numbers that are ints or floats, finite and in range compared in float32 as the schema
    does, string categories in the allowed set) and return the very same columns; anything else (a missing
    value, a wrong type, an out-of-range number, nested OIP data...) falls back to the schema, which produces
    the precise error message. Type checks run in C (``map(type, ...)`` into a set), never a Python loop.
    """

    def __init__(self, schema: Any) -> None:
        self.schema = schema
        self.names = list(schema.names)
        self.keys = frozenset(schema.names)
        self.numeric = [f.name for f in schema.numeric]
        self.numeric_set = frozenset(self.numeric)
        self._numeric_row = itemgetter(*self.numeric) if len(self.numeric) > 1 else None
        self.lo = np.array([-np.inf if f.min is None else f.min for f in schema.numeric], dtype=np.float32)
        self.hi = np.array([np.inf if f.max is None else f.max for f in schema.numeric], dtype=np.float32)
        self.categorical: list[tuple[str, frozenset[str] | None]] = []
        for f in schema.categorical:
            allowed = f.values if f.values is not None else (f.categories if schema.handle_unknown == "error" else None)
            self.categorical.append((f.name, None if allowed is None else frozenset(allowed)))
        self._allowed = dict(self.categorical)
        self._bounds = {name: (self.lo[j], self.hi[j]) for j, name in enumerate(self.numeric)}
        # Finite range bounds, per set of binary inputs (a client sends the same set every time).
        self._binary_bounds: dict[tuple[str, ...], tuple[np.ndarray | None, np.ndarray | None]] = {}

    def columns(self, records: Any, max_rows: int) -> dict[str, np.ndarray] | None:
        """``:predict`` records as ONNX input columns, or None."""
        if type(records) is not list or not 0 < len(records) <= max_rows:
            return None
        keys = self.keys
        for rec in records:
            if type(rec) is not dict or rec.keys() != keys:
                return None
        out: dict[str, np.ndarray] = {}
        if self.numeric:
            if self._numeric_row is not None:
                values: list[Any] = list(map(self._numeric_row, records))
                kinds = set(map(type, chain.from_iterable(values)))
            else:
                values = [[rec[self.numeric[0]]] for rec in records]
                kinds = {type(v[0]) for v in values}
            if not kinds <= _NUMBER_TYPES:
                return None
            try:
                matrix = np.array(values, dtype=np.float32).T
            except OverflowError:
                return None
            if not (
                np.isfinite(matrix).all() and (matrix >= self.lo[:, None]).all() and (matrix <= self.hi[:, None]).all()
            ):
                return None
            matrix = np.ascontiguousarray(matrix)
            for j, name in enumerate(self.numeric):
                out[name] = matrix[j].reshape(-1, 1)
        for name, allowed in self.categorical:
            column = list(map(itemgetter(name), records))
            if set(map(type, column)) != {str} or (allowed is not None and not allowed.issuperset(column)):
                return None
            out[name] = np.array(column, dtype=object).reshape(-1, 1)
        return {name: out[name] for name in self.names}

    def oip_columns(self, inputs: Any, max_rows: int) -> dict[str, np.ndarray] | None:
        """OIP ``infer`` input tensors (one per feature, flat ``data``) as ONNX input columns, or None."""
        if type(inputs) is not list or len(inputs) != len(self.names):
            return None
        if all(type(t) is dict and type(t.get("data")) is np.ndarray for t in inputs):
            return self._all_binary(inputs, max_rows)
        by_name: dict[str, dict[str, Any]] = {}
        for tensor in inputs:
            if type(tensor) is not dict:
                return None
            name = tensor.get("name")
            if type(name) is not str or name not in self.keys or name in by_name:
                return None
            by_name[name] = tensor
        rows = -1
        out: dict[str, np.ndarray] = {}
        binary: list[tuple[str, np.ndarray]] = []
        numeric: list[tuple[str, list[Any]]] = []  # JSON numeric data, checked together below
        for name in self.names:
            tensor = by_name[name]
            shape, data, datatype = tensor.get("shape"), tensor.get("data"), tensor.get("datatype")
            if type(shape) is not list or set(map(type, shape)) != {int}:
                return None
            if type(data) is np.ndarray:  # binary tensor data: flat views of the body, checked together below
                n = data.shape[0]
                if (
                    name not in self.numeric_set
                    or datatype not in NUMERIC_DATATYPES
                    or data.dtype.kind not in "fiu"
                    or (shape != [n] and shape != [n, 1])
                    or not 0 < n <= max_rows
                    or (rows >= 0 and n != rows)
                ):
                    return None
                rows = n
                binary.append((name, data))
                continue
            if type(data) is not list:
                return None
            n = len(data)
            if (shape != [n] and shape != [n, 1]) or not 0 < n <= max_rows or (rows >= 0 and n != rows):
                return None
            rows = n
            if name in self.numeric_set:
                if datatype not in NUMERIC_DATATYPES or not set(map(type, data)) <= _NUMBER_TYPES:
                    return None
                numeric.append((name, data))
            else:
                allowed = self._allowed[name]
                if (
                    datatype != "BYTES"
                    or set(map(type, data)) != {str}
                    or (allowed is not None and not allowed.issuperset(data))
                ):
                    return None
                out[name] = np.array(data, dtype=object).reshape(-1, 1)
        if numeric:
            try:
                matrix = np.array([data for _, data in numeric], dtype=np.float32)
            except OverflowError:
                return None
            if not self._checked_columns([name for name, _ in numeric], matrix, out):
                return None
        if binary and not self._binary_columns(binary, rows, out):
            return None
        return {name: out[name] for name in self.names}

    def _all_binary(self, inputs: list[dict[str, Any]], max_rows: int) -> dict[str, np.ndarray] | None:
        """A request whose every input is binary tensor data (the usual binary request), in one tight loop: its
        shapes and sizes were checked against the body by ``oip_binary.attach_inputs``, the only maker of numpy
        ``data``. When it cut one array over the body into equal rows (one datatype, one count), the rows are
        the inputs in the request's order and become the matrix without a copy."""
        first = inputs[0]["data"]
        n, base = first.shape[0], first.base
        if len(self.numeric) != len(self.names) or not 0 < n <= max_rows:
            return None
        shapes = ([n], [n, 1])
        position: dict[str, int] = {}
        if type(base) is np.ndarray and base.shape == (len(inputs) * n,):
            if base.dtype.kind not in "fiu" or inputs[0].get("datatype") not in NUMERIC_DATATYPES:
                return None
            for i, t in enumerate(inputs):
                if t["data"].base is not base or t.get("shape") not in shapes:
                    return None
                position[t.get("name")] = i  # type: ignore[index]
            matrix = base.reshape(len(inputs), n)
        else:
            matrix = None
            for i, t in enumerate(inputs):
                data = t["data"]
                if (
                    t.get("datatype") not in NUMERIC_DATATYPES
                    or data.shape[0] != n
                    or data.dtype.kind not in "fiu"
                    or t.get("shape") not in shapes
                ):
                    return None
                position[t.get("name")] = i  # type: ignore[index]
        if len(position) != len(inputs) or position.keys() != self.numeric_set:
            return None
        order = [position[name] for name in self.numeric]
        if matrix is None or matrix.dtype != np.float32:
            matrix = _float32_matrix([inputs[i]["data"] for i in order], n)
        elif order != list(range(len(order))):
            matrix = matrix[order]  # the schema's order (a copy)
        out: dict[str, np.ndarray] = {}
        if not self._checked_columns(self.numeric, matrix, out):
            return None
        return out

    def _binary_columns(self, binary: list[tuple[str, np.ndarray]], rows: int, out: dict[str, np.ndarray]) -> bool:
        """Binary numeric tensors among JSON ones: cast to float32 into one (features, rows) matrix and checked
        with one call per check, not per feature; False when not plainly valid."""
        matrix = _float32_matrix([data for _, data in binary], rows)
        return self._checked_columns([name for name, _ in binary], matrix, out)

    def _checked_columns(self, names: list[str], matrix: np.ndarray, out: dict[str, np.ndarray]) -> bool:
        """The (features, rows) float32 matrix's rows as columns in ``out``, if every value is finite and in its
        feature's range; False if not (each numpy call costs more than the values at small batches, so each
        check is one call for the whole matrix)."""
        key = tuple(names)
        bounds = self._binary_bounds.get(key)
        if bounds is None:
            bounds = self._binary_bounds[key] = self._finite_bounds(names)
        lo, hi = bounds
        if lo is None or hi is None:
            ok = bool(np.isfinite(matrix).all())
        else:
            ok = bool(((matrix >= lo) & (matrix <= hi)).all())
        if ok:
            out.update(zip(names, matrix[:, :, None], strict=True))
        return ok

    def _finite_bounds(self, names: list[str]) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Each feature's range as finite float32 bounds, one per row of the matrix: a value outside them is out of
        range, and so are NaN (every comparison with it is false) and infinities. (None, None) when no feature has a
        range: finiteness is the only check."""
        big = np.finfo(np.float32).max
        lo = np.array([max(self._bounds[name][0], -big) for name in names], dtype=np.float32)
        hi = np.array([min(self._bounds[name][1], big) for name in names], dtype=np.float32)
        if (lo == -big).all() and (hi == big).all():
            return None, None
        return lo[:, None], hi[:, None]


def _float32_matrix(arrays: list[np.ndarray], rows: int) -> np.ndarray:
    """Flat numeric arrays of ``rows`` values as the rows of one float32 matrix (a value past float32's range
    becomes inf, which the range check refuses with the schema's message)."""
    matrix = np.empty((len(arrays), rows), dtype=np.float32)
    if all(a.dtype == np.float32 for a in arrays):
        for j, a in enumerate(arrays):
            matrix[j] = a
    else:
        with np.errstate(all="ignore"):
            for j, a in enumerate(arrays):
                matrix[j] = a
    return matrix


_NUMBER_TYPES = frozenset({int, float})


class CaptureEmitter:
    """Emits sampled requests and all feedback as one JSON line each on the ``modeldeck.capture`` logger.

    Cheap on purpose (one JSON encoding and one log call, no S3): delivery to ``capture/{model}/`` is
    CloudWatch Logs → Firehose on AWS, and the local cloud's capture sink locally.
    """

    def __init__(
        self,
        settings: Settings,
        logger: logging.Logger | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings
        self.logger = logger or logging.getLogger(CAPTURE_LOGGER)
        self.rng = rng or random.Random()
        self._now = clock or (lambda: datetime.now(UTC))

    def sampled(self) -> bool:
        rate = self.settings.capture_sample_rate
        return rate >= 1.0 or (rate > 0.0 and self.rng.random() < rate)

    def _ts(self) -> str:
        # The "%Y-%m-%dT%H:%M:%S.%fZ" format of capture.parse_ts; isoformat is several times cheaper than strftime.
        return self._now().isoformat(timespec="microseconds")[:26] + "Z"

    def capture(
        self,
        *,
        model_version: str,
        function_version: str,
        request_id: str,
        rows: int,
        features: dict[str, list[Any]],
        outputs: dict[str, Any],
        latency_ms: float,
        shadow: bool = False,
        experiment: Mapping[str, Any] | None = None,
    ) -> None:
        redact = self.settings.capture_redact
        if redact:
            features = {k: v for k, v in features.items() if k not in redact}
        record = {
            "kind": "capture",
            "model": self.settings.model_name,
            "model_version": model_version,
            "function_version": function_version,
            "id": request_id,
            "ts": self._ts(),
            "rows": rows,
            "shadow": shadow,
            "features": features,
            "outputs": outputs,
            "latency_ms": round(latency_ms, 3),
        }
        if experiment is not None:
            record["experiment"] = dict(experiment)
        for line in bounded_lines(record, dumps):  # one line unless it would exceed a CloudWatch Logs event
            self.logger.info(line)

    def feedback(self, *, request_id: str, label: list[Any] | None = None, value: list[float] | None = None) -> None:
        """A feedback record: ``label`` and/or ``value`` (each a list, one per row or one for the request)."""
        record: dict[str, Any] = {
            "kind": "feedback",
            "model": self.settings.model_name,
            "id": request_id,
            "ts": self._ts(),
        }
        if label is not None:
            record["label"] = label
        if value is not None:
            record["value"] = value
        self.logger.info(dumps(record))


class InferenceService:
    """The routes' logic. Every method validates, scores or records, and returns a JSON-ready body.

    ``always_capture`` captures a request whatever the sample rate (the live side of a mirrored request, so
    every shadow record has its pair). ``shadow_id`` marks a mirrored copy scored by a shadow candidate: it
    reuses the live request's id, is always captured with ``"shadow": true``, and answers a minimal body.
    """

    def __init__(
        self,
        settings: Settings,
        store: ModelStore,
        capture: CaptureEmitter,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.settings = settings
        self.store = store
        self.capture_emitter = capture
        self._clock = clock

    def model(self, name: str) -> LoadedModel:
        """The served model if ``name`` is it; 404 for any other name, 503 while it cannot be served."""
        if name != self.settings.model_name:
            raise NotFound(f"model {name!r} is not served here (this endpoint serves {self.settings.model_name!r})")
        return self.store.get()

    def metadata(self, name: str) -> dict[str, Any]:
        return self.model(name).metadata

    def ready(self, name: str) -> dict[str, Any]:
        loaded = self.model(name)
        return {"name": name, "ready": True, "model_version": loaded.version}

    def health_ready(self) -> dict[str, Any]:
        loaded = self.store.get()
        return {"ready": True, "model_name": loaded.card.name, "model_version": loaded.version}

    def predict(
        self,
        name: str,
        body: Mapping[str, Any],
        gateway_id: str | None,
        function_version: str,
        *,
        always_capture: bool = False,
        shadow_id: str | None = None,
        experiment: Mapping[str, Any] | None = None,
    ) -> Scored:
        """``:predict``: named-feature records in, predictions (and probabilities) out."""
        started = self._clock()
        loaded = self.model(name)
        check_fields(body, PREDICT_FIELDS, ("instances",), scalar_extras=True)
        records = body["instances"]
        tensor = loaded.model.tensor
        columns = (
            {tensor.name: tensor.from_instances(records, self.settings.max_rows)}
            if tensor is not None
            else loaded.fast_path.columns(records, self.settings.max_rows)
        )
        if columns is None:
            columns = loaded.card.schema.columns_from_records(records, self.settings.max_rows)
        prediction = loaded.model.predict(columns)
        rid = shadow_id or request_id(None, gateway_id)
        labels = prediction.labels.tolist()
        probabilities = prediction.probabilities.tolist() if prediction.probabilities is not None else None
        latency_ms = (self._clock() - started) * 1000

        def features() -> dict[str, list[Any]]:
            if tensor is not None:
                return tensor.summary_record(columns[tensor.name])
            return {
                f.name: (list(map(itemgetter(f.name), records)) if f.numeric else columns[f.name].ravel().tolist())
                for f in loaded.card.schema.features
            }

        self._capture(
            loaded,
            function_version,
            rid,
            prediction,
            labels,
            features,
            latency_ms,
            shadow_id,
            always_capture,
            probabilities,
            experiment,
        )
        if shadow_id is not None:
            return self._shadow_scored(rid, loaded, prediction, latency_ms)
        out: dict[str, Any] = {"predictions": labels}
        if probabilities is not None:
            out["probabilities"] = probabilities
        out["model_version"] = loaded.version
        out["id"] = rid
        counts = _label_counts(loaded, prediction, _codes(loaded, prediction))
        return Scored(rid, len(labels), prediction, latency_ms, out, label_counts=counts)

    def infer(
        self,
        name: str,
        body: Mapping[str, Any],
        gateway_id: str | None,
        function_version: str,
        *,
        always_capture: bool = False,
        shadow_id: str | None = None,
        experiment: Mapping[str, Any] | None = None,
    ) -> Scored:
        """OIP v2 ``infer``: one tensor per feature in, the model's output tensors out."""
        started = self._clock()
        loaded = self.model(name)
        check_fields(body, OIP_FIELDS, ("inputs",))
        rid = request_id(body.get("id"), gateway_id)
        if shadow_id is not None:
            rid = shadow_id
        if "parameters" in body and not isinstance(body["parameters"], dict):
            raise ValidationError("'parameters' must be an object")
        wanted = self._requested_outputs(loaded.card, body.get("outputs"))
        binary = oip_binary.binary_outputs(body, [o.name for o in loaded.card.outputs], wanted)
        inputs = body["inputs"]
        tensor = loaded.model.tensor
        columns = (
            # Binary tensor data is checked as the JSON data it encodes: the same array, or the same message.
            {tensor.name: tensor.from_oip(oip_binary.as_json_inputs(inputs), self.settings.max_rows)}
            if tensor is not None
            else loaded.fast_path.oip_columns(inputs, self.settings.max_rows)
        )
        if columns is None:
            # The schema's own checks and messages, on the request as a JSON client would have sent it.
            inputs = oip_binary.as_json_inputs(inputs)
            columns = loaded.card.schema.columns_from_oip(inputs, self.settings.max_rows)
        raw = loaded.model.run(columns)
        prediction = loaded.model.interpret(raw)
        latency_ms = (self._clock() - started) * 1000

        def features() -> dict[str, list[Any]]:
            if tensor is not None:
                return tensor.summary_record(columns[tensor.name])
            by_name = {t["name"]: t for t in inputs}
            out: dict[str, list[Any]] = {}
            for f in loaded.card.schema.features:
                if f.numeric:
                    data = by_name[f.name]["data"]
                    if isinstance(data, np.ndarray):
                        data = data.tolist()
                    out[f.name] = [v[0] for v in data] if data and isinstance(data[0], list) else data
                else:
                    out[f.name] = columns[f.name].ravel().tolist()
            return out

        self._capture(
            loaded,
            function_version,
            rid,
            prediction,
            None,
            features,
            latency_ms,
            shadow_id,
            always_capture,
            experiment=experiment,
        )
        if shadow_id is not None:
            return self._shadow_scored(rid, loaded, prediction, latency_ms)
        tail: list[bytes] = []
        codes = _codes(loaded, prediction)
        out = {
            "model_name": loaded.card.name,
            "model_version": loaded.version,
            "id": rid,
            "outputs": oip_outputs(loaded.card, raw, wanted, binary, tail, (prediction.labels, codes)),
        }
        binary_data = tuple(tail) if binary else None
        counts = _label_counts(loaded, prediction, codes)
        return Scored(rid, len(prediction), prediction, latency_ms, out, binary=binary_data, label_counts=counts)

    def _capture(
        self,
        loaded: LoadedModel,
        function_version: str,
        rid: str,
        prediction: Prediction,
        labels: list[Any] | None,
        features: Callable[[], dict[str, list[Any]]],
        latency_ms: float,
        shadow_id: str | None,
        always_capture: bool,
        probabilities: list[Any] | None = None,
        experiment: Mapping[str, Any] | None = None,
    ) -> None:
        """One capture record, when sampled (always for mirrored requests and their live originals, and for
        every request during an experiment, which carries its ``experiment`` field).

        ``features`` is only called for a captured request: most requests are not sampled.
        """
        if shadow_id is None and experiment is None and not always_capture and not self.capture_emitter.sampled():
            return
        if labels is None:
            labels = prediction.labels.tolist()
        outputs: dict[str, Any] = {"label": labels}
        if probabilities is None and prediction.probabilities is not None:
            probabilities = prediction.probabilities.tolist()
        if probabilities is not None:
            outputs["probabilities"] = probabilities
        self.capture_emitter.capture(
            model_version=loaded.version,
            function_version=function_version,
            request_id=rid,
            rows=len(labels),
            features=features(),
            outputs=outputs,
            latency_ms=latency_ms,
            shadow=shadow_id is not None,
            experiment=experiment,
        )

    @staticmethod
    def _shadow_scored(rid: str, loaded: LoadedModel, prediction: Prediction, latency_ms: float) -> Scored:
        # Nobody reads a mirrored copy's answer: the capture record is its result.
        body = {"id": rid, "model_version": loaded.version, "shadow": True, "rows": len(prediction)}
        return Scored(rid, len(prediction), prediction, latency_ms, body, shadow=True)

    @staticmethod
    def _requested_outputs(card: ModelCard, requested: Any) -> list[str] | None:
        if requested is None:
            return None
        names = [o.name for o in card.outputs]
        if not isinstance(requested, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
        ):
            raise ValidationError("'outputs' must be a list of objects {name}")
        unknown = [o["name"] for o in requested if o["name"] not in names]
        if unknown:
            raise ValidationError(
                f"unknown output(s) {', '.join(map(repr, unknown))}; the model has {', '.join(names)}"
            )
        return [o["name"] for o in requested]

    def feedback(self, name: str, body: Mapping[str, Any], gateway_id: str | None) -> dict[str, Any]:
        """Ground truth for an earlier prediction, joined on its id by the drift job and the experiment analysis
        (never sampled): a ``label`` (one, or one per row), a business ``value`` (a finite number, or one per
        row: converted 0/1, revenue), or both."""
        loaded = self.model(name)
        check_fields(body, FEEDBACK_FIELDS, ("id",))
        if "label" not in body and "value" not in body:
            raise ValidationError("send 'label', 'value' or both: the true label, or the outcome's numeric value")
        prediction_id = body["id"]
        if not isinstance(prediction_id, str) or not prediction_id or len(prediction_id) > MAX_ID_LENGTH:
            raise ValidationError(
                f"'id' must be the prediction's id: a non-empty string of at most {MAX_ID_LENGTH} characters"
            )
        labels = self._feedback_list(body, "label")
        values = self._feedback_list(body, "value")
        card = loaded.card
        for i, value in enumerate(labels or ()):
            where = "label" if not isinstance(body["label"], list) else f"label[{i}]"
            if card.task == "classification":
                if value not in (card.classes or []) or isinstance(value, bool):
                    raise ValidationError(
                        f"{where}: {value!r:.40} is not one of the model's classes "
                        f"{', '.join(map(repr, card.classes or []))}"
                    )
            elif not finite_number(value):
                raise ValidationError(f"{where}: must be a finite number, got {_json_type(value)} {value!r:.40}")
        for i, value in enumerate(values or ()):
            if not finite_number(value):
                where = "value" if not isinstance(body["value"], list) else f"value[{i}]"
                raise ValidationError(f"{where}: must be a finite number, got {_json_type(value)} {value!r:.40}")
        self.capture_emitter.feedback(request_id=prediction_id, label=labels, value=values)
        out: dict[str, Any] = {"id": request_id(None, gateway_id), "prediction_id": prediction_id}
        out["labels"] = len(labels or ())
        if values is not None:
            out["values"] = len(values)
        out["model_version"] = loaded.version
        return out

    def _feedback_list(self, body: Mapping[str, Any], key: str) -> list[Any] | None:
        """A feedback field as a list (one item, or one per row of the prediction); None when absent."""
        if key not in body:
            return None
        items = body[key] if isinstance(body[key], list) else [body[key]]
        if not items:
            raise ValidationError(f"'{key}' is empty: send one {key} per row of the prediction, or one in all")
        if len(items) > self.settings.max_rows:
            raise PayloadTooLarge(f"too many {key}s: {len(items)} (the limit is {self.settings.max_rows})")
        return items


SHADOW_TTL_S = 20.0
# A mirrored event larger than this is not sent: the long-standing limit of an asynchronous invocation's
# payload. The live record is still captured; only its shadow pair is missing.
MAX_MIRROR_BYTES = 256 * 1024
SHADOW_MARKER = "modeldeck_shadow"


def shadow_key(model: str) -> str:
    """Where the release state machine's ``shadow`` action writes the mirroring target of a model."""
    return f"models/{model}/shadow.json"


@dataclass(frozen=True)
class ShadowTarget:
    """The candidate Lambda version live traffic is mirrored to (``models/{model}/shadow.json``)."""

    function_name: str
    qualifier: str
    model_version: str | None = None

    @classmethod
    def from_json(cls, raw: bytes) -> ShadowTarget:
        data = json.loads(raw)
        if not isinstance(data, dict) or not isinstance(data.get("function_name"), str) or not data["function_name"]:
            raise ValueError("shadow.json needs a non-empty 'function_name'")
        qualifier = data.get("qualifier")
        if not isinstance(qualifier, (str, int)) or isinstance(qualifier, bool) or not str(qualifier):
            raise ValueError("shadow.json needs a 'qualifier' (the candidate's Lambda version)")
        version = data.get("model_version")
        return cls(data["function_name"], str(qualifier), None if version is None else str(version))


class CachedDocument(Generic[T]):
    """A small document the live path consults, read at most once per ``ttl`` seconds.

    ``fetch`` returns the document's bytes or None when there is none; ``parse`` turns them into ``T``. A
    failure (S3 down, access denied, a malformed document) means "none" until the next read, or with
    ``keep_on_error`` the last document read: the live request must never cost more than this one cached
    lookup, nor fail because of it.
    """

    def __init__(
        self,
        fetch: Callable[[], bytes | None],
        parse: Callable[[bytes], T],
        *,
        ttl: float,
        off: str,  # the error's start, formatted with {ttl}
        clock: Callable[[], float] = monotonic,
        on_error: Callable[[str], None] | None = None,
        keep_on_error: bool = False,
    ) -> None:
        self._fetch, self._parse, self.ttl, self._off = fetch, parse, ttl, off
        self._clock, self._on_error, self._keep_on_error = clock, on_error, keep_on_error
        self._value: T | None = None
        self._expires = -math.inf
        self.reads = 0

    def get(self) -> T | None:
        now = self._clock()
        if now < self._expires:
            return self._value
        self._expires = now + self.ttl
        self.reads += 1
        try:
            raw = self._fetch()
            self._value = None if raw is None else self._parse(raw)
        except Exception as exc:
            if not self._keep_on_error:
                self._value = None
            if self._on_error is not None:
                self._on_error(f"{self._off.format(ttl=self.ttl)}: {exc}")
        return self._value


class ShadowConfig(CachedDocument[ShadowTarget]):
    """Whether live traffic is mirrored right now (``shadow.json``), read at most once per ``ttl`` seconds.
    Mirroring is best effort: an unreadable document means "no shadow"."""

    def __init__(
        self,
        fetch: Callable[[], bytes | None],
        *,
        ttl: float = SHADOW_TTL_S,
        clock: Callable[[], float] = monotonic,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(
            fetch,
            ShadowTarget.from_json,
            ttl=ttl,
            off="shadow mirroring is off for {ttl:g} s: cannot read shadow.json",
            clock=clock,
            on_error=on_error,
        )

    def target(self) -> ShadowTarget | None:
        return self.get()


def mirror(client: Any, target: ShadowTarget, event: Mapping[str, Any], request_id: str) -> bool:
    """Send a copy of an API Gateway event to the shadow candidate as an asynchronous (``Event``) invocation.

    The copy carries ``{"modeldeck_shadow": {"id": <live request id>}}`` so the candidate captures it under
    the live record's id. Returns False (without raising) if the payload is too large; client errors
    propagate for the caller to log.
    """
    payload = dumps({**event, SHADOW_MARKER: {"id": request_id}}).encode()
    if len(payload) > MAX_MIRROR_BYTES:
        return False
    client.invoke(
        FunctionName=target.function_name, Qualifier=target.qualifier, InvocationType="Event", Payload=payload
    )
    return True


class ExperimentConfig(CachedDocument[Experiment]):
    """The model's running experiment (``models/{model}/experiment.json``), read at most once per ``ttl``
    seconds per execution environment, like ``ShadowConfig``.

    An unreadable or invalid document keeps the last one read (logged): switching a unit's variant for a
    TTL because S3 blinked would contaminate the experiment more than a stale document does.
    """

    def __init__(
        self,
        fetch: Callable[[], bytes | None],
        *,
        ttl: float = EXPERIMENT_TTL_S,
        clock: Callable[[], float] = monotonic,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(
            fetch,
            Experiment.from_json,
            ttl=ttl,
            off="experiment.json unreadable, keeping the last one read for {ttl:g} s",
            clock=clock,
            on_error=on_error,
            keep_on_error=True,
        )

    def running(self) -> Experiment | None:
        """The experiment if one is running (a stopped or concluded document routes nothing)."""
        experiment = self.get()
        return experiment if experiment is not None and experiment.running else None


# Lambda's quota on a synchronous invocation's request (and response) payload.
MAX_FORWARD_BYTES = 6 * 1024 * 1024
# Lambda errors that mean "no capacity right now" (Lambda API reference, Invoke: TooManyRequestsException is
# the function's or the account's concurrency limit; the EC2/ENI ones are transient capacity errors).
_THROTTLED = frozenset({"TooManyRequestsException", "EC2ThrottledException", "ResourceNotReadyException"})


class ChallengerError(HttpError):
    """An experiment's variant (another published version of this function) did not answer.

    The client gets this error, never the champion's answer in its place: a silent fallback would move the
    variant's failures into the champion's results and bias the experiment. 502 when the variant failed
    (Lambda reported a function error: an exception outside the handler's own error mapping, a timeout, out of
    memory) or could not be invoked, 504 when the live function stopped waiting for it, 503 with ``Retry-After``
    when it is throttled, 413 when the request is too large to forward.
    """

    def __init__(self, message: str, status: int, variant: Variant, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.variant = status, variant
        self.headers = {"X-Experiment-Variant": variant.name}
        if retry_after:
            self.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))


def forward(client: Any, variant: Variant, event: Mapping[str, Any], marker: Mapping[str, Any]) -> dict[str, Any]:
    """Invoke the variant's pinned version synchronously (``RequestResponse`` with its qualifier) with the API
    Gateway event plus ``{"modeldeck_experiment": marker}``; returns its proxy response unchanged.

    Raises :class:`ChallengerError` when the variant did not produce a response. A response it did produce,
    a 4xx or 5xx included, is its answer and is returned as it is (its own handler counted it).
    """
    who = f"the experiment's variant {variant.name} (model v{variant.version})"
    payload = dumps({**event, EXPERIMENT_MARKER: dict(marker)}).encode()
    if len(payload) > MAX_FORWARD_BYTES:
        raise ChallengerError(f"the request is too large to forward to {who}", 413, variant)
    try:
        out = client.invoke(
            FunctionName=variant.function_name,
            Qualifier=variant.qualifier,
            InvocationType="RequestResponse",
            Payload=payload,
        )
    except Exception as exc:
        code = str((getattr(exc, "response", None) or {}).get("Error", {}).get("Code") or type(exc).__name__)
        if code in ("ReadTimeoutError", "ConnectTimeoutError"):  # botocore's: the wait ran out
            raise ChallengerError(f"{who} did not answer in time ({code})", 504, variant) from exc
        if code in _THROTTLED:
            raise ChallengerError(f"{who} is throttled ({code}): retry later", 503, variant, 1.0) from exc
        if code == "RequestTooLargeException":
            raise ChallengerError(f"the request is too large to forward to {who}", 413, variant) from exc
        raise ChallengerError(f"{who} could not be invoked ({code})", 502, variant) from exc
    raw = out["Payload"].read()
    if out.get("FunctionError"):
        try:
            detail = json.loads(raw)
            reason = f"{detail.get('errorType', 'error')}: {detail.get('errorMessage', '')}"
        except (ValueError, AttributeError):
            reason = out["FunctionError"]
        raise ChallengerError(f"{who} failed: {reason:.300}", 502, variant)
    try:
        response = json.loads(raw)
    except ValueError:
        response = None
    if not isinstance(response, dict) or not isinstance(response.get("statusCode"), int):
        raise ChallengerError(f"{who} answered something that is not an API Gateway response", 502, variant)
    return response
