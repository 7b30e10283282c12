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

import contextlib
import importlib.util
import json
import logging
import math
import os
import random
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3

LOCAL_REGION = "us-east-1"
LOCAL_BUCKET = "modeldeck-registry-local"
_FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": LOCAL_REGION,
    "AWS_REGION": LOCAL_REGION,
}


# What PutMetricAlarm accepts: alarms are recreated from templates and from saved state with these.
ALARM_ARGUMENTS = frozenset(
    {
        "AlarmName",
        "AlarmDescription",
        "ActionsEnabled",
        "OKActions",
        "AlarmActions",
        "InsufficientDataActions",
        "MetricName",
        "Namespace",
        "Statistic",
        "ExtendedStatistic",
        "Dimensions",
        "Period",
        "Unit",
        "EvaluationPeriods",
        "DatapointsToAlarm",
        "Threshold",
        "ComparisonOperator",
        "TreatMissingData",
        "Metrics",
    }
)
MOTO_CONFIG: Any = {"lambda": {"use_docker": False}, "stepfunctions": {"execute_state_machine": True}}
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
            _restore_environ(saved)


def _restore_environ(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


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
        }
        self.memory, self.timeout = memory, timeout
        module_name, _, self.attr = handler.rpartition(".")
        self.module_name = module_name
        self._module: ModuleType | None = None
        self._cold = True
        self._init_lock = threading.Lock()
        self._busy = threading.Lock()

    def _load(self) -> ModuleType:
        spec = importlib.util.find_spec(self.module_name)
        if spec is None or spec.loader is None:
            raise ImportError(f"Runtime.ImportModuleError: no module {self.module_name!r}")
        unique = f"{self.module_name}@{self.function_name}:{self.version}"
        module = importlib.util.module_from_spec(importlib.util.spec_from_file_location(unique, spec.origin))  # type: ignore[arg-type]
        sys.modules[unique] = module
        module.__spec__.loader.exec_module(module)  # type: ignore[union-attr]
        return module

    def invoke(self, event: Any, log: Callable[[str], None] | None = None) -> Any:
        stdout = sys.stdout
        if log is not None and isinstance(stdout, RoutedStdout):
            with stdout.routed_to(log):
                return self._invoke(event)
        return self._invoke(event)

    def _invoke(self, event: Any) -> Any:
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
        # One invocation at a time per execution environment, as on Lambda (handlers keep per-request
        # state in module globals); concurrency comes from the other versions' environments.
        with self._busy:
            return getattr(self._module, self.attr)(event, context)


