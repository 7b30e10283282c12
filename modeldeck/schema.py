"""The feature schema: the one definition of a model's inputs, shared by training, serving and drift.

Numeric features travel as float32 (OIP ``FP32``) everywhere: training casts the dataset to float32
before fitting, so the ONNX graph and scikit-learn see the very same numbers. Categorical features are
strings (OIP ``BYTES``). A missing categorical value becomes ``MISSING_CATEGORY`` in both training and
serving, which the one-hot encoder treats like any unknown category.

A feature derived from another (``[[dataset.derive]]``) is computed inside the served ONNX graph, so a
served schema lists the raw inputs clients send and records each :class:`Derivation` in ``derived``.

This module imports only numpy: it sits on the Lambda hot path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from modeldeck.errors import PayloadTooLarge, ValidationError

MISSING_CATEGORY = ""
NUMERIC_DATATYPES = frozenset(
    {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)
_NUMBER_TYPES = (int, float)


@dataclass(frozen=True)
class Feature:
    """One model input. ``values`` is the declared allowed set; ``categories`` what training saw."""

    name: str
    kind: str
    min: float | None = None
    max: float | None = None
    values: tuple[str, ...] | None = None
    allow_missing: bool = True
    categories: tuple[str, ...] | None = None

    @property
    def numeric(self) -> bool:
        return self.kind == "numeric"

    @property
    def datatype(self) -> str:
        """The OIP datatype of this feature's input tensor."""
        return "FP32" if self.numeric else "BYTES"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.kind, "allow_missing": self.allow_missing}
        for key in ("min", "max"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.values is not None:
            out["values"] = list(self.values)
        if self.categories is not None:
            out["categories"] = list(self.categories)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Feature:
        return cls(
            name=data["name"],
            kind=data["type"],
            min=data.get("min"),
            max=data.get("max"),
            values=tuple(data["values"]) if data.get("values") is not None else None,
            allow_missing=data.get("allow_missing", True),
            categories=tuple(data["categories"]) if data.get("categories") is not None else None,
        )


@dataclass(frozen=True)
class Derivation:
    """A categorical feature binned from a numeric one, computed inside the model (training and serving alike).

    Bins are right-closed like ``pandas.cut(x, [-inf, *bins, inf], right=True)``: ``labels[0]`` for
    ``x <= bins[0]``, ``labels[i]`` for ``bins[i-1] < x <= bins[i]``, ``labels[-1]`` above the last edge.
    A missing (NaN) source gives the missing category. The source is compared as the float32 value the
    model receives, against the edges in double precision.
    """

    name: str
    source: str
    bins: tuple[float, ...]
    labels: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "bins": list(self.bins), "labels": list(self.labels)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Derivation:
        return cls(data["name"], data["source"], tuple(map(float, data["bins"])), tuple(data["labels"]))


@dataclass(frozen=True)
class FeatureSchema:
    """The ordered features of a model, and how unknown categories are handled.

    ``derived`` is empty for the schema a pipeline is fitted on. In a served schema (:meth:`raw_inputs`)
    it names the features the graph computes from the listed inputs.
    """

    features: tuple[Feature, ...]
    handle_unknown: str = "ignore"
    derived: tuple[Derivation, ...] = ()

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def numeric(self) -> list[Feature]:
        return [f for f in self.features if f.numeric]

    @property
    def categorical(self) -> list[Feature]:
        return [f for f in self.features if not f.numeric]

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def with_categories(self, seen: Mapping[str, Sequence[str]]) -> FeatureSchema:
        """A copy recording the categories training saw (serving enforces them if the policy is 'error')."""
        feats = tuple(
            Feature(f.name, f.kind, f.min, f.max, f.values, f.allow_missing, tuple(seen[f.name]))
            if f.name in seen
            else f
            for f in self.features
        )
        return FeatureSchema(feats, self.handle_unknown, self.derived)

    def raw_inputs(self, derivations: Sequence[Derivation]) -> FeatureSchema:
        """The inputs clients send when ``derivations`` run inside the graph: each derived feature gives way
        to its numeric source, listed once, in the derived feature's place.

        A source that is also a feature keeps its own definition (range, for one). Otherwise it is numeric
        with no range. Either way it may be missing only if every feature derived from it may be.
        """
        if not derivations:
            return self
        by_name = {d.name: d for d in derivations}
        own = {f.name: f for f in self.features if f.name not in by_name}
        strict = {d.source for d in derivations if not self.feature(d.name).allow_missing}
        out: dict[str, Feature] = {}
        for f in self.features:
            d = by_name.get(f.name)
            name = f.name if d is None else d.source
            if name in out:
                continue
            feat = own.get(name) or Feature(name, "numeric")
            out[name] = replace(feat, allow_missing=feat.allow_missing and name not in strict)
        return FeatureSchema(tuple(out.values()), self.handle_unknown, tuple(derivations))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"features": [f.to_dict() for f in self.features], "handle_unknown": self.handle_unknown}
        if self.derived:
            out["derived"] = [d.to_dict() for d in self.derived]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSchema:
        """A schema from its ``to_dict`` form (cards written before derivations existed have no ``derived``)."""
        return cls(
            tuple(Feature.from_dict(f) for f in data["features"]),
            data.get("handle_unknown", "ignore"),
            tuple(Derivation.from_dict(d) for d in data.get("derived", ())),
        )

    def columns_from_records(self, records: Any, max_rows: int) -> dict[str, np.ndarray]:
        """Validate named-feature records (the ``:predict`` body) into ONNX input columns of shape (n, 1)."""
        if not isinstance(records, list):
            raise ValidationError("'instances' must be a list of objects, one per row")
        _check_rows(len(records), max_rows)
        known = set(self.names)
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise ValidationError(f"instances[{i}] must be an object of feature: value, got {_json_type(rec)}")
            if len(rec) != len(known) or not known.issuperset(rec):
                unknown = sorted(set(rec) - known)
                if unknown:
                    raise ValidationError(
                        f"instances[{i}]: unknown feature(s) {_names(unknown)}; expected {', '.join(self.names)}"
                    )
                missing = [n for n in self.names if n not in rec]
                raise ValidationError(f"instances[{i}]: missing feature(s) {_names(missing)}")
        return {
            f.name: self._column(f, [rec[f.name] for rec in records], "instances[{row}]." + f.name)
            for f in self.features
        }

    def columns_from_oip(self, inputs: Any, max_rows: int) -> dict[str, np.ndarray]:
        """Validate OIP v2 input tensors (one per feature) into ONNX input columns of shape (n, 1)."""
        if not isinstance(inputs, list) or not inputs:
            raise ValidationError("'inputs' must be a non-empty list of tensors {name, shape, datatype, data}")
        by_name: dict[str, dict[str, Any]] = {}
        for i, tensor in enumerate(inputs):
            if not isinstance(tensor, dict):
                raise ValidationError(f"inputs[{i}] must be an object {{name, shape, datatype, data}}")
            name = tensor.get("name")
            if not isinstance(name, str):
                raise ValidationError(f"inputs[{i}].name must be a string")
            if name in by_name:
                raise ValidationError(f"input {name!r} is given more than once")
            by_name[name] = tensor
        unknown = sorted(set(by_name) - set(self.names))
        if unknown:
            raise ValidationError(f"unknown input(s) {_names(unknown)}; expected {', '.join(self.names)}")
        missing = [n for n in self.names if n not in by_name]
        if missing:
            raise ValidationError(f"missing input(s) {_names(missing)}")
        columns: dict[str, np.ndarray] = {}
        rows: int | None = None
        for f in self.features:
            tensor = by_name[f.name]
            data, n = _oip_data(f, tensor)
            if rows is None:
                _check_rows(n, max_rows)
                rows = n
            elif n != rows:
                raise ValidationError(f"input {f.name!r} has {n} rows but {self.features[0].name!r} has {rows}")
            columns[f.name] = self._column(f, data, f"inputs[{f.name}].data[{{row}}]")
        return columns

    def columns_from_arrays(
        self, arrays: Mapping[str, Any], where: str = "row {row}: {feature!r}"
    ) -> dict[str, np.ndarray]:
        """Validate whole columns (a batch file or a training frame, values as lists or arrays).

        ``where`` locates a bad value: it is formatted with ``row`` and ``feature``."""
        missing = [n for n in self.names if n not in arrays]
        if missing:
            raise ValidationError(f"missing column(s) {', '.join(map(repr, missing))}")
        return {f.name: self._column(f, arrays[f.name], where) for f in self.features}

    def _column(self, f: Feature, values: Any, where: str) -> np.ndarray:
        return (_numeric_column if f.numeric else _categorical_column)(f, values, where, self.handle_unknown)


