"""The local cloud authorizes AWS calls as AWS does: handlers run as their execution roles from the templates,
alarms publish as cloudwatch.amazonaws.com through the topic and key policies, and S3 hides missing keys from
callers who may not list them. Each test would pass on a local cloud that enforces nothing only if the product
were right anyway; each fails when the policy it pins is broken (see the README's local cloud section)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from botocore.exceptions import ClientError

from infra.constructs.monitoring import AlertTopic
from modeldeck.localcloud import LocalCloud, local_cloud
from modeldeck.localcloud.iam import InvokeDenied, Principal, acting_as
from modeldeck.registry import Registry
from modeldeck.release import shadow_report
from tests.fixtures.gateway import app_templates

MODEL = "breast-cancer"


@pytest.fixture(scope="module")
def app_cloud() -> Iterator[LocalCloud]:
    """The app's synthesized templates deployed into one local cloud (read-only tests share it). Tests that
    start a local cloud of their own come before the first that uses it: moto's mock is process-wide."""
    with local_cloud(templates=app_templates()) as cloud:
        yield cloud


def function_running(cloud: LocalCloud, handler: str) -> str:
    """The deployed function whose handler is ``handler``."""
    for logical, res in cloud.deployer.resources.items():
        if res["Type"] == "AWS::Lambda::Function" and res["Properties"].get("Handler") == handler:
            return str(cloud.deployer.physical[logical])
    raise LookupError(handler)


def role_of(cloud: LocalCloud, handler: str) -> Principal:
    principal = cloud.iam.policies_principal(function_running(cloud, handler))
    assert principal is not None, f"{handler} runs as a role from the templates"
    return principal


def error_of(call: Any) -> tuple[str, int]:
    with pytest.raises(ClientError) as caught:
        call()
    response = caught.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


# -- (a) the alert topic lets our alarms publish --------------------------------------------------------------


@pytest.fixture(scope="module")
def alert_template() -> dict[str, Any]:
    """The product's AlertTopic, and one of our alarms (its name under the prefix) notifying it."""
    app = cdk.App()
    stack = cdk.Stack(app, "Alerts")
    alerts = AlertTopic(stack, "Alerts", name="modeldeck-dev-alerts", alarm_prefix="modeldeck-dev")
    alarm = cloudwatch.Alarm(
        stack,
        "Alarm",
        alarm_name="modeldeck-dev-breast-cancer-errors",
        metric=cloudwatch.Metric(namespace="modeldeck", metric_name="ServerErrors", period=cdk.Duration.minutes(1)),
        threshold=0,
        evaluation_periods=1,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
    )
    alarm.add_alarm_action(actions.SnsAction(alerts.topic))
    return app.synth().get_stack_by_name("Alerts").template


def test_an_alarm_notifies_the_alert_topic_through_its_topic_and_key_policies(alert_template: dict[str, Any]) -> None:
    # Given the alert topic (KMS-encrypted, TLS-only topic policy) and our alarm on it, a queue subscribed
    with local_cloud(templates=[alert_template]) as cloud:
        topic = next(a for a in cloud.deployer.arns.values() if ":sns:" in a)
        sqs = cloud.client("sqs")
        queue = sqs.create_queue(QueueName="inbox")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        cloud.client("sns").subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
        # When the alarm's metric breaches and CloudWatch evaluates it
        cloud.client("cloudwatch").put_metric_data(
            Namespace="modeldeck", MetricData=[{"MetricName": "ServerErrors", "Value": 5.0}]
        )
        cloud.clock.advance(120)
        # Then the notification is delivered: cloudwatch.amazonaws.com may publish and use the key
        history = cloud.client("cloudwatch").describe_alarm_history(AlarmName="modeldeck-dev-breast-cancer-errors")
        failed = [i["HistorySummary"] for i in history["AlarmHistoryItems"] if i["HistoryItemType"] == "Action"]
        assert failed == [], failed
        messages = sqs.receive_message(QueueUrl=queue).get("Messages", [])
        assert messages, "the alarm's notification reached the topic"
        assert json.loads(json.loads(messages[0]["Body"])["Message"])["NewStateValue"] == "ALARM"


def test_an_alarm_the_topic_policy_does_not_allow_is_not_delivered_and_the_history_says_why(
    alert_template: dict[str, Any],
) -> None:
    # Given the alert topic, and an alarm whose name is outside the prefix the topic policy allows
    template = copy.deepcopy(alert_template)
    for res in template["Resources"].values():
        if res["Type"] == "AWS::CloudWatch::Alarm":
            res["Properties"]["AlarmName"] = "someone-else-errors"
    with local_cloud(templates=[template]) as cloud:
        # When it fires
        cloud.client("cloudwatch").put_metric_data(
            Namespace="modeldeck", MetricData=[{"MetricName": "ServerErrors", "Value": 5.0}]
        )
        cloud.clock.advance(120)
        # Then CloudWatch's publish is refused (aws:SourceArn does not match), as its history records
        history = cloud.client("cloudwatch").describe_alarm_history(AlarmName="someone-else-errors")
        failed = [i["HistorySummary"] for i in history["AlarmHistoryItems"] if i["HistoryItemType"] == "Action"]
        assert failed and "sns:Publish" in failed[0], failed


