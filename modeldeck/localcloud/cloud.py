"""The local cloud itself: moto started in-process, with the emulated services wired together."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3

from modeldeck.localcloud.base import (
    _FAKE_ENV,
    LOCAL_BUCKET,
    LOCAL_REGION,
    MOTO_CONFIG,
    _restore_environ,
    consistent_environ_reads,
)
from modeldeck.localcloud.clock import VirtualClock
from modeldeck.localcloud.cloudformation import TemplateDeployer
from modeldeck.localcloud.cloudwatch import AlarmEvaluator
from modeldeck.localcloud.events import Schedules
from modeldeck.localcloud.firehose import Firehose
from modeldeck.localcloud.iam import Enforcer, as_administrator, enforcing
from modeldeck.localcloud.lambda_runtime import (
    _ROUTER,
    LambdaRuntime,
    RoutedStdout,
    _real_monotonic,
    _real_sleep,
    sandbox_monotonic,
    sandbox_sleep,
)
from modeldeck.localcloud.logs import Logs
from modeldeck.localcloud.s3 import atomic_object_updates
from modeldeck.localcloud.state import restore_state, save_state
from modeldeck.localcloud.stepfunctions import on_the_clock


class LocalCloud:
    """Handles to the in-process moto cloud, with the registry bucket created.

    ``clock`` is the virtual clock every emulated service follows (``clock.now()`` is the cloud's time);
    ``metric_delay`` is how long Lambda and embedded metrics take to reach CloudWatch (two minutes by
    default; AWS says one to three).
    """

    def __init__(self, bucket: str = LOCAL_BUCKET, metric_delay: float = 120.0) -> None:
        self.bucket = bucket
        self.region = LOCAL_REGION
        self.clock = VirtualClock()
        self.lambdas = LambdaRuntime(region=self.region, clock=self.clock, metric_delay=metric_delay)
        self.alarms = AlarmEvaluator(self)
        self.deployer = TemplateDeployer(self)
        # IAM as AWS enforces it: handlers run as their execution roles from the deployed templates.
        self.iam = Enforcer(self.deployer.account_id, self.region)
        self.deployer.on_deployed.append(self.iam.load)
        self.lambdas.principal_of = self.iam.policies_principal
        self.lambdas.authorize_invoke = self.iam.authorize_invoke
        self.schedules = Schedules(self)
        self.logs = Logs(self)
        self.firehose = Firehose(self)
        self.lambdas.log_sink = self.logs.put
        self._evaluating = True
        self.clock.every_minute(self._minute)

    def _minute(self, at: datetime) -> None:
        # Firehose delivers a buffer at least once per buffering interval (the template's 60 s), also when
        # the clock jumps; then CloudWatch evaluates the alarms. Both are the services' own work, whichever
        # thread (maybe a sleeping handler's) moves the clock: not restricted to that handler's role.
        with as_administrator():
            # Subscription filters send their batches; Firehose delivers what has waited its buffering interval.
            self.logs.flush()
            self.firehose.tick(at)
            if self._evaluating:
                self.alarms.evaluate(at)
            self.schedules.tick(at)

    def flush_capture(self) -> None:
        """Deliver buffered capture and feedback records to S3 now (tests and the drift job call this)."""
        with as_administrator():
            self.logs.flush()
            self.logs.settle()  # a minute's delivery on another thread may still be on its way to Firehose
            self.firehose.flush()

    def start_ticker(self, interval: float | None = None) -> None:
        """Evaluate alarms once a virtual minute, as CloudWatch does (on from the start; ``interval`` is
        ignored: alarms no longer follow the wall clock)."""
        self._evaluating = True

    def stop_ticker(self) -> None:
        """Stop evaluating alarms (their states then hold until ``alarms.evaluate()`` is called)."""
        self._evaluating = False

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
    state_dir: Path | None = None,
    bucket: str = LOCAL_BUCKET,
    templates: list[dict[str, Any]] | None = None,
    metric_delay: float = 120.0,
) -> Iterator[LocalCloud]:
    """Start moto in-process (fake credentials, no network), deploy ``templates`` into it, and restore the
    state saved in ``state_dir`` on top (saved again on exit). The cloud runs on its virtual clock."""
    from unittest import mock

    from moto import mock_aws  # moto is heavy; only local mode pays for it.
    from moto.awslambda.responses import LambdaResponse

    saved = {k: os.environ.get(k) for k in _FAKE_ENV}
    os.environ.update(_FAKE_ENV)
    cloud = LocalCloud(bucket, metric_delay=metric_delay)

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
        with (
            mock_aws(config=MOTO_CONFIG),
            mock.patch.object(LambdaResponse, "invoke", invoke),
            cloud.alarms.emulating(),
            on_the_clock(cloud.clock, cloud.iam),
            enforcing(cloud.iam),
            _virtual_time(cloud.clock),
            atomic_object_updates(),
            consistent_environ_reads(),
        ):
            cloud.clock.start()
            cloud.client("s3").create_bucket(Bucket=bucket)
            if templates:
                cloud.deploy(templates)
            if state_dir is not None:
                cloud.restore(state_dir)
            try:
                yield cloud
            finally:
                cloud.stop_ticker()
                cloud.clock.stop()
            if state_dir is not None:
                cloud.save(state_dir)
    finally:
        sys.stdout = previous_stdout
        _restore_environ(saved)


@contextmanager
def _virtual_time(clock: VirtualClock) -> Iterator[None]:
    """What reads the time on the product's behalf follows the clock while the local cloud runs: a Lambda
    handler's ``time.sleep`` and ``time.monotonic`` (the sandbox's time; see ``sandbox_sleep``: its caches' TTLs
    pass in virtual time), the registry's ``utcnow`` (release and registry records), wherever it was imported,
    and SNS's message ``Timestamp`` (a notification is delivered at the cloud's time: "Amazon SNS message and
    JSON formats")."""
    import time
    from unittest import mock

    from moto.sns import models as sns_models

    from modeldeck import registry

    def utcnow() -> str:
        return clock.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    original = registry.utcnow
    users = [m for m in list(sys.modules.values()) if getattr(m, "utcnow", None) is original]
    for module in users:
        module.utcnow = utcnow  # type: ignore[attr-defined]

    def sns_timestamp(value: datetime | None = None) -> str:
        at = value or clock.now().replace(tzinfo=None)
        return at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    time.sleep, time.monotonic = sandbox_sleep, sandbox_monotonic
    try:
        with mock.patch.object(sns_models, "iso_8601_datetime_with_milliseconds", sns_timestamp):
            yield
    finally:
        time.sleep, time.monotonic = _real_sleep, _real_monotonic
        for module in users:
            module.utcnow = original  # type: ignore[attr-defined]
