"""Tracing for Lambda handlers: Powertools' Tracer, without the X-Ray SDK when tracing is off.

Powertools' ``Tracer()`` imports ``aws_xray_sdk.core`` even when tracing is disabled (off Lambda, in tests,
or with ``POWERTOOLS_TRACE_DISABLED``). That import builds the SDK's sampling connector with its own
botocore client: about 120 ms of cold start here, for traces that are thrown away, plus a dummy segment on
every invocation. When tracing is off, ``tracer_for`` hands the Tracer a provider that does nothing, so
the decorators and ``tracer.capture_method`` stay in the code and cost next to nothing. When tracing is
on (a deployed function with active tracing), it is Powertools' Tracer with the X-Ray SDK, unchanged.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from aws_lambda_powertools import Tracer
from aws_lambda_powertools.tracing.base import BaseProvider, BaseSegment

_TRUE = {"1", "true", "yes", "on", "y", "t"}


def tracing_disabled(env: Mapping[str, str]) -> bool:
    """Powertools' own rule: disabled explicitly, outside Lambda, or under SAM local / Chalice local."""
    if env.get("POWERTOOLS_TRACE_DISABLED", "false").strip().lower() in _TRUE:
        return True
    return not env.get("LAMBDA_TASK_ROOT") or bool(env.get("AWS_SAM_LOCAL") or env.get("AWS_CHALICE_CLI_MODE"))


class _NoSegment(BaseSegment):
    def close(self, end_time: int | None = None) -> None:
        pass

    def add_subsegment(self, subsegment: Any) -> None:
        pass

    def remove_subsegment(self, subsegment: Any) -> None:
        pass

    def put_annotation(self, key: str, value: Any) -> None:
        pass

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        pass

    def add_exception(self, exception: BaseException, stack: Any, remote: bool = False) -> None:
        pass


class NoTracingProvider(BaseProvider):
    """A tracing provider that records nothing (tracing is off)."""

    _segment = _NoSegment()

    @contextlib.contextmanager
    def in_subsegment(self, name: Any = None, **kwargs: Any) -> Iterator[BaseSegment]:
        yield self._segment

    @contextlib.asynccontextmanager
    async def in_subsegment_async(self, name: Any = None, **kwargs: Any) -> Any:
        yield self._segment

    def put_annotation(self, key: str, value: Any) -> None:
        pass

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        pass

    def patch(self, modules: Sequence[str]) -> None:
        pass

    def patch_all(self) -> None:
        pass


def tracer_for(service: str, env: Mapping[str, str] | None = None) -> Tracer:
    """Powertools' Tracer for ``service``; backed by the X-Ray SDK only when tracing is on."""
    env = os.environ if env is None else env
    if tracing_disabled(env):
        return Tracer(service=service, disabled=True, provider=NoTracingProvider())
    return Tracer(service=service)


# A handler keeps one invocation's state in module globals (its metrics until the EMF line is written, its
# logger's keys), so two invocations of one handler module must never overlap in one process. On Lambda they
# cannot (one invocation per process at a time); the local cloud runs every function version in one process,
# with asynchronous invocations on threads, so its handlers take this lock for the whole invocation.
# Uncontended, it costs well under a microsecond.
ONE_INVOCATION_AT_A_TIME = threading.RLock()