# -- Step Functions: a task runs as the state machine's role ----------------------------------------------------


@pytest.fixture(scope="module")
def task_template() -> dict[str, Any]:
    """A state machine with one Lambda task, as CDK writes it (the role's grant to invoke the function)."""
    app = cdk.App()
    stack = cdk.Stack(app, "Task")
    fn = lambda_.Function(
        stack,
        "Fn",
        runtime=lambda_.Runtime.PYTHON_3_12,
        handler="tests.fixtures.clock_handlers.answers_500",
        code=lambda_.Code.from_inline("# local"),
    )
    task = tasks.LambdaInvoke(stack, "Call", lambda_function=fn, payload_response_only=True)
    sfn.StateMachine(stack, "Machine", definition_body=sfn.DefinitionBody.from_chainable(task))
    return app.synth().get_stack_by_name("Task").template


def run_machine(template: dict[str, Any]) -> dict[str, Any]:
    with local_cloud(templates=[template]) as cloud, cloud.clock.participant():
        machine = next(a for a in cloud.deployer.arns.values() if ":stateMachine:" in a)
        client = cloud.client("stepfunctions")
        execution = client.start_execution(stateMachineArn=machine, input="{}")["executionArn"]
        for _ in range(100):
            described = client.describe_execution(executionArn=execution)
            if described["status"] != "RUNNING":
                return dict(described)
            cloud.clock.sleep(1)
        raise AssertionError("the execution did not finish")


def test_a_state_machine_invokes_its_task_with_its_role(task_template: dict[str, Any]) -> None:
    # Given the state machine whose role may invoke its function, When it runs, Then the task succeeds
    assert run_machine(task_template)["status"] == "SUCCEEDED"
    # Given the same machine without the role's grant (its AWS::IAM::Policy removed)
    bare = copy.deepcopy(task_template)
    bare["Resources"] = {k: r for k, r in bare["Resources"].items() if r["Type"] != "AWS::IAM::Policy"}
    # When it runs, Then Lambda refuses the state machine's role and the execution fails
    failed = run_machine(bare)
    assert failed["status"] == "FAILED", failed
    assert "lambda:InvokeFunction" in str(failed.get("cause")) or "AccessDenied" in str(failed.get("error")), failed


# -- (b) the release role reads the shadow's capture ------------------------------------------------------------


def test_the_release_function_may_read_its_models_capture_for_the_shadow_report(app_cloud: LocalCloud) -> None:
    # Given a captured record of the model in the registry
    s3 = app_cloud.client("s3")
    key = f"capture/{MODEL}/dt=2026-01-01/hour=00/batch.jsonl"
    s3.put_object(Bucket=app_cloud.bucket, Key=key, Body=b"")
    # When the release function's role reads the capture for a shadow report (StopShadow's task)
    with acting_as(role_of(app_cloud, "lambdas.release.handler.lambda_handler")):
        report = shadow_report(
            Registry(app_cloud.client("s3"), app_cloud.bucket),
            MODEL,
            "2026-01-01T00:00:00.000000Z",
            "2026-01-01T01:00:00.000000Z",
        )
        # Then it is allowed to (a report, not AccessDenied), but not another prefix's objects
        assert isinstance(report, dict)
        assert error_of(lambda: s3.get_object(Bucket=app_cloud.bucket, Key=f"feedback/{MODEL}/x.jsonl")) == (
            "AccessDenied",
            403,
        )


# -- (c) the inference role may list its own model's prefix: a missing object is 404, not 403 --------------------


def test_the_inference_role_learns_a_missing_shadow_config_is_missing(app_cloud: LocalCloud) -> None:
    # Given the inference function's role, and no shadow.json for the model
    s3 = app_cloud.client("s3")
    with acting_as(role_of(app_cloud, "lambdas.inference.handler.lambda_handler")):
        # When it reads the missing object, Then S3 says NoSuchKey (it may list models/{model}/)
        missing = lambda: s3.get_object(Bucket=app_cloud.bucket, Key=f"models/{MODEL}/shadow.json")  # noqa: E731
        assert error_of(missing) == ("NoSuchKey", 404)
        # And a HEAD of a missing key elsewhere is a bare 403, as S3 answers callers who may not list
        head = lambda: s3.head_object(Bucket=app_cloud.bucket, Key="models/other-model/shadow.json")  # noqa: E731
        assert error_of(head) == ("403", 403)


