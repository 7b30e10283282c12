"""The local cloud's remaining timers on the virtual clock: Step Functions timeouts and Wait-until-timestamp,
the EventBridge schedule, and SNS and EventBridge delivery. Each runs hours of virtual time in wall seconds."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

from modeldeck.localcloud import LocalCloud
from tests.integration.test_localcloud_clock import stub_function

FIXTURES = "tests.fixtures.clock_handlers"


def _machine(cloud: LocalCloud, name: str, definition: dict[str, Any]) -> str:
    return str(
        cloud.client("stepfunctions").create_state_machine(
            name=name, roleArn=cloud.deployer._role(), definition=json.dumps(definition)
        )["stateMachineArn"]
    )


def _run(cloud: LocalCloud, machine: str, payload: Any = None, wall_limit: float = 120.0) -> dict[str, Any]:
    """Start an execution and follow it until it ends. ``wall_limit`` only guards against a hang (an emulated
    wait that slept in real time would take its whole length): whether time passed virtually is asserted with
    the clock's jumps, not with wall seconds, which a loaded machine stretches."""
    sfn = cloud.client("stepfunctions")
    execution = sfn.start_execution(stateMachineArn=machine, input=json.dumps(payload or {}))["executionArn"]
    deadline = time.monotonic() + wall_limit
    while time.monotonic() < deadline:
        described = sfn.describe_execution(executionArn=execution)
        if described["status"] != "RUNNING":
            return dict(described)
        time.sleep(0.01)
    raise AssertionError(f"the execution did not end within {wall_limit} wall seconds")


def test_a_wait_until_a_timestamp_two_hours_ahead_ends_at_that_virtual_time(cloud: LocalCloud) -> None:
    """AWS "Wait workflow state": Timestamp waits until an absolute time (RFC 3339, UTC)."""
    # Given a cloud a day ahead of the host clock, and a Wait state until two hours from the cloud's now
    cloud.clock.advance(24 * 3600)
    until_time = (cloud.clock.now() + timedelta(hours=2)).replace(microsecond=0)
    until = until_time.strftime("%Y-%m-%dT%H:%M:%SZ")
    machine = _machine(
        cloud,
        "wait-until",
        {"StartAt": "Until", "States": {"Until": {"Type": "Wait", "TimestampPath": "$.until", "End": True}}},
    )
    # When it runs
    result = _run(cloud, machine, {"until": until})
    # Then it succeeds at that virtual time (not earlier, nor at that time on the host's clock), in wall seconds
    assert result["status"] == "SUCCEEDED"
    assert until_time <= cloud.clock.now() < until_time + timedelta(minutes=5)


def test_an_execution_past_its_timeout_seconds_times_out_on_the_virtual_clock(cloud: LocalCloud) -> None:
    """AWS "State machine structure": TimeoutSeconds is the longest an execution can run; past it the
    execution fails with States.Timeout (status TIMED_OUT)."""
    # Given a state machine allowed 5 minutes whose Wait state lasts an hour
    machine = _machine(
        cloud,
        "execution-timeout",
        {
            "TimeoutSeconds": 300,
            "StartAt": "Long",
            "States": {"Long": {"Type": "Wait", "Seconds": 3600, "End": True}},
        },
    )
    started = cloud.clock.time()
    # When it runs
    result = _run(cloud, machine)
    # Then it timed out after 5 virtual minutes, not an hour
    assert result["status"] == "TIMED_OUT"
    assert 300 <= cloud.clock.time() - started < 3600


