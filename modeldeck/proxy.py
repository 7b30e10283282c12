"""API Gateway's Lambda proxy integration for a REST API (payload format 1.0): the request, the response, routes.

The inference function's whole HTTP layer: match ``httpMethod`` and ``path`` against a few routes, hand the
route a :class:`Request`, and return the proxy response API Gateway expects ("Set up Lambda proxy
integrations in API Gateway": ``statusCode``, ``multiValueHeaders``, ``body``, ``isBase64Encoded``).
Powertools' ``APIGatewayRestResolver`` did this before, at about 50 µs per request of event wrappers,
middleware plumbing and response building: a tenth of a 1-row request's CPU time. Errors become responses in
the handler (one ``try``), never here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

JSON = "application/json"


class Request:
    """One proxy event: method, path (routing uses ``path``, never ``resource``, so a greedy ``{proxy+}``
    resource and explicit resources route alike), headers with lower-case names, and the Lambda context."""

    __slots__ = ("context", "event", "headers", "method", "path")

    def __init__(self, event: Mapping[str, Any], context: Any) -> None:
        self.event = event
        self.context = context
        self.method = str(event.get("httpMethod") or "")
        self.path = str(event.get("path") or "")
        # HTTP header names are case-insensitive (RFC 9110); API Gateway passes them as the client sent them.
        self.headers = {str(k).lower(): v for k, v in (event.get("headers") or {}).items()}

    def header(self, name: str) -> str | None:
        """A header's value, whatever the case of ``name``."""
        value = self.headers.get(name.lower())
        return None if value is None else str(value)

    @property
    def gateway_request_id(self) -> str | None:
        context = self.event.get("requestContext")
        return context.get("requestId") if isinstance(context, dict) else None


@dataclass
class Response:
    """A proxy response. ``body`` is text; with ``base64`` it is the base64 of a binary body, which API
    Gateway decodes for the client (the API's binary media types)."""

    status: int
    body: str = ""
    content_type: str | None = JSON
    headers: dict[str, str | list[str]] = field(default_factory=dict)
    base64: bool = False

    def proxy(self) -> dict[str, Any]:
        headers: dict[str, list[str]] = {}
        if self.content_type:
            headers["Content-Type"] = [self.content_type]
        for name, value in self.headers.items():
            headers[name] = [value] if isinstance(value, str) else list(value)
        return {
            "statusCode": self.status,
            "multiValueHeaders": headers,
            "body": self.body,
            "isBase64Encoded": self.base64,
        }


class NoRoute(LookupError):
    """No route for the request's method and path."""


Route = Callable[..., Response]


class Router:
    """Routes by method and path pattern; ``<name>`` in a pattern matches one path segment, passed by name."""

    def __init__(self) -> None:
        self._routes: dict[str, list[tuple[re.Pattern[str], Route]]] = {}

    def route(self, method: str, pattern: str) -> Callable[[Route], Route]:
        regex = re.compile("^" + re.sub(r"<(\w+)>", r"(?P<\1>[^/]+)", pattern) + "$")

        def register(fn: Route) -> Route:
            self._routes.setdefault(method, []).append((regex, fn))
            return fn

        return register

    def get(self, pattern: str) -> Callable[[Route], Route]:
        return self.route("GET", pattern)

    def post(self, pattern: str) -> Callable[[Route], Route]:
        return self.route("POST", pattern)

    def dispatch(self, request: Request) -> Response:
        """The matching route's response; NoRoute when none matches."""
        for regex, fn in self._routes.get(request.method, ()):
            match = regex.match(request.path)
            if match is not None:
                return fn(request, **match.groupdict())
        raise NoRoute(f"{request.method} {request.path}")
