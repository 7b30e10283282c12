"""The HTTP API's routes and request schemas, and its OpenAPI 3.1 document: one definition for API Gateway,
the local gateway and the docs.

The request schemas are built here from each model's served feature schema (its raw inputs: types, ranges,
allowed values), and used twice: ``infra/constructs/api.py`` makes API Gateway's request models from them
(JSON Schema draft 4, which API Gateway validates), and :func:`document` puts them in the OpenAPI document
that ``modeldeck openapi`` prints and the local gateway serves at ``/openapi.json``. Each schema is written
so that draft 4 and JSON Schema 2020-12 (OpenAPI 3.1's dialect) read it the same way: nullable values are
type lists, never OpenAPI 3.0's ``nullable``.

What JSON Schema cannot say: an OIP tensor's ``shape[0]`` equals its number of values, and every tensor has
the same number of rows. The document's ``infer`` schema lists single-row requests, with the inputs in the
model's order, which is a subset the function accepts exactly (its description gives the general rule). API
Gateway has no model for ``infer``: its body may be the binary tensor data extension's (a JSON header of
``Inference-Header-Content-Length`` bytes, then raw tensors), which the document describes as
``application/octet-stream`` next to the JSON body, for requests and responses.
:data:`ROUTES` are the route templates the inference handler implements.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import modeldeck
from modeldeck.schema import NUMERIC_DATATYPES, Feature, FeatureSchema

if TYPE_CHECKING:
    from modeldeck.byo import ByoSpec
    from modeldeck.card import ModelCard
    from modeldeck.spec import ModelSpec
    from modeldeck.tensor import TensorInput


@dataclass(frozen=True)
class Route:
    """One operation of the API."""

    method: str
    path: str
    operation_id: str
    summary: str
    request: str | None = None
    response: str = "Empty"
    status: int = 200
    errors: tuple[int, ...] = ()
    tags: tuple[str, ...] = field(default=("inference",))

    @property
    def pattern(self) -> re.Pattern[str]:
        parts = re.split(r"(\{\w+\})", self.path)
        regex = "".join(f"(?P<{p[1:-1]}>[^/]+?)" if p.startswith("{") else re.escape(p) for p in parts)
        return re.compile(f"^{regex}$")


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v2/health/live", "healthLive", "The server is live", response="HealthLive", tags=("health",)),
    Route(
        "GET",
        "/v2/health/ready",
        "healthReady",
        "The model is loaded, verified and can serve",
        response="HealthReady",
        errors=(503,),
        tags=("health",),
    ),
    Route(
        "GET",
        "/v2/models/{name}",
        "modelMetadata",
        "Model metadata: versions, platform, input and output tensors",
        response="ModelMetadata",
        errors=(404, 503),
    ),
    Route(
        "GET", "/v2/models/{name}/ready", "modelReady", "The model is ready", response="ModelReady", errors=(404, 503)
    ),
    Route(
        "POST",
        "/v2/models/{name}/infer",
        "modelInfer",
        "Open Inference Protocol v2 inference",
        request="InferRequest",
        response="InferResponse",
        errors=(400, 404, 413, 415, 502, 503, 504),
    ),
    Route(
        "POST",
        "/v1/models/{name}:predict",
        "predict",
        "Predict named-feature records",
        request="PredictRequest",
        response="PredictResponse",
        errors=(400, 404, 413, 415, 502, 503, 504),
    ),
    Route(
        "POST",
        "/v1/models/{name}:feedback",
        "feedback",
        "Ground-truth labels for an earlier prediction",
        request="FeedbackRequest",
        response="FeedbackResponse",
        status=202,
        errors=(400, 404, 413, 415, 503),
    ),
    Route("GET", "/openapi.json", "openapi", "This document", response="OpenApi", tags=("meta",)),
)

_ERRORS = {
    400: "Malformed or invalid request (API Gateway's request validation, or the function's)",
    403: "Missing or wrong API key (x-api-key); answered by API Gateway",
    404: "Unknown model or route",
    413: "Too large a body",
    415: "Content-Type is not application/json (infer: nor application/octet-stream)",
    429: "Throttled or over the daily quota (API Gateway's usage plan)",
    502: "An experiment's variant (another version of the model) gave no answer; the error names it",
    503: "The model is not ready, or an experiment's variant is throttled (see Retry-After)",
    504: "An experiment's variant did not answer in time; the error names it",
}
# Which headers each kind of response carries (README "Serving"): the function sets both on everything it
# answers; API Gateway's own answers (gateway responses: 400 body validation, 403, 404 unknown route, 429)
# carry the request id only, since no model version answered them.
_FUNCTION_HEADERS = {
    "X-Request-Id": {"schema": {"type": "string"}, "description": "the response's id"},
    "X-Model-Version": {"schema": {"type": "string"}, "description": "the model version that answered"},
    "X-Experiment-Variant": {
        "schema": {"type": "string"},
        "description": "during an experiment (A/B test): the variant the request was assigned to",
    },
}
_GATEWAY_HEADERS = {"X-Request-Id": {"schema": {"type": "string"}, "description": "API Gateway's request id"}}

FLOAT32_MAX = 3.4028234663852886e38
MAX_ID_LENGTH = 256  # modeldeck.serving.MAX_ID_LENGTH (the handler's own check)
# An id comes back in the X-Request-Id header, and HTTP header values are ASCII: printable ASCII only.
_ID = {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": "^[ -~]*$"}
_TENSOR_PROPERTIES: dict[str, Any] = {
    "name": {"type": "string"},
    "datatype": {"type": "string", "examples": ["FP32"]},
    "shape": {"type": "array", "items": {"type": "integer"}},
}
_ID_VERSION = {
    "id": {"type": "string", "description": "request id (the client's OIP id, else the gateway's)"},
    "model_version": {"type": "string"},
}

RESPONSE_SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
        "examples": [{"error": "instances[0]: missing feature(s) 'mean_radius'"}],
    },
    "HealthLive": {"type": "object", "properties": {"live": {"type": "boolean"}}},
    "HealthReady": {
        "type": "object",
        "properties": {
            "ready": {"type": "boolean"},
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
        },
    },
    "ModelReady": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}, "model_version": {"type": "string"}},
    },
    "TensorMetadata": {"type": "object", "required": ["name", "datatype", "shape"], "properties": _TENSOR_PROPERTIES},
    "ModelMetadata": {
        "type": "object",
        "required": ["name", "versions", "platform", "inputs", "outputs"],
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string", "enum": ["onnx"]},
            "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/TensorMetadata"}},
            "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/TensorMetadata"}},
        },
    },
    "InferResponse": {
        "type": "object",
        "required": ["model_name", "model_version", "id", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            **_ID_VERSION,
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "datatype", "shape", "data"],
                    "properties": {**_TENSOR_PROPERTIES, "data": {"type": "array"}},
                },
            },
        },
    },
    "PredictResponse": {
        "type": "object",
        "required": ["predictions", "model_version", "id"],
        "properties": {
            "predictions": {"type": "array", "items": {}},
            "probabilities": {
                "type": "array",
                "items": {"type": "array", "items": {"type": "number"}},
                "description": "classifiers only, in the order of the card's classes",
            },
            **_ID_VERSION,
        },
    },
    "FeedbackResponse": {
        "type": "object",
        "properties": {"prediction_id": {"type": "string"}, "labels": {"type": "integer"}, **_ID_VERSION},
    },
    "OpenApi": {"type": "object"},
}


@dataclass(frozen=True)
class ModelApi:
    """What one model's routes accept: its served inputs (the raw features clients send), its task, the row
    limit, and, once a version is trained, its classes and output names (``None``: not known, so any)."""

    name: str
    inputs: FeatureSchema
    task: str = "classification"
    max_rows: int = 1000
    classes: tuple[Any, ...] | None = None
    outputs: tuple[str, ...] | None = None
    tensor: TensorInput | None = None  # a tensor-input model's one input (``inputs`` are then its summaries)

    @classmethod
    def from_spec(cls, spec: ModelSpec | ByoSpec, max_rows: int = 1000) -> ModelApi:
        """Before training (synthesis, ``modeldeck openapi``): the spec's raw inputs and task. A bring-your-own
        spec (``modeldeck.byo``) also knows its classes, and its input tensor if it has one."""
        from modeldeck.spec import ModelSpec

        if isinstance(spec, ModelSpec):
            return cls(spec.name, spec.input_schema, spec.task, max_rows)
        return cls(spec.name, spec.served_schema, spec.task, max_rows, spec.classes, tensor=spec.tensor)

    @classmethod
    def from_card(cls, card: ModelCard, max_rows: int = 1000) -> ModelApi:
        """A trained version: its card's schema (with the categories training saw), classes and outputs."""
        classes = tuple(card.classes) if card.task == "classification" and card.classes else None
        outputs = tuple(o.name for o in card.outputs)
        return cls(card.name, card.schema, card.task, max_rows, classes, outputs, card.tensor_input)


