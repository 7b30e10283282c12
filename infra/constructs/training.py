"""The training function: a container-image Lambda running ``lambdas.pipeline.handler.lambda_handler``.

scikit-learn does not fit in a zip Lambda, so the image (``infra/docker/training.Dockerfile``, on AWS's
``public.ecr.aws/lambda/python:3.12`` base) is built by ``cdk deploy`` where Docker exists. Synthesis
only stages its build context, so the tests and ``make synth`` need no Docker. The image's command is
also set in the function's ``ImageConfig`` so the template names the handler (the local cloud runs the
handler string from the template).

The same image asset (:func:`image_code` and :func:`sagemaker_image` share :data:`IMAGE_OPTIONS`, so
CDK builds and pushes it once) is the SageMaker training image with ``training.compute = "sagemaker"``:
SageMaker runs it as ``docker run IMAGE train``, and the image's entrypoint
(``infra/docker/training-entrypoint.sh``) sends ``train`` to ``training.sagemaker`` and anything else
(the handler Lambda passes) to Lambda's own entrypoint. AWS's prebuilt scikit-learn image runs Python
3.9, too old for our pins.

Permissions: stage and register in the registry (``staging/*`` read/write, ``models/*`` read/write and
delete — a failed registration removes what it wrote), list ``models/`` and ``staging/`` (the registry
finds versions by listing), read the exact dataset objects the specs name (``s3://`` sources), and
describe the training state machine's executions (the training lock's holder).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aws_cdk import ArnFormat, Duration, IgnoreMode, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions_tasks as tasks
from aws_cdk.aws_ecr_assets import Platform
from constructs import Construct

from infra.bundling import REPO_ROOT
from infra.constructs.functions import FunctionDefaults, python_function

HANDLER = "lambdas.pipeline.handler.lambda_handler"
DOCKERFILE = "infra/docker/training.Dockerfile"
ENTRYPOINT = "infra/docker/training-entrypoint.sh"
# The build context is the repository root; only what the Dockerfile copies goes in (and into the
# asset hash), never .venv, build/ or cdk.out.
IMAGE_CONTEXT = (
    "*",
    "!modeldeck/**",
    "!training/**",
    "!lambdas/__init__.py",
    "!lambdas/pipeline/**",
    "!models/**",
    f"!{DOCKERFILE}",
    f"!{ENTRYPOINT}",
    "**/__pycache__",
    "**/*.pyc",
)
# Identical options give an identical asset hash: one image for the Lambda and for SageMaker. x86_64 (the
# function's architecture, below; SageMaker's ml.m*/ml.c* instances are x86_64 too).
IMAGE_OPTIONS: dict[str, Any] = {
    "directory": str(REPO_ROOT),
    "file": DOCKERFILE,
    "exclude": list(IMAGE_CONTEXT),
    "ignore_mode": IgnoreMode.DOCKER,
    "platform": Platform.LINUX_AMD64,
}


@dataclass(frozen=True)
class TrainingSettings:
    function_name: str
    state_machine_name: str
    memory_mb: int = 3008
    timeout_minutes: int = 15


def image_code() -> lambda_.DockerImageCode:
    """The training image asset (staged at synth, built at deploy)."""
    options = dict(IMAGE_OPTIONS)
    return lambda_.DockerImageCode.from_image_asset(options.pop("directory"), cmd=[HANDLER], **options)


def sagemaker_image(scope: Construct) -> tasks.DockerImage:
    """The training image asset as a SageMaker training image (binding it grants the job's role the pull)."""
    return tasks.DockerImage.from_asset(scope, "TrainingImage", **IMAGE_OPTIONS)


class TrainingFunction(Construct):
    """The training Lambda (``function``) with its registry permissions."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        settings: TrainingSettings,
        defaults: FunctionDefaults,
        code: lambda_.DockerImageCode,
        bucket: s3.IBucket,
        dataset_objects: Sequence[str] = (),
    ) -> None:
        super().__init__(scope, id_)
        built = python_function(
            self,
            "Function",
            # Container images are built for the build machine's architecture; training is not latency
            # sensitive, so it stays on x86_64 where every wheel exists.
            defaults=FunctionDefaults(architecture="x86_64", log_retention_days=defaults.log_retention_days),
            handler=HANDLER,
            code=code,
            description="modeldeck training pipeline steps (scikit-learn to ONNX, container image)",
            function_name=settings.function_name,
            memory_mb=settings.memory_mb,
            timeout=Duration.minutes(settings.timeout_minutes),
            environment={
                "MODEL_BUCKET": bucket.bucket_name,
                "POWERTOOLS_SERVICE_NAME": "modeldeck-training",
                "POWERTOOLS_METRICS_NAMESPACE": "modeldeck",
            },
        )
        # The image code's cmd lands in the function's ImageConfig.Command, so the template names the
        # handler (what Lambda runs, and what the local cloud reads).
        self.function = built.function
        self.role = role = built.role
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="StageAndRegister",
                actions=["s3:GetObject", "s3:PutObject"],
                resources=[bucket.arn_for_objects("staging/*"), bucket.arn_for_objects("models/*")],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="CleanUpFailedRegistration",
                actions=["s3:DeleteObject"],
                resources=[bucket.arn_for_objects("models/*")],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ListRegistry",
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": ["models/*", "staging/*"]}},
            )
        )
        # The lock step asks whether the execution holding a model's training lock still runs.
        self.executions_arn = Stack.of(self).format_arn(
            service="states",
            resource="execution",
            resource_name=f"{settings.state_machine_name}:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="LockHolderStatus", actions=["states:DescribeExecution"], resources=[self.executions_arn]
            )
        )
        if dataset_objects:
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    sid="ReadDatasets",
                    actions=["s3:GetObject", "s3:GetObjectVersion"],
                    resources=list(dataset_objects),
                )
            )
