"""The one place Lambda defaults live: runtime, architecture, tracing, JSON logs with retention, the role.

Every modeldeck function is built here, so they share the same shape:

- Python 3.12 on Amazon Linux 2023 (the manylinux_2_28 onnxruntime/numpy wheels need glibc ≥ 2.28, and
  SnapStart needs Python ≥ 3.12), on the configured architecture;
- X-Ray tracing active and JSON logs (``logging_format=JSON``) into an explicit log group with a retention,
  so no log-retention custom resource is needed and the log group can carry subscription filters;
- its own role with no managed policy: it may write to its own log group and nothing else until a
  construct grants more (least privilege, and no AWSLambdaBasicExecutionRole wildcard).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.config import RETENTION_DAYS

RUNTIME = lambda_.Runtime.PYTHON_3_12
ARCHITECTURES = {"arm64": lambda_.Architecture.ARM_64, "x86_64": lambda_.Architecture.X86_64}


@dataclass(frozen=True)
class FunctionDefaults:
    """The settings every function shares (plain values from the config)."""

    architecture: str = "arm64"
    log_retention_days: int = 30


@dataclass
class BuiltFunction:
    """A function with the log group and role it was given, so constructs can subscribe and grant."""

    function: lambda_.Function
    log_group: logs.LogGroup
    role: iam.Role


# The enum in the same order as CloudWatch's allowed retention periods (infra.config.RETENTION_DAYS).
_RETENTIONS = dict(zip(RETENTION_DAYS, [r for r in logs.RetentionDays if r.name != "INFINITE"], strict=True))


def retention(days: int) -> logs.RetentionDays:
    """CloudWatch's retention enum from a number of days (config validates the allowed values)."""
    return _RETENTIONS[days]


def python_function(
    scope: Construct,
    id_: str,
    *,
    defaults: FunctionDefaults,
    handler: str,
    code: lambda_.Code | lambda_.DockerImageCode,
    description: str,
    environment: Mapping[str, str] | None = None,
    memory_mb: int = 256,
    timeout: Duration | None = None,
    function_name: str | None = None,
    reserved_concurrency: int | None = None,
    snap_start: bool = False,
) -> BuiltFunction:
    """Build one function with the shared defaults; ``code`` is a zip asset or a container image.

    For an image, ``handler`` is only documentation: the image's CMD (set by the caller in the
    ``DockerImageCode``) is what Lambda runs, and it is written into the template's ImageConfig.
    """
    log_group = logs.LogGroup(
        scope,
        f"{id_}Logs",
        retention=retention(defaults.log_retention_days),
        # Logs outlive a stack deletion for audits; they expire by retention anyway.
        removal_policy=RemovalPolicy.RETAIN,
    )
    role = iam.Role(
        scope,
        f"{id_}Role",
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=f"{description} (log group write only; constructs add scoped grants)",
    )
    log_group.grant_write(role)
    common = dict(
        architecture=ARCHITECTURES[defaults.architecture],
        description=description,
        environment=dict(environment or {}),
        function_name=function_name,
        log_group=log_group,
        logging_format=lambda_.LoggingFormat.JSON,
        memory_size=memory_mb,
        reserved_concurrent_executions=reserved_concurrency,
        role=role,
        timeout=timeout or Duration.seconds(10),
        tracing=lambda_.Tracing.ACTIVE,
    )
    function: lambda_.Function
    if isinstance(code, lambda_.DockerImageCode):
        function = lambda_.DockerImageFunction(scope, id_, code=code, **common)  # type: ignore[arg-type]
    else:
        function = lambda_.Function(
            scope,
            id_,
            code=code,
            handler=handler,
            runtime=RUNTIME,
            snap_start=lambda_.SnapStartConf.ON_PUBLISHED_VERSIONS if snap_start else None,
            **common,  # type: ignore[arg-type]
        )
    return BuiltFunction(function=function, log_group=log_group, role=role)
