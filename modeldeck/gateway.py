"""The local API gateway: API Gateway (REST API, Lambda proxy integration) emulated over loopback HTTP.

Each HTTP request becomes a real API Gateway proxy event (payload format 1.0) and is invoked on the alias
``live`` of the model's inference function in the local cloud, whose runtime honours the alias's routing
weights; the Lambda proxy response (statusCode, headers, body) goes back as HTTP. Like API Gateway it
requires ``x-api-key`` when a key is configured (403 ``Forbidden`` otherwise), limits bodies to 10 MB,
and answers 502 when the function itself fails. It also serves ``/openapi.json``.

Functions are found by the ``MODEL_NAME`` in their environment (the same lookup as on AWS), cached for a
couple of seconds so new deployments show up without a restart.
"""

from __future__ import annotations

import base64
import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from modeldeck.deployment import INFERENCE_HANDLER
from modeldeck.openapi import document, match

if TYPE_CHECKING:
    from modeldeck.localcloud import LocalCloud

MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit.
ALIAS = "live"
STAGE = "local"


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> HttpResponse:
    return HttpResponse(
        status,
        {"Content-Type": "application/json", **(headers or {})},
        json.dumps(payload, separators=(",", ":")).encode(),
    )


class Gateway:
    """Turns HTTP requests into proxy events for the right function; independent of the HTTP server."""

    def __init__(
        self,
        cloud: LocalCloud,
        api_key: str | None = None,
        *,
        discovery_ttl: float = 2.0,
        max_body_bytes: int = MAX_BODY_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cloud = cloud
        self.api_key = api_key or None
        self.discovery_ttl = discovery_ttl
        self.max_body_bytes = max_body_bytes
        self._clock = clock
        self._functions: dict[str, str] = {}
        self._discovered_at = -float("inf")
        self._lock = threading.Lock()
        self.server_url = ""

    def functions(self) -> dict[str, str]:
        """Model name → inference function name, from the functions' ``MODEL_NAME`` (briefly cached)."""
        with self._lock:
            if self._clock() - self._discovered_at > self.discovery_ttl:
                found: dict[str, str] = {}
                lam = self.cloud.client("lambda")
                for page in lam.get_paginator("list_functions").paginate():
                    for fn in page["Functions"]:
                        model = (fn.get("Environment") or {}).get("Variables", {}).get("MODEL_NAME")
                        if model and fn.get("Handler") == INFERENCE_HANDLER:
                            found[model] = fn["FunctionName"]
                self._functions, self._discovered_at = found, self._clock()
            return dict(self._functions)

    def refresh(self) -> None:
        """Forget the discovered functions: the next request looks them up again."""
        with self._lock:
            self._discovered_at = -float("inf")

    def handle(
        self, method: str, target: str, headers: dict[str, list[str]], body: bytes, source_ip: str = "127.0.0.1"
    ) -> HttpResponse:
        """One HTTP request → one HTTP response. ``headers`` maps lower-case names to their values."""
        split = urlsplit(target)
        path = unquote(split.path) or "/"
        if method == "GET" and path == "/openapi.json":
            return _json(200, document(self.server_url or None))
        if self.api_key is not None:
            given = (headers.get("x-api-key") or [""])[-1]
            if not hmac.compare_digest(given.encode(), self.api_key.encode()):
                return _json(403, {"error": "Forbidden: a valid API key is required in the x-api-key header"})
        if len(body) > self.max_body_bytes:
            return _json(413, {"error": f"the request body is larger than {self.max_body_bytes} bytes"})
        route, params = match(method, path)
        if path in ("/v2/health/live", "/v2/health/ready"):
            return self._health(method, path, split.query, headers, body, source_ip)
        model = self._model_of(path)
        if model is None:
            return _json(404, {"error": f"no route {method} {path}; see /openapi.json for the API"})
        function = self.functions().get(model)
        if function is None:
            known = ", ".join(sorted(self.functions())) or "none"
            return _json(404, {"error": f"model {model!r} is not deployed (deployed: {known})"})
        resource = route.path if route else "/{proxy+}"
        if route is None:
            params = {"proxy": path.lstrip("/")}
        event = self.event(method, path, resource, params, split.query, headers, body, source_ip)
        return self._invoke(function, event)

    @staticmethod
    def _model_of(path: str) -> str | None:
        parts = path.split("/")
        if len(parts) >= 4 and parts[1] in ("v1", "v2") and parts[2] == "models" and parts[3]:
            return (parts[3].rpartition(":")[0] or parts[3]) if parts[1] == "v1" else parts[3]
        return None

    def _health(
        self, method: str, path: str, query: str, headers: dict[str, list[str]], body: bytes, source_ip: str
    ) -> HttpResponse:
        """Health of the whole API: every model's function must be live (ready)."""
        functions = self.functions()
        if not functions:
            if path.endswith("/live"):
                return _json(200, {"live": True, "models": {}})
            return _json(503, {"error": "no model is deployed"})
        route, params = match(method, path)
        results: dict[str, Any] = {}
        worst = 200
        for model, function in sorted(functions.items()):
            event = self.event(
                method, path, route.path if route else "/{proxy+}", params, query, headers, body, source_ip
            )
            response = self._invoke(function, event)
            worst = max(worst, response.status)
            try:
                results[model] = json.loads(response.body)
            except ValueError:
                results[model] = {"error": response.body.decode(errors="replace")}
        if worst >= 400:
            failing = ", ".join(f"{m}: {r.get('error', r)}" for m, r in results.items() if "error" in r)
            return _json(worst, {"error": failing or "not ready"})
        key = "live" if path.endswith("/live") else "ready"
        return _json(200, {key: True, "models": results})

    def event(
        self,
        method: str,
        path: str,
        resource: str,
        params: dict[str, str],
        query: str,
        headers: dict[str, list[str]],
        body: bytes,
        source_ip: str,
    ) -> dict[str, Any]:
        return proxy_event(
            method,
            path,
            body,
            resource=resource,
            params=params,
            query=query,
            headers=headers,
            source_ip=source_ip,
            account_id=self.cloud.lambdas.account_id,
            with_api_key=self.api_key is not None,
        )

    def _invoke(self, function: str, event: dict[str, Any]) -> HttpResponse:
        try:
            result, version = self.cloud.lambdas.invoke(function, ALIAS, event)
        except Exception as exc:  # the function failed: API Gateway answers 502
            return _json(502, {"error": f"Internal server error: the function failed ({type(exc).__name__})"})
        if not isinstance(result, dict) or "statusCode" not in result:
            return _json(502, {"error": "Internal server error: malformed Lambda proxy response"})
        headers = {k: str(v) for k, v in (result.get("headers") or {}).items()}
        for key, values in (result.get("multiValueHeaders") or {}).items():
            headers[key] = ", ".join(map(str, values))
        headers["X-Executed-Version"] = version
        body = result.get("body") or ""
        raw = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
        return HttpResponse(int(result["statusCode"]), headers, raw)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes; no 40 ms delayed-ACK stall

    def _serve(self) -> None:
        gateway = self.server.gateway
        length = int(self.headers.get("Content-Length") or 0)
        if length > gateway.max_body_bytes:
            response = _json(413, {"error": f"the request body is larger than {gateway.max_body_bytes} bytes"})
            self.close_connection = True
        else:
            body = self.rfile.read(length) if length else b""
            headers: dict[str, list[str]] = {}
            for key, value in self.headers.items():
                headers.setdefault(key.lower(), []).append(value)
            response = gateway.handle(self.command, self.path, headers, body, self.client_address[0])
        self.send_response(response.status)
        for key, value in response.headers.items():
            if key.lower() not in ("content-length", "connection"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":  # a HEAD response has headers only
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    def __getattr__(self, name: str) -> Any:
        # Any other method (HEAD, OPTIONS, TRACE, made-up ones) gets the JSON 404 of an unknown route,
        # not http.server's HTML 501.
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.access_log is not None:
            self.server.access_log(f"{self.address_string()} {format % args}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], gateway: Gateway, access_log: Callable[[str], None] | None) -> None:
        super().__init__(address, _Handler)
        self.gateway = gateway
        self.access_log = access_log


def serve(gateway: Gateway, port: int = 8080, access_log: Callable[[str], None] | None = None) -> _Server:
    """An HTTP server on 127.0.0.1 only (``port`` 0 picks a free one); call ``serve_forever`` on it."""
    server = _Server(("127.0.0.1", port), gateway, access_log)
    gateway.server_url = f"http://127.0.0.1:{server.server_address[1]}"
    return server


def proxy_event(
    method: str,
    path: str,
    body: bytes = b"",
    *,
    resource: str | None = None,
    params: dict[str, str] | None = None,
    query: str = "",
    headers: dict[str, list[str]] | None = None,
    source_ip: str = "127.0.0.1",
    account_id: str = "123456789012",
    with_api_key: bool = False,
) -> dict[str, Any]:
    """An API Gateway REST API proxy event (payload format 1.0), as the Lambda receives it."""
    headers = headers or {}
    if resource is None:
        route, found = match(method, path)
        resource, params = (route.path, found) if route else ("/{proxy+}", {"proxy": path.lstrip("/")})
    multi_query = parse_qs(query, keep_blank_values=True) if query else {}
    try:
        text: str | None = body.decode("utf-8") if body else None
        is_b64 = False
    except UnicodeDecodeError:
        text, is_b64 = base64.b64encode(body).decode(), True
    request_id = str(uuid.uuid4())
    now = time.time()
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": {k: v[-1] for k, v in headers.items()} or None,
        "multiValueHeaders": dict(headers) or None,
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": params or None,
        "stageVariables": None,
        "requestContext": {
            "accountId": account_id,
            "apiId": "local",
            "resourceId": "local",
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/{STAGE}{path}",
            "stage": STAGE,
            "protocol": "HTTP/1.1",
            "requestId": request_id,
            "extendedRequestId": request_id,
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "requestTimeEpoch": int(now * 1000),
            "identity": {
                "apiKey": _last(headers, "x-api-key") if with_api_key else None,
                "sourceIp": source_ip,
                "userAgent": _last(headers, "user-agent"),
            },
        },
        "body": text,
        "isBase64Encoded": is_b64,
    }


def _last(headers: dict[str, list[str]], name: str) -> str | None:
    values = headers.get(name)
    return values[-1] if values else None
