"""The local cloud: moto running in-process as the default AWS for the CLI, the demo and the tests.

Everything modeldeck does against AWS it does here against moto, through the same boto3 calls. This package is
the one place that knows moto's internals; what moto cannot do, it emulates, one module per service: ``clock``
(the virtual clock), ``lambda_runtime`` (Lambda), ``cloudwatch`` (metrics and alarms), ``events`` (EventBridge
rules and schedules), ``cloudformation`` (the template deployer), ``logs`` (CloudWatch Logs and subscription
filters), ``firehose`` (delivery streams into S3), ``state`` (state between commands), ``endpoint`` (the
shared endpoint of ``serve``), and ``cloud`` (the whole, started by ``local_cloud``).

- **Lambda runs handlers in-process.** moto's Docker-free Lambda backend only echoes payloads, so its
  ``invoke`` is replaced by ``LambdaRuntime``: it resolves the function version (choosing by the alias's
  ``RoutingConfig`` weights, as Lambda does), and runs the handler named in the function's
  configuration in an execution environment of its own, created with that version's environment
  variables. Step Functions' Lambda tasks go through the same path.
- **State between commands.** moto keeps state in memory, so each CLI command restores the registry
  bucket from a state directory (``.modeldeck/`` by default) when it starts and writes it back when it
  ends; that is what lets ``modeldeck train`` be followed by ``modeldeck models list``.
"""

from modeldeck.localcloud.base import LOCAL_BUCKET, LOCAL_REGION, MOTO_CONFIG, patched_environ
from modeldeck.localcloud.cloud import LocalCloud, local_cloud
from modeldeck.localcloud.cloudformation import (
    REPO_ROOT,
    TemplateDeployer,
    assembly_templates,
    load_templates,
    with_api_throttle,
)
from modeldeck.localcloud.cloudwatch import ALARM_ARGUMENTS, AlarmEvaluator
from modeldeck.localcloud.endpoint import ENDPOINT_FILE, SharedEndpoint, endpoint_client_factory, running_endpoint
from modeldeck.localcloud.lambda_runtime import (
    ExecutionEnvironment,
    FakeContext,
    LambdaRuntime,
    RoutedStdout,
    deploy_inference_version,
)

__all__ = [
    "ALARM_ARGUMENTS",
    "ENDPOINT_FILE",
    "LOCAL_BUCKET",
    "LOCAL_REGION",
    "MOTO_CONFIG",
    "REPO_ROOT",
    "AlarmEvaluator",
    "ExecutionEnvironment",
    "FakeContext",
    "LambdaRuntime",
    "LocalCloud",
    "RoutedStdout",
    "SharedEndpoint",
    "TemplateDeployer",
    "assembly_templates",
    "deploy_inference_version",
    "endpoint_client_factory",
    "load_templates",
    "local_cloud",
    "patched_environ",
    "running_endpoint",
    "with_api_throttle",
]
