"""Experiment Lambda: on its schedule, judges the running A/B test of every configured model.

Logic lives in ``modeldeck.experiment_analysis``; this entry point parses the settings once, builds clients from
cached factories and dispatches. A scheduled (EventBridge) event runs every model in ``MODELS`` (a model with
no running experiment costs one S3 read); a direct invocation names one model, ``{"model": "breast-cancer"}``,
and gets its snapshot back (``modeldeck experiment status`` invokes it so).
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger, Tracer

from modeldeck import registry
from modeldeck.experiment_analysis import parse_iso, run_experiment, run_scheduled

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "modeldeck-experiment"))
tracer = Tracer(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "modeldeck-experiment"))


@lru_cache(maxsize=1)
def settings() -> tuple[str, tuple[str, ...], str | None]:
    """(bucket, models, topic ARN) from MODEL_BUCKET, MODELS (comma-separated) and TOPIC_ARN."""
    env = os.environ
    models = tuple(m.strip() for m in env.get("MODELS", "").split(",") if m.strip())
    return env["MODEL_BUCKET"], models, env.get("TOPIC_ARN") or None


@lru_cache(maxsize=1)
def clients() -> tuple[Any, Any]:
    from modeldeck.aws import client

    return client("s3"), client("sns")


def _write(text: str) -> None:
    # sys.stdout looked up per call: the local cloud routes each invocation's stdout to its own log.
    sys.stdout.write(text)


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    bucket, models, topic_arn = settings()
    s3, sns = clients()
    # The registry's clock, as release and registry records are stamped (the local cloud's virtual time).
    now = parse_iso(registry.utcnow())
    if isinstance(event, dict) and event.get("model"):
        model = str(event["model"])
        if model not in models:
            return {"error": f"{model!r} is not a model of this deployment ({', '.join(models) or 'none'})"}
        snapshot = run_experiment(s3, sns, bucket=bucket, model=model, now=now, topic_arn=topic_arn, write=_write)
        return {"snapshot": snapshot}
    snapshots = run_scheduled(s3, sns, bucket=bucket, models=models, now=now, topic_arn=topic_arn, write=_write)
    for s in snapshots:
        logger.info("experiment judged", extra={"experiment": s["experiment"]["id"], "decision": s["decision"]})
    return {"experiments": [{"id": s["experiment"]["id"], "decision": s["decision"]} for s in snapshots]}