def _float32_within(bound: float, up: bool) -> float:
    """The bound the function enforces, as a JSON number: it compares the float32 value a client's number
    becomes against the bound, so the schema uses the nearest float32 on the allowed side of it."""
    import numpy as np

    value = np.float32(min(max(bound, -FLOAT32_MAX), FLOAT32_MAX))
    if (float(value) > bound) if up else (float(value) < bound):
        value = np.nextafter(value, np.float32(-np.inf if up else np.inf))
    return float(value)


def value_schema(feature: Feature, handle_unknown: str = "ignore") -> dict[str, Any]:
    """One feature's value as the function accepts it (modeldeck.schema): a finite number within the float32
    range and the declared range, or a string category (one of the allowed values when they are known);
    ``null`` where the feature may be missing."""
    nullable = feature.allow_missing
    if feature.numeric:
        low = -FLOAT32_MAX if feature.min is None else _float32_within(feature.min, up=False)
        high = FLOAT32_MAX if feature.max is None else _float32_within(feature.max, up=True)
        return {"type": ["number", "null"] if nullable else "number", "minimum": low, "maximum": high}
    out: dict[str, Any] = {"type": ["string", "null"] if nullable else "string"}
    allowed = (
        feature.values if feature.values is not None else (feature.categories if handle_unknown == "error" else None)
    )
    if allowed is not None:
        # A missing category travels as "" (modeldeck.schema.MISSING_CATEGORY).
        out["enum"] = [*allowed, *([""] if nullable and "" not in allowed else []), *([None] if nullable else [])]
    return out


