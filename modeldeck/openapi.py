"""The HTTP API's route table and its OpenAPI 3 document: one source for the gateway and the docs.

``modeldeck openapi`` prints :func:`document`, and the local gateway serves it at ``/openapi.json``. The
inference handler implements exactly these routes; ``tests/unit/test_openapi.py`` checks they agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import modeldeck


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
        errors=(400, 404, 413, 415, 503),
    ),
    Route(
        "POST",
        "/v1/models/{name}:predict",
        "predict",
        "Predict named-feature records",
        request="PredictRequest",
        response="PredictResponse",
        errors=(400, 404, 413, 415, 503),
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
    400: "Malformed or invalid request",
    403: "Missing or wrong API key (x-api-key)",
    404: "Unknown model or route",
    413: "Too many rows or too large a body",
    415: "Content-Type is not application/json",
    429: "Throttled",
    503: "The model is not ready (see Retry-After)",
}

_VALUE = {"oneOf": [{"type": "number"}, {"type": "string"}, {"type": "null"}]}
_TENSOR_PROPERTIES: dict[str, Any] = {
    "name": {"type": "string"},
    "datatype": {"type": "string", "example": "FP32"},
    "shape": {"type": "array", "items": {"type": "integer"}},
}
_TENSOR = {
    "type": "object",
    "required": ["name", "datatype", "shape", "data"],
    "properties": {
        **_TENSOR_PROPERTIES,
        "parameters": {"type": "object"},
        "data": {"type": "array", "items": {}, "description": "row-major values; nested [[x], ...] too"},
    },
}
_ID_VERSION = {
    "id": {"type": "string", "description": "request id (the client's OIP id, else the gateway's)"},
    "model_version": {"type": "string"},
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
        "example": {"error": "instances[0]: missing feature(s) 'mean_radius'"},
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
    "Tensor": _TENSOR,
    "InferRequest": {
        "type": "object",
        "required": ["inputs"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string", "maxLength": 256},
            "parameters": {"type": "object"},
            "inputs": {
                "type": "array",
                "minItems": 1,
                "items": {"$ref": "#/components/schemas/Tensor"},
                "description": "one tensor per input of the model (GET /v2/models/{name}), shape [rows] or [rows, 1]",
            },
            "outputs": {
                "type": "array",
                "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
                "description": "only these outputs (default: all)",
            },
        },
        "example": {
            "id": "42",
            "inputs": [{"name": "mean_radius", "shape": [1, 1], "datatype": "FP32", "data": [14.1]}],
        },
    },
    "InferResponse": {
        "type": "object",
        "required": ["model_name", "model_version", "id", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            **_ID_VERSION,
            "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}},
        },
    },
    "PredictRequest": {
        "type": "object",
        "required": ["instances"],
        "additionalProperties": False,
        "properties": {
            "instances": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "object", "additionalProperties": _VALUE},
                "description": "one object per row: every input of the model by name (the raw inputs in "
                "GET /v2/models/{name}; derived features are computed inside the model)",
            }
        },
        "example": {"instances": [{"mean_radius": 14.1, "mean_area": 624.0}]},
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
    "FeedbackRequest": {
        "type": "object",
        "required": ["id", "label"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string", "description": "the id of the prediction being labelled"},
            "label": {"description": "the true label, or a list with one per row of the prediction"},
        },
    },
    "FeedbackResponse": {
        "type": "object",
        "properties": {"prediction_id": {"type": "string"}, "labels": {"type": "integer"}, **_ID_VERSION},
    },
    "OpenApi": {"type": "object"},
    "Empty": {"type": "object"},
}


def match(method: str, path: str) -> tuple[Route | None, dict[str, str]]:
    """The route a request matches, with its path parameters; ``(None, {})`` if none does."""
    for route in ROUTES:
        m = route.pattern.match(path)
        if m and route.method == method:
            return route, m.groupdict()
    return None, {}


def document(server_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.0 document of the HTTP API, built from :data:`ROUTES` and :data:`SCHEMAS`."""
    paths: dict[str, Any] = {}
    for route in ROUTES:
        operation: dict[str, Any] = {
            "operationId": route.operation_id,
            "summary": route.summary,
            "tags": list(route.tags),
            "responses": {
                str(route.status): {
                    "description": "OK" if route.status == 200 else "Accepted",
                    "headers": {
                        "X-Request-Id": {"schema": {"type": "string"}},
                        "X-Model-Version": {"schema": {"type": "string"}},
                    },
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{route.response}"}}},
                },
            },
        }
        if "{name}" in route.path:
            operation["parameters"] = [
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": "the model's name",
                }
            ]
        if route.request:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{route.request}"}}},
            }
        if route.path != "/openapi.json":
            operation["security"] = [{"apiKey": []}]
            for status in (*route.errors, 403, 429):
                operation["responses"][str(status)] = {
                    "description": _ERRORS[status],
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "modeldeck inference API",
            "version": modeldeck.__version__,
            "description": "Open Inference Protocol v2 (REST) plus friendly JSON routes for tabular models. "
            'Errors are {"error": message}.',
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}},
        },
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc
