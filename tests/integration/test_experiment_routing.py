"""Experiment routing on the local cloud: the live version assigns each scoring request to a variant of the
running experiment (``models/{model}/experiment.json``), scores the champion's, and forwards a challenger's
to that challenger's pinned Lambda version (a synchronous invocation), whose answer the client gets; every
experiment request is captured, by the version that scored it, with its ``experiment`` field."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modeldeck.capture import read_records
from modeldeck.experiments import Experiment, assign, experiment_key, unit_digest
from modeldeck.gateway import proxy_event
from modeldeck.localcloud import LocalCloud, deploy_inference_version, local_cloud
from modeldeck.registry import BASELINE, HOLDOUT, Registry
from tests.fixtures.inference import MODEL, ROW, oip_inputs

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


@pytest.fixture(scope="module")
def cloud(trained_demo: Any) -> Iterator[LocalCloud]:
    """Given a local cloud with the demo model registered as v1, an identical v2, and a v3 whose artifact is
    lost after registration (a faulty challenger: its function cannot load its model)."""
    with local_cloud() as cloud:
        registry = Registry(cloud.client("s3"), cloud.bucket)
        files = {BASELINE: trained_demo.baseline, HOLDOUT: trained_demo.holdout}
        registry.register(trained_demo.card, trained_demo.onnx, files)
        registry.register(replace(trained_demo.card, spec_sha256="2" * 64), trained_demo.onnx, files)
        lost, _ = registry.register(replace(trained_demo.card, spec_sha256="3" * 64), trained_demo.onnx, files)
        cloud.client("s3").delete_object(Bucket=cloud.bucket, Key=f"models/{MODEL}/{lost.version}/model.onnx")
        try:
            yield cloud
        finally:
            cloud.client("s3").delete_object(Bucket=cloud.bucket, Key=experiment_key(MODEL))


def deploy(cloud: LocalCloud, function: str, versions: tuple[int, ...]) -> list[str]:
    """A function whose alias ``live`` serves the first model version, with the others published beside it
    (as ``publish_pinned`` leaves a challenger); a 0% capture sample, so only experiment requests are
    captured. Returns the Lambda versions."""
    qualifiers = [
        deploy_inference_version(cloud, MODEL, v, function_name=function, environment={"CAPTURE_SAMPLE_RATE": "0"})[1]
        for v in versions
    ]
    cloud.client("lambda").update_alias(
        FunctionName=function,
        Name="live",
        FunctionVersion=qualifiers[0],
        RoutingConfig={"AdditionalVersionWeights": {}},
    )
    return qualifiers


def start(cloud: LocalCloud, function: str, exp_id: str, variants: list[tuple[str, int, str]]) -> Experiment:
    """What ``modeldeck experiment start`` writes: a 50/50 split on the body field ``user_id``."""
    doc = {
        "id": exp_id,
        "model": MODEL,
        "status": "running",
        "unit_key": {"field": "user_id"},
        "variants": [
            {"name": n, "version": v, "weight": 1 / len(variants), "function_name": function, "qualifier": q}
            for n, v, q in variants
        ],
        "champion": variants[0][0],
        "metric": "conversion",
        "started_at": "2026-11-29T03:00:00Z",
    }
    cloud.client("s3").put_object(Bucket=cloud.bucket, Key=experiment_key(MODEL), Body=json.dumps(doc).encode())
    return Experiment.from_json(doc)


def invoke(cloud: LocalCloud, function: str, path: str, body: Any) -> tuple[int, dict[str, str], dict[str, Any]]:
    """A request through the alias ``live``, as API Gateway sends it: (status, headers, parsed body)."""
    event = proxy_event("POST", path, json.dumps(body).encode(), headers={"content-type": ["application/json"]})
    out = cloud.client("lambda").invoke(FunctionName=function, Qualifier="live", Payload=json.dumps(event).encode())
    assert "FunctionError" not in out, out["Payload"].read()
    response = json.loads(out["Payload"].read())
    headers = {k: str(v) for k, v in (response.get("headers") or {}).items()}
    headers.update({k: ", ".join(map(str, v)) for k, v in (response.get("multiValueHeaders") or {}).items()})
    return response["statusCode"], headers, json.loads(response["body"])


def captured(cloud: LocalCloud, ids: set[str]) -> dict[str, dict[str, Any]]:
    cloud.flush_capture()
    now = datetime.now(UTC)
    records = read_records(
        cloud.client("s3"), cloud.bucket, "capture", MODEL, now - timedelta(hours=1), now + timedelta(minutes=1)
    )
    return {r["id"]: r for r in records if r["id"] in ids}


PREDICT = f"/v1/models/{MODEL}:predict"
INFER = f"/v2/models/{MODEL}/infer"


def test_each_unit_is_answered_and_captured_by_its_variant(cloud: LocalCloud) -> None:
    # Given v1 live (champion A) and the identical v2 published (challenger B), in a running experiment
    live, challenger = deploy(cloud, "exp-route", (1, 2))
    exp = start(cloud, "exp-route", "exp-route-1", [("A", 1, live), ("B", 2, challenger)])
    users = [f"user-{i}" for i in range(8)]
    expected = {u: assign(exp, u) for u in users}
    assert {v.name for v in expected.values()} == {"A", "B"}
    # When each user sends :predict requests (the unit key a top-level field, as a string or a number), OIP
    # infer requests (the unit key in parameters), and a few clients send no key at all
    sent: dict[str, str | None] = {}
    for _ in range(2):
        for u in users:
            status, headers, body = invoke(cloud, "exp-route", PREDICT, {"instances": [ROW], "user_id": u})
            # Then each is answered by its variant's version, marked with its variant
            variant = expected[u]
            assert status == 200, body
            assert headers["X-Model-Version"] == body["model_version"] == str(variant.version)
            assert headers["X-Experiment-Variant"] == variant.name
            sent[body["id"]] = u
    for i, u in enumerate(users[:2]):
        oip = {"id": f"exp-oip-{i}", "inputs": oip_inputs([ROW]), "parameters": {"user_id": u}}
        status, headers, body = invoke(cloud, "exp-route", INFER, oip)
        assert status == 200 and body["model_version"] == str(expected[u].version) and body["id"] == f"exp-oip-{i}"
        sent[body["id"]] = u
    for _ in range(2):
        status, headers, body = invoke(cloud, "exp-route", PREDICT, {"instances": [ROW]})
        # Requests without the key go to the champion, with no variant
        assert status == 200 and body["model_version"] == "1" and "X-Experiment-Variant" not in headers
        sent[body["id"]] = None
    # And every request was captured despite the 0% sample, once, by the version that scored it, with the
    # experiment's id, the variant and the unit's digest (never the raw unit)
    records = captured(cloud, set(sent))
    assert set(records) == set(sent)
    for rid, unit in sent.items():
        record = records[rid]
        assigned = expected[unit] if unit is not None else None
        assert record["experiment"] == {
            "id": "exp-route-1",
            "variant": assigned.name if assigned else None,
            "unit": unit_digest(unit),
        }
        assert record["model_version"] == str(assigned.version if assigned else 1)
        assert record["function_version"] == (assigned.qualifier if assigned else live)
        assert unit is None or unit not in json.dumps(record)
    # And another function's live version (another execution environment, which reads and parses the
    # document on its own) assigns every unit the same way
    deploy(cloud, "exp-route-2", (1,))
    for u in users:
        _, headers, _ = invoke(cloud, "exp-route-2", PREDICT, {"instances": [ROW], "user_id": u})
        assert headers["X-Experiment-Variant"] == expected[u].name


def test_a_failing_challenger_gives_its_clients_its_error_never_the_champions_answer(cloud: LocalCloud) -> None:
    # Given a challenger whose model cannot be loaded (v3: its artifact is lost) against the v1 champion
    live, faulty = deploy(cloud, "exp-faulty", (1, 3))
    exp = start(cloud, "exp-faulty", "exp-faulty-1", [("A", 1, live), ("B", 3, faulty)])
    users = [f"user-{i}" for i in range(10)]
    assert {assign(exp, u).name for u in users} == {"A", "B"}
    ids = set()
    for u in users:
        status, headers, body = invoke(cloud, "exp-faulty", PREDICT, {"instances": [ROW], "user_id": u})
        if assign(exp, u).name == "A":
            assert status == 200 and body["model_version"] == "1"
            ids.add(body["id"])
        else:
            # Then the challenger's units get the challenger's own 5xx JSON error, naming it
            assert status == 503 and "model breast-cancer v3 is not ready" in body["error"], body
            assert headers["X-Model-Version"] == "3" and headers["X-Experiment-Variant"] == "B"
            assert "Retry-After" in headers
    # And the errors are counted as the challenger version's ServerErrors (its own EMF), not the champion's
    assert _server_errors(cloud, "3") == sum(assign(exp, u).name == "B" for u in users)
    assert _server_errors(cloud, "1") == 0
    assert all(r["experiment"]["variant"] == "A" for r in captured(cloud, ids).values())


def test_a_challenger_that_cannot_be_invoked_is_a_502_naming_it(cloud: LocalCloud) -> None:
    # Given an experiment whose challenger names a function that does not exist (the variant gives no response)
    (live,) = deploy(cloud, "exp-missing", (1,))
    exp = start(cloud, "exp-missing", "exp-missing-1", [("A", 1, live), ("B", 2, "9")])
    doc = {**exp.to_json()}
    doc["variants"][1]["function_name"] = "no-such-function"
    cloud.client("s3").put_object(Bucket=cloud.bucket, Key=experiment_key(MODEL), Body=json.dumps(doc).encode())
    user = next(u for u in (f"user-{i}" for i in range(100)) if assign(exp, u).name == "B")
    # When its unit sends a request
    status, headers, body = invoke(cloud, "exp-missing", PREDICT, {"instances": [ROW], "user_id": user})
    # Then the client gets a 502 naming the variant, counted as that version's server error
    # (Lambda's Invoke API answers ResourceNotFoundException; the local cloud reports it as a function error)
    assert status == 502 and headers["X-Experiment-Variant"] == "B"
    assert body["error"].startswith("the experiment's variant B (model v2)"), body
    assert "no-such-function" in body["error"] or "could not be invoked" in body["error"]
    assert _server_errors(cloud, "2") == 1


def _server_errors(cloud: LocalCloud, version: str) -> int:
    """ServerErrors the functions' EMF lines recorded for a model version (before CloudWatch's delay)."""
    deadline = time.monotonic() + 2.0
    total = 0
    while time.monotonic() < deadline:
        total = 0
        for _, blob in list(cloud.lambdas._emf):
            if blob.get("version") == version and blob.get("model") == MODEL and "ServerErrors" in blob:
                total += int(sum(blob["ServerErrors"]))
        if total:
            break
        time.sleep(0.05)
    return total
