"""Monitoring: the alert topic, the scheduled drift job, per-model alarms and the dashboard.

The drift job (``lambdas.drift.handler.lambda_handler``) runs on a schedule as a state machine (plan, a
Distributed Map profiling each capture hour, reduce: :meth:`DriftMonitoring._state_machine`), compares each
model's recent captured traffic with the baseline of the version that served it and publishes to the
``modeldeck`` namespace, with
dimension ``model``: ``DriftedShare`` (share of features that drifted), ``MaxFeaturePSI``,
``PredictionDrift`` and ``Accuracy`` (from feedback labels). It reads ``capture/{model}/*``,
``feedback/*``, the champions, baselines and cards under ``models/``, keeps one result per judged
window under ``drift/`` and its runs' partition profiles under ``drift-work/`` (deleted by the reduce step).
Its environment carries the thresholds::

    MODEL_BUCKET, MODELS (comma-separated), PSI_THRESHOLD, DRIFTED_SHARE_THRESHOLD, P_VALUE_ALPHA,
    BONFERRONI ("true"/"false"), MIN_SAMPLE_SIZE, PREDICTION_DRIFT_THRESHOLD, WINDOW_HOURS, TOPIC_ARN,
    POWERTOOLS_SERVICE_NAME, POWERTOOLS_METRICS_NAMESPACE=modeldeck

Alarms (all with the topic as AlarmAction and OKAction; names ``modeldeck-{stage}-{model}-{what}``):

- ML: drifted share, max PSI, prediction drift (≥ thresholds) and accuracy (< threshold, when one is
  configured). ``TreatMissingData = notBreaching``: the drift job publishes nothing when a window holds
  fewer than ``MIN_SAMPLE_SIZE`` rows, and too little traffic is no evidence of drift; a broken drift job
  is caught by its own error alarm instead of by every model's drift alarms.
- Operational, on the ``live`` alias (dimensions ``FunctionName`` + ``Resource = fn:live``): errors, p99
  duration and throttles. ``notBreaching`` as well: no invocations means no errors and no latency.
  Lambda's ``Errors`` counts only unhandled exceptions, timeouts and out-of-memory (Lambda developer guide,
  "Types of metrics for Lambda functions"); the handler turns every exception into a 500 or 503, which
  Lambda counts as a success. So two more alarms watch what clients see:

  - ``server-error-rate``: the handler's own ``ServerErrors`` (EMF, namespace ``modeldeck``, dimension
    ``model``: every version behind ``live``) as a percentage of the alias's ``Invocations``, once at
    least ``min_requests`` arrived in the period;
  - ``api-5xx-rate-{infer,predict,feedback}``: API Gateway's ``5XXError`` over ``Count``, one alarm per
    scoring route (per-method metrics: ``ApiName``, ``Method``, ``Resource``, ``Stage``), which also sees
    what never reaches the handler's code (integration failures, timeouts, a malformed proxy response). One
    alarm per route, because a sum over routes is empty whenever one route is idle (see
    :func:`modeldeck.cloudwatch_timing.error_rate_expression`).

Canary alarms on the ``ExecutedVersion`` dimension belong to the release machinery.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infra.config import DriftConfig, pascal
from infra.constructs.api import scoring_routes
from infra.constructs.functions import FunctionDefaults, python_function, retention
from modeldeck.cloudwatch_timing import error_rate_expression

HANDLER = "lambdas.drift.handler.lambda_handler"
NAMESPACE = "modeldeck"
WORK_PREFIX = "drift-work/*"  # the map/reduce runs' intermediate objects (modeldeck.drift.WORK_PREFIX)
LAMBDA_RETRY_ERRORS = (
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
)
ML_METRICS = ("DriftedShare", "MaxFeaturePSI", "PredictionDrift", "Accuracy")


def drift_reads(models: Sequence[str]) -> list[str]:
    """Object keys (with wildcards) the drift job reads: captured traffic, feedback, champions, the
    baselines and cards of the versions that served it."""
    return [
        *(f"capture/{name}/*" for name in models),
        "feedback/*",
        "models/*/champion.json",
        "models/*/*/baseline.json",
        "models/*/*/card.json",
    ]


def list_prefixes(models: Sequence[str]) -> list[str]:
    """``s3:prefix`` values the drift job may list: each model's captured traffic and artifacts, feedback,
    and its window markers."""
    return [
        *(f"capture/{name}/*" for name in models),
        *(f"models/{name}/*" for name in models),
        "feedback/*",
        "drift/*",
    ]


@dataclass(frozen=True)
class MonitoredModel:
    """One model as monitoring sees it: its name, task and the name of the function behind ``live``."""

    name: str
    task: str
    function_name: str


@dataclass(frozen=True)
class MonitoringSettings:
    prefix: str
    emails: tuple[str, ...] = ()
    drift: DriftConfig = field(default_factory=DriftConfig)
    error_threshold: int = 5
    error_rate_percent: float = 5.0
    min_requests: int = 10
    api_name: str | None = None
    api_stage: str | None = None
    latency_p99_ms: int = 1000
    throttle_threshold: int = 1
    drift_memory_mb: int = 1024
    # The drift state machine's Distributed Map: capture hours per child, children at once.
    drift_partitions_per_batch: int = 4
    drift_max_concurrency: int = 50
    log_retention_days: int = 30


RATE_PERIOD = Duration.minutes(5)


def server_errors(model: str) -> cw.Metric:
    """The handler's 5xx answers for a model, every version together (its EMF ``model`` rollup)."""
    return cw.Metric(
        namespace=NAMESPACE,
        metric_name="ServerErrors",
        dimensions_map={"model": model},
        statistic="Sum",
        period=RATE_PERIOD,
    )


