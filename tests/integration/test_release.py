"""Releases on moto: the real release state machine (synthesized ASL) executing in Step Functions."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns

from infra.constructs.release import ReleaseOrchestration
from modeldeck import release
from modeldeck.localcloud import LocalCloud, local_cloud
from modeldeck.registry import BASELINE, HOLDOUT, Registry

FN = "breast-cancer-inference"


@pytest.fixture(scope="module")
def release_template() -> dict[str, Any]:
    """The release orchestration synthesized once, in a bare stack, as CDK writes it."""
    app = cdk.App()
    stack = cdk.Stack(app, "ReleaseUnderTest")
    topic = sns.Topic(stack, "Alarms")
    fn = lambda_.Function(
        stack,
        "ReleaseFunction",
        runtime=lambda_.Runtime.PYTHON_3_12,
        handler="lambdas.release.handler.lambda_handler",
        code=lambda_.Code.from_inline("# local"),
        timeout=cdk.Duration.seconds(60),
        environment={
            "MODEL_BUCKET": "modeldeck-registry-local",
            "TOPIC_ARN": topic.topic_arn,
            "CANARY_PERIOD_SECONDS": "60",
            "ALARM_PREFIX": "modeldeck-dev",
        },
    )
    # A bare stack: the release role's least-privilege grants are ReleaseStack's (infra/stacks.py), which the
    # local cloud enforces where the app's templates are deployed (e2e). Here the role may do what releases ask.
    fn.add_to_role_policy(
        iam.PolicyStatement(actions=["s3:*", "lambda:*", "cloudwatch:*", "sns:*", "states:*"], resources=["*"])
    )
    ReleaseOrchestration(stack, "Release", release_function=fn, topic=topic, timeout=cdk.Duration.hours(6))
    return app.synth().get_stack_by_name("ReleaseUnderTest").template


class World:
    """A local cloud with the release machinery deployed, a model function, and registered versions."""

    def __init__(self, cloud: LocalCloud, template: dict[str, Any], trained: Any) -> None:
        self.cloud = cloud
        cloud.deployer.deploy([template])
        self.state_machine = next(a for a in cloud.deployer.arns.values() if ":stateMachine:" in a)
        self.topic = next(a for a in cloud.deployer.arns.values() if ":sns:" in a)
        self.registry = Registry(cloud.client("s3"), cloud.bucket)
        self.lam = cloud.client("lambda")
        self.sfn = cloud.client("stepfunctions")
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("stub", "")
        self.lam.create_function(
            FunctionName=FN,
            Runtime="python3.12",
            Role=cloud.deployer._role(),
            Handler="tests.fixtures.stub_model_handler.lambda_handler",
            Code={"ZipFile": buf.getvalue()},
            Environment={
                "Variables": {"MODEL_NAME": "breast-cancer", "MODEL_VERSION": "0", "MODEL_BUCKET": cloud.bucket}
            },
        )
        sqs = cloud.client("sqs")
        self.queue = sqs.create_queue(QueueName="alarms")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=self.queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        cloud.client("sns").subscribe(TopicArn=self.topic, Protocol="sqs", Endpoint=queue_arn)
        self.trained = trained
        self.clients = release.Clients(
            lam=self.lam,
            cloudwatch=cloud.client("cloudwatch"),
            sns=cloud.client("sns"),
            registry=self.registry,
            topic_arn=self.topic,
        )

    def register(self, tweak: str = "") -> int:
        card = replace(self.trained.card, spec_sha256=(tweak or "0") * 64) if tweak else self.trained.card
        registered, _ = self.registry.register(
            card, self.trained.onnx, {BASELINE: self.trained.baseline, HOLDOUT: self.trained.holdout}
        )
        return registered.version

    def start(self, version: int, **options: Any) -> str:
        payload = {
            "model": "breast-cancer",
            "version": version,
            "function_name": FN,
            "strategy": "canary",
            **options,
        }
        name = f"breast-cancer-v{version}-{time.monotonic_ns()}"
        return self.sfn.start_execution(stateMachineArn=self.state_machine, name=name, input=json.dumps(payload))[
            "executionArn"
        ]

    def wait(self, execution: str, during: Any = None, timeout: float = 60) -> dict[str, Any]:
        """Follow an execution on the virtual clock: ``during`` runs every 10 virtual seconds (clients'
        traffic), and the production bake (10 minutes plus the metric settle) passes in wall seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            described = self.sfn.describe_execution(executionArn=execution)
            if described["status"] != "RUNNING":
                return described
            if during is not None:
                during()
            self.cloud.clock.sleep(10)
        raise AssertionError(f"the release did not finish: {self.story(execution)}")

    def story(self, execution: str) -> list[str]:
        """The execution's last events, for a failure message."""
        events = self.sfn.get_execution_history(executionArn=execution, reverseOrder=True, maxResults=8)["events"]
        return [
            f"{e['type']} {json.dumps({k: v for k, v in e.items() if k.endswith('Details')}, default=str)[:300]}"
            for e in events
        ]

    def release(self, version: int, during: Any = None, **options: Any) -> dict[str, Any]:
        return self.wait(self.start(version, **options), during)

    def establish(self) -> int:
        """Register and release version 1 (the starting point of most tests): it must go live."""
        version = self.register()
        execution = self.start(version)
        result = self.wait(execution)
        assert result["status"] == "SUCCEEDED", f"the first release {result['status']}: {self.story(execution)}"
        return version

    def traffic(self, n: int = 20) -> dict[str, int]:
        served: dict[str, int] = {}
        for _ in range(n):
            try:
                result, _ = self.cloud.lambdas.invoke(FN, "live", {})
                served[result["body"]] = served.get(result["body"], 0) + 1
            except Exception:  # the function's error, as Lambda reports it to the caller
                served["error"] = served.get("error", 0) + 1
        return served

    def weights(self) -> dict[str, float]:
        return release.alias_weights(release.get_alias(self.lam, FN))

    def notifications(self) -> list[dict[str, Any]]:
        sqs = self.cloud.client("sqs")
        out = []
        while True:
            messages = sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return out
            for m in messages:
                out.append(json.loads(m["Body"]))
                sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=m["ReceiptHandle"])

    def record(self) -> dict[str, Any]:
        return release.read_json(self.registry, "releases/breast-cancer/last.json") or {}


