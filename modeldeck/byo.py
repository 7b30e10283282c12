"""Bring your own ONNX: register a model trained anywhere (PyTorch, Keras, XGBoost...) from its ONNX file and
a spec declaring how to feed it and how to read it (README, "Bring your own model").

:func:`register_onnx` refuses, writing nothing, anything that would not serve: a declaration that does not
match the graph (input names, ranks, shapes, datatypes, outputs, class count), a holdout the graph does not
reproduce within the tolerance, or an artifact the inference function cannot hold (:func:`check_fits_lambda`).
It then profiles the reference dataset for the drift baseline and registers through
:class:`modeldeck.registry.Registry` (card written last).

Runs on the operator's machine (the ``modeldeck register`` CLI): it imports onnx and reads CSV/Parquet with
pandas, so nothing here is imported by the inference path.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

import modeldeck
from modeldeck.card import ModelCard, TensorSpec
from modeldeck.errors import ModeldeckError, ParityError, SpecError, ValidationError
from modeldeck.metrics import evaluate
from modeldeck.onnxmodel import OnnxModel
from modeldeck.registry import BASELINE, HOLDOUT, Registry, sha256
from modeldeck.schema import FeatureSchema
from modeldeck.spec import (
    CLASSIFICATION_METRICS,
    NAME_RE,
    REGRESSION_METRICS,
    ModelSpec,
    _Checker,
    _features,
    load_spec,
    parse_spec,
)
from modeldeck.stats import build_baseline
from modeldeck.tensor import DTYPES, ONNX_TYPES, SUMMARY_STATS, TensorInput

KIND = "onnx"
POSTPROCESS = ("none", "softmax", "sigmoid")
DEFAULT_PARITY_TOLERANCE = 1e-4
HOLDOUT_MAX_ROWS = 5000
HOLDOUT_MAX_VALUES = 500_000

# --- Lambda limits -------------------------------------------------------------------------------------------
# AWS Lambda quotas (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html): function memory
# 128 MB to 10,240 MB; ephemeral storage (/tmp) 512 MB to 10,240 MB; deployment package 250 MB unzipped. The
# model is not in the package: ModelStore (modeldeck.serving) reads it from S3 into memory (never /tmp) and
# hands the bytes to onnxruntime, which builds its own copy of the graph and its weights.
LAMBDA_MAX_MEMORY_MB = 10_240
# Measured (README "Bring your own model"): loading a 192 MB model from bytes peaks at 3.0x its size above the
# process's baseline (the bytes, the parsed protobuf, the session's initializers), settling at 2x.
LOAD_PEAK_FACTOR = 3.0
# The inference runtime before any model: Python, numpy, onnxruntime, boto3 and the handler's modules.
RUNTIME_RESERVE_MB = 160
# Protocol Buffers cannot serialize a message of 2 GiB or more: the largest single-file ONNX model.
PROTOBUF_MAX_BYTES = 2**31 - 1


@dataclass(frozen=True)
class ByoSpec:
    """A validated bring-your-own spec. Exactly one of ``schema`` (tabular) and ``tensor`` is set."""

    name: str
    task: str
    output: dict[str, Any]
    classes: tuple[Any, ...] | None
    reference: str
    parity: dict[str, Any]
    primary_metric: str
    tolerance: float
    schema: FeatureSchema | None = None
    tensor: TensorInput | None = None
    packed_input: str | None = None
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.raw, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    @property
    def served_schema(self) -> FeatureSchema:
        """What capture records and the baseline profiles: the features, or a tensor's summary features."""
        if self.tensor is not None:
            return self.tensor.summary_schema()
        assert self.schema is not None
        return self.schema


def is_byo(raw: dict[str, Any]) -> bool:
    """Whether a parsed spec table declares a bring-your-own model (``[model] kind = "onnx"``)."""
    model = raw.get("model")
    return isinstance(model, dict) and model.get("kind") == KIND


def load_byo_spec(path: str | Path) -> ByoSpec:
    """Read and validate a bring-your-own spec file. Raises SpecError naming every bad field."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"model spec not found: {path}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SpecError(f"cannot read model spec {path}: {exc}") from None
    return parse_byo_spec(raw, origin=str(path))


def load_any_spec(path: str | Path) -> ModelSpec | ByoSpec:
    """A spec file of either kind: a model modeldeck trains (:func:`modeldeck.spec.load_spec`) or brings."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return load_spec(path)  # which names the problem
    return parse_any_spec(raw, origin=str(path))


