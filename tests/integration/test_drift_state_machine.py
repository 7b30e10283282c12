"""The drift job as the deployed state machine (the template's ASL: Plan, a Distributed Map with ItemBatcher over
the window's capture hours, Reduce) gives the result the in-process job gives on the same capture."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import numpy as np
import pytest

from modeldeck import drift
from modeldeck.localcloud import local_cloud
from modeldeck.registry import BASELINE, Registry
from modeldeck.stats import DriftThresholds
from tests.fixtures.gateway import app_templates
from tests.integration.test_drift_job import END, MODEL, make_requests, put_firehose, register

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")
HOURS = 3
MONITORING_STACKS = ("modeldeck: S3 model registry", "modeldeck: drift job")


@pytest.fixture(scope="module")
def deployed(trained_demo: Any) -> Iterator[Any]:
    """Given the registry and monitoring stacks' templates deployed and the demo model's v1 registered."""
    stacks = [t for t in app_templates() if t.get("Description", "").startswith(MONITORING_STACKS)]
    with local_cloud(templates=stacks) as cloud:
        register(Registry(cloud.client("s3"), cloud.bucket), trained_demo, "a")
        yield cloud


def run_machine(cloud: Any, request: dict[str, Any]) -> dict[str, Any]:
    sfn = cloud.client("stepfunctions")
    arn = cloud.deployer.outputs["DriftStateMachineArn"]
    name = f"drift-{uuid.uuid4().hex[:12]}"
    execution = sfn.start_execution(stateMachineArn=arn, name=name, input=json.dumps(request))["executionArn"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        described = sfn.describe_execution(executionArn=execution)
        if described["status"] != "RUNNING":
            return dict(described)
        time.sleep(0.05)
    raise AssertionError("the drift execution did not finish")


def comparable(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in ("published", "replayed")}


def test_the_state_machine_judges_a_window_as_the_single_process_job_does(deployed: Any) -> None:
    # Given three hours of capture for v1, the last hour drifted (worst_radius 2x), a duplicate delivery,
    # and feedback labels for some requests (one answering a request from before the window)
    s3, bucket = deployed.client("s3"), deployed.bucket
    registry = Registry(s3, bucket)
    baseline = registry.get_json(MODEL, 1, BASELINE)
    rng = np.random.default_rng(11)
    start = END - timedelta(hours=HOURS)
    records = []
    for h in range(HOURS):
        batch = make_requests(
            baseline, 1, 40, 5, rng, id_prefix=f"h{h}-", scale={"worst_radius": 2.0} if h == 2 else None
        )
        for r in batch:
            r["ts"] = (start + timedelta(hours=h) + timedelta(seconds=int(r["id"].rsplit("-", 1)[1]) * 60)).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ"
            )
        records += batch
    earlier = make_requests(baseline, 1, 2, 5, rng, id_prefix="early-")
    for r in earlier:
        r["ts"] = (start - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    put_firehose(s3, bucket, "capture", records + earlier, "b1")
    put_firehose(s3, bucket, "capture", records[:10], "b1-redelivered")
    labelled = [r for r in records[::7]] + earlier[:1]
    feedback = [
        {
            "kind": "feedback",
            "model": MODEL,
            "id": r["id"],
            "ts": (END - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "label": r["outputs"]["label"],
        }
        for r in labelled
    ]
    put_firehose(s3, bucket, "feedback", feedback, "f1")
    # When the single-process job evaluates the window, and the deployed state machine runs it
    expected = drift.evaluate_window(s3, bucket, MODEL, start, END, DriftThresholds(), min_labeled_rows=10)
    described = run_machine(deployed, {"model": MODEL, "window": f"{HOURS}h", "end": drift.iso(END)})
    # Then the execution succeeded, and its stored result is the single-process result
    assert described["status"] == "SUCCEEDED", described
    (summary,) = json.loads(described["output"])["results"]
    stored = drift.load_result(s3, bucket, drift.marker_key(MODEL, start, END))
    assert stored is not None and stored["published"]["metrics"] > 0
    assert comparable(stored) == comparable(expected)
    assert stored["rows"] == HOURS * 40 * 5 and stored["requests"] == HOURS * 40
    assert "worst_radius" in stored["versions"]["1"]["drifted_features"] and summary["alarm"] is True
    # and its intermediate profiles are gone
    assert s3.list_objects_v2(Bucket=bucket, Prefix=drift.WORK_PREFIX).get("KeyCount", 0) == 0
    # and a second run of the window is a replay: nothing judged or published again
    again = run_machine(deployed, {"model": MODEL, "window": f"{HOURS}h", "end": drift.iso(END)})
    assert json.loads(again["output"])["results"][0]["replayed"] is True
