"""Drift Lambda: the drift state machine's steps, and the whole job in one process.

Logic lives in ``modeldeck.drift``; this entry point parses the settings once, builds clients from cached
factories and dispatches on the event:

- ``{"action": "plan", "request": {...}}``: the state machine's first step. The request names one window
  (``{"model": "breast-cancer", "window": "1h", "end": "2026-11-23T08:00:00Z"}``) or nothing (the scheduled
  run: the latest complete window of every model in ``MODELS``). Returns ``runs`` (one per model) and
  ``items`` (every partition of every run, for the Distributed Map).
- ``{"Items": [...], "BatchInput": {...}}``: a Distributed Map child, a batch of partitions to profile.
- ``{"action": "reduce", "runs": [...]}``: merges each run's profiles, judges, publishes and stores.
- otherwise the whole job in this process: a scheduled (EventBridge) event runs every model in ``MODELS``;
  a direct invocation may name one window as above.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger, Tracer

from modeldeck.drift import (
    DriftSettings,
    parse_iso,
    parse_window,
    plan_run,
    profile_items,
    reduce_run,
    run_drift,
    run_scheduled,
    window_ending,
)

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


def _windows(request: dict[str, Any], s: DriftSettings) -> list[tuple[str, datetime, datetime]]:
    """(model, start, end) of the window a request names, or of every configured model's latest window."""
    length = parse_window(request["window"]) if request.get("window") else s.window
    if request.get("end"):
        end = parse_iso(request["end"])
        start = end - length
    else:
        start, end = window_ending(datetime.now(UTC), length, s.lag)
    models = [request["model"]] if request.get("model") else list(s.models)
    return [(m, start, end) for m in models]


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    s = settings()
    s3, cloudwatch, sns = clients()
    event = event if isinstance(event, dict) else {}
    if event.get("action") == "plan":
        runs = [
            plan_run(s3, s.bucket, m, lo, hi, s.feedback_lookback)
            for m, lo, hi in _windows(event.get("request") or {}, s)
        ]
        # Each partition once in the execution's state (256 KiB): the reduce step plans them again.
        return {"items": [p for run in runs for p in run.pop("partitions")], "runs": runs}
    if "Items" in event:
        return {"profiles": profile_items(s3, s.bucket, event["Items"])}
    if event.get("action") == "reduce":
        results = [
            reduce_run(
                s3,
                cloudwatch,
                sns,
                bucket=s.bucket,
                run=run,
                thresholds=s.thresholds,
                topic_arn=s.topic_arn,
                min_labeled_rows=s.min_labeled_rows,
                feedback_lookback=s.feedback_lookback,
            )
            for run in event["runs"]
        ]
    elif event.get("model"):
        results = [
            run_drift(
                s3,
                cloudwatch,
                sns,
                bucket=s.bucket,
                model=m,
                start=lo,
                end=hi,
                thresholds=s.thresholds,
                topic_arn=s.topic_arn,
                min_labeled_rows=s.min_labeled_rows,
                feedback_lookback=s.feedback_lookback,
            )
            for m, lo, hi in _windows(event, s)
        ]
    else:
        results = run_scheduled(s3, cloudwatch, sns, s, datetime.now(UTC))
    summaries = [_summary(r) for r in results]
    for summary in summaries:
        logger.info("drift window judged", extra=summary)
    return {"results": summaries}