def parse_any_spec(raw: dict[str, Any], origin: str = "<spec>") -> ModelSpec | ByoSpec:
    """An already-parsed spec table of either kind (``[model] kind = "onnx"`` makes it bring-your-own)."""
    return parse_byo_spec(raw, origin) if is_byo(raw) else parse_spec(raw, origin)


def parse_byo_spec(raw: dict[str, Any], origin: str = "<spec>") -> ByoSpec:
    """Validate an already-parsed bring-your-own spec table (every problem at once, by field path)."""
    c = _Checker(origin)
    c.unknown(
        raw,
        "",
        {"name", "description", "task", "model", "features", "input", "output", "reference", "parity", "training"},
    )
    name = c.take(raw, "", "name", str)
    if name is not None and not NAME_RE.match(name):
        c.fail("name", f"must be 2-41 lowercase letters, digits or '-', starting with a letter; got {name!r}")
    description = c.take(raw, "", "description", str, "") or ""
    task = c.take(raw, "", "task", str)
    if task is not None and task not in ("classification", "regression"):
        c.fail("task", f"must be 'classification' or 'regression', got {task!r}")
    model = c.take(raw, "", "model", dict) or {}
    c.unknown(model, "model", {"kind", "packed_input"})
    kind = c.take(model, "model", "kind", str)
    if kind is not None and kind != KIND:
        c.fail("model.kind", f"must be {KIND!r} for a bring-your-own model, got {kind!r}")
    packed = c.take(model, "model", "packed_input", str, None)

    schema = tensor = None
    if "features" in raw and "input" in raw:
        c.fail("input", "declare either [[features]] (tabular) or [input] (one tensor), not both")
    elif "input" in raw:
        tensor = _tensor_input(c, c.take(raw, "", "input", dict) or {})
        if packed is not None:
            c.fail("model.packed_input", "applies to [[features]] (tabular) models only")
    elif "features" in raw:
        features = _features(c, c.take(raw, "", "features", list) or [])
        names = [f.name for f in features]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            c.fail("features", f"feature {dup!r} is listed more than once")
        if packed is not None and any(not f.numeric for f in features):
            c.fail("model.packed_input", "packs numeric features into one tensor; every feature must be numeric")
        schema = FeatureSchema(tuple(features))
    else:
        c.fail("input", "declare the inputs: [[features]] (tabular) or [input] (one tensor)")

    output, classes = _output(c, c.take(raw, "", "output", dict) or {}, task)
    reference = c.take(c.take(raw, "", "reference", dict) or {}, "reference", "path", str)
    tensor_model = "input" in raw  # even when [input] itself is invalid
    if reference is not None:
        _check_file(c, "reference.path", reference, tensor_model)
    parity = _parity(c, raw.get("parity", ...), tensor_model)
    training = c.take(raw, "", "training", dict, {}) or {}
    c.unknown(training, "training", {"primary_metric", "tolerance"})
    metrics = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    metric = c.take(training, "training", "primary_metric", str, metrics[0] if task == "classification" else "r2")
    if metric is not None and metric not in metrics:
        c.fail("training.primary_metric", f"must be one of {', '.join(metrics)} for {task}, got {metric!r}")
    tolerance = c.take(training, "training", "tolerance", (int, float), 0.01)
    if tolerance is not None and not 0 <= tolerance < 1:
        c.fail("training.tolerance", f"must be in [0, 1), got {tolerance}")
    c.raise_if_any()
    assert name is not None and task is not None and reference is not None
    return ByoSpec(
        name=name,
        task=task,
        output=output,
        classes=classes,
        reference=reference,
        parity=parity,
        primary_metric=metric,
        tolerance=float(tolerance),
        schema=schema,
        tensor=tensor,
        packed_input=packed,
        description=description,
        raw=raw,
    )