def _emf_metric_data(blobs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Embedded-metric-format documents as PutMetricData entries, grouped by namespace."""
    out: dict[str, list[dict[str, Any]]] = {}
    for blob in blobs:
        meta = blob["_aws"]
        ts = datetime.fromtimestamp(meta.get("Timestamp", time.time() * 1000) / 1000, UTC)
        for directive in meta.get("CloudWatchMetrics", []):
            for dim_set in directive.get("Dimensions", [[]]):
                dims = [{"Name": d, "Value": str(blob[d])} for d in dim_set if d in blob]
                for metric in directive.get("Metrics", []):
                    value = blob.get(metric["Name"])
                    values = value if isinstance(value, list) else [value]
                    for v in values:
                        if isinstance(v, (int, float)) and not isinstance(v, bool):
                            out.setdefault(directive["Namespace"], []).append(
                                {
                                    "MetricName": metric["Name"],
                                    "Dimensions": dims,
                                    "Value": float(v),
                                    "Unit": metric.get("Unit", "None"),
                                    "Timestamp": ts,
                                }
                            )
    return out


class LambdaRuntime:
    """Invokes functions of the local cloud in-process, honouring aliases and their routing weights."""

    def __init__(self, account_id: str = "123456789012", region: str = LOCAL_REGION) -> None:
        self.account_id, self.region = account_id, region
        self._envs: dict[tuple[str, str], ExecutionEnvironment] = {}
        self._lock = threading.Lock()
        self.rng = random.Random()
        self.faults: dict[tuple[str, str], Callable[[Any], Any]] = {}
        self._metrics: list[tuple[str, str | None, str, float, bool, datetime]] = []
        self._emf: list[dict[str, Any]] = []
        self.logs: dict[str, list[str]] = {}

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
                self._envs[key] = env
        return env

    def invoke(self, function_name: str, qualifier: str | None, event: Any) -> tuple[Any, str]:
        """Run the function; returns (result, executed version). Handler exceptions propagate.

        Like Lambda, every invocation is counted in the ``AWS/Lambda`` metrics (Invocations, Errors,
        Duration), per alias and per ``ExecutedVersion``; they are written to CloudWatch in batches.
        """
        fn = self.resolve(function_name, qualifier)
        env = self.environment(fn)
        fault = self.faults.get((fn.function_name, str(fn.version))) or self.faults.get(
            (fn.function_name, "model:" + str((fn.environment_vars or {}).get("MODEL_VERSION")))
        )
        started = time.perf_counter()
        error = False
        try:
            if fault is not None:
                event = fault(event)
            return env.invoke(event, log=lambda line: self.log_line(fn.function_name, line)), str(fn.version)
        except Exception:
            error = True
            raise
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            alias = qualifier if qualifier and not qualifier.isdigit() and qualifier != "$LATEST" else None
            with self._lock:
                self._metrics.append((fn.function_name, alias, str(fn.version), elapsed_ms, error, datetime.now(UTC)))

    def log_line(self, function_name: str, line: str) -> None:
        """A line of a function's stdout. CloudWatch turns embedded-metric-format lines into metrics."""
        if line.startswith("{") and '"_aws"' in line:
            try:
                blob = json.loads(line)
            except ValueError:
                blob = None
            if isinstance(blob, dict) and isinstance(blob.get("_aws"), dict):
                with self._lock:
                    self._emf.append(blob)
                return
        logs = self.logs.setdefault(function_name, [])
        logs.append(line)
        del logs[:-1000]

    def inject_fault(self, function_name: str, model_version: str, kind: str) -> None:
        """Demo aid: every invocation of the version pinning ``model_version`` fails, or takes 1.5 s more."""

        def fault(event: Any) -> Any:
            if kind == "errors":
                raise RuntimeError(f"fault injected into model version {model_version} (--inject-fault errors)")
            time.sleep(1.5)
            return event

        self.faults[(function_name, "model:" + model_version)] = fault

    def flush_metrics(self, cloud: LocalCloud) -> None:
        """Write the buffered invocation metrics to CloudWatch, as Lambda's service does."""
        with self._lock:
            batch, self._metrics = self._metrics, []
            emf, self._emf = self._emf, []
        cw = cloud.client("cloudwatch")
        for namespace, items in _emf_metric_data(emf).items():
            for i in range(0, len(items), 1000):
                cw.put_metric_data(Namespace=namespace, MetricData=items[i : i + 1000])
        if not batch:
            return
        data = []
        for fn, alias, version, ms, error, ts in batch:
            dims_sets = [[{"Name": "FunctionName", "Value": fn}]]
            if alias:
                resource = {"Name": "Resource", "Value": f"{fn}:{alias}"}
                dims_sets += [
                    [dims_sets[0][0], resource],
                    [dims_sets[0][0], resource, {"Name": "ExecutedVersion", "Value": version}],
                ]
            for dims in dims_sets:
                data += [
                    {"MetricName": "Invocations", "Dimensions": dims, "Value": 1, "Unit": "Count", "Timestamp": ts},
                    {
                        "MetricName": "Errors",
                        "Dimensions": dims,
                        "Value": float(error),
                        "Unit": "Count",
                        "Timestamp": ts,
                    },
                    {
                        "MetricName": "Duration",
                        "Dimensions": dims,
                        "Value": ms,
                        "Unit": "Milliseconds",
                        "Timestamp": ts,
                    },
                ]
        for i in range(0, len(data), 1000):
            cw.put_metric_data(Namespace="AWS/Lambda", MetricData=data[i : i + 1000])

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
        # An async invocation's failure is the handler's own to log, as with Lambda's Event invokes.
        with contextlib.suppress(Exception):
            self.invoke(function_name, qualifier, event)


class LocalCloud:
    """Handles to the in-process moto cloud, with the registry bucket created."""

    def __init__(self, bucket: str = LOCAL_BUCKET) -> None:
        self.bucket = bucket
        self.region = LOCAL_REGION
        self.lambdas = LambdaRuntime(region=self.region)
        self.alarms = AlarmEvaluator(self)
        self.deployer = TemplateDeployer(self)
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()
        self.capture_sink: CaptureSink | None = None

    def start_capture(self) -> CaptureSink:
        """Deliver the ``modeldeck.capture`` log lines into the bucket, as Logs + Firehose do on AWS."""
        if self.capture_sink is None:
            from modeldeck.capture import CAPTURE_LOGGER

            self.capture_sink = CaptureSink(self)
            capture = logging.getLogger(CAPTURE_LOGGER)
            capture.addHandler(self.capture_sink)
            capture.setLevel(logging.INFO)
            capture.propagate = False
        return self.capture_sink

    def flush_capture(self) -> None:
        """Deliver buffered capture and feedback records to S3 now (tests and the drift job call this)."""
        if self.capture_sink is not None:
            self.capture_sink.flush()

    def stop_capture(self) -> None:
        if self.capture_sink is not None:
            from modeldeck.capture import CAPTURE_LOGGER

            logging.getLogger(CAPTURE_LOGGER).removeHandler(self.capture_sink)
            self.capture_sink.close()
            self.capture_sink = None

    def start_ticker(self, interval: float = 0.5) -> None:
        """Evaluate alarms every ``interval`` seconds in the background, as CloudWatch does continuously."""
        if self._ticker is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.alarms.evaluate()
                except Exception as exc:  # keep evaluating; a bad round must not stop alarms
                    print(f"local cloud: alarm evaluation failed: {exc}", file=sys.stderr)

        self._ticker = threading.Thread(target=loop, name="local-cloudwatch", daemon=True)
        self._ticker.start()

    def stop_ticker(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
            self._ticker = None
        self._stop.clear()

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=self.region)

    def deploy(self, templates: list[dict[str, Any]]) -> None:
        """Deploy the app's synthesized templates; the registry is then the bucket the stacks output."""
        self.deployer.deploy(templates)
        self.bucket = self.deployer.outputs.get("RegistryBucketName", self.bucket)

    def save(self, state_dir: Path) -> None:
        """Persist what commands change: bucket objects, published Lambda versions and aliases, alarms."""
        s3 = self.client("s3")
        for bucket in (b["Name"] for b in s3.list_buckets()["Buckets"]):
            root = state_dir / "s3" / bucket
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                for obj in page.get("Contents", []):
                    path = root / obj["Key"]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
        lam = self.client("lambda")
        functions = {}
        for page in lam.get_paginator("list_functions").paginate():
            for fn in page["Functions"]:
                name = fn["FunctionName"]
                versions = [
                    {"Version": v["Version"], "Environment": v.get("Environment", {}).get("Variables", {})}
                    for v in lam.list_versions_by_function(FunctionName=name)["Versions"]
                    if v["Version"] != "$LATEST"
                ]
                aliases = [
                    {
                        "Name": a["Name"],
                        "FunctionVersion": a["FunctionVersion"],
                        "RoutingConfig": a.get("RoutingConfig") or {"AdditionalVersionWeights": {}},
                    }
                    for a in lam.list_aliases(FunctionName=name)["Aliases"]
                ]
                functions[name] = {"versions": versions, "aliases": aliases}
        alarms = []
        for page in self.client("cloudwatch").get_paginator("describe_alarms").paginate(AlarmTypes=["MetricAlarm"]):
            alarms.extend(page["MetricAlarms"])
        state_dir.mkdir(parents=True, exist_ok=True)
        if functions or not (state_dir / "cloud.json").exists():
            # A command that ran without the app deployed must not erase the deployed state.
            (state_dir / "cloud.json").write_text(json.dumps({"functions": functions, "alarms": alarms}, default=str))

    def restore(self, state_dir: Path) -> None:
        """Replay saved state on top of a fresh deployment (buckets, versions, aliases, alarm states)."""
        s3 = self.client("s3")
        existing = {b["Name"] for b in s3.list_buckets()["Buckets"]}
        root = state_dir / "s3"
        if root.is_dir():
            for bucket_dir in sorted(p for p in root.iterdir() if p.is_dir()):
                if bucket_dir.name not in existing:
                    s3.create_bucket(Bucket=bucket_dir.name)
                for path in sorted(p for p in bucket_dir.rglob("*") if p.is_file()):
                    s3.put_object(
                        Bucket=bucket_dir.name, Key=path.relative_to(bucket_dir).as_posix(), Body=path.read_bytes()
                    )
        saved = state_dir / "cloud.json"
        if not saved.is_file():
            return
        state = json.loads(saved.read_text())
        lam = self.client("lambda")
        for name, fn in state["functions"].items():
            try:
                current = lam.get_function_configuration(FunctionName=name)
            except Exception:  # the function is no longer in the templates
                continue
            published = {v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]}
            base_env = current.get("Environment", {}).get("Variables", {})
            for version in fn["versions"]:
                if version["Version"] in published:
                    continue
                lam.update_function_configuration(FunctionName=name, Environment={"Variables": version["Environment"]})
                lam.publish_version(FunctionName=name)
            lam.update_function_configuration(FunctionName=name, Environment={"Variables": base_env})
            for alias in fn["aliases"]:
                try:
                    lam.update_alias(FunctionName=name, **alias)
                except Exception:
                    lam.create_alias(FunctionName=name, **alias)
        cw = self.client("cloudwatch")
        keys = ALARM_ARGUMENTS
        for alarm in state["alarms"]:
            cw.put_metric_alarm(**{k: v for k, v in alarm.items() if k in keys and v not in (None, [])})
            cw.set_alarm_state(
                AlarmName=alarm["AlarmName"],
                StateValue=alarm["StateValue"],
                StateReason=alarm.get("StateReason") or "restored",
            )


