"""What every emulated service shares: the local region and bucket, moto's configuration, fake
credentials, and a serialized way to set process environment variables."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

LOCAL_REGION = "us-east-1"
LOCAL_BUCKET = "modeldeck-registry-local"
_FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": LOCAL_REGION,
    "AWS_REGION": LOCAL_REGION,
}


MOTO_CONFIG: Any = {"lambda": {"use_docker": False}, "stepfunctions": {"execute_state_machine": True}}
# os.environ is process-wide: cold starts, which read it, take turns.
ENV_LOCK = threading.RLock()


@contextmanager
def patched_environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for a cold start. Serialized: os.environ is process-wide."""
    with ENV_LOCK:
        saved = {k: os.environ.get(k) for k in values}
        os.environ.update(values)
        try:
            yield
        finally:
            _restore_environ(saved)


@contextmanager
def consistent_environ_reads() -> Iterator[None]:
    """While the local cloud runs, iterating ``os.environ`` reads one snapshot of it.

    Lambda gives every execution environment a process of its own; here a cold start sets its version's
    variables in the one process, and a thread iterating the environment meanwhile (botocore looks for proxy
    variables whenever a client is created) failed with a KeyError for a variable removed mid-iteration.
    """
    from unittest import mock

    environ_class = type(os.environ)

    def keys(env: Any) -> list[str]:
        return [env.decodekey(k) for k in list(env._data)]

    def items(env: Any) -> list[tuple[str, str]]:
        data = dict(env._data)  # one copy, taken atomically
        return [(env.decodekey(k), env.decodevalue(v)) for k, v in data.items()]

    def iterate(env: Any) -> Iterator[str]:
        return iter(keys(env))

    with (
        mock.patch.object(environ_class, "keys", keys),
        mock.patch.object(environ_class, "items", items),
        mock.patch.object(environ_class, "__iter__", iterate),
    ):
        yield


def _restore_environ(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