def server_error_rate(model: str, function_name: str, min_requests: int) -> cw.MathExpression:
    """Percent of the live alias's invocations the handler answered with a 5xx; 0 below ``min_requests``.

    No ServerErrors datapoint in a period means none was answered (FILL 0); no Invocations datapoint means no
    traffic, so no datapoint at all (the alarm treats it as not breaching)."""
    requests = cw.Metric(
        namespace="AWS/Lambda",
        metric_name="Invocations",
        dimensions_map={"FunctionName": function_name, "Resource": f"{function_name}:live"},
        statistic="Sum",
        period=RATE_PERIOD,
    )
    return cw.MathExpression(
        expression=error_rate_expression(min_requests),
        using_metrics={"errors": server_errors(model), "requests": requests},
        label=f"{model}: % of requests answered 5xx",
        period=RATE_PERIOD,
    )


def api_5xx_rate(
    model: str, api_name: str, stage: str, min_requests: int, method: str, resource: str
) -> cw.MathExpression:
    """Percent of API Gateway's answers on one of the model's scoring routes that were 5xx; 0 below
    ``min_requests``. One route per alarm: a sum over routes would be empty whenever one route is idle."""
    dims = {"ApiName": api_name, "Method": method, "Resource": resource, "Stage": stage}

    def metric(name: str) -> cw.Metric:
        return cw.Metric(
            namespace="AWS/ApiGateway", metric_name=name, dimensions_map=dims, statistic="Sum", period=RATE_PERIOD
        )

    return cw.MathExpression(
        expression=error_rate_expression(min_requests),
        using_metrics={"errors": metric("5XXError"), "requests": metric("Count")},
        label=f"{model}: % of API answers on {method} {resource} that were 5xx",
        period=RATE_PERIOD,
    )


def route_slug(resource: str) -> str:
    """``infer``, ``predict`` or ``feedback``: the last word of a scoring route, for alarm names."""
    return resource.rsplit("/", 1)[-1].rsplit(":", 1)[-1]


