"""Drift Lambda: on its schedule, judges the latest complete window of every configured model.

Logic lives in ``modeldeck.drift``; this entry point parses the settings once, builds clients from cached
factories and dispatches. A scheduled (EventBridge) event runs every model in ``MODELS``; a direct
invocation may name one window: ``{"model": "breast-cancer", "window": "1h", "end": "2026-11-23T08:00:00Z"}``.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger, Tracer

from modeldeck.drift import DriftSettings, parse_iso, parse_window, run_drift, run_scheduled, window_ending

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "modeldeck-drift"))
tracer = Tracer(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "modeldeck-drift"))


@lru_cache(maxsize=1)
def settings() -> DriftSettings:
    return DriftSettings.from_env(dict(os.environ))


@lru_cache(maxsize=1)
def clients() -> tuple[Any, Any, Any]:
    from modeldeck.aws import client

    return client("s3"), client("cloudwatch"), client("sns")


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    agg = result["aggregate"]
    return {
        "model": result["model"],
        "window": result["window"],
        "rows": result["rows"],
        "status": agg["status"],
        "alarm": agg["alarm"],
        "breaches": agg["breaches"],
        "replayed": result.get("replayed", False),
    }


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    s = settings()
    s3, cloudwatch, sns = clients()
    if isinstance(event, dict) and event.get("model"):
        length = parse_window(event["window"]) if event.get("window") else s.window
        end = parse_iso(event["end"]) if event.get("end") else None
        if end is None:
            start, end = window_ending(datetime.now(UTC), length, s.lag)
        else:
            start = end - length
        results = [
            run_drift(
                s3,
                cloudwatch,
                sns,
                bucket=s.bucket,
                model=event["model"],
                start=start,
                end=end,
                thresholds=s.thresholds,
                topic_arn=s.topic_arn,
                min_labeled_rows=s.min_labeled_rows,
                feedback_lookback=s.feedback_lookback,
            )
        ]
    else:
        results = run_scheduled(s3, cloudwatch, sns, s, datetime.now(UTC))
    summaries = [_summary(r) for r in results]
    for summary in summaries:
        logger.info("drift window judged", extra=summary)
    return {"results": summaries}
