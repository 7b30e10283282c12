"""Release Lambda: runs one task of the release state machine (``event["action"]``).

Logic lives in ``modeldeck.release``; this entry point parses settings once, builds clients from
cached factories and dispatches.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger, Tracer

from modeldeck.registry import Registry
from modeldeck.release import Clients, Policy, handle

logger = Logger(service="modeldeck-release")
tracer = Tracer(service="modeldeck-release")


@lru_cache(maxsize=1)
def clients() -> Clients:
    from modeldeck.aws import client

    env = dict(os.environ)
    return Clients(
        lam=client("lambda"),
        cloudwatch=client("cloudwatch"),
        sns=client("sns"),
        registry=Registry(client("s3"), env["MODEL_BUCKET"]),
        topic_arn=env.get("TOPIC_ARN"),
        policy=Policy.from_env(env),
        sfn=client("stepfunctions"),
        release_state_machine=env.get("RELEASE_STATE_MACHINE_ARN"),
    )


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    logger.append_keys(action=event.get("action"), model=event.get("model"), version=event.get("version"))
    return handle(event, clients())
