"""CloudWatch: metrics written by the local Lambda runtime and embedded-metric-format logs, and the
alarms evaluated over them (moto stores alarms but never evaluates them)."""

from __future__ import annotations

import json
import math
import re
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from modeldeck.localcloud.events import _matches

if TYPE_CHECKING:
    from modeldeck.localcloud.cloud import LocalCloud


# What PutMetricAlarm accepts: alarms are recreated from templates and from saved state with these.
ALARM_ARGUMENTS = frozenset(
    {
        "AlarmName",
        "AlarmDescription",
        "ActionsEnabled",
        "OKActions",
        "AlarmActions",
        "InsufficientDataActions",
        "MetricName",
        "Namespace",
        "Statistic",
        "ExtendedStatistic",
        "Dimensions",
        "Period",
        "Unit",
        "EvaluationPeriods",
        "DatapointsToAlarm",
        "Threshold",
        "ComparisonOperator",
        "TreatMissingData",
        "Metrics",
    }
)


def _emf_metric_data(blobs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Embedded-metric-format documents as PutMetricData entries, grouped by namespace."""
    out: dict[str, list[dict[str, Any]]] = {}
    for blob in blobs:
        meta = blob["_aws"]
        ts = datetime.fromtimestamp(meta.get("Timestamp", time.time() * 1000) / 1000, UTC)
        for directive in meta.get("CloudWatchMetrics", []):
            for dim_set in directive.get("Dimensions", [[]]):
                dims = [{"Name": d, "Value": str(blob[d])} for d in dim_set if d in blob]
                for metric in directive.get("Metrics", []):
                    value = blob.get(metric["Name"])
                    values = value if isinstance(value, list) else [value]
                    for v in values:
                        if isinstance(v, (int, float)) and not isinstance(v, bool):
                            out.setdefault(directive["Namespace"], []).append(
                                {
                                    "MetricName": metric["Name"],
                                    "Dimensions": dims,
                                    "Value": float(v),
                                    "Unit": metric.get("Unit", "None"),
                                    "Timestamp": ts,
                                }
                            )
    return out


class AlarmEvaluator:
    """Evaluates CloudWatch alarms against stored metrics, as CloudWatch would; moto stores alarms but
    never evaluates them, and never fires their actions.

    For each alarm it takes the most recent ``EvaluationPeriods`` periods of its metric (or metric-math
    expression), applies ``DatapointsToAlarm`` and ``TreatMissingData``, sets the state, and on a change
    publishes CloudWatch's alarm JSON to the alarm's SNS actions and emits the state-change event to
    matching EventBridge rules (whose targets are started).
    """

    _SAFE_EXPR = re.compile(r"^[A-Za-z0-9_ +\-*/().,]+$")

    def __init__(self, cloud: LocalCloud) -> None:
        self.cloud = cloud
        self.rules: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    @property
    def backend(self) -> Any:
        from moto.cloudwatch.models import cloudwatch_backends

        return cloudwatch_backends[self.cloud.lambdas.account_id][self.cloud.region]

    def _values(
        self, namespace: str, name: str, dims: list[dict[str, str]], start: datetime, end: datetime
    ) -> list[float]:
        wanted = {(d["Name"], d["Value"]) for d in dims}
        out = []
        for datum in list(self.backend.metric_data):
            if datum.namespace != namespace or datum.name != name or not hasattr(datum, "value"):
                continue
            if {(d.name, d.value) for d in datum.dimensions} != wanted:
                continue
            ts = datum.timestamp
            if isinstance(ts, str):
                ts = datetime.fromisoformat(ts.replace("Z", "+00:00"))
            if ts.tzinfo is None:
                ts = ts.replace(tzinfo=UTC)
            if start <= ts < end:
                out.append(float(datum.value))
        return out

    @staticmethod
    def _stat(values: list[float], stat: str) -> float | None:
        if not values:
            return None
        if stat == "Sum":
            return float(sum(values))
        if stat == "Average":
            return float(sum(values) / len(values))
        if stat == "SampleCount":
            return float(len(values))
        if stat == "Maximum":
            return max(values)
        if stat == "Minimum":
            return min(values)
        if stat.startswith("p"):
            ordered = sorted(values)
            rank = max(0, math.ceil(float(stat[1:]) / 100 * len(ordered)) - 1)
            return ordered[rank]
        raise ValueError(f"unsupported statistic {stat}")

    def _period_value(self, alarm: dict[str, Any], start: datetime, end: datetime) -> float | None:
        if alarm.get("Metrics"):
            values: dict[str, float | None] = {}
            expression = None
            for query in alarm["Metrics"]:
                if "MetricStat" in query:
                    stat = query["MetricStat"]
                    metric = stat["Metric"]
                    values[query["Id"]] = self._stat(
                        self._values(
                            metric["Namespace"], metric["MetricName"], metric.get("Dimensions", []), start, end
                        ),
                        stat["Stat"],
                    )
                if query.get("ReturnData", True) and "Expression" in query:
                    expression = query["Expression"]
            if expression is None or any(v is None for v in values.values()):
                return None
            if not self._SAFE_EXPR.match(expression):
                raise ValueError(f"unsupported metric math {expression!r}")
            return float(eval(expression, {"__builtins__": {}, "ABS": abs}, dict(values)))
        stat = alarm.get("ExtendedStatistic") or alarm.get("Statistic", "Average")
        return self._stat(
            self._values(alarm["Namespace"], alarm["MetricName"], alarm.get("Dimensions", []), start, end), stat
        )

    @staticmethod
    def _breaches(value: float, alarm: dict[str, Any]) -> bool:
        threshold, op = float(alarm["Threshold"]), alarm["ComparisonOperator"]
        return {
            "GreaterThanThreshold": value > threshold,
            "GreaterThanOrEqualToThreshold": value >= threshold,
            "LessThanThreshold": value < threshold,
            "LessThanOrEqualToThreshold": value <= threshold,
        }[op]

    def state_of(self, alarm: dict[str, Any], now: datetime) -> tuple[str, str]:
        """The state an alarm should be in now, and the reason CloudWatch would give."""
        period = int(alarm.get("Period") or (alarm.get("Metrics") or [{}])[0].get("MetricStat", {}).get("Period", 60))
        periods = int(alarm.get("EvaluationPeriods", 1))
        needed = int(alarm.get("DatapointsToAlarm") or periods)
        missing = alarm.get("TreatMissingData", "missing")
        values = [
            self._period_value(alarm, now - timedelta(seconds=period * (i + 1)), now - timedelta(seconds=period * i))
            for i in range(periods)
        ]
        present = [v for v in values if v is not None]
        breaching = sum(1 for v in present if self._breaches(v, alarm))
        if missing == "breaching":
            breaching += len(values) - len(present)
        if breaching >= needed:
            shown = ", ".join(f"{v:g}" for v in present) or "missing data"
            return "ALARM", (
                f"Threshold Crossed: {breaching} of the last {periods} datapoint(s) [{shown}] were "
                f"{alarm['ComparisonOperator']} the threshold ({float(alarm['Threshold']):g})."
            )
        if not present and missing == "missing":
            return "INSUFFICIENT_DATA", "Insufficient Data: no datapoints were received."
        return "OK", f"Threshold Crossed: {len(present)} datapoint(s) within the threshold."

    def evaluate(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """One evaluation round over every alarm; returns the state changes it made."""
        now = now or datetime.now(UTC)
        self.cloud.lambdas.flush_metrics(self.cloud)
        cw = self.cloud.client("cloudwatch")
        changes = []
        for page in cw.get_paginator("describe_alarms").paginate(AlarmTypes=["MetricAlarm"]):
            for alarm in page["MetricAlarms"]:
                state, reason = self.state_of(alarm, now)
                if state == alarm["StateValue"]:
                    continue
                cw.set_alarm_state(AlarmName=alarm["AlarmName"], StateValue=state, StateReason=reason)
                change = {"alarm": alarm, "old": alarm["StateValue"], "new": state, "reason": reason, "at": now}
                changes.append(change)
                self._dispatch(change)
        return changes

    def _dispatch(self, change: dict[str, Any]) -> None:
        alarm, new = change["alarm"], change["new"]
        actions = {
            "ALARM": alarm.get("AlarmActions"),
            "OK": alarm.get("OKActions"),
            "INSUFFICIENT_DATA": alarm.get("InsufficientDataActions"),
        }.get(new) or []
        message = json.dumps(
            {
                "AlarmName": alarm["AlarmName"],
                "AlarmDescription": alarm.get("AlarmDescription"),
                "NewStateValue": new,
                "OldStateValue": change["old"],
                "NewStateReason": change["reason"],
                "StateChangeTime": change["at"].isoformat(),
                "Region": self.cloud.region,
                "Trigger": {
                    k: alarm.get(k)
                    for k in (
                        "MetricName",
                        "Namespace",
                        "Statistic",
                        "ExtendedStatistic",
                        "Dimensions",
                        "Period",
                        "EvaluationPeriods",
                        "Threshold",
                        "ComparisonOperator",
                        "TreatMissingData",
                    )
                    if alarm.get(k) is not None
                },
            },
            default=str,
        )
        sns = self.cloud.client("sns")
        for arn in actions:
            if ":sns:" in arn and alarm.get("ActionsEnabled", True):
                sns.publish(
                    TopicArn=arn, Subject=f'{new}: "{alarm["AlarmName"]}" in {self.cloud.region}'[:99], Message=message
                )
        event = {
            "source": "aws.cloudwatch",
            "detail-type": "CloudWatch Alarm State Change",
            "detail": {
                "alarmName": alarm["AlarmName"],
                "state": {"value": new, "reason": change["reason"]},
                "previousState": {"value": change["old"]},
            },
        }
        self.events.append(event)
        for rule in self.rules:
            if _matches(rule.get("EventPattern") or {}, event):
                for target in rule.get("Targets", []):
                    if ":states:" in str(target.get("Arn")):
                        self.cloud.client("stepfunctions").start_execution(
                            stateMachineArn=target["Arn"], input=target.get("Input") or json.dumps(event)
                        )