def test_a_task_past_its_timeout_seconds_fails_with_states_timeout_that_catch_sees(cloud: LocalCloud) -> None:
    """AWS "Task workflow state": past TimeoutSeconds the state fails with States.Timeout (for a Lambda
    task, whose function runs on, the task stops waiting for it); Catch handles it like any error."""
    # Given a Lambda task allowed 60 s whose function would take 10 virtual minutes (Lambda stops it at 2)
    fn = stub_function(cloud, "slow-task", "sleepy", timeout=120)
    machine = _machine(
        cloud,
        "task-timeout",
        {
            "StartAt": "Slow",
            "States": {
                "Slow": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::lambda:invoke",
                    "Parameters": {"FunctionName": fn, "Payload": {"sleep": 600}},
                    "TimeoutSeconds": 60,
                    "Catch": [{"ErrorEquals": ["States.Timeout"], "Next": "TimedOut", "ResultPath": "$.error"}],
                    "End": True,
                },
                "TimedOut": {"Type": "Pass", "End": True},
            },
        },
    )
    started = cloud.clock.time()
    # When it runs
    result = _run(cloud, machine)
    # Then the task timed out after a virtual minute and the Catch took it
    assert result["status"] == "SUCCEEDED"
    assert json.loads(result["output"])["error"]["Error"] == "States.Timeout"
    assert cloud.clock.time() - started >= 60
    cloud.clock.advance(120)  # the function itself runs on until Lambda's own timeout stops it


def test_a_tasks_retry_intervals_pass_on_the_virtual_clock(cloud: LocalCloud) -> None:
    """AWS "Handling errors in Step Functions workflows": a Retrier waits IntervalSeconds, multiplied by
    BackoffRate after each attempt, before retrying; on the local cloud that wait is virtual time, like a Wait
    state's, so a release task retried over minutes takes wall seconds."""
    # Given a task whose function always crashes, retried twice: after 300 s, then 600 s
    fn = stub_function(cloud, "crashing-task", "crashes")
    machine = _machine(
        cloud,
        "task-retries",
        {
            "StartAt": "Crash",
            "States": {
                "Crash": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::lambda:invoke",
                    "Parameters": {"FunctionName": fn, "Payload": {}},
                    "Retry": [
                        {"ErrorEquals": ["States.ALL"], "IntervalSeconds": 300, "BackoffRate": 2, "MaxAttempts": 2}
                    ],
                    "End": True,
                }
            },
        },
    )
    started, jumped = cloud.clock.time(), cloud.clock.jumped
    # When it runs
    result = _run(cloud, machine)
    # Then it failed after both retries, 900 virtual seconds later, the clock having jumped over the waits
    assert result["status"] == "FAILED"
    assert cloud.clock.time() - started >= 900
    assert cloud.clock.jumped - jumped >= 0.9 * 900


def _lambda_invocations(cloud: LocalCloud, function: str, hours: int) -> float:
    now = cloud.clock.now()
    points = cloud.client("cloudwatch").get_metric_statistics(
        Namespace="AWS/Lambda",
        MetricName="Invocations",
        Dimensions=[{"Name": "FunctionName", "Value": function}],
        StartTime=now - timedelta(hours=hours + 1),
        EndTime=now,
        Period=60,
        Statistics=["Sum"],
    )["Datapoints"]
    return sum(p["Sum"] for p in points)


def test_an_hourly_schedule_invokes_its_function_once_each_virtual_hour(cloud: LocalCloud) -> None:
    """AWS "Creating a rule that runs on a schedule in Amazon EventBridge": a rate(1 hour) rule (the drift
    job's default schedule) runs every hour from its creation and invokes its Lambda target asynchronously,
    as events.amazonaws.com, which the function's resource policy (AWS::Lambda::Permission) must allow."""
    import aws_cdk as cdk
    from aws_cdk import aws_events as events
    from aws_cdk import aws_events_targets as targets
    from aws_cdk import aws_lambda as lambda_

    # Given a function on an hourly schedule, deployed from its template
    app = cdk.App()
    stack = cdk.Stack(app, "ScheduleUnderTest")
    fn = lambda_.Function(
        stack,
        "Job",
        function_name="scheduled-job",
        runtime=lambda_.Runtime.PYTHON_3_12,
        handler=f"{FIXTURES}.sleepy",
        code=lambda_.Code.from_inline("# local"),
    )
    events.Rule(
        stack, "Schedule", schedule=events.Schedule.expression("rate(1 hour)"), targets=[targets.LambdaFunction(fn)]
    )
    cloud.deploy([app.synth().get_stack_by_name("ScheduleUnderTest").template])
    # When three virtual hours pass (and Lambda's metrics arrive)
    jumped = cloud.clock.jumped
    cloud.clock.advance(3 * 3600 + 240)
    # Then the function ran three times, each on a Scheduled Event, the clock having jumped between them
    assert _lambda_invocations(cloud, "scheduled-job", 4) == 3
    assert [e["detail-type"] for e in cloud.schedules.fired] == ["Scheduled Event"] * 3
    assert cloud.schedules.failed == []
    assert cloud.clock.jumped - jumped >= 0.9 * 3 * 3600


