"""Batch scoring: the batch function (container image) and the batch state machine (Distributed Map).

Input ``{model, version?, input: s3://…/, output: s3://…/}``::

    Plan (check the request, pin the version: default the champion)
      → Score: Distributed Map
          ItemReader   s3:listObjectsV2 over the input prefix (one item per object)
          ItemBatcher  MaxItemsPerBatch files, MaxInputBytesPerBatch 256 KiB, BatchInput = the plan
          child        the batch function scores each file of its batch into one Parquet file
          MaxConcurrency, ToleratedFailurePercentage from the config
          ResultWriter {output}_results/{MapRunId}/ (manifest.json, SUCCEEDED_0.json, FAILED_0.json)
      → Manifest ({output}_manifest.json)          on a failed Map: FailedManifest → Fail

The function is a container image (``infra/docker/batch.Dockerfile``): pyarrow (CSV, JSON Lines, Parquet)
next to onnxruntime and numpy exceeds a zip Lambda's 250 MB. Permissions (least privilege): the function
reads the input location and the registry's ``models/``, writes (and reads back) the output location; the
state machine lists the input location only, and writes results under the output location only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_cdk import Duration, IgnoreMode, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from aws_cdk.aws_ecr_assets import Platform
from constructs import Construct

from infra.bundling import REPO_ROOT
from infra.constructs.functions import FunctionDefaults, python_function, retention

HANDLER = "lambdas.batch.handler.lambda_handler"
DOCKERFILE = "infra/docker/batch.Dockerfile"
IMAGE_CONTEXT = (
    "*",
    "!modeldeck/**",
    "!lambdas/__init__.py",
    "!lambdas/batch/**",
    f"!{DOCKERFILE}",
    "**/__pycache__",
    "**/*.pyc",
)
# "ItemBatcher": a child's input is at most 256 KiB; a listed object is about 200 bytes of it.
MAX_INPUT_BYTES_PER_BATCH = 256 * 1024
LAMBDA_RETRY_ERRORS = (
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
)


@dataclass(frozen=True)
class BatchSettings:
    function_name: str
    state_machine_name: str
    input_bucket: str
    input_prefix: str
    output_bucket: str
    output_prefix: str
    max_concurrency: int = 100
    files_per_batch: int = 10
    tolerated_failure_percent: float = 0.0
    memory_mb: int = 3008
    timeout_minutes: int = 15
    log_retention_days: int = 30


def image_code() -> lambda_.DockerImageCode:
    """The batch image asset (staged at synth, built at deploy)."""
    return lambda_.DockerImageCode.from_image_asset(
        str(REPO_ROOT),
        file=DOCKERFILE,
        cmd=[HANDLER],
        exclude=list(IMAGE_CONTEXT),
        ignore_mode=IgnoreMode.DOCKER,
        platform=Platform.LINUX_AMD64,
    )


class BatchScoring(Construct):
    """The batch function (``function``, ``role``) and state machine (``state_machine``)."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        settings: BatchSettings,
        defaults: FunctionDefaults,
        code: lambda_.DockerImageCode,
        registry: s3.IBucket,
    ) -> None:
        super().__init__(scope, id_)
        s = settings
        inputs = s3.Bucket.from_bucket_name(self, "InputBucket", s.input_bucket)
        outputs = s3.Bucket.from_bucket_name(self, "OutputBucket", s.output_bucket)
        self.input_objects = inputs.arn_for_objects(f"{s.input_prefix}*")
        self.output_objects = outputs.arn_for_objects(f"{s.output_prefix}*")
        built = python_function(
            self,
            "Function",
            # An image is built for the build machine's architecture, like the training image.
            defaults=FunctionDefaults(architecture="x86_64", log_retention_days=defaults.log_retention_days),
            handler=HANDLER,
            code=code,
            description="modeldeck batch scoring (Distributed Map child; ONNX + pyarrow, container image)",
            function_name=s.function_name,
            memory_mb=s.memory_mb,
            timeout=Duration.minutes(s.timeout_minutes),
            environment={
                "MODEL_BUCKET": registry.bucket_name,
                "BATCH_INPUT": f"s3://{s.input_bucket}/{s.input_prefix}",
                "BATCH_OUTPUT": f"s3://{s.output_bucket}/{s.output_prefix}",
                "POWERTOOLS_SERVICE_NAME": "modeldeck-batch",
            },
        )
        self.function = built.function
        self.role = role = built.role
        role.add_to_principal_policy(
            iam.PolicyStatement(sid="ReadInputs", actions=["s3:GetObject"], resources=[self.input_objects])
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="WriteOutputs", actions=["s3:PutObject", "s3:GetObject"], resources=[self.output_objects]
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="FindResultsOfAFailedRun",
                actions=["s3:ListBucket"],
                resources=[outputs.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{s.output_prefix}*"]}},
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ReadModels", actions=["s3:GetObject"], resources=[registry.arn_for_objects("models/*")]
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ListModels",
                actions=["s3:ListBucket"],
                resources=[registry.bucket_arn],
                conditions={"StringLike": {"s3:prefix": ["models/*"]}},
            )
        )

        plan = self._task(
            "Plan",
            {"action": "plan", "request": sfn.JsonPath.entire_payload, "execution": sfn.JsonPath.execution_name},
            result_path="$",
        )
        score = tasks.LambdaInvoke(
            self,
            "ScoreBatch",
            lambda_function=self.function,
            payload_response_only=True,
            retry_on_service_exceptions=False,
        )
        score.add_retry(errors=list(LAMBDA_RETRY_ERRORS), interval=Duration.seconds(2), max_attempts=6, backoff_rate=2)
        # The plan, for every child (ASL paths: CDK passes BatchInput through as written).
        batch_input = {"model.$": "$.model", "version.$": "$.version", "input.$": "$.input", "output.$": "$.output"}
        self.map = fan_out = sfn.DistributedMap(
            self,
            "Score",
            item_reader=sfn.S3ObjectsItemReader(bucket=inputs, prefix=sfn.JsonPath.string_at("$.input.prefix")),
            item_batcher=sfn.ItemBatcher(
                max_items_per_batch=s.files_per_batch,
                max_input_bytes_per_batch=MAX_INPUT_BYTES_PER_BATCH,
                batch_input=batch_input,
            ),
            max_concurrency=s.max_concurrency,
            tolerated_failure_percentage=s.tolerated_failure_percent,
            map_execution_type=sfn.StateMachineType.STANDARD,
            result_writer_v2=sfn.ResultWriterV2(bucket=outputs, prefix=sfn.JsonPath.string_at("$.output.results")),
            result_path="$.map",
        )
        fan_out.item_processor(score)
        manifest = self._task("Manifest", {"action": "manifest", "state": sfn.JsonPath.entire_payload}, "$.manifest")
        failed_manifest = self._task(
            "FailedManifest", {"action": "manifest", "state": sfn.JsonPath.entire_payload}, "$.manifest"
        )
        fan_out.add_catch(failed_manifest, errors=["States.ALL"], result_path="$.failure")
        # "States."-prefixed names are reserved: the Map Run's own error name is in the manifest and the cause.
        failed = sfn.Fail(self, "Failed", error="BatchFailed", cause_path="$.failure.Cause")
        failed_manifest.next(failed)
        done = sfn.Pass(self, "Done", output_path="$.manifest")
        definition = plan.next(fan_out).next(manifest).next(done)

        log_group = logs.LogGroup(
            self, "Logs", retention=retention(s.log_retention_days), removal_policy=RemovalPolicy.RETAIN
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=s.state_machine_name,
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
        )
        # The Distributed Map's grants cover the buckets; AWS evaluates an explicit Deny first, so these keep the
        # state machine to the input prefix (listing) and the output prefix (results).
        self.state_machine.add_to_role_policy(
            iam.PolicyStatement(
                sid="ListInputPrefixOnly",
                effect=iam.Effect.DENY,
                actions=["s3:ListBucket"],
                resources=[inputs.bucket_arn],
                conditions={"StringNotLike": {"s3:prefix": [f"{s.input_prefix}*"]}},
            )
        )
        self.state_machine.add_to_role_policy(
            iam.PolicyStatement(
                sid="WriteOutputPrefixOnly",
                effect=iam.Effect.DENY,
                actions=["s3:PutObject"],
                not_resources=[self.output_objects],
            )
        )

    def _task(self, id_: str, payload: dict[str, Any], result_path: str) -> tasks.LambdaInvoke:
        task = tasks.LambdaInvoke(
            self,
            id_,
            lambda_function=self.function,
            payload=sfn.TaskInput.from_object(payload),
            payload_response_only=True,
            retry_on_service_exceptions=False,
            result_path=result_path,
        )
        task.add_retry(errors=list(LAMBDA_RETRY_ERRORS), interval=Duration.seconds(2), max_attempts=3, backoff_rate=2)
        return task