def row_schema(inputs: FeatureSchema) -> dict[str, Any]:
    """One ``:predict`` instance: every input by name, nothing else."""
    return {
        "type": "object",
        "required": inputs.names,
        "additionalProperties": False,
        "properties": {f.name: value_schema(f, inputs.handle_unknown) for f in inputs.features},
    }


def element_schema(datatype: str) -> dict[str, Any]:
    """One element of a tensor of OIP ``datatype``, as the function accepts it (modeldeck.tensor)."""
    if datatype == "BYTES":
        return {"type": "string"}
    if datatype == "BOOL":
        return {"type": "boolean"}
    return {"type": "number"} if datatype in ("FP16", "FP32", "FP64") else {"type": "integer"}


def nested_schema(dims: Sequence[int], leaf: dict[str, Any]) -> dict[str, Any]:
    """Nested arrays of the given sizes (-1: any non-empty size) around ``leaf``."""
    out = leaf
    for size in reversed(dims):
        out = {"type": "array", "items": out, "minItems": max(size, 1)} | ({"maxItems": size} if size >= 0 else {})
    return out


def predict_request(model: ModelApi) -> dict[str, Any]:
    """The ``:predict`` body."""
    if model.tensor is not None:
        t = model.tensor
        rows = nested_schema(t.row_shape, element_schema(t.datatype))
        return {
            "title": "PredictRequest",
            "type": "object",
            "required": ["instances"],
            "additionalProperties": False,
            "properties": {
                "instances": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": model.max_rows,
                    "items": rows,
                    "description": f"one nested array of shape {list(t.row_shape)} per row (the input {t.name!r})",
                }
            },
        }
    return {
        "title": "PredictRequest",
        "type": "object",
        "required": ["instances"],
        # Other top-level fields: strings and numbers only, ignored by scoring. An experiment names its unit key
        # field at run time (``modeldeck experiment start --unit-key user_id``), after this model is deployed.
        "additionalProperties": {
            "type": ["string", "number", "null"],
            "maxLength": MAX_ID_LENGTH,
            "description": "a unit key for experiments (A/B tests), such as user_id; ignored otherwise",
        },
        "properties": {
            "instances": {
                "type": "array",
                "minItems": 1,
                "maxItems": model.max_rows,
                "items": row_schema(model.inputs),
                "description": "one object per row: every raw input of the model by name (derived features "
                "are computed inside the model)",
            }
        },
    }


