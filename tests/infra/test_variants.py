"""The non-default configuration: SageMaker training, approval, schedules, retrain on drift, x86_64,
SnapStart, emails and an accuracy alarm, all in one second synthesis (also cdk-nag and cfn-lint clean)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.infra.conftest import Synth, definition, synthesize

pytestmark = pytest.mark.xdist_group("infra")


@pytest.fixture(scope="module")
def variant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synth]:
    yield synthesize(
        tmp_path_factory.mktemp("cdk.out.variant"),
        stage="prod",
        training__compute="sagemaker",
        training__manual_approval=True,
        training__schedule="rate(7 days)",
        training__retrain_on_drift=True,
        lambda__architecture="x86_64",
        lambda__snap_start=True,
        lambda__reserved_concurrency=50,
        alarms__emails=["ops@example.com"],
        drift__accuracy_threshold=0.9,
    )


def test_variant_is_clean_under_cdk_nag_and_cfn_lint(variant: Synth) -> None:
    report = variant.outdir / "validation-report.json"
    assert variant.nag_error is None, report.read_text()[:4000] if report.exists() else ""
    files = sorted(str(p) for p in variant.outdir.glob("*.template.json"))
    done = subprocess.run(
        [sys.executable, "-m", "cfnlint", "--format", "json", *files], capture_output=True, text=True, check=False
    )
    assert [f for f in json.loads(done.stdout or "[]") if f["Level"] == "Error"] == []


def test_sagemaker_trains_with_the_sync_integration_then_lambda_takes_over(variant: Synth) -> None:
    machine = next(iter(variant.resources("AWS::StepFunctions::StateMachine", stack="Training").values()))
    states = definition(machine)["States"]
    train = states["Train"]
    assert train["Resource"].endswith(":states:::sagemaker:createTrainingJob.sync")
    assert train["Parameters"]["AlgorithmSpecification"]["TrainingImage"]
    assert train["Parameters"]["HyperParameters"]["spec_key.$"] == "$.validate.staged_spec"
    assert train["Next"] == "Evaluate" and train["Retry"] and train["Catch"][0]["Next"] == "NotifyFailure"
    approve = states["Approve"]
    assert approve["Resource"].endswith(":states:::sns:publish.waitForTaskToken")
    assert states["Register"]["Next"] == "Approve"


def test_serving_runs_x86_with_snapstart_and_reserved_concurrency(variant: Synth) -> None:
    fn = next(
        f
        for f in variant.resources("AWS::Lambda::Function").values()
        if f["Properties"].get("FunctionName") == "modeldeck-prod-breast-cancer"
    )["Properties"]
    assert fn["Architectures"] == ["x86_64"]
    assert fn["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    assert fn["ReservedConcurrentExecutions"] == 50


def test_schedule_and_drift_alarms_start_the_training_pipeline_with_the_spec(variant: Synth) -> None:
    rules = [r["Properties"] for r in variant.resources("AWS::Events::Rule", "Training").values()]
    schedule = next(r for r in rules if r.get("ScheduleExpression") == "rate(7 days)")
    payload = json.loads(schedule["Targets"][0]["Input"])
    assert payload["model"] == "breast-cancer" and payload["spec"]["name"] == "breast-cancer"
    drift = next(r for r in rules if "EventPattern" in r)
    pattern = drift["EventPattern"]
    assert pattern["detail-type"] == ["CloudWatch Alarm State Change"]
    assert pattern["detail"]["state"] == {"value": ["ALARM"]}
    assert "modeldeck-prod-breast-cancer-drifted-share" in pattern["detail"]["alarmName"]
    assert "modeldeck-prod-breast-cancer-accuracy" in pattern["detail"]["alarmName"]


def test_emails_subscribe_to_the_alert_topic(variant: Synth) -> None:
    subs = [s["Properties"] for s in variant.resources("AWS::SNS::Subscription").values()]
    assert [(s["Protocol"], s["Endpoint"]) for s in subs] == [("email", "ops@example.com")]
    alarms = {
        a["Properties"]["AlarmName"]: a["Properties"] for a in variant.resources("AWS::CloudWatch::Alarm").values()
    }
    accuracy = alarms["modeldeck-prod-breast-cancer-accuracy"]
    assert (accuracy["MetricName"], accuracy["ComparisonOperator"], accuracy["Threshold"]) == (
        "Accuracy",
        "LessThanThreshold",
        0.9,
    )


def test_a_drift_alarm_starts_the_training_pipeline_when_retrain_on_drift_is_on(variant: Synth) -> None:
    """The whole retrain loop on the local cloud: drift metric → alarm → EventBridge rule → training."""
    from datetime import UTC, datetime

    from modeldeck.localcloud import load_templates, local_cloud

    with local_cloud(templates=load_templates(variant.outdir)) as cloud:
        sfn = cloud.client("stepfunctions")
        training = cloud.deployer.outputs["TrainingStateMachineArn"]
        assert sfn.list_executions(stateMachineArn=training)["executions"] == []
        cloud.client("cloudwatch").put_metric_data(
            Namespace="modeldeck",
            MetricData=[
                {
                    "MetricName": "MaxFeaturePSI",
                    "Dimensions": [{"Name": "model", "Value": "breast-cancer"}],
                    "Value": 0.9,
                    "Timestamp": datetime.now(UTC),
                }
            ],
        )
        cloud.clock.advance(3600)  # the alarm judges whole one-hour periods, once a (virtual) minute
        history = cloud.client("cloudwatch").describe_alarm_history(
            AlarmName="modeldeck-prod-breast-cancer-max-feature-psi", HistoryItemType="StateUpdate"
        )
        assert any(i["HistorySummary"].endswith("to ALARM") for i in history["AlarmHistoryItems"])
        executions = sfn.list_executions(stateMachineArn=training)["executions"]
        assert len(executions) == 1
        started = json.loads(sfn.describe_execution(executionArn=executions[0]["executionArn"])["input"])
        assert started["model"] == "breast-cancer" and started["spec"]["name"] == "breast-cancer"