REPO_ROOT = Path(__file__).resolve().parent.parent
_SYNTH_INPUTS = ("app.py", "cdk.json", "infra", "models", "lambdas")


def assembly_templates(
    cdk_out: Path, progress: Callable[[str], None] = lambda msg: None
) -> list[dict[str, Any]] | None:
    """The app's templates, synthesizing the cloud assembly first when it is missing or older than its
    sources. None when there is no CDK app to synthesize. Concurrent callers synthesize once."""
    import fcntl
    import subprocess

    app = REPO_ROOT / "app.py"
    if not app.is_file():
        return None
    cdk_out = cdk_out.resolve()
    cdk_out.parent.mkdir(parents=True, exist_ok=True)
    with open(cdk_out.parent / f".{cdk_out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest = cdk_out / "manifest.json"
        if not manifest.is_file() or manifest.stat().st_mtime < _newest_source():
            progress(f"synthesizing the CDK app into {cdk_out} (once; about 10 s)...")
            # The local cloud runs handlers from the repository, so the Lambda bundles' pip layer is skipped.
            env = {
                **os.environ,
                "CDK_OUTDIR": str(cdk_out),
                "MODELDECK_BUNDLING": "stub",
                "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
            }
            done = subprocess.run([sys.executable, str(app)], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"CDK synth failed:\n{done.stderr[-2000:]}")
        return load_templates(cdk_out)


def _newest_source() -> float:
    paths = (p for name in _SYNTH_INPUTS for p in [REPO_ROOT / name, *(REPO_ROOT / name).rglob("*")])
    return max((p.stat().st_mtime for p in paths if p.is_file() and "__pycache__" not in p.parts), default=0.0)


def load_templates(cdk_out: Path) -> list[dict[str, Any]]:
    """The app's stack templates from a cloud assembly, dependencies first."""
    manifest = json.loads((cdk_out / "manifest.json").read_text())
    stacks = {name: art for name, art in manifest["artifacts"].items() if art["type"] == "aws:cloudformation:stack"}
    ordered: list[str] = []

    def visit(name: str) -> None:
        if name in ordered:
            return
        for dep in stacks[name].get("dependencies", []):
            if dep in stacks:
                visit(dep)
        ordered.append(name)

    for name in sorted(stacks):
        visit(name)
    return [json.loads((cdk_out / stacks[n]["properties"]["templateFile"]).read_text()) for n in ordered]


@contextmanager
def local_cloud(
    state_dir: Path | None = None, bucket: str = LOCAL_BUCKET, templates: list[dict[str, Any]] | None = None
) -> Iterator[LocalCloud]:
    """Start moto in-process (fake credentials, no network), deploy ``templates`` into it, and restore the
    state saved in ``state_dir`` on top (saved again on exit)."""
    from unittest import mock

    from moto import mock_aws  # moto is heavy; only local mode pays for it.
    from moto.awslambda.responses import LambdaResponse

    saved = {k: os.environ.get(k) for k in _FAKE_ENV}
    os.environ.update(_FAKE_ENV)
    cloud = LocalCloud(bucket)

    def invoke(response: Any) -> tuple[int, dict[str, str], bytes]:
        return cloud.lambdas.moto_invoke(response)

    # Step Functions' engine logs every failed state as an ERROR; executions report failures themselves.
    logging.getLogger("moto.stepfunctions").setLevel(logging.CRITICAL)
    previous_stdout = sys.stdout
    if not isinstance(sys.stdout, RoutedStdout):
        # One router per process: loggers keep the stream they were created with, and Python's logging
        # shares a logger (and its handler) between every instance of a handler module with that name.
        _ROUTER.passthrough = sys.stdout
        sys.stdout = _ROUTER
    try:
        with mock_aws(config=MOTO_CONFIG), mock.patch.object(LambdaResponse, "invoke", invoke):
            cloud.client("s3").create_bucket(Bucket=bucket)
            if templates:
                cloud.deploy(templates)
            if state_dir is not None:
                cloud.restore(state_dir)
            cloud.start_capture()
            try:
                yield cloud
            finally:
                cloud.stop_ticker()
                cloud.stop_capture()
            if state_dir is not None:
                cloud.save(state_dir)
    finally:
        sys.stdout = previous_stdout
        _restore_environ(saved)


class TemplateDeployer:
    """Deploys synthesized CloudFormation templates into the local cloud, resource by resource.

    moto's own CloudFormation cannot take a CDK template (no Lambda aliases, alarms or bucket policies;
    state machines it creates are invisible to the executing backend), so this walks the template itself:
    it resolves the intrinsic functions CDK emits and creates each resource through the ordinary API.
    Resource types with no local behaviour (IAM, log groups, dashboards, API Gateway — emulated by the
    gateway) are recorded but not created.
    """

    def __init__(self, cloud: LocalCloud, account_id: str = "123456789012") -> None:
        self.cloud = cloud
        self.account_id = account_id
        self.physical: dict[str, Any] = {}
        self.arns: dict[str, str] = {}
        self.outputs: dict[str, str] = {}
        self.exports: dict[str, Any] = {}
        self.resources: dict[str, dict[str, Any]] = {}
        self._role_arn: str | None = None

    # -- intrinsic functions -------------------------------------------------------------------------
    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self._ref(arg)
            if key == "Fn::GetAtt":
                logical, attr = arg if isinstance(arg, list) else arg.split(".", 1)
                return self._get_att(logical, attr)
            if key == "Fn::Join":
                sep, parts = arg
                return sep.join(str(p) for p in self.resolve(parts))
            if key == "Fn::Select":
                index, items = arg
                return self.resolve(items)[int(self.resolve(index))]
            if key == "Fn::Split":
                sep, text = arg
                return str(self.resolve(text)).split(sep)
            if key == "Fn::Sub":
                return self._sub(arg)
            if key == "Fn::ImportValue":
                return self.exports[self.resolve(arg)]
            if key == "Fn::If":
                raise NotImplementedError("conditions are not used by modeldeck's templates")
        return {k: self.resolve(v) for k, v in value.items()}

    def _ref(self, name: str) -> Any:
        pseudo = {
            "AWS::Region": self.cloud.region,
            "AWS::AccountId": self.account_id,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": "local",
            "AWS::NoValue": None,
        }
        if name in pseudo:
            return pseudo[name]
        return self.physical.get(name, name)

    def _get_att(self, logical: str, attr: str) -> Any:
        if attr == "Arn" and logical in self.arns:
            return self.arns[logical]
        if attr in ("Name", "TopicName") and logical in self.physical:
            return self.physical[logical]
        return self.arns.get(logical, self.physical.get(logical, f"{logical}.{attr}"))

    def _sub(self, arg: Any) -> str:
        import re as _re

        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))

        def repl(match: Any) -> str:
            name = match.group(1)
            if name in variables:
                return str(variables[name])
            if "." in name:
                logical, attr = name.split(".", 1)
                return str(self._get_att(logical, attr))
            return str(self._ref(name))

        return _re.sub(r"\$\{([^}!]+)\}", repl, text)

    # -- resources -----------------------------------------------------------------------------------
    def deploy(self, templates: list[dict[str, Any]]) -> None:
        """Deploy templates in order (dependencies first, as CDK lists stacks)."""
        for template in templates:
            resources = template.get("Resources", {})
            self.resources.update(resources)
            for logical in self._order(resources):
                self._create(logical, resources[logical])
            for name, output in template.get("Outputs", {}).items():
                value = self.resolve(output["Value"])
                self.outputs[name] = value
                if "Export" in output:
                    self.exports[self.resolve(output["Export"]["Name"])] = value

    @staticmethod
    def _order(resources: dict[str, Any]) -> list[str]:
        """Topological order by Ref/GetAtt/DependsOn, so a resource is created after what it names."""

        def deps(node: Any, out: set[str]) -> set[str]:
            if isinstance(node, dict):
                for key, val in node.items():
                    if key == "Ref" and isinstance(val, str) and val in resources:
                        out.add(val)
                    elif key == "Fn::GetAtt":
                        name = val[0] if isinstance(val, list) else str(val).split(".", 1)[0]
                        if name in resources:
                            out.add(name)
                    elif key == "Fn::Sub":
                        import re as _re

                        text = val if isinstance(val, str) else val[0]
                        out.update(
                            n.split(".")[0]
                            for n in _re.findall(r"\$\{([^}!]+)\}", text)
                            if n.split(".")[0] in resources
                        )
                        if not isinstance(val, str):
                            deps(val[1], out)
                    else:
                        deps(val, out)
            elif isinstance(node, list):
                for item in node:
                    deps(item, out)
            return out

        graph = {}
        for name, res in resources.items():
            found = deps(res.get("Properties", {}), set())
            extra = res.get("DependsOn", [])
            found.update([extra] if isinstance(extra, str) else extra)
            graph[name] = {d for d in found if d in resources and d != name}
        ordered: list[str] = []
        visiting: set[str] = set()

        def visit(name: str) -> None:
            if name in ordered or name in visiting:
                return
            visiting.add(name)
            for dep in sorted(graph[name]):
                visit(dep)
            visiting.discard(name)
            ordered.append(name)

        for name in sorted(graph):
            visit(name)
        return ordered

    def _role(self) -> str:
        if self._role_arn is None:
            iam = self.cloud.client("iam")
            try:
                self._role_arn = iam.get_role(RoleName="modeldeck-local")["Role"]["Arn"]
            except Exception:  # moto raises NoSuchEntity
                doc = json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Action": "sts:AssumeRole",
                                "Principal": {"Service": ["lambda.amazonaws.com", "states.amazonaws.com"]},
                            }
                        ],
                    }
                )
                self._role_arn = iam.create_role(RoleName="modeldeck-local", AssumeRolePolicyDocument=doc)["Role"][
                    "Arn"
                ]
        return self._role_arn

    def _name(self, logical: str, explicit: Any, limit: int = 64, lower: bool = False) -> str:
        name = str(self.resolve(explicit)) if explicit else f"local-{logical}"
        name = name[:limit]
        return name.lower() if lower else name

    def _create(self, logical: str, resource: dict[str, Any]) -> None:
        kind = resource["Type"]
        props = resource.get("Properties", {})
        handler = getattr(self, "_create_" + kind.replace("::", "_").replace("AWS_", "", 1), None)
        if handler is not None:
            handler(logical, props)

    def _create_S3_Bucket(self, logical: str, props: dict[str, Any]) -> None:
        name = self._name(logical, props.get("BucketName"), 63, lower=True).replace("_", "-")
        s3 = self.cloud.client("s3")
        try:
            s3.create_bucket(Bucket=name)
        except Exception as exc:  # an existing bucket (restored state) is fine
            if "BucketAlreadyOwnedByYou" not in str(exc):
                raise
        self.physical[logical] = name
        self.arns[logical] = f"arn:aws:s3:::{name}"

    def _create_Lambda_Function(self, logical: str, props: dict[str, Any]) -> None:
        import io
        import zipfile

        name = self._name(logical, props.get("FunctionName"))
        env = {k: str(v) for k, v in (self.resolve(props.get("Environment", {})).get("Variables") or {}).items()}
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("README.txt", "Local cloud: the handler runs in-process from the repository.")
        spec: dict[str, Any] = {
            "FunctionName": name,
            "Role": self._role(),
            "Environment": {"Variables": env},
            "MemorySize": int(props.get("MemorySize", 128)),
            "Timeout": int(props.get("Timeout", 3)),
            "Description": logical,
        }
        if props.get("PackageType") == "Image" or "ImageConfig" in props:
            spec.update(
                PackageType="Image",
                Code={"ImageUri": f"{self.account_id}.dkr.ecr.local/{name}:latest"},
                ImageConfig=self.resolve(props.get("ImageConfig", {})),
            )
        else:
            spec.update(
                Runtime=props.get("Runtime", "python3.12"), Handler=props["Handler"], Code={"ZipFile": buf.getvalue()}
            )
        fn = self.cloud.client("lambda").create_function(**spec)
        self.physical[logical] = name
        self.arns[logical] = fn["FunctionArn"]

    def _create_Lambda_Version(self, logical: str, props: dict[str, Any]) -> None:
        fn_name = self._fn_name(self.resolve(props["FunctionName"]))
        version = self.cloud.client("lambda").publish_version(FunctionName=fn_name)
        self.physical[logical] = version["FunctionArn"]
        self.arns[logical] = version["FunctionArn"]
        self.versions = getattr(self, "versions", {})
        self.versions[logical] = version["Version"]

    def _fn_name(self, ref: str) -> str:
        return ref.split(":")[6] if ref.startswith("arn:") else ref

    def _create_Lambda_Alias(self, logical: str, props: dict[str, Any]) -> None:
        fn_name = self._fn_name(self.resolve(props["FunctionName"]))
        version = str(self.resolve(props["FunctionVersion"])).rsplit(":", 1)[-1]
        alias = self.cloud.client("lambda").create_alias(
            FunctionName=fn_name, Name=props["Name"], FunctionVersion=version
        )
        self.physical[logical] = alias["AliasArn"]
        self.arns[logical] = alias["AliasArn"]

    def _create_SNS_Topic(self, logical: str, props: dict[str, Any]) -> None:
        arn = self.cloud.client("sns").create_topic(Name=self._name(logical, props.get("TopicName"), 256))["TopicArn"]
        self.physical[logical] = arn
        self.arns[logical] = arn

    def _create_StepFunctions_StateMachine(self, logical: str, props: dict[str, Any]) -> None:
        definition = props.get("DefinitionString")
        text = self.resolve(definition) if not isinstance(definition, str) else definition
        for key, value in (self.resolve(props.get("DefinitionSubstitutions") or {})).items():
            text = text.replace("${" + key + "}", str(value))
        name = self._name(logical, props.get("StateMachineName"), 80)
        arn = self.cloud.client("stepfunctions").create_state_machine(name=name, definition=text, roleArn=self._role())[
            "stateMachineArn"
        ]
        self.physical[logical] = arn
        self.arns[logical] = arn

    def _create_CloudWatch_Alarm(self, logical: str, props: dict[str, Any]) -> None:
        p = self.resolve(props)
        allowed = ALARM_ARGUMENTS
        args = {k: v for k, v in p.items() if k in allowed}
        args.setdefault("AlarmName", f"local-{logical}")
        self.cloud.client("cloudwatch").put_metric_alarm(**args)
        self.physical[logical] = args["AlarmName"]
        self.arns[logical] = f"arn:aws:cloudwatch:{self.cloud.region}:{self.account_id}:alarm:{args['AlarmName']}"

    def _create_Events_Rule(self, logical: str, props: dict[str, Any]) -> None:
        """Rules on alarm state changes are kept for the alarm evaluator, which delivers events to them."""
        rule = self.resolve(props)
        if rule.get("EventPattern"):
            self.cloud.alarms.rules.append(rule)
        self.physical[logical] = rule.get("Name", f"local-{logical}")


