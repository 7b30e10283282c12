"""The drift job on moto: capture in S3 (as Firehose writes it) → metrics in CloudWatch → SNS message."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from modeldeck import drift
from modeldeck.capture import encode_batch, partition_key
from modeldeck.registry import BASELINE, HOLDOUT, Registry
from modeldeck.stats import DriftThresholds

MODEL = "breast-cancer"
END = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
START = END - timedelta(hours=1)


def register(registry: Registry, trained: Any, tag: str) -> int:
    card = replace(trained.card, spec_sha256=trained.card.spec_sha256[: -len(tag)] + tag)
    card, _ = registry.register(card, trained.onnx, {BASELINE: trained.baseline, HOLDOUT: trained.holdout})
    return card.version


def make_requests(
    baseline: dict[str, Any],
    version: int,
    n_requests: int,
    rows: int,
    rng: np.random.Generator,
    *,
    scale: dict[str, float] | None = None,
    shadow: bool = False,
    flip: bool = False,
    id_prefix: str = "r",
) -> list[dict[str, Any]]:
    """Capture records drawn from the baseline's own distribution (optionally scaled features)."""
    scale = scale or {}
    classes = list(baseline["prediction"]["counts"])
    weights = np.array([baseline["prediction"]["counts"][c] for c in classes], float)
    weights = (weights[::-1] if flip else weights) / weights.sum()
    records = []
    for i in range(n_requests):
        features: dict[str, list[Any]] = {}
        for name, profile in baseline["features"].items():
            if "frequencies" in profile:
                cats = list(profile["frequencies"])
                p = np.array(list(profile["frequencies"].values()), float)
                features[name] = [str(c) for c in rng.choice(cats, size=rows, p=p / p.sum())]
            else:
                # the sketch edges are the baseline quantiles: drawing among them follows the baseline
                values = rng.choice(np.asarray(profile["sketch"]["edges"]), size=rows) * scale.get(name, 1.0)
                features[name] = [float(v) for v in values]
        labels = [str(c) for c in rng.choice(classes, size=rows, p=weights)]
        ts = START + timedelta(seconds=(i + 0.5) * 3600 / n_requests)
        records.append(
            {
                "kind": "capture",
                "model": MODEL,
                "model_version": str(version),
                "function_version": "1",
                "id": f"{id_prefix}{version}-{i}",
                "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "rows": rows,
                "shadow": shadow,
                "features": features,
                "outputs": {"label": labels, "probabilities": [[0.5, 0.5]] * rows},
                "latency_ms": 0.4,
            }
        )
    return records