def _tensor_input(c: _Checker, table: dict[str, Any]) -> TensorInput | None:
    c.unknown(table, "input", {"name", "datatype", "shape", "summary", "per_channel"})
    name = c.take(table, "input", "name", str)
    datatype = c.take(table, "input", "datatype", str)
    shape = c.take(table, "input", "shape", list)
    summary = c.take(table, "input", "summary", list, list(SUMMARY_STATS))
    per_channel = c.take(table, "input", "per_channel", bool, False)
    if datatype is not None and datatype not in DTYPES:
        c.fail("input.datatype", f"must be one of {', '.join(DTYPES)}, got {datatype!r}")
    if shape is not None:
        if not shape or not all(type(d) is int and (d == -1 or d > 0) for d in shape):
            c.fail("input.shape", f"must be a list of positive sizes or -1 (any), got {shape!r}")
            shape = None
        elif shape[0] != -1:
            c.fail("input.shape", f"the first dimension is the batch and must be -1, got {shape[0]}")
            shape = None
    if summary is not None and not all(s in SUMMARY_STATS for s in summary):
        c.fail("input.summary", f"must list statistics among {', '.join(SUMMARY_STATS)}, got {summary!r}")
        summary = None
    if summary and datatype == "BYTES":
        c.fail("input.summary", "a BYTES tensor has no numeric summary; set summary = [] (drift then watches outputs)")
    if per_channel and shape is not None and (len(shape) < 2 or shape[1] < 1):
        c.fail("input.per_channel", "needs a fixed size for dimension 1 (the channels)")
    if name is None or datatype not in DTYPES or shape is None or summary is None:
        return None
    return TensorInput(name, datatype, tuple(shape), tuple(summary), bool(per_channel))


def _output(c: _Checker, table: dict[str, Any], task: str | None) -> tuple[dict[str, Any], tuple[Any, ...] | None]:
    c.unknown(table, "output", {"probabilities", "postprocess", "classes", "threshold", "label", "value"})
    if task == "regression":
        for key in ("probabilities", "postprocess", "classes", "threshold", "label"):
            if key in table:
                c.fail(f"output.{key}", "applies to classification only")
        value = c.take(table, "output", "value", str)
        return {"value": value}, None
    if "value" in table:
        c.fail("output.value", "applies to regression only; a classifier declares output.probabilities")
    probabilities = c.take(table, "output", "probabilities", str)
    postprocess = c.take(table, "output", "postprocess", str, "none")
    classes = c.take(table, "output", "classes", list, None)
    if classes is None and "classes" not in table:
        c.fail(
            "output.classes", "is required for a classifier: the class names, in the order of its probability columns"
        )
    threshold = c.take(table, "output", "threshold", (int, float), 0.5)
    label = c.take(table, "output", "label", str, None)
    if postprocess is not None and postprocess not in POSTPROCESS:
        c.fail("output.postprocess", f"must be one of {', '.join(POSTPROCESS)}, got {postprocess!r}")
    if classes is not None:
        if len(classes) < 2 or not (all(type(k) is str for k in classes) or all(type(k) is int for k in classes)):
            c.fail("output.classes", "must list at least two class names, all strings or all integers")
            classes = None
        elif len(set(classes)) != len(classes):
            c.fail("output.classes", "lists a class more than once")
            classes = None
    if threshold is not None and not 0 < threshold < 1:
        c.fail("output.threshold", f"must be strictly between 0 and 1, got {threshold}")
    if threshold != 0.5 and classes is not None and len(classes) != 2:
        c.fail("output.threshold", "applies to binary classifiers (two classes) only")
    reading = {
        "probabilities": probabilities,
        "postprocess": postprocess,
        "threshold": float(threshold if threshold is not None else 0.5),
        "label": label,
    }
    return reading, None if classes is None else tuple(classes)


def _parity(c: _Checker, value: Any, tensor: bool) -> dict[str, Any]:
    if value is ...:
        c.fail("parity", 'is required: a [parity] table naming a holdout with expected outputs, or parity = "none"')
        return {}
    if value == "none":
        return {"mode": "none"}
    if not isinstance(value, dict):
        c.fail("parity", f'must be a table {{holdout = ...}} or "none", got {value!r}')
        return {}
    c.unknown(value, "parity", {"holdout", "tolerance", "target"})
    holdout = c.take(value, "parity", "holdout", str)
    tolerance = c.take(value, "parity", "tolerance", (int, float), DEFAULT_PARITY_TOLERANCE)
    target = c.take(value, "parity", "target", str, "target")
    if holdout is not None:
        _check_file(c, "parity.holdout", holdout, tensor, npz_only=True)
    if tolerance is not None and not 0 <= tolerance < 1:
        c.fail("parity.tolerance", f"must be in [0, 1), got {tolerance}")
    return {"mode": "holdout", "holdout": holdout, "tolerance": float(tolerance or 0.0), "target": target}


