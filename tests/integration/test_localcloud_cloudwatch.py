"""CloudWatch in the local cloud follows "Using Amazon CloudWatch alarms": evaluation ranges, TreatMissingData,
M of N, metric math, alarm state across PutMetricAlarm, alarm history, and Lambda's metric delay."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modeldeck.localcloud import LocalCloud
from modeldeck.localcloud import metric_math as mm
from modeldeck.localcloud.cloudwatch import AlarmEvaluator

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _decide(points: str, m: int, n: int, treat: str) -> str:
    """The state for the guide's notation: the evaluation range oldest first, X breaching, 0 not, - missing."""
    values = [{"X": 5.0, "0": 0.0, "-": None}[p] for p in points.split()]
    evaluator = AlarmEvaluator(cloud=None)  # type: ignore[arg-type]
    end = NOW.timestamp()

    def datapoint(_alarm: dict[str, Any], start: float, _end: float) -> float | None:
        return values[len(values) - int((end - start) // 60)]

    evaluator.datapoint = datapoint  # type: ignore[method-assign,assignment]
    alarm = {
        "Period": 60,
        "EvaluationPeriods": n,
        "DatapointsToAlarm": m,
        "TreatMissingData": treat,
        "Threshold": 1.0,
        "ComparisonOperator": "GreaterThanThreshold",
    }
    decided = evaluator.state_of(alarm, NOW)
    return "retain" if decided is None else decided[0]


# The two tables of "Configuring how CloudWatch alarms treat missing data" (3 of 3, then 2 of 3; range 5).
GUIDE = [
    ("0 - X - X", 3, {"missing": "OK", "ignore": "OK", "breaching": "OK", "notBreaching": "OK"}),
    ("0 - - - -", 3, {"missing": "OK", "ignore": "OK", "breaching": "OK", "notBreaching": "OK"}),
    ("- - - - -", 3, {"missing": "INSUFFICIENT_DATA", "ignore": "retain", "breaching": "ALARM", "notBreaching": "OK"}),
    ("0 X X - X", 3, {"missing": "ALARM", "ignore": "ALARM", "breaching": "ALARM", "notBreaching": "ALARM"}),
    ("- - X - -", 3, {"missing": "ALARM", "ignore": "retain", "breaching": "ALARM", "notBreaching": "OK"}),
    ("0 - X - X", 2, {"missing": "ALARM", "ignore": "ALARM", "breaching": "ALARM", "notBreaching": "ALARM"}),
    ("0 0 X 0 X", 2, {"missing": "ALARM", "ignore": "ALARM", "breaching": "ALARM", "notBreaching": "ALARM"}),
    ("0 - X - -", 2, {"missing": "OK", "ignore": "OK", "breaching": "ALARM", "notBreaching": "OK"}),
    ("- - - - 0", 2, {"missing": "OK", "ignore": "OK", "breaching": "ALARM", "notBreaching": "OK"}),
    ("- - - X -", 2, {"missing": "ALARM", "ignore": "retain", "breaching": "ALARM", "notBreaching": "OK"}),
]


@pytest.mark.parametrize(("points", "m", "expected"), GUIDE)
def test_alarm_states_follow_the_guides_missing_data_tables(points: str, m: int, expected: dict[str, str]) -> None:
    # Given the evaluation range of a 3-period alarm, When it is evaluated with each TreatMissingData
    decided = {treat: _decide(points, m, 3, treat) for treat in expected}
    # Then each state is the one the guide's table gives
    assert decided == expected


def test_no_premature_alarm_on_one_recent_breach() -> None:
    # "Avoiding premature transitions to alarm state": - - - - X and - - - X - do not alarm (3 of 3)
    assert _decide("- - - - X", 3, 3, "missing") == "OK"
    assert _decide("- - - X -", 3, 3, "missing") == "OK"


def test_metric_math_is_parsed_with_the_functions_the_release_alarms_use() -> None:
    # Given the release's canary expressions
    served = "(FILL(ok, 0) + FILL(errors, 0))"
    rate = mm.parse(f"IF({served} >= 5, 100 * FILL(errors, 0) / {served}, 0)")
    missing = mm.parse(f"IF({served} > 0 AND FILL(scores, 0) == 0, 1, 0)")
    shift = mm.parse("ABS(canary - champion)")
    # Then they evaluate per period, filling and propagating missing values as metric math does
    assert mm.evaluate(rate, {"ok": 8.0, "errors": 2.0}) == 20.0
    assert mm.evaluate(rate, {"ok": None, "errors": 2.0}) == 0.0, "too few requests in the period"
    assert mm.evaluate(rate, {"ok": None, "errors": None}) == 0.0
    assert mm.evaluate(missing, {"ok": 3.0, "errors": None, "scores": None}) == 1.0
    assert mm.evaluate(missing, {"ok": 3.0, "errors": None, "scores": 3.0}) == 0.0
    assert mm.evaluate(shift, {"canary": 0.2, "champion": 0.7}) == pytest.approx(0.5)
    assert mm.evaluate(shift, {"canary": None, "champion": 0.7}) is None
    assert mm.evaluate(mm.parse("a / b"), {"a": 1.0, "b": 0.0}) is None
    assert mm.evaluate(mm.parse("IF(a > 1, a)"), {"a": 0.0}) is None
    assert mm.evaluate(mm.parse("-a * (2 + 3) + 1 == -4 AND NOT a == 0"), {"a": 1.0}) == 1.0
    assert mm.ids(rate) == {"ok", "errors"}


@pytest.mark.parametrize("text", ["__import__('os')", "a.b", "a ** 2", "LOG(a)", "IF(a)", "(a + 1", "a b"])
def test_metric_math_refuses_what_it_does_not_know(text: str) -> None:
    with pytest.raises(mm.MetricMathError):
        mm.parse(text)


def _put(cloud: LocalCloud, name: str = "a", **overrides: Any) -> None:
    args = {
        "AlarmName": name,
        "Namespace": "ns",
        "MetricName": "m",
        "Statistic": "Sum",
        "Period": 60,
        "EvaluationPeriods": 1,
        "Threshold": 1.0,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "TreatMissingData": "ignore",
        **overrides,
    }
    cloud.client("cloudwatch").put_metric_alarm(**args)


def _alarm(cloud: LocalCloud, name: str = "a") -> dict[str, Any]:
    return dict(cloud.client("cloudwatch").describe_alarms(AlarmNames=[name])["MetricAlarms"][0])


def test_new_alarms_start_unchecked_and_put_metric_alarm_keeps_the_state(cloud: LocalCloud) -> None:
    # Given a new alarm
    _put(cloud)
    assert _alarm(cloud)["StateValue"] == "INSUFFICIENT_DATA"
    # When it goes to ALARM and is then re-armed with PutMetricAlarm (another description)
    cloud.client("cloudwatch").put_metric_data(Namespace="ns", MetricData=[{"MetricName": "m", "Value": 3.0}])
    cloud.clock.advance(60)
    assert _alarm(cloud)["StateValue"] == "ALARM"
    _put(cloud, AlarmDescription="re-armed")
    # Then it keeps its ALARM state, and with TreatMissingData=ignore no data keeps it there
    assert _alarm(cloud)["StateValue"] == "ALARM"
    assert _alarm(cloud)["AlarmDescription"] == "re-armed"
    cloud.clock.advance(600)
    assert _alarm(cloud)["StateValue"] == "ALARM"


def test_alarm_history_is_served_and_survives_delete_alarms(cloud: LocalCloud) -> None:
    # Given an alarm that goes to ALARM and back to OK
    cw = cloud.client("cloudwatch")
    since = cloud.clock.now()
    _put(cloud, TreatMissingData="notBreaching")
    cw.put_metric_data(Namespace="ns", MetricData=[{"MetricName": "m", "Value": 3.0}])
    cloud.clock.advance(60)
    went_off = cloud.clock.now()
    cloud.clock.advance(300)
    # When the alarm is deleted and its state history read
    cw.delete_alarms(AlarmNames=["a"])
    history = cw.describe_alarm_history(AlarmName="a", HistoryItemType="StateUpdate", StartDate=since)
    # Then every state change is there, newest first, with CloudWatch's HistoryData
    items = history["AlarmHistoryItems"]
    changes = [
        (json.loads(i["HistoryData"])["oldState"]["stateValue"], json.loads(i["HistoryData"])["newState"]["stateValue"])
        for i in items
    ]
    assert changes == [("ALARM", "OK"), ("INSUFFICIENT_DATA", "ALARM")]
    assert items[1]["HistorySummary"] == "Alarm updated from INSUFFICIENT_DATA to ALARM"
    assert abs(items[1]["Timestamp"] - went_off) < timedelta(seconds=61)
    assert cw.describe_alarms(AlarmNames=["a"])["MetricAlarms"] == []
    assert cw.describe_alarm_history(AlarmName="a", StartDate=cloud.clock.now())["AlarmHistoryItems"] == []
    configuration = cw.describe_alarm_history(AlarmName="a", HistoryItemType="ConfigurationUpdate")
    assert [i["HistorySummary"] for i in configuration["AlarmHistoryItems"]] == [
        'Alarm "a" deleted',
        'Alarm "a" created',
    ]


def test_an_alarm_on_lambda_errors_sees_a_crash_only_after_the_metric_delay(cloud: LocalCloud) -> None:
    # Given an alarm on a function's Lambda Errors, one-minute periods, and a crashing function
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("stub", "")
    cloud.client("lambda").create_function(
        FunctionName="crashes",
        Runtime="python3.12",
        Role=cloud.deployer._role(),
        Handler="tests.fixtures.clock_handlers.crashes",
        Code={"ZipFile": buf.getvalue()},
    )
    _put(
        cloud,
        Namespace="AWS/Lambda",
        MetricName="Errors",
        Dimensions=[{"Name": "FunctionName", "Value": "crashes"}],
        TreatMissingData="notBreaching",
    )
    # When it crashes once
    with pytest.raises(RuntimeError):
        cloud.lambdas.invoke("crashes", None, {})
    crashed = cloud.clock.now()
    # Then the alarm is still OK a minute later, and goes to ALARM once the datapoint has arrived (and back to
    # OK when that one period leaves its evaluation range)
    cloud.clock.advance(70)
    assert _alarm(cloud)["StateValue"] == "OK"
    cloud.clock.advance(240)
    history = cloud.client("cloudwatch").describe_alarm_history(AlarmName="a", HistoryItemType="StateUpdate")
    fired = [i for i in history["AlarmHistoryItems"] if i["HistorySummary"].endswith("to ALARM")]
    assert len(fired) == 1
    assert timedelta(seconds=120) <= fired[0]["Timestamp"] - crashed <= timedelta(seconds=240)
