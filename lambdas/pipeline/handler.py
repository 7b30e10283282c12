"""Training pipeline Lambda (container image): runs one step of the training state machine.

The step logic lives in ``training.steps``; this entry point only parses settings, builds clients and
dispatches on ``event["step"]``. Errors keep their type name (``SpecError``, ``DatasetError``,
``ParityError``...), which Step Functions' Catch reports to SNS as the cause.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger, Tracer

from training.steps import StepContext, run_step

logger = Logger(service="modeldeck-training")
tracer = Tracer(service="modeldeck-training")


@dataclass(frozen=True)
class Settings:
    bucket: str

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Settings:
        return cls(bucket=env["MODEL_BUCKET"])


@lru_cache(maxsize=1)
def step_context() -> StepContext:
    from modeldeck.aws import client

    return StepContext(
        s3=client("s3"), bucket=Settings.from_env(dict(os.environ)).bucket, states=client("stepfunctions")
    )


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    logger.append_keys(step=event.get("step"), model=event.get("model"), run_id=event.get("run_id"))
    return run_step(event, step_context())
