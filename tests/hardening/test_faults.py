"""Injected faults the existing suites did not cover yet (docs/reliability.md lists every fault and its test).

- A missing artifact or a missing card: never served (503) and refused by the release gate.
- SNS throttling while the drift job publishes its alarm message: retried by the SDK (standard retry mode,
  ``modeldeck.aws``); a re-run of the window publishes nothing again (idempotent per window), even after a
  run that crashed before its marker was written. CloudWatch PutMetricData throttled: retried the same way.
- S3 throttling (SlowDown) while registering: retried by the SDK; a call is attempted at most
  ``modeldeck.aws.MAX_ATTEMPTS`` times, never retries of retries.
- A registration that fails part-way, retried with the same content: one version, no partial one visible.
- A release whose alias updates fail for good, rollback included: the alias is never split without an owner.
- Duplicate capture and feedback deliveries: read once, by id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from types import SimpleNamespace
from typing import Any
from unittest import mock

import numpy as np
import pytest
from botocore.exceptions import ClientError

from modeldeck import aws, drift, release
from modeldeck.capture import read_records
from modeldeck.errors import RegistryError
from modeldeck.registry import BASELINE, CARD, HOLDOUT, MODEL, Registry
from tests.hardening.conftest import record_figures
from tests.integration.test_drift_job import END, START, make_requests, put_firehose, register
from tests.integration.test_drift_job import MODEL as DRIFT_MODEL
from tests.integration.test_release import World, pinned

FAULTS: dict[str, int] = {}


def injected(kind: str, n: int = 1) -> None:
    """Count an injected fault (kept in build/hardening/faults.json for docs/reliability.md)."""
    FAULTS[kind] = FAULTS.get(kind, 0) + n
    record_figures("faults", {kind: FAULTS[kind]})


# --- missing artifact / missing card (serving: tests/hardening/test_faults_serving.py) ----------------


@pytest.mark.parametrize("missing", [MODEL, CARD])
def test_the_release_gate_refuses_a_version_missing_its_artifact_or_card(world: World, missing: str) -> None:
    # Given v1 live and v2 registered, then v2's artifact (or card) deleted
    world.release(world.register())
    v2 = world.register("2")
    world.registry.s3.delete_object(Bucket=world.registry.bucket, Key=f"models/breast-cancer/{v2}/{missing}")
    injected(f"missing {missing} (release)")
    # When v2 is released
    result = world.release(v2)
    # Then the release fails at the gate: v1 keeps all traffic, no Lambda version was published for v2
    assert result["status"] == "FAILED"
    assert world.weights() == {"1": 1.0} and len(pinned(world)) == 1
    assert world.record()["outcome"] != "promoted"
    assert release.read_json(world.registry, "releases/breast-cancer/lock.json") is None


# --- a release whose alias updates fail for good ---------------------------------------------------------


@pytest.mark.slow
def test_when_even_the_rollback_fails_the_alias_keeps_an_owner_until_lambda_recovers(world: World) -> None:
    import time

    from moto.awslambda.exceptions import LambdaClientError
    from moto.awslambda.models import LambdaBackend

    # Given v1 live, and Lambda's UpdateAlias failing for every caller (shift, retries and rollback)
    world.release(world.register())
    original, outage = LambdaBackend.update_alias, {"on": True, "failed": 0}

    def update_alias(self: Any, *args: Any, **kwargs: Any) -> Any:
        if outage["on"]:
            outage["failed"] += 1
            error = LambdaClientError("TooManyRequestsException", "Rate exceeded")
            error.code = 429
            raise error
        return original(self, *args, **kwargs)

    seen: list[tuple[dict[str, float], bool]] = []

    def observe() -> None:
        lock = release.read_json(world.registry, "releases/breast-cancer/lock.json")
        seen.append((world.weights(), lock is not None))

    with mock.patch.object(LambdaBackend, "update_alias", update_alias):
        execution = world.start(world.register("2"))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the outage lasts 5 s
            observe()
            time.sleep(0.1)
        outage["on"] = False
        result = world.wait(execution, during=observe, timeout=120)
    injected("UpdateAlias throttled for 5 s (release + rollback)", outage["failed"])
    # Then at every observation the alias was whole on v1, or split while the release still held the lock
    assert all(weights == {"1": 1.0} or locked for weights, locked in seen), seen
    # And once Lambda recovered the release finished either way (its retries outlast a 5 s outage, so it is
    # usually promoted): one version owns all traffic and the alias is free
    assert result["status"] in ("SUCCEEDED", "FAILED")
    assert world.weights() in ({"1": 1.0}, {"2": 1.0})
    assert release.read_json(world.registry, "releases/breast-cancer/lock.json") is None


# --- registration ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fail_on", [MODEL, BASELINE, CARD])
def test_a_registration_failing_part_way_then_retried_makes_exactly_one_version(
    registry: Registry, trained_demo: Any, fail_on: str
) -> None:
    real_put = registry.s3.put_object

    def failing_put(**kwargs: Any) -> Any:
        if kwargs["Key"].endswith(fail_on):
            raise ClientError({"Error": {"Code": "InternalError", "Message": "boom"}}, "PutObject")
        return real_put(**kwargs)

    files = {BASELINE: trained_demo.baseline, HOLDOUT: trained_demo.holdout}
    with (
        mock.patch.object(registry.s3, "put_object", side_effect=failing_put),
        pytest.raises((ClientError, RegistryError)),
    ):
        registry.register(trained_demo.card, trained_demo.onnx, files)
    injected(f"PutObject {fail_on} fails mid-registration")
    assert registry.list_versions(trained_demo.card.name) == []
    first, created = registry.register(trained_demo.card, trained_demo.onnx, files)
    again, created_again = registry.register(trained_demo.card, trained_demo.onnx, files)
    assert created and not created_again and first.version == again.version
    assert registry.list_versions(trained_demo.card.name) == [first.version]


# --- drift job: SNS failures and idempotency -------------------------------------------------------------


def _drifted_window(cloud: Any, registry: Registry, trained_demo: Any) -> None:
    v1 = register(registry, trained_demo, "a")
    baseline = registry.get_json(DRIFT_MODEL, v1, BASELINE)
    records = make_requests(baseline, v1, 80, 5, np.random.default_rng(11), scale={"worst_radius": 1.5}, flip=True)
    put_firehose(cloud.client("s3"), cloud.bucket, "capture", records, "b1")


@contextmanager
def service_fails(
    backend: type, method: str, error: Callable[[], Exception], failures: int
) -> Iterator[dict[str, Any]]:
    """The service itself (moto's backend) answers ``error`` to the first ``failures`` calls of ``method``.

    The fault reaches the client as AWS's would, so only the SDK's retry mode can survive it. botocore's
    back-off sleeps are recorded instead of slept.
    """
    real = getattr(backend, method)
    seen: dict[str, Any] = {"calls": 0, "sleeps": []}

    def flaky(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen["calls"] += 1
        if seen["calls"] <= failures:
            raise error()
        return real(self, *args, **kwargs)

    with (
        mock.patch.object(backend, method, flaky),
        mock.patch("botocore.endpoint.time", SimpleNamespace(sleep=seen["sleeps"].append)),
    ):
        yield seen


def sns_throttled() -> Exception:
    from moto.sns.exceptions import SNSException

    return SNSException("ThrottledException", "Rate exceeded")  # SNS's throttling error: 429 Throttled


def drift_clients(cloud: Any) -> tuple[Any, Any, Any]:
    """The drift job's clients, configured as its Lambda configures them."""
    return tuple(aws.client(name, region_name=cloud.region) for name in ("s3", "cloudwatch", "sns"))  # type: ignore[return-value]


def test_a_throttled_sns_is_retried_by_the_sdk_and_a_rerun_window_publishes_once(
    cloud: Any, registry: Registry, trained_demo: Any
) -> None:
    from moto.sns.models import SNSBackend

    # Given a drifted hour of capture, and SNS throttling the first two Publish calls
    _drifted_window(cloud, registry, trained_demo)
    topic = cloud.client("sns").create_topic(Name="alerts")["TopicArn"]
    s3, cw, sns = drift_clients(cloud)
    with service_fails(SNSBackend, "publish", sns_throttled, failures=2) as seen:
        # When the drift job runs the window, and then again (a scheduler retry)
        first = drift.run_drift(
            s3, cw, sns, bucket=cloud.bucket, model=DRIFT_MODEL, start=START, end=END, topic_arn=topic
        )
        second = drift.run_drift(
            s3, cw, sns, bucket=cloud.bucket, model=DRIFT_MODEL, start=START, end=END, topic_arn=topic
        )
    injected("SNS Publish throttled", 2)
    # Then the SDK retried twice with back-off, the message went out once, and the re-run replayed
    assert first["aggregate"]["alarm"] and first["published"]["message_id"]
    assert seen["calls"] == 3 and len(seen["sleeps"]) == 2
    assert second["replayed"] and seen["calls"] == 3


def test_a_run_that_crashed_before_its_marker_is_retried_in_full(
    cloud: Any, registry: Registry, trained_demo: Any
) -> None:
    from moto.sns.models import SNSBackend

    # Given SNS throttling for good: the run fails after publishing metrics, before its window marker
    _drifted_window(cloud, registry, trained_demo)
    topic = cloud.client("sns").create_topic(Name="alerts")["TopicArn"]
    s3, cw, sns = drift_clients(cloud)
    window = {"bucket": cloud.bucket, "model": DRIFT_MODEL, "start": START, "end": END, "topic_arn": topic}
    with service_fails(SNSBackend, "publish", sns_throttled, failures=10_000) as down, pytest.raises(ClientError):
        drift.run_drift(s3, cw, sns, **window)
    injected("SNS Publish down for a whole run", down["calls"])
    # (the SDK gave up after its attempts, no more)
    assert down["calls"] == aws.MAX_ATTEMPTS
    assert drift.load_result(s3, cloud.bucket, drift.marker_key(DRIFT_MODEL, START, END)) is None
    # When SNS recovers and the window is retried, twice
    with service_fails(SNSBackend, "publish", sns_throttled, failures=0) as up:
        for _ in range(2):
            drift.run_drift(s3, cw, sns, **window)
    # Then the message went out exactly once
    assert up["calls"] == 1


# moto warns that CloudWatch's Throttling has no error shape in the service model: CloudWatch returns it as a
# common error, which is what botocore retries by its code.
@pytest.mark.filterwarnings("ignore:Exception\\(CloudWatchException\\) with code Throttling:UserWarning")
def test_throttled_put_metric_data_is_retried_by_the_sdk(cloud: Any, registry: Registry, trained_demo: Any) -> None:
    from moto.cloudwatch.exceptions import CloudWatchException
    from moto.cloudwatch.models import CloudWatchBackend

    # Given a window of capture, and CloudWatch throttling the first two PutMetricData calls
    _drifted_window(cloud, registry, trained_demo)
    s3, cw, sns = drift_clients(cloud)
    with service_fails(
        CloudWatchBackend, "put_metric_data", lambda: CloudWatchException("Throttling", "Rate exceeded"), failures=2
    ) as seen:
        # When the drift job runs the window
        result = drift.run_drift(s3, cw, sns, bucket=cloud.bucket, model=DRIFT_MODEL, start=START, end=END)
    injected("PutMetricData throttled", 2)
    # Then the SDK retried, and every datapoint was published
    assert seen["calls"] == 3 and len(seen["sleeps"]) == 2
    assert result["published"]["metrics"] > 0


# --- registry writes under S3 throttling -----------------------------------------------------------------


def s3_slow_down() -> Exception:
    from moto.s3.exceptions import S3ClientError

    return S3ClientError("SlowDown", "Please reduce your request rate.")


def test_a_registration_survives_s3_throttling_through_the_sdk(cloud: Any, trained_demo: Any) -> None:
    from moto.s3.models import S3Backend

    # Given the registry on a client configured as the Lambdas configure theirs, and S3 answering SlowDown
    # to the first two PutObject calls
    registry = Registry(aws.client("s3", region_name=cloud.region), cloud.bucket)
    files = {BASELINE: trained_demo.baseline, HOLDOUT: trained_demo.holdout}
    with service_fails(S3Backend, "put_object", s3_slow_down, failures=2) as seen:
        # When a version is registered
        card, created = registry.register(trained_demo.card, trained_demo.onnx, files)
    injected("S3 PutObject SlowDown during registration", 2)
    # Then it is registered once, complete, after two retries by the SDK
    assert created and registry.list_versions(card.name) == [card.version]
    assert len(seen["sleeps"]) == 2 and seen["calls"] == 2 + 4  # model, baseline, holdout, card


def test_a_throttled_call_is_attempted_at_most_max_attempts_times(cloud: Any, trained_demo: Any) -> None:
    from moto.s3.models import S3Backend

    # Given S3 answering SlowDown to every PutObject
    registry = Registry(aws.client("s3", region_name=cloud.region), cloud.bucket)
    files = {BASELINE: trained_demo.baseline, HOLDOUT: trained_demo.holdout}
    with service_fails(S3Backend, "put_object", s3_slow_down, failures=10_000) as seen, pytest.raises(RegistryError):
        # When a version is registered
        registry.register(trained_demo.card, trained_demo.onnx, files)
    injected("S3 PutObject SlowDown for good", seen["calls"])
    # Then S3 saw MAX_ATTEMPTS calls, not retries of retries (one retry layer: the SDK's), and nothing registered
    assert seen["calls"] == aws.MAX_ATTEMPTS
    assert registry.list_versions(trained_demo.card.name) == []


# --- duplicate deliveries --------------------------------------------------------------------------------


def test_duplicate_capture_and_feedback_deliveries_are_read_once(cloud: Any) -> None:
    s3 = cloud.client("s3")
    base = {
        "kind": "capture",
        "model": "m",
        "model_version": "1",
        "function_version": "1",
        "rows": 1,
        "shadow": False,
        "features": {"x": [1.0]},
        "outputs": {"label": ["a"]},
        "latency_ms": 0.1,
    }
    ts = (START + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    records = [{**base, "id": f"r{i}", "ts": ts} for i in range(50)]
    shadow = [{**r, "shadow": True} for r in records[:10]]
    feedback = [{"kind": "feedback", "model": "m", "id": f"r{i}", "ts": ts, "label": ["a"]} for i in range(50)]
    # Given every batch delivered twice (Firehose is at-least-once), one line three times, plus shadow copies
    from modeldeck.capture import encode_batch, partition_key

    for kind, batch in (("capture", records + shadow), ("feedback", feedback)):
        prefix = partition_key(kind, "m", START + timedelta(minutes=5))
        for copy in ("a", "b"):
            s3.put_object(Bucket=cloud.bucket, Key=f"{prefix}{copy}.jsonl", Body=encode_batch(batch))
        s3.put_object(Bucket=cloud.bucket, Key=f"{prefix}c.jsonl", Body=encode_batch(batch[:1]))
    injected("duplicate deliveries (capture + feedback lines)", 2 * (60 + 50) + 2)
    # When the drift job reads the window
    captured = read_records(s3, cloud.bucket, "capture", "m", START, END)
    labels = read_records(s3, cloud.bucket, "feedback", "m", START, END)
    # Then each request is read once (a shadow copy is its own record), and each label once
    assert len(captured) == 60 and len({(r["id"], r["shadow"]) for r in captured}) == 60
    assert len(labels) == 50