def _tensor(feature: Feature, handle_unknown: str, rows: int | None) -> dict[str, Any]:
    value = value_schema(feature, handle_unknown)
    if rows is None:  # any row count: each value flat, or nested as [x]
        data = {
            "type": "array",
            "minItems": 1,
            "items": {"anyOf": [value, {"type": "array", "minItems": 1, "maxItems": 1, "items": value}]},
        }
        shape: dict[str, Any] = {
            "type": "array",
            "minItems": 1,
            "maxItems": 2,
            "items": {"type": "integer", "minimum": 0},
        }
    else:
        data = {"type": "array", "minItems": rows, "maxItems": rows, "items": value}
        shape = {"enum": [[rows], [rows, 1]]}
    datatypes = sorted(NUMERIC_DATATYPES) if feature.numeric else ["BYTES"]
    return {
        "type": "object",
        "required": ["name", "datatype", "shape", "data"],
        "properties": {
            "name": {"enum": [feature.name]},
            "datatype": {"enum": datatypes},
            "shape": shape,
            "data": data,
            "parameters": {"type": "object"},
        },
    }


def infer_request(model: ModelApi, *, one_row: bool = False) -> dict[str, Any]:
    """The OIP ``infer`` body. By default each tensor is checked on its own, in any order and any row count
    (API Gateway's model); ``one_row`` lists single-row requests with the inputs in the model's order, which
    JSON Schema can state exactly (OpenAPI 3.1 ``prefixItems``: for the document only, not draft 4)."""
    inputs = model.inputs
    if model.tensor is not None:
        listed: dict[str, Any] = _tensor_input(model.tensor, model.max_rows, one_row)
    else:
        tensors = [_tensor(f, inputs.handle_unknown, 1 if one_row else None) for f in inputs.features]
        listed = _feature_tensors(tensors, model.max_rows, one_row)
    name = {"type": "string"} if model.outputs is None else {"enum": list(model.outputs)}
    return {
        "title": "InferRequest",
        "type": "object",
        "required": ["inputs"],
        "additionalProperties": False,
        "properties": {
            "id": {**_ID, "description": "the response's id (and X-Request-Id); default: API Gateway's request id"},
            "parameters": {"type": "object"},
            "inputs": listed,
            "outputs": {
                "type": "array",
                "items": {"type": "object", "required": ["name"], "properties": {"name": name}},
                "description": "only these outputs (default: all)",
            },
        },
    }


