"""The release tasks on moto, one defect of issue 11 per test (canary alarms, the bake window, the lock,
published versions, operator actions).

moto stores alarms but has no alarm history, and these tests need executions in chosen states: a small
CloudWatch wrapper records history items the way CloudWatch returns them, and a fake Step Functions client
answers DescribeExecution/StopExecution.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from modeldeck import release
from modeldeck.registry import BASELINE, HOLDOUT, Registry

MODEL, FN, BUCKET = "breast-cancer", "breast-cancer-inference", "modeldeck-registry-unit"


class CloudWatchWithHistory:
    """moto's CloudWatch plus DescribeAlarmHistory (which moto lacks): items recorded by ``transition``,
    in CloudWatch's shape (HistoryItemType StateUpdate, HistoryData JSON with oldState/newState)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.items: list[dict[str, Any]] = []

    def transition(self, name: str, old: str, new: str, reason: str) -> None:
        self.client.set_alarm_state(AlarmName=name, StateValue=new, StateReason=reason)
        data = {"oldState": {"stateValue": old}, "newState": {"stateValue": new, "stateReason": reason}}
        self.items.append(
            {
                "AlarmName": name,
                "Timestamp": datetime.now(UTC),
                "HistoryItemType": "StateUpdate",
                "HistorySummary": f"Alarm updated from {old} to {new}",
                "HistoryData": json.dumps(data),
            }
        )

    def get_paginator(self, operation: str) -> Any:
        if operation != "describe_alarm_history":
            return self.client.get_paginator(operation)
        items = self.items

        class Pages:
            def paginate(self, AlarmName: str, StartDate: datetime, **_: Any) -> Iterator[dict[str, Any]]:
                yield {
                    "AlarmHistoryItems": [
                        i for i in items if i["AlarmName"] == AlarmName and i["Timestamp"] >= StartDate
                    ]
                }

        return Pages()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


class FakeStepFunctions:
    """DescribeExecution and StopExecution over executions whose status a test sets."""

    def __init__(self) -> None:
        self.status: dict[str, str] = {}
        self.stopped: list[dict[str, Any]] = []

    def describe_execution(self, executionArn: str) -> dict[str, Any]:
        return {"executionArn": executionArn, "status": self.status[executionArn]}

    def stop_execution(self, **kwargs: Any) -> dict[str, Any]:
        self.stopped.append(kwargs)
        self.status[kwargs["executionArn"]] = "ABORTED"
        return {}


def arn(name: str) -> str:
    return f"arn:aws:states:us-east-1:123456789012:execution:modeldeck-dev-release:{name}"


