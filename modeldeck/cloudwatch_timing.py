"""How late CloudWatch sees what happened, and so how long a canary must bake before its alarms can judge it.

- Lambda's metrics and metrics from the embedded metric format have one-minute resolution and reach
  CloudWatch one to three minutes after the invocation ("Working with Lambda function metrics"; "Embedded
  metric format": metrics extracted from logs arrive after log delivery).
- An alarm is evaluated about once a minute, over whole periods ("Using Amazon CloudWatch alarms":
  evaluating an alarm).

So an error made in the last minute of a bake is only visible to an alarm a period plus the metric delay
later, and a bake shorter than that decides on nothing.
"""

from __future__ import annotations

METRIC_DELAY_SECONDS = 180


def minimum_bake_seconds(period_seconds: int) -> int:
    """The shortest bake whose traffic an alarm with this period can have judged: one period plus the delay."""
    return int(period_seconds) + METRIC_DELAY_SECONDS