def _names(names: list[str], shown: int = 5) -> str:
    """Quoted names, the first few and how many more (a message names every problem, or says how many)."""
    listed = ", ".join(map(repr, names[:shown]))
    return listed + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _at(where: str, row: int, f: Feature) -> str:
    """Where a bad value is: the ``where`` template of the caller, for this row and feature."""
    return where.format(row=row, feature=f.name)


def _outside(f: Feature) -> str:
    if f.min is not None and f.max is not None:
        return f"outside the allowed range [{f.min}, {f.max}]"
    return f"below the minimum {f.min}" if f.min is not None else f"above the maximum {f.max}"


def _check_rows(n: int, max_rows: int) -> None:
    if n == 0:
        raise ValidationError("the batch is empty: send at least one row")
    if n > max_rows:
        raise PayloadTooLarge(f"too many rows: {n} (the limit is {max_rows} per request)")


def _json_type(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _oip_data(f: Feature, tensor: Mapping[str, Any]) -> tuple[Any, int]:
    datatype, shape, data = tensor.get("datatype"), tensor.get("shape"), tensor.get("data")
    expected = "FP32 (or another numeric type)" if f.numeric else "BYTES"
    if not isinstance(datatype, str):
        raise ValidationError(f"input {f.name!r}: 'datatype' is required (expected {expected})")
    if (f.numeric and datatype not in NUMERIC_DATATYPES) or (not f.numeric and datatype != "BYTES"):
        raise ValidationError(
            f"input {f.name!r}: datatype {datatype!r} does not match the feature; expected {expected}"
        )
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise ValidationError(f"input {f.name!r}: 'shape' must be a list of non-negative integers")
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise ValidationError(f"input {f.name!r}: shape {shape} is not supported; use [rows] or [rows, 1]")
    if not isinstance(data, list):
        raise ValidationError(f"input {f.name!r}: 'data' must be a list")
    if data and isinstance(data[0], list):
        # OIP allows row-major nested data; [[x], [y]] for a [n, 1] tensor.
        if not all(isinstance(row, list) and len(row) == 1 for row in data):
            raise ValidationError(f"input {f.name!r}: nested 'data' must hold one value per row")
        data = [row[0] for row in data]
    if len(data) != shape[0]:
        raise ValidationError(f"input {f.name!r}: shape {shape} says {shape[0]} values but data has {len(data)}")
    return data, shape[0]


def _numeric_column(f: Feature, values: Any, where: str, _policy: str) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
        col = values.astype(np.float32, copy=False).reshape(-1, 1)
    else:
        values = list(values)
        for i, v in enumerate(values):
            # Type check first: numpy would silently turn "1.5" or True into a number.
            if type(v) not in _NUMBER_TYPES and v is not None:
                if isinstance(v, np.generic) and np.issubdtype(type(v), np.number):
                    continue
                raise ValidationError(f"{_at(where, i, f)} must be a number, got {_json_type(v)} {v!r:.40}")
        try:
            col = np.array([math.nan if v is None else v for v in values], dtype=np.float32).reshape(-1, 1)
        except OverflowError:
            raise ValidationError(f"{_at(where, 0, f)}: a value is out of float32 range") from None
    finite = np.isfinite(col)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        inf = bad[np.isinf(col[bad, 0])]
        if inf.size:
            raise ValidationError(f"{_at(where, int(inf[0]), f)} must be finite, got {col[inf[0], 0]}")
        if not f.allow_missing:
            raise ValidationError(f"{_at(where, int(bad[0]), f)} is required (null/NaN not allowed)")
    if f.min is not None or f.max is not None:
        lo = -np.inf if f.min is None else f.min
        hi = np.inf if f.max is None else f.max
        out = np.flatnonzero((col[:, 0] < lo) | (col[:, 0] > hi))
        if out.size:
            row = int(out[0])
            raise ValidationError(f"{_at(where, row, f)} = {float(col[row, 0]):g} is {_outside(f)}")
    return col


def _categorical_column(f: Feature, values: Any, where: str, policy: str) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.dtype.kind in "OUS":
        values = values.tolist()
    out = []
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            if not f.allow_missing:
                raise ValidationError(f"{_at(where, i, f)} is required (null not allowed)")
            out.append(MISSING_CATEGORY)
        elif isinstance(v, str):
            out.append(v)
        else:
            raise ValidationError(f"{_at(where, i, f)} must be a string category, got {_json_type(v)} {v!r:.40}")
    allowed = f.values if f.values is not None else (f.categories if policy == "error" else None)
    if allowed is not None:
        allowed_set = set(allowed) | ({MISSING_CATEGORY} if f.allow_missing else set())
        for i, v in enumerate(out):
            if v not in allowed_set:
                raise ValidationError(f"{_at(where, i, f)} = {v!r:.40} is not one of {', '.join(map(repr, allowed))}")
    return np.array(out, dtype=object).reshape(-1, 1)