class AlertTopic(Construct):
    """The SNS topic every alarm and failure notifies: KMS-encrypted, TLS only, email subscribers.

    ``enforce_ssl`` gives the topic a policy of its own (the TLS Deny), and a topic policy replaces SNS's
    default one, so nothing but that policy lets CloudWatch publish (AWS Knowledge Center,
    "cloudwatch-receive-sns-for-alarm-trigger"). The topic policy and the key policy therefore allow
    ``cloudwatch.amazonaws.com`` for our own alarms only: this account (``aws:SourceAccount``) and alarm
    names under ``alarm_prefix`` (``aws:SourceArn``), so no other account's alarm can use the topic (SNS
    developer guide, "Enable compatibility between event sources from AWS services and encrypted topics").
    Our own functions and state machines publish with their roles' identity policies.
    """

    def __init__(self, scope: Construct, id_: str, *, name: str, alarm_prefix: str, emails: Sequence[str] = ()) -> None:
        super().__init__(scope, id_)
        stack = Stack.of(self)
        own_alarms = {
            "StringEquals": {"aws:SourceAccount": stack.account},
            "ArnLike": {
                "aws:SourceArn": stack.format_arn(
                    service="cloudwatch",
                    resource="alarm",
                    resource_name=f"{alarm_prefix}-*",
                    arn_format=ArnFormat.COLON_RESOURCE_NAME,
                )
            },
        }
        self.key = kms.Key(
            self,
            "Key",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
            description="modeldeck alert topic encryption",
        )
        # SNS encrypts what CloudWatch publishes with CloudWatch's own permissions on the key.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowOwnCloudWatchAlarms",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions=own_alarms,
            )
        )
        self.topic = sns.Topic(
            self, "Topic", topic_name=name, display_name="modeldeck alerts", master_key=self.key, enforce_ssl=True
        )
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowOwnCloudWatchAlarms",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions=own_alarms,
            )
        )
        for email in emails:
            self.topic.add_subscription(subs.EmailSubscription(email))


