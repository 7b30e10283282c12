"""Typed deployment configuration, read once from the CDK context (``cdk.json`` → ``context.modeldeck``).

``app.py`` calls :func:`load_config` and passes the resulting frozen dataclasses down to the stacks as
plain values; no construct reads the context or the environment itself. Every key has a default except
the ones listed as required in :data:`REQUIRED`; a missing required key, an unknown key or a value of
the wrong type or range fails synthesis with a :class:`ConfigError` naming the key by its full path
(``modeldeck.drift.psi_threshold``), all problems at once.

Per-key overrides on the command line use ``-c modeldeck:<path>=<value>``, for example
``-c modeldeck:stage=prod`` or ``-c modeldeck:lambda.architecture=x86_64``; the value is parsed as JSON
when it is valid JSON, otherwise taken as a string.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modeldeck.byo import ByoSpec, load_any_spec
from modeldeck.cloudwatch_timing import METRIC_DELAY_SECONDS, minimum_bake_seconds
from modeldeck.errors import SpecError

CONTEXT_KEY = "modeldeck"
OVERRIDE_PREFIX = "modeldeck:"
STAGE_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
SCHEDULE_RE = re.compile(r"^(rate\(\d+ (minute|minutes|hour|hours|day|days)\)|cron\([^)]+\))$")
REGION_RE = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
ACCOUNT_RE = re.compile(r"^\d{12}$")
STRATEGIES = ("canary", "linear", "all-at-once", "shadow")
# Canary alarm periods: Lambda's metrics have one-minute resolution, so whole minutes; an alarm's periods
# times its evaluation periods may not exceed a day ("Using Amazon CloudWatch alarms").
ALARM_PERIODS = (60, 120, 180, 300, 600, 900, 1800, 3600)
# The release state machine's execution timeout is never shorter than this, so `modeldeck release` can run
# a plan longer than the configured one (the CLI refuses what does not fit).
RELEASE_TIMEOUT_FLOOR_MINUTES = 6 * 60
ARCHITECTURES = ("arm64", "x86_64")
COMPUTES = ("lambda", "sagemaker")
BUNDLINGS = ("full", "stub")
# CloudWatch Logs only accepts these retention periods (days).
RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)
REQUIRED = ("stage",)


def pascal(name: str) -> str:
    """A model name as a PascalCase construct id part (``breast-cancer`` → ``BreastCancer``)."""
    return "".join(part.capitalize() for part in name.split("-"))


class ConfigError(ValueError):
    """The CDK context is missing a key or holds an invalid value; the message names every key."""


@dataclass(frozen=True)
class ModelConfig:
    """One served model, from its spec file in ``models/``."""

    name: str
    task: str
    features: tuple[str, ...]
    primary_metric: str
    spec_file: str
    spec_payload: Mapping[str, Any]
    initial_version: str = "0"
    dataset_s3: str | None = None
    dataset_version_id: str | None = None
    byo: bool = False  # brought by `modeldeck register` (modeldeck.byo): served and released, never retrained


@dataclass(frozen=True)
class LambdaConfig:
    memory_mb: int = 1024
    architecture: str = "arm64"
    reserved_concurrency: int | None = None
    snap_start: bool = False
    timeout_seconds: int = 10


@dataclass(frozen=True)
class ApiConfig:
    throttle_rate: float = 100.0
    throttle_burst: int = 200
    quota_per_day: int = 1_000_000
    max_rows: int = 1000


@dataclass(frozen=True)
class CanaryConfig:
    """The release policy: the plan (strategy, steps, weight, bake) and the canary alarms' thresholds.

    The canary errors alarm is a server-error rate (5xx answers per request, in percent) that may breach
    only with at least ``min_requests`` requests in a period; latency uses ``alarms.latency_p99_ms``.
    """

    strategy: str = "canary"
    steps: int = 1
    weight: float = 0.1
    bake_minutes: int = 10
    error_rate_percent: float = 5.0
    min_requests: int = 10
    prediction_shift: float = 0.15
    period_seconds: int = 60
    # The statistical gate: sequential tests of the candidate against the champion during the bake.
    gate_enabled: bool = True
    gate_alpha: float = 0.05
    gate_interval_seconds: int = 60
    gate_latency_margin_percent: float = 20.0


@dataclass(frozen=True)
class DriftConfig:
    psi_threshold: float = 0.2
    drifted_share: float = 0.3
    alpha: float = 0.01
    bonferroni: bool = True
    min_sample_size: int = 200
    window_hours: int = 24
    schedule: str = "rate(1 hour)"
    accuracy_threshold: float | None = None
    prediction_drift_threshold: float = 0.2


@dataclass(frozen=True)
class TrainingConfig:
    compute: str = "lambda"
    instance_type: str = "ml.m5.large"
    sagemaker_image: str | None = None
    schedule: str | None = None
    retrain_on_drift: bool = False
    manual_approval: bool = False
    memory_mb: int = 3008
    timeout_minutes: int = 15


@dataclass(frozen=True)
class AlarmConfig:
    emails: tuple[str, ...] = ()
    error_threshold: int = 5
    latency_p99_ms: int = 1000
    throttle_threshold: int = 1


@dataclass(frozen=True)
class CaptureConfig:
    sample_rate: float = 1.0
    redact: tuple[str, ...] = ()
    buffer_seconds: int = 60
    buffer_mb: int = 64


@dataclass(frozen=True)
class BatchConfig:
    """Batch scoring (``modeldeck predict MODEL --input s3://… --output s3://…``). ``input``/``output`` are the
    S3 locations the batch may read and write (default: ``batch/input/`` and ``batch/output/`` of the registry
    bucket); its roles are granted those prefixes and nothing wider."""

    input: str | None = None
    output: str | None = None
    max_concurrency: int = 100
    files_per_batch: int = 10
    tolerated_failure_percent: float = 0.0
    memory_mb: int = 3008
    timeout_minutes: int = 15


@dataclass(frozen=True)
class Config:
    """Everything the stacks need, validated. Build it with :func:`load_config`."""

    stage: str
    models: tuple[ModelConfig, ...]
    account: str | None = None
    region: str | None = None
    lambda_: LambdaConfig = field(default_factory=LambdaConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    canary: CanaryConfig = field(default_factory=CanaryConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    alarms: AlarmConfig = field(default_factory=AlarmConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    log_retention_days: int = 30
    bundling: str = "full"

    @property
    def prefix(self) -> str:
        """Physical-name prefix, so the names a local emulator or the CLI needs are predictable."""
        return f"modeldeck-{self.stage}"

    def function_name(self, model: str) -> str:
        return f"{self.prefix}-{model}"

    @property
    def release_timeout_minutes(self) -> int:
        """The release state machine's execution timeout: the configured plan's longest run (every bake and
        its metric settle time, plus the tasks; ``modeldeck.release.plan_seconds``), at least 6 hours."""
        from modeldeck.release import plan_seconds

        c = self.canary
        needed = plan_seconds(c.strategy, c.steps, c.bake_minutes * 60, c.period_seconds)
        return max(RELEASE_TIMEOUT_FLOOR_MINUTES, -(-needed // 60))


class _Reader:
    """Takes typed values out of nested tables, recording every problem with its full key path."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def table(self, raw: Mapping[str, Any], path: str, key: str, allowed: set[str]) -> Mapping[str, Any]:
        value = raw.get(key, {})
        full = f"{path}.{key}"
        if not isinstance(value, Mapping):
            self.fail(full, f"must be an object, got {type(value).__name__}")
            return {}
        for unknown in sorted(set(value) - allowed):
            self.fail(f"{full}.{unknown}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
        return value

    def take(
        self,
        raw: Mapping[str, Any],
        path: str,
        key: str,
        kind: type | tuple[type, ...],
        default: Any = ...,
        *,
        lo: float | None = None,
        hi: float | None = None,
        choices: tuple[Any, ...] | None = None,
        pattern: re.Pattern[str] | None = None,
    ) -> Any:
        full = f"{path}.{key}"
        if key not in raw or (raw[key] is None and default is not ...):
            if default is ...:
                self.fail(full, "is required")
                return None
            return default
        value: Any = raw[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        # bool is an int in Python: `memory_mb = true` is a mistake, not 1.
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            names = "/".join(k.__name__ for k in kinds)
            self.fail(full, f"must be {names}, got {type(value).__name__} {value!r}")
            return default if default is not ... else None
        return self._check(full, value, lo, hi, choices, pattern)

    def _check(
        self,
        full: str,
        value: Any,
        lo: float | None,
        hi: float | None,
        choices: tuple[Any, ...] | None,
        pattern: re.Pattern[str] | None,
    ) -> Any:
        if choices is not None and value not in choices:
            self.fail(full, f"must be one of {', '.join(map(str, choices))}, got {value!r}")
        if lo is not None and value < lo:
            self.fail(full, f"must be >= {lo}, got {value!r}")
        if hi is not None and value > hi:
            self.fail(full, f"must be <= {hi}, got {value!r}")
        if pattern is not None and not pattern.match(value):
            self.fail(full, f"invalid value {value!r} (expected to match {pattern.pattern})")
        return value

    def strings(
        self, raw: Mapping[str, Any], path: str, key: str, pattern: re.Pattern[str] | None = None
    ) -> tuple[str, ...]:
        value = raw.get(key, [])
        full = f"{path}.{key}"
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(full, f"must be a list of strings, got {value!r}")
            return ()
        for item in value:
            if pattern is not None and not pattern.match(item):
                self.fail(full, f"invalid entry {item!r}")
        return tuple(value)


def merge_overrides(raw: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """Apply ``modeldeck:<dotted.path>=<value>`` context entries on top of the ``modeldeck`` object."""
    merged: dict[str, Any] = copy.deepcopy(dict(raw))
    for key, value in context.items():
        if not key.startswith(OVERRIDE_PREFIX):
            continue
        if isinstance(value, str):
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        parts = key[len(OVERRIDE_PREFIX) :].split(".")
        node = merged
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return merged


def load_config(raw: Any, *, repo_root: Path, account: str | None = None, region: str | None = None) -> Config:
    """Validate the ``modeldeck`` context object and load the model specs it names.

    ``account``/``region`` come from ``CDK_DEFAULT_ACCOUNT``/``CDK_DEFAULT_REGION`` in ``app.py``; both may
    be absent (an environment-agnostic synth).
    """
    r = _Reader()
    p = CONTEXT_KEY
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{p}: the CDK context needs a '{p}' object (see cdk.json), got {raw!r}")
    top = {
        "stage",
        "models_dir",
        "models",
        "model_versions",
        "lambda",
        "api",
        "canary",
        "drift",
        "training",
        "alarms",
        "capture",
        "batch",
        "log_retention_days",
        "bundling",
    }
    for unknown in sorted(set(raw) - top):
        r.fail(f"{p}.{unknown}", f"unknown key (allowed: {', '.join(sorted(top))})")

    stage = r.take(raw, p, "stage", str, pattern=STAGE_RE)
    retention = r.take(raw, p, "log_retention_days", int, 30, choices=RETENTION_DAYS)
    bundling = r.take(raw, p, "bundling", str, "full", choices=BUNDLINGS)

    t = r.table(
        raw, p, "lambda", {"memory_mb", "architecture", "reserved_concurrency", "snap_start", "timeout_seconds"}
    )
    lam = LambdaConfig(
        memory_mb=r.take(t, f"{p}.lambda", "memory_mb", int, 1024, lo=128, hi=10240),
        architecture=r.take(t, f"{p}.lambda", "architecture", str, "arm64", choices=ARCHITECTURES),
        reserved_concurrency=r.take(t, f"{p}.lambda", "reserved_concurrency", int, None, lo=1, hi=10000),
        snap_start=r.take(t, f"{p}.lambda", "snap_start", bool, False),
        timeout_seconds=r.take(t, f"{p}.lambda", "timeout_seconds", int, 10, lo=1, hi=29),
    )
    t = r.table(raw, p, "api", {"throttle_rate", "throttle_burst", "quota_per_day", "max_rows"})
    api = ApiConfig(
        throttle_rate=r.take(t, f"{p}.api", "throttle_rate", float, 100.0, lo=1),
        throttle_burst=r.take(t, f"{p}.api", "throttle_burst", int, 200, lo=1),
        quota_per_day=r.take(t, f"{p}.api", "quota_per_day", int, 1_000_000, lo=1),
        max_rows=r.take(t, f"{p}.api", "max_rows", int, 1000, lo=1, hi=100_000),
    )
    canary = _canary(r, raw)
    t = r.table(
        raw,
        p,
        "drift",
        {
            "psi_threshold",
            "drifted_share",
            "alpha",
            "bonferroni",
            "min_sample_size",
            "window_hours",
            "schedule",
            "accuracy_threshold",
            "prediction_drift_threshold",
        },
    )
    drift = DriftConfig(
        psi_threshold=r.take(t, f"{p}.drift", "psi_threshold", float, 0.2, lo=0.0),
        drifted_share=r.take(t, f"{p}.drift", "drifted_share", float, 0.3, lo=0.0, hi=1.0),
        alpha=r.take(t, f"{p}.drift", "alpha", float, 0.01, lo=1e-9, hi=0.5),
        bonferroni=r.take(t, f"{p}.drift", "bonferroni", bool, True),
        min_sample_size=r.take(t, f"{p}.drift", "min_sample_size", int, 200, lo=1),
        window_hours=r.take(t, f"{p}.drift", "window_hours", int, 24, lo=1, hi=24 * 31),
        schedule=r.take(t, f"{p}.drift", "schedule", str, "rate(1 hour)", pattern=SCHEDULE_RE),
        accuracy_threshold=r.take(t, f"{p}.drift", "accuracy_threshold", float, None, lo=0.0),
        prediction_drift_threshold=r.take(t, f"{p}.drift", "prediction_drift_threshold", float, 0.2, lo=0.0),
    )
    t = r.table(
        raw,
        p,
        "training",
        {
            "compute",
            "instance_type",
            "sagemaker_image",
            "schedule",
            "retrain_on_drift",
            "manual_approval",
            "memory_mb",
            "timeout_minutes",
        },
    )
    training = TrainingConfig(
        compute=r.take(t, f"{p}.training", "compute", str, "lambda", choices=COMPUTES),
        instance_type=r.take(
            t, f"{p}.training", "instance_type", str, "ml.m5.large", pattern=re.compile(r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
        ),
        sagemaker_image=r.take(t, f"{p}.training", "sagemaker_image", str, None),
        schedule=r.take(t, f"{p}.training", "schedule", str, None, pattern=SCHEDULE_RE),
        retrain_on_drift=r.take(t, f"{p}.training", "retrain_on_drift", bool, False),
        manual_approval=r.take(t, f"{p}.training", "manual_approval", bool, False),
        memory_mb=r.take(t, f"{p}.training", "memory_mb", int, 3008, lo=512, hi=10240),
        timeout_minutes=r.take(t, f"{p}.training", "timeout_minutes", int, 15, lo=1, hi=15),
    )
    t = r.table(raw, p, "alarms", {"emails", "error_threshold", "latency_p99_ms", "throttle_threshold"})
    alarms = AlarmConfig(
        emails=r.strings(t, f"{p}.alarms", "emails", EMAIL_RE),
        error_threshold=r.take(t, f"{p}.alarms", "error_threshold", int, 5, lo=1),
        latency_p99_ms=r.take(t, f"{p}.alarms", "latency_p99_ms", int, 1000, lo=1),
        throttle_threshold=r.take(t, f"{p}.alarms", "throttle_threshold", int, 1, lo=1),
    )
    t = r.table(raw, p, "capture", {"sample_rate", "redact", "buffer_seconds", "buffer_mb"})
    capture = CaptureConfig(
        sample_rate=r.take(t, f"{p}.capture", "sample_rate", float, 1.0, lo=0.0, hi=1.0),
        redact=r.strings(t, f"{p}.capture", "redact"),
        buffer_seconds=r.take(t, f"{p}.capture", "buffer_seconds", int, 60, lo=0, hi=900),
        # Dynamic partitioning needs a buffer of at least 64 MB.
        buffer_mb=r.take(t, f"{p}.capture", "buffer_mb", int, 64, lo=64, hi=128),
    )
    t = r.table(
        raw,
        p,
        "batch",
        {
            "input",
            "output",
            "max_concurrency",
            "files_per_batch",
            "tolerated_failure_percent",
            "memory_mb",
            "timeout_minutes",
        },
    )
    s3_prefix = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*/)?$")
    batch = BatchConfig(
        input=r.take(t, f"{p}.batch", "input", str, None, pattern=s3_prefix),
        output=r.take(t, f"{p}.batch", "output", str, None, pattern=s3_prefix),
        # Distributed Map runs at most 10,000 child executions at once.
        max_concurrency=r.take(t, f"{p}.batch", "max_concurrency", int, 100, lo=1, hi=10_000),
        files_per_batch=r.take(t, f"{p}.batch", "files_per_batch", int, 10, lo=1, hi=1000),
        tolerated_failure_percent=r.take(t, f"{p}.batch", "tolerated_failure_percent", float, 0.0, lo=0.0, hi=100.0),
        memory_mb=r.take(t, f"{p}.batch", "memory_mb", int, 3008, lo=512, hi=10240),
        timeout_minutes=r.take(t, f"{p}.batch", "timeout_minutes", int, 15, lo=1, hi=15),
    )
    if account is not None and not ACCOUNT_RE.match(account):
        r.fail("CDK_DEFAULT_ACCOUNT", f"must be a 12-digit account id, got {account!r}")
    if region is not None and not REGION_RE.match(region):
        r.fail("CDK_DEFAULT_REGION", f"must be a region like eu-west-1, got {region!r}")

    models = _models(r, raw, repo_root)
    if stage is not None:
        longest = max((len(m.name) for m in models), default=0)
        # Function names (modeldeck-{stage}-{model}) are limited to 64 characters.
        if len(f"modeldeck-{stage}-") + longest > 64:
            r.fail(f"{p}.stage", f"{stage!r} makes a function name longer than 64 characters")
    if r.problems:
        raise ConfigError("invalid CDK context (cdk.json → context.modeldeck):\n  " + "\n  ".join(r.problems))
    return Config(
        stage=stage,
        models=models,
        account=account,
        region=region,
        lambda_=lam,
        api=api,
        canary=canary,
        drift=drift,
        training=training,
        alarms=alarms,
        capture=capture,
        batch=batch,
        log_retention_days=retention,
        bundling=bundling,
    )


def _canary(r: _Reader, raw: Mapping[str, Any]) -> CanaryConfig:
    p = f"{CONTEXT_KEY}.canary"
    keys = {
        "strategy",
        "steps",
        "weight",
        "bake_minutes",
        "error_rate_percent",
        "min_requests",
        "prediction_shift",
        "period_seconds",
        "gate_enabled",
        "gate_alpha",
        "gate_interval_seconds",
        "gate_latency_margin_percent",
    }
    t = r.table(raw, CONTEXT_KEY, "canary", keys)
    canary = CanaryConfig(
        strategy=r.take(t, p, "strategy", str, "canary", choices=STRATEGIES),
        steps=r.take(t, p, "steps", int, 1, lo=1, hi=20),
        weight=r.take(t, p, "weight", float, 0.1, lo=0.01, hi=0.99),
        bake_minutes=r.take(t, p, "bake_minutes", int, 10, lo=0, hi=1440),
        error_rate_percent=r.take(t, p, "error_rate_percent", float, 5.0, hi=100.0),
        min_requests=r.take(t, p, "min_requests", int, 10, lo=1),
        prediction_shift=r.take(t, p, "prediction_shift", float, 0.15),
        period_seconds=r.take(t, p, "period_seconds", int, 60, choices=ALARM_PERIODS),
        gate_enabled=r.take(t, p, "gate_enabled", bool, True),
        gate_alpha=r.take(t, p, "gate_alpha", float, 0.05, lo=0.001, hi=0.2),
        gate_interval_seconds=r.take(t, p, "gate_interval_seconds", int, 60, lo=60, hi=3600),
        gate_latency_margin_percent=r.take(t, p, "gate_latency_margin_percent", float, 20.0, lo=0.0, hi=1000.0),
    )
    for key in ("error_rate_percent", "prediction_shift"):
        if getattr(canary, key) <= 0:
            r.fail(f"{p}.{key}", f"must be > 0, got {getattr(canary, key)!r}")
    from modeldeck.release import BAKED  # the strategies whose bakes the canary alarms judge

    shortest = minimum_bake_seconds(canary.period_seconds)
    if canary.strategy in BAKED and canary.bake_minutes * 60 < shortest:
        r.fail(
            f"{p}.bake_minutes",
            f"{canary.bake_minutes} is too short: CloudWatch receives Lambda and EMF metrics up to "
            f"{METRIC_DELAY_SECONDS} s late and the canary alarms judge whole {canary.period_seconds} s periods, "
            f"so a bake under {shortest} s decides on nothing; use at least {-(-shortest // 60)}",
        )
    return canary


def _models(r: _Reader, raw: Mapping[str, Any], repo_root: Path) -> tuple[ModelConfig, ...]:
    p = CONTEXT_KEY
    models_dir = repo_root / str(r.take(raw, p, "models_dir", str, "models"))
    names = r.strings(raw, p, "models") if "models" in raw else None
    versions = raw.get("model_versions", {})
    if not isinstance(versions, Mapping) or not all(
        isinstance(v, (str, int)) and not isinstance(v, bool) and str(v).isdigit() for v in versions.values()
    ):
        r.fail(f"{p}.model_versions", f"must map model names to version numbers, got {versions!r}")
        versions = {}
    files = sorted(models_dir.glob("*.toml")) if names is None else [models_dir / f"{n}.toml" for n in names]
    if not files:
        r.fail(f"{p}.models", f"no model specs found in {models_dir}")
    out = []
    for path in files:
        try:
            spec = load_any_spec(path)
        except SpecError as exc:
            r.fail(f"{p}.models", str(exc).replace("\n", "\n  "))
            continue
        if spec.name != path.stem:
            r.fail(f"{p}.models", f"{path.name} declares name {spec.name!r}; the file must be named {spec.name}.toml")
            continue
        payload = tomllib.loads(path.read_text())
        spec_file = str(path.relative_to(repo_root)) if path.is_relative_to(repo_root) else str(path)
        if isinstance(spec, ByoSpec):
            out.append(
                ModelConfig(
                    name=spec.name,
                    task=spec.task,
                    features=tuple(spec.served_schema.names),
                    primary_metric=spec.primary_metric,
                    spec_file=spec_file,
                    spec_payload=payload,
                    initial_version=str(versions.get(spec.name, "0")),
                    byo=True,
                )
            )
            continue
        source = spec.dataset.source
        out.append(
            ModelConfig(
                name=spec.name,
                task=spec.task,
                features=tuple(f.name for f in spec.schema.features),
                primary_metric=spec.training.primary_metric,
                spec_file=spec_file,
                spec_payload=payload,
                initial_version=str(versions.get(spec.name, "0")),
                dataset_s3=source if source.startswith("s3://") else None,
                dataset_version_id=spec.dataset.version_id,
            )
        )
    for unknown in sorted(set(versions) - {m.name for m in out}):
        r.fail(f"{p}.model_versions.{unknown}", "names no configured model")
    return tuple(out)