def _check_file(c: _Checker, where: str, path: str, tensor: bool, npz_only: bool = False) -> None:
    allowed = ((".npz",) if npz_only else (".npy", ".npz")) if tensor else (".csv", ".parquet")
    if not path.endswith(allowed):
        kind = "a tensor model" if tensor else "a tabular model"
        c.fail(where, f"must be a {' or '.join(allowed)} file for {kind}, got {path!r}")


# --- Lambda fit ----------------------------------------------------------------------------------------------


def check_fits_lambda(artifact_bytes: int, external_bytes: int, memory_mb: int) -> None:
    """Refuse a model the inference function cannot load, naming the limit it breaks.

    Limits from the AWS "Lambda quotas" page (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html):
    function memory is at most 10,240 MB, and the inference function has ``memory_mb`` (cdk.json
    ``lambda.memory_mb``). ``ModelStore`` downloads the artifact into memory (not /tmp, so the 512 MB default
    ephemeral storage is not the limit) and onnxruntime copies it while loading: loading needs
    ``RUNTIME_RESERVE_MB + LOAD_PEAK_FACTOR x size``. ``external_bytes`` is the size the graph declares for
    weights stored outside the file (ONNX external data), which the registry's one ``model.onnx`` cannot carry.
    """
    total = artifact_bytes + external_bytes
    need_mb = RUNTIME_RESERVE_MB + LOAD_PEAK_FACTOR * total / 2**20
    size = f"{total / 2**20:,.1f} MB"
    if need_mb > LAMBDA_MAX_MEMORY_MB:
        raise ModeldeckError(
            f"the model does not fit AWS Lambda: {size} of weights need about {need_mb:,.0f} MB to load "
            f"({LOAD_PEAK_FACTOR:g}x the model plus {RUNTIME_RESERVE_MB} MB of runtime), more than Lambda's maximum "
            f"function memory of {LAMBDA_MAX_MEMORY_MB:,} MB (Lambda quotas). Nothing was registered."
        )
    if need_mb > memory_mb:
        raise ModeldeckError(
            f"the model does not fit the inference function: {size} of weights need about {need_mb:,.0f} MB to "
            f"load ({LOAD_PEAK_FACTOR:g}x the model plus {RUNTIME_RESERVE_MB} MB of runtime), more than its "
            f"configured memory of {memory_mb:,} MB (cdk.json lambda.memory_mb; Lambda allows up to "
            f"{LAMBDA_MAX_MEMORY_MB:,} MB). Raise it and redeploy, or shrink the model. Nothing was registered."
        )
    if external_bytes:
        raise ModeldeckError(
            f"the model keeps {external_bytes / 2**20:,.1f} MB of weights in external data files; the registry "
            "stores one self-contained model.onnx: save the model with its weights inside "
            "(onnx.save(model, path, save_as_external_data=False)). Nothing was registered."
        )
    if artifact_bytes > PROTOBUF_MAX_BYTES:
        raise ModeldeckError("the model file exceeds 2 GiB, the Protocol Buffers limit of a single ONNX file")


def external_data_bytes(model: Any) -> int:
    """The bytes a graph declares for weights stored outside its file (ONNX external data)."""
    from onnx import TensorProto

    total = 0
    for tensor in model.graph.initializer:
        if tensor.data_location == TensorProto.EXTERNAL:
            entries = {e.key: e.value for e in tensor.external_data}
            if "length" in entries:
                total += int(entries["length"])
            else:
                total += int(np.prod(tensor.dims, dtype=np.int64)) * _itemsize(tensor.data_type)
    return total


def _itemsize(onnx_type: int) -> int:
    from onnx import helper

    return int(np.dtype(helper.tensor_dtype_to_np_dtype(onnx_type)).itemsize)


# --- Checking the declaration against the graph ---------------------------------------------------------------


def _dims(shape: Any) -> list[int]:
    """A graph's shape with symbolic or unknown dimensions as -1."""
    return [d if isinstance(d, int) and d >= 0 else -1 for d in shape]


