"""The local cloud: moto running in-process as the default AWS for the CLI, the demo and the tests.

Everything modeldeck does against AWS it does here against moto, through the same boto3 calls. This
module is the one place that knows moto's internals; what moto cannot do, it emulates here:

- **Lambda runs handlers in-process.** moto's Docker-free Lambda backend only echoes payloads, so its
  ``invoke`` is replaced by ``LambdaRuntime``: it resolves the function version (choosing by the alias's
  ``RoutingConfig`` weights, as Lambda does), and runs the handler named in the function's
  configuration in an execution environment of its own, created with that version's environment
  variables. Step Functions' Lambda tasks go through the same path.
- **State between commands.** moto keeps state in memory, so each CLI command restores the registry
  bucket from a state directory (``.modeldeck/`` by default) when it starts and writes it back when it
  ends; that is what lets ``modeldeck train`` be followed by ``modeldeck models list``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3

LOCAL_REGION = "us-east-1"
LOCAL_BUCKET = "modeldeck-registry-local"
_FAKE_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
             "AWS_DEFAULT_REGION": LOCAL_REGION, "AWS_REGION": LOCAL_REGION}


MOTO_CONFIG = {"lambda": {"use_docker": False}, "stepfunctions": {"execute_state_machine": True}}
_ENV_LOCK = threading.RLock()


@dataclass
class FakeContext:
    """The Lambda context object handed to handlers."""

    function_name: str
    function_version: str
    invoked_function_arn: str
    memory_limit_in_mb: int = 1024
    timeout_s: int = 30
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"
    _deadline: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@contextmanager
def patched_environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for a cold start. Serialized: os.environ is process-wide."""
    with _ENV_LOCK:
        saved = {k: os.environ.get(k) for k in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


class ExecutionEnvironment:
    """One function version's sandbox: its own instance of the handler module, initialized with the
    version's environment, reused across invocations like a warm Lambda execution environment."""

    def __init__(self, function_name: str, version: str, handler: str, env: dict[str, str],
                 memory: int, timeout: int, arn: str) -> None:
        self.function_name, self.version, self.arn = function_name, version, arn
        self.env = {**env, "AWS_LAMBDA_FUNCTION_NAME": function_name, "AWS_LAMBDA_FUNCTION_VERSION": version,
                    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory)}
        self.memory, self.timeout = memory, timeout
        module_name, _, self.attr = handler.rpartition(".")
        self.module_name = module_name
        self._module: ModuleType | None = None
        self._cold = True
        self._init_lock = threading.Lock()

    def _load(self) -> ModuleType:
        spec = importlib.util.find_spec(self.module_name)
        if spec is None or spec.loader is None:
            raise ImportError(f"Runtime.ImportModuleError: no module {self.module_name!r}")
        unique = f"{self.module_name}@{self.function_name}:{self.version}"
        module = importlib.util.module_from_spec(importlib.util.spec_from_file_location(unique, spec.origin))  # type: ignore[arg-type]
        sys.modules[unique] = module
        module.__spec__.loader.exec_module(module)  # type: ignore[union-attr]
        return module

    def invoke(self, event: Any) -> Any:
        context = FakeContext(self.function_name, self.version, self.arn, self.memory, self.timeout)
        if self._cold:
            with self._init_lock:
                if self._cold:
                    # The cold start (import and first invocation) sees this version's environment.
                    with patched_environ(self.env):
                        if self._module is None:
                            self._module = self._load()
                        result = getattr(self._module, self.attr)(event, context)
                    self._cold = False
                    return result
        assert self._module is not None
        return getattr(self._module, self.attr)(event, context)