class World:
    """A model function in moto with v1 live and champion, and v2 registered."""

    def __init__(self, trained: Any) -> None:
        import boto3

        self.trained = trained
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        self.registry = Registry(s3, BUCKET)
        role = boto3.client("iam").create_role(RoleName="fn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        self.lam = boto3.client("lambda")
        self.lam.create_function(
            FunctionName=FN,
            Runtime="python3.12",
            Role=role,
            Handler="tests.fixtures.stub_model_handler.lambda_handler",
            Code={"ZipFile": self.zip("v1")},
            Environment={"Variables": {"MODEL_NAME": MODEL, "MODEL_VERSION": "0"}},
        )
        self.cw = CloudWatchWithHistory(boto3.client("cloudwatch"))
        self.sfn = FakeStepFunctions()
        self.clients = release.Clients(
            lam=self.lam,
            cloudwatch=self.cw,
            sns=boto3.client("sns"),
            registry=self.registry,
            policy=release.Policy(alarm_prefix="modeldeck-dev"),
            sfn=self.sfn,
        )
        v1 = self.register()
        release.set_alias(self.lam, FN, release.publish_pinned(self.lam, FN, v1))
        self.registry.set_champion(MODEL, v1)
        self.v2 = self.register("2")

    @staticmethod
    def zip(content: str) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("stub", content)
        return buf.getvalue()

    def register(self, tweak: str = "") -> int:
        card = replace(self.trained.card, spec_sha256=tweak * 64) if tweak else self.trained.card
        registered, _ = self.registry.register(
            card, self.trained.onnx, {BASELINE: self.trained.baseline, HOLDOUT: self.trained.holdout}
        )
        return int(registered.version)

    def gate(self, execution: str = "rel-a", **extra: Any) -> dict[str, Any]:
        event = {
            "model": MODEL,
            "version": self.v2,
            "function_name": FN,
            "strategy": "canary",
            "bake_seconds": 600,
            "execution": execution,
            "execution_arn": arn(execution),
            **extra,
        }
        self.sfn.status.setdefault(arn(execution), "RUNNING")
        return release.gate(event, self.clients)

    def lock(self) -> dict[str, Any] | None:
        return release.read_json(self.registry, f"releases/{MODEL}/lock.json")

    def record(self) -> dict[str, Any]:
        return release.read_json(self.registry, f"releases/{MODEL}/last.json") or {}

    def weights(self) -> dict[str, float]:
        return release.alias_weights(release.get_alias(self.lam, FN))

    def alarm_names(self) -> list[str]:
        return [a["AlarmName"] for a in self.cw.client.describe_alarms()["MetricAlarms"]]


@pytest.fixture
def world(trained_demo: Any) -> Iterator[World]:
    from moto import mock_aws

    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws(config={"lambda": {"use_docker": False}}):
        yield World(trained_demo)


# --- 11.4: alarms on what clients see ---------------------------------------------------------------


def test_the_canary_error_rate_is_server_errors_over_the_candidates_requests(world: World) -> None:
    """Given the inference handler's EMF (model, version) with its ``Requests`` count, when the gate arms the
    canary alarms, then the server-error rate divides ServerErrors by Requests over exactly the handler's
    dimensions, with a minimum request count, and no alarm reads a series the handler only emits for answered
    requests (``Latency``, ``PredictionScore`` count): a candidate failing every request has none of them."""
    from modeldeck.emf import EmfMetrics

    emitted = EmfMetrics("modeldeck")
    emitted.set_default_dimensions(model=MODEL, version=str(world.v2))  # as lambdas/inference/handler.py does
    emitted.add_metric("Requests", "Count", 1)
    emitted.add_metric("ServerErrors", "Count", 1)
    document = json.loads(emitted.serialize(0)[0])
    handler_dims = {(k, document[k]) for k in document["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]}

    out = world.gate()

    alarms = {a["AlarmName"]: a for a in world.cw.client.describe_alarms(AlarmNames=out["alarms"])["MetricAlarms"]}
    rate = next(a for name, a in alarms.items() if name.endswith("-server-error-rate"))
    queries = {q["Id"]: q for q in rate["Metrics"]}
    for qid, metric in (("errors", "ServerErrors"), ("requests", "Requests")):
        stat = queries[qid]["MetricStat"]
        assert stat["Metric"]["MetricName"] == metric and stat["Metric"]["Namespace"] == "modeldeck"
        assert stat["Stat"] == "Sum"
        assert {(d["Name"], d["Value"]) for d in stat["Metric"]["Dimensions"]} == handler_dims
    expression = next(q["Expression"] for q in rate["Metrics"] if q.get("ReturnData"))
    assert expression == "IF(requests >= 10, 100 * FILL(errors, 0) / requests, 0)"  # the policy's minimum
    assert rate["Threshold"] == 5.0
    answered_only = {"Latency", "PredictionScore"}
    for name, alarm in alarms.items():
        if name.endswith("-prediction-shift"):
            continue  # compares two answered series; missing scores are judged by check's totals
        read = {q["MetricStat"]["Metric"]["MetricName"] for q in alarm.get("Metrics") or [] if "MetricStat" in q}
        assert not read & answered_only, (name, read)
    assert any(name.endswith("-errors") for name in alarms), "crashes and timeouts (Lambda Errors) still count"


def test_the_policy_comes_from_the_release_functions_environment() -> None:
    """Given the environment CDK sets from the config's canary table, then the policy carries it."""
    policy = release.Policy.from_env(
        {
            "CANARY_ERROR_RATE_PERCENT": "2.5",
            "CANARY_MIN_REQUESTS": "20",
            "CANARY_PREDICTION_SHIFT": "0.2",
            "CANARY_PERIOD_SECONDS": "300",
            "CANARY_LATENCY_P99_MS": "800",
        }
    )
    assert (policy.error_rate_percent, policy.min_requests, policy.prediction_shift) == (2.5, 20, 0.2)
    assert (policy.period_seconds, policy.latency_p99_ms) == (300, 800)


# --- 11.7: the whole bake window --------------------------------------------------------------------


def test_an_alarm_that_fired_during_the_bake_and_recovered_rolls_back(world: World) -> None:
    """Given a canary whose rate alarm went to ALARM early in the bake and back to OK before its end,
    when the bake is checked, then the release is unhealthy and the cause names that alarm."""
    out = world.gate()
    shifted = release.shift(out, world.clients)
    rate = next(n for n in out["alarms"] if n.endswith("-server-error-rate"))
    world.cw.transition(rate, "INSUFFICIENT_DATA", "ALARM", "Threshold Crossed: 1 datapoint [40.0]")
    world.cw.transition(rate, "ALARM", "OK", "Threshold Crossed: 1 datapoint [0.0]")

    checked = release.check(shifted, world.clients)

    assert checked["healthy"] is False
    assert checked["cause"]["alarm"] == rate
    assert checked["cause"]["reason"] == "Threshold Crossed: 1 datapoint [40.0]"


def _emit(world: World, at: datetime, **counts: float) -> None:
    """What the inference handler's EMF puts into CloudWatch for the candidate (model, version) at ``at``:
    ``Requests``/``ServerErrors`` sums, and one ``PredictionScore`` sample per answered request."""
    dims = [{"Name": "model", "Value": MODEL}, {"Name": "version", "Value": str(world.v2)}]
    data = []
    for name in ("Requests", "ServerErrors"):
        if counts.get(name):
            data.append({"MetricName": name, "Dimensions": dims, "Timestamp": at, "Value": counts[name]})
    if counts.get("scores"):
        n = int(counts["scores"])
        data.append(
            {
                "MetricName": "PredictionScore",
                "Dimensions": dims,
                "Timestamp": at,
                "StatisticValues": {"SampleCount": n, "Sum": 0.3 * n, "Minimum": 0.3, "Maximum": 0.3},
            }
        )
    world.cw.client.put_metric_data(Namespace="modeldeck", MetricData=data)


def test_a_candidate_answering_only_server_errors_rolls_back_on_the_bakes_evidence(world: World) -> None:
    """Given a canary that answered 20 requests, all 500s, so the handler emitted Requests and ServerErrors
    but no Latency and no PredictionScore, and no alarm ever reached ALARM (read strictly, FILL of a series
    absent from the whole bake gives no datapoint, and missing data does not breach), when the bake is checked,
    then it is unhealthy from the GetMetricData totals, and the timeline and cause carry them."""
    out = world.gate()
    shifted = release.shift(out, world.clients)
    _emit(world, datetime.now(UTC), Requests=20, ServerErrors=20)

    checked = release.check(shifted, world.clients)

    assert checked["healthy"] is False
    assert checked["cause"]["error"] == "evidence"
    assert "20 of its 20 requests in the bake were server errors" in checked["cause"]["reason"]
    assert checked["cause"]["evidence"] == {"requests": 20.0, "server_errors": 20.0, "scores": 0.0}
    event = world.record()["timeline"][-1]
    assert event["event"] == "bake-checked" and event["fired"] == []
    assert event["evidence"]["requests"] == 20.0 and event["evidence"]["server_errors"] == 20.0
    rolled = release.rollback(checked, world.clients)
    assert rolled["outcome"] == "rolled-back" and world.weights() == {"1": 1.0}
    assert world.record()["cause"]["error"] == "evidence"


def test_a_candidate_answering_without_prediction_scores_rolls_back(world: World) -> None:
    """Given a canary that received 20 requests and emitted no prediction score, when the bake is checked,
    then it is unhealthy and says so."""
    out = world.gate()
    shifted = release.shift(out, world.clients)
    _emit(world, datetime.now(UTC), Requests=20)

    checked = release.check(shifted, world.clients)

    assert checked["healthy"] is False
    assert "20 requests in the bake but emitted no prediction score" in checked["cause"]["reason"]


@pytest.mark.parametrize(
    ("counts", "why"),
    [
        ({"Requests": 20, "ServerErrors": 0, "scores": 20}, "every request answered with a score"),
        ({"Requests": 40, "ServerErrors": 1, "scores": 39}, "2.5% server errors, under the 5% limit"),
        ({"Requests": 5, "ServerErrors": 5}, "fewer requests than the policy's minimum of 10: nothing to judge"),
        ({}, "no traffic at all"),
    ],
)
def test_the_bakes_evidence_passes_a_healthy_or_unjudgeable_candidate(
    world: World, counts: dict[str, float], why: str
) -> None:
    """Given a canary's bake totals that show no failure, when checked, then it is healthy (no false rollback)."""
    out = world.gate()
    shifted = release.shift(out, world.clients)
    if counts:
        _emit(world, datetime.now(UTC), **counts)

    checked = release.check(shifted, world.clients)

    assert checked["healthy"] is True, why
    assert "cause" not in checked


def test_a_bake_shorter_than_a_period_plus_the_metric_delay_is_refused_with_the_reason(world: World) -> None:
    """Given a canary with a 60 s alarm period, when released with a 30 s bake, then the gate refuses it,
    saying why, and frees the lock."""
    with pytest.raises(release.ReleaseRefused, match=r"too short: CloudWatch receives .* at least 240 s"):
        world.gate(bake_seconds=30)
    assert world.lock() is None and world.weights() == {"1": 1.0}


def test_a_plan_longer_than_the_execution_timeout_is_refused() -> None:
    """Given a 6 h execution timeout, when a linear plan of 20 one-hour bakes is checked, then it is refused."""
    with pytest.raises(release.ReleaseRefused, match="times out after 360 minutes"):
        release.check_plan_fits("linear", 20, 3600, 60, 6 * 3600)
    release.check_plan_fits("canary", 1, 600, 60, 6 * 3600)


# --- 11.8: each release has alarms of its own ---------------------------------------------------------


def test_each_release_has_its_own_canary_alarms_and_they_are_deleted_when_it_ends(world: World) -> None:
    """Given a release whose canary alarms went to ALARM and which rolled back, when the next release of
    the same model is gated, then its alarms are new ones (INSUFFICIENT_DATA), none is the earlier
    release's, and the earlier release's alarms no longer exist."""
    first = world.gate("rel-a")
    release.shift(first, world.clients)
    for name in first["alarms"]:
        world.cw.client.set_alarm_state(AlarmName=name, StateValue="ALARM", StateReason="earlier release")
    release.rollback({**first, "cause": {"alarm": first["alarms"][0], "reason": "x"}}, world.clients)
    assert world.alarm_names() == []

    second = world.gate("rel-b")

    assert set(second["alarms"]).isdisjoint(first["alarms"])
    assert all(n.startswith(f"modeldeck-dev-{MODEL}-canary-") and len(n) <= 255 for n in second["alarms"])
    # New alarms (AWS starts them in INSUFFICIENT_DATA; moto in OK): none carries the earlier ALARM.
    states = release.alarm_states(world.cw, second["alarms"])
    assert "ALARM" not in {a["StateValue"] for a in states.values()}


# --- 11.9: published versions -------------------------------------------------------------------------


class RecordingLambda:
    """moto's Lambda, recording which waiters were used; with ``snapstart``, the function's configuration
    says SnapStart is on for published versions (moto always answers ApplyOn None)."""

    def __init__(self, client: Any, snapstart: bool = False) -> None:
        self.client = client
        self.snapstart = snapstart
        self.waiters: list[str] = []

    def get_function_configuration(self, **kwargs: Any) -> Any:
        config = self.client.get_function_configuration(**kwargs)
        if self.snapstart:
            config["SnapStart"] = {"ApplyOn": "PublishedVersions", "OptimizationStatus": "On"}
        return config

    def get_waiter(self, name: str) -> Any:
        self.waiters.append(name)
        return self.client.get_waiter(name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def test_a_version_pinning_the_model_version_is_not_reused_after_the_code_changed(world: World) -> None:
    """Given Lambda version 1 pinning v1, when a deploy changes the function's code and v1 is pinned
    again, then a new version is published with the new code and MODEL_VERSION=1."""
    world.lam.update_function_code(FunctionName=FN, ZipFile=world.zip("v2 of the handler"))
    code = world.lam.get_function_configuration(FunctionName=FN)["CodeSha256"]

    version = release.publish_pinned(world.lam, FN, 1)

    published = world.lam.get_function_configuration(FunctionName=FN, Qualifier=version)
    assert version != "1"
    assert published["CodeSha256"] == code and published["Environment"]["Variables"]["MODEL_VERSION"] == "1"
    assert release.publish_pinned(world.lam, FN, 1) == version, "an identical version is reused"


def test_a_version_is_not_reused_after_the_environment_changed(world: World) -> None:
    """Given Lambda version 1 pinning v1, when a deploy changes another environment variable, then pinning v1
    publishes a new version carrying it."""
    env = world.lam.get_function_configuration(FunctionName=FN)["Environment"]["Variables"]
    world.lam.update_function_configuration(FunctionName=FN, Environment={"Variables": {**env, "LOG_LEVEL": "DEBUG"}})

    version = release.publish_pinned(world.lam, FN, 1)

    variables = world.lam.get_function_configuration(FunctionName=FN, Qualifier=version)["Environment"]["Variables"]
    assert version != "1" and variables["LOG_LEVEL"] == "DEBUG" and variables["MODEL_VERSION"] == "1"


def test_with_snapstart_the_version_is_waited_for_until_active(world: World) -> None:
    """Given a function with SnapStart on published versions, when a version is pinned, then Lambda's
    PublishedVersionActive waiter is used before the version is returned."""
    lam = RecordingLambda(world.lam, snapstart=True)

    release.publish_pinned(lam, FN, world.v2)

    assert "published_version_active" in lam.waiters


# --- 11.10: the lock -----------------------------------------------------------------------------------


def test_a_retried_gate_keeps_its_own_lock(world: World) -> None:
    """Given a gate that took the lock, when Step Functions retries the gate of the same execution, then it
    passes again instead of refusing its own release."""
    world.gate("rel-a")
    again = world.gate("rel-a")
    assert again["execution"] == "rel-a" and world.lock()["execution"] == "rel-a"  # type: ignore[index]


def test_a_lock_held_by_a_running_execution_refuses_and_one_left_by_a_dead_execution_is_taken_over(
    world: World,
) -> None:
    """Given release A in flight, then release B is refused; when A's execution has timed out (leaving the
    alias split), then B takes the lock over, A is recorded as abandoned with the reason and the alias
    returns to the live version before B's gate goes on."""
    a = world.gate("rel-a")
    release.shift(a, world.clients)
    with pytest.raises(release.ReleaseRefused, match="already in flight"):
        world.gate("rel-b")

    world.sfn.status[arn("rel-a")] = "TIMED_OUT"
    b = world.gate("rel-b")

    assert world.lock()["execution"] == "rel-b"  # type: ignore[index]
    assert b["live"] == "1" and world.weights() == {"1": 1.0}
    history = release._history(world.clients, MODEL)
    abandoned = next(r for r in history if r["execution"] == "rel-a")
    assert abandoned["outcome"] == "abandoned" and "TIMED_OUT" in abandoned["cause"]["reason"]
    assert any(e["event"] == "lock-taken-over" for e in world.record()["timeline"])


def test_the_refused_path_frees_a_lock_the_gate_took(world: World) -> None:
    """Given a gate that took the lock and then crashed (a Lambda timeout, say), when the state machine's
    Catch runs the refused task, then the lock is free and the record says refused."""
    world.gate("rel-a")
    error = {"Error": "States.Timeout", "Cause": "Task timed out after 600.00 seconds"}
    release.handle(
        {"action": "refused", "event": {"model": MODEL, "version": world.v2, "error": error}, "execution": "rel-a"},
        world.clients,
    )
    assert world.lock() is None
    assert world.record()["outcome"] == "refused"
    assert world.alarm_names() == []


# --- 11.12: operator actions end the release in flight ------------------------------------------------


def test_an_operator_rollback_ends_the_release_and_its_later_tasks_move_no_traffic(world: World) -> None:
    """Given a canary of v2 in flight, when the operator rolls back, then its execution is stopped with the
    reason, the lock is free, the record's latest event is the operator's rollback with its reason; and
    when the bake ends later, its promote refuses to move the alias."""
    a = world.gate("rel-a")
    shifted = release.shift(a, world.clients)

    release.manual_rollback(world.clients, MODEL, FN)
    release.manual_rollback(world.clients, MODEL, FN, to=1)

    assert world.sfn.stopped and world.sfn.stopped[0]["executionArn"] == arn("rel-a")
    assert "modeldeck rollback" in world.sfn.stopped[0]["cause"]
    assert world.lock() is None and world.weights() == {"1": 1.0}
    record = world.record()
    assert record["outcome"] == "rolled-back" and record["cause"]["error"] == "operator"
    assert record["timeline"][-1]["event"] == "operator-rollback" and "--to 1" in record["timeline"][-1]["reason"]
    with pytest.raises(release.ReleaseSuperseded):
        release.promote({**shifted, "done": True}, world.clients)
    assert world.weights() == {"1": 1.0} and world.registry.get_champion(MODEL) == 1


def test_promoting_the_version_in_flight_ends_its_release_as_promoted(world: World) -> None:
    """Given a canary of v2 in flight, when the operator promotes v2, then the release ends early as
    promoted, its execution is stopped and v2 serves everything as champion."""
    a = world.gate("rel-a")
    release.shift(a, world.clients)

    result = release.manual_promote(world.clients, MODEL, FN, world.v2)

    assert "ended early" in result["message"]
    assert world.sfn.status[arn("rel-a")] == "ABORTED" and world.lock() is None
    assert world.record()["outcome"] == "promoted" and world.record()["timeline"][-1]["by"] == "operator"
    assert world.weights() == {a["candidate"]: 1.0} and world.registry.get_champion(MODEL) == world.v2
