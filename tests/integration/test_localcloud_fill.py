"""FILL in the local cloud's metric math is never kinder than CloudWatch's: a series with no datapoint in the
whole evaluated range stays empty.

"Metric math syntax and functions" (CloudWatch User Guide) says FILL fills the missing values of a time
series; it does not say that FILL makes values for a series that has no datapoint at all in the queried range.
The strict reading is taken: such a series stays empty, and arithmetic with it is empty. An alarm built on
FILL of a series that a failing candidate never emits (the handler's ``Latency`` of answered requests) would
then see missing data and pass the candidate; these tests hold the emulator to that reading and show that the
release's server-error rate (ServerErrors over the handler's ``Requests``) does not depend on it.
"""

from __future__ import annotations

from typing import Any

from modeldeck.localcloud import LocalCloud
from modeldeck.localcloud import metric_math as mm

# The canary's rate before `Requests` existed: the denominator was FILL of Latency's sample count.
OLD_RATE = "IF((FILL(ok, 0) + FILL(errors, 0)) >= 10, 100 * FILL(errors, 0) / (FILL(ok, 0) + FILL(errors, 0)), 0)"
RATE = "IF(requests >= 10, 100 * FILL(errors, 0) / requests, 0)"


def _series(node: mm.Node, evaluated_range: list[dict[str, float | None]]) -> list[float | None]:
    return [mm.evaluate(node, values, evaluated_range) for values in evaluated_range]


def test_fill_of_a_series_empty_in_the_whole_range_gives_no_datapoint() -> None:
    # Given a range of three periods where `a` has no datapoint at all, and `b` has one
    evaluated: list[dict[str, float | None]] = [{"a": None, "b": None}, {"a": None, "b": 4.0}, {"a": None, "b": None}]
    # When FILL is evaluated over that range
    # Then the empty series stays empty, arithmetic with it too, and the other's gaps are filled
    assert _series(mm.parse("FILL(a, 0)"), evaluated) == [None, None, None]
    assert _series(mm.parse("FILL(a, 0) + FILL(b, 0)"), evaluated) == [None, None, None]
    assert _series(mm.parse("FILL(b, 0)"), evaluated) == [0.0, 4.0, 0.0]
    # (without a range, one period alone, FILL fills as before)
    assert mm.evaluate(mm.parse("FILL(a, 0)"), {"a": None}) == 0.0


def test_a_candidate_answering_only_5xx_is_invisible_to_a_rate_over_fill_of_latency_but_not_to_requests() -> None:
    # Given a candidate that received 20 requests a period and answered all of them 500: the handler emitted
    # Requests and ServerErrors, and no Latency at all
    evaluated: list[dict[str, float | None]] = [{"ok": None, "errors": 20.0, "requests": 20.0} for _ in range(3)]
    # When both rates are evaluated over the range
    # Then the old one has no datapoint (missing data: notBreaching passed the candidate), the new one is 100%
    assert _series(mm.parse(OLD_RATE), evaluated) == [None, None, None]
    assert _series(mm.parse(RATE), evaluated) == [100.0, 100.0, 100.0]
    # and with no server errors at all in the range the new rate is missing (OK), as it should be
    healthy: list[dict[str, float | None]] = [{"errors": None, "requests": 20.0} for _ in range(3)]
    assert _series(mm.parse(RATE), healthy) == [None, None, None]


def _rate_alarm(cloud: LocalCloud, name: str, expression: str, ids: dict[str, str]) -> None:
    def query(qid: str, metric: str) -> dict[str, Any]:
        return {
            "Id": qid,
            "ReturnData": False,
            "MetricStat": {"Stat": "Sum", "Period": 60, "Metric": {"Namespace": "ns", "MetricName": metric}},
        }

    cloud.client("cloudwatch").put_metric_alarm(
        AlarmName=name,
        EvaluationPeriods=1,
        DatapointsToAlarm=1,
        Threshold=5.0,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        TreatMissingData="notBreaching",
        Metrics=[*(query(qid, metric) for qid, metric in ids.items()), {"Id": "rate", "Expression": expression}],
    )


def test_an_alarm_over_fill_of_an_absent_series_stays_ok_in_the_local_cloud(cloud: LocalCloud) -> None:
    # Given both rate alarms, and a period in which only ServerErrors and Requests arrive (no Latency)
    _rate_alarm(cloud, "old", OLD_RATE, {"ok": "Latency", "errors": "ServerErrors"})
    _rate_alarm(cloud, "new", RATE, {"requests": "Requests", "errors": "ServerErrors"})
    cw = cloud.client("cloudwatch")
    cw.put_metric_data(
        Namespace="ns",
        MetricData=[{"MetricName": "ServerErrors", "Value": 20.0}, {"MetricName": "Requests", "Value": 20.0}],
    )
    # When CloudWatch evaluates them after the period closes
    cloud.clock.advance(60)
    # Then the alarm built on FILL of the absent series sees missing data (OK), the one on Requests fires
    states = {a["AlarmName"]: a["StateValue"] for a in cw.describe_alarms(AlarmNames=["old", "new"])["MetricAlarms"]}
    assert states == {"old": "OK", "new": "ALARM"}
