"""The local cloud follows the synthesized templates, and emulates what moto does not do."""

from __future__ import annotations

import contextlib
import io
import json
import os
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from modeldeck.localcloud import LocalCloud, assembly_templates, local_cloud


@pytest.fixture(scope="module")
def templates() -> list[dict[str, Any]]:
    found = assembly_templates(Path(os.environ["MODELDECK_CDK_OUT"]))
    assert found is not None
    return found


def _resources(templates: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {logical: r for t in templates for logical, r in t["Resources"].items() if r["Type"] == kind}


def test_the_local_deployment_matches_the_templates(templates: list[dict[str, Any]]) -> None:
    with local_cloud(templates=templates) as cloud:
        d = cloud.deployer
        lam = cloud.client("lambda")
        functions = _resources(templates, "AWS::Lambda::Function")
        # inference, capture processor, drift, experiment, release, training, batch
        assert len(functions) == 7
        for logical, fn in functions.items():
            props = fn["Properties"]
            deployed = lam.get_function_configuration(FunctionName=d.physical[logical])
            if "Handler" in props:
                assert deployed["Handler"] == props["Handler"]
            else:
                assert deployed["ImageConfigResponse"]["ImageConfig"]["Command"] == props["ImageConfig"]["Command"]
            declared_env = props.get("Environment", {}).get("Variables", {})
            expected_env = {k: str(v) for k, v in d.resolve(declared_env).items()}
            assert deployed.get("Environment", {}).get("Variables", {}) == expected_env
        # The model function's alias `live` points at a version pinning the configured MODEL_VERSION.
        model_fn = next(
            f
            for f in functions.values()
            if f["Properties"].get("Handler") == "lambdas.inference.handler.lambda_handler"
        )
        name = d.resolve(model_fn["Properties"]["FunctionName"])
        alias = lam.get_alias(FunctionName=name, Name="live")
        pinned = lam.get_function_configuration(FunctionName=name, Qualifier=alias["FunctionVersion"])
        assert pinned["Environment"]["Variables"]["MODEL_VERSION"] == "0"

        sfn = cloud.client("stepfunctions")
        machines = _resources(templates, "AWS::StepFunctions::StateMachine")
        # training, release, drift, batch
        assert len(machines) == 4
        for machine in machines.values():
            props = machine["Properties"]
            arn = next(a for a in d.arns.values() if a.endswith(":stateMachine:" + props["StateMachineName"]))
            deployed = json.loads(sfn.describe_state_machine(stateMachineArn=arn)["definition"])
            assert deployed == json.loads(d.resolve(props["DefinitionString"]))

        cw = cloud.client("cloudwatch")
        alarms = {a["AlarmName"]: a for a in cw.describe_alarms()["MetricAlarms"]}
        declared = _resources(templates, "AWS::CloudWatch::Alarm")
        assert len(alarms) == len(declared) >= 8
        for alarm in declared.values():
            props = d.resolve(alarm["Properties"])
            deployed = alarms[props["AlarmName"]]
            for key in (
                "Threshold",
                "ComparisonOperator",
                "EvaluationPeriods",
                "TreatMissingData",
                "MetricName",
                "Namespace",
                "AlarmActions",
            ):
                if key in props:
                    assert deployed[key] == (float(props[key]) if key == "Threshold" else props[key]), key
        assert cloud.bucket == d.outputs["RegistryBucketName"]


def _stub_function(
    cloud: LocalCloud,
    name: str = "stub",
    handler: str = "tests.fixtures.emf_handler.lambda_handler",
    env: dict[str, str] | None = None,
) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("stub", "")
    lam = cloud.client("lambda")
    lam.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=cloud.deployer._role(),
        Handler=handler,
        Code={"ZipFile": buf.getvalue()},
        Environment={"Variables": env or {"MODEL_VERSION": "1"}},
    )
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version)


def _metric_values(
    cloud: LocalCloud, namespace: str, name: str, dims: list[dict[str, str]], stat: str = "Sum"
) -> float:
    now = cloud.clock.now()
    points = cloud.client("cloudwatch").get_metric_statistics(
        Namespace=namespace,
        MetricName=name,
        Dimensions=dims,
        StartTime=now - timedelta(minutes=5),
        EndTime=now + timedelta(minutes=1),
        Period=600,
        Statistics=[stat],
    )["Datapoints"]
    return sum(p[stat] for p in points)


def test_handler_stdout_becomes_logs_and_embedded_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    with local_cloud() as cloud:
        _stub_function(cloud)
        cloud.lambdas.invoke("stub", "live", {"score": 0.7})
        cloud.clock.advance(180)  # metrics reach CloudWatch late
        assert capsys.readouterr().out == "", "a handler's output goes to its logs, not the terminal"
        assert cloud.lambdas.logs["stub"] == ["a plain log line"]
        dims = [{"Name": "model", "Value": "m"}, {"Name": "version", "Value": "1"}]
        assert _metric_values(cloud, "modeldeck", "PredictionScore", dims, "Average") == pytest.approx(0.7)


