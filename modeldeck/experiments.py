"""Experiments (A/B tests): the experiment document and sticky assignment of units to variants.

The document lives at ``models/{model}/experiment.json`` in the registry bucket (written by
``modeldeck experiment start`` with a conditional put, so one experiment per model at a time). The inference
function reads it at most once per 20 s (``modeldeck.serving.ExperimentConfig``) and, while it runs, assigns
each scoring request to a variant from its unit key:

    unit value → its string → SHA-256 of ``f"{experiment_id}:{unit}"`` → first 8 bytes, big-endian, / 2**64
    → the variant whose cumulative-weight interval contains that number.

The hash is the only state: the same unit gets the same variant in every execution environment, every
version of the function and every process, for as long as the experiment (its id) lasts, and a new
experiment reshuffles units independently of the last one. Requests without the unit key go to the champion
and are recorded with ``"variant": null``.

Pure Python (hashlib, bisect): no numpy, so it costs microseconds on the live path.
"""

from __future__ import annotations

import hashlib
import json
import math
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modeldeck.errors import ValidationError

EXPERIMENT_TTL_S = 20.0
# An invocation of a challenger by the live function carries this top-level key (API Gateway events have
# none such): {"id": <experiment id>, "variant": <name>, "unit": <unit digest>}.
EXPERIMENT_MARKER = "modeldeck_experiment"
STATUSES = ("running", "stopped", "concluded")
METRIC_KINDS = ("conversion", "value")
UNIT_DIGEST_CHARS = 16
_SCALE = 2**64
_MAX_FLOAT_INT = int(1.7976931348623157e308)  # sys.float_info.max: larger ints overflow float()
_DOC_FIELDS = (
    "id",
    "model",
    "status",
    "unit_key",
    "variants",
    "champion",
    "metric",
    "alpha",
    "power",
    "mde",
    "baseline_rate",
    "min_units",
    "max_days",
    "started_at",
)


def finite_number(value: Any) -> bool:
    """A JSON number (never a boolean) that is finite as a float: an integer too large for a float is not."""
    if type(value) is int:
        return abs(value) <= _MAX_FLOAT_INT
    return type(value) is float and math.isfinite(value)


def experiment_key(model: str) -> str:
    """Where the running experiment of a model is (``modeldeck experiment start`` writes it)."""
    return f"models/{model}/experiment.json"


class ExperimentError(ValueError):
    """An invalid experiment document; the message names the bad field."""


@dataclass(frozen=True)
class Variant:
    """One arm: a registered model version served by a published Lambda version (``qualifier``)."""

    name: str
    version: int
    weight: float
    function_name: str
    qualifier: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "weight": self.weight,
            "function_name": self.function_name,
            "qualifier": self.qualifier,
        }


@dataclass(frozen=True)
class UnitKey:
    """Where a request's unit is read: a body field (``:predict`` top level, OIP ``parameters``) or a header."""

    field: str | None = None
    header: str | None = None

    def to_json(self) -> dict[str, str]:
        return {"field": self.field} if self.field is not None else {"header": str(self.header)}

    def describe(self) -> str:
        return f"field {self.field!r}" if self.field is not None else f"header {self.header!r}"