@pytest.fixture
def world(release_template: dict[str, Any], trained_demo: Any) -> Iterator[World]:
    # The test thread takes part in the simulation: virtual time passes only while it sleeps on the clock.
    with local_cloud() as cloud, cloud.clock.participant():
        yield World(cloud, release_template, trained_demo)


def pinned(world: World) -> dict[str, str]:
    return release.function_versions(world.lam, FN)


def test_the_first_release_goes_straight_to_live(world: World) -> None:
    v1 = world.register()
    result = world.release(v1)
    assert result["status"] == "SUCCEEDED"
    alias = release.get_alias(world.lam, FN)
    assert pinned(world)[alias["FunctionVersion"]] == "1"
    assert world.weights() == {alias["FunctionVersion"]: 1.0}
    assert world.registry.get_champion("breast-cancer") == 1
    assert world.record()["outcome"] == "promoted" and world.record()["first_release"] is True


def test_a_healthy_canary_is_promoted_with_only_model_version_changed(world: World) -> None:
    world.establish()
    env_before = world.lam.get_function_configuration(FunctionName=FN, Qualifier="1")["Environment"]["Variables"]
    v2 = world.register("2")
    seen: list[dict[str, float]] = []
    result = world.release(v2, during=lambda: seen.append(world.weights()))
    assert result["status"] == "SUCCEEDED"
    assert {"1": 0.9, "2": 0.1} in seen, "the canary must have held 10% during its bake"
    assert world.weights() == {"2": 1.0}
    env_after = world.lam.get_function_configuration(FunctionName=FN, Qualifier="2")["Environment"]["Variables"]
    assert env_after == {**env_before, "MODEL_VERSION": "2"}
    assert world.registry.get_champion("breast-cancer") == 2
    record = world.record()
    events = [e["event"] for e in record["timeline"]]
    assert events == ["requested", "gate-passed", "shift", "bake-checked", "promoted"]
    assert record["gate"]["agreement"] == 1.0
    assert world.traffic(5) == {"2": 5}


def test_an_alarming_canary_rolls_back_and_says_why(world: World) -> None:
    # Given v1 live, and a v2 that passes the gate but loses its model artifact once the canary has its share
    # (the model function cannot initialize without it: every invocation of v2 is an error to Lambda)
    world.establish()
    v2 = world.register("2")

    def traffic_while_the_artifact_is_lost() -> None:
        if world.weights() != {"1": 1.0}:
            world.cloud.client("s3").delete_object(
                Bucket=world.cloud.bucket, Key=f"models/breast-cancer/{v2}/model.onnx"
            )
        world.traffic(10)

    world.notifications()
    # When the release bakes under traffic
    result = world.release(v2, during=traffic_while_the_artifact_is_lost)
    # Then the canary's error alarm rolls it back, says why, and the champion and alias are untouched
    assert result["status"] == "FAILED" and result.get("error") == "RolledBack"
    assert world.weights() == {"1": 1.0}
    assert world.registry.get_champion("breast-cancer") == 1
    record = world.record()
    assert record["outcome"] == "rolled-back"
    alarm_name = record["cause"]["alarm"]
    assert alarm_name.startswith("modeldeck-dev-breast-cancer-canary-v2-") and alarm_name.endswith("-errors")
    messages = world.notifications()
    rollback = next(m for m in messages if "rolled back" in m["Subject"])
    assert alarm_name in rollback["Message"]
    assert "v2" in rollback["Message"] and "Next:" in rollback["Message"]
    alarm = next(m for m in messages if m["Subject"].startswith("ALARM"))
    assert json.loads(alarm["Message"])["NewStateValue"] == "ALARM"
    assert release.read_json(world.registry, "releases/breast-cancer/lock.json") is None