def _tensor_input(t: TensorInput, max_rows: int, one_row: bool) -> dict[str, Any]:
    """A tensor-input model's ``inputs``: its one tensor, ``data`` flat or nested (checked by the function)."""
    rank = len(t.shape)
    shape = {"type": "array", "minItems": rank, "maxItems": rank, "items": {"type": "integer", "minimum": 0}}
    tensor: dict[str, Any] = {
        "type": "object",
        "required": ["name", "datatype", "shape", "data"],
        "properties": {
            "name": {"enum": [t.name]},
            "datatype": {"enum": [t.datatype]},
            "shape": shape,
            "data": {"type": "array", "minItems": 1},
            "parameters": {"type": "object"},
        },
    }
    if one_row:
        tensor["properties"]["data"] = nested_schema([1, *t.row_shape], element_schema(t.datatype))
    return {
        "type": "array",
        "minItems": 1,
        "maxItems": 1,
        "items": tensor,
        "description": f"the one input tensor {t.name!r} ({t.datatype}, shape {list(t.shape)}; -1: any size, the "
        f"first dimension the rows, at most {max_rows}); data flat (row-major) or nested",
    }


def _feature_tensors(tensors: list[dict[str, Any]], max_rows: int, one_row: bool) -> dict[str, Any]:
    count = len(tensors)
    listed: dict[str, Any] = {"type": "array", "minItems": count, "maxItems": count}
    if one_row:
        listed.update(prefixItems=tensors, items=False)
    else:
        listed["items"] = {"anyOf": tensors}
        for tensor in tensors:
            tensor["properties"]["data"]["maxItems"] = max_rows
    listed["description"] = (
        "one tensor per input of the model (GET /v2/models/{name}), each input once, in any order; shape "
        f"[rows] or [rows, 1] with that many values, the same rows in every tensor, at most {max_rows}"
    )
    return listed


def feedback_request(model: ModelApi) -> dict[str, Any]:
    """The ``:feedback`` body: the prediction's id and its true label (or one per row), an outcome's numeric
    value (or one per row), or both."""
    if model.task != "classification":
        label: dict[str, Any] = {"type": "number"}
    elif model.classes is None:
        label = {"type": ["string", "number"]}
    else:
        label = {"enum": list(model.classes)}
    return {
        "title": "FeedbackRequest",
        "type": "object",
        "required": ["id"],
        "anyOf": [{"required": ["label"]}, {"required": ["value"]}],
        "additionalProperties": False,
        "properties": {
            "id": {**_ID, "description": "the id of the prediction being labelled"},
            "label": {
                "anyOf": [label, {"type": "array", "minItems": 1, "maxItems": model.max_rows, "items": label}],
                "description": "the true label, or a list with one per row of the prediction",
            },
            "value": {
                "anyOf": [
                    {"type": "number"},
                    {"type": "array", "minItems": 1, "maxItems": model.max_rows, "items": {"type": "number"}},
                ],
                "description": "the outcome's business value (converted 0/1, revenue...) for experiments, or a list "
                "with one per row",
            },
        },
    }


def spec_models(models_dir: Path | None = None, max_rows: int = 1000) -> list[ModelApi]:
    """Every model spec in ``models_dir`` (the repository's ``models/``) as the API accepts it before training:
    what ``modeldeck openapi`` documents without a cloud."""
    from modeldeck.byo import load_any_spec

    directory = models_dir or Path(__file__).resolve().parent.parent / "models"
    return [ModelApi.from_spec(load_any_spec(path), max_rows) for path in sorted(directory.glob("*.toml"))]


