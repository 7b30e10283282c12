"""Shadow mirroring on the local cloud: the live version copies each scored request to the candidate named
in ``models/{model}/shadow.json`` as an asynchronous invocation; the candidate only captures it, under the
live request's id, and ``release.shadow_report`` pairs the two."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modeldeck.capture import read_records
from modeldeck.gateway import proxy_event
from modeldeck.localcloud import LocalCloud, deploy_inference_version, local_cloud
from modeldeck.registry import BASELINE, HOLDOUT, Registry, utcnow
from modeldeck.release import shadow_report
from modeldeck.serving import shadow_key
from tests.fixtures.inference import MALIGNANT_ROW, MODEL, ROW, oip_inputs

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


@pytest.fixture(scope="module")
def cloud(trained_demo: Any) -> Iterator[LocalCloud]:
    """Given a local cloud with the demo model registered twice (v1 and an identical v2)."""
    with local_cloud() as cloud:
        registry = Registry(cloud.client("s3"), cloud.bucket)
        files = {BASELINE: trained_demo.baseline, HOLDOUT: trained_demo.holdout}
        registry.register(trained_demo.card, trained_demo.onnx, files)
        registry.register(replace(trained_demo.card, spec_sha256="2" * 64), trained_demo.onnx, files)
        yield cloud


def deploy(cloud: LocalCloud, function: str, **env: str) -> tuple[str, str]:
    """A function with v1 live on its alias and v2 published beside it (not on the alias); each test gets
    its own function, so its execution environments (and their shadow.json caches) start cold."""
    _, live = deploy_inference_version(cloud, MODEL, 1, function_name=function, environment=env)
    _, candidate = deploy_inference_version(cloud, MODEL, 2, function_name=function, environment=env)
    cloud.client("lambda").update_alias(
        FunctionName=function, Name="live", FunctionVersion=live, RoutingConfig={"AdditionalVersionWeights": {}}
    )
    return live, candidate


def start_shadow(cloud: LocalCloud, function: str, qualifier: str) -> None:
    """What the release state machine's ``shadow`` action writes."""
    doc = {
        "function_name": function,
        "qualifier": qualifier,
        "model_version": 2,
        "execution": "test",
        "started_at": utcnow(),
    }
    cloud.client("s3").put_object(Bucket=cloud.bucket, Key=shadow_key(MODEL), Body=json.dumps(doc).encode())


def stop_shadow(cloud: LocalCloud) -> None:
    cloud.client("s3").delete_object(Bucket=cloud.bucket, Key=shadow_key(MODEL))


