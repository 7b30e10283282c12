"""SageMaker entry point: the pipeline's ``train`` step as a SageMaker training job, in our training image.

SageMaker runs the training image as ``docker run IMAGE train`` and writes the job's hyperparameters to
``/opt/ml/input/config/hyperparameters.json`` (SageMaker developer guide, "How Amazon SageMaker provides
training information"); values are strings. The state machine passes ``model``, ``run_id`` (the
execution's name), ``spec_key`` (where the validate step staged the execution's spec) and ``region``.
The step stages ``pipeline.joblib`` under ``staging/{model}/{run_id}/`` exactly as the Lambda step does,
so the state machine carries on unchanged. The image is the training Lambda's (Python 3.12, our pins).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from training.steps import StepContext, run_step

HYPERPARAMETERS = Path("/opt/ml/input/config/hyperparameters.json")


def train_event(hyperparameters: Mapping[str, str], ctx: StepContext) -> dict[str, Any]:
    """The ``train`` step's event: the execution's spec as the validate step staged it (never the image's)."""
    body = ctx.s3.get_object(Bucket=ctx.bucket, Key=hyperparameters["spec_key"])["Body"].read()
    return {
        "step": "train",
        "model": hyperparameters["model"],
        "run_id": hyperparameters["run_id"],
        "spec": json.loads(body),
    }


def main() -> None:
    """Run the train step with the job's hyperparameters and print its result (the job's log)."""
    from modeldeck.aws import client

    hyperparameters = json.loads(HYPERPARAMETERS.read_text())
    s3 = client("s3", region_name=hyperparameters["region"])
    ctx = StepContext(s3=s3, bucket=os.environ["MODEL_BUCKET"])
    print(json.dumps(run_step(train_event(hyperparameters, ctx), ctx)))


if __name__ == "__main__":
    main()