def check_declaration(spec: ByoSpec, session: Any) -> list[str]:
    """Every mismatch between the spec and the graph, each naming the spec field and what the graph has."""
    problems: list[str] = []
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    have_in = ", ".join(f"{n} {ONNX_TYPES.get(i.type, i.type)}{_dims(i.shape)}" for n, i in inputs.items())
    if spec.tensor is not None:
        t = spec.tensor
        if len(inputs) != 1:
            problems.append(f"input: the graph takes {len(inputs)} inputs ({have_in}); a tensor model takes one")
        graph = inputs.get(t.name)
        if graph is None:
            problems.append(f"input.name: the graph has no input {t.name!r} (it has {have_in})")
        else:
            problems.extend(_check_tensor("input", t.datatype, list(t.shape), graph))
    elif spec.packed_input is not None:
        assert spec.schema is not None
        graph = inputs.get(spec.packed_input)
        if graph is None:
            problems.append(f"model.packed_input: the graph has no input {spec.packed_input!r} (it has {have_in})")
        else:
            datatype = ONNX_TYPES.get(graph.type, graph.type)
            if datatype not in ("FP32", "FP64"):
                problems.append(f"model.packed_input: {spec.packed_input!r} is {datatype}; packing needs FP32 or FP64")
            else:
                problems.extend(_check_tensor("model.packed_input", datatype, [-1, len(spec.schema.features)], graph))
        if len(inputs) != 1:
            problems.append(f"model.packed_input: the graph takes {len(inputs)} inputs ({have_in}); packing feeds one")
    else:
        assert spec.schema is not None
        for i, f in enumerate(spec.schema.features):
            graph = inputs.get(f.name)
            if graph is None:
                problems.append(f"features[{i}].name: the graph has no input {f.name!r} (it has {have_in})")
            else:
                problems.extend(_check_tensor(f"features[{i}]", f.datatype, [-1, 1], graph))
        extra = sorted(set(inputs) - set(spec.schema.names))
        if extra:
            problems.append(f"features: the graph also takes {', '.join(map(repr, extra))}, which no feature declares")
    have_out = ", ".join(outputs)
    reading = spec.output
    if spec.task == "regression":
        if reading["value"] not in outputs:
            problems.append(f"output.value: the graph has no output {reading['value']!r} (it has {have_out})")
        return problems
    name = reading["probabilities"]
    if name not in outputs:
        problems.append(f"output.probabilities: the graph has no output {name!r} (it has {have_out})")
    else:
        dims = _dims(outputs[name].shape)
        width = dims[-1] if len(dims) >= 2 else 1
        if spec.classes is not None and width >= 0:
            problems.extend(_class_count(name, width, len(spec.classes), reading["postprocess"]))
    label = reading.get("label")
    if label is not None and label not in outputs:
        problems.append(f"output.label: the graph has no output {label!r} (it has {have_out})")
    return problems


def _class_count(name: str, width: int, classes: int, postprocess: str) -> list[str]:
    if width == classes or (width == 1 and classes == 2 and postprocess != "softmax"):
        return []
    return [
        f"output.classes: {classes} classes declared but output {name!r} has {width} columns"
        + (" (softmax over one column is always 1)" if width == 1 and classes == 2 else "")
    ]


def _check_tensor(where: str, datatype: str, declared: list[int], graph: Any) -> list[str]:
    problems = []
    have = ONNX_TYPES.get(graph.type, graph.type)
    if have != datatype:
        problems.append(f"{where}.datatype: declared {datatype} but the graph's input {graph.name!r} is {have}")
    dims = _dims(graph.shape)
    if len(dims) != len(declared):
        problems.append(f"{where}.shape: declared {declared} (rank {len(declared)}) but the graph's input is {dims}")
        return problems
    if dims[0] >= 0:
        problems.append(f"{where}.shape: the graph fixes the batch dimension at {dims[0]}; it must be dynamic")
    for axis in range(1, len(dims)):
        if dims[axis] >= 0 and declared[axis] != dims[axis]:
            problems.append(
                f"{where}.shape: dimension {axis} declared {declared[axis]} but the graph's input has {dims[axis]}"
            )
    return problems


# --- Data files --------------------------------------------------------------------------------------------


def _read_table(path: Path) -> Any:
    import pandas as pd

    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise SpecError(f"cannot read {path}: {exc}") from None


def _read_arrays(path: Path, default: str) -> dict[str, np.ndarray]:
    try:
        if path.suffix == ".npy":
            return {default: np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}
    except (OSError, ValueError) as exc:
        raise SpecError(f"cannot read {path}: {exc}") from None


