"""SageMaker entry point: runs the pipeline's ``train`` step on AWS's prebuilt scikit-learn image.

The prebuilt container installs the source bundle's ``requirements.txt`` (``training/requirements.txt``,
so scikit-learn matches the training Lambda that unpickles the result), then runs this script with the
job's hyperparameters in ``SM_HPS``. The step stages ``pipeline.joblib`` under
``staging/{model}/{run_id}/`` exactly like the Lambda step, so the state machine carries on unchanged.
"""

from __future__ import annotations

import json
import os

import boto3

from training.steps import StepContext, run_step


def main() -> None:
    params = json.loads(os.environ.get("SM_HPS", "{}"))
    event = {"step": "train", "model": params["model"], "run_id": params["run_id"]}
    result = run_step(event, StepContext(s3=boto3.client("s3"), bucket=os.environ["MODEL_BUCKET"]))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
