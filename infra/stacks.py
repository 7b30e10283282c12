"""The stacks: each wires constructs, grants, outputs and cdk-nag acknowledgments, and builds nothing.

Dependency order (CDK deploys in this order; each stack only references earlier ones)::

    registry ─► serving ─► monitoring ─► training

- ``RegistryStack``: the versioned model registry bucket and its access-logs bucket (stateful; retained).
- ``ServingStack``: per model, the inference function and its ``live`` alias; the REST API; capture
  delivery (Logs → Firehose → ``capture/``, ``feedback/``).
- ``MonitoringStack``: the alert topic, the drift job, the experiment job, every alarm, the dashboard.
- ``TrainingStack``: the training function (container image) and the training state machine, its
  schedule, and the retrain-on-drift rules (matched on the drift alarms' names).

:func:`build_app` composes them from a :class:`~infra.config.Config`; ``app.py`` and the tests call it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, cast

import aws_cdk as cdk
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infra.bundling import REPO_ROOT, BundleSpec, lambda_code
from infra.config import Config, pascal
from infra.constructs.api import ApiSettings, InferenceApi
from infra.constructs.batch import BatchScoring, BatchSettings
from infra.constructs.batch import image_code as batch_image_code
from infra.constructs.capture import CaptureDelivery
from infra.constructs.experiments import ExperimentJob, experiment_reads
from infra.constructs.functions import FunctionDefaults, python_function, retention
from infra.constructs.monitoring import (
    WORK_PREFIX as DRIFT_WORK_PREFIX,
)
from infra.constructs.monitoring import (
    AlertTopic,
    DriftMonitoring,
    MonitoredModel,
    MonitoringSettings,
    drift_reads,
)
from infra.constructs.pipeline import PipelineSettings, TrainingPipeline
from infra.constructs.registry import ModelRegistry
from infra.constructs.release import ReleaseOrchestration
from infra.constructs.serving import ModelServing, ServingSettings
from infra.constructs.training import TrainingFunction, TrainingSettings, image_code, sagemaker_image
from infra.nag import acknowledge, acknowledge_map_children, acknowledge_prefix, acknowledge_resource
from modeldeck import release
from modeldeck.byo import parse_any_spec
from modeldeck.openapi import ModelApi


def registry_bucket_name(config: Config) -> str:
    """The registry bucket's name, ``modeldeck-{stage}-registry-{account}-{region}``.

    A predictable name lets the other stacks (and the CLI, and the local cloud) reach the bucket without a
    CloudFormation export, so the registry stack never gets stuck on an export another stack imports.
    """
    return f"{config.prefix}-registry-{cdk.Aws.ACCOUNT_ID}-{cdk.Aws.REGION}"


def _registry(scope: Construct, config: Config) -> s3.IBucket:
    return s3.Bucket.from_bucket_name(scope, "RegistryBucket", registry_bucket_name(config))


def _defaults(config: Config) -> FunctionDefaults:
    return FunctionDefaults(architecture=config.lambda_.architecture, log_retention_days=config.log_retention_days)


def _bundle(config: Config, name: str, requirements: str | None, *packages: str) -> BundleSpec:
    """A zip bundle for the configured architecture; ``bundling = "stub"`` (tests) skips the pip layer."""
    return BundleSpec(
        name=name,
        requirements=REPO_ROOT / requirements if requirements else None,
        packages=packages,
        architecture=config.lambda_.architecture,
        with_dependencies=config.bundling == "full" and requirements is not None,
    )


L1_REASON = (
    "Python 3.12 on purpose: the bundles' wheels (onnxruntime, numpy) are built for cp312 by "
    "infra/bundling.py, and moving runtimes means rebuilding them for the new ABI together "
    "(infra.bundling.PYTHON_VERSION and infra.constructs.functions.RUNTIME)."
)
KMS_REASON = (
    "Publishing to the KMS-encrypted alert topic needs kms:GenerateDataKey* (GenerateDataKey and "
    "its WithoutPlaintext variant) on the topic's key; the resource is that one key."
)


class RegistryStack(cdk.Stack):
    """The model registry bucket (``bucket``)."""

    def __init__(self, scope: Construct, id_: str, *, config: Config, **kwargs: Any) -> None:
        super().__init__(scope, id_, **kwargs)
        registry = ModelRegistry(self, "Registry", bucket_name=registry_bucket_name(config))
        self.bucket: s3.IBucket = registry.bucket
        cdk.CfnOutput(
            self,
            "RegistryBucketName",
            value=registry.bucket.bucket_name,
            description="The S3 model registry (models/, capture/, feedback/)",
        )
        acknowledge(
            registry.logs_bucket,
            "AwsSolutions-S1",
            "This is the access-log target bucket; logging it to itself would loop.",
        )


class ServingStack(cdk.Stack):
    """Per-model inference functions behind ``live`` aliases, the REST API and capture delivery."""

    def __init__(self, scope: Construct, id_: str, *, config: Config, **kwargs: Any) -> None:
        super().__init__(scope, id_, **kwargs)
        bucket = _registry(self, config)
        defaults = _defaults(config)
        code = lambda_code(_bundle(config, "inference", "lambdas/inference/requirements.txt", "lambdas/inference"))
        self.models: dict[str, ModelServing] = {}
        for model in config.models:
            serving = ModelServing(
                self,
                pascal(model.name),
                settings=ServingSettings(
                    model=model.name,
                    function_name=config.function_name(model.name),
                    initial_version=model.initial_version,
                    memory_mb=config.lambda_.memory_mb,
                    timeout_seconds=config.lambda_.timeout_seconds,
                    reserved_concurrency=config.lambda_.reserved_concurrency,
                    snap_start=config.lambda_.snap_start,
                    max_rows=config.api.max_rows,
                    capture_sample_rate=config.capture.sample_rate,
                    capture_redact=config.capture.redact,
                ),
                defaults=defaults,
                code=code,
                bucket=bucket,
            )
            self.models[model.name] = serving
            acknowledge(serving.function, "AwsSolutions-L1", L1_REASON)
            acknowledge(
                serving.role,
                "AwsSolutions-IAM5[Resource::*]",
                "X-Ray PutTraceSegments/PutTelemetryRecords have no resource-level permissions.",
            )
            acknowledge_prefix(
                serving.role,
                bucket,
                f"models/{model.name}/*",
                "The function reads only its own model's artifacts; versions are keys under it.",
            )
            acknowledge_resource(
                serving.role,
                serving.versions_arn,
                "",
                "Shadow releases mirror live requests to a candidate version of this same function; version "
                "numbers are published at release time.",
            )

        api = InferenceApi(
            self,
            "Api",
            settings=ApiSettings(
                name=f"{config.prefix}-api",
                stage=config.stage,
                throttle_rate=config.api.throttle_rate,
                throttle_burst=config.api.throttle_burst,
                quota_per_day=config.api.quota_per_day,
                log_retention_days=config.log_retention_days,
            ),
            models=[
                (ModelApi.from_spec(parse_any_spec(dict(m.spec_payload), m.spec_file), config.api.max_rows), s.alias)
                for m, s in zip(config.models, self.models.values(), strict=True)
            ],
        )
        self.api = api
        capture = CaptureDelivery(
            self,
            "Capture",
            bucket=bucket,
            defaults=defaults,
            code=lambda_code(_bundle(config, "capture", None, "lambdas/capture")),
            log_groups=[(name, s.log_group) for name, s in self.models.items()],
            stream_name=f"{config.prefix}-capture",
            buffer_seconds=config.capture.buffer_seconds,
            buffer_mb=config.capture.buffer_mb,
        )
        cdk.CfnOutput(self, "ApiUrl", value=api.api.url, description="The inference API's base URL (stage included)")
        cdk.CfnOutput(
            self,
            "ApiKeyId",
            value=api.api_key.key_id,
            description="aws apigateway get-api-key --include-value --api-key <id>",
        )
        cdk.CfnOutput(self, "CaptureStreamName", value=capture.stream.ref)
        for name, s in self.models.items():
            cdk.CfnOutput(self, f"{pascal(name)}FunctionName", value=s.function.function_name)
            cdk.CfnOutput(self, f"{pascal(name)}AliasArn", value=s.alias.function_arn)

        acknowledge(capture.processor, "AwsSolutions-L1", L1_REASON)
        acknowledge(
            capture.processor_role,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray PutTraceSegments/PutTelemetryRecords have no resource-level permissions.",
        )
        for kind in ("capture", "feedback"):
            acknowledge_prefix(
                capture, bucket, f"{kind}/*", "Firehose writes partitioned objects under this prefix and nowhere else."
            )
        acknowledge(
            api.api,
            "AwsSolutions-APIG3",
            "Clients authenticate with API keys under a throttled usage plan; add a WAF web ACL per "
            "deployment when the API is exposed to untrusted networks.",
        )
        acknowledge(
            api.api,
            "AwsSolutions-APIG4",
            "The HTTP contract (design.md §3) authenticates with an API key in x-api-key; IAM or "
            "Cognito authorizers would break existing clients.",
        )
        acknowledge(
            api.api,
            "AwsSolutions-COG4",
            "The HTTP contract (design.md §3) authenticates with an API key in x-api-key, not Cognito.",
        )
        acknowledge(
            api.api,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AmazonAPIGatewayPushToCloudWatchLogs]",
            "API Gateway's account-level logging role; the AWS-managed policy is what AWS documents "
            "for it and is scoped to CloudWatch Logs.",
        )


class MonitoringStack(cdk.Stack):
    """The alert topic, the drift job, the alarms and the dashboard."""

    def __init__(self, scope: Construct, id_: str, *, config: Config, **kwargs: Any) -> None:
        super().__init__(scope, id_, **kwargs)
        bucket = _registry(self, config)
        topic = AlertTopic(
            self, "Alerts", name=f"{config.prefix}-alerts", alarm_prefix=config.prefix, emails=config.alarms.emails
        )
        self.topic: sns.ITopic = topic.topic
        monitoring = DriftMonitoring(
            self,
            "Drift",
            settings=MonitoringSettings(
                prefix=config.prefix,
                emails=config.alarms.emails,
                drift=config.drift,
                error_threshold=config.alarms.error_threshold,
                api_name=f"{config.prefix}-api",
                api_stage=config.stage,
                latency_p99_ms=config.alarms.latency_p99_ms,
                throttle_threshold=config.alarms.throttle_threshold,
            ),
            defaults=_defaults(config),
            code=lambda_code(_bundle(config, "drift", "lambdas/drift/requirements.txt", "lambdas/drift")),
            bucket=bucket,
            topic=self.topic,
            # By name, not by reference: alarms need only the name, and no export ties the stacks together.
            models=[
                MonitoredModel(name=m.name, task=m.task, function_name=config.function_name(m.name))
                for m in config.models
            ],
        )
        self.monitoring = monitoring
        cdk.CfnOutput(self, "AlertTopicArn", value=self.topic.topic_arn)
        cdk.CfnOutput(self, "DashboardName", value=monitoring.dashboard.dashboard_name)
        cdk.CfnOutput(self, "DriftFunctionName", value=monitoring.function.function_name)
        cdk.CfnOutput(self, "DriftStateMachineArn", value=monitoring.state_machine.state_machine_arn)
        # Alarm names are "{AlarmPrefix}-{model}-{kind}" (errors, latency-p99, throttles, drifted-share, ...).
        cdk.CfnOutput(self, "AlarmPrefix", value=config.prefix)
        role = monitoring.role
        acknowledge(monitoring.function, "AwsSolutions-L1", L1_REASON)
        acknowledge(role, "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]", KMS_REASON)
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray writes and cloudwatch:PutMetricData have no resource-level permissions; "
            "PutMetricData is limited to the modeldeck namespace by condition.",
        )
        for key in [*drift_reads([m.name for m in config.models]), "drift/*", DRIFT_WORK_PREFIX]:
            acknowledge_prefix(
                role,
                bucket,
                key,
                "The drift job reads captured data, feedback, champions, baselines and cards by prefix, and "
                "keeps its window results under drift/ and its map/reduce runs' profiles under drift-work/.",
            )
        acknowledge_resource(
            monitoring.state_machine,
            monitoring.function.function_arn,
            ":*",
            "Step Functions' Lambda integration may invoke the function's versions; it is the one drift function.",
        )
        acknowledge(
            monitoring.state_machine,
            "AwsSolutions-IAM5[Resource::*]",
            "Step Functions log delivery and X-Ray need '*' (no resource-level permissions); the Distributed Map's "
            "child executions are named by Step Functions at run time.",
        )
        # CDK's DistributedMapPolicy: DescribeExecution/StopExecution on the machine's own Map Run executions,
        # whose names Step Functions picks at run time ("<name>:*" and "<name>/*:*").
        machine_id = self.resolve(
            self.get_logical_id(cast(cdk.CfnElement, monitoring.state_machine.node.default_child))
        )
        own_name = json.dumps({"Fn::Select": [6, {"Fn::Split": [":", {"Ref": machine_id}]}]}, separators=(",", ":"))
        executions = self.format_arn(
            service="states", resource="execution", resource_name="", arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME
        )
        for suffix in (":*", "/*:*"):
            acknowledge_resource(
                monitoring.state_machine,
                executions,
                own_name + suffix,
                "The drift Distributed Map's child executions are named by Step Functions at run time.",
            )
        names = [m.name for m in config.models]
        experiments = ExperimentJob(
            self,
            "Experiments",
            prefix=config.prefix,
            defaults=_defaults(config),
            code=lambda_code(
                _bundle(config, "experiment", "lambdas/experiment/requirements.txt", "lambdas/experiment")
            ),
            bucket=bucket,
            topic=self.topic,
            models=names,
        )
        self.experiments = experiments
        cdk.CfnOutput(self, "ExperimentFunctionName", value=experiments.function.function_name)
        acknowledge(experiments.function, "AwsSolutions-L1", L1_REASON)
        acknowledge(experiments.role, "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]", KMS_REASON)
        acknowledge(
            experiments.role, "AwsSolutions-IAM5[Resource::*]", "X-Ray writes have no resource-level permissions."
        )
        for key in [k for k in [*experiment_reads(names), "experiments/*"] if "*" in k]:
            acknowledge_prefix(
                experiments.role,
                bucket,
                key,
                "The experiment job reads the experiment documents, captured data and feedback by prefix, and "
                "keeps its snapshots and decision markers under experiments/.",
            )


class ReleaseStack(cdk.Stack):
    """The release Lambda and the release state machine (canary, linear, all-at-once, shadow).

    The Lambda publishes versions of the model functions, moves their ``live`` aliases, arms the canary
    alarms (named like the monitoring stack's, ``{prefix}-{model}-canary-*``) and records each release
    under ``releases/`` in the registry.
    """

    def __init__(self, scope: Construct, id_: str, *, config: Config, topic: sns.ITopic, **kwargs: Any) -> None:
        super().__init__(scope, id_, **kwargs)
        bucket = _registry(self, config)
        built = python_function(
            self,
            "ReleaseFunction",
            defaults=_defaults(config),
            handler="lambdas.release.handler.lambda_handler",
            code=lambda_code(_bundle(config, "release", "lambdas/release/requirements.txt", "lambdas/release")),
            description="modeldeck: one task of a release (gate, shift, check, promote, rollback, shadow)",
            environment={
                "MODEL_BUCKET": bucket.bucket_name,
                "TOPIC_ARN": topic.topic_arn,
                "ALARM_PREFIX": config.prefix,
                # The canary policy (config's `canary` table; read by modeldeck.release.Policy.from_env).
                "CANARY_ERROR_RATE_PERCENT": str(config.canary.error_rate_percent),
                "CANARY_MIN_REQUESTS": str(config.canary.min_requests),
                "CANARY_LATENCY_P99_MS": str(config.alarms.latency_p99_ms),
                "CANARY_PREDICTION_SHIFT": str(config.canary.prediction_shift),
                "CANARY_PERIOD_SECONDS": str(config.canary.period_seconds),
                "CANARY_GATE_ENABLED": str(config.canary.gate_enabled).lower(),
                "CANARY_GATE_ALPHA": str(config.canary.gate_alpha),
                "CANARY_GATE_INTERVAL_SECONDS": str(config.canary.gate_interval_seconds),
                "CANARY_GATE_LATENCY_MARGIN_PERCENT": str(config.canary.gate_latency_margin_percent),
                "POWERTOOLS_SERVICE_NAME": "modeldeck-release",
            },
            memory_mb=1024,
            # The gate's differential test and, with SnapStart, waiting for the published version to be Active.
            timeout=cdk.Duration.minutes(10),
            function_name=f"{config.prefix}-release",
        )
        fn, role = built.function, built.role
        self.function: lambda_.IFunction = fn
        self.function_name = f"{config.prefix}-release"
        state_machine_name = f"{config.prefix}-release"
        # By name, so the function can start the state machine that invokes it without a circular reference.
        state_machine_arn = (
            f"arn:{cdk.Aws.PARTITION}:states:{cdk.Aws.REGION}:{cdk.Aws.ACCOUNT_ID}:stateMachine:{state_machine_name}"
        )
        fn.add_environment("RELEASE_STATE_MACHINE_ARN", state_machine_arn)
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["states:StartExecution"], resources=[state_machine_arn])
        )
        # The gate takes over a lock whose execution no longer runs: it asks Step Functions.
        executions = (
            f"arn:{cdk.Aws.PARTITION}:states:{cdk.Aws.REGION}:{cdk.Aws.ACCOUNT_ID}:execution:{state_machine_name}:*"
        )
        role.add_to_principal_policy(iam.PolicyStatement(actions=["states:DescribeExecution"], resources=[executions]))
        bucket.grant_read(role, "models/*")
        bucket.grant_read_write(role, "releases/*")
        for model in config.models:
            # StopShadow's report reads the captured pairs of the shadow bake; the statistical gate, the bake's
            # captured latencies and prediction scores.
            bucket.grant_read(role, f"capture/{model.name}/*")
            bucket.grant_write(role, f"models/{model.name}/champion.json")
            bucket.grant_put(role, f"models/{model.name}/shadow.json")
            bucket.grant_delete(role, f"models/{model.name}/shadow.json")
        arn = f"arn:{cdk.Aws.PARTITION}:lambda:{cdk.Aws.REGION}:{cdk.Aws.ACCOUNT_ID}:function"
        functions = [f"{arn}:{config.function_name(m.name)}" for m in config.models]
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
                    "lambda:GetFunctionConfiguration",
                    "lambda:UpdateFunctionConfiguration",
                    "lambda:PublishVersion",
                    "lambda:ListVersionsByFunction",
                    "lambda:GetAlias",
                    "lambda:UpdateAlias",
                    "lambda:CreateAlias",
                    "lambda:GetFunction",
                ],
                resources=[*functions, *(f"{f}:*" for f in functions)],
            )
        )
        alarms = f"arn:{cdk.Aws.PARTITION}:cloudwatch:{cdk.Aws.REGION}:{cdk.Aws.ACCOUNT_ID}:alarm:{config.prefix}-*"
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
                    "cloudwatch:PutMetricAlarm",
                    "cloudwatch:TagResource",
                    "cloudwatch:DeleteAlarms",
                    "cloudwatch:DescribeAlarmHistory",
                ],
                resources=[alarms],
            )
        )
        # GetMetricData: the check's totals of the candidate's requests, server errors and scores over its bake.
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["cloudwatch:DescribeAlarms", "cloudwatch:GetMetricData"], resources=["*"])
        )
        orchestration = ReleaseOrchestration(
            self,
            "Release",
            release_function=fn,
            topic=topic,
            name=state_machine_name,
            timeout=cdk.Duration.seconds(release_timeout_seconds(config)),
            log_retention=retention(config.log_retention_days),
        )
        self.state_machine = orchestration.state_machine
        cdk.CfnOutput(self, "ReleaseStateMachineArn", value=self.state_machine.state_machine_arn)
        cdk.CfnOutput(self, "ReleaseFunctionName", value=fn.function_name)

        acknowledge(fn, "AwsSolutions-L1", L1_REASON)
        acknowledge(role, "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]", KMS_REASON)
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "cloudwatch:DescribeAlarms, cloudwatch:GetMetricData and the X-Ray writes have no resource-level "
            "permissions.",
        )
        for prefix in ("models/*", "releases/*", *(f"capture/{m.name}/*" for m in config.models)):
            acknowledge_prefix(
                role,
                bucket,
                prefix,
                "The gate reads any registered version's card, artifact and holdout; release "
                "records and the lock are keys under releases/; a shadow report reads the model's capture.",
            )
        acknowledge_resource(
            role,
            executions,
            "",
            "The gate asks whether the execution holding a release lock still runs; executions are named per release.",
        )
        for action in ("s3:GetBucket*", "s3:GetObject*", "s3:List*", "s3:Abort*", "s3:DeleteObject*"):
            acknowledge(
                role,
                f"AwsSolutions-IAM5[Action::{action}]",
                "CDK's bucket grants for the prefixes above (read, write, delete of the shadow switch).",
            )
        for f in functions:
            acknowledge_resource(
                role,
                f,
                ":*",
                "Releases publish and route between the model function's numbered versions.",
            )
        acknowledge_resource(
            role,
            alarms,
            "",
            "The canary alarms are (re)created per release under the stage's alarm prefix.",
        )
        acknowledge(
            orchestration.state_machine,
            "AwsSolutions-IAM5[Resource::*]",
            "Step Functions log delivery and X-Ray need '*' (no resource-level permissions).",
        )
        acknowledge_resource(
            orchestration.state_machine,
            fn.function_arn,
            ":*",
            "Step Functions' Lambda integration may invoke the function's versions.",
        )


def release_timeout_seconds(config: Config) -> int:
    """The release state machine's execution timeout: the longest plan the config allows, and at least the
    6 hours an operator's longer plans from the CLI may use (the CLI refuses plans that do not fit)."""
    configured = getattr(config, "release_timeout_minutes", None)
    if configured:
        return int(configured) * 60
    c = config.canary
    period = int(getattr(c, "period_seconds", 60))
    return max(6 * 3600, release.plan_seconds(c.strategy, c.steps, c.bake_minutes * 60, period))


class TrainingStack(cdk.Stack):
    """The training function and state machine, its schedule and the retrain-on-drift rules."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        config: Config,
        topic: sns.ITopic,
        drift_alarm_names: dict[str, list[str]],
        release_function_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, id_, **kwargs)
        bucket = _registry(self, config)
        t = config.training
        # By name (like the registry): no export ties this stack to the release stack.
        release = (
            lambda_.Function.from_function_arn(
                self,
                "ReleaseFunction",
                f"arn:{cdk.Aws.PARTITION}:lambda:{cdk.Aws.REGION}:{cdk.Aws.ACCOUNT_ID}:function:{release_function_name}",
            )
            if release_function_name
            else None
        )
        datasets = [_dataset_arn(m.dataset_s3) for m in config.models if m.dataset_s3]
        training = TrainingFunction(
            self,
            "Training",
            settings=TrainingSettings(
                function_name=f"{config.prefix}-training",
                state_machine_name=f"{config.prefix}-training",
                memory_mb=t.memory_mb,
                timeout_minutes=t.timeout_minutes,
            ),
            defaults=_defaults(config),
            code=image_code(),
            bucket=bucket,
            dataset_objects=datasets,
        )
        pipeline = TrainingPipeline(
            self,
            "Pipeline",
            settings=PipelineSettings(
                name=f"{config.prefix}-training",
                function_name_prefix=config.prefix,
                compute=t.compute,
                instance_type=t.instance_type,
                sagemaker_image=t.sagemaker_image,
                manual_approval=t.manual_approval,
                step_timeout_minutes=t.timeout_minutes,
                log_retention_days=config.log_retention_days,
                canary_strategy=config.canary.strategy,
                canary_steps=config.canary.steps,
                canary_weight=config.canary.weight,
                bake_minutes=config.canary.bake_minutes,
            ),
            training_function=training.function,
            bucket=bucket,
            topic=topic,
            release=release,
            sagemaker_image=self._sagemaker_image(config) if t.compute == "sagemaker" else None,
            dataset_objects=datasets,
        )
        self.state_machine = pipeline.state_machine
        # A bring-your-own model has no training data or code here: nothing to retrain it with.
        for model in (m for m in config.models if not m.byo):
            run = targets.SfnStateMachine(
                pipeline.state_machine,
                input=events.RuleTargetInput.from_object({"model": model.name, "spec": dict(model.spec_payload)}),
                retry_attempts=2,
            )
            p = pascal(model.name)
            if t.schedule:
                events.Rule(
                    self,
                    f"{p}Schedule",
                    description=f"Retrains {model.name} on a schedule",
                    schedule=events.Schedule.expression(t.schedule),
                    targets=[run],
                )
            if t.retrain_on_drift:
                events.Rule(
                    self,
                    f"{p}RetrainOnDrift",
                    description=f"Retrains {model.name} when one of its drift alarms goes to ALARM",
                    event_pattern=events.EventPattern(
                        source=["aws.cloudwatch"],
                        detail_type=["CloudWatch Alarm State Change"],
                        detail={"alarmName": drift_alarm_names[model.name], "state": {"value": ["ALARM"]}},
                    ),
                    targets=[run],
                )
        cdk.CfnOutput(self, "TrainingStateMachineArn", value=pipeline.state_machine.state_machine_arn)
        cdk.CfnOutput(self, "TrainingFunctionName", value=training.function.function_name)
        # The configured release policy, for the CLI's `release` defaults (read from the stack outputs).
        cdk.CfnOutput(self, "CanaryStrategy", value=config.canary.strategy)
        cdk.CfnOutput(self, "CanaryBakeSeconds", value=str(config.canary.bake_minutes * 60))
        acknowledge(
            training.role,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray PutTraceSegments/PutTelemetryRecords have no resource-level permissions.",
        )
        for prefix in ("staging/*", "models/*"):
            acknowledge_prefix(
                training,
                bucket,
                prefix,
                "Training stages runs and registers new versions; version numbers are not "
                "known in advance, so the grant is the prefix.",
            )
        acknowledge_resource(
            training.role,
            training.executions_arn,
            "",
            "The training lock asks whether its holder (any execution of the training state machine) still runs.",
        )
        acknowledge_resource(
            pipeline.state_machine,
            training.function.function_arn,
            ":*",
            "Step Functions' Lambda integration may invoke the function's versions; it is the one training function.",
        )
        acknowledge(pipeline, "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]", KMS_REASON)
        if release is not None:
            acknowledge_resource(
                pipeline.state_machine,
                release.function_arn,
                ":*",
                "The hand-over invokes the release function (any of its versions) to start a release.",
            )
        if t.compute == "sagemaker":
            self._acknowledge_sagemaker(pipeline, bucket)
        acknowledge(
            pipeline.state_machine,
            "AwsSolutions-IAM5[Resource::*]",
            "Step Functions log delivery and X-Ray need '*' (no resource-level permissions).",
        )

    def _sagemaker_image(self, config: Config) -> tasks.DockerImage:
        """The configured image, else the training Lambda's own image asset (Python 3.12, our pins)."""
        if config.training.sagemaker_image:
            return tasks.DockerImage.from_registry(config.training.sagemaker_image)
        return sagemaker_image(self)

    def _acknowledge_sagemaker(self, pipeline: TrainingPipeline, bucket: s3.IBucket) -> None:
        # ARNs rendered from the stack (concrete account and region under `cdk deploy`), as cdk-nag sees them.
        role = pipeline.sagemaker_role
        acknowledge_resource(
            pipeline.state_machine,
            self.format_arn(service="sagemaker", resource="training-job", resource_name="*"),
            "",
            "The .sync integration starts, describes and stops training jobs named per execution.",
        )
        acknowledge_resource(
            role,
            pipeline.sagemaker_logs_arn,
            "",
            "SageMaker writes one log stream per job in this log group.",
        )
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken has no resource-level permissions; cloudwatch:PutMetricData is "
            "limited to SageMaker's namespaces by condition.",
        )
        acknowledge_prefix(
            role,
            bucket,
            "staging/*",
            "The job stages staging/{model}/{execution}/pipeline.joblib; the run id is not known at deploy time.",
        )
        acknowledge_prefix(
            role,
            bucket,
            "staging/sagemaker/*",
            "CDK grants the training job write access to its output location (this prefix).",
        )
        for action in ("s3:Abort*", "s3:DeleteObject*"):
            acknowledge(
                role,
                f"AwsSolutions-IAM5[Action::{action}]",
                "CDK's grant for the job's output location (staging/sagemaker/) and nothing else.",
            )