def draft4(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A request schema as an API Gateway model: JSON Schema draft 4, with its ``$schema``."""
    return {"$schema": "http://json-schema.org/draft-04/schema#", **schema}


def model_routes(name: str) -> list[tuple[Route, str]]:
    """A model's routes with their literal paths (the API has literal resources per model)."""
    return [(route, route.path.replace("{name}", name)) for route in ROUTES if "{name}" in route.path]


def match(method: str, path: str) -> tuple[Route | None, dict[str, str]]:
    """The route template a request matches, with its path parameters; ``(None, {})`` if none does."""
    for route in ROUTES:
        m = route.pattern.match(path)
        if m and route.method == method:
            return route, m.groupdict()
    return None, {}


def _request_schema(route: Route, model: ModelApi) -> dict[str, Any] | None:
    if route.request == "PredictRequest":
        return predict_request(model)
    if route.request == "InferRequest":
        return infer_request(model, one_row=True)
    if route.request == "FeedbackRequest":
        return feedback_request(model)
    return None


_BINARY_HEADER = "Inference-Header-Content-Length"
_BINARY_REQUEST = (
    "The Open Inference Protocol's binary tensor data extension: the JSON inference request (the "
    "application/json schema) of Inference-Header-Content-Length bytes, then the raw data of each input whose "
    "parameters.binary_data_size is set, in the order of inputs: little-endian, row-major, no padding; a BYTES "
    "element is a 4-byte little-endian length and its UTF-8 bytes. Inputs without binary_data_size keep their "
    "JSON data. Any or no Content-Type but another non-JSON one (tritonclient sends none)."
)
_BINARY_RESPONSE = (
    "When outputs are asked for in binary (an output's parameters.binary_data, or the request's "
    "parameters.binary_data_output): the JSON inference response of Inference-Header-Content-Length bytes, "
    "whose binary outputs carry parameters.binary_data_size instead of data, then their raw data in the order "
    "of outputs."
)


def _binary_body(description: str) -> dict[str, Any]:
    return {"schema": {"type": "string", "contentMediaType": "application/octet-stream", "description": description}}


def _operation(route: Route, model: ModelApi | None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": route.operation_id if model is None else f"{route.operation_id}.{model.name}",
        "summary": route.summary,
        "tags": list(route.tags),
        "responses": {
            str(route.status): {
                "description": "OK" if route.status == 200 else "Accepted",
                "headers": _FUNCTION_HEADERS,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{route.response}"}}},
            },
        },
    }
    request = _request_schema(route, model) if model is not None else None
    if request is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": request}}}
    if request is not None and route.request == "InferRequest":
        operation["requestBody"]["content"]["application/octet-stream"] = _binary_body(_BINARY_REQUEST)
        operation["parameters"] = [
            {
                "name": _BINARY_HEADER,
                "in": "header",
                "required": False,
                "schema": {"type": "integer", "minimum": 1},
                "description": "The JSON header's length in bytes: its presence makes the body binary.",
            }
        ]
        ok = operation["responses"][str(route.status)]
        ok["content"]["application/octet-stream"] = _binary_body(_BINARY_RESPONSE)
        ok["headers"] = {
            **ok["headers"],
            _BINARY_HEADER: {
                "schema": {"type": "integer"},
                "description": "binary responses only: the JSON header's length",
            },
        }
    if route.path == "/openapi.json":
        return operation
    operation["security"] = [{"apiKey": []}]
    gateway = {403, 429} | ({400} if request is not None else set())
    for status in sorted({*route.errors, *gateway}):
        headers = dict(_FUNCTION_HEADERS) if status in route.errors else dict(_GATEWAY_HEADERS)
        if status == 503:
            headers["Retry-After"] = {"schema": {"type": "integer"}, "description": "seconds to wait"}
        operation["responses"][str(status)] = {
            "description": _ERRORS[status],
            "headers": headers,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    return operation


def document(models: Sequence[ModelApi] = (), server_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of one deployment: the health routes (answered by the first model), each
    model's literal routes with its request schemas, and ``/openapi.json`` (the local gateway's)."""
    paths: dict[str, Any] = {}
    for route in ROUTES:
        if "{name}" not in route.path:
            paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, None)
    for model in models:
        for route, path in model_routes(model.name):
            paths.setdefault(path, {})[route.method.lower()] = _operation(route, model)
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "modeldeck inference API",
            "version": modeldeck.__version__,
            "description": "Open Inference Protocol v2 (REST) plus friendly JSON routes for tabular models. "
            'Errors are {"error": message}. A method a route does not support is a 405 with an Allow header.',
        },
        "paths": paths,
        "components": {
            "schemas": RESPONSE_SCHEMAS,
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}},
        },
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc
