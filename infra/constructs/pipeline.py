"""The training pipeline: a Step Functions state machine over the training Lambda's steps.

::

    SpecGiven? ─► Validate ─► Train ─► Evaluate ─► Convert ─► Compare ─► BeatsChampion? ─► Register
                                                                 │ no                         │
                                                            CandidateRejected   [Approve] ─► HandOver | Registered
    any task fails (after retries) ─► NotifyFailure (SNS, with the cause) ─► TrainingFailed

Execution input::

    {"model": "breast-cancer", "spec": {...}}   # spec: the spec file's TOML as JSON; optional

Without ``spec`` the pass state ``UseBundledSpec`` sets ``"spec": "bundled"`` and the steps read
``models/{model}.toml`` from the image (``training.steps.spec_of`` only parses a ``spec`` that is an
object). Schedules and the retrain-on-drift rule send the spec read at synth time.

Every step invokes the one training function (``lambdas.pipeline.handler.lambda_handler``) with::

    {"step": "validate"|"train"|"evaluate"|"convert"|"compare"|"register",
     "model": <$.model>, "run_id": <$$.Execution.Name>, "spec": <$.spec>}

and the function's return value (``payload_response_only``: the task's result is the handler's dict)
is stored at ``$.<step>``, so later states see every earlier result::

    $.validate  {"model", "rows", "dataset_sha256", "spec_sha256"}
    $.train     {"pipeline", "train_rows", "holdout_rows"}   (SageMaker: {"job_name", "status"})
    $.evaluate  {"metrics", "primary_metric"}
    $.convert   {"onnx_sha256", "parity", "metrics"}
    $.compare   {"champion", "passed", "reason", ...}        BeatsChampion? reads $.compare.passed
    $.register  {"model", "version", "created", "onnx_sha256"}

With ``compute = "sagemaker"`` the train state is a SageMaker training job (``.sync``) on AWS's prebuilt
scikit-learn image running ``sagemaker_train.py`` from a source tarball; it stages the same
``pipeline.joblib`` as the Lambda step, so evaluate onwards are unchanged.

The hand-over to release: pass ``release`` (the release function) and the last state asks it to start
the release state machine (action ``start``) with ``{"model", "version", "function_name", "strategy",
"steps", "canary_weight", "bake_seconds"}``, unless the input says ``"release": false``; without it
the last state is the ``Registered`` Succeed.
A Lambda task rather than Step Functions' ``startExecution`` integration: the same ASL then also runs
in the local cloud, whose Step Functions engine (moto) cannot execute that integration.

Every task retries Lambda's transient errors and ``States.Timeout`` with exponential backoff, and
catches everything else into ``NotifyFailure``. The ASL uses only standard states, JSONPath and
``States.Format``, so moto can execute it locally.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import ArnFormat, CfnMapping, Duration, RemovalPolicy, Size, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
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
# AWS's prebuilt scikit-learn training image (sagemaker-scikit-learn:1.2-1-cpu-py3) lives in a
# per-region account; this is the SageMaker Python SDK's registry table for commercial regions.
SKLEARN_IMAGE_TAG = "sagemaker-scikit-learn:1.2-1-cpu-py3"
SKLEARN_IMAGE_ACCOUNTS = {
    "af-south-1": "510948584623",
    "ap-east-1": "651117190479",
    "ap-northeast-1": "354813040037",
    "ap-northeast-2": "366743142698",
    "ap-northeast-3": "867004704886",
    "ap-south-1": "720646828776",
    "ap-southeast-1": "121021644041",
    "ap-southeast-2": "783357654285",
    "ca-central-1": "341280168497",
    "eu-central-1": "492215442770",
    "eu-north-1": "662702820516",
    "eu-south-1": "978288397137",
    "eu-west-1": "141502667606",
    "eu-west-2": "764974769150",
    "eu-west-3": "659782779980",
    "me-south-1": "801668240914",
    "sa-east-1": "737474898029",
    "us-east-1": "683313688378",
    "us-east-2": "257758044811",
    "us-west-1": "746614075791",
    "us-west-2": "246618743249",
}


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


@dataclass(frozen=True)
class SageMakerSource:
    """The source tarball a SageMaker job runs (``sagemaker_submit_directory``), and its entry script."""

    tarball: Path
    program: str = "sagemaker_train.py"


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
        sagemaker_source: SageMakerSource | None = None,
        dataset_objects: Sequence[str] = (),
    ) -> None:
        super().__init__(scope, id_)
        self.settings = settings
        self.function = training_function
        self.topic = topic
        step_timeout = Duration.minutes(settings.step_timeout_minutes + 1)

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
                    "Training of {} failed (execution {}): {}: {}",
                    sfn.JsonPath.string_at("$.model"),
                    sfn.JsonPath.string_at("$$.Execution.Id"),
                    sfn.JsonPath.string_at("$.error.Error"),
                    sfn.JsonPath.string_at("$.error.Cause"),
                )
            ),
            result_path=sfn.JsonPath.DISCARD,
        )
        notify.add_retry(errors=SNS_TRANSIENT_ERRORS, interval=Duration.seconds(2), backoff_rate=2.0, max_attempts=3)
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
                    }
                ),
                payload_response_only=True,
                retry_on_service_exceptions=False,
                result_path=f"$.{name}",
                task_timeout=sfn.Timeout.duration(step_timeout),
            )
            return self._guard(task)

        has_spec = sfn.Choice(self, "SpecGiven?")
        bundled = sfn.Pass(self, "UseBundledSpec", result=sfn.Result.from_string("bundled"), result_path="$.spec")
        validate = step("validate")
        has_spec.when(sfn.Condition.is_present("$.spec"), validate).otherwise(bundled.next(validate))

        if settings.compute == "sagemaker":
            if sagemaker_source is None:
                raise ValueError("compute = 'sagemaker' needs the source tarball (sagemaker_source)")
            train: sfn.TaskStateBase = self._sagemaker_train(settings, bucket, sagemaker_source, dataset_objects)
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
                task_timeout=sfn.Timeout.duration(Duration.days(7)),
            )
            self._guard(approval, errors=SNS_TRANSIENT_ERRORS)
            register.next(approval).next(tail)
        else:
            register.next(tail)

        definition = has_spec
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
            timeout=Duration.hours(24 * 8 if settings.manual_approval else 6),
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
        )
        # The SNS task grants sns:Publish only; the topic is KMS-encrypted, so publishing needs the key too.
        topic.grant_publish(self.state_machine)

    def _guard(self, task: sfn.TaskStateBase, errors: Sequence[str] = TRANSIENT_ERRORS) -> sfn.TaskStateBase:
        task.add_retry(errors=list(errors), interval=Duration.seconds(2), backoff_rate=2.0, max_attempts=3)
        task.add_catch(self._on_failure, errors=["States.ALL"], result_path="$.error")
        return task

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
        )
        self._guard(task)
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
        self, s: PipelineSettings, bucket: s3.IBucket, source: SageMakerSource, dataset_objects: Sequence[str]
    ) -> sfn.TaskStateBase:
        stack = Stack.of(self)
        asset = s3_assets.Asset(self, "SourceTarball", path=str(source.tarball))
        if s.sagemaker_image:
            image_uri = s.sagemaker_image
            repository_arn = _repository_arn(image_uri, stack)
        else:
            mapping = CfnMapping(
                self,
                "SklearnImageAccounts",
                mapping={region: {"account": account} for region, account in SKLEARN_IMAGE_ACCOUNTS.items()},
            )
            account = mapping.find_in_map(stack.region, "account")
            repository, _, _tag = SKLEARN_IMAGE_TAG.partition(":")
            image_uri = f"{account}.dkr.ecr.{stack.region}.{stack.url_suffix}/{SKLEARN_IMAGE_TAG}"
            repository_arn = f"arn:{stack.partition}:ecr:{stack.region}:{account}:repository/{repository}"
        role = iam.Role(
            self,
            "SageMakerRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="modeldeck SageMaker training: staging in the registry, its logs, the image",
        )
        self.sagemaker_role = role
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadSourceTarball",
                actions=["s3:GetObject"],
                resources=[asset.bucket.arn_for_objects(asset.s3_object_key)],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="StageTrainedPipeline",
                actions=["s3:PutObject"],
                resources=[bucket.arn_for_objects("staging/*")],
            )
        )
        if dataset_objects:
            role.add_to_policy(
                iam.PolicyStatement(
                    sid="ReadDatasets", actions=["s3:GetObject", "s3:GetObjectVersion"], resources=list(dataset_objects)
                )
            )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="TrainingJobLogs",
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                resources=[
                    stack.format_arn(
                        service="logs",
                        resource="log-group",
                        resource_name="/aws/sagemaker/TrainingJobs:*",
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
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
        role.add_to_policy(iam.PolicyStatement(sid="EcrLogin", actions=["ecr:GetAuthorizationToken"], resources=["*"]))
        role.add_to_policy(
            iam.PolicyStatement(
                sid="PullTrainingImage",
                actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                resources=[repository_arn],
            )
        )
        task = tasks.SageMakerCreateTrainingJob(
            self,
            "Train",
            training_job_name=sfn.JsonPath.format(
                "{}-{}", sfn.JsonPath.string_at("$.model"), sfn.JsonPath.string_at("$$.Execution.Name")
            ),
            integration_pattern=sfn.IntegrationPattern.RUN_JOB,
            role=role,
            algorithm_specification=tasks.AlgorithmSpecification(
                training_image=tasks.DockerImage.from_registry(image_uri),
                training_input_mode=tasks.InputMode.FILE,
            ),
            hyperparameters={
                "sagemaker_program": source.program,
                "sagemaker_submit_directory": asset.s3_object_url,
                "model": sfn.JsonPath.string_at("$.model"),
                "run_id": sfn.JsonPath.string_at("$$.Execution.Name"),
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
            stopping_condition=tasks.StoppingCondition(max_runtime=Duration.hours(4)),
            result_selector={"job_name.$": "$.TrainingJobName", "status.$": "$.TrainingJobStatus"},
            result_path="$.train",
        )
        return self._guard(task, errors=["SageMaker.AmazonSageMakerException", "States.Timeout"])


def _repository_arn(image_uri: str, stack: Stack) -> str:
    """``acct.dkr.ecr.region.suffix/repo:tag`` (a literal string from the config) → the repository's ARN."""
    host, _, path = image_uri.partition("/")
    account, _, rest = host.partition(".dkr.ecr.")
    region = rest.split(".", 1)[0]
    repository = path.split(":", 1)[0].split("@", 1)[0]
    return f"arn:{stack.partition}:ecr:{region}:{account}:repository/{repository}"