def test_a_linear_rollout_walks_through_equal_steps(world: World) -> None:
    world.establish()
    seen: list[dict[str, float]] = []
    result = world.release(world.register("2"), during=lambda: seen.append(world.weights()), strategy="linear", steps=3)
    assert result["status"] == "SUCCEEDED"
    distinct = []
    for w in seen:
        if w not in distinct:
            distinct.append(w)
    assert {"1": 0.75, "2": 0.25} in distinct and {"1": 0.5, "2": 0.5} in distinct
    assert {"1": 0.25, "2": 0.75} in distinct
    assert world.weights() == {"2": 1.0}


def test_all_at_once_promotes_without_a_bake(world: World) -> None:
    world.establish()
    assert world.release(world.register("2"), strategy="all-at-once")["status"] == "SUCCEEDED"
    assert world.weights() == {"2": 1.0}


def test_a_second_release_while_one_is_in_flight_is_refused(world: World) -> None:
    world.establish()
    v2, v3 = world.register("2"), world.register("3")
    first = world.start(v2)
    deadline = time.monotonic() + 30
    while release.read_json(world.registry, "releases/breast-cancer/lock.json") is None:
        assert time.monotonic() < deadline, "the first release never took the lock"
        time.sleep(0.05)
    with world.cloud.clock.hold():  # the first release's bake cannot end while the second one starts
        second = world.wait(world.start(v3))
    assert second["status"] == "FAILED" and second["error"] == "ReleaseRefused"
    assert world.wait(first)["status"] == "SUCCEEDED"
    history = release._history(world.clients, "breast-cancer")
    refused = next(r for r in history if r["version"] == v3)
    assert "already in flight: v2" in refused["gate"]["reason"]
    assert world.record()["version"] == v2 and world.record()["outcome"] == "promoted"


def test_a_release_is_refused_while_a_health_alarm_is_firing(world: World) -> None:
    world.establish()
    cw = world.cloud.client("cloudwatch")
    cw.put_metric_alarm(
        AlarmName="modeldeck-dev-breast-cancer-errors",
        Namespace="AWS/Lambda",
        MetricName="Errors",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        # An incident whose datapoints are no longer arriving: "ignore" keeps the alarm in ALARM at every
        # evaluation (CloudWatch: TreatMissingData), however many virtual minutes pass before the gate.
        TreatMissingData="ignore",
    )
    cw.set_alarm_state(
        AlarmName="modeldeck-dev-breast-cancer-errors", StateValue="ALARM", StateReason="earlier incident"
    )
    result = world.release(world.register("2"))
    assert result["status"] == "FAILED" and result["error"] == "ReleaseRefused"
    assert "already in ALARM: modeldeck-dev-breast-cancer-errors" in world.record()["gate"]["reason"]
    assert world.weights() == {"1": 1.0}


def test_a_tampered_artifact_never_gets_traffic(world: World) -> None:
    world.establish()
    v2 = world.register("2")
    world.registry.s3.put_object(Bucket=world.registry.bucket, Key=f"models/breast-cancer/{v2}/model.onnx", Body=b"x")
    result = world.release(v2)
    assert result["status"] == "FAILED"
    assert "does not match" in world.record()["gate"]["reason"]
    assert world.weights() == {"1": 1.0} and len(pinned(world)) == 1


def test_rollback_with_nothing_in_flight_is_idempotent(world: World) -> None:
    world.establish()
    first = release.manual_rollback(world.clients, "breast-cancer", FN)
    again = release.manual_rollback(world.clients, "breast-cancer", FN)
    assert first == again
    assert not first["changed"] and "nothing to roll back" in first["message"]


