"""Lambda: handlers run in-process, one execution environment per function version, routed by the
alias's weights, on the local cloud's virtual clock; invocations are counted in the ``AWS/Lambda`` metrics
("Lambda metrics", "Types of metrics for Lambda functions")."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any, SupportsIndex

from modeldeck.localcloud.base import ENV_LOCK, LOCAL_REGION, patched_environ
from modeldeck.localcloud.clock import VirtualClock
from modeldeck.localcloud.cloudwatch import emf_metric_data
from modeldeck.localcloud.iam import acting_as

if TYPE_CHECKING:
    from modeldeck.localcloud.cloud import LocalCloud


class HandlerTimeout(BaseException):
    """Raised inside a handler that sleeps past its function timeout: Lambda stops it there. A BaseException,
    so the handler's own ``except Exception`` cannot swallow it."""


class LambdaTimeout(RuntimeError):
    """An invocation that overran its function timeout ("Task timed out after N seconds"), an error to Lambda."""

    error_type = "Sandbox.Timedout"


_INVOCATION = threading.local()
_real_sleep = time.sleep
_real_monotonic = time.monotonic


def sandbox_sleep(seconds: float | SupportsIndex) -> None:
    """``time.sleep`` while a local cloud runs: inside a Lambda invocation it waits on the virtual clock (the
    sandbox's time), and a sleep past the function timeout ends the invocation as Lambda would; elsewhere it
    is the host's sleep."""
    current = getattr(_INVOCATION, "current", None)
    if current is None:
        _real_sleep(seconds)
        return
    seconds = float(seconds)
    clock, deadline = current
    remaining = deadline - clock.monotonic()
    if seconds > remaining:
        clock.sleep(max(0.0, remaining))
        raise HandlerTimeout()
    clock.sleep(seconds)


def sandbox_monotonic() -> float:
    """``time.monotonic`` while a local cloud runs: inside a Lambda invocation the virtual clock's reading (the
    sandbox's time, as for ``sandbox_sleep``), so a handler's caches expire after their TTL in virtual time,
    as they would in Lambda; elsewhere the host's."""
    current = getattr(_INVOCATION, "current", None)
    if current is None:
        return _real_monotonic()
    return float(current[0].monotonic())


@dataclass
class FakeContext:
    """The Lambda context object handed to handlers (remaining time on the virtual clock)."""

    function_name: str
    function_version: str
    invoked_function_arn: str
    memory_limit_in_mb: int = 1024
    timeout_s: int = 30
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"
    clock: VirtualClock | None = None
    deadline: float = 0.0

    def __post_init__(self) -> None:
        self.deadline = self._now() + self.timeout_s

    def _now(self) -> float:
        return self.clock.monotonic() if self.clock is not None else _real_monotonic()

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - self._now()) * 1000))


class RoutedStdout:
    """``sys.stdout`` while a local cloud runs: what a handler prints during an invocation goes, line by
    line, to that invocation's log sink (Lambda sends stdout to CloudWatch Logs); other threads' output
    passes through unchanged."""

    def __init__(self, passthrough: Any) -> None:
        self.passthrough = passthrough
        self.local = threading.local()

    def write(self, text: str) -> int:
        sink = getattr(self.local, "sink", None)
        if sink is None:
            return int(self.passthrough.write(text))
        pending = getattr(self.local, "pending", "") + text
        *lines, self.local.pending = pending.split("\n")
        for line in lines:
            sink(line)
        return len(text)

    def flush(self) -> None:
        self.passthrough.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.passthrough, name)

    @contextmanager
    def routed_to(self, sink: Callable[[str], None]) -> Iterator[None]:
        previous = getattr(self.local, "sink", None)
        self.local.sink, self.local.pending = sink, ""
        try:
            yield
        finally:
            if self.local.pending:
                sink(self.local.pending)
            self.local.sink, self.local.pending = previous, ""


_ROUTER = RoutedStdout(sys.stdout)


def routed_stdout() -> RoutedStdout:
    """The router, installed as ``sys.stdout`` if something (a test runner's output capture) put another stream
    there since: a handler's stdout must reach its log group whatever the host did with stdout."""
    current = sys.stdout
    if not isinstance(current, RoutedStdout):
        _ROUTER.passthrough = current
        sys.stdout = _ROUTER
        return _ROUTER
    return current