def test_invocations_count_in_lambda_metrics_per_executed_version(cloud: LocalCloud) -> None:
    _stub_function(cloud)
    for fail in (False, False, True):
        with contextlib.suppress(RuntimeError):
            cloud.lambdas.invoke("stub", "live", {"fail": fail})
    cloud.clock.advance(180)
    dims = [
        {"Name": "FunctionName", "Value": "stub"},
        {"Name": "Resource", "Value": "stub:live"},
        {"Name": "ExecutedVersion", "Value": "1"},
    ]
    assert _metric_values(cloud, "AWS/Lambda", "Invocations", dims) == 3
    assert _metric_values(cloud, "AWS/Lambda", "Errors", dims) == 1


def _alarm(cloud: LocalCloud, **overrides: Any) -> str:
    topic = cloud.client("sns").create_topic(Name="alerts")["TopicArn"]
    args = {
        "AlarmName": "a",
        "Namespace": "ns",
        "MetricName": "m",
        "Statistic": "Maximum",
        "Period": 60,
        "EvaluationPeriods": 1,
        "Threshold": 1.0,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "TreatMissingData": "notBreaching",
        "AlarmActions": [topic],
        **overrides,
    }
    cloud.client("cloudwatch").put_metric_alarm(**args)
    return topic


def _subscribe(cloud: LocalCloud, topic: str) -> str:
    sqs = cloud.client("sqs")
    url = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    cloud.client("sns").subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    return url


def _state(cloud: LocalCloud, name: str = "a") -> str:
    return cloud.client("cloudwatch").describe_alarms(AlarmNames=[name])["MetricAlarms"][0]["StateValue"]


def test_alarms_are_evaluated_and_notify_their_topic(cloud: LocalCloud) -> None:
    # Given an alarm on a custom metric, notifying a topic with a queue subscribed
    topic = _alarm(cloud)
    queue = _subscribe(cloud, topic)
    cw = cloud.client("cloudwatch")
    assert _state(cloud) == "INSUFFICIENT_DATA", "a new alarm starts unchecked"
    # When a minute passes without data, then a breaching datapoint arrives and its period ends
    cloud.clock.advance(60)
    assert _state(cloud) == "OK", "no data is not breaching here"
    cw.put_metric_data(Namespace="ns", MetricData=[{"MetricName": "m", "Value": 3.0}])
    cloud.clock.advance(60)
    # Then the alarm fires once, with CloudWatch's alarm message
    assert _state(cloud) == "ALARM"
    sqs = cloud.client("sqs")
    message = json.loads(json.loads(sqs.receive_message(QueueUrl=queue)["Messages"][0]["Body"])["Message"])
    assert message["AlarmName"] == "a" and message["NewStateValue"] == "ALARM" and "3" in message["NewStateReason"]
    cloud.clock.advance(60)
    assert cloud.alarms.evaluate() == [], "no repeated notification while the state holds"


def test_percentiles_missing_data_and_metric_math(cloud: LocalCloud) -> None:
    cw = cloud.client("cloudwatch")
    cw.put_metric_alarm(
        AlarmName="p99",
        Namespace="ns",
        MetricName="lat",
        ExtendedStatistic="p99",
        Period=60,
        EvaluationPeriods=1,
        Threshold=50.0,
        ComparisonOperator="GreaterThanThreshold",
        TreatMissingData="missing",
    )
    cloud.clock.advance(60)
    assert _state(cloud, "p99") == "INSUFFICIENT_DATA"
    cw.put_metric_data(Namespace="ns", MetricData=[{"MetricName": "lat", "Values": [10.0] * 98 + [90.0, 95.0]}])
    cloud.clock.advance(60)
    assert _state(cloud, "p99") == "ALARM", "the 99th percentile of 100 values is the 99th value (90)"

    def stat(mid: str, version: str) -> dict[str, Any]:
        return {
            "Id": mid,
            "ReturnData": False,
            "MetricStat": {
                "Stat": "Average",
                "Period": 60,
                "Metric": {
                    "Namespace": "ns",
                    "MetricName": "score",
                    "Dimensions": [{"Name": "version", "Value": version}],
                },
            },
        }

    cw.put_metric_alarm(
        AlarmName="shift",
        EvaluationPeriods=1,
        Threshold=0.2,
        ComparisonOperator="GreaterThanThreshold",
        TreatMissingData="notBreaching",
        Metrics=[stat("a", "1"), stat("b", "2"), {"Id": "d", "Expression": "ABS(a - b)"}],
    )
    cw.put_metric_data(
        Namespace="ns",
        MetricData=[
            {"MetricName": "score", "Dimensions": [{"Name": "version", "Value": "1"}], "Value": 0.3},
            {"MetricName": "score", "Dimensions": [{"Name": "version", "Value": "2"}], "Value": 0.8},
        ],
    )
    cloud.clock.advance(60)
    assert _state(cloud, "shift") == "ALARM"