def test_rollback_to_a_previous_version_moves_live_and_the_champion(world: World) -> None:
    world.establish()
    world.release(world.register("2"), strategy="all-at-once")
    result = release.manual_rollback(world.clients, "breast-cancer", FN, to=1)
    assert result["changed"] and world.weights() == {"1": 1.0}
    assert world.registry.get_champion("breast-cancer") == 1


def test_promote_refuses_a_version_that_failed_its_gate(world: World) -> None:
    world.establish()
    v2 = world.register("2")
    world.registry.s3.put_object(Bucket=world.registry.bucket, Key=f"models/breast-cancer/{v2}/model.onnx", Body=b"x")
    world.release(v2)
    with pytest.raises(release.ReleaseRefused, match="failed its release gate"):
        release.manual_promote(world.clients, "breast-cancer", FN, v2)


def _throttle_update_alias(times: int) -> Any:
    """Make Lambda's UpdateAlias answer TooManyRequestsException ``times`` times, then work."""
    from unittest import mock

    from moto.awslambda.exceptions import LambdaClientError
    from moto.awslambda.models import LambdaBackend

    original = LambdaBackend.update_alias
    calls = {"n": 0}

    def throttled(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= times:
            error = LambdaClientError("TooManyRequestsException", "Rate exceeded")
            error.code = 429
            raise error
        return original(self, *args, **kwargs)

    return mock.patch.object(LambdaBackend, "update_alias", throttled)


def test_a_throttled_call_mid_shift_is_retried_and_the_release_completes(world: World) -> None:
    world.establish()
    with _throttle_update_alias(times=2):
        result = world.release(world.register("2"))
    assert result["status"] == "SUCCEEDED"
    assert world.weights() == {"2": 1.0}


def test_a_persistent_failure_mid_shift_rolls_back_and_frees_the_alias(world: World) -> None:
    world.establish()
    # Fails the shift (4 task attempts, each with botocore's 5 standard-mode attempts), then lets the
    # rollback through.
    with _throttle_update_alias(times=4 * 5):
        result = world.release(world.register("2"))
    assert result["status"] == "FAILED" and result["error"] == "RolledBack"
    assert world.weights() == {"1": 1.0}
    assert world.record()["outcome"] == "rolled-back"
    assert release.read_json(world.registry, "releases/breast-cancer/lock.json") is None


def test_rollback_releases_a_stale_lock(world: World) -> None:
    world.establish()
    release.write_json(world.registry, "releases/breast-cancer/lock.json", {"execution": "gone", "version": 7})
    result = release.manual_rollback(world.clients, "breast-cancer", FN)
    assert result["changed"] and "ended the release of v7" in result["message"]
    assert world.release(world.register("2"), strategy="all-at-once")["status"] == "SUCCEEDED"


def test_a_shadow_release_serves_nothing_and_reports_agreement(world: World) -> None:
    """The real inference handler: live mirrors requests to the candidate, whose outputs are only captured."""
    from modeldeck.gateway import proxy_event
    from modeldeck.localcloud import deploy_inference_version
    from tests.fixtures.inference import ROW

    v1 = world.register()
    world.lam.delete_function(FunctionName=FN)
    deploy_inference_version(world.cloud, "breast-cancer", v1, function_name=FN)
    world.registry.set_champion("breast-cancer", v1)
    v2 = world.register("2")
    body = json.dumps({"instances": [ROW, ROW]}).encode()
    served: list[str] = []

    def traffic() -> None:
        # Live reads the shadow switch at most every 20 s; start once the switch is on, as clients would be
        # sending traffic throughout a real (minutes-long) shadow bake.
        started = any(e["event"] == "shadow-started" for e in world.record().get("timeline", []))
        if started and len(served) < 40:
            event = proxy_event(
                "POST", "/v1/models/breast-cancer:predict", body, headers={"content-type": ["application/json"]}
            )
            result, _ = world.cloud.lambdas.invoke(FN, "live", event)
            served.append(json.loads(result["body"])["model_version"])

    result = world.release(v2, during=traffic, strategy="shadow", bake_seconds=300)
    assert result["status"] == "SUCCEEDED"
    assert set(served) == {str(v1)}, "a shadow candidate serves no client"
    live_version = release.get_alias(world.lam, FN)["FunctionVersion"]
    assert release.alias_weights(release.get_alias(world.lam, FN)) == {live_version: 1.0}
    record = world.record()
    assert record["outcome"] == "shadow-complete"
    report = record["shadow_report"]
    assert report["pairs"] >= 10 and report["rows"] == 2 * report["pairs"]
    assert report["agreement"] == 1.0
    assert report["live_p50_ms"] is not None and report["shadow_p50_ms"] is not None
    assert world.registry.get_champion("breast-cancer") == v1