class ExecutionEnvironment:
    """One function version's sandbox: its own instance of the handler module, initialized with the
    version's environment, reused across invocations like a warm Lambda execution environment."""

    def __init__(
        self, function_name: str, version: str, handler: str, env: dict[str, str], memory: int, timeout: int, arn: str
    ) -> None:
        self.function_name, self.version, self.arn = function_name, version, arn
        self.env = {
            **env,
            "AWS_LAMBDA_FUNCTION_NAME": function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": version,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory),
            # Lambda's reserved variable: environments are created on demand here (no provisioned concurrency
            # or SnapStart restore), so handlers may do their init-phase work, as on AWS.
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        }
        self.memory, self.timeout = memory, timeout
        module_name, _, self.attr = handler.rpartition(".")
        self.module_name = module_name
        self._module: ModuleType | None = None
        self._cold = True
        self._init_lock = threading.Lock()
        self._busy = threading.Lock()
        # Who the handler's AWS calls run as: its function's execution role, looked up at each invocation (the
        # templates may be redeployed); set by the runtime, None: not restricted.
        self.principal: Callable[[], Any] | None = None

    def _load(self) -> ModuleType:
        spec = importlib.util.find_spec(self.module_name)
        if spec is None or spec.loader is None:
            raise ImportError(f"Runtime.ImportModuleError: no module {self.module_name!r}")
        unique = f"{self.module_name}@{self.function_name}:{self.version}"
        module = importlib.util.module_from_spec(importlib.util.spec_from_file_location(unique, spec.origin))  # type: ignore[arg-type]
        sys.modules[unique] = module
        module.__spec__.loader.exec_module(module)  # type: ignore[union-attr]
        return module

    def invoke(self, event: Any, clock: VirtualClock, log: Callable[[str], None] | None = None) -> tuple[Any, float]:
        """Run the handler; returns (result, duration in ms of the invoke phase, init excluded, as Lambda's
        ``Duration``). Raises LambdaTimeout when the invocation overran the function timeout."""
        stdout = routed_stdout()
        with acting_as(self.principal() if self.principal is not None else None):
            if log is not None:
                with stdout.routed_to(log):
                    return self._invoke(event, clock)
            return self._invoke(event, clock)

    def _run(self, event: Any, clock: VirtualClock) -> tuple[Any, float]:
        assert self._module is not None
        context = FakeContext(self.function_name, self.version, self.arn, self.memory, self.timeout, clock=clock)
        started = clock.monotonic()
        previous = getattr(_INVOCATION, "current", None)
        _INVOCATION.current = (clock, context.deadline)
        stopped = False
        try:
            result = getattr(self._module, self.attr)(event, context)
        except HandlerTimeout:
            result, stopped = None, True
        finally:
            _INVOCATION.current = previous
        elapsed = clock.monotonic() - started
        if stopped or elapsed > self.timeout:
            raise LambdaTimeout(f"Task timed out after {self.timeout:.2f} seconds")
        return result, elapsed * 1000

    def _invoke(self, event: Any, clock: VirtualClock) -> tuple[Any, float]:
        if self._cold:
            # Waiting for another cold start (os.environ is process-wide) is not work: a cold start that
            # sleeps on the clock would otherwise wait for this thread's hold, and this thread for its lock.
            with clock.waiting():
                self._init_lock.acquire()
                ENV_LOCK.acquire()
            try:
                if self._cold:
                    # The cold start (import and first invocation) sees this version's environment.
                    with patched_environ(self.env):
                        if self._module is None:
                            self._module = self._load()
                        outcome = self._run(event, clock)
                    self._cold = False
                    return outcome
            finally:
                ENV_LOCK.release()
                self._init_lock.release()
        # One invocation at a time per execution environment, as on Lambda (handlers keep per-request
        # state in module globals); concurrency comes from the other versions' environments.
        with clock.waiting():
            self._busy.acquire()
        try:
            return self._run(event, clock)
        finally:
            self._busy.release()


