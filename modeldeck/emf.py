"""CloudWatch embedded metric format (EMF): all of one invocation's metrics as one JSON line on stdout.

The inference handler records four or more metrics per request. Powertools' ``Metrics`` validates and
books each one (about 7 µs apiece here) and keeps its metric set in class attributes shared by every
instance, which mixes model versions when several handler modules share a process (the local cloud).
This writes the same document Powertools does — one ``CloudWatchMetrics`` directive, each value a list —
from per-instance state, for a few microseconds per invocation. Its dimension sets are the default
dimensions plus any ``rollups`` (subsets of them): CloudWatch then stores each metric once per set, so an
alarm can watch a metric across the values of a dropped dimension (a model across all its versions), which
no single-set metric allows (an alarm names every dimension of the metric it watches).

Spec: https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from modeldeck.fastjson import dumps

MAX_METRICS = 100  # per EMF document (CloudWatch's limit); more are written as further lines
F = TypeVar("F", bound=Callable[..., Any])


class EmfMetrics:
    """Per-instance metrics for one function, flushed as EMF once per invocation by ``log_metrics``."""

    def __init__(
        self, namespace: str, write: Callable[[str], Any] | None = None, rollups: Sequence[Sequence[str]] = ()
    ) -> None:
        self.namespace = namespace
        self.rollups = [list(r) for r in rollups]
        self.default_dimensions: dict[str, str] = {}
        self._dimension_sets: list[list[str]] = [[]]
        self._known: dict[tuple[tuple[str, str], ...], list[dict[str, str]]] = {}
        self._values: dict[str, list[float]] = {}
        self._units: dict[str, str] = {}
        self._write = write

    def set_default_dimensions(self, **dimensions: str) -> None:
        self.default_dimensions = {k: str(v) for k, v in dimensions.items()}
        dims = self.default_dimensions
        self._dimension_sets = [list(dims), *(r for r in self.rollups if r != list(dims) and set(r) <= set(dims))]

    def add_metric(self, name: str, unit: str, value: float) -> None:
        """Record a value; a name recorded twice in one invocation keeps both values."""
        values = self._values.get(name)
        if values is None:
            self._values[name] = [float(value)]
            self._units[name] = unit
        else:
            values.append(float(value))

    def clear_metrics(self) -> None:
        self._values, self._units = {}, {}

    def serialize(self, timestamp_ms: int | None = None) -> list[str]:
        """The EMF documents for what was recorded (none if nothing was)."""
        if not self._values:
            return []
        ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        dims = self.default_dimensions
        dimension_sets = self._dimension_sets
        names = list(self._values)
        lines = []
        for i in range(0, len(names), MAX_METRICS):
            chunk = names[i : i + MAX_METRICS]
            doc: dict[str, Any] = {
                "_aws": {
                    "Timestamp": ts,
                    "CloudWatchMetrics": [
                        {
                            "Namespace": self.namespace,
                            "Dimensions": dimension_sets,
                            "Metrics": self._definitions(chunk),
                        }
                    ],
                },
                **dims,
            }
            for n in chunk:
                doc[n] = self._values[n]
            lines.append(dumps(doc))
        return lines

    def _definitions(self, names: list[str]) -> list[dict[str, str]]:
        # A function records the same metrics request after request: their definitions are built once.
        key = tuple((n, self._units[n]) for n in names)
        definitions = self._known.get(key)
        if definitions is None:
            if len(self._known) > 64:
                self._known.clear()
            definitions = self._known[key] = [{"Name": n, "Unit": u} for n, u in key]
        return definitions

    def flush(self) -> None:
        lines = self.serialize()
        self.clear_metrics()
        if lines:
            # sys.stdout looked up per call: the local cloud routes each invocation's stdout to its own log.
            (self._write or sys.stdout.write)("\n".join(lines) + "\n")

    def log_metrics(self, handler: F) -> F:
        """Decorator: flush after every invocation, whether the handler returned or raised."""

        @functools.wraps(handler)
        def decorate(event: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return handler(event, context, *args, **kwargs)
            finally:
                self.flush()

        return decorate  # type: ignore[return-value]
