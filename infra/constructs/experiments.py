"""The experiment job: a scheduled Lambda that judges every running A/B test (``lambdas.experiment.handler``).

Every ``schedule`` (15 minutes by default) it reads each configured model's ``models/{model}/experiment.json``;
a model without one costs that read and nothing else. For a running experiment it reads the capture and the
feedback since the start, writes a snapshot under ``experiments/{model}/{id}/snapshots/``, emits per-variant
metrics as EMF (namespace ``modeldeck``, dimensions model, experiment, variant: ``Units``, ``Requests``,
``Outcomes``, ``MetricValue``, ``PValue``, ``FixedPValue``) and, once, publishes the decision to the alert
topic. ``modeldeck experiment status`` invokes it directly with ``{"model": ...}``.

Its role may read the experiment documents, the capture of its models and the feedback, keep its own objects
under ``experiments/`` and publish to the alert topic; nothing else (EMF goes through its own log group,
so it needs no ``cloudwatch:PutMetricData``). Environment: MODEL_BUCKET, MODELS, TOPIC_ARN.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra.constructs.functions import FunctionDefaults, python_function

HANDLER = "lambdas.experiment.handler.lambda_handler"
SCHEDULE = "rate(15 minutes)"


def experiment_reads(models: Sequence[str]) -> list[str]:
    """Object keys (with wildcards) the job reads: the experiment documents, captured traffic, feedback."""
    return [
        *(f"models/{name}/experiment.json" for name in models),
        *(f"capture/{name}/*" for name in models),
        "feedback/*",
    ]


def experiment_lists(models: Sequence[str]) -> list[str]:
    """``s3:prefix`` values the job may list: capture, feedback, its own objects, and each model's folder (so
    a model without an experiment is a 404, not a 403: S3 API reference, GetObject)."""
    return [
        *(f"capture/{name}/*" for name in models),
        *(f"models/{name}/*" for name in models),
        "feedback/*",
        "experiments/*",
    ]


class ExperimentJob(Construct):
    """The scheduled experiment Lambda (``function``, ``role``) and its rule (``schedule``)."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        prefix: str,
        defaults: FunctionDefaults,
        code: lambda_.Code,
        bucket: s3.IBucket,
        topic: sns.ITopic,
        models: Sequence[str],
        schedule: str = SCHEDULE,
        memory_mb: int = 1024,
    ) -> None:
        super().__init__(scope, id_)
        built = python_function(
            self,
            "ExperimentFunction",
            defaults=defaults,
            handler=HANDLER,
            code=code,
            description="modeldeck experiment job: A/B test statistics, snapshots and the decision",
            function_name=f"{prefix}-experiment",
            memory_mb=memory_mb,
            timeout=Duration.minutes(5),
            environment={
                "MODEL_BUCKET": bucket.bucket_name,
                "MODELS": ",".join(models),
                "TOPIC_ARN": topic.topic_arn,
                "POWERTOOLS_SERVICE_NAME": "modeldeck-experiment",
            },
        )
        self.function = built.function
        self.role = role = built.role
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ReadExperimentsCaptureAndFeedback",
                actions=["s3:GetObject"],
                resources=[bucket.arn_for_objects(key) for key in experiment_reads(models)],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                # Snapshots, and the decision marker (taken before the SNS message, given back if it fails).
                sid="SnapshotsAndDecisionMarkers",
                actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                resources=[bucket.arn_for_objects("experiments/*")],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ListCaptureFeedbackAndExperiments",
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": experiment_lists(models)}},
            )
        )
        topic.grant_publish(role)
        self.schedule = events.Rule(
            self,
            "Schedule",
            description="Runs the modeldeck experiment job (nothing to do when no experiment runs)",
            schedule=events.Schedule.expression(schedule),
            targets=[targets.LambdaFunction(self.function, retry_attempts=2)],
        )
