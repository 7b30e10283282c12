"""The training pipeline: a Step Functions state machine over the training Lambda's steps.

::

    Lock ─► Locked? ─► SpecGiven? ─► Validate ─► Train ─► Evaluate ─► Convert ─► Compare ─► BeatsChampion?
              │ no                                                                    │ no          │
       TrainingInProgress                                              CandidateRejected   Register ─► [Approve]
                                                                                 ─► Release? ─► HandOver | Registered
    any task fails (after retries) ─► NotifyFailure (SNS, the whole error) ─► TrainingFailed

``Lock`` lets one execution per model train at a time (``training.steps.lock``, an S3 lock that is free
once its holder execution no longer runs); another one ends at once as ``TrainingInProgress``.

Execution input::

    {"model": "breast-cancer", "spec": {...}, "spec_dir": "/path/to/models"}
    # spec: the spec file's TOML as JSON; optional. spec_dir: where the spec's relative dataset paths are
    # read from; optional (NoSpecDir sets "": the bundled specs' directory)

Without ``spec`` the pass state ``UseBundledSpec`` sets ``"spec": "bundled"`` and the steps read
``models/{model}.toml`` from the image (``training.steps.spec_of`` only parses a ``spec`` that is an
object). Schedules and the retrain-on-drift rule send the spec read at synth time.

Every step invokes the one training function (``lambdas.pipeline.handler.lambda_handler``) with::

    {"step": "validate"|"train"|"evaluate"|"convert"|"compare"|"register",
     "model": <$.model>, "run_id": <$$.Execution.Name>, "spec": <$.spec>, "spec_dir": <$.spec_dir>}

and the function's return value (``payload_response_only``: the task's result is the handler's dict)
is stored at ``$.<step>``, so later states see every earlier result::

    $.validate  {"model", "rows", "dataset_sha256", "spec_sha256"}
    $.train     {"pipeline", "train_rows", "holdout_rows"}   (SageMaker: {"job_name", "status"})
    $.evaluate  {"metrics", "primary_metric"}
    $.convert   {"onnx_sha256", "parity", "metrics"}
    $.compare   {"champion", "passed", "reason", ...}        BeatsChampion? reads $.compare.passed
    $.register  {"model", "version", "created", "onnx_sha256"}

With ``compute = "sagemaker"`` the train state is a SageMaker training job (``.sync``) in the training
Lambda's own image (Python 3.12, ``training.sagemaker``; AWS's scikit-learn image runs Python 3.9). Its
hyperparameters carry the model, the run id and ``spec_key`` (the execution's spec, staged by the
validate step: a hyperparameter value holds at most 2,500 characters). The job is named
``{prefix}-{MD5 of the execution ARN}`` (at most 55 characters; SageMaker allows 63): deterministic, so
a retried task cannot start a second job, and unique per execution. It stages the same
``pipeline.joblib`` as the Lambda step, so evaluate onwards are unchanged.

The hand-over to release: pass ``release`` (the release function) and the last state asks it to start
the release state machine (action ``start``) with ``{"model", "version", "function_name", "strategy",
"steps", "canary_weight", "bake_seconds"}``, unless the input says ``"release": false``; without it
the last state is the ``Registered`` Succeed.
A Lambda task rather than Step Functions' ``startExecution`` integration: the same ASL then also runs
in the local cloud, whose Step Functions engine (moto) cannot execute that integration.

Every task retries Lambda's transient errors and ``States.Timeout`` with exponential backoff, and
catches everything else into ``NotifyFailure``, which sends the whole error object
(``States.JsonToString($.error)``): ``Cause`` is absent from some errors (``SendTaskFailure`` without a
cause), and a missing path in ``States.Format`` is a ``States.Runtime`` error that no Catch can handle.
The approval is not retried on ``States.Timeout``: a week without an answer is a rejection.

The execution timeout is the worst case of every task in a row (each attempt to its task timeout, plus
the backoff), with the approval's week when it is on: :attr:`TrainingPipeline.timeout`. Step Functions
ends an execution at its timeout whatever state it is in, so a shorter one would cut a legal run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Size, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infra.constructs.functions import retention

STEPS = ("validate", "train", "evaluate", "convert", "compare", "register")
TRANSIENT_ERRORS = [
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "States.Timeout",
]
SNS_TRANSIENT_ERRORS = [
    "SNS.SdkClientException",
    "SNS.InternalErrorException",
    "SNS.ThrottledException",
    "States.Timeout",
]
# Transient errors of the .sync SageMaker integration (throttling, service errors). Not States.Timeout: the
# job's name is fixed per execution, so a second CreateTrainingJob could only fail.
SAGEMAKER_TRANSIENT_ERRORS = ["SageMaker.AmazonSageMakerException"]
RETRY_INTERVAL_SECONDS = 2
RETRY_BACKOFF = 2.0
RETRY_ATTEMPTS = 3
APPROVAL_TIMEOUT = Duration.days(7)
SAGEMAKER_MAX_RUNTIME = Duration.hours(4)
# SageMaker may wait for capacity before the job's runtime starts counting; the task waits this much longer.
SAGEMAKER_START_ALLOWANCE = Duration.hours(1)
# The hand-over invokes the release function (its own timeout is 10 minutes; starting a release is quick).
HAND_OVER_TIMEOUT = Duration.minutes(11)
NOTIFY_TIMEOUT = Duration.minutes(1)
LOCK_TIMEOUT = Duration.minutes(2)
EXECUTION_MARGIN = Duration.minutes(30)


@dataclass(frozen=True)
class PipelineSettings:
    """Plain values from the config."""

    name: str
    function_name_prefix: str
    compute: str = "lambda"
    instance_type: str = "ml.m5.large"
    sagemaker_image: str | None = None
    manual_approval: bool = False
    step_timeout_minutes: int = 15
    log_retention_days: int = 30
    canary_strategy: str = "canary"
    canary_steps: int = 1
    canary_weight: float = 0.1
    bake_minutes: int = 10


class TrainingPipeline(Construct):
    """The training state machine (``state_machine``) around an existing training function."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        settings: PipelineSettings,
        training_function: lambda_.IFunction,
        bucket: s3.IBucket,
        topic: sns.ITopic,
        release: lambda_.IFunction | None = None,
        sagemaker_image: tasks.DockerImage | None = None,
        dataset_objects: Sequence[str] = (),
    ) -> None:
        super().__init__(scope, id_)
        self.settings = settings
        self.function = training_function
        self.topic = topic
        step_timeout = Duration.minutes(settings.step_timeout_minutes + 1)
        # Worst-case seconds of every task in a row, summed by _guard (see the module docstring).
        self._worst_case_seconds = 0

        failed = sfn.Fail(
            self,
            "TrainingFailed",
            error="TrainingFailed",
            cause="A pipeline step failed after its retries; the SNS notification has the cause.",
        )
        notify = tasks.SnsPublish(
            self,
            "NotifyFailure",
            topic=topic,
            subject="modeldeck: training pipeline failed",
            message=sfn.TaskInput.from_text(
                sfn.JsonPath.format(
                    "Training of {} failed (execution {}): {}",
                    sfn.JsonPath.string_at("$.model"),
                    sfn.JsonPath.string_at("$$.Execution.Id"),
                    sfn.JsonPath.json_to_string(sfn.JsonPath.object_at("$.error")),
                )
            ),
            result_path=sfn.JsonPath.DISCARD,
            task_timeout=sfn.Timeout.duration(NOTIFY_TIMEOUT),
        )
        self._count(NOTIFY_TIMEOUT, SNS_TRANSIENT_ERRORS)
        notify.add_retry(
            errors=SNS_TRANSIENT_ERRORS,
            interval=Duration.seconds(RETRY_INTERVAL_SECONDS),
            backoff_rate=RETRY_BACKOFF,
            max_attempts=RETRY_ATTEMPTS,
        )
        # If even the notification fails there is nobody left to tell; fail with the original error.
        notify.add_catch(failed, errors=["States.ALL"], result_path="$.notify_error")
        notify.next(failed)
        self._on_failure: sfn.IChainable = notify

        def step(name: str) -> sfn.TaskStateBase:
            task = tasks.LambdaInvoke(
                self,
                name.capitalize(),
                lambda_function=training_function,
                payload=sfn.TaskInput.from_object(
                    {
                        "step": name,
                        "model.$": "$.model",
                        "run_id.$": "$$.Execution.Name",
                        "spec.$": "$.spec",
                        "spec_dir.$": "$.spec_dir",
                    }
                ),
                payload_response_only=True,
                retry_on_service_exceptions=False,
                result_path=f"$.{name}",
                task_timeout=sfn.Timeout.duration(step_timeout),
            )
            return self._guard(task, timeout=step_timeout)

        # One training per model at a time (training.steps.lock): several drift alarms fire together.
        lock = tasks.LambdaInvoke(
            self,
            "Lock",
            lambda_function=training_function,
            payload=sfn.TaskInput.from_object({"step": "lock", "model.$": "$.model", "execution.$": "$$.Execution.Id"}),
            payload_response_only=True,
            retry_on_service_exceptions=False,
            result_path="$.lock",
            task_timeout=sfn.Timeout.duration(LOCK_TIMEOUT),
        )
        self._guard(lock, timeout=LOCK_TIMEOUT)
        in_progress = sfn.Fail(
            self,
            "TrainingInProgress",
            error="TrainingInProgress",
            cause="Another execution is training this model ($.lock.holder in the input); nothing was done.",
        )
        has_spec = sfn.Choice(self, "SpecGiven?")
        lock.next(
            sfn.Choice(self, "Locked?")
            .when(sfn.Condition.boolean_equals("$.lock.acquired", True), has_spec)
            .otherwise(in_progress)
        )
        bundled = sfn.Pass(self, "UseBundledSpec", result=sfn.Result.from_string("bundled"), result_path="$.spec")
        validate = step("validate")
        # Where a relative dataset path is read from (the CLI sends its spec's directory); a missing path in a
        # task's parameters is a States.Runtime error, so schedules and older callers get "" (the bundle's).
        has_dir = sfn.Choice(self, "SpecDirGiven?")
        no_dir = sfn.Pass(self, "NoSpecDir", result=sfn.Result.from_string(""), result_path="$.spec_dir")
        has_dir.when(sfn.Condition.is_present("$.spec_dir"), validate).otherwise(no_dir.next(validate))
        has_spec.when(sfn.Condition.is_present("$.spec"), has_dir).otherwise(bundled.next(has_dir))

        if settings.compute == "sagemaker":
            if sagemaker_image is None:
                raise ValueError("compute = 'sagemaker' needs the training image (sagemaker_image)")
            train: sfn.TaskStateBase = self._sagemaker_train(settings, bucket, sagemaker_image, dataset_objects)
        else:
            train = step("train")
        evaluate, convert, compare, register = (step(s) for s in ("evaluate", "convert", "compare", "register"))

        rejected = sfn.Fail(
            self,
            "CandidateRejected",
            error="CandidateRejected",
            cause="The candidate does not beat the champion within the spec's tolerance; "
            "nothing was registered (see $.compare.reason in the execution output).",
        )
        beats = (
            sfn.Choice(self, "BeatsChampion?")
            .when(sfn.Condition.boolean_equals("$.compare.passed", True), register)
            .otherwise(rejected)
        )

        tail: sfn.IChainable = self._hand_over(release) if release is not None else sfn.Succeed(self, "Registered")
        if settings.manual_approval:
            approval = tasks.SnsPublish(
                self,
                "Approve",
                topic=topic,
                subject="modeldeck: approve a new model version",
                integration_pattern=sfn.IntegrationPattern.WAIT_FOR_TASK_TOKEN,
                message=sfn.TaskInput.from_object(
                    {
                        "action": "approve",
                        "model.$": "$.model",
                        "version.$": "$.register.version",
                        "metrics.$": "$.convert.metrics",
                        "task_token": sfn.JsonPath.task_token,
                        "how": "aws stepfunctions send-task-success --task-token <task_token> --task-output '{}' "
                        "(or send-task-failure to reject)",
                    }
                ),
                result_path="$.approval",
                task_timeout=sfn.Timeout.duration(APPROVAL_TIMEOUT),
            )
            # Publishing errors are retried; a timed-out approval is not (nobody approved within a week).
            self._guard(
                approval, timeout=APPROVAL_TIMEOUT, errors=[e for e in SNS_TRANSIENT_ERRORS if e != "States.Timeout"]
            )
            register.next(approval).next(tail)
        else:
            register.next(tail)

        definition = lock
        validate.next(train)
        train.next(evaluate)
        evaluate.next(convert).next(compare).next(beats)

        log_group = logs.LogGroup(
            self, "Logs", retention=retention(settings.log_retention_days), removal_policy=RemovalPolicy.RETAIN
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=settings.name,
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            tracing_enabled=True,
            timeout=self.timeout,
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
        )
        # The SNS task grants sns:Publish only; the topic is KMS-encrypted, so publishing needs the key too.
        topic.grant_publish(self.state_machine)

    @property
    def timeout(self) -> Duration:
        """The execution timeout: every task's worst case in a row, plus a margin."""
        return Duration.minutes(-(-self._worst_case_seconds // 60) + int(EXECUTION_MARGIN.to_minutes()))

    def _guard(
        self, task: sfn.TaskStateBase, *, timeout: Duration, errors: Sequence[str] = TRANSIENT_ERRORS
    ) -> sfn.TaskStateBase:
        """Retry ``errors`` with backoff, catch the rest into the notification, and count the worst case.

        ``timeout`` bounds one attempt (the task's timeout, or the service's own limit). Only a retried
        ``States.Timeout`` repeats a whole attempt; other retried errors fail fast, and cost their backoff.
        """
        task.add_retry(
            errors=list(errors),
            interval=Duration.seconds(RETRY_INTERVAL_SECONDS),
            backoff_rate=RETRY_BACKOFF,
            max_attempts=RETRY_ATTEMPTS,
        )
        task.add_catch(self._on_failure, errors=["States.ALL"], result_path="$.error")
        self._count(timeout, errors)
        return task

    def _count(self, timeout: Duration, retried: Sequence[str]) -> None:
        """Add one task's worst case (its attempts at ``timeout``, and the backoff) to the execution's."""
        attempts = 1 + (RETRY_ATTEMPTS if "States.Timeout" in retried else 0)
        backoff = sum(RETRY_INTERVAL_SECONDS * RETRY_BACKOFF**i for i in range(RETRY_ATTEMPTS))
        self._worst_case_seconds += int(attempts * timeout.to_seconds() + backoff)

    def _hand_over(self, release: lambda_.IFunction) -> sfn.IChainable:
        s = self.settings
        task = tasks.LambdaInvoke(
            self,
            "HandOver",
            lambda_function=release,
            payload=sfn.TaskInput.from_object(
                {
                    "action": "start",
                    "event": {
                        "model.$": "$.model",
                        "version.$": "$.register.version",
                        "function_name.$": f"States.Format('{s.function_name_prefix}-{{}}', $.model)",
                        "strategy": s.canary_strategy,
                        "steps": s.canary_steps,
                        "canary_weight": s.canary_weight,
                        "bake_seconds": s.bake_minutes * 60,
                    },
                }
            ),
            payload_response_only=True,
            retry_on_service_exceptions=False,
            result_path="$.release_execution",
            task_timeout=sfn.Timeout.duration(HAND_OVER_TIMEOUT),
        )
        self._guard(task, timeout=HAND_OVER_TIMEOUT)
        task.next(sfn.Succeed(self, "HandedOver"))
        # `modeldeck train` registers without releasing ("release": false); schedules and retrain-on-drift
        # omit the flag and hand over.
        registered = sfn.Succeed(self, "Registered")
        return (
            sfn.Choice(self, "Release?")
            .when(
                sfn.Condition.and_(
                    sfn.Condition.is_present("$.release"), sfn.Condition.boolean_equals("$.release", False)
                ),
                registered,
            )
            .otherwise(task)
        )

    def _sagemaker_train(
        self, s: PipelineSettings, bucket: s3.IBucket, image: tasks.DockerImage, dataset_objects: Sequence[str]
    ) -> sfn.TaskStateBase:
        stack = Stack.of(self)
        role = iam.Role(
            self,
            "SageMakerRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="modeldeck SageMaker training: staging in the registry, its logs, the image",
        )
        self.sagemaker_role = role
        role.add_to_policy(
            iam.PolicyStatement(
                sid="StageTrainedPipeline",
                # Reads the staged spec (staging/{model}/{run}/spec.json), writes pipeline.joblib next to it.
                actions=["s3:GetObject", "s3:PutObject"],
                resources=[bucket.arn_for_objects("staging/*")],
            )
        )
        if dataset_objects:
            role.add_to_policy(
                iam.PolicyStatement(
                    sid="ReadDatasets", actions=["s3:GetObject", "s3:GetObjectVersion"], resources=list(dataset_objects)
                )
            )
        self.sagemaker_logs_arn = stack.format_arn(
            service="logs",
            resource="log-group",
            resource_name="/aws/sagemaker/TrainingJobs:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="TrainingJobLogs",
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                resources=[self.sagemaker_logs_arn],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="TrainingJobMetrics",
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}},
            )
        )
        if s.sagemaker_image:
            # A configured image: the asset's binding grants nothing, so grant the pull here.
            role.add_to_policy(
                iam.PolicyStatement(sid="EcrLogin", actions=["ecr:GetAuthorizationToken"], resources=["*"])
            )
            role.add_to_policy(
                iam.PolicyStatement(
                    sid="PullTrainingImage",
                    actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                    resources=[_repository_arn(s.sagemaker_image, stack)],
                )
            )
        timeout = SAGEMAKER_MAX_RUNTIME.plus(SAGEMAKER_START_ALLOWANCE)
        task = tasks.SageMakerCreateTrainingJob(
            self,
            "Train",
            training_job_name=sfn.JsonPath.format(
                f"{s.function_name_prefix}-{{}}",
                sfn.JsonPath.hash(sfn.JsonPath.string_at("$$.Execution.Id"), "MD5"),
            ),
            integration_pattern=sfn.IntegrationPattern.RUN_JOB,
            role=role,
            algorithm_specification=tasks.AlgorithmSpecification(
                training_image=image, training_input_mode=tasks.InputMode.FILE
            ),
            hyperparameters={
                "model": sfn.JsonPath.string_at("$.validate.model"),
                "run_id": sfn.JsonPath.string_at("$$.Execution.Name"),
                "spec_key": sfn.JsonPath.string_at("$.validate.staged_spec"),
                "region": stack.region,
            },
            environment={"MODEL_BUCKET": bucket.bucket_name},
            output_data_config=tasks.OutputDataConfig(
                s3_output_location=tasks.S3Location.from_bucket(bucket, "staging/sagemaker/")
            ),
            resource_config=tasks.ResourceConfig(
                instance_count=1,
                instance_type=ec2.InstanceType(s.instance_type.removeprefix("ml.")),
                volume_size=Size.gibibytes(30),
            ),
            stopping_condition=tasks.StoppingCondition(max_runtime=SAGEMAKER_MAX_RUNTIME),
            result_selector={"job_name.$": "$.TrainingJobName", "status.$": "$.TrainingJobStatus"},
            result_path="$.train",
            task_timeout=sfn.Timeout.duration(timeout),
        )
        return self._guard(task, timeout=timeout, errors=SAGEMAKER_TRANSIENT_ERRORS)


def _repository_arn(image_uri: str, stack: Stack) -> str:
    """``acct.dkr.ecr.region.suffix/repo:tag`` (a literal string from the config) → the repository's ARN."""
    host, _, path = image_uri.partition("/")
    account, _, rest = host.partition(".dkr.ecr.")
    region = rest.split(".", 1)[0]
    repository = path.split(":", 1)[0].split("@", 1)[0]
    return f"arn:{stack.partition}:ecr:{region}:{account}:repository/{repository}"