class LambdaRuntime:
    """Invokes functions of the local cloud in-process, honouring aliases and their routing weights."""

    def __init__(self, account_id: str = "123456789012", region: str = LOCAL_REGION) -> None:
        self.account_id, self.region = account_id, region
        self._envs: dict[tuple[str, str], ExecutionEnvironment] = {}
        self._lock = threading.Lock()
        self.rng = random.Random()
        self.faults: dict[tuple[str, str], Callable[[Any], Any]] = {}

    @property
    def backend(self) -> Any:
        from moto.awslambda_simple.models import lambda_simple_backends

        return lambda_simple_backends[self.account_id][self.region]

    def resolve(self, function_name: str, qualifier: str | None) -> Any:
        """The version an invocation runs: an alias's routing weights pick between its two versions."""
        if function_name.startswith("arn:"):
            parts = function_name.split(":")
            name, qualifier = parts[6], (parts[7] if len(parts) > 7 else qualifier)
        elif ":" in function_name:
            name, qualifier = function_name.split(":", 1)
        else:
            name = function_name
        if qualifier and not qualifier.isdigit() and qualifier != "$LATEST":
            alias = self.backend.get_alias(qualifier, name)
            version = alias.function_version
            weights = (alias.routing_config or {}).get("AdditionalVersionWeights") or {}
            draw = self.rng.random()
            for extra, weight in weights.items():
                if draw < float(weight):
                    version = extra
                    break
                draw -= float(weight)
            qualifier = version
        return self.backend.get_function(name, qualifier or "$LATEST")

    def environment(self, fn: Any) -> ExecutionEnvironment:
        key = (fn.function_name, str(fn.version))
        with self._lock:
            env = self._envs.get(key)
            if env is None:
                handler = fn.handler or (fn.image_config.cmd[0] if fn.image_config.cmd else None)
                if not handler:
                    raise RuntimeError(f"function {fn.function_name} has no handler to run")
                env = ExecutionEnvironment(fn.function_name, str(fn.version), handler, dict(fn.environment_vars or {}),
                                           int(fn.memory_size or 128), int(fn.timeout or 3), fn.function_arn)
                self._envs[key] = env
        return env

    def invoke(self, function_name: str, qualifier: str | None, event: Any) -> tuple[Any, str]:
        """Run the function; returns (result, executed version). Handler exceptions propagate."""
        fn = self.resolve(function_name, qualifier)
        env = self.environment(fn)
        fault = self.faults.get((fn.function_name, str(fn.version)))
        if fault is not None:
            event = fault(event)
        return env.invoke(event), str(fn.version)

    def moto_invoke(self, response: Any) -> tuple[int, dict[str, str], bytes]:
        """Stands in for moto's Lambda ``Invoke`` API (boto3 ``lambda.invoke`` and Step Functions tasks).

        ``Event`` invocations run on a thread and return 202 at once, as Lambda's async invoke does.
        """
        from urllib.parse import unquote

        function_name = unquote(response.path.rsplit("/", 2)[-2])
        qualifier = (response.querystring.get("Qualifier") or [None])[0]
        event = json.loads(response.body) if response.body else {}
        if response.headers.get("X-Amz-Invocation-Type") == "Event":
            threading.Thread(target=self._invoke_quietly, args=(function_name, qualifier, event), daemon=True).start()
            return 202, {"status": "202"}, b""
        try:
            result, version = self.invoke(function_name, qualifier, event)
        except Exception as exc:  # Lambda reports any handler exception as an unhandled function error
            body = json.dumps({"errorMessage": str(exc), "errorType": type(exc).__name__}).encode()
            return 200, {"x-amz-function-error": "Unhandled", "content-type": "application/json"}, body
        return 200, {"x-amz-executed-version": version, "content-type": "application/json"}, json.dumps(result).encode()

    def _invoke_quietly(self, function_name: str, qualifier: str | None, event: Any) -> None:
        try:
            self.invoke(function_name, qualifier, event)
        except Exception:  # noqa: BLE001 - an async invocation's failure is the handler's own to log
            pass


class LocalCloud:
    """Handles to the in-process moto cloud, with the registry bucket created."""

    def __init__(self, bucket: str = LOCAL_BUCKET) -> None:
        self.bucket = bucket
        self.region = LOCAL_REGION
        self.lambdas = LambdaRuntime(region=self.region)

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=self.region)

    def save(self, state_dir: Path) -> None:
        """Write every object of the registry bucket under ``state_dir/s3``."""
        s3 = self.client("s3")
        root = state_dir / "s3" / self.bucket
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for obj in page.get("Contents", []):
                path = root / obj["Key"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(s3.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read())

    def restore(self, state_dir: Path) -> None:
        s3 = self.client("s3")
        root = state_dir / "s3" / self.bucket
        if not root.is_dir():
            return
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            s3.put_object(Bucket=self.bucket, Key=path.relative_to(root).as_posix(), Body=path.read_bytes())


@contextmanager
def local_cloud(state_dir: Path | None = None, bucket: str = LOCAL_BUCKET) -> Iterator[LocalCloud]:
    """Start moto in-process (fake credentials, no network), optionally persisted in ``state_dir``."""
    from unittest import mock

    from moto import mock_aws  # moto is heavy; only local mode pays for it.
    from moto.awslambda.responses import LambdaResponse

    saved = {k: os.environ.get(k) for k in _FAKE_ENV}
    os.environ.update(_FAKE_ENV)
    cloud = LocalCloud(bucket)

    def invoke(response: Any) -> tuple[int, dict[str, str], bytes]:
        return cloud.lambdas.moto_invoke(response)

    try:
        with mock_aws(config=MOTO_CONFIG), mock.patch.object(LambdaResponse, "invoke", invoke):
            cloud.client("s3").create_bucket(Bucket=bucket)
            if state_dir is not None:
                cloud.restore(state_dir)
            yield cloud
            if state_dir is not None:
                cloud.save(state_dir)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
