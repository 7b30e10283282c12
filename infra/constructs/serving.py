"""Serving for one model: the inference function, its ``live`` alias, and read access to its artifacts.

One model version is one published Lambda version (design.md §1): the function's environment pins
``MODEL_NAME`` and ``MODEL_VERSION``, CDK publishes a version of it, and the ``live`` alias points there.
The release machinery (a separate construct) later publishes versions that pin other ``MODEL_VERSION``
values and moves the alias's weights; this construct exposes ``function``, ``alias``, ``log_group`` and
``role`` as that seam (canary alarms on the ``ExecutedVersion`` dimension belong to the release). The
alert topic lives in the monitoring stack (``MonitoringStack.topic``); pass it as ``topic`` when the
serving construct is composed with it (``self.topic``), otherwise it is None.

Captured requests do not touch S3 from here: the handler writes them to its log, and
:class:`infra.constructs.capture.CaptureDelivery` ships them to the registry. So the function may read
``models/{name}/*`` of the registry and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra.constructs.functions import FunctionDefaults, python_function

HANDLER = "lambdas.inference.handler.lambda_handler"
METRICS_NAMESPACE = "modeldeck"
ALIAS_NAME = "live"


@dataclass(frozen=True)
class ServingSettings:
    """Plain values from the config that shape one model's function."""

    model: str
    function_name: str
    initial_version: str = "0"
    memory_mb: int = 1024
    timeout_seconds: int = 10
    reserved_concurrency: int | None = None
    snap_start: bool = False
    max_rows: int = 1000
    capture_sample_rate: float = 1.0
    capture_redact: tuple[str, ...] = ()


class ModelServing(Construct):
    """The inference function of one model, published, behind the ``live`` alias."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        settings: ServingSettings,
        defaults: FunctionDefaults,
        code: lambda_.Code,
        bucket: s3.IBucket,
        topic: sns.ITopic | None = None,
    ) -> None:
        super().__init__(scope, id_)
        self.model = settings.model
        self.topic = topic
        built = python_function(
            self,
            "Function",
            defaults=defaults,
            handler=HANDLER,
            code=code,
            description=f"modeldeck inference for {settings.model} (onnxruntime)",
            function_name=settings.function_name,
            memory_mb=settings.memory_mb,
            timeout=Duration.seconds(settings.timeout_seconds),
            reserved_concurrency=settings.reserved_concurrency,
            snap_start=settings.snap_start,
            environment={
                "MODEL_NAME": settings.model,
                "MODEL_VERSION": settings.initial_version,
                "MODEL_BUCKET": bucket.bucket_name,
                "MAX_ROWS": str(settings.max_rows),
                "CAPTURE_SAMPLE_RATE": str(settings.capture_sample_rate),
                "CAPTURE_REDACT": ",".join(settings.capture_redact),
                "POWERTOOLS_SERVICE_NAME": f"modeldeck-{settings.model}",
                "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
            },
        )
        self.function = built.function
        self.log_group: logs.ILogGroup = built.log_group
        self.role = built.role
        # Only this model's artifacts: a compromised function cannot read another model or captured data.
        self.role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ReadOwnModelArtifacts",
                actions=["s3:GetObject", "s3:GetObjectVersion"],
                resources=[bucket.arn_for_objects(f"models/{settings.model}/*")],
            )
        )
        # S3 answers a GetObject of a missing key with 403 unless the caller may list it (S3 API reference,
        # GetObject): without this, the usual absent shadow.json reads as AccessDenied, not NoSuchKey.
        self.role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ListOwnModelArtifacts",
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"models/{settings.model}/*"]}},
            )
        )
        # Shadow releases: the live version mirrors requests to a candidate version of the same function
        # (an async Invoke); experiments: it forwards a challenger's requests to the challenger's pinned version
        # (a synchronous Invoke). By name, not by reference: the role cannot depend on the function it serves.
        self.versions_arn = Stack.of(self).format_arn(
            service="lambda",
            resource="function",
            resource_name=f"{settings.function_name}:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        self.role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="MirrorToOwnVersions", actions=["lambda:InvokeFunction"], resources=[self.versions_arn]
            )
        )
        # Ownership: CloudFormation creates the first version and `live` once; the release machinery owns both
        # after. Their logical ids and properties never change (no code hash, unlike `current_version`), so a
        # redeploy neither republishes a version identical to a released one ("A version for this Lambda
        # function exists") nor moves `live` back to MODEL_VERSION=initial. Retained: `live` may point at it.
        initial = lambda_.Version(
            self,
            "InitialVersion",
            lambda_=self.function,
            description="first version, published once by CloudFormation; releases publish the others",
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.alias = lambda_.Alias(self, "Live", alias_name=ALIAS_NAME, version=initial)