def put_firehose(s3: Any, bucket: str, kind: str, records: list[dict[str, Any]], batch: str) -> None:
    """Write records as Firehose does: JSON lines under capture|feedback/{model}/dt=/hour=/."""
    by_prefix: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        ts = datetime.strptime(r["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        by_prefix.setdefault(partition_key(kind, MODEL, ts), []).append(r)
    for prefix, group in by_prefix.items():
        s3.put_object(Bucket=bucket, Key=f"{prefix}{batch}.jsonl", Body=encode_batch(group))


@pytest.fixture
def clients(cloud: Any) -> dict[str, Any]:
    return {name: cloud.client(name) for name in ("s3", "cloudwatch", "sns", "sqs")}


@pytest.fixture
def topic(clients: dict[str, Any]) -> tuple[str, str]:
    arn = clients["sns"].create_topic(Name="modeldeck-alerts")["TopicArn"]
    queue = clients["sqs"].create_queue(QueueName="alerts")["QueueUrl"]
    qarn = clients["sqs"].get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    clients["sns"].subscribe(TopicArn=arn, Protocol="sqs", Endpoint=qarn)
    return arn, queue


def run(clients: dict[str, Any], bucket: str, topic_arn: str | None = None, **kw: Any) -> dict[str, Any]:
    return drift.run_drift(
        clients["s3"],
        clients["cloudwatch"],
        clients["sns"],
        bucket=bucket,
        model=MODEL,
        start=kw.pop("start", START),
        end=kw.pop("end", END),
        topic_arn=topic_arn,
        **kw,
    )


def stat(cw: Any, name: str, dims: dict[str, str]) -> list[float]:
    points = cw.get_metric_statistics(
        Namespace="modeldeck",
        MetricName=name,
        Dimensions=[{"Name": k, "Value": v} for k, v in dims.items()],
        StartTime=END - timedelta(minutes=5),
        EndTime=END + timedelta(minutes=5),
        Period=60,
        Statistics=["Maximum", "SampleCount"],
    )["Datapoints"]
    return [p["Maximum"] for p in points for _ in range(int(p["SampleCount"]))]


def test_whole_loop_canary_drifts_champion_does_not(
    cloud: Any, registry: Registry, trained_demo: Any, clients: dict[str, Any], topic: tuple[str, str]
) -> None:
    # Given a champion v1 and a canary v2, both registered with their baselines
    v1 = register(registry, trained_demo, "a")
    v2 = register(registry, trained_demo, "b")
    baseline = registry.get_json(MODEL, v2, BASELINE)
    rng = np.random.default_rng(3)
    # and one hour of capture: v1 as trained; v2 with worst_radius 1.3x and a flipped prediction balance;
    # a shadow copy of v2 that is as broken, but must not count; and a duplicate delivery of a batch
    champion = make_requests(baseline, v1, 120, 5, rng)
    canary = make_requests(baseline, v2, 60, 5, rng, scale={"worst_radius": 1.3}, flip=True)
    shadow = make_requests(baseline, v2, 60, 5, rng, scale={"mean_radius": 3.0}, shadow=True, id_prefix="s")
    put_firehose(clients["s3"], cloud.bucket, "capture", champion + canary + shadow, "batch-1")
    put_firehose(clients["s3"], cloud.bucket, "capture", champion[:10], "batch-1-redelivered")
    # and feedback labels for the champion's requests (one per captured row)
    feedback = [
        {"kind": "feedback", "model": MODEL, "id": r["id"], "ts": r["ts"], "label": r["outputs"]["label"]}
        for r in champion
    ]
    put_firehose(clients["s3"], cloud.bucket, "feedback", feedback, "fb-1")

    # When the drift job runs for the window
    result = run(clients, cloud.bucket, topic[0])

    # Then each version is judged against its own baseline, shadow and duplicates excluded
    assert result["rows"] == 900 and result["versions"][str(v1)]["rows"] == 600
    r1, r2 = result["versions"][str(v1)], result["versions"][str(v2)]
    assert r1["status"] == r2["status"] == "ok"
    assert not r1["alarm"], r1["breaches"]
    assert r2["alarm"] and "worst_radius" in r2["drifted_features"]
    assert "mean_radius" not in r2["drifted_features"]  # only the shadow copy had it
    assert result["aggregate"]["breaching_versions"] == [str(v2)]
    assert r1["quality"]["metrics"]["accuracy"] == 1.0 and r1["quality"]["labeled_rows"] == 600

    # and the metrics are in CloudWatch, per version and per model, at the window end
    cw = clients["cloudwatch"]
    psi_v2 = stat(cw, "FeaturePSI", {"model": MODEL, "version": str(v2), "feature": "worst_radius"})
    assert psi_v2 == [pytest.approx(r2["features"]["worst_radius"]["psi"])]
    # (moto matches dimension subsets; CloudWatch matches them exactly, so list_metrics checks the sets)
    assert max(stat(cw, "MaxFeaturePSI", {"model": MODEL})) == pytest.approx(result["aggregate"]["max_psi"])
    assert max(stat(cw, "RowCount", {"model": MODEL})) == 900
    dims = {
        (m["MetricName"], tuple(sorted(d["Name"] for d in m["Dimensions"])))
        for m in cw.list_metrics(Namespace="modeldeck")["Metrics"]
    }
    for name in ("DriftedFeatures", "DriftedShare", "MaxFeaturePSI", "PredictionDrift", "RowCount", "Accuracy"):
        assert {(name, ("model",)), (name, ("model", "version"))} <= dims
    assert ("FeaturePSI", ("feature", "model", "version")) in dims
    assert stat(cw, "RowCount", {"model": MODEL, "version": str(v1)}) == [600]
    assert stat(cw, "Accuracy", {"model": MODEL, "version": str(v1)}) == [1.0]
    assert stat(cw, "roc_auc", {"model": MODEL, "version": str(v1)})
    names = {m["MetricName"] for m in cw.list_metrics(Namespace="modeldeck")["Metrics"]}
    assert {
        "FeaturePSI",
        "DriftedFeatures",
        "DriftedShare",
        "MaxFeaturePSI",
        "PredictionDrift",
        "RowCount",
        "Accuracy",
        "LabeledRows",
    } <= names
    published = result["published"]["metrics"]

    # When the same window runs again
    again = run(clients, cloud.bucket, topic[0])
    # Then it returns the stored result and publishes nothing new
    assert again["replayed"] is True and again["aggregate"] == result["aggregate"]
    # once each: model-only and the two versions (GetMetricStatistics matches the exact dimension set)
    assert [
        len(stat(cw, "MaxFeaturePSI", {"model": MODEL, **v})) for v in ({}, {"version": str(v1)}, {"version": str(v2)})
    ] == [1, 1, 1]
    assert published > 20

    # And exactly one SNS message reached the subscriber, written for a human
    messages = clients["sqs"].receive_message(QueueUrl=topic[1], MaxNumberOfMessages=10)["Messages"]
    assert len(messages) == 1
    envelope = json.loads(messages[0]["Body"])
    subject, body = envelope["Subject"], envelope["Message"]
    assert subject == drift.format_alarm_message(result)[0]
    worst_radius = r2["features"]["worst_radius"]
    for text in (
        MODEL,
        f"version v{v2}",
        "2026-11-23T07:00:00Z → 2026-11-23T08:00:00Z (1h)",
        "900 rows",
        "worst_radius",
        f"PSI {worst_radius['psi']:.3f}",
        f"mean {worst_radius['baseline_mean']:.4g} → ",
        f"modeldeck drift report {MODEL} --window 1h --end 2026-11-23T08:00:00Z",
        "What to do next",
        f"modeldeck rollback {MODEL}",
        "PredictionDrift",
        "malignant",
    ):
        assert text in body, (text, body)
    assert len(subject) <= 100


def test_small_window_publishes_nothing_that_could_breach(
    cloud: Any, registry: Registry, trained_demo: Any, clients: dict[str, Any], topic: tuple[str, str]
) -> None:
    # Given only 150 rows of badly drifted traffic (below the 200-row minimum)
    v1 = register(registry, trained_demo, "a")
    baseline = registry.get_json(MODEL, v1, BASELINE)
    records = make_requests(baseline, v1, 30, 5, np.random.default_rng(4), scale={"worst_radius": 3.0})
    put_firehose(clients["s3"], cloud.bucket, "capture", records, "b")
    # When the job runs
    result = run(clients, cloud.bucket, topic[0])
    # Then the window is insufficient data: only RowCount is published, no message is sent
    assert result["aggregate"]["status"] == "insufficient_data" and not result["aggregate"]["alarm"]
    names = {m["MetricName"] for m in clients["cloudwatch"].list_metrics(Namespace="modeldeck")["Metrics"]}
    assert names == {"RowCount"}
    assert "Messages" not in clients["sqs"].receive_message(QueueUrl=topic[1], WaitTimeSeconds=0)


def test_settings_from_env_and_scheduled_window() -> None:
    s = drift.DriftSettings.from_env(
        {
            "MODEL_BUCKET": "b",
            "MODELS": "a, b",
            "PSI_THRESHOLD": "0.25",
            "P_VALUE_ALPHA": "0.02",
            "BONFERRONI": "false",
            "MIN_SAMPLE_SIZE": "500",
            "WINDOW_HOURS": "6",
        }
    )
    assert s.models == ("a", "b") and s.window == timedelta(hours=6)
    assert s.thresholds == DriftThresholds(psi=0.25, alpha=0.02, bonferroni=False, min_rows=500)
    with pytest.raises(drift.DriftError, match=r"MODEL_BUCKET is required.*PSI_THRESHOLD"):
        drift.DriftSettings.from_env({"PSI_THRESHOLD": "high"})
    start, end = drift.window_ending(
        datetime(2026, 11, 23, 8, 10, tzinfo=UTC), timedelta(hours=24), timedelta(minutes=15)
    )
    assert (start, end) == (datetime(2026, 11, 22, 7, tzinfo=UTC), datetime(2026, 11, 23, 7, tzinfo=UTC))
    assert drift.window_ending(datetime(2026, 11, 23, 8, 44, tzinfo=UTC), timedelta(minutes=30))[1] == datetime(
        2026, 11, 23, 8, 30, tzinfo=UTC
    )
    assert drift.parse_window("1d") == timedelta(days=1)
    with pytest.raises(drift.DriftError):
        drift.parse_window("soon")


def test_lambda_handler_runs_a_named_window(
    cloud: Any, registry: Registry, trained_demo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import dataclass

    from lambdas.drift import handler

    @dataclass
    class FakeContext:
        function_name: str = "modeldeck-drift"
        memory_limit_in_mb: int = 1024
        invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:modeldeck-drift"
        aws_request_id: str = "req-1"

    # Given capture for v1 and the Lambda's environment
    v1 = register(registry, trained_demo, "a")
    baseline = registry.get_json(MODEL, v1, BASELINE)
    put_firehose(
        cloud.client("s3"), cloud.bucket, "capture", make_requests(baseline, v1, 50, 5, np.random.default_rng(8)), "b"
    )
    monkeypatch.setenv("MODEL_BUCKET", cloud.bucket)
    monkeypatch.setenv("MODELS", MODEL)
    handler.settings.cache_clear()
    handler.clients.cache_clear()
    try:
        # When it is invoked for one window, twice
        event = {"model": MODEL, "window": "1h", "end": "2026-11-23T08:00:00Z"}
        first = handler.lambda_handler(event, FakeContext())
        second = handler.lambda_handler(event, FakeContext())
    finally:
        handler.settings.cache_clear()
        handler.clients.cache_clear()
    # Then the window is judged once and replayed the second time
    assert first["results"][0]["rows"] == 250 and first["results"][0]["status"] == "ok"
    assert first["results"][0]["replayed"] is False and second["results"][0]["replayed"] is True