def _inputs_from_arrays(spec: ByoSpec, arrays: dict[str, np.ndarray], origin: str) -> dict[str, np.ndarray]:
    """A tensor file's input array, checked like a request (shape and datatype)."""
    t = spec.tensor
    assert t is not None
    if t.name not in arrays:
        raise SpecError(f"{origin}: no array named {t.name!r} (it has {', '.join(arrays) or 'none'})")
    batch = arrays[t.name]
    if batch.ndim != len(t.shape) or any(w >= 0 and g != w for g, w in zip(batch.shape, t.shape, strict=True)):
        raise SpecError(f"{origin}: {t.name!r} has shape {list(batch.shape)}; the spec declares {list(t.shape)}")
    dtype = np.dtype(t.dtype)
    if t.datatype != "BYTES" and not np.can_cast(batch.dtype, dtype, casting="same_kind"):
        raise SpecError(f"{origin}: {t.name!r} is {batch.dtype}; the spec declares {t.datatype}")
    if batch.shape[0] == 0:
        raise SpecError(f"{origin}: {t.name!r} has no rows")
    return {t.name: batch.astype(dtype, copy=False)}


def _load_inputs(spec: ByoSpec, path: Path) -> tuple[dict[str, np.ndarray], Any]:
    """(model input columns, the raw file contents) of a reference or holdout file."""
    if spec.tensor is not None:
        arrays = _read_arrays(path, spec.tensor.name)
        return _inputs_from_arrays(spec, arrays, str(path)), arrays
    assert spec.schema is not None
    frame = _read_table(path)
    try:
        columns = spec.schema.columns_from_arrays(
            {c: frame[c].to_numpy() for c in frame.columns}, where=f"{path}: row {{row}}, column {{feature!r}}"
        )
    except ValidationError as exc:
        raise SpecError(f"{path}: {exc}") from None
    if not len(frame):
        raise SpecError(f"{path}: no rows")
    return columns, frame


def _expected_outputs(spec: ByoSpec, raw: Any, names: list[str], rows: int) -> dict[str, np.ndarray]:
    """Expected outputs in a holdout: arrays named as outputs (.npz), or columns ``name`` / ``name[j]``."""
    found: dict[str, np.ndarray] = {}
    for name in names:
        if spec.tensor is not None:
            if name in raw:
                found[name] = np.asarray(raw[name])
            continue
        if name in raw.columns:
            found[name] = raw[name].to_numpy().reshape(rows, 1)
        else:
            cols = [c for c in raw.columns if c.startswith(f"{name}[") and c.endswith("]")]
            if cols:
                cols.sort(key=lambda c: int(c[len(name) + 1 : -1]))
                found[name] = raw[cols].to_numpy()
    return found


# --- Registering -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Provenance:
    sha256: str
    producer_name: str
    producer_version: str
    opset: dict[str, int]
    ir_version: int


def provenance(model: Any, data: bytes) -> Provenance:
    """Where an artifact came from: its SHA-256, the producer it names, and the opsets it imports."""
    opset = {imp.domain or "ai.onnx": int(imp.version) for imp in model.opset_import}
    return Provenance(sha256(data), model.producer_name, model.producer_version, opset, int(model.ir_version))


def register_onnx(
    registry: Registry, name: str, onnx_path: str | Path, spec_path: str | Path, *, memory_mb: int
) -> tuple[ModelCard, bool]:
    """Check, parity-test, profile and register a bring-your-own ONNX model. Returns (card, created).

    Raises (SpecError, ParityError or ModeldeckError, each naming the problem) before anything is written.
    """
    spec_path = Path(spec_path)
    spec = load_byo_spec(spec_path)
    if spec.name != name:
        raise SpecError(f"{spec_path} declares name {spec.name!r}, not {name!r}; nothing was registered")
    try:
        data = Path(onnx_path).read_bytes()
    except OSError as exc:
        raise ModeldeckError(f"cannot read {onnx_path}: {exc}") from None
    return register_model(registry, spec, data, base_dir=spec_path.parent, memory_mb=memory_mb)


