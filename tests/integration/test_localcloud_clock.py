"""The local cloud's virtual clock: Step Functions waits, Lambda's timing and metrics follow it, fast."""

from __future__ import annotations

import io
import json
import time
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from modeldeck import registry
from modeldeck.localcloud import LocalCloud, local_cloud
from modeldeck.localcloud.lambda_runtime import LambdaTimeout

FIXTURES = "tests.fixtures.clock_handlers"


def stub_function(cloud: LocalCloud, name: str, handler: str, timeout: int = 3) -> str:
    """A function running ``tests.fixtures.clock_handlers.<handler>`` (its zip is a stub), by ARN."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("stub", "")
    return str(
        cloud.client("lambda").create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=cloud.deployer._role(),
            Handler=f"{FIXTURES}.{handler}",
            Code={"ZipFile": buf.getvalue()},
            Timeout=timeout,
        )["FunctionArn"]
    )


def _function(cloud: LocalCloud, name: str, handler: str, timeout: int = 3) -> None:
    stub_function(cloud, name, handler, timeout)
    lam = cloud.client("lambda")
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version)


def _machine(cloud: LocalCloud, seconds: int) -> str:
    definition = {
        "StartAt": "Bake",
        "States": {"Bake": {"Type": "Wait", "Seconds": seconds, "Next": "Done"}, "Done": {"Type": "Pass", "End": True}},
    }
    return str(
        cloud.client("stepfunctions").create_state_machine(
            name=f"wait-{seconds}", roleArn=cloud.deployer._role(), definition=json.dumps(definition)
        )["stateMachineArn"]
    )


def _finish(cloud: LocalCloud, execution: str, wall_limit: float = 10.0) -> dict[str, Any]:
    sfn = cloud.client("stepfunctions")
    deadline = time.monotonic() + wall_limit
    while time.monotonic() < deadline:
        described = sfn.describe_execution(executionArn=execution)
        if described["status"] != "RUNNING":
            return dict(described)
        time.sleep(0.01)
    raise AssertionError("the execution did not finish")


def _lambda_sum(cloud: LocalCloud, metric: str, function: str) -> float:
    now = cloud.clock.now()
    points = cloud.client("cloudwatch").get_metric_statistics(
        Namespace="AWS/Lambda",
        MetricName=metric,
        Dimensions=[{"Name": "FunctionName", "Value": function}],
        StartTime=now - timedelta(minutes=30),
        EndTime=now + timedelta(minutes=1),
        Period=60,
        Statistics=["Sum", "Maximum"],
    )["Datapoints"]
    return sum(p["Sum"] for p in points)


def test_a_ten_minute_wait_state_passes_in_virtual_time_within_a_second_or_two(cloud: LocalCloud) -> None:
    # Given a state machine whose Wait state bakes for ten minutes
    machine = _machine(cloud, 600)
    started_virtual, started_wall = cloud.clock.now(), time.monotonic()
    # When it runs
    execution = cloud.client("stepfunctions").start_execution(stateMachineArn=machine)["executionArn"]
    described = _finish(cloud, execution)
    # Then ten virtual minutes passed, in little wall time
    wall = time.monotonic() - started_wall
    assert described["status"] == "SUCCEEDED"
    assert cloud.clock.now() - started_virtual >= timedelta(seconds=600)
    assert wall < 3.0, f"a 10-minute bake took {wall:.1f} s of wall time"


def test_the_clock_does_not_jump_while_a_participant_is_busy_and_a_stop_ends_a_wait(cloud: LocalCloud) -> None:
    # Given a participant that holds the clock (a test driving traffic) and an execution in a one-hour Wait
    sfn = cloud.client("stepfunctions")
    machine = _machine(cloud, 3600)
    with cloud.clock.participant():
        before = cloud.clock.now()
        execution = sfn.start_execution(stateMachineArn=machine)["executionArn"]
        time.sleep(0.3)
        # Then virtual time only flows with wall time while the participant works
        assert cloud.clock.now() - before < timedelta(seconds=5)
        assert sfn.describe_execution(executionArn=execution)["status"] == "RUNNING"
        # When the execution is stopped during its wait
        sfn.stop_execution(executionArn=execution)
        # Then it ends at once, as on AWS
        assert _finish(cloud, execution)["status"] == "ABORTED"


def test_lambda_metrics_reach_cloudwatch_after_the_ingestion_delay(cloud: LocalCloud) -> None:
    # Given a function invoked once
    _function(cloud, "sleepy", "sleepy")
    cloud.lambdas.invoke("sleepy", "live", {})
    # When one virtual minute has passed, then three
    cloud.clock.advance(60)
    seen_after_one = _lambda_sum(cloud, "Invocations", "sleepy")
    cloud.clock.advance(120)
    # Then the invocation is only counted once the (two-minute) delay is over, at one-minute resolution
    assert seen_after_one == 0
    assert _lambda_sum(cloud, "Invocations", "sleepy") == 1
    now = cloud.clock.now()
    points = cloud.client("cloudwatch").get_metric_statistics(
        Namespace="AWS/Lambda",
        MetricName="Invocations",
        Dimensions=[{"Name": "FunctionName", "Value": "sleepy"}],
        StartTime=now - timedelta(minutes=30),
        EndTime=now,
        Period=60,
        Statistics=["Sum"],
    )["Datapoints"]
    assert [p["Timestamp"].second for p in points] == [0]


def test_errors_count_crashes_and_not_500_responses(cloud: LocalCloud) -> None:
    # Given a function that answers 500 and one that crashes
    _function(cloud, "answers-500", "answers_500")
    _function(cloud, "crashes", "crashes")
    # When each is invoked twice
    for _ in range(2):
        assert cloud.lambdas.invoke("answers-500", "live", {})[0]["statusCode"] == 500
        with pytest.raises(RuntimeError, match="crashed"):
            cloud.lambdas.invoke("crashes", "live", {})
    cloud.clock.advance(180)
    # Then only the crashes are Lambda Errors
    assert _lambda_sum(cloud, "Invocations", "answers-500") == 2
    assert _lambda_sum(cloud, "Errors", "answers-500") == 0
    assert _lambda_sum(cloud, "Errors", "crashes") == 2


def test_a_handler_sleeping_past_its_timeout_times_out_on_the_virtual_clock(cloud: LocalCloud) -> None:
    # Given a function with a 3 s timeout whose handler sleeps
    _function(cloud, "sleepy", "sleepy", timeout=3)
    jumped = cloud.clock.jumped
    # When it sleeps within its timeout, then past it (through the Invoke API, as Step Functions calls it)
    within = cloud.lambdas.invoke("sleepy", "live", {"sleep": 2})[0]
    with pytest.raises(LambdaTimeout, match=r"Task timed out after 3\.00 seconds"):
        cloud.lambdas.invoke("sleepy", "live", {"sleep": 30})
    response = cloud.client("lambda").invoke(FunctionName="sleepy", Qualifier="live", Payload=b'{"sleep": 30}')
    # Then the handler saw its remaining time shrink, the overrun is a timeout error, and the clock jumped over
    # the sleeps (2 s, then 3 s twice) rather than spending them in wall time
    assert 0 < within["remaining_ms"] <= 1000
    assert response["FunctionError"] == "Unhandled"
    assert "Task timed out after 3.00 seconds" in json.loads(response["Payload"].read())["errorMessage"]
    assert cloud.clock.jumped - jumped >= 0.9 * 8
    cloud.clock.advance(180)
    assert _lambda_sum(cloud, "Errors", "sleepy") == 2


def test_duration_excludes_the_init_phase(cloud: LocalCloud) -> None:
    # Given a function whose init phase takes 0.3 s (the fixture module sleeps when imported)
    _function(cloud, "fast", "answers_500")
    # When its first (cold) invocation runs
    cloud.lambdas.invoke("fast", "live", {})
    cloud.clock.advance(180)
    now = cloud.clock.now()
    points = cloud.client("cloudwatch").get_metric_statistics(
        Namespace="AWS/Lambda",
        MetricName="Duration",
        Dimensions=[{"Name": "FunctionName", "Value": "fast"}],
        StartTime=now - timedelta(minutes=30),
        EndTime=now,
        Period=600,
        Statistics=["Maximum"],
    )["Datapoints"]
    # Then its Duration is the handler's own time only
    assert len(points) == 1 and points[0]["Maximum"] < 300


def test_release_and_registry_records_are_stamped_with_virtual_time(cloud: LocalCloud) -> None:
    # Given a local cloud whose clock has run an hour ahead of the host's
    cloud.clock.advance(3600)
    # When the registry stamps a record
    stamped = registry.utcnow()
    # Then the stamp is the cloud's time
    from modeldeck.capture import parse_ts

    assert abs((parse_ts(stamped) - cloud.clock.now()).total_seconds()) < 5


def test_virtual_time_never_runs_backwards_between_commands(tmp_path: Path) -> None:
    # Given a command whose cloud ran two hours ahead of the host clock
    with local_cloud(tmp_path) as cloud:
        cloud.clock.advance(7200)
        left_at = cloud.clock.now()
    # When the next command restores the state
    with local_cloud(tmp_path) as cloud:
        # Then its clock starts where the last one stopped, not at the host's time
        assert cloud.clock.now() >= left_at


def test_capture_is_delivered_within_firehoses_interval_on_the_virtual_clock(cloud: LocalCloud) -> None:
    # Given a cloud an hour ahead of the host clock, and a function whose log group feeds the capture stream
    from datetime import UTC, datetime

    from modeldeck.capture import parse_ts
    from modeldeck.localcloud.lambda_runtime import capture_delivery

    cloud.clock.advance(3600)
    capture_delivery(cloud, "clock-capture")
    # When the function writes a capture record stamped with the host's time, and two virtual minutes pass
    stamped = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    line = json.dumps({"kind": "capture", "model": "m", "id": "r1", "ts": stamped})
    cloud.logs.put("clock-capture", line, cloud.clock.time())
    cloud.clock.advance(121)
    # Then Firehose has delivered it (the subscription's batch at the next minute, then the 60 s buffering
    # interval), stamped with the cloud's time
    keys = [k for k in cloud.firehose.delivered if k.startswith("capture/m/")]
    assert len(keys) == 1
    record = json.loads(cloud.client("s3").get_object(Bucket=cloud.bucket, Key=keys[0])["Body"].read())
    assert abs((parse_ts(record["ts"]) - (cloud.clock.now() - timedelta(seconds=121))).total_seconds()) < 5


def test_a_closing_cloud_wakes_its_sleepers_instead_of_leaving_them_to_wall_time() -> None:
    # A thread a closing cloud leaves behind (an asynchronous invocation mid-sleep) must not sleep on in wall time:
    # during a cold start it holds the process-wide environment lock, which stalled the next cloud's cold starts.
    import threading

    from modeldeck.localcloud.clock import VirtualClock

    clock = VirtualClock()
    clock.start()
    clock.acquire("busy")  # work in progress: the clock cannot jump to the sleeper's wake-up
    woke = threading.Event()
    sleeper = threading.Thread(target=lambda: (clock.sleep(3600), woke.set()), daemon=True)
    sleeper.start()
    time.sleep(0.1)
    assert not woke.is_set()
    clock.stop()
    assert woke.wait(5), "the sleeper still sleeps in wall time after the clock stopped"