class BatchStack(cdk.Stack):
    """Batch scoring: the batch function (container image) and its Distributed Map state machine."""

    def __init__(self, scope: Construct, id_: str, *, config: Config, **kwargs: Any) -> None:
        super().__init__(scope, id_, **kwargs)
        registry = _registry(self, config)
        b = config.batch

        def location(uri: str | None, default: str) -> tuple[str, str]:
            if uri is None:
                return registry.bucket_name, default
            bucket, _, prefix = uri.removeprefix("s3://").partition("/")
            return bucket, prefix

        input_bucket, input_prefix = location(b.input, "batch/input/")
        output_bucket, output_prefix = location(b.output, "batch/output/")
        batch = BatchScoring(
            self,
            "Batch",
            settings=BatchSettings(
                function_name=f"{config.prefix}-batch",
                state_machine_name=f"{config.prefix}-batch",
                input_bucket=input_bucket,
                input_prefix=input_prefix,
                output_bucket=output_bucket,
                output_prefix=output_prefix,
                max_concurrency=b.max_concurrency,
                files_per_batch=b.files_per_batch,
                tolerated_failure_percent=b.tolerated_failure_percent,
                memory_mb=b.memory_mb,
                timeout_minutes=b.timeout_minutes,
                log_retention_days=config.log_retention_days,
            ),
            defaults=_defaults(config),
            code=batch_image_code(),
            registry=registry,
        )
        self.state_machine = batch.state_machine
        cdk.CfnOutput(self, "BatchStateMachineArn", value=batch.state_machine.state_machine_arn)
        cdk.CfnOutput(self, "BatchInputLocation", value=f"s3://{input_bucket}/{input_prefix}")
        cdk.CfnOutput(self, "BatchOutputLocation", value=f"s3://{output_bucket}/{output_prefix}")
        acknowledge(
            batch.role,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray PutTraceSegments/PutTelemetryRecords have no resource-level permissions.",
        )
        acknowledge_prefix(
            batch,
            registry,
            "models/*",
            "The batch reads the pinned version's card and model; any version may be pinned.",
        )
        for bucket, prefix, why in (
            (input_bucket, input_prefix, "The batch reads every object under its input location (file names vary)."),
            (output_bucket, output_prefix, "The batch writes one output per input file under its output location."),
        ):
            acknowledge_resource(batch, f"arn:{cdk.Aws.PARTITION}:s3:::{bucket}/{prefix}", "*", why)
        acknowledge_resource(
            batch.state_machine,
            batch.function.function_arn,
            ":*",
            "Step Functions' Lambda integration may invoke the function's versions; it is the one batch function.",
        )
        acknowledge(
            batch.state_machine,
            "AwsSolutions-IAM5[Resource::*]",
            "Step Functions log delivery and X-Ray need '*' (no resource-level permissions).",
        )
        acknowledge_resource(
            batch.state_machine,
            f"arn:{cdk.Aws.PARTITION}:s3:::{output_bucket}",
            "/*",
            "CDK's ResultWriter grant covers the output bucket; an explicit Deny keeps writes to the output prefix.",
        )
        acknowledge_map_children(
            batch.state_machine,
            "A Distributed Map starts, describes and stops its own child executions, named at run time.",
        )


