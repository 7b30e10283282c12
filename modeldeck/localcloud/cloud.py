"""The local cloud itself: moto started in-process, with the emulated services wired together."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3

from modeldeck.localcloud.base import _FAKE_ENV, LOCAL_BUCKET, LOCAL_REGION, MOTO_CONFIG, _restore_environ
from modeldeck.localcloud.cloudformation import TemplateDeployer
from modeldeck.localcloud.cloudwatch import AlarmEvaluator
from modeldeck.localcloud.lambda_runtime import _ROUTER, LambdaRuntime, RoutedStdout
from modeldeck.localcloud.logs import CaptureSink
from modeldeck.localcloud.state import restore_state, save_state


class LocalCloud:
    """Handles to the in-process moto cloud, with the registry bucket created."""

    def __init__(self, bucket: str = LOCAL_BUCKET) -> None:
        self.bucket = bucket
        self.region = LOCAL_REGION
        self.lambdas = LambdaRuntime(region=self.region)
        self.alarms = AlarmEvaluator(self)
        self.deployer = TemplateDeployer(self)
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()
        self.capture_sink: CaptureSink | None = None

    def start_capture(self) -> CaptureSink:
        """Deliver the ``modeldeck.capture`` log lines into the bucket, as Logs + Firehose do on AWS."""
        if self.capture_sink is None:
            from modeldeck.capture import CAPTURE_LOGGER

            self.capture_sink = CaptureSink(self)
            capture = logging.getLogger(CAPTURE_LOGGER)
            capture.addHandler(self.capture_sink)
            capture.setLevel(logging.INFO)
            capture.propagate = False
        return self.capture_sink

    def flush_capture(self) -> None:
        """Deliver buffered capture and feedback records to S3 now (tests and the drift job call this)."""
        if self.capture_sink is not None:
            self.capture_sink.flush()

    def stop_capture(self) -> None:
        if self.capture_sink is not None:
            from modeldeck.capture import CAPTURE_LOGGER

            logging.getLogger(CAPTURE_LOGGER).removeHandler(self.capture_sink)
            self.capture_sink.close()
            self.capture_sink = None

    def start_ticker(self, interval: float = 0.5) -> None:
        """Evaluate alarms every ``interval`` seconds in the background, as CloudWatch does continuously."""
        if self._ticker is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.alarms.evaluate()
                except Exception as exc:  # keep evaluating; a bad round must not stop alarms
                    print(f"local cloud: alarm evaluation failed: {exc}", file=sys.stderr)

        self._ticker = threading.Thread(target=loop, name="local-cloudwatch", daemon=True)
        self._ticker.start()

    def stop_ticker(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
            self._ticker = None
        self._stop.clear()

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=self.region)

    def deploy(self, templates: list[dict[str, Any]]) -> None:
        """Deploy the app's synthesized templates; the registry is then the bucket the stacks output."""
        self.deployer.deploy(templates)
        self.bucket = self.deployer.outputs.get("RegistryBucketName", self.bucket)

    def save(self, state_dir: Path) -> None:
        """Persist what commands change: bucket objects, published Lambda versions and aliases, alarms."""
        save_state(self, state_dir)

    def restore(self, state_dir: Path) -> None:
        """Replay saved state on top of a fresh deployment (buckets, versions, aliases, alarm states)."""
        restore_state(self, state_dir)


@contextmanager
def local_cloud(
    state_dir: Path | None = None, bucket: str = LOCAL_BUCKET, templates: list[dict[str, Any]] | None = None
) -> Iterator[LocalCloud]:
    """Start moto in-process (fake credentials, no network), deploy ``templates`` into it, and restore the
    state saved in ``state_dir`` on top (saved again on exit)."""
    from unittest import mock

    from moto import mock_aws  # moto is heavy; only local mode pays for it.
    from moto.awslambda.responses import LambdaResponse

    saved = {k: os.environ.get(k) for k in _FAKE_ENV}
    os.environ.update(_FAKE_ENV)
    cloud = LocalCloud(bucket)

    def invoke(response: Any) -> tuple[int, dict[str, str], bytes]:
        return cloud.lambdas.moto_invoke(response)

    # Step Functions' engine logs every failed state as an ERROR; executions report failures themselves.
    logging.getLogger("moto.stepfunctions").setLevel(logging.CRITICAL)
    previous_stdout = sys.stdout
    if not isinstance(sys.stdout, RoutedStdout):
        # One router per process: loggers keep the stream they were created with, and Python's logging
        # shares a logger (and its handler) between every instance of a handler module with that name.
        _ROUTER.passthrough = sys.stdout
        sys.stdout = _ROUTER
    try:
        with mock_aws(config=MOTO_CONFIG), mock.patch.object(LambdaResponse, "invoke", invoke):
            cloud.client("s3").create_bucket(Bucket=bucket)
            if templates:
                cloud.deploy(templates)
            if state_dir is not None:
                cloud.restore(state_dir)
            cloud.start_capture()
            try:
                yield cloud
            finally:
                cloud.stop_ticker()
                cloud.stop_capture()
            if state_dir is not None:
                cloud.save(state_dir)
    finally:
        sys.stdout = previous_stdout
        _restore_environ(saved)
