"""Benchmark baseline, not product code: the plain scikit-learn + joblib Lambda handler people write first.

It does the same job as ``lambdas.inference.handler`` for ``:predict`` (API Gateway event in, JSON
predictions and probabilities out): the pickled Pipeline is fetched from S3 once, then each request is a
pandas DataFrame through ``predict_proba``, after binning the spec's derived features with ``pandas.cut`` as
training does. It has no schema validation, metrics or capture.
"""

from __future__ import annotations

import io
import json
import os
from functools import lru_cache
from typing import Any

import boto3
import joblib
import numpy as np
import pandas as pd


@lru_cache(maxsize=1)
def model() -> Any:
    body = boto3.client("s3").get_object(Bucket=os.environ["MODEL_BUCKET"], Key=os.environ["MODEL_KEY"])["Body"]
    return joblib.load(io.BytesIO(body.read()))


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    saved = model()
    pipeline = saved["pipeline"]
    if event.get("httpMethod") == "GET":
        return {"statusCode": 200, "body": json.dumps({"ready": True})}
    try:
        instances = json.loads(event["body"])["instances"]
        frame = pd.DataFrame.from_records(instances)
        for name, source, bins, labels in saved["derive"]:
            binned = pd.cut(frame[source].astype(float), [-np.inf, *bins, np.inf], labels=labels, right=True)
            frame[name] = binned.astype(object).fillna("")
        proba = pipeline.predict_proba(frame)
    except (KeyError, ValueError, TypeError) as exc:
        return {"statusCode": 400, "body": json.dumps({"error": str(exc)})}
    labels = pipeline.classes_[proba.argmax(axis=1)]
    body = {"predictions": labels.tolist(), "probabilities": proba.tolist()}
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body)}