def invoke(
    cloud: LocalCloud, function: str, method: str, path: str, body: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A request through the alias ``live``, as API Gateway sends it; returns (response, parsed body)."""
    event = proxy_event(method, path, json.dumps(body).encode(), headers={"content-type": ["application/json"]})
    out = cloud.client("lambda").invoke(FunctionName=function, Qualifier="live", Payload=json.dumps(event).encode())
    assert "FunctionError" not in out, out["Payload"].read()
    response = json.loads(out["Payload"].read())
    return response, json.loads(response["body"])


def captured(cloud: LocalCloud, ids: set[str], *, shadows: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Capture records of ``ids``, waiting until ``shadows`` shadow records have arrived (async invokes)."""
    deadline = time.monotonic() + timeout
    while True:
        cloud.flush_capture()
        now = datetime.now(UTC)
        records = [
            r
            for r in read_records(
                cloud.client("s3"), cloud.bucket, "capture", MODEL, now - timedelta(hours=1), now + timedelta(minutes=1)
            )
            if r["id"] in ids
        ]
        if sum(bool(r["shadow"]) for r in records) >= shadows or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def test_without_shadow_json_nothing_is_mirrored(cloud: LocalCloud) -> None:
    # Given no shadow.json and a 0% capture sample
    stop_shadow(cloud)
    deploy(cloud, "shadow-off", CAPTURE_SAMPLE_RATE="0")
    # When requests arrive
    ids = {
        invoke(cloud, "shadow-off", "POST", f"/v1/models/{MODEL}:predict", {"instances": [ROW]})[1]["id"]
        for _ in range(5)
    }
    time.sleep(0.3)
    # Then nothing is mirrored, and sampling applies as usual (nothing captured)
    assert captured(cloud, ids, shadows=0, timeout=0) == []
    assert ("shadow-off", "2") not in cloud.lambdas._envs  # the candidate never ran


def test_live_requests_pair_with_shadow_records_by_id(cloud: LocalCloud) -> None:
    # Given v1 live, the identical v2 as the shadow candidate, and a 0% capture sample on both
    live, candidate = deploy(cloud, "shadow-on", CAPTURE_SAMPLE_RATE="0")
    start = utcnow()
    start_shadow(cloud, "shadow-on", candidate)
    # When predict and OIP infer requests go through the live alias
    ids, replies = set(), []
    for i in range(6):
        rows = [ROW, MALIGNANT_ROW][: 1 + i % 2]
        response, body = invoke(cloud, "shadow-on", "POST", f"/v1/models/{MODEL}:predict", {"instances": rows})
        replies.append(body)
        ids.add(body["id"])
        assert response["statusCode"] == 200 and body["model_version"] == "1"
    response, body = invoke(
        cloud,
        "shadow-on",
        "POST",
        f"/v2/models/{MODEL}/infer",
        {"id": "oip-shadow-1", "inputs": oip_inputs([MALIGNANT_ROW])},
    )
    assert response["statusCode"] == 200 and body["id"] == "oip-shadow-1"
    ids.add("oip-shadow-1")
    # Then every request has a live record (captured despite the 0% sample) and a shadow record, same id
    records = captured(cloud, ids, shadows=len(ids))
    live_records = {r["id"]: r for r in records if not r["shadow"]}
    shadow_records = {r["id"]: r for r in records if r["shadow"]}
    assert set(live_records) == set(shadow_records) == ids
    for rid in ids:
        a, b = live_records[rid], shadow_records[rid]
        assert (a["model_version"], a["function_version"]) == ("1", live)
        assert (b["model_version"], b["function_version"]) == ("2", candidate)
        assert a["features"] == b["features"] and a["outputs"]["label"] == b["outputs"]["label"]
        assert b["latency_ms"] > 0
    for body in replies:
        assert live_records[body["id"]]["outputs"]["label"] == body["predictions"]
    # And the release's shadow report agrees fully over the window's pairs
    stop_shadow(cloud)
    report = shadow_report(Registry(cloud.client("s3"), cloud.bucket), MODEL, start, utcnow())
    assert report["pairs"] == len(ids) and report["rows"] == 3 * 1 + 3 * 2 + 1  # predict rows + one infer row
    assert report["agreement"] == 1.0 and report["shadow_p50_ms"] is not None


def test_invalid_requests_are_not_mirrored(cloud: LocalCloud) -> None:
    _, candidate = deploy(cloud, "shadow-invalid")
    start_shadow(cloud, "shadow-invalid", candidate)
    try:
        response, _ = invoke(cloud, "shadow-invalid", "POST", f"/v1/models/{MODEL}:predict", {"instances": []})
        assert response["statusCode"] == 400
        time.sleep(0.3)
        assert ("shadow-invalid", candidate) not in cloud.lambdas._envs
    finally:
        stop_shadow(cloud)


@pytest.mark.parametrize("failure", ["candidate's model is lost", "no such function"])
def test_a_failing_candidate_does_not_affect_the_live_response(
    cloud: LocalCloud, trained_demo: Any, failure: str
) -> None:
    # Given a shadow target that fails (its model's artifact is gone, so it cannot load it; or it does not exist)
    function = f"shadow-fail-{failure.split()[0].replace(chr(39), '')}"
    live, _ = deploy(cloud, function)
    if failure == "candidate's model is lost":
        registry = Registry(cloud.client("s3"), cloud.bucket)
        files = {BASELINE: trained_demo.baseline, HOLDOUT: trained_demo.holdout}
        lost, _ = registry.register(replace(trained_demo.card, spec_sha256="3" * 64), trained_demo.onnx, files)
        _, candidate = deploy_inference_version(cloud, MODEL, lost.version, function_name=function)
        cloud.client("lambda").update_alias(
            FunctionName=function, Name="live", FunctionVersion=live, RoutingConfig={"AdditionalVersionWeights": {}}
        )
        cloud.client("s3").delete_object(Bucket=cloud.bucket, Key=f"models/{MODEL}/{lost.version}/model.onnx")
        start_shadow(cloud, function, candidate)
    else:
        start_shadow(cloud, "no-such-function", "7")
    try:
        # When requests arrive
        ids = set()
        for _ in range(3):
            response, body = invoke(cloud, function, "POST", f"/v1/models/{MODEL}:predict", {"instances": [ROW]})
            # Then the live answers are unaffected, and captured without a pair
            assert response["statusCode"] == 200 and body["predictions"] == ["benign"]
            ids.add(body["id"])
        time.sleep(0.3)
        records = captured(cloud, ids, shadows=0, timeout=0)
        assert {r["id"] for r in records if not r["shadow"]} == ids
        assert not any(r["shadow"] for r in records)
        if failure == "candidate's model is lost":
            assert (function, candidate) in cloud.lambdas._envs  # the mirror did reach the candidate
    finally:
        stop_shadow(cloud)
