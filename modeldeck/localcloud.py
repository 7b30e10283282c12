"""The local cloud: moto running in-process as the default AWS for the CLI, the demo and the tests.

Everything modeldeck does against AWS it does here against moto, through the same boto3 calls. moto
keeps state in memory, so each CLI command restores the registry bucket from a state directory
(``.modeldeck/`` by default) when it starts and writes it back when it ends; that is what lets
``modeldeck train`` be followed by ``modeldeck models list`` in another command.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3

LOCAL_REGION = "us-east-1"
LOCAL_BUCKET = "modeldeck-registry-local"
_FAKE_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
             "AWS_DEFAULT_REGION": LOCAL_REGION, "AWS_REGION": LOCAL_REGION}


class LocalCloud:
    """Handles to the in-process moto cloud, with the registry bucket created."""

    def __init__(self, bucket: str = LOCAL_BUCKET) -> None:
        self.bucket = bucket
        self.region = LOCAL_REGION

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=self.region)

    def save(self, state_dir: Path) -> None:
        """Write every object of the registry bucket under ``state_dir/s3``."""
        s3 = self.client("s3")
        root = state_dir / "s3" / self.bucket
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for obj in page.get("Contents", []):
                path = root / obj["Key"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(s3.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read())

    def restore(self, state_dir: Path) -> None:
        s3 = self.client("s3")
        root = state_dir / "s3" / self.bucket
        if not root.is_dir():
            return
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            s3.put_object(Bucket=self.bucket, Key=path.relative_to(root).as_posix(), Body=path.read_bytes())


@contextmanager
def local_cloud(state_dir: Path | None = None, bucket: str = LOCAL_BUCKET) -> Iterator[LocalCloud]:
    """Start moto in-process (fake credentials, no network), optionally persisted in ``state_dir``."""
    from moto import mock_aws  # moto is heavy; only local mode pays for it.

    saved = {k: os.environ.get(k) for k in _FAKE_ENV}
    os.environ.update(_FAKE_ENV)
    try:
        with mock_aws():
            cloud = LocalCloud(bucket)
            cloud.client("s3").create_bucket(Bucket=bucket)
            if state_dir is not None:
                cloud.restore(state_dir)
            yield cloud
            if state_dir is not None:
                cloud.save(state_dir)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