def _dataset_arn(uri: str) -> str:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return f"arn:{cdk.Aws.PARTITION}:s3:::{bucket}/{key}"


@dataclass
class ModeldeckApp:
    """The composed stacks, for tests and for wiring later issues (the release machinery)."""

    registry: RegistryStack
    serving: ServingStack
    monitoring: MonitoringStack
    release: ReleaseStack
    training: TrainingStack
    batch: BatchStack | None = None
    stacks: list[cdk.Stack] = field(default_factory=list)


def build_app(app: cdk.App, config: Config) -> ModeldeckApp:
    """Instantiate every stack for ``config`` under ``app`` (stack names ``modeldeck-{stage}-*``)."""
    env = cdk.Environment(account=config.account, region=config.region) if config.account or config.region else None
    common: dict[str, Any] = {"env": env}
    registry = RegistryStack(
        app,
        "Registry",
        stack_name=f"{config.prefix}-registry",
        config=config,
        description="modeldeck: S3 model registry",
        **common,
    )
    serving = ServingStack(
        app,
        "Serving",
        stack_name=f"{config.prefix}-serving",
        config=config,
        description="modeldeck: inference functions, API, capture",
        **common,
    )
    monitoring = MonitoringStack(
        app,
        "Monitoring",
        stack_name=f"{config.prefix}-monitoring",
        config=config,
        description="modeldeck: drift job, alarms, dashboard, alert topic",
        **common,
    )
    release = ReleaseStack(
        app,
        "Release",
        stack_name=f"{config.prefix}-release",
        config=config,
        topic=monitoring.topic,
        description="modeldeck: release state machine (canary, linear, all-at-once, shadow) and its function",
        **common,
    )
    training = TrainingStack(
        app,
        "Training",
        stack_name=f"{config.prefix}-training",
        config=config,
        topic=monitoring.topic,
        drift_alarm_names=monitoring.monitoring.drift_alarm_names,
        release_function_name=release.function_name,
        description="modeldeck: training pipeline",
        **common,
    )
    batch = BatchStack(
        app,
        "Batch",
        stack_name=f"{config.prefix}-batch",
        config=config,
        description="modeldeck: batch scoring (Step Functions Distributed Map over S3)",
        **common,
    )
    # Names, not references, connect registry → serving → monitoring, so the order is explicit.
    serving.add_stack_dependency(registry)
    monitoring.add_stack_dependency(serving)
    release.add_stack_dependency(monitoring)
    training.add_stack_dependency(release)
    batch.add_stack_dependency(registry)
    stacks: list[cdk.Stack] = [registry, serving, monitoring, release, training, batch]
    for stack in stacks:
        cdk.Tags.of(stack).add("project", "modeldeck")
        cdk.Tags.of(stack).add("stage", config.stage)
    return ModeldeckApp(
        registry=registry,
        serving=serving,
        monitoring=monitoring,
        release=release,
        training=training,
        batch=batch,
        stacks=stacks,
    )
