"""How late CloudWatch sees what happened, and so how long a canary must bake before its alarms can judge it.

- Lambda's metrics and metrics from the embedded metric format have one-minute resolution and reach
  CloudWatch one to three minutes after the invocation ("Working with Lambda function metrics"; "Embedded
  metric format": metrics extracted from logs arrive after log delivery).
- An alarm is evaluated about once a minute, over whole periods ("Using Amazon CloudWatch alarms":
  evaluating an alarm).

So an error made in the last minute of a bake is only visible to an alarm a period plus the metric delay
later, and a bake shorter than that decides on nothing.

What an alarm can see of a series that has no datapoint at all in its range is also written down here: see
:func:`error_rate_expression`.
"""

from __future__ import annotations

METRIC_DELAY_SECONDS = 180


def minimum_bake_seconds(period_seconds: int) -> int:
    """The shortest bake whose traffic an alarm with this period can have judged: one period plus the delay."""
    return int(period_seconds) + METRIC_DELAY_SECONDS


def error_rate_expression(min_requests: int, errors: str = "errors", requests: str = "requests") -> str:
    """Metric math for "percent of requests answered 5xx", 0 below ``min_requests`` requests in a period.

    Whether ``FILL`` gives values for a series with no datapoint anywhere in the queried range is not
    documented ("Metric math syntax and functions"); read strictly it does not, and arithmetic with an empty
    series is empty. So only the error count is filled (no error datapoint means no error: the rate is 0, as
    it should be), the denominator is a count that exists whenever there is traffic, and no expression sums
    filled series that may be empty (one idle route would empty the whole sum).
    """
    return f"IF({requests} >= {int(min_requests)}, 100 * FILL({errors}, 0) / {requests}, 0)"