def register_model(
    registry: Registry, spec: ByoSpec, data: bytes, *, base_dir: Path, memory_mb: int
) -> tuple[ModelCard, bool]:
    """:func:`register_onnx` on a parsed spec and the artifact's bytes (files relative to ``base_dir``)."""
    import onnx

    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModeldeckError(f"not an ONNX model: {str(exc)[:200]}; nothing was registered") from None
    check_fits_lambda(len(data), external_data_bytes(model), memory_mb)
    prov = provenance(model, data)
    del model
    card = _draft_card(spec, data, prov)
    try:
        served = OnnxModel(card, data)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModeldeckError(
            f"onnxruntime {metadata.version('onnxruntime')} cannot load the model: {str(exc).splitlines()[0][:300]}. "
            "Nothing was registered."
        ) from None
    problems = check_declaration(spec, served.session)
    if problems:
        raise SpecError("the spec does not match the ONNX graph; nothing was registered:\n  " + "\n  ".join(problems))
    card = _with_outputs(card, served.session)
    served = OnnxModel(card, data)

    holdout_file: dict[str, Any] | None = None
    if spec.parity["mode"] == "holdout":
        parity, metrics, holdout_file = _parity_gate(spec, served, base_dir / spec.parity["holdout"])
    else:
        parity, metrics = {"mode": "none"}, {}

    ref_path = base_dir / spec.reference
    columns, _ = _load_inputs(spec, ref_path)
    outputs = _run(served, columns, str(ref_path))
    prediction = served.interpret(outputs)
    profile_columns = spec.tensor.summarize(columns[spec.tensor.name]) if spec.tensor is not None else columns
    baseline = build_baseline(
        spec.served_schema,
        profile_columns,
        prediction.labels if spec.classes else None,
        None if spec.classes else prediction.labels.astype(np.float64),
        list(spec.classes) if spec.classes else None,
    )
    rows = int(next(iter(columns.values())).shape[0])
    ref_bytes = ref_path.read_bytes()
    card = ModelCard(
        **{
            **{k: getattr(card, k) for k in card.__dataclass_fields__},
            "metrics": metrics,
            "parity": parity,
            "dataset": {"source": spec.reference, "version_id": None, "sha256": sha256(ref_bytes), "rows": rows},
        }
    )
    files: dict[str, Any] = {BASELINE: baseline}
    if holdout_file is not None:
        files[HOLDOUT] = holdout_file
    return registry.register(card, data, files)


def _draft_card(spec: ByoSpec, data: bytes, prov: Provenance) -> ModelCard:
    reading: dict[str, Any] = dict(spec.output)
    byo: dict[str, Any] = {
        "output": reading,
        "provenance": {
            "sha256": prov.sha256,
            "producer_name": prov.producer_name,
            "producer_version": prov.producer_version,
            "opset": prov.opset,
            "ir_version": prov.ir_version,
        },
    }
    if spec.tensor is not None:
        byo["input"] = spec.tensor.to_dict()
    if spec.packed_input is not None:
        byo["packed_input"] = {"name": spec.packed_input, "datatype": "FP32"}
    return ModelCard(
        name=spec.name,
        task=spec.task,
        schema=spec.served_schema,
        outputs=[],
        onnx_sha256=prov.sha256,
        onnx_bytes=len(data),
        opset=prov.opset,
        dataset={},
        spec={**spec.raw, "training": {"primary_metric": spec.primary_metric, "tolerance": spec.tolerance}},
        spec_sha256=spec.sha256,
        # No dots: listings show the estimator's last dotted part. The producer's version is in the provenance.
        estimator=f"onnx:{prov.producer_name or 'unknown'}",
        hyperparameters={},
        metrics={},
        primary_metric=spec.primary_metric,
        parity={},
        seed=0,
        code_version=modeldeck.__version__,
        libraries={n: metadata.version(n) for n in ("onnx", "onnxruntime", "numpy")},
        classes=list(spec.classes) if spec.classes else None,
        extra={"byo": byo},
    )


def _with_outputs(card: ModelCard, session: Any) -> ModelCard:
    """The card with the graph's outputs (OIP metadata) and, for a packed input, the graph's datatype."""
    outputs = [TensorSpec(o.name, ONNX_TYPES.get(o.type, "BYTES"), _dims(o.shape)) for o in session.get_outputs()]
    byo = card.byo
    if "packed_input" in byo:
        graph = {i.name: i for i in session.get_inputs()}[byo["packed_input"]["name"]]
        byo["packed_input"] = {**byo["packed_input"], "datatype": ONNX_TYPES[graph.type]}
    fields = {k: getattr(card, k) for k in card.__dataclass_fields__}
    return ModelCard(**{**fields, "outputs": outputs, "extra": {**card.extra, "byo": byo}})