class DriftMonitoring(Construct):
    """The scheduled drift job, every model's alarms (``alarms[model]``) and the dashboard."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        settings: MonitoringSettings,
        defaults: FunctionDefaults,
        code: lambda_.Code,
        bucket: s3.IBucket,
        topic: sns.ITopic,
        models: Sequence[MonitoredModel],
    ) -> None:
        super().__init__(scope, id_)
        s = settings
        names = [m.name for m in models]
        built = python_function(
            self,
            "DriftFunction",
            defaults=defaults,
            handler=HANDLER,
            code=code,
            description="modeldeck drift job: captured traffic vs the champion's baseline",
            function_name=f"{s.prefix}-drift",
            memory_mb=s.drift_memory_mb,
            timeout=Duration.minutes(5),
            environment={
                "MODEL_BUCKET": bucket.bucket_name,
                "MODELS": ",".join(names),
                "PSI_THRESHOLD": str(s.drift.psi_threshold),
                "DRIFTED_SHARE_THRESHOLD": str(s.drift.drifted_share),
                "P_VALUE_ALPHA": str(s.drift.alpha),
                "BONFERRONI": "true" if s.drift.bonferroni else "false",
                "MIN_SAMPLE_SIZE": str(s.drift.min_sample_size),
                "PREDICTION_DRIFT_THRESHOLD": str(s.drift.prediction_drift_threshold),
                "WINDOW_HOURS": str(s.drift.window_hours),
                "TOPIC_ARN": topic.topic_arn,
                "POWERTOOLS_SERVICE_NAME": "modeldeck-drift",
                "POWERTOOLS_METRICS_NAMESPACE": NAMESPACE,
            },
        )
        self.function = built.function
        self.role = role = built.role
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ReadCaptureFeedbackAndBaselines",
                actions=["s3:GetObject"],
                resources=[bucket.arn_for_objects(key) for key in drift_reads(names)],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                # One result per judged window, so a re-run of the same window is a replay, not a new alert.
                sid="WindowMarkers",
                actions=["s3:GetObject", "s3:PutObject"],
                resources=[bucket.arn_for_objects("drift/*")],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                # The job lists capture, feedback and its markers; listing models/{name}/ also makes a missing
                # baseline or card a 404 rather than a 403 (S3 answers AccessDenied for a missing key the
                # caller may not list: S3 API reference, GetObject).
                sid="ListCaptureFeedbackMarkersAndModels",
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": list_prefixes(names)}},
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="PublishDriftMetrics",
                actions=["cloudwatch:PutMetricData"],
                # PutMetricData has no resource-level permissions; the namespace condition is the scope.
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": NAMESPACE}},
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                # The map step's partition profiles and the plan's labels, deleted by the reduce step.
                sid="DriftWork",
                actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                resources=[bucket.arn_for_objects(WORK_PREFIX)],
            )
        )
        topic.grant_publish(role)
        self.state_machine = self._state_machine(s)
        events.Rule(
            self,
            "Schedule",
            description="Runs the modeldeck drift job (its state machine: plan, profile per partition, reduce)",
            schedule=events.Schedule.expression(s.drift.schedule),
            targets=[
                targets.SfnStateMachine(
                    self.state_machine, input=events.RuleTargetInput.from_object({}), retry_attempts=2
                )
            ],
        )

        action = cw_actions.SnsAction(topic)
        self.alarms: dict[str, list[cw.Alarm]] = {}
        self.drift_alarm_names: dict[str, list[str]] = {}
        self.all_alarms: list[cw.Alarm] = []

        def alarm(
            id_: str,
            name: str,
            metric: cw.IMetric,
            threshold: float,
            op: cw.ComparisonOperator,
            description: str,
            periods: int = 1,
        ) -> cw.Alarm:
            a = cw.Alarm(
                self,
                id_,
                alarm_name=name,
                alarm_description=description,
                metric=metric,
                threshold=threshold,
                comparison_operator=op,
                evaluation_periods=periods,
                datapoints_to_alarm=periods,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )
            a.add_alarm_action(action)
            a.add_ok_action(action)
            self.all_alarms.append(a)
            return a

        job_errors = alarm(
            "DriftJobErrors",
            f"{s.prefix}-drift-job-errors",
            self.function.metric_errors(period=Duration.hours(1), statistic="Sum"),
            1,
            cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            "The drift job failed: drift metrics are stale until it recovers.",
        )
        self.job_errors = job_errors
        drift_period = Duration.hours(1)
        ge = cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
        widgets_ops: list[cw.IWidget] = []
        widgets_ml: list[cw.IWidget] = []
        for model in models:
            p = pascal(model.name)
            base = f"{s.prefix}-{model.name}"

            def ml(metric_name: str, stat: str = "Maximum", model_name: str = model.name) -> cw.Metric:
                return cw.Metric(
                    namespace=NAMESPACE,
                    metric_name=metric_name,
                    dimensions_map={"model": model_name},
                    statistic=stat,
                    period=drift_period,
                )

            ml_alarms = [
                alarm(
                    f"{p}DriftedFeatures",
                    f"{base}-drifted-features",
                    ml("DriftedFeatures"),
                    1,
                    ge,
                    f"{model.name}: at least one feature drifted significantly (Bonferroni-corrected test with "
                    "a minimum effect, or PSI over the threshold).",
                ),
                alarm(
                    f"{p}DriftedShare",
                    f"{base}-drifted-share",
                    ml("DriftedShare"),
                    s.drift.drifted_share,
                    ge,
                    f"{model.name}: the share of drifted features reached {s.drift.drifted_share}.",
                ),
                alarm(
                    f"{p}MaxFeaturePsi",
                    f"{base}-max-feature-psi",
                    ml("MaxFeaturePSI"),
                    s.drift.psi_threshold,
                    ge,
                    f"{model.name}: a feature's PSI reached {s.drift.psi_threshold}.",
                ),
                alarm(
                    f"{p}PredictionDrift",
                    f"{base}-prediction-drift",
                    ml("PredictionDrift"),
                    s.drift.prediction_drift_threshold,
                    ge,
                    f"{model.name}: the prediction distribution moved by {s.drift.prediction_drift_threshold}.",
                ),
            ]
            if s.drift.accuracy_threshold is not None and model.task == "classification":
                ml_alarms.append(
                    alarm(
                        f"{p}Accuracy",
                        f"{base}-accuracy",
                        ml("Accuracy", "Minimum"),
                        s.drift.accuracy_threshold,
                        cw.ComparisonOperator.LESS_THAN_THRESHOLD,
                        f"{model.name}: accuracy on feedback labels fell below {s.drift.accuracy_threshold}.",
                    )
                )

            def op(metric_name: str, stat: str, fn: str = model.function_name) -> cw.Metric:
                # Alias-level metrics: Lambda publishes them with Resource = "<function>:<alias>".
                dims = {"FunctionName": fn, "Resource": f"{fn}:live"}
                return cw.Metric(
                    namespace="AWS/Lambda",
                    metric_name=metric_name,
                    statistic=stat,
                    period=Duration.minutes(1),
                    dimensions_map=dims,
                )

            ops_alarms = [
                alarm(
                    f"{p}Errors",
                    f"{base}-errors",
                    op("Errors", "Sum").with_(period=Duration.minutes(5)),
                    s.error_threshold,
                    ge,
                    f"{model.name}: invocations of the live alias failed (unhandled exceptions, timeouts, "
                    "out of memory).",
                ),
                alarm(
                    f"{p}ServerErrorRate",
                    f"{base}-server-error-rate",
                    server_error_rate(model.name, model.function_name, s.min_requests),
                    s.error_rate_percent,
                    ge,
                    f"{model.name}: at least {s.error_rate_percent:g}% of requests to the live alias answered "
                    f"5xx (at least {s.min_requests} requests in 5 minutes).",
                ),
                alarm(
                    f"{p}LatencyP99",
                    f"{base}-latency-p99",
                    op("Duration", "p99").with_(period=Duration.minutes(5)),
                    s.latency_p99_ms,
                    cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                    f"{model.name}: p99 latency above {s.latency_p99_ms} ms.",
                    periods=2,
                ),
                alarm(
                    f"{p}Throttles",
                    f"{base}-throttles",
                    op("Throttles", "Sum").with_(period=Duration.minutes(5)),
                    s.throttle_threshold,
                    ge,
                    f"{model.name}: the live alias is being throttled.",
                ),
            ]
            if s.api_name and s.api_stage:
                for method, resource in scoring_routes(model.name):
                    slug = route_slug(resource)
                    ops_alarms.append(
                        alarm(
                            f"{p}Api5xxRate{slug.title()}",
                            f"{base}-api-5xx-rate-{slug}",
                            api_5xx_rate(model.name, s.api_name, s.api_stage, s.min_requests, method, resource),
                            s.error_rate_percent,
                            ge,
                            f"{model.name}: at least {s.error_rate_percent:g}% of the API's answers on {method} "
                            f"{resource} were 5xx (at least {s.min_requests} requests in 5 minutes).",
                        )
                    )
            self.alarms[model.name] = ml_alarms + ops_alarms
            # Literal names (not tokens): the retrain rules in another stack match on them without an export.
            self.drift_alarm_names[model.name] = [
                f"{base}-drifted-features",
                f"{base}-drifted-share",
                f"{base}-max-feature-psi",
                f"{base}-prediction-drift",
                *([f"{base}-accuracy"] if len(ml_alarms) == 5 else []),
            ]
            widgets_ops += [
                cw.GraphWidget(
                    title=f"{model.name}: invocations and errors",
                    width=12,
                    left=[op("Invocations", "Sum"), op("Errors", "Sum"), server_errors(model.name)],
                ),
                cw.GraphWidget(
                    title=f"{model.name}: p99 duration (ms) and throttles",
                    width=12,
                    left=[op("Duration", "p99")],
                    right=[op("Throttles", "Sum")],
                ),
            ]
            widgets_ml += [
                cw.GraphWidget(
                    title=f"{model.name}: drifted share and max PSI",
                    width=12,
                    left=[ml("DriftedShare"), ml("MaxFeaturePSI")],
                    left_annotations=[
                        cw.HorizontalAnnotation(value=s.drift.drifted_share, label="share"),
                        cw.HorizontalAnnotation(value=s.drift.psi_threshold, label="PSI"),
                    ],
                ),
                cw.GraphWidget(
                    title=f"{model.name}: prediction drift and accuracy",
                    width=12,
                    left=[ml("PredictionDrift")],
                    right=[ml("Accuracy", "Average")],
                ),
            ]
        self.dashboard = cw.Dashboard(self, "Dashboard", dashboard_name=f"{s.prefix}-models")
        self.dashboard.add_widgets(cw.TextWidget(markdown="## Serving (live aliases)", width=24, height=1))
        for i in range(0, len(widgets_ops), 2):
            self.dashboard.add_widgets(*widgets_ops[i : i + 2])
        self.dashboard.add_widgets(cw.TextWidget(markdown="## Model health (drift job)", width=24, height=1))
        for i in range(0, len(widgets_ml), 2):
            self.dashboard.add_widgets(*widgets_ml[i : i + 2])
        self.dashboard.add_widgets(cw.AlarmStatusWidget(title="Alarms", alarms=list(self.all_alarms), width=24))

    def _task(self, id_: str, payload: sfn.TaskInput | None, result_path: str | None) -> tasks.LambdaInvoke:
        task = tasks.LambdaInvoke(
            self,
            id_,
            lambda_function=self.function,
            payload=payload,
            payload_response_only=True,
            retry_on_service_exceptions=False,
            result_path=result_path,
        )
        task.add_retry(errors=list(LAMBDA_RETRY_ERRORS), interval=Duration.seconds(2), max_attempts=3, backoff_rate=2)
        return task

    def _state_machine(self, s: MonitoringSettings) -> sfn.StateMachine:
        """The drift job as map/reduce: input ``{}`` (every model's latest window) or one window
        ``{"model", "window", "end"}``::

            Plan      the runs (one per model and window) and their partitions (one per capture hour)
            Profile   Distributed Map over the partitions (ItemsPath $.items; ItemBatcher: a few hours per child)
                      each child profiles its partitions into drift-work/ (mergeable counts, not rows)
            Reduce    merges each run's profiles, judges, publishes metrics and the message, stores the marker
        """
        plan = self._task(
            "Plan", sfn.TaskInput.from_object({"action": "plan", "request": sfn.JsonPath.entire_payload}), "$"
        )
        profile = sfn.DistributedMap(
            self,
            "Profile",
            items_path="$.items",
            item_batcher=sfn.ItemBatcher(max_items_per_batch=s.drift_partitions_per_batch),
            max_concurrency=s.drift_max_concurrency,
            map_execution_type=sfn.StateMachineType.STANDARD,
            result_path=sfn.JsonPath.DISCARD,
        )
        profile.item_processor(self._task("ProfilePartitions", None, None))
        reduce = self._task(
            "Reduce",
            sfn.TaskInput.from_object({"action": "reduce", "runs": sfn.JsonPath.list_at("$.runs")}),
            "$.judged",
        )
        done = sfn.Pass(self, "Done", output_path="$.judged")
        log_group = logs.LogGroup(
            self, "StateMachineLogs", retention=retention(s.log_retention_days), removal_policy=RemovalPolicy.RETAIN
        )
        return sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=f"{s.prefix}-drift",
            definition_body=sfn.DefinitionBody.from_chainable(plan.next(profile).next(reduce).next(done)),
            timeout=Duration.hours(2),
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
        )
