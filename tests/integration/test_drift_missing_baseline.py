"""The drift job when a version's baseline cannot be read: that version is skipped, the rest is judged."""

from __future__ import annotations

from typing import Any

import numpy as np
from botocore.exceptions import ClientError

from modeldeck.registry import BASELINE, Registry
from tests.integration.test_drift_job import MODEL, clients, make_requests, put_firehose, register, run, topic

__all__ = ["clients", "topic"]  # fixtures


class UnlistableModels:
    """S3 as a caller without ``s3:ListBucket`` on ``models/`` sees it: a missing key there is AccessDenied,
    not NoSuchKey (S3 API reference, GetObject: "If you don't have the s3:ListBucket permission, Amazon S3
    returns an HTTP status code 403"). moto answers NoSuchKey whatever the caller's policy."""

    def __init__(self, s3: Any) -> None:
        self._s3 = s3

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)

    def get_object(self, **kwargs: Any) -> Any:
        try:
            return self._s3.get_object(**kwargs)
        except self._s3.exceptions.NoSuchKey:
            if not kwargs["Key"].startswith("models/"):
                raise
            error = {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}
            raise ClientError({**error, "ResponseMetadata": {"HTTPStatusCode": 403}}, "GetObject") from None


def test_a_version_whose_baseline_is_access_denied_is_skipped_not_fatal(
    cloud: Any, registry: Registry, trained_demo: Any, clients: dict[str, Any], topic: tuple[str, str]
) -> None:
    # Given v1 with its baseline, and traffic captured for v1 and for a version 7 with no baseline in the
    # registry, read by a caller for whom S3 answers that missing baseline with AccessDenied
    v1 = register(registry, trained_demo, "a")
    baseline = registry.get_json(MODEL, v1, BASELINE)
    rng = np.random.default_rng(5)
    records = make_requests(baseline, v1, 60, 5, rng) + make_requests(baseline, 7, 20, 5, rng)
    put_firehose(clients["s3"], cloud.bucket, "capture", records, "batch-1")

    # When the drift job runs for the window
    result = run({**clients, "s3": UnlistableModels(clients["s3"])}, cloud.bucket, topic[0])

    # Then v1 is judged, and v7 is reported as not judged, with the reason, instead of failing the run
    assert result["versions"][str(v1)]["status"] == "ok"
    v7 = result["versions"]["7"]
    assert v7["status"] == "no_baseline" and v7["rows"] == 100 and "AccessDenied" in v7["reason"]
    assert result["aggregate"]["versions_judged"] == [str(v1)]