class LambdaRuntime:
    """Invokes functions of the local cloud in-process, honouring aliases and their routing weights.

    Every invocation holds the virtual clock while its handler runs (a handler's ``time.sleep`` waits on the
    clock instead) and is counted in the ``AWS/Lambda`` metrics, per function, per alias and per
    ``ExecutedVersion``, at one-minute resolution; they, and the embedded-metric-format lines handlers
    print, reach CloudWatch ``metric_delay`` seconds after the invocation ("Lambda metrics": metrics arrive
    late). ``Errors`` counts unhandled exceptions and timeouts only: a handler that returns a 500 response
    succeeded, to Lambda.
    """

    def __init__(
        self,
        account_id: str = "123456789012",
        region: str = LOCAL_REGION,
        clock: VirtualClock | None = None,
        metric_delay: float = 120.0,
    ) -> None:
        self.account_id, self.region = account_id, region
        self.clock = clock or VirtualClock()
        self.metric_delay = metric_delay
        self._envs: dict[tuple[str, str], ExecutionEnvironment] = {}
        self._lock = threading.Lock()
        self.rng = random.Random()
        self._metrics: list[tuple[str, str | None, str, float, bool, float]] = []
        self._emf: list[tuple[float, dict[str, Any]]] = []
        self.logs: dict[str, list[str]] = {}
        # CloudWatch Logs, which receives every line a function writes (function name, line, virtual time).
        self.log_sink: Callable[[str, str, float], None] | None = None
        # A function's execution role, from the deployed templates (see ``iam``); None runs unrestricted.
        self.principal_of: Callable[[str], Any] = lambda function_name: None
        # Lambda's check of a service's invocation against the function policy (see ``iam``); raises if refused.
        self.authorize_invoke: Callable[[str, str | None], None] = lambda function_name, qualifier: None

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
                env = ExecutionEnvironment(
                    fn.function_name,
                    str(fn.version),
                    handler,
                    dict(fn.environment_vars or {}),
                    int(fn.memory_size or 128),
                    int(fn.timeout or 3),
                    fn.function_arn,
                )
                env.principal = lambda name=fn.function_name: self.principal_of(name)
                self._envs[key] = env
        return env

    def discard(self, function_name: str, version: str = "$LATEST") -> None:
        """Drop a version's execution environment (its configuration changed: Lambda starts new ones)."""
        with self._lock:
            self._envs.pop((function_name, version), None)

    def invoke(self, function_name: str, qualifier: str | None, event: Any) -> tuple[Any, str]:
        """Run the function; returns (result, executed version). Handler exceptions propagate, and an
        invocation that overran the function timeout raises LambdaTimeout."""
        self.authorize_invoke(function_name, qualifier)
        fn = self.resolve(function_name, qualifier)
        env = self.environment(fn)
        started = self.clock.time()
        duration_ms = 0.0
        error = False
        with self.clock.hold():
            try:
                result, duration_ms = env.invoke(
                    event, self.clock, log=lambda line: self.log_line(fn.function_name, line)
                )
                return result, str(fn.version)
            except LambdaTimeout:
                error, duration_ms = True, env.timeout * 1000.0
                raise
            except Exception:
                error = True
                raise
            finally:
                alias = qualifier if qualifier and not qualifier.isdigit() and qualifier != "$LATEST" else None
                with self._lock:
                    self._metrics.append((fn.function_name, alias, str(fn.version), duration_ms, error, started))

    def log_line(self, function_name: str, line: str) -> None:
        """A line of a function's stdout. CloudWatch turns embedded-metric-format lines into metrics, at the
        time the line says (the handler read the host clock, which runs at the virtual clock's offset)."""
        if self.log_sink is not None:
            self.log_sink(function_name, line, self.clock.time())
        if line.startswith("{") and '"_aws"' in line:
            try:
                blob = json.loads(line)
            except ValueError:
                blob = None
            if isinstance(blob, dict) and isinstance(blob.get("_aws"), dict):
                stamped = blob["_aws"].get("Timestamp")
                at = self.clock.from_host(stamped / 1000) if isinstance(stamped, (int, float)) else self.clock.time()
                with self._lock:
                    self._emf.append((at, blob))
                return
        logs = self.logs.setdefault(function_name, [])
        logs.append(line)
        del logs[:-1000]

    def flush_metrics(self, cloud: LocalCloud, until: float | None = None) -> None:
        """Write to CloudWatch the invocation metrics and embedded metrics that have reached it by ``until``
        (virtual epoch seconds, default now): those recorded at least ``metric_delay`` seconds earlier."""
        due = (self.clock.time() if until is None else until) - self.metric_delay
        with self._lock:
            batch = [m for m in self._metrics if m[5] <= due]
            self._metrics = [m for m in self._metrics if m[5] > due]
            emf = [e for e in self._emf if e[0] <= due]
            self._emf = [e for e in self._emf if e[0] > due]
        if not batch and not emf:
            return
        cw = cloud.alarms.client
        for namespace, items in emf_metric_data(emf).items():
            for i in range(0, len(items), 1000):
                cw.put_metric_data(Namespace=namespace, MetricData=items[i : i + 1000])
        if batch:
            data = lambda_metric_data(batch)
            for i in range(0, len(data), 1000):
                cw.put_metric_data(Namespace="AWS/Lambda", MetricData=data[i : i + 1000])

    def moto_invoke(self, response: Any) -> tuple[int, dict[str, str], bytes]:
        """Stands in for moto's Lambda ``Invoke`` API (boto3 ``lambda.invoke`` and Step Functions tasks).

        ``Event`` invocations run on a thread and return 202 at once, as Lambda's async invoke does; the
        clock is held for them from the request on.
        """
        from urllib.parse import unquote

        function_name = unquote(response.path.rsplit("/", 2)[-2])
        qualifier = (response.querystring.get("Qualifier") or [None])[0]
        event = json.loads(response.body) if response.body else {}
        if response.headers.get("X-Amz-Invocation-Type") == "Event":
            key = ("event", uuid.uuid4().hex)
            self.clock.acquire(key)
            threading.Thread(
                target=self._invoke_quietly, args=(function_name, qualifier, event, key), daemon=True
            ).start()
            return 202, {"status": "202"}, b""
        try:
            result, version = self.invoke(function_name, qualifier, event)
        except Exception as exc:  # Lambda reports any handler exception as an unhandled function error
            error_type = getattr(exc, "error_type", type(exc).__name__)
            body = json.dumps({"errorMessage": str(exc), "errorType": error_type}).encode()
            return 200, {"x-amz-function-error": "Unhandled", "content-type": "application/json"}, body
        return 200, {"x-amz-executed-version": version, "content-type": "application/json"}, json.dumps(result).encode()

    def _invoke_quietly(self, function_name: str, qualifier: str | None, event: Any, key: Any) -> None:
        # An async invocation's failure is the handler's own to log, as with Lambda's Event invokes. The
        # request's hold passes to this thread (whose own hold lets a sleeping handler release the clock).
        with self.clock.hold():
            self.clock.release(key)
            with contextlib.suppress(Exception):
                self.invoke(function_name, qualifier, event)


