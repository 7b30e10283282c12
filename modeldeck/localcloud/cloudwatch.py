"""CloudWatch as AWS runs it, for the local cloud: metrics at one-minute resolution, alarms evaluated once
a (virtual) minute, alarm history. moto stores metrics and alarms but never evaluates an alarm, starts new
alarms in OK, resets an alarm's state on PutMetricAlarm, and has no DescribeAlarmHistory; this module adds
what it lacks, following "Using Amazon CloudWatch alarms" (CloudWatch User Guide) unless a docstring says
otherwise.
"""

from __future__ import annotations

import bisect
import json
import math
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from modeldeck.localcloud import metric_math
from modeldeck.localcloud.events import _matches
from modeldeck.localcloud.iam import acting_as, service_principal

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
# "Evaluating an alarm": CloudWatch retrieves more datapoints than EvaluationPeriods (the evaluation range)
# in case recent ones are missing; the guide's examples use 5 for 3 evaluation periods.
EXTRA_RANGE = 2


def emf_metric_data(blobs: list[tuple[float, dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Embedded-metric-format documents, each with its (virtual) timestamp, as PutMetricData entries grouped
    by namespace ("Specification: Embedded metric format"). Values are stored at one-minute resolution."""
    out: dict[str, list[dict[str, Any]]] = {}
    for at, blob in blobs:
        ts = datetime.fromtimestamp(math.floor(at / 60) * 60, UTC)
        meta = blob["_aws"]
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


def _epoch(ts: Any) -> float:
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return float(ts.timestamp())


class MetricIndex:
    """moto's stored datapoints indexed by metric (namespace, name, exact dimension set) and time, read
    incrementally (moto only appends)."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self._seen = 0
        self._source: Any = None
        self._series: dict[tuple[str, str, frozenset[tuple[str, str]]], tuple[list[float], list[Any]]] = {}
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        data = self._backend().metric_data
        if data is not self._source or len(data) < self._seen:
            self._source, self._seen, self._series = data, 0, {}
        for datum in data[self._seen :]:
            key = (datum.namespace, datum.name, frozenset((d.name, d.value) for d in datum.dimensions))
            times, datums = self._series.setdefault(key, ([], []))
            at = _epoch(datum.timestamp)
            i = bisect.bisect_right(times, at)
            times.insert(i, at)
            datums.insert(i, datum)
        self._seen = len(data)

    def datums(self, namespace: str, name: str, dims: list[dict[str, str]], start: float, end: float) -> list[Any]:
        """The datapoints of one metric with start <= timestamp < end."""
        with self._lock:
            self._refresh()
            found = self._series.get((namespace, name, frozenset((d["Name"], d["Value"]) for d in dims)))
        if not found:
            return []
        times, datums = found
        return datums[bisect.bisect_left(times, start) : bisect.bisect_left(times, end)]


def statistic(datums: list[Any], stat: str) -> float | None:
    """One period's statistic over raw values and statistic sets ("CloudWatch statistics definitions");
    percentiles need raw values. None when the period has no data."""
    values = [float(d.value) for d in datums if hasattr(d, "value")]
    sets = [d for d in datums if not hasattr(d, "value")]
    count = len(values) + sum(float(s.sample_count) for s in sets)
    if not count:
        return None
    total = sum(values) + sum(float(s.sum) for s in sets)
    if stat == "Sum":
        return total
    if stat == "SampleCount":
        return count
    if stat == "Average":
        return total / count
    if stat == "Maximum":
        return max([*values, *(float(s.max) for s in sets)])
    if stat == "Minimum":
        return min([*values, *(float(s.min) for s in sets)])
    if stat.startswith("p"):
        if not values:
            return None
        ordered = sorted(values)
        rank = max(0, math.ceil(float(stat[1:]) / 100 * len(ordered)) - 1)
        return ordered[rank]
    raise ValueError(f"unsupported statistic {stat}")


_OPERATORS = {
    "GreaterThanThreshold": (lambda v, t: v > t, "greater than"),
    "GreaterThanOrEqualToThreshold": (lambda v, t: v >= t, "greater than or equal to"),
    "LessThanThreshold": (lambda v, t: v < t, "less than"),
    "LessThanOrEqualToThreshold": (lambda v, t: v <= t, "less than or equal to"),
}


class AlarmEvaluator:
    """Evaluates every metric alarm once a virtual minute, as CloudWatch does, and fires its actions.

    "Using Amazon CloudWatch alarms", evaluating an alarm: the datapoints are whole periods aligned to the
    period; CloudWatch retrieves an evaluation range of ``EvaluationPeriods + 2`` of them; with at least
    ``EvaluationPeriods`` real datapoints it judges the most recent ones and TreatMissingData is not used;
    with fewer, all real datapoints count and missing ones are filled per TreatMissingData (``missing``:
    INSUFFICIENT_DATA when none is real; ``ignore``: the state is kept; ``breaching``/``notBreaching``), with
    the guide's "premature alarm state" rule; ALARM when at least ``DatapointsToAlarm`` breach (M of N).
    Metric math is parsed by ``metric_math``. A state change publishes CloudWatch's alarm JSON to the alarm's
    SNS actions and emits the state-change event to matching EventBridge rules (whose targets are started).
    """

    def __init__(self, cloud: LocalCloud) -> None:
        self.cloud = cloud
        self.rules: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []
        self.index = MetricIndex(lambda: self.backend)
        self._lock = threading.RLock()
        self._parsed: dict[str, metric_math.Node] = {}
        self._client: Any = None

    @property
    def client(self) -> Any:
        """One CloudWatch client for the evaluator's rounds (creating one costs more than a round)."""
        if self._client is None:
            self._client = self.cloud.client("cloudwatch")
        return self._client

    @property
    def backend(self) -> Any:
        from moto.cloudwatch.models import cloudwatch_backends

        return cloudwatch_backends[self.cloud.lambdas.account_id][self.cloud.region]

    # -- datapoints --------------------------------------------------------------------------------
    @staticmethod
    def period_of(alarm: dict[str, Any]) -> int:
        if alarm.get("Period"):
            return int(alarm["Period"])
        periods = [int(q["MetricStat"]["Period"]) for q in alarm.get("Metrics") or [] if "MetricStat" in q]
        return periods[0] if periods else 60

    def datapoint(self, alarm: dict[str, Any], start: float, end: float) -> float | None:
        """The alarm's datapoint for the period [start, end): its statistic, or its metric math result."""
        if alarm.get("Metrics"):
            return self.datapoints(alarm, [start], end - start)[0]
        stat = alarm.get("ExtendedStatistic") or alarm.get("Statistic", "Average")
        datums = self.index.datums(alarm["Namespace"], alarm["MetricName"], alarm.get("Dimensions", []), start, end)
        return statistic(datums, stat)

    def datapoints(self, alarm: dict[str, Any], starts: list[float], period: float) -> list[float | None]:
        """The alarm's datapoints for the periods starting at ``starts``. Metric math sees the whole range, so
        FILL of a series with no datapoint in any of these periods stays empty (``metric_math.evaluate``)."""
        if not alarm.get("Metrics"):
            return [self.datapoint(alarm, s, s + period) for s in starts]
        ranged: list[dict[str, float | None]] = [{} for _ in starts]
        returned: dict[str, Any] | None = None
        for query in alarm["Metrics"]:
            if "MetricStat" in query:
                stat = query["MetricStat"]
                metric = stat["Metric"]
                for values, start in zip(ranged, starts, strict=True):
                    datums = self.index.datums(
                        metric["Namespace"], metric["MetricName"], metric.get("Dimensions", []), start, start + period
                    )
                    values[query["Id"]] = statistic(datums, stat["Stat"])
            if query.get("ReturnData", True):
                returned = query
        for query in alarm["Metrics"]:
            if "Expression" in query and query is not returned:
                # The whole series first: a later expression's FILL asks whether it is empty in the range.
                series = [self._expression(query["Expression"], values, ranged) for values in ranged]
                for values, value in zip(ranged, series, strict=True):
                    values[query["Id"]] = value
        if returned is None:
            return [None for _ in starts]
        if "Expression" in returned:
            return [self._expression(returned["Expression"], values, ranged) for values in ranged]
        return [values.get(returned["Id"]) for values in ranged]

    def _expression(
        self, text: str, values: dict[str, float | None], evaluated_range: list[dict[str, float | None]]
    ) -> float | None:
        node = self._parsed.get(text)
        if node is None:
            node = self._parsed[text] = metric_math.parse(text)
        return metric_math.evaluate(node, values, evaluated_range)

    # -- evaluation --------------------------------------------------------------------------------
    def state_of(self, alarm: dict[str, Any], now: datetime) -> tuple[str, str, dict[str, Any]] | None:
        """The state CloudWatch would set now, its reason and reason data; None to keep the current state."""
        period = self.period_of(alarm)
        n = int(alarm.get("EvaluationPeriods", 1))
        m = int(alarm.get("DatapointsToAlarm") or n)
        treat = alarm.get("TreatMissingData") or "missing"
        threshold = float(alarm["Threshold"])
        test, words = _OPERATORS[alarm["ComparisonOperator"]]
        end = math.floor(now.timestamp() / period) * period
        span = n + EXTRA_RANGE
        starts = [float(end - (span - i) * period) for i in range(span)]  # oldest first
        points = self.datapoints(alarm, starts, period)
        real = [(s, v) for s, v in zip(starts, points, strict=True) if v is not None]

        def data(state: str, reason: str, used: list[tuple[float, float]]) -> tuple[str, str, dict[str, Any]]:
            shown = ", ".join(f"{v:g} ({datetime.fromtimestamp(s, UTC):%d/%m/%y %H:%M:%S})" for s, v in used)
            reason_data = {
                "version": "1.0",
                "queryDate": now.isoformat(),
                "startDate": datetime.fromtimestamp(starts[0], UTC).isoformat(),
                "period": period,
                "recentDatapoints": [v for _, v in used],
                "threshold": threshold,
                "evaluatedDatapoints": [
                    {"timestamp": datetime.fromtimestamp(s, UTC).isoformat(), "value": v} for s, v in used
                ],
            }
            return state, reason.replace("{shown}", shown), reason_data

        if len(real) >= n:
            used = real[-n:]
            breaching = sum(1 for _, v in used if test(v, threshold))
            state = "ALARM" if breaching >= m else "OK"
            return data(
                state,
                f"Threshold Crossed: {breaching} out of the last {n} datapoints [{{shown}}] "
                f"{'were' if state == 'ALARM' else 'were not all'} {words} the threshold ({threshold:g}) "
                f"(minimum {m} datapoint{'s' if m > 1 else ''} for OK -> ALARM transition).",
                used,
            )
        if not real:
            if treat == "ignore":
                return None
            if treat == "missing":
                return data("INSUFFICIENT_DATA", f"Insufficient Data: {n} datapoints were unknown.", [])
            state = "ALARM" if treat == "breaching" and n >= m else "OK"
            return data(state, f"Threshold Crossed: no datapoints were received for {n} periods ({treat}).", [])
        # Fewer real datapoints than EvaluationPeriods. "Avoiding premature transitions to alarm state": the
        # alarm goes to ALARM when the oldest breaching datapoint of the last N is at least M periods old and
        # every more recent one breaches or is missing (with `ignore`, the state is kept instead).
        # The guide's tables show it only where every real datapoint in the range breaches ("0 - X - -", 2 of 3,
        # stays OK).
        recent = points[-n:]
        oldest = next((i for i, v in enumerate(recent) if v is not None and test(v, threshold)), None)
        premature = (
            oldest is not None
            and n - oldest >= m
            and all(v is None or test(v, threshold) for v in recent[oldest + 1 :])
            and all(test(v, threshold) for _, v in real)
        )
        if premature and treat == "ignore":
            return None
        breaching = sum(1 for _, v in real if test(v, threshold))
        filled = n - len(real)
        if treat == "breaching":
            breaching += filled
        state = "ALARM" if breaching >= m or (premature and treat == "missing") else "OK"
        return data(
            state,
            f"Threshold Crossed: {breaching} out of the last {n} datapoints [{{shown}}] ({filled} missing, "
            f"treated as {treat}) {'were' if state == 'ALARM' else 'were not all'} {words} the threshold "
            f"({threshold:g}) (minimum {m} datapoint{'s' if m > 1 else ''} for OK -> ALARM transition).",
            real,
        )

    def evaluate(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """One evaluation round over every metric alarm at ``now`` (virtual now by default), after the
        Lambda and embedded-metric datapoints due by then are ingested; returns the state changes made."""
        with self._lock:
            now = now or self.cloud.clock.now()
            self.cloud.lambdas.flush_metrics(self.cloud, now.timestamp())
            changes: list[dict[str, Any]] = []
            if not self.backend.alarms:
                return changes
            cw = self.client
            for page in cw.get_paginator("describe_alarms").paginate(AlarmTypes=["MetricAlarm"]):
                for alarm in page["MetricAlarms"]:
                    decided = self.state_of(alarm, now)
                    if decided is None or decided[0] == alarm["StateValue"]:
                        continue
                    state, reason, reason_data = decided
                    stored = self.backend.alarms.get(alarm["AlarmName"])
                    if stored is None:  # deleted meanwhile
                        continue
                    stored.update_state(reason, json.dumps(reason_data), state)
                    change = {"alarm": alarm, "old": alarm["StateValue"], "new": state, "reason": reason, "at": now}
                    changes.append(change)
                    self._dispatch(change)
            return changes

    # -- history -----------------------------------------------------------------------------------
    def record(self, alarm: Any, kind: str, summary: str, data: dict[str, Any]) -> None:
        """One alarm history item, as DescribeAlarmHistory returns it."""
        self.history.append(
            {
                "AlarmName": alarm.name,
                "AlarmType": "CompositeAlarm" if alarm.rule else "MetricAlarm",
                "Timestamp": self.cloud.clock.now(),
                "HistoryItemType": kind,
                "HistorySummary": summary,
                "HistoryData": json.dumps(data),
            }
        )

    def describe_history(self, params: dict[str, Any]) -> dict[str, Any]:
        """DescribeAlarmHistory over the recorded items (filters, ScanBy, MaxRecords and NextToken)."""
        items = list(self.history)
        if params.get("AlarmName"):
            items = [i for i in items if i["AlarmName"] == params["AlarmName"]]
        if params.get("AlarmTypes"):
            items = [i for i in items if i["AlarmType"] in params["AlarmTypes"]]
        if params.get("HistoryItemType"):
            items = [i for i in items if i["HistoryItemType"] == params["HistoryItemType"]]
        if params.get("StartDate") is not None:
            start = _epoch(params["StartDate"])
            items = [i for i in items if i["Timestamp"].timestamp() >= start]
        if params.get("EndDate") is not None:
            end = _epoch(params["EndDate"])
            items = [i for i in items if i["Timestamp"].timestamp() <= end]
        items.sort(
            key=lambda i: i["Timestamp"], reverse=params.get("ScanBy", "TimestampDescending") != "TimestampAscending"
        )
        offset = int(params.get("NextToken") or 0)
        size = int(params.get("MaxRecords") or 100)
        page = items[offset : offset + size]
        result: dict[str, Any] = {"AlarmHistoryItems": page}
        if offset + size < len(items):
            result["NextToken"] = str(offset + size)
        return result

    @contextmanager
    def emulating(self) -> Iterator[None]:
        """Patch moto's CloudWatch (while the local cloud runs) to behave as CloudWatch does where it does not:
        virtual timestamps, GetMetricStatistics on exact dimension sets, new alarms in INSUFFICIENT_DATA,
        PutMetricAlarm keeping an existing alarm's state, alarm history (StateUpdate and ConfigurationUpdate
        items) and DescribeAlarmHistory."""
        from unittest import mock

        from moto.cloudwatch import models, responses

        evaluator = self
        clock = self.cloud.clock
        original_put = models.CloudWatchBackend.put_metric_alarm
        original_delete = models.CloudWatchBackend.delete_alarms
        original_update = models.Alarm.update_state
        original_statistics = models.CloudWatchBackend.get_metric_statistics

        def get_metric_statistics(backend: Any, *args: Any, **kwargs: Any) -> Any:
            # "GetMetricStatistics": a metric is identified by all its dimensions; moto also matches datapoints
            # with more dimensions than asked for (AWS/Lambda's per-alias sets would be counted thrice).
            dimensions = kwargs.get("dimensions", args[6] if len(args) > 6 else [])
            wanted = {(d["Name"], d.get("Value")) for d in dimensions or []}
            found = []
            for period in original_statistics(backend, *args, **kwargs):
                period.metric_data = [
                    m for m in period.metric_data if {(d.name, d.value) for d in m.dimensions} == wanted
                ]
                if period.metric_data:
                    found.append(period)
            return found

        def put_metric_alarm(backend: Any, name: str, *args: Any, **kwargs: Any) -> Any:
            previous = backend.alarms.get(name)
            alarm = original_put(backend, name, *args, **kwargs)
            if previous is not None:
                # "PutMetricAlarm": updating an existing alarm keeps its state (and its history).
                for attr in ("state_value", "state_reason", "state_reason_data", "state_updated_timestamp"):
                    setattr(alarm, attr, getattr(previous, attr))
                evaluator.record(alarm, "ConfigurationUpdate", f'Alarm "{name}" updated', {"type": "Update"})
            else:
                # A new alarm starts in INSUFFICIENT_DATA until it is first evaluated.
                alarm.state_value = "INSUFFICIENT_DATA"
                alarm.state_reason = "Unchecked: Initial alarm creation"
                evaluator.record(alarm, "ConfigurationUpdate", f'Alarm "{name}" created', {"type": "Create"})
            return alarm

        def delete_alarms(backend: Any, alarm_names: list[str]) -> None:
            for name in alarm_names:
                if name in backend.alarms:
                    evaluator.record(
                        backend.alarms[name], "ConfigurationUpdate", f'Alarm "{name}" deleted', {"type": "Delete"}
                    )
            original_delete(backend, alarm_names)

        def update_state(alarm: Any, reason: str, reason_data: str, state_value: str) -> None:
            old_state, old_reason = alarm.state_value, alarm.state_reason
            original_update(alarm, reason, reason_data, state_value)
            try:
                parsed = json.loads(reason_data) if reason_data else None
            except ValueError:
                parsed = None
            new: dict[str, Any] = {"stateValue": state_value, "stateReason": reason}
            if parsed:
                new["stateReasonData"] = parsed
            evaluator.record(
                alarm,
                "StateUpdate",
                f"Alarm updated from {old_state} to {state_value}",
                {"version": "1.0", "oldState": {"stateValue": old_state, "stateReason": old_reason}, "newState": new},
            )

        def describe_alarm_history(response: Any) -> Any:
            from moto.core.responses import ActionResult

            return ActionResult(evaluator.describe_history(response._get_params()))

        with ExitStack() as stack:
            stack.enter_context(mock.patch.object(models, "utcnow", lambda: clock.now().replace(tzinfo=None)))
            stack.enter_context(mock.patch.object(models.CloudWatchBackend, "put_metric_alarm", put_metric_alarm))
            stack.enter_context(mock.patch.object(models.CloudWatchBackend, "delete_alarms", delete_alarms))
            stack.enter_context(
                mock.patch.object(models.CloudWatchBackend, "get_metric_statistics", get_metric_statistics)
            )
            stack.enter_context(mock.patch.object(models.Alarm, "update_state", update_state))
            stack.enter_context(
                mock.patch.object(
                    responses.CloudWatchResponse, "describe_alarm_history", describe_alarm_history, create=True
                )
            )
            yield

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
        iam = self.cloud.iam
        # CloudWatch publishes as its service principal on behalf of the alarm ("Amazon SNS topic policy for
        # CloudWatch alarms"): the topic policy (and, for an encrypted topic, the key policy) must allow
        # cloudwatch.amazonaws.com; a refused action is recorded in the alarm's history, as CloudWatch does.
        alarm_arn = f"arn:aws:cloudwatch:{self.cloud.region}:{iam.account}:alarm:{alarm['AlarmName']}"
        cloudwatch = service_principal("cloudwatch.amazonaws.com", iam.account, alarm_arn)
        for arn in actions:
            if ":sns:" in arn and alarm.get("ActionsEnabled", True):
                refused = iam.topic_refusal(cloudwatch, arn)
                if refused:
                    stored = self.backend.alarms.get(alarm["AlarmName"])
                    if stored is not None:
                        self.record(stored, "Action", f"Failed to execute action {arn}. Received error: {refused}", {})
                    continue
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
                        # EventBridge starts a Step Functions target with the target's role ("Using
                        # resource-based policies for Amazon EventBridge": state machines take a role, not a
                        # resource policy); a refused start is a failed invocation, not delivered.
                        with acting_as(iam.policies.role(target.get("RoleArn"))):
                            try:
                                self.cloud.client("stepfunctions").start_execution(
                                    stateMachineArn=target["Arn"], input=target.get("Input") or json.dumps(event)
                                )
                            except ClientError as exc:
                                iam.failed_deliveries.append((target["Arn"], str(exc)))
