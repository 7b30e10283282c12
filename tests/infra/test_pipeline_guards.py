"""Guards of the training state machine, executed on the local cloud (moto runs the synthesized ASL).

Given the app with manual approval and retrain-on-drift deployed into a local cloud: a rejection without a
cause is still notified (``NotifyFailure`` sends the whole error object), and two executions for one model
started together (drift alarms firing at once) train once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.xdist_group("infra")


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The app with manual approval and retrain-on-drift, deployed into a local cloud, its alert topic read
    through an SQS subscription."""
    from modeldeck.localcloud import load_templates, local_cloud
    from tests.infra.conftest import synthesize

    synth = synthesize(
        tmp_path_factory.mktemp("cdk.out.gated"), training__manual_approval=True, training__retrain_on_drift=True
    )
    assert synth.nag_error is None
    with local_cloud(templates=load_templates(synth.outdir)) as c:
        sqs = c.client("sqs")
        queue = sqs.create_queue(QueueName="alerts")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        c.client("sns").subscribe(
            TopicArn=c.deployer.outputs["AlertTopicArn"],
            Protocol="sqs",
            Endpoint=arn,
            Attributes={"RawMessageDelivery": "true"},
        )
        c.alerts = queue
        c.synth = synth
        yield c


def messages(cloud: Any) -> list[str]:
    sqs = cloud.client("sqs")
    out = []
    while batch := sqs.receive_message(QueueUrl=cloud.alerts, MaxNumberOfMessages=10).get("Messages", []):
        for m in batch:
            out.append(m["Body"])
            sqs.delete_message(QueueUrl=cloud.alerts, ReceiptHandle=m["ReceiptHandle"])
    return out


def wait_for(predicate: Any, seconds: float = 120) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if found := predicate():
            return found
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_an_approval_rejected_without_a_cause_notifies_the_whole_error_and_fails(gated: Any) -> None:
    from modeldeck.spec import spec_payload

    # Given a training execution waiting for approval
    sfn = gated.client("stepfunctions")
    spec = spec_payload(Path(__file__).resolve().parents[2] / "models" / "breast-cancer.toml")
    execution = sfn.start_execution(
        stateMachineArn=gated.deployer.outputs["TrainingStateMachineArn"],
        name="rejected",
        input=json.dumps({"model": "breast-cancer", "spec": spec, "release": False}),
    )["executionArn"]
    request = wait_for(lambda: next((json.loads(m) for m in messages(gated) if '"approve"' in m), None))
    # When the approver rejects it with SendTaskFailure and no cause (the error alone is allowed)
    sfn.send_task_failure(taskToken=request["task_token"], error="Rejected")
    # Then the failure is still notified, naming the error, and the execution ends as TrainingFailed (a
    # missing $.error.Cause in States.Format would be a States.Runtime error no Catch handles)
    result = wait_for(lambda: (d := sfn.describe_execution(executionArn=execution))["status"] != "RUNNING" and d)
    assert (result["status"], result.get("error")) == ("FAILED", "TrainingFailed"), result
    notified = [m for m in messages(gated) if "failed" in m]
    assert len(notified) == 1 and "Rejected" in notified[0], notified


def test_drift_alarms_firing_together_start_one_training_of_the_model(gated: Any) -> None:
    # Given retrain-on-drift: each drift alarm of a model that goes to ALARM makes its EventBridge rule start
    # the training state machine with the rule's input
    sfn = gated.client("stepfunctions")
    arn = gated.deployer.outputs["TrainingStateMachineArn"]
    rule = next(
        r["Properties"]
        for r in gated.synth.resources("AWS::Events::Rule", "Training").values()
        if "EventPattern" in r["Properties"]
    )
    assert len(rule["EventPattern"]["detail"]["alarmName"]) >= 2
    # When two of them fire together, and the rule starts two executions at once (as EventBridge does)
    started = [
        sfn.start_execution(stateMachineArn=arn, name=f"drift-{i}", input=rule["Targets"][0]["Input"])["executionArn"]
        for i in range(2)
    ]

    def settled() -> list[dict[str, Any]]:
        described = [sfn.describe_execution(executionArn=e) for e in started]
        waiting = any(d["status"] == "RUNNING" and _current(sfn, d) != "Approve" for d in described)
        return [] if waiting else described

    # Then one execution trains (it reaches the approval), and the other ends at once without training
    described = wait_for(settled)
    assert sorted((d["status"], d.get("error")) for d in described) == [
        ("FAILED", "TrainingInProgress"),
        ("RUNNING", None),
    ], described
    for d in described:
        if d["status"] == "RUNNING":
            sfn.stop_execution(executionArn=d["executionArn"])


def _current(sfn: Any, described: dict[str, Any]) -> str:
    events = sfn.get_execution_history(executionArn=described["executionArn"])["events"]
    entered = [e for e in sorted(events, key=lambda e: e["id"]) if e["type"].endswith("StateEntered")]
    return str(entered[-1]["stateEnteredEventDetails"]["name"]) if entered else ""


def test_the_failure_notification_reads_no_optional_field_of_the_error(synth: Any) -> None:
    """moto formats a missing path in States.Format without complaint; AWS fails the execution with an
    uncatchable States.Runtime error. So the template itself must not read ``$.error.Cause``."""
    from tests.infra.conftest import definition

    # Given the training state machine's failure notification
    machine = next(iter(synth.resources("AWS::StepFunctions::StateMachine", "Training").values()))
    message = definition(machine)["States"]["NotifyFailure"]["Parameters"]["Message.$"]
    # Then it sends the whole error object (Error always, Cause when there is one), never one of its fields
    assert "States.JsonToString($.error)" in message
    assert "$.error." not in message