def lambda_metric_data(batch: list[tuple[str, str | None, str, float, bool, float]]) -> list[dict[str, Any]]:
    """Invocation records as ``AWS/Lambda`` PutMetricData entries at one-minute resolution: per minute and
    dimension set, Invocations and Errors as statistic sets and Duration as its values (for percentiles)."""
    groups: dict[tuple[float, tuple[tuple[str, str], ...]], list[tuple[float, bool]]] = {}
    for fn, alias, version, ms, error, at in batch:
        minute = float(int(at // 60) * 60)
        dim_sets: list[tuple[tuple[str, str], ...]] = [(("FunctionName", fn),)]
        if alias:
            dim_sets += [
                (("FunctionName", fn), ("Resource", f"{fn}:{alias}")),
                (("FunctionName", fn), ("Resource", f"{fn}:{alias}"), ("ExecutedVersion", version)),
            ]
        for dims in dim_sets:
            groups.setdefault((minute, dims), []).append((ms, error))
    data: list[dict[str, Any]] = []
    for (minute, dims), records in groups.items():
        ts = datetime.fromtimestamp(minute, UTC)
        dimensions = [{"Name": k, "Value": v} for k, v in dims]
        count, errors = float(len(records)), float(sum(e for _, e in records))
        data += [
            {
                "MetricName": "Invocations",
                "Dimensions": dimensions,
                "StatisticValues": {"SampleCount": count, "Sum": count, "Minimum": 1.0, "Maximum": 1.0},
                "Unit": "Count",
                "Timestamp": ts,
            },
            {
                "MetricName": "Errors",
                "Dimensions": dimensions,
                "StatisticValues": {
                    "SampleCount": count,
                    "Sum": errors,
                    "Minimum": float(min(e for _, e in records)),
                    "Maximum": float(max(e for _, e in records)),
                },
                "Unit": "Count",
                "Timestamp": ts,
            },
            {
                "MetricName": "Duration",
                "Dimensions": dimensions,
                "Values": [ms for ms, _ in records],
                "Unit": "Milliseconds",
                "Timestamp": ts,
            },
        ]
    return data


def deploy_inference_version(
    cloud: LocalCloud,
    model: str,
    version: int,
    *,
    function_name: str | None = None,
    environment: dict[str, str] | None = None,
    weight: float | None = None,
) -> tuple[str, str]:
    """One model function without synthesizing the app, for tests and benchmarks (the CLI and the demo
    deploy the synthesized templates instead).

    Creates (or updates) ``{model}-inference`` running ``lambdas.inference.handler.lambda_handler``,
    publishes a Lambda version pinning ``MODEL_VERSION=version`` and points the alias ``live`` at it.
    With ``weight`` the new version only takes that share of ``live``'s traffic (a canary); the alias
    must already exist.

    Returns (function name, published Lambda version).
    """
    import io
    import zipfile

    from modeldeck.deployment import INFERENCE_HANDLER

    lam = cloud.client("lambda")
    name = function_name or f"{model}-inference"
    env = {
        "MODEL_NAME": model,
        "MODEL_VERSION": str(version),
        "MODEL_BUCKET": cloud.bucket,
        "POWERTOOLS_SERVICE_NAME": f"modeldeck-{model}",
        "POWERTOOLS_METRICS_NAMESPACE": "modeldeck",
        **(environment or {}),
    }
    try:
        current = lam.get_function_configuration(FunctionName=name)
    except lam.exceptions.ResourceNotFoundException:
        current = None
    if current is None:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("README", "runs in-process from the working tree")
        lam.create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=cloud.deployer._role(),
            Handler=INFERENCE_HANDLER,
            Code={"ZipFile": buf.getvalue()},
            MemorySize=1024,
            Timeout=10,
            Environment={"Variables": env},
        )
    else:
        merged = {**current.get("Environment", {}).get("Variables", {}), **env}
        lam.update_function_configuration(FunctionName=name, Environment={"Variables": merged})
    capture_delivery(cloud, name)
    published = str(lam.publish_version(FunctionName=name, Description=f"model version {version}")["Version"])
    aliases = {a["Name"]: a for a in lam.list_aliases(FunctionName=name)["Aliases"]}
    if "live" not in aliases:
        lam.create_alias(FunctionName=name, Name="live", FunctionVersion=published)
    elif weight is not None:
        lam.update_alias(
            FunctionName=name,
            Name="live",
            FunctionVersion=aliases["live"]["FunctionVersion"],
            RoutingConfig={"AdditionalVersionWeights": {published: weight}},
        )
    else:
        lam.update_alias(
            FunctionName=name, Name="live", FunctionVersion=published, RoutingConfig={"AdditionalVersionWeights": {}}
        )
    return name, published


def capture_delivery(cloud: LocalCloud, function_name: str) -> None:
    """The capture path ``infra.constructs.capture.CaptureDelivery`` deploys, for a function deployed without
    the templates: its log group's two subscription filters to one delivery stream with the construct's
    prefixes, buffering and processor (``lambdas.capture``). Created once; each function gets its filters."""
    import io
    import zipfile

    from infra.constructs.capture import ERROR_PREFIX, HANDLER, KINDS, PREFIX, PROCESSOR_BUFFER_MB, filter_pattern

    stream = "modeldeck-local-capture"
    if stream not in cloud.firehose.streams:
        lam = cloud.client("lambda")
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("README", "runs in-process from the working tree")
        processor = lam.create_function(
            FunctionName="modeldeck-local-capture-processor",
            Runtime="python3.12",
            Role=cloud.deployer._role(),
            Handler=HANDLER,
            Code={"ZipFile": buf.getvalue()},
            MemorySize=256,
            Timeout=60,
        )["FunctionArn"]
        params = {"LambdaArn": processor, "BufferSizeInMBs": PROCESSOR_BUFFER_MB, "BufferIntervalInSeconds": "60"}
        cloud.firehose.create(
            {
                "DeliveryStreamName": stream,
                "ExtendedS3DestinationConfiguration": {
                    "BucketARN": f"arn:aws:s3:::{cloud.bucket}",
                    "Prefix": PREFIX,
                    "ErrorOutputPrefix": ERROR_PREFIX,
                    "FileExtension": ".jsonl",
                    "BufferingHints": {"IntervalInSeconds": 60, "SizeInMBs": 64},
                    "ProcessingConfiguration": {
                        "Enabled": True,
                        "Processors": [
                            {
                                "Type": "Lambda",
                                "Parameters": [{"ParameterName": k, "ParameterValue": v} for k, v in params.items()],
                            }
                        ],
                    },
                },
            }
        )
    group = f"/aws/lambda/{function_name}"
    cloud.logs.attach(function_name, group)
    for kind in KINDS:
        cloud.logs.put_subscription_filter(
            {
                "LogGroupName": group,
                "FilterName": f"modeldeck-{kind}",
                "FilterPattern": filter_pattern(kind).log_pattern_string,
                "DestinationArn": cloud.firehose.streams[stream].arn,
            }
        )
