"""EventBridge: rule patterns matched against the events the local cloud emits, and scheduled rules run on
the virtual clock."""

from __future__ import annotations

import json
import re
import threading
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from modeldeck.localcloud.iam import acting_as

if TYPE_CHECKING:
    from modeldeck.localcloud.cloud import LocalCloud


def _matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    """EventBridge pattern matching for the subset modeldeck uses: nested keys and value lists."""
    for key, expected in pattern.items():
        value = event.get(key)
        if isinstance(expected, dict):
            if not isinstance(value, dict) or not _matches(expected, value):
                return False
        elif isinstance(expected, list):
            if value not in expected:
                return False
        elif value != expected:
            return False
    return True


_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_NAMES = {
    **{m: i + 1 for i, m in enumerate(("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV"))},
    "DEC": 12,
    **{d: i + 1 for i, d in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))},
}


def _cron_field(field: str, value: int, lo: int, hi: int) -> bool:
    """One field of an EventBridge cron expression: ``*``, ``?``, lists, ranges and ``/`` increments."""
    if field in ("*", "?"):
        return True
    for part in field.split(","):
        base, _, step = part.partition("/")
        if base == "*":
            start, end = lo, hi
        elif "-" in base:
            a, b = base.split("-", 1)
            start, end = int(_NAMES.get(a, a)), int(_NAMES.get(b, b))
        else:
            start = int(_NAMES.get(base, base))
            end = hi if step else start
        if start <= value <= end and (value - start) % int(step or 1) == 0:
            return True
    return False


def cron_matches(expression: str, at: datetime) -> bool:
    """Whether ``cron(minutes hours day-of-month month day-of-week year)`` fires at the minute ``at`` (UTC).
    Day-of-week counts 1 = Sunday. The ``L``, ``W`` and ``#`` wildcards are not used by modeldeck."""
    minute, hour, dom, month, dow, *year = expression[len("cron(") : -1].split()
    weekday = at.isoweekday() % 7 + 1  # Sunday 1 ... Saturday 7
    return (
        _cron_field(minute, at.minute, 0, 59)
        and _cron_field(hour, at.hour, 0, 23)
        and _cron_field(dom, at.day, 1, 31)
        and _cron_field(month, at.month, 1, 12)
        and _cron_field(dow, weekday, 1, 7)
        and (not year or _cron_field(year[0], at.year, 1970, 2199))
    )


class Schedules:
    """EventBridge rules that run on a schedule, fired on the local cloud's virtual clock.

    AWS "Creating a rule that runs on a schedule in Amazon EventBridge" and "Schedule expressions for rules":
    a ``rate(...)`` rule runs every period counted from the rule's creation; a ``cron(...)`` rule at each
    matching minute, in UTC; the finest resolution is a minute. Each run sends the "Scheduled Event" (source
    ``aws.events``, the rule's ARN in ``resources``) to every target, or the target's constant ``Input``: a
    Lambda function is invoked asynchronously as ``events.amazonaws.com`` (its resource policy must allow the
    rule), a state machine is started with the target's role. A target that fails is recorded in
    ``failed``, as EventBridge counts ``FailedInvocations``.
    """

    def __init__(self, cloud: LocalCloud) -> None:
        self.cloud = cloud
        # logical id -> (rule, next run of a rate rule, its period in seconds); a cron rule has no next run
        self._rules: dict[str, tuple[dict[str, Any], float | None, float]] = {}
        self._lock = threading.Lock()
        self.fired: list[dict[str, Any]] = []
        self.failed: list[tuple[str, str]] = []

    def put(self, logical: str, rule: dict[str, Any], arn: str) -> None:
        """Schedule (or reschedule) the rule ``arn``; a rule without a ScheduleExpression, or disabled, is
        removed."""
        expression = str(rule.get("ScheduleExpression") or "")
        rule = {**rule, "Arn": arn}
        with self._lock:
            self._rules.pop(logical, None)
            if not expression or rule.get("State", "ENABLED") != "ENABLED":
                return
            rate = _RATE.match(expression)
            if rate:
                period = int(rate.group(1)) * _UNIT_SECONDS[rate.group(2).rstrip("s")]
                self._rules[logical] = (rule, self.cloud.clock.time() + period, period)
            elif expression.startswith("cron(") and expression.endswith(")"):
                self._rules[logical] = (rule, None, 0.0)
            else:
                raise ValueError(f"{logical}: unsupported ScheduleExpression {expression!r}")

    def tick(self, at: datetime) -> None:
        """Run the rules due at the virtual minute ``at`` (a minute listener of the clock)."""
        due: list[dict[str, Any]] = []
        with self._lock:
            for logical, (rule, next_run, period) in list(self._rules.items()):
                if next_run is None:
                    if cron_matches(str(rule["ScheduleExpression"]), at):
                        due.append(rule)
                elif next_run <= at.timestamp():
                    while next_run <= at.timestamp():
                        next_run += period
                    self._rules[logical] = (rule, next_run, period)
                    due.append(rule)
        for rule in due:
            self._run(rule, at)

    def _run(self, rule: dict[str, Any], at: datetime) -> None:
        region, account, arn = self.cloud.region, self.cloud.iam.account, str(rule["Arn"])
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": account,
            "time": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": region,
            "resources": [arn],
            "detail": {},
        }
        self.fired.append(event)
        for target in rule.get("Targets") or []:
            target_arn = str(target.get("Arn"))
            payload = target.get("Input") or json.dumps(event)
            try:
                if ":lambda:" in target_arn:
                    with self.cloud.iam.invoking_as("events.amazonaws.com", "events", arn.split(":", 5)[5]):
                        self.cloud.client("lambda").invoke(
                            FunctionName=target_arn, InvocationType="Event", Payload=payload
                        )
                elif ":states:" in target_arn:
                    with acting_as(self.cloud.iam.policies.role(target.get("RoleArn"))):
                        # EventBridge names no execution, so Step Functions generates a UUID for each (moto
                        # would name every one "None" and refuse the second start).
                        self.cloud.client("stepfunctions").start_execution(
                            stateMachineArn=target_arn, name=str(uuid.uuid4()), input=payload
                        )
                else:
                    raise ValueError(f"target type not emulated: {target_arn}")
            except Exception as exc:  # EventBridge records a failed invocation and goes on
                self.failed.append((target_arn, str(exc)))