def test_alarm_state_changes_reach_eventbridge_rules(cloud: LocalCloud) -> None:
    sfn = cloud.client("stepfunctions")
    machine = sfn.create_state_machine(
        name="retrain",
        roleArn=cloud.deployer._role(),
        definition=json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}),
    )["stateMachineArn"]
    cloud.alarms.rules.append(
        {
            "EventPattern": {
                "source": ["aws.cloudwatch"],
                "detail": {"alarmName": ["a"], "state": {"value": ["ALARM"]}},
            },
            "Targets": [{"Arn": machine, "Input": "{}"}],
        }
    )
    _alarm(cloud)
    cloud.client("cloudwatch").put_metric_data(Namespace="ns", MetricData=[{"MetricName": "m", "Value": 5.0}])
    cloud.clock.advance(60)
    assert len(sfn.list_executions(stateMachineArn=machine)["executions"]) == 1


def test_state_persists_between_commands(tmp_path: Path, templates: list[dict[str, Any]]) -> None:
    with local_cloud(tmp_path, templates=templates) as cloud:
        lam = cloud.client("lambda")
        name = "modeldeck-dev-breast-cancer"
        env = lam.get_function_configuration(FunctionName=name)["Environment"]["Variables"]
        lam.update_function_configuration(FunctionName=name, Environment={"Variables": {**env, "MODEL_VERSION": "7"}})
        v = lam.publish_version(FunctionName=name)["Version"]
        lam.update_alias(FunctionName=name, Name="live", FunctionVersion=v)
        cloud.client("s3").put_object(Bucket=cloud.bucket, Key="models/x/1/card.json", Body=b"{}")
        cloud.client("cloudwatch").set_alarm_state(
            AlarmName="modeldeck-dev-breast-cancer-errors", StateValue="ALARM", StateReason="test"
        )
    with local_cloud(tmp_path, templates=templates) as cloud:
        lam = cloud.client("lambda")
        alias = lam.get_alias(FunctionName=name, Name="live")
        pinned = lam.get_function_configuration(FunctionName=name, Qualifier=alias["FunctionVersion"])
        assert pinned["Environment"]["Variables"]["MODEL_VERSION"] == "7"
        assert cloud.client("s3").get_object(Bucket=cloud.bucket, Key="models/x/1/card.json")["Body"].read() == b"{}"
        assert _state(cloud, "modeldeck-dev-breast-cancer-errors") == "ALARM"


def test_a_read_overlapping_a_write_of_the_same_key_gets_old_or_new_bytes() -> None:
    # S3's consistency model: a GET concurrent with a PUT to the same key returns the old data or the new,
    # never an error (moto disposed of the replaced object mid-read: "I/O operation on closed file").
    import threading

    with local_cloud() as cloud:
        s3 = cloud.client("s3")
        written = [json.dumps({"n": i, "pad": "x" * 4096}).encode() for i in range(400)]
        s3.put_object(Bucket=cloud.bucket, Key="last.json", Body=written[0])
        failures: list[BaseException] = []
        read: list[bytes] = []

        def writer() -> None:
            for body in written[1:]:
                s3.put_object(Bucket=cloud.bucket, Key="last.json", Body=body)

        def reader() -> None:
            while thread.is_alive():
                try:
                    read.append(s3.get_object(Bucket=cloud.bucket, Key="last.json")["Body"].read())
                except BaseException as exc:  # what a client would see
                    failures.append(exc)

        thread = threading.Thread(target=writer)
        thread.start()
        readers = [threading.Thread(target=reader) for _ in range(3)]
        for r in readers:
            r.start()
        for r in [thread, *readers]:
            r.join()
    assert not failures, failures[:3]
    assert read and set(read) <= set(written)


def test_iterating_the_environment_while_a_cold_start_sets_its_variables_never_fails() -> None:
    # Lambda gives each execution environment its own process environment; here cold starts set theirs in the
    # one process, while other threads create clients (botocore iterates os.environ for proxy variables).
    import threading

    from modeldeck.localcloud.base import patched_environ

    with local_cloud() as cloud:
        failures: list[BaseException] = []
        done = threading.Event()

        def cold_starts() -> None:
            for i in range(3000):
                with patched_environ({f"MODELDECK_COLD_{i % 7}": str(i)}):
                    pass
            done.set()

        def reader() -> None:
            while not done.is_set():
                try:
                    dict(os.environ.items())
                    list(os.environ)
                except BaseException as exc:
                    failures.append(exc)
                    return

        threads = [threading.Thread(target=cold_starts), threading.Thread(target=reader)]
        for t in threads:
            t.start()
        cloud.client("s3")  # a client created meanwhile
        for t in threads:
            t.join()
    assert not failures, failures[:3]