def test_a_missing_object_is_403_to_a_role_without_list_permission(app_cloud: LocalCloud) -> None:
    # Given a role that may read objects but not list the bucket
    read_only = Principal(
        "arn:aws:iam::123456789012:role/reader",
        (
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::*/*"}],
            },
        ),
    )
    s3 = app_cloud.client("s3")
    with acting_as(read_only):
        # When it reads a missing key, Then S3 answers AccessDenied, not NoSuchKey
        assert error_of(lambda: s3.get_object(Bucket=app_cloud.bucket, Key="models/nothing.json")) == (
            "AccessDenied",
            403,
        )


# -- the rest of AWS's evaluation: explicit deny, conditions, errors per service ----------------------------------


def test_explicit_deny_and_conditions_are_evaluated_and_each_service_answers_in_its_own_way(
    app_cloud: LocalCloud,
) -> None:
    # Given a role allowed everything except an explicit Deny, and a ListBucket only under drift/
    role = Principal(
        "arn:aws:iam::123456789012:role/tester",
        (
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": ["s3:GetObject", "sns:*"], "Resource": "*"},
                    {
                        "Effect": "Allow",
                        "Action": "s3:ListBucket",
                        "Resource": "*",
                        "Condition": {"StringLike": {"s3:prefix": ["drift/*"]}},
                    },
                    {"Effect": "Deny", "NotAction": ["s3:*", "lambda:*"], "Resource": "*"},
                ],
            },
        ),
    )
    s3, sns, lam = app_cloud.client("s3"), app_cloud.client("sns"), app_cloud.client("lambda")
    sfn = app_cloud.client("stepfunctions")
    with acting_as(role):
        # Then the condition on s3:prefix holds: drift/ lists, models/ does not
        s3.list_objects_v2(Bucket=app_cloud.bucket, Prefix="drift/x")
        assert error_of(lambda: s3.list_objects_v2(Bucket=app_cloud.bucket, Prefix="models/")) == ("AccessDenied", 403)
        # And the explicit Deny (NotAction) wins over the Allow, with SNS's own error
        topic = "arn:aws:sns:us-east-1:123456789012:anything"
        assert error_of(lambda: sns.publish(TopicArn=topic, Message="x")) == ("AuthorizationError", 403)
        # And no allow at all: Lambda's and Step Functions' own codes and statuses
        assert error_of(lambda: lam.get_function_configuration(FunctionName="x")) == ("AccessDeniedException", 403)
        machine = "arn:aws:states:us-east-1:123456789012:stateMachine:x"
        assert error_of(lambda: sfn.start_execution(stateMachineArn=machine)) == ("AccessDeniedException", 400)
    # And outside a role (the CLI, tests) calls are an administrator's
    s3.list_objects_v2(Bucket=app_cloud.bucket, Prefix="models/")


# -- Lambda resource policies: API Gateway invokes only what the function's permissions allow -----------------


def test_api_gateway_may_invoke_the_live_alias_only_for_the_methods_the_permissions_name(app_cloud: LocalCloud) -> None:
    # Given the deployed API and the model function's alias, which its AWS::Lambda::Permissions name
    (api,) = [k for k, r in app_cloud.deployer.resources.items() if r["Type"] == "AWS::ApiGateway::RestApi"]
    api_id = app_cloud.deployer.resolve({"Ref": api})
    function = function_running(app_cloud, "lambdas.inference.handler.lambda_handler")
    predict = f"{api_id}/dev/POST/v1/models/{MODEL}:predict"
    # When API Gateway invokes it for the predict method, Then Lambda lets it
    with app_cloud.iam.invoking_as("apigateway.amazonaws.com", "execute-api", predict):
        app_cloud.iam.authorize_invoke(function, "live")
        # But not the unqualified function, which no permission names
        with pytest.raises(InvokeDenied):
            app_cloud.iam.authorize_invoke(function, None)
    # And not for a method no permission names, nor from another API
    for source in (f"{api_id}/dev/DELETE/v1/models/{MODEL}:predict", f"other-api/dev/POST/v1/models/{MODEL}:predict"):
        with (
            app_cloud.iam.invoking_as("apigateway.amazonaws.com", "execute-api", source),
            pytest.raises(InvokeDenied),
        ):
            app_cloud.iam.authorize_invoke(function, "live")


def test_publishing_to_the_encrypted_alert_topic_needs_the_key_too(app_cloud: LocalCloud) -> None:
    # Given the KMS-encrypted alert topic, and a role that may publish to it but has no use of the key
    topic = next(a for a in app_cloud.deployer.arns.values() if a.endswith(":modeldeck-dev-alerts"))
    publisher = Principal(
        "arn:aws:iam::123456789012:role/publisher",
        ({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sns:Publish", "Resource": topic}]},),
    )
    sns = app_cloud.client("sns")
    # When it publishes, Then SNS refuses with KMS's answer
    with acting_as(publisher):
        assert error_of(lambda: sns.publish(TopicArn=topic, Message="x")) == ("KMSAccessDenied", 400)
    # And the release function's role, which the templates grant the key, may publish
    with acting_as(role_of(app_cloud, "lambdas.release.handler.lambda_handler")):
        sns.publish(TopicArn=topic, Message="x")