def test_an_hourly_schedule_starts_a_new_execution_of_its_state_machine_each_virtual_hour(cloud: LocalCloud) -> None:
    """AWS "Amazon EventBridge targets": a Step Functions target is started with StartExecution, and as no name
    is given, Step Functions generates a unique one per execution (StartExecution: "name ... If you don't
    provide a name, a universally unique identifier (UUID) is generated"); the drift machine's hourly schedule
    relies on it. (moto would reuse one execution for every start without a name and the same input.)"""
    import aws_cdk as cdk
    from aws_cdk import aws_events as events
    from aws_cdk import aws_events_targets as targets
    from aws_cdk import aws_stepfunctions as sfn

    # Given a state machine on an hourly schedule with a constant input, deployed from its template
    app = cdk.App()
    stack = cdk.Stack(app, "MachineScheduleUnderTest")
    machine = sfn.StateMachine(
        stack,
        "Machine",
        state_machine_name="scheduled-machine",
        definition_body=sfn.DefinitionBody.from_chainable(sfn.Pass(stack, "Done")),
    )
    events.Rule(
        stack,
        "Schedule",
        schedule=events.Schedule.expression("rate(1 hour)"),
        targets=[targets.SfnStateMachine(machine, input=events.RuleTargetInput.from_object({}))],
    )
    cloud.deploy([app.synth().get_stack_by_name("MachineScheduleUnderTest").template])
    # When three virtual hours pass
    cloud.clock.advance(3 * 3600 + 60)
    # Then three executions ran, each under a name of its own
    arn = cloud.client("stepfunctions").list_state_machines()["stateMachines"]
    machine_arn = next(m["stateMachineArn"] for m in arn if m["name"] == "scheduled-machine")
    executions = cloud.client("stepfunctions").list_executions(stateMachineArn=machine_arn)["executions"]
    assert cloud.schedules.failed == []
    assert len({e["name"] for e in executions}) == len(executions) == 3


def test_cron_expressions_match_as_eventbridge_reads_them() -> None:
    """AWS "Schedule expressions for rules": cron(minutes hours day-of-month month day-of-week year), UTC,
    day-of-week 1-7 from Sunday, with ``*``, ``?``, lists, ranges and ``/`` increments."""
    from datetime import UTC, datetime

    from modeldeck.localcloud.events import cron_matches

    monday_0615 = datetime(2026, 11, 30, 6, 15, tzinfo=UTC)
    assert cron_matches("cron(15 6 * * ? *)", monday_0615)
    assert cron_matches("cron(0/15 6-8 ? * MON-FRI *)", monday_0615)
    assert cron_matches("cron(15 6 ? * 2 *)", monday_0615)  # 2 is Monday
    assert not cron_matches("cron(15 6 ? * 1 *)", monday_0615)
    assert not cron_matches("cron(0 6 * * ? *)", monday_0615)
    assert not cron_matches("cron(15 6 1 * ? *)", monday_0615)


def test_an_sns_notification_is_stamped_and_delivered_at_the_clouds_time(cloud: LocalCloud) -> None:
    """AWS "Amazon SNS message and JSON formats": Timestamp is when the notification was published; here the
    cloud's (virtual) time, a day ahead of the host's."""
    from datetime import datetime

    # Given a topic with a queue subscribed, and a cloud a day ahead of the host clock
    sns, sqs = cloud.client("sns"), cloud.client("sqs")
    topic = sns.create_topic(Name="alerts")["TopicArn"]
    queue = sqs.create_queue(QueueName="alerts")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    cloud.clock.advance(24 * 3600)
    # When a message is published
    sns.publish(TopicArn=topic, Message="hello")
    # Then the queue has it, stamped with the cloud's time
    body = json.loads(sqs.receive_message(QueueUrl=queue)["Messages"][0]["Body"])
    stamped = datetime.strptime(body["Timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=cloud.clock.now().tzinfo)
    assert abs((stamped - cloud.clock.now()).total_seconds()) < 60