class AlarmEvaluator:
    """Evaluates CloudWatch alarms against stored metrics, as CloudWatch would; moto stores alarms but
    never evaluates them, and never fires their actions.

    For each alarm it takes the most recent ``EvaluationPeriods`` periods of its metric (or metric-math
    expression), applies ``DatapointsToAlarm`` and ``TreatMissingData``, sets the state, and on a change
    publishes CloudWatch's alarm JSON to the alarm's SNS actions and emits the state-change event to
    matching EventBridge rules (whose targets are started).
    """

    _SAFE_EXPR = re.compile(r"^[A-Za-z0-9_ +\-*/().,]+$")

    def __init__(self, cloud: LocalCloud) -> None:
        self.cloud = cloud
        self.rules: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    @property
    def backend(self) -> Any:
        from moto.cloudwatch.models import cloudwatch_backends

        return cloudwatch_backends[self.cloud.lambdas.account_id][self.cloud.region]

    def _values(
        self, namespace: str, name: str, dims: list[dict[str, str]], start: datetime, end: datetime
    ) -> list[float]:
        wanted = {(d["Name"], d["Value"]) for d in dims}
        out = []
        for datum in list(self.backend.metric_data):
            if datum.namespace != namespace or datum.name != name or not hasattr(datum, "value"):
                continue
            if {(d.name, d.value) for d in datum.dimensions} != wanted:
                continue
            ts = datum.timestamp
            if isinstance(ts, str):
                ts = datetime.fromisoformat(ts.replace("Z", "+00:00"))
            if ts.tzinfo is None:
                ts = ts.replace(tzinfo=UTC)
            if start <= ts < end:
                out.append(float(datum.value))
        return out

    @staticmethod
    def _stat(values: list[float], stat: str) -> float | None:
        if not values:
            return None
        if stat == "Sum":
            return float(sum(values))
        if stat == "Average":
            return float(sum(values) / len(values))
        if stat == "SampleCount":
            return float(len(values))
        if stat == "Maximum":
            return max(values)
        if stat == "Minimum":
            return min(values)
        if stat.startswith("p"):
            ordered = sorted(values)
            rank = max(0, math.ceil(float(stat[1:]) / 100 * len(ordered)) - 1)
            return ordered[rank]
        raise ValueError(f"unsupported statistic {stat}")

    def _period_value(self, alarm: dict[str, Any], start: datetime, end: datetime) -> float | None:
        if alarm.get("Metrics"):
            values: dict[str, float | None] = {}
            expression = None
            for query in alarm["Metrics"]:
                if "MetricStat" in query:
                    stat = query["MetricStat"]
                    metric = stat["Metric"]
                    values[query["Id"]] = self._stat(
                        self._values(
                            metric["Namespace"], metric["MetricName"], metric.get("Dimensions", []), start, end
                        ),
                        stat["Stat"],
                    )
                if query.get("ReturnData", True) and "Expression" in query:
                    expression = query["Expression"]
            if expression is None or any(v is None for v in values.values()):
                return None
            if not self._SAFE_EXPR.match(expression):
                raise ValueError(f"unsupported metric math {expression!r}")
            return float(eval(expression, {"__builtins__": {}, "ABS": abs}, dict(values)))
        stat = alarm.get("ExtendedStatistic") or alarm.get("Statistic", "Average")
        return self._stat(
            self._values(alarm["Namespace"], alarm["MetricName"], alarm.get("Dimensions", []), start, end), stat
        )

    @staticmethod
    def _breaches(value: float, alarm: dict[str, Any]) -> bool:
        threshold, op = float(alarm["Threshold"]), alarm["ComparisonOperator"]
        return {
            "GreaterThanThreshold": value > threshold,
            "GreaterThanOrEqualToThreshold": value >= threshold,
            "LessThanThreshold": value < threshold,
            "LessThanOrEqualToThreshold": value <= threshold,
        }[op]

    def state_of(self, alarm: dict[str, Any], now: datetime) -> tuple[str, str]:
        """The state an alarm should be in now, and the reason CloudWatch would give."""
        period = int(alarm.get("Period") or (alarm.get("Metrics") or [{}])[0].get("MetricStat", {}).get("Period", 60))
        periods = int(alarm.get("EvaluationPeriods", 1))
        needed = int(alarm.get("DatapointsToAlarm") or periods)
        missing = alarm.get("TreatMissingData", "missing")
        values = [
            self._period_value(alarm, now - timedelta(seconds=period * (i + 1)), now - timedelta(seconds=period * i))
            for i in range(periods)
        ]
        present = [v for v in values if v is not None]
        breaching = sum(1 for v in present if self._breaches(v, alarm))
        if missing == "breaching":
            breaching += len(values) - len(present)
        if breaching >= needed:
            shown = ", ".join(f"{v:g}" for v in present) or "missing data"
            return "ALARM", (
                f"Threshold Crossed: {breaching} of the last {periods} datapoint(s) [{shown}] were "
                f"{alarm['ComparisonOperator']} the threshold ({float(alarm['Threshold']):g})."
            )
        if not present and missing == "missing":
            return "INSUFFICIENT_DATA", "Insufficient Data: no datapoints were received."
        return "OK", f"Threshold Crossed: {len(present)} datapoint(s) within the threshold."

    def evaluate(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """One evaluation round over every alarm; returns the state changes it made."""
        now = now or datetime.now(UTC)
        self.cloud.lambdas.flush_metrics(self.cloud)
        cw = self.cloud.client("cloudwatch")
        changes = []
        for page in cw.get_paginator("describe_alarms").paginate(AlarmTypes=["MetricAlarm"]):
            for alarm in page["MetricAlarms"]:
                state, reason = self.state_of(alarm, now)
                if state == alarm["StateValue"]:
                    continue
                cw.set_alarm_state(AlarmName=alarm["AlarmName"], StateValue=state, StateReason=reason)
                change = {"alarm": alarm, "old": alarm["StateValue"], "new": state, "reason": reason, "at": now}
                changes.append(change)
                self._dispatch(change)
        return changes

    def _dispatch(self, change: dict[str, Any]) -> None:
        alarm, new = change["alarm"], change["new"]
        actions = {
            "ALARM": alarm.get("AlarmActions"),
            "OK": alarm.get("OKActions"),
            "INSUFFICIENT_DATA": alarm.get("InsufficientDataActions"),
        }.get(new) or []
        message = json.dumps(
            {
                "AlarmName": alarm["AlarmName"],
                "AlarmDescription": alarm.get("AlarmDescription"),
                "NewStateValue": new,
                "OldStateValue": change["old"],
                "NewStateReason": change["reason"],
                "StateChangeTime": change["at"].isoformat(),
                "Region": self.cloud.region,
                "Trigger": {
                    k: alarm.get(k)
                    for k in (
                        "MetricName",
                        "Namespace",
                        "Statistic",
                        "ExtendedStatistic",
                        "Dimensions",
                        "Period",
                        "EvaluationPeriods",
                        "Threshold",
                        "ComparisonOperator",
                        "TreatMissingData",
                    )
                    if alarm.get(k) is not None
                },
            },
            default=str,
        )
        sns = self.cloud.client("sns")
        for arn in actions:
            if ":sns:" in arn and alarm.get("ActionsEnabled", True):
                sns.publish(
                    TopicArn=arn, Subject=f'{new}: "{alarm["AlarmName"]}" in {self.cloud.region}'[:99], Message=message
                )
        event = {
            "source": "aws.cloudwatch",
            "detail-type": "CloudWatch Alarm State Change",
            "detail": {
                "alarmName": alarm["AlarmName"],
                "state": {"value": new, "reason": change["reason"]},
                "previousState": {"value": change["old"]},
            },
        }
        self.events.append(event)
        for rule in self.rules:
            if _matches(rule.get("EventPattern") or {}, event):
                for target in rule.get("Targets", []):
                    if ":states:" in str(target.get("Arn")):
                        self.cloud.client("stepfunctions").start_execution(
                            stateMachineArn=target["Arn"], input=target.get("Input") or json.dumps(event)
                        )


def _matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    """EventBridge pattern matching for the subset modeldeck uses: nested keys and value lists."""
    for key, expected in pattern.items():
        value = event.get(key)
        if isinstance(expected, dict):
            if not isinstance(value, dict) or not _matches(expected, value):
                return False
        elif isinstance(expected, list):
            if value not in expected:
                return False
        elif value != expected:
            return False
    return True


class CaptureSink(logging.Handler):
    """The local stand-in for CloudWatch Logs → subscription filter → Firehose → S3.

    Attached to the ``modeldeck.capture`` logger while a local cloud is active, it buffers capture and
    feedback records and writes them as ``.jsonl`` batches into the registry bucket under
    ``capture.partition_key(kind, model, ts)`` (``{kind}/{model}/dt=.../hour=.../{batch}.jsonl``), as
    Firehose's dynamic partitioning does. A background thread flushes every ``interval`` seconds or when
    ``max_records`` are waiting; ``flush()`` delivers everything now. A record is taken out of the buffer
    exactly once, and put back if its batch could not be written, so none is lost or duplicated.
    """

    def __init__(self, cloud: LocalCloud, max_records: int = 500, interval: float = 1.0) -> None:
        super().__init__(level=logging.INFO)
        self.cloud = cloud
        self.max_records, self.interval = max_records, interval
        self._buffer: list[dict[str, Any]] = []
        self._buffer_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._s3 = cloud.client("s3")
        self.delivered: list[str] = []
        self._thread = threading.Thread(target=self._loop, name="local-capture-delivery", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = json.loads(record.getMessage())
        except (TypeError, ValueError):
            return  # not a record: the subscription filter would not match it either
        if not isinstance(data, dict) or data.get("kind") not in ("capture", "feedback") or not data.get("model"):
            return
        with self._buffer_lock:
            self._buffer.append(data)
            full = len(self._buffer) >= self.max_records
        if full:
            self._wake.set()

    def _loop(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception as exc:  # keep delivering; the batch went back into the buffer
                print(f"local cloud: capture delivery failed, will retry: {exc}", file=sys.stderr)

    def flush(self) -> None:
        """Write every buffered record to S3 now (one object per kind, model and hour)."""
        from modeldeck.capture import encode_batch, parse_ts, partition_key

        with self._write_lock:
            with self._buffer_lock:
                batch, self._buffer = self._buffer, []
            groups: dict[str, list[dict[str, Any]]] = {}
            for rec in batch:
                try:
                    ts = parse_ts(rec["ts"])
                except (KeyError, TypeError, ValueError):
                    ts = datetime.now(UTC)
                groups.setdefault(partition_key(rec["kind"], rec["model"], ts), []).append(rec)
            pending = list(groups.items())
            try:
                while pending:
                    prefix, records = pending[0]
                    key = f"{prefix}{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.jsonl"
                    self._s3.put_object(
                        Bucket=self.cloud.bucket,
                        Key=key,
                        Body=encode_batch(records),
                        ContentType="application/x-ndjson",
                    )
                    self.delivered.append(key)
                    pending.pop(0)
            finally:
                if pending:
                    with self._buffer_lock:
                        self._buffer[:0] = [r for _, records in pending for r in records]

    def close(self) -> None:
        """Stop the delivery thread and deliver what is left."""
        self._closed.set()
        self._wake.set()
        self._thread.join(timeout=5)
        self.flush()
        super().close()


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


ENDPOINT_FILE = "endpoint.json"


class SharedEndpoint:
    """While ``modeldeck serve`` runs, its local cloud is also an AWS endpoint on 127.0.0.1, so other
    commands act on the very same state instead of starting a cloud of their own.

    moto's server and the in-process mock share moto's backends, so a request through the endpoint
    reaches the same buckets, functions and state machines, and Lambda invocations still run in-process,
    in the serving process.
    """

    def __init__(self, cloud: LocalCloud, state_dir: Path) -> None:
        from moto.server import ThreadedMotoServer

        self.path = state_dir / ENDPOINT_FILE
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access line per AWS call
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path.write_text(
            json.dumps({"url": self.url, "pid": os.getpid(), "bucket": cloud.bucket, "outputs": cloud.deployer.outputs})
        )

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
        self.server.stop()


def running_endpoint(state_dir: Path) -> dict[str, Any] | None:
    """The endpoint a running ``modeldeck serve`` published for ``state_dir``, if it still answers."""
    import socket
    from urllib.parse import urlsplit

    try:
        endpoint = json.loads((state_dir / ENDPOINT_FILE).read_text())
        os.kill(int(endpoint["pid"]), 0)
        address = urlsplit(endpoint["url"])
        with socket.create_connection((address.hostname, address.port), timeout=2):
            return dict(endpoint)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def endpoint_client_factory(url: str) -> Callable[[str], Any]:
    """boto3 clients for a shared local endpoint (fake credentials; path-style S3)."""
    from botocore.config import Config

    session = boto3.Session(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        aws_session_token="testing",
        region_name=LOCAL_REGION,
    )
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2})
    return lambda service: session.client(service, endpoint_url=url, config=config)
