"""Tensor-input models: the declared input tensor, request parsing, and the summary features drift watches.

A bring-your-own model may take one N-dimensional tensor (an image batch ``[-1, 3, 224, 224]``, a sequence
of embeddings...) instead of named features. Requests carry it as an OIP tensor (``data`` flat or nested,
row-major) or, on ``:predict``, as ``instances`` (one nested array per row). Validation names the path of
the first bad element (``instances[3][1][0][2]: expected a number, got a string "x"``).

Captured records and the drift baseline never hold whole tensors (a 224x224 image is 150,528 numbers):
they hold the declared *summary features* of each row (its mean, standard deviation, minimum, maximum,
over the whole tensor or per channel), which :meth:`TensorInput.summarize` computes, the one definition
used at registration (baseline) and at serving (capture), so drift compares like with like.

This module imports only numpy: it sits on the Lambda hot path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

from modeldeck.errors import ValidationError
from modeldeck.schema import Feature, FeatureSchema, _check_rows, _json_type

# OIP datatypes (the KServe v2 protocol's "Tensor Data Types") and the numpy type a model receives.
DTYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": object,
}
# onnxruntime's type names for the same element types.
ONNX_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}
SUMMARY_STATS = ("mean", "std", "min", "max")
_FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64"})


def _allowed_types(datatype: str) -> frozenset[type]:
    """The JSON element types ``datatype`` accepts (bool is not a number, and a number is not a bool)."""
    if datatype == "BYTES":
        return frozenset({str})
    if datatype == "BOOL":
        return frozenset({bool})
    return frozenset({int, float}) if datatype in _FLOAT_TYPES else frozenset({int})


def _expected(datatype: str) -> str:
    if datatype == "BYTES":
        return "a string"
    if datatype == "BOOL":
        return "true or false"
    return "a number" if datatype in _FLOAT_TYPES else "an integer"


@dataclass(frozen=True)
class TensorInput:
    """A model's one input tensor. ``shape[0]`` is the batch (always -1); -1 elsewhere means any size.

    ``summary`` names the per-row statistics captured and watched for drift; ``per_channel`` computes them
    for each index of axis 1 (the channel of an NCHW image) instead of over the whole row.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    summary: tuple[str, ...] = SUMMARY_STATS
    per_channel: bool = False

    @property
    def row_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    @property
    def dtype(self) -> Any:
        return DTYPES[self.datatype]

    def summary_names(self) -> list[str]:
        """Feature names of the summaries: ``pixels_mean``, or per channel ``pixels_c0_mean``..."""
        if not self.per_channel:
            return [f"{self.name}_{s}" for s in self.summary]
        return [f"{self.name}_c{c}_{s}" for c in range(self.shape[1]) for s in self.summary]

    def summary_schema(self) -> FeatureSchema:
        """The summaries as numeric features: what capture records and the baseline profiles."""
        return FeatureSchema(tuple(Feature(n, "numeric") for n in self.summary_names()))

    def summarize(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Per-row summary features of a validated batch, as float32 columns of shape (n, 1)."""
        if not self.summary:
            return {}
        n = batch.shape[0]
        rows = batch.astype(np.float64, copy=False)
        groups = rows.reshape(n, self.shape[1], -1) if self.per_channel else rows.reshape(n, 1, -1)
        stats = {
            "mean": lambda a: a.mean(axis=2),
            "std": lambda a: a.std(axis=2),
            "min": lambda a: a.min(axis=2),
            "max": lambda a: a.max(axis=2),
        }
        computed = {s: stats[s](groups) for s in self.summary}
        names = iter(self.summary_names())
        out: dict[str, np.ndarray] = {}
        for c in range(groups.shape[1]):
            for s in self.summary:
                out[next(names)] = computed[s][:, c].astype(np.float32).reshape(-1, 1)
        return out

    def summary_record(self, batch: np.ndarray) -> dict[str, list[float]]:
        """The summary features of a batch as a capture record's ``features`` (never the tensor itself)."""
        return {name: column.ravel().tolist() for name, column in self.summarize(batch).items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "datatype": self.datatype,
            "shape": list(self.shape),
            "summary": list(self.summary),
            "per_channel": self.per_channel,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorInput:
        return cls(
            data["name"],
            data["datatype"],
            tuple(int(d) for d in data["shape"]),
            tuple(data.get("summary", SUMMARY_STATS)),
            bool(data.get("per_channel", False)),
        )

    # --- requests ------------------------------------------------------------------------------------

    def from_instances(self, instances: Any, max_rows: int) -> np.ndarray:
        """``:predict``'s ``instances``: one nested array per row, each of the declared row shape."""
        if not isinstance(instances, list):
            raise ValidationError(f"'instances' must be a list of arrays of shape {list(self.row_shape)}, one per row")
        _check_rows(len(instances), max_rows)
        return self._array(instances, None, "instances")

    def from_oip(self, inputs: Any, max_rows: int) -> np.ndarray:
        """OIP ``infer``'s ``inputs``: exactly the one declared tensor, ``data`` flat or nested."""
        if not isinstance(inputs, list) or not inputs:
            raise ValidationError("'inputs' must be a non-empty list of tensors {name, shape, datatype, data}")
        for i, tensor in enumerate(inputs):
            if not isinstance(tensor, dict):
                raise ValidationError(f"inputs[{i}] must be an object {{name, shape, datatype, data}}")
        names = [t.get("name") for t in inputs]
        unknown = [n for n in names if n != self.name]
        if unknown:
            raise ValidationError(f"unknown input(s) {', '.join(map(repr, unknown))}; expected {self.name!r}")
        if len(inputs) > 1:
            raise ValidationError(f"input {self.name!r} is given more than once")
        tensor = inputs[0]
        where = f"inputs[{self.name}]"
        datatype, shape, data = tensor.get("datatype"), tensor.get("shape"), tensor.get("data")
        if datatype != self.datatype:
            raise ValidationError(f"{where}.datatype: expected {self.datatype!r}, got {datatype!r}")
        if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
            raise ValidationError(f"{where}.shape must be a list of non-negative integers")
        self._check_shape(shape, f"{where}.shape")
        _check_rows(shape[0], max_rows)
        if not isinstance(data, list):
            raise ValidationError(f"{where}.data must be a list")
        size = math.prod(shape)
        if data and not isinstance(data[0], list):
            # Flat row-major data, as OIP allows: one value per element of the declared shape.
            if len(data) != size:
                raise ValidationError(f"{where}.data has {len(data)} values; shape {shape} needs {size}")
            return self._array(data, (size,), f"{where}.data").reshape(shape)
        return self._array(data, tuple(shape), f"{where}.data")

    def _check_shape(self, shape: Sequence[int], where: str) -> None:
        if len(shape) != len(self.shape):
            raise ValidationError(f"{where}: {list(shape)} has rank {len(shape)}; expected {_shape_text(self.shape)}")
        for axis, (got, want) in enumerate(zip(shape, self.shape, strict=True)):
            if want >= 0 and got != want:
                raise ValidationError(
                    f"{where}: dimension {axis} is {got}; expected {want} (shape {_shape_text(self.shape)})"
                )

    def _array(self, data: list[Any], shape: tuple[int, ...] | None, where: str) -> np.ndarray:
        """A validated array; ``shape`` None means rows of the declared row shape (``:predict``)."""
        allowed = _allowed_types(self.datatype)
        fast = self._plainly_valid(data, shape, allowed)
        if fast is not None:
            return fast
        try:
            obj = np.array(data, dtype=object)
        except ValueError:
            obj = None
        expected_rank = len(shape) if shape is not None else len(self.shape)
        if obj is None or obj.ndim != expected_rank or (shape is not None and obj.shape != shape):
            _locate_ragged(data, shape, self.row_shape if shape is None else None, where)
            raise ValidationError(f"{where}: not a regular array of shape {_shape_text(shape or self.shape)}")
        if shape is None:
            self._check_shape(obj.shape, where + " shape")
        flat = obj.reshape(-1)
        # The type check runs in C (map(type, ...) into a set); the Python scan only locates a bad element.
        if not set(map(type, flat)) <= allowed:
            index = next(i for i, v in enumerate(flat) if type(v) not in allowed)
            path = "".join(f"[{int(i)}]" for i in np.unravel_index(index, obj.shape))
            value = flat[index]
            raise ValidationError(
                f"{where}{path}: expected {_expected(self.datatype)}, got {_json_type(value)} {value!r:.40}"
            )
        if self.datatype == "BYTES":
            return obj
        try:
            array = np.array(flat.tolist(), dtype=self.dtype).reshape(obj.shape)
        except OverflowError:
            raise ValidationError(f"{where}: a value is out of the range of {self.datatype}") from None
        if self.datatype in _FLOAT_TYPES and not np.isfinite(array).all():
            index = int(np.flatnonzero(~np.isfinite(array.reshape(-1)))[0])
            path = "".join(f"[{int(i)}]" for i in np.unravel_index(index, obj.shape))
            raise ValidationError(f"{where}{path}: must be a finite number within {self.datatype}'s range")
        return array

    def _plainly_valid(
        self, data: list[Any], shape: tuple[int, ...] | None, allowed: frozenset[type]
    ) -> np.ndarray | None:
        """The array, when ``data`` is plainly valid, or None (then :meth:`_array` finds and names the problem).

        Every check runs in C (``map`` into sets, ``chain.from_iterable``): a Python loop over a 150,528-value
        image costs more than the model.
        """
        expected = shape if shape is not None else (len(data), *self.row_shape)
        dims, items = [len(data)], data
        for _ in expected[1:]:
            if set(map(type, items)) != {list}:
                return None
            lengths = set(map(len, items))
            if len(lengths) != 1:
                return None
            dims.append(lengths.pop())
            items = list(chain.from_iterable(items))
        if any(want >= 0 and got != want for got, want in zip(dims, expected, strict=True)):
            return None
        if not items or not set(map(type, items)) <= allowed:
            return None
        if self.datatype == "BYTES":
            array = np.empty(len(items), dtype=object)
            array[:] = items
            return array.reshape(dims)
        try:
            array = np.array(items, dtype=self.dtype).reshape(dims)
        except OverflowError:
            return None
        if self.datatype in _FLOAT_TYPES and not np.isfinite(array).all():
            return None
        return array


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join("N" if i == 0 and d < 0 else ("any" if d < 0 else str(d)) for i, d in enumerate(shape)) + "]"


def _locate_ragged(data: Any, shape: tuple[int, ...] | None, row_shape: tuple[int, ...] | None, where: str) -> None:
    """Raise naming the first element whose nesting does not match the expected shape."""
    expected = shape if shape is not None else (len(data), *(row_shape or ()))

    def walk(value: Any, axis: int, path: str) -> None:
        if axis == len(expected):
            if isinstance(value, list):
                raise ValidationError(f"{where}{path}: expected {'a value' if path else 'values'}, got a list")
            return
        if not isinstance(value, list):
            raise ValidationError(f"{where}{path}: expected a list of {_dim(expected[axis])}, got {_json_type(value)}")
        if expected[axis] >= 0 and len(value) != expected[axis]:
            raise ValidationError(f"{where}{path}: has {len(value)} elements; expected {expected[axis]}")
        first = None
        for i, item in enumerate(value):
            walk(item, axis + 1, f"{path}[{i}]")
            size = len(item) if isinstance(item, list) else None
            if first is None:
                first = size
            elif size != first:
                raise ValidationError(f"{where}{path}[{i}]: has {size} elements; {where}{path}[0] has {first}")

    walk(data, 0, "")


def _dim(n: int) -> str:
    return "any length" if n < 0 else f"{n} elements"
