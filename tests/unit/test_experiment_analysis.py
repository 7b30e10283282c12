"""The experiment job's analysis: aggregation per unit, the outcome join, unassigned requests, model metrics,
and the snapshot, EMF and decision message built from them (pure functions, synthetic records)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from modeldeck import experiment_analysis as ea

STARTED = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)


def doc(metric: str = "conversion", **extra: Any) -> dict[str, Any]:
    return {
        "id": "exp-1",
        "model": "m",
        "status": "running",
        "unit_key": {"field": "user_id"},
        "variants": [
            {"name": "A", "version": 3, "weight": 0.5, "function_name": "fn", "qualifier": "7"},
            {"name": "B", "version": 4, "weight": 0.5, "function_name": "fn", "qualifier": "9"},
        ],
        "champion": "A",
        "metric": metric,
        "alpha": 0.05,
        "mde": 0.1,
        "min_units": 10,
        "max_days": 14,
        "started_at": "2026-11-29T03:00:00Z",
        **extra,
    }


def capture(rid: str, variant: str | None, unit: str | None, labels: list[Any] | None = None, **kw: Any) -> dict:
    return {
        "id": rid,
        "ts": "2026-11-29T03:01:00.000000Z",
        "model_version": "3" if variant != "B" else "4",
        "rows": len(labels or [0]),
        "outputs": {"label": labels or [0]},
        "experiment": {"id": kw.pop("exp", "exp-1"), "variant": variant, "unit": unit},
        **kw,
    }


def test_metrics_are_per_unit_requests_and_outcomes_per_request_and_unassigned_apart() -> None:
    # Given unit u1 (A) with two requests, one converting, u2 (A) with none, u3 (B) with a value of 0,
    # one request without a unit, one of another experiment, one shadow copy and feedback for a stranger
    captures = [
        capture("r1", "A", "u1"),
        capture("r2", "A", "u1"),
        capture("r3", "A", "u2"),
        capture("r4", "B", "u3"),
        capture("r5", None, None),
        capture("r6", "B", "u9", exp="exp-0"),
        capture("r4", "B", "u3", shadow=True),
    ]
    feedback: list[dict[str, Any]] = [
        {"id": "r2", "value": [2.5]},
        {"id": "r4", "value": [0]},
        {"id": "r5", "value": [1]},
        {"id": "x"},
    ]
    # When aggregated on conversion
    stats, unassigned = ea.aggregate(doc(), captures, feedback)
    a, b = stats
    # Then units are distinct digests, conversion is per unit, requests and outcomes per request
    assert (a.units, a.requests, a.outcomes, a.n, a.total) == (2, 3, 1, 2, 1.0)
    assert (b.units, b.requests, b.outcomes, b.n, b.total) == (1, 1, 1, 1, 0.0)
    assert unassigned == {"requests": 1, "outcomes": 1}
    # And on value, a unit's values add up (0 for a unit without outcome)
    a, b = ea.aggregate(doc("value"), captures, feedback)[0]
    assert (a.total, a.total_sq, b.total) == (2.5, 6.25, 0.0)


def test_a_model_metric_is_the_mean_of_a_units_labeled_rows_and_unlabeled_units_do_not_count() -> None:
    captures = [
        capture("r1", "A", "u1", labels=["x", "y"]),  # 1 of 2 right
        capture("r2", "A", "u1", labels=["x"]),  # right
        capture("r3", "A", "u2", labels=["x"]),  # no label
        capture("r4", "B", "u3", labels=[1.0, 3.0]),
    ]
    feedback: list[dict[str, Any]] = [
        {"id": "r1", "label": ["x", "x"]},
        {"id": "r2", "label": "x"},
        {"id": "r4", "label": [2.0, 2.0]},
    ]
    (a, _), _ = ea.aggregate(doc("accuracy"), captures, feedback)
    assert (a.units, a.n) == (2, 1) and a.total == pytest.approx(2 / 3)
    (a, b), _ = ea.aggregate(doc("mae"), captures, feedback)
    assert (b.n, b.total) == (1, 1.0) and a.n == 0  # a's labels are not numbers: no error to score
    # A label list that does not match the rows answers nothing
    (a, _), _ = ea.aggregate(doc("accuracy"), captures, [{"id": "r1", "label": ["x"]}])
    assert a.n == 0 and a.outcomes == 1


def simulated(n: int, rates: tuple[float, float], seed: int = 1) -> tuple[list[dict], list[dict]]:
    rng = np.random.default_rng(seed)
    captures, feedback = [], []
    for i in range(n):
        variant = "AB"[i % 2]
        captures.append(capture(f"r{i}", variant, f"u{i}"))
        if rng.random() < rates[i % 2]:
            feedback.append({"id": f"r{i}", "value": [1]})
    return captures, feedback


def test_a_large_lift_is_a_winner_and_the_snapshot_is_strict_json() -> None:
    captures, feedback = simulated(600, (0.1, 0.4))
    snap = ea.analyze(doc(), captures, feedback, STARTED + timedelta(hours=1))
    assert snap["decision"]["outcome"] == "winner" and snap["decision"]["winner"] == "B"
    (c,) = snap["comparisons"]
    assert c["control"] == "A" and c["treatment"] == "B" and c["effect"] > 0.2 and c["p_value"] < 0.05
    a, _ = snap["variants"]
    assert a["champion"] and a["metric"]["ci_low"] < a["metric"]["value"] < a["metric"]["ci_high"]
    assert snap["srm"]["mismatch"] is False
    json.dumps(snap, allow_nan=False)


def test_too_few_units_is_continue_without_comparison() -> None:
    snap = ea.analyze(doc(), [capture("r1", "A", "u1")], [], STARTED)
    assert snap["decision"]["outcome"] == "continue" and snap["comparisons"] == []
    assert snap["variants"][1]["metric"]["value"] is None


def test_emf_has_one_document_per_variant_with_the_p_values_on_the_challenger() -> None:
    captures, feedback = simulated(200, (0.1, 0.4))
    snap = ea.analyze(doc(), captures, feedback, STARTED)
    docs = [json.loads(line) for line in ea.emf_lines(snap, 0)]
    assert [(d["variant"], d["experiment"], d["model"]) for d in docs] == [("A", "exp-1", "m"), ("B", "exp-1", "m")]
    assert docs[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["model", "experiment", "variant"]]
    assert "PValue" not in docs[0] and {"Units", "Requests", "Outcomes", "MetricValue", "PValue"} <= set(docs[1])


class FakeS3:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put_object(self, Bucket: str, Key: str, Body: bytes, IfNoneMatch: str | None = None) -> None:
        from botocore.exceptions import ClientError

        if IfNoneMatch and Key in self.objects:
            raise ClientError({"Error": {"Code": "PreconditionFailed"}}, "PutObject")
        self.objects[Key] = Body

    def delete_object(self, Bucket: str, Key: str) -> None:
        self.objects.pop(Key, None)


def test_the_decision_is_published_once_and_given_back_when_publishing_fails() -> None:
    captures, feedback = simulated(600, (0.1, 0.4))
    snap = ea.analyze(doc(), captures, feedback, STARTED)
    s3, sent = FakeS3(), []

    class Sns:
        fail = True

        def publish(self, **kw: Any) -> None:
            if self.fail:
                raise RuntimeError("SNS down")
            sent.append(kw)

    sns = Sns()
    with pytest.raises(RuntimeError):
        ea._notify_once(s3, sns, "b", "arn:topic", snap)
    assert not s3.objects  # the marker was given back: the next run retries
    sns.fail = False
    assert ea._notify_once(s3, sns, "b", "arn:topic", snap) is True
    assert ea._notify_once(s3, sns, "b", "arn:topic", snap) is False
    assert len(sent) == 1 and "B wins" in sent[0]["Subject"]
    assert "modeldeck experiment conclude m --promote 4" in sent[0]["Message"]


def test_the_report_plots_each_variants_interval_and_the_effect_over_the_snapshots() -> None:
    from modeldeck.experiment_report import render_report

    snaps = []
    for n in (200, 400, 600):
        captures, feedback = simulated(n, (0.1, 0.4))
        snaps.append(ea.analyze(doc(model="m<x>"), captures, feedback, STARTED + timedelta(minutes=n)))
    page = render_report(snaps)
    # Two charts (metric per variant, effect vs the champion), each variant's interval as a shaded band
    assert page.count("<svg") == 2 and page.count("<polygon") == 3
    assert "m&lt;x&gt;" in page and "m<x>" not in page  # escaped
    assert "winner → B" in page and "Sample-ratio check" in page