def _run(model: OnnxModel, columns: dict[str, np.ndarray], origin: str) -> list[np.ndarray]:
    try:
        outputs = model.run(columns)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModeldeckError(
            f"onnxruntime cannot run the model on {origin}: {str(exc).splitlines()[0][:300]}. Nothing was registered."
        ) from None
    rows = int(next(iter(columns.values())).shape[0])
    card = model.card
    for spec, array in zip(card.outputs, outputs, strict=True):
        if array.ndim == 0 or array.shape[0] != rows:
            raise ModeldeckError(
                f"output {spec.name!r} has shape {list(array.shape)} for {rows} rows: every output must have one "
                "row per input row. Nothing was registered."
            )
    reading = card.byo["output"]
    if card.task == "classification":
        by_name = dict(zip(model.output_names, outputs, strict=True))
        width = int(np.prod(by_name[reading["probabilities"]].shape[1:], dtype=np.int64))
        problems = _class_count(reading["probabilities"], width, len(card.classes or []), reading["postprocess"])
        if problems:
            raise SpecError(problems[0] + "; nothing was registered")
    return outputs


def _parity_gate(
    spec: ByoSpec, model: OnnxModel, path: Path
) -> tuple[dict[str, Any], dict[str, float], dict[str, Any] | None]:
    """onnxruntime must reproduce the holdout's expected outputs; returns (parity, metrics, holdout.json)."""
    columns, raw = _load_inputs(spec, path)
    rows = int(next(iter(columns.values())).shape[0])
    outputs = _run(model, columns, str(path))
    expected = _expected_outputs(spec, raw, model.output_names, rows)
    if not expected:
        how = "arrays" if spec.tensor is not None else "columns (name, or name[0], name[1]...)"
        raise SpecError(
            f"{path}: no expected outputs; add {how} named as the graph's outputs "
            f'({", ".join(model.output_names)}), or declare parity = "none". Nothing was registered.'
        )
    tolerance = spec.parity["tolerance"]
    worst = 0.0
    for name, want in expected.items():
        got = outputs[model.output_names.index(name)]
        if want.shape[0] != rows or want.size != got.size:
            raise SpecError(
                f"{path}: expected {name!r} has shape {list(want.shape)}; the graph gives {list(got.shape)}. "
                "Nothing was registered."
            )
        got, want = got.reshape(rows, -1), want.reshape(rows, -1)
        if got.dtype.kind in "fiub" and want.dtype.kind in "fiub":
            diff = np.abs(got.astype(np.float64) - want.astype(np.float64)).max(axis=1)
            bad = np.flatnonzero(~(diff <= tolerance))
            worst = max(worst, float(diff.max(initial=0.0)))
        else:
            diff = None
            bad = np.flatnonzero((got.astype(str) != want.astype(str)).any(axis=1))
        if bad.size:
            row = int(bad[0] if diff is None else bad[np.argmax(diff[bad])])
            detail = f"|diff| {diff[row]:.3g} > {tolerance:g}" if diff is not None else "values differ"
            raise ParityError(
                f"parity gate failed: output {name!r} differs from {path.name} on {bad.size} of {rows} rows; worst "
                f"row {row}: expected {want[row][:4].tolist()}, onnxruntime gave {got[row][:4].tolist()} ({detail}). "
                "Nothing was registered."
            )
    parity = {
        "mode": "holdout",
        "rows": rows,
        "outputs": sorted(expected),
        "max_abs_diff": worst,
        "tolerance": tolerance,
    }
    target_name = spec.parity["target"]
    has_target = target_name in raw if spec.tensor is not None else target_name in raw.columns
    if not has_target:
        return parity, {}, None
    target = np.asarray(raw[target_name]).ravel()
    prediction = model.interpret(outputs)
    if spec.classes:
        target = target.astype(type(spec.classes[0]))
    metrics = evaluate(spec.task, target, prediction.labels, prediction.probabilities, spec.classes)
    # The holdout feeds the release gate's differential test (modeldeck.compare), like trained models'. A tensor
    # holdout keeps at most HOLDOUT_MAX_VALUES numbers, so the JSON file stays a few megabytes.
    row_size = int(np.prod(spec.tensor.row_shape, dtype=np.int64)) if spec.tensor is not None else 1
    keep = min(HOLDOUT_MAX_ROWS, max(1, HOLDOUT_MAX_VALUES // row_size))
    idx = np.arange(rows) if rows <= keep else np.linspace(0, rows - 1, keep).round().astype(int)
    if spec.tensor is not None:
        holdout = {"tensor": columns[spec.tensor.name][idx].tolist(), "target": target[idx].tolist()}
    else:
        assert spec.schema is not None
        holdout = {
            "columns": {f.name: raw[f.name].to_numpy()[idx].tolist() for f in spec.schema.features},
            "target": target[idx].tolist(),
        }
    return parity, {k: float(v) for k, v in metrics.items() if math.isfinite(v)}, holdout