@dataclass(frozen=True)
class Experiment:
    """The experiment document (``models/{model}/experiment.json``). ``extra`` keeps fields this version of
    the code does not know, so a read-modify-write never drops them."""

    id: str
    model: str
    status: str
    unit_key: UnitKey
    variants: tuple[Variant, ...]
    champion: str
    metric: str
    alpha: float = 0.05
    power: float = 0.8
    mde: float | None = None
    baseline_rate: float | None = None
    min_units: int | None = None
    max_days: float | None = None
    started_at: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    # Upper ends of the variants' cumulative-weight intervals on [0, 2**64), the last exactly 2**64.
    _bounds: tuple[int, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        total = math.fsum(v.weight for v in self.variants)
        bounds, cumulative = [], 0.0
        for v in self.variants:
            cumulative += v.weight
            bounds.append(min(_SCALE, round(cumulative / total * _SCALE)))
        if bounds:
            bounds[-1] = _SCALE
        object.__setattr__(self, "_bounds", tuple(bounds))

    @property
    def running(self) -> bool:
        return self.status == "running"

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    @property
    def champion_variant(self) -> Variant:
        return self.variant(self.champion)

    @classmethod
    def from_json(cls, raw: bytes | str | Mapping[str, Any]) -> Experiment:
        """Parse and validate a document; raises :class:`ExperimentError` naming the first bad field."""
        if isinstance(raw, (bytes, str)):
            try:
                data = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ExperimentError(f"experiment.json is not JSON: {exc}") from None
        else:
            data = raw
        if not isinstance(data, Mapping):
            raise ExperimentError("experiment.json must be a JSON object")

        def text(key: str) -> str:
            value = data.get(key)
            if not isinstance(value, str) or not value:
                raise ExperimentError(f"'{key}' must be a non-empty string, got {value!r:.60}")
            return value

        def number(key: str, lo: float, hi: float, *, optional: bool, integer: bool = False) -> Any:
            value: Any = data.get(key)
            if value is None and optional:
                return None
            kind = "an integer" if integer else "a number"
            if not finite_number(value) or (integer and not isinstance(value, int)) or not lo <= value <= hi:
                raise ExperimentError(f"'{key}' must be {kind} in [{lo:g}, {hi:g}], got {value!r:.60}")
            return value

        experiment_id, model, status = text("id"), text("model"), text("status")
        if status not in STATUSES:
            raise ExperimentError(f"'status' must be one of {', '.join(STATUSES)}, got {status!r:.60}")
        unit_key = _unit_key(data.get("unit_key"))
        raw_variants = data.get("variants")
        if not isinstance(raw_variants, list) or len(raw_variants) < 2:
            raise ExperimentError("'variants' must be a list of at least two variants (the champion and a challenger)")
        variants = tuple(_variant(v, i) for i, v in enumerate(raw_variants))
        names = [v.name for v in variants]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ExperimentError(f"'variants': duplicate name(s) {', '.join(map(repr, duplicates))}")
        total = math.fsum(v.weight for v in variants)
        if abs(total - 1.0) > 1e-3:
            raise ExperimentError(f"'variants': the weights must sum to 1, they sum to {total:g}")
        champion = text("champion")
        if champion not in names:
            raise ExperimentError(f"'champion' {champion!r:.60} is not one of the variants {', '.join(names)}")
        return cls(
            id=experiment_id,
            model=model,
            status=status,
            unit_key=unit_key,
            variants=variants,
            champion=champion,
            metric=text("metric"),
            alpha=number("alpha", 1e-6, 0.5, optional=True) or 0.05,
            power=number("power", 0.5, 1 - 1e-6, optional=True) or 0.8,
            mde=number("mde", 0.0, math.inf, optional=True),
            baseline_rate=number("baseline_rate", 0.0, 1.0, optional=True),
            min_units=number("min_units", 0, math.inf, optional=True, integer=True),
            max_days=number("max_days", 0.0, 3660.0, optional=True),
            started_at=None if data.get("started_at") is None else text("started_at"),
            extra={k: v for k, v in data.items() if k not in _DOC_FIELDS},
        )

    def to_json(self) -> dict[str, Any]:
        """The document as JSON-ready data (``from_json(to_json())`` gives the same experiment)."""
        doc: dict[str, Any] = {
            "id": self.id,
            "model": self.model,
            "status": self.status,
            "unit_key": self.unit_key.to_json(),
            "variants": [v.to_json() for v in self.variants],
            "champion": self.champion,
            "metric": self.metric,
            "alpha": self.alpha,
            "power": self.power,
        }
        for key in ("mde", "baseline_rate", "min_units", "max_days", "started_at"):
            value = getattr(self, key)
            if value is not None:
                doc[key] = value
        doc.update(self.extra)
        return doc


def _unit_key(value: Any) -> UnitKey:
    if not isinstance(value, Mapping) or len(value) != 1 or not ({"field", "header"} & set(value)):
        raise ExperimentError(f'\'unit_key\' must be {{"field": NAME}} or {{"header": NAME}}, got {value!r:.60}')
    (kind, name), *_ = value.items()
    if not isinstance(name, str) or not name.strip():
        raise ExperimentError(f"'unit_key.{kind}' must be a non-empty string, got {name!r:.60}")
    if kind == "field" and name in ("instances", "inputs", "outputs", "id", "parameters"):
        raise ExperimentError(f"'unit_key.field' {name!r} is a field of the inference protocol, not a unit key")
    return UnitKey(field=name) if kind == "field" else UnitKey(header=name.strip().lower())


def _variant(value: Any, i: int) -> Variant:
    where = f"'variants[{i}]"
    if not isinstance(value, Mapping):
        raise ExperimentError(f"{where}' must be an object")
    name = value.get("name")
    if not isinstance(name, str) or not name:
        raise ExperimentError(f"{where}.name' must be a non-empty string, got {name!r:.60}")
    version = value.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ExperimentError(f"{where}.version' must be a model version (an integer >= 1), got {version!r:.60}")
    weight = value.get("weight")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight <= 1:
        raise ExperimentError(f"{where}.weight' must be a number in (0, 1], got {weight!r:.60}")
    function_name = value.get("function_name")
    if not isinstance(function_name, str) or not function_name:
        raise ExperimentError(f"{where}.function_name' must be a non-empty string, got {function_name!r:.60}")
    qualifier = value.get("qualifier")
    if isinstance(qualifier, bool) or not isinstance(qualifier, (str, int)) or not str(qualifier):
        raise ExperimentError(f"{where}.qualifier' must be the variant's Lambda version, got {qualifier!r:.60}")
    return Variant(name, version, float(weight), function_name, str(qualifier))


def unit_string(value: Any, where: str) -> str | None:
    """A unit value as the string that is hashed, or None when absent (null or an empty string).

    Strings are taken as they are; an integral number hashes as its integer (``42`` and ``42.0`` and the
    header ``42`` are one unit). Anything else is the client's mistake (400).
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if not finite_number(value):
        raise ValidationError(f"{where} (the experiment's unit key) must be a string or a number, got {value!r:.40}")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def unit_of(
    experiment: Experiment, body: Mapping[str, Any], headers: Mapping[str, str] | None, route: str
) -> str | None:
    """The request's unit as a string, or None without one.

    ``{"field": F}``: the top-level field F of a ``:predict`` body (``route="predict"``), or
    ``parameters.F`` of an OIP ``infer`` request (``route="infer"``). ``{"header": H}``: the request header H,
    whatever its case.
    """
    key = experiment.unit_key
    if key.field is not None:
        if route == "infer":
            parameters = body.get("parameters")
            value = parameters.get(key.field) if isinstance(parameters, Mapping) else None
            return unit_string(value, f"'parameters.{key.field}'")
        return unit_string(body.get(key.field), f"{key.field!r}")
    wanted = str(key.header)
    for name, value in (headers or {}).items():
        if name.lower() == wanted:
            return unit_string(value, f"header {key.header!r}")
    return None


def bucket_of(experiment_id: str, unit: str) -> int:
    """The unit's position on [0, 2**64): the first 8 bytes of SHA-256(f"{experiment_id}:{unit}")."""
    digest = hashlib.sha256(f"{experiment_id}:{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def assign(experiment: Experiment, unit: str | None) -> Variant:
    """The unit's variant (sticky: a function of the experiment id and the unit only); the champion when the
    request has no unit."""
    if unit is None:
        return experiment.champion_variant
    # bisect_right: a bucket equal to a bound belongs to the next interval ([lo, hi) intervals).
    return experiment.variants[bisect_right(experiment._bounds, bucket_of(experiment.id, unit))]


def unit_digest(unit: str | None) -> str | None:
    """What a record carries for the unit: the first 16 hex characters of its SHA-256, never the raw value."""
    if unit is None:
        return None
    return hashlib.sha256(unit.encode()).hexdigest()[:UNIT_DIGEST_CHARS]


def record_field(experiment: Experiment, variant: Variant | None, unit: str | None) -> dict[str, Any]:
    """The ``experiment`` field of a capture record: id, variant name (None without a unit) and unit digest."""
    return {
        "id": experiment.id,
        "variant": None if unit is None or variant is None else variant.name,
        "unit": unit_digest(unit),
    }
