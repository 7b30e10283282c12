"""Assertions on the synthesized templates (one shared synth; see conftest.py).

Given the default configuration (cdk.json), when the app is synthesized, then each test checks one
property of the result. No test names a logical id: resources are found by type and properties.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest
from aws_cdk.assertions import Match

from tests.fixtures import inference as inference_fixtures
from tests.infra.conftest import Synth, definition

pytestmark = pytest.mark.xdist_group("infra")
MODEL = "breast-cancer"
FUNCTION = f"modeldeck-dev-{MODEL}"
# The inference handler's fixtures, for the tests that check what the alarms see against what it emits.
configure_handler = inference_fixtures.configure_handler
served_cloud = inference_fixtures.served_cloud


def _statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return policy["Properties"]["PolicyDocument"]["Statement"]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _arn_text(value: Any) -> str:
    """A resource ARN with its tokens flattened, for prefix checks: Fn::Join parts joined, tokens as <x>."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        return "".join(_arn_text(p) for p in value["Fn::Join"][1])
    return "<token>"


def _policies_of_role(synth: Synth, stack: str, role_logical: str) -> list[dict[str, Any]]:
    return [
        p
        for p in synth.resources("AWS::IAM::Policy", stack).values()
        if {"Ref": role_logical} in p["Properties"]["Roles"]
    ]


def _function(synth: Synth, name: str) -> tuple[str, dict[str, Any]]:
    for key, fn in synth.resources("AWS::Lambda::Function").items():
        if fn["Properties"].get("FunctionName") == name:
            return key, fn
    raise AssertionError(f"no function named {name}")


def test_cdk_nag_reports_no_unacknowledged_findings(synth: Synth) -> None:
    report = synth.outdir / "validation-report.json"
    details = report.read_text()[:4000] if report.exists() else ""
    assert synth.nag_error is None, f"cdk-nag findings:\n{details}"


def test_cfn_lint_reports_no_errors_on_any_template(synth: Synth) -> None:
    files = sorted(str(p) for p in synth.outdir.glob("*.template.json"))
    assert len(files) == 6
    done = subprocess.run(
        [sys.executable, "-m", "cfnlint", "--format", "json", *files], capture_output=True, text=True, check=False
    )
    findings = json.loads(done.stdout or "[]")
    errors = [f for f in findings if f["Level"] == "Error"]
    assert errors == [], json.dumps(errors, indent=1)[:3000]


def test_registry_bucket_is_versioned_encrypted_private_logged_and_retained(synth: Synth) -> None:
    t = synth.template("Registry")
    t.has_resource(
        "AWS::S3::Bucket",
        {
            "DeletionPolicy": "Retain",
            "Properties": Match.object_like(
                {
                    "BucketName": Match.any_value(),
                    "VersioningConfiguration": {"Status": "Enabled"},
                    "BucketEncryption": {
                        "ServerSideEncryptionConfiguration": [
                            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                        ]
                    },
                    "PublicAccessBlockConfiguration": {
                        "BlockPublicAcls": True,
                        "BlockPublicPolicy": True,
                        "IgnorePublicAcls": True,
                        "RestrictPublicBuckets": True,
                    },
                    "LoggingConfiguration": {"DestinationBucketName": Match.any_value(), "LogFilePrefix": "registry/"},
                }
            ),
        },
    )
    t.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})]
                )
            }
        },
    )
    t.has_output("RegistryBucketName", {})


def test_captured_data_ages_out_but_models_never_expire(synth: Synth) -> None:
    buckets = synth.resources("AWS::S3::Bucket", "Registry")
    registry = next(b for b in buckets.values() if "LoggingConfiguration" in b["Properties"])
    rules = registry["Properties"]["LifecycleConfiguration"]["Rules"]
    by_prefix = {r.get("Prefix"): r for r in rules}
    for prefix in ("capture/", "feedback/"):
        rule = by_prefix[prefix]
        assert rule["Transitions"] == [{"StorageClass": "STANDARD_IA", "TransitionInDays": 30}]
        assert rule["ExpirationInDays"] == 365
    assert any("NoncurrentVersionExpiration" in r for r in rules)
    assert not any((r.get("Prefix") or "").startswith("models") for r in rules)


def test_inference_function_runtime_architecture_and_pinned_environment(synth: Synth) -> None:
    _, fn = _function(synth, FUNCTION)
    props = fn["Properties"]
    assert props["Runtime"] == "python3.12"
    assert props["Architectures"] == ["arm64"]
    assert props["Handler"] == "lambdas.inference.handler.lambda_handler"
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert props["LoggingConfig"]["LogFormat"] == "JSON"
    env = props["Environment"]["Variables"]
    assert env["MODEL_NAME"] == MODEL
    assert env["MODEL_VERSION"] == "0"
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "modeldeck"
    assert {"MODEL_BUCKET", "MAX_ROWS", "CAPTURE_SAMPLE_RATE", "CAPTURE_REDACT", "POWERTOOLS_SERVICE_NAME"} <= set(env)


def test_every_function_uses_the_shared_defaults(synth: Synth) -> None:
    functions = synth.resources("AWS::Lambda::Function")
    assert len(functions) == 7  # inference, capture processor, drift job, experiment job, release, training, batch
    log_groups = {
        f"{k.split('/')[0]}/{lg}"
        for k, lg in [(k, r["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]) for k, r in functions.items()]
    }
    for key, fn in functions.items():
        props = fn["Properties"]
        assert props["TracingConfig"] == {"Mode": "Active"}, key
        assert props["LoggingConfig"]["LogFormat"] == "JSON", key
        if "ImageConfig" not in props:
            assert props["Runtime"] == "python3.12", key
    for key in log_groups:
        stack, logical = key.split("/")
        assert synth.templates[stack]["Resources"][logical]["Properties"]["RetentionInDays"] == 30


def test_live_alias_points_at_a_published_version(synth: Synth) -> None:
    aliases = synth.resources("AWS::Lambda::Alias", "Serving")
    assert len(aliases) == 1
    alias = next(iter(aliases.values()))["Properties"]
    assert alias["Name"] == "live"
    version_logical = alias["FunctionVersion"]["Fn::GetAtt"][0]
    assert synth.templates["Serving"]["Resources"][version_logical]["Type"] == "AWS::Lambda::Version"


def _paths(synth: Synth) -> dict[str, str]:
    """API resource logical id → full path, rebuilt from PathPart/ParentId."""
    resources = synth.resources("AWS::ApiGateway::Resource", "Serving")
    parts = {k.split("/")[1]: r["Properties"] for k, r in resources.items()}
    paths: dict[str, str] = {}

    def path(logical: str) -> str:
        if logical not in paths:
            props = parts[logical]
            parent = props["ParentId"]
            prefix = "" if "Fn::GetAtt" in parent else path(parent["Ref"])
            paths[logical] = f"{prefix}/{props['PathPart']}"
        return paths[logical]

    for logical in parts:
        path(logical)
    return paths


def test_routes_follow_the_http_contract_and_reach_the_models_live_alias(synth: Synth) -> None:
    paths = _paths(synth)
    alias_logical = next(iter(synth.resources("AWS::Lambda::Alias", "Serving"))).split("/")[1]
    routes = set()
    for method in synth.resources("AWS::ApiGateway::Method", "Serving").values():
        props = method["Properties"]
        if props["HttpMethod"] == "ANY":  # the 405 of every other method (test_api_405.py)
            continue
        routes.add(f"{props['HttpMethod']} {paths[props['ResourceId']['Ref']]}")
        integration = props["Integration"]
        assert integration["Type"] == "AWS_PROXY"
        assert {"Ref": alias_logical} in integration["Uri"]["Fn::Join"][1]
    assert routes == {
        "GET /v2/health/live",
        "GET /v2/health/ready",
        f"GET /v2/models/{MODEL}",
        f"GET /v2/models/{MODEL}/ready",
        f"POST /v2/models/{MODEL}/infer",
        f"POST /v1/models/{MODEL}:predict",
        f"POST /v1/models/{MODEL}:feedback",
    }


def test_api_key_is_required_on_every_method(synth: Synth) -> None:
    methods = synth.resources("AWS::ApiGateway::Method", "Serving")
    assert methods
    assert all(m["Properties"]["ApiKeyRequired"] is True for m in methods.values())


def test_post_bodies_are_validated_against_json_schemas(synth: Synth) -> None:
    paths = _paths(synth)
    models = {k.split("/")[1]: m["Properties"] for k, m in synth.resources("AWS::ApiGateway::Model").items()}
    required = {}
    for method in synth.resources("AWS::ApiGateway::Method", "Serving").values():
        props = method["Properties"]
        if props["HttpMethod"] != "POST":
            continue
        if paths[props["ResourceId"]["Ref"]].endswith("/infer"):
            # OIP binary tensor bodies are not JSON, and a missing Content-Type (tritonclient's) selects the
            # application/json model: infer has none, the function validates its bodies
            assert "RequestModels" not in props
            continue
        assert "RequestValidatorId" in props
        model = models[props["RequestModels"]["application/json"]["Ref"]]
        schema = model["Schema"]
        required[paths[props["ResourceId"]["Ref"]]] = (schema["required"], schema.get("anyOf"))
    assert required == {
        f"/v1/models/{MODEL}:predict": (["instances"], None),
        # feedback carries a label, an outcome value (experiments), or both
        f"/v1/models/{MODEL}:feedback": (["id"], [{"required": ["label"]}, {"required": ["value"]}]),
    }
    t = synth.template("Serving")
    t.has_resource_properties("AWS::ApiGateway::RequestValidator", {"ValidateRequestBody": True})
    t.has_resource_properties(
        "AWS::ApiGateway::GatewayResponse", {"ResponseType": "MISSING_AUTHENTICATION_TOKEN", "StatusCode": "404"}
    )


def test_usage_plan_throttles_and_limits_the_key(synth: Synth) -> None:
    t = synth.template("Serving")
    t.has_resource_properties(
        "AWS::ApiGateway::UsagePlan",
        {
            "Throttle": {"RateLimit": 100, "BurstLimit": 200},
            "Quota": {"Limit": 1_000_000, "Period": "DAY"},
        },
    )
    t.resource_count_is("AWS::ApiGateway::UsagePlanKey", 1)
    t.has_resource_properties(
        "AWS::ApiGateway::Stage",
        {
            "StageName": "dev",
            "TracingEnabled": True,
            "AccessLogSetting": {"DestinationArn": Match.any_value(), "Format": Match.string_like_regexp(r"^\{")},
        },
    )
    t.has_output("ApiUrl", {})
    t.has_output("ApiKeyId", {})


def test_capture_flows_from_the_inference_logs_through_firehose_to_capture_prefixes(synth: Synth) -> None:
    filters = synth.resources("AWS::Logs::SubscriptionFilter", "Serving")
    patterns = sorted(f["Properties"]["FilterPattern"] for f in filters.values())
    assert patterns == ['{ $.kind = "capture" }', '{ $.kind = "feedback" }']
    stream = next(iter(synth.resources("AWS::KinesisFirehose::DeliveryStream").values()))["Properties"]
    dest = stream["ExtendedS3DestinationConfiguration"]
    assert dest["DynamicPartitioningConfiguration"]["Enabled"] is True
    assert dest["Prefix"].startswith("!{partitionKeyFromLambda:kind}/!{partitionKeyFromLambda:model}/dt=")
    assert dest["ErrorOutputPrefix"].startswith("capture/")
    processor = dest["ProcessingConfiguration"]["Processors"][0]
    assert processor["Type"] == "Lambda"
    proc_fn = next(
        f
        for f in synth.resources("AWS::Lambda::Function", "Serving").values()
        if f["Properties"]["Handler"] == "lambdas.capture.handler.lambda_handler"
    )
    assert proc_fn["Properties"]["Architectures"] == ["arm64"]
    role_logical = dest["RoleARN"]["Fn::GetAtt"][0]
    writes = [
        s
        for p in _policies_of_role(synth, "Serving", role_logical)
        for s in _statements(p)
        if "s3:PutObject" in _as_list(s["Action"])
    ]
    assert sorted(_arn_text(r).rsplit("/", 2)[-2] + "/*" for s in writes for r in _as_list(s["Resource"])) == [
        "capture/*",
        "feedback/*",
    ]


def test_inference_role_reads_only_its_models_prefix(synth: Synth) -> None:
    _, fn = _function(synth, FUNCTION)
    role_logical = fn["Properties"]["Role"]["Fn::GetAtt"][0]
    s3 = [
        s
        for p in _policies_of_role(synth, "Serving", role_logical)
        for s in _statements(p)
        if any(a.startswith("s3:") for a in _as_list(s["Action"]))
    ]
    reads = [s for s in s3 if "s3:GetObject" in _as_list(s["Action"])]
    assert len(reads) == 1
    assert sorted(_as_list(reads[0]["Action"])) == ["s3:GetObject", "s3:GetObjectVersion"]
    assert [_arn_text(r).endswith(f"/models/{MODEL}/*") for r in _as_list(reads[0]["Resource"])] == [True]
    # and may list that prefix only, so a missing key (shadow.json, usually) is a 404, not S3's 403
    (listing,) = [s for s in s3 if s["Action"] == "s3:ListBucket"]
    assert _as_list(listing["Condition"]["StringLike"]["s3:prefix"]) == [f"models/{MODEL}/*"]


# Actions that have no resource-level permissions in IAM, so '*' is the only possible resource.
RESOURCELESS = {
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
    "cloudwatch:PutMetricData",
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
    "ecr:GetAuthorizationToken",
    "cloudwatch:DescribeAlarms",
    "cloudwatch:GetMetricData",
}


def test_no_iam_statement_grants_a_wildcard_resource_beyond_resourceless_actions(synth: Synth) -> None:
    for key, policy in synth.resources("AWS::IAM::Policy").items():
        for statement in _statements(policy):
            # A Deny with NotResource (the batch state machine's) grants nothing.
            if "*" in _as_list(statement.get("Resource", [])):
                extra = set(_as_list(statement["Action"])) - RESOURCELESS
                assert not extra, f"{key}: {extra} on '*'"
                if "cloudwatch:PutMetricData" in _as_list(statement["Action"]):
                    assert "cloudwatch:namespace" in json.dumps(statement.get("Condition", {}))
            for action in _as_list(statement["Action"]):
                assert action != "*" and not action.endswith(":*"), f"{key}: {action}"


def test_drift_job_reads_capture_feedback_and_baselines_and_publishes_to_its_namespace(synth: Synth) -> None:
    _, fn = _function(synth, "modeldeck-dev-drift")
    assert fn["Properties"]["Handler"] == "lambdas.drift.handler.lambda_handler"
    assert fn["Properties"]["Architectures"] == ["arm64"]
    role_logical = fn["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = [s for p in _policies_of_role(synth, "Monitoring", role_logical) for s in _statements(p)]
    reads = {
        _arn_text(r).split("-<token>/", 1)[-1]
        for s in statements
        if "s3:GetObject" in _as_list(s["Action"])
        for r in _as_list(s["Resource"])
    }
    assert reads == {
        f"capture/{MODEL}/*",
        "feedback/*",
        "models/*/*/baseline.json",
        "models/*/*/card.json",
        "models/*/champion.json",
        "drift/*",
        "drift-work/*",
    }
    writes = {
        _arn_text(r).split("-<token>/", 1)[-1]
        for s in statements
        if "s3:PutObject" in _as_list(s["Action"])
        for r in _as_list(s["Resource"])
    }
    assert writes == {"drift/*", "drift-work/*"}
    deletes = {
        _arn_text(r).split("-<token>/", 1)[-1]
        for s in statements
        if "s3:DeleteObject" in _as_list(s["Action"])
        for r in _as_list(s["Resource"])
    }
    assert deletes == {"drift-work/*"}  # only its own intermediate objects, never results or capture
    metrics = next(s for s in statements if s["Action"] == "cloudwatch:PutMetricData")
    assert metrics["Condition"] == {"StringEquals": {"cloudwatch:namespace": "modeldeck"}}
    synth.template("Monitoring").has_resource_properties(
        "AWS::Events::Rule", {"ScheduleExpression": "rate(1 hour)", "State": "ENABLED"}
    )


def test_the_schedule_runs_the_drift_state_machine_plan_distributed_profile_reduce(synth: Synth) -> None:
    # Given the monitoring stack's drift state machine
    machines = synth.resources("AWS::StepFunctions::StateMachine", stack="Monitoring")
    (key, machine), *rest = [
        (k, m) for k, m in machines.items() if "drift" in json.dumps(m["Properties"].get("StateMachineName", ""))
    ]
    assert not rest
    asl = definition(machine)
    # Then it plans, profiles every partition in a Distributed Map (batches of partitions), and reduces
    assert asl["StartAt"] == "Plan"
    assert asl["States"]["Plan"]["Next"] == "Profile"
    profile = asl["States"]["Profile"]
    assert profile["Type"] == "Map" and profile["ItemsPath"] == "$.items"
    assert profile["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    assert profile["ItemBatcher"]["MaxItemsPerBatch"] >= 1 and profile["MaxConcurrency"] >= 1
    assert profile["ResultPath"] is None  # child outputs stay in S3, not in the execution's 256 KiB state
    assert profile["Next"] == "Reduce"
    assert asl["States"]["Reduce"]["Parameters"] == {"action": "reduce", "runs.$": "$.runs"}
    for state in ("Plan", "Reduce"):
        assert asl["States"][state]["Retry"][0]["ErrorEquals"][0].startswith("Lambda.")
    # and the hourly schedule starts it (with {} : every model's latest window), not the function
    rules = synth.resources("AWS::Events::Rule", stack="Monitoring")
    targets = [t for r in rules.values() for t in r["Properties"].get("Targets", [])]
    drift_targets = [t for t in targets if t["Arn"] == {"Ref": key.split("/", 1)[1]}]
    assert len(drift_targets) == 1 and json.loads(drift_targets[0]["Input"]) == {}
    # and its role may invoke the drift function and start its own child executions, nothing broader
    role_logical = machine["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    actions = {
        a
        for p in _policies_of_role(synth, "Monitoring", role_logical)
        for st in _statements(p)
        for a in _as_list(st["Action"])
    }
    assert "lambda:InvokeFunction" in actions and "states:StartExecution" in actions
    assert not any(a.startswith("s3:") for a in actions)


def test_every_alarm_notifies_the_encrypted_topic(synth: Synth) -> None:
    topics = synth.resources("AWS::SNS::Topic", "Monitoring")
    assert len(topics) == 1
    topic_key, topic = next(iter(topics.items()))
    assert "KmsMasterKeyId" in topic["Properties"]
    topic_ref = {"Ref": topic_key.split("/")[1]}
    alarms = synth.resources("AWS::CloudWatch::Alarm")
    names = {a["Properties"]["AlarmName"] for a in alarms.values()}
    assert names == {
        f"{FUNCTION}-{what}"
        for what in (
            "drifted-features",
            "drifted-share",
            "max-feature-psi",
            "prediction-drift",
            "errors",
            "server-error-rate",
            "api-5xx-rate-infer",
            "api-5xx-rate-predict",
            "api-5xx-rate-feedback",
            "latency-p99",
            "throttles",
        )
    } | {"modeldeck-dev-drift-job-errors"}
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"] == [topic_ref]
        assert alarm["Properties"]["TreatMissingData"] == "notBreaching"


def test_drift_alarms_watch_the_models_metrics_and_ops_alarms_the_live_alias(synth: Synth) -> None:
    alarms = {a["Properties"]["AlarmName"]: a["Properties"] for a in synth.resources("AWS::CloudWatch::Alarm").values()}
    drift = alarms[f"{FUNCTION}-drifted-share"]
    assert (drift["Namespace"], drift["MetricName"]) == ("modeldeck", "DriftedShare")
    assert drift["Dimensions"] == [{"Name": "model", "Value": MODEL}]
    assert drift["Threshold"] == 0.3
    assert alarms[f"{FUNCTION}-max-feature-psi"]["Threshold"] == 0.2
    latency = alarms[f"{FUNCTION}-latency-p99"]
    assert (latency["Namespace"], latency["MetricName"], latency["ExtendedStatistic"]) == (
        "AWS/Lambda",
        "Duration",
        "p99",
    )
    assert {"Name": "Resource", "Value": f"{FUNCTION}:live"} in latency["Dimensions"]


def test_dashboard_shows_operations_and_model_health(synth: Synth) -> None:
    dashboards = synth.resources("AWS::CloudWatch::Dashboard", "Monitoring")
    assert len(dashboards) == 1
    body = json.dumps(next(iter(dashboards.values()))["Properties"]["DashboardBody"])
    for metric in (
        "Invocations",
        "Errors",
        "Duration",
        "Throttles",
        "DriftedShare",
        "MaxFeaturePSI",
        "PredictionDrift",
        "Accuracy",
    ):
        assert metric in body


def _training_definition(synth: Synth) -> dict[str, Any]:
    machines = synth.resources("AWS::StepFunctions::StateMachine", "Training")
    assert len(machines) == 1
    return definition(next(iter(machines.values())))


def test_every_training_task_retries_transient_errors_and_catches_into_a_notification(synth: Synth) -> None:
    states = _training_definition(synth)["States"]
    tasks = {name: s for name, s in states.items() if s["Type"] == "Task"}
    assert {"Validate", "Train", "Evaluate", "Convert", "Compare", "Register", "NotifyFailure"} <= set(tasks)
    for name, task in tasks.items():
        assert task["Retry"], name
        retry = task["Retry"][0]
        assert retry["BackoffRate"] > 1 and retry["IntervalSeconds"] >= 1 and retry["MaxAttempts"] >= 2, name
        assert "States.Timeout" in retry["ErrorEquals"], name
        catch = task["Catch"][0]
        assert catch["ErrorEquals"] == ["States.ALL"], name
        assert catch["Next"] == ("TrainingFailed" if name == "NotifyFailure" else "NotifyFailure"), name
    for step in ("Validate", "Train", "Evaluate", "Convert", "Compare", "Register"):
        assert set(tasks[step]["Retry"][0]["ErrorEquals"]) >= {
            "Lambda.ServiceException",
            "Lambda.AWSLambdaException",
            "Lambda.SdkClientException",
            "Lambda.TooManyRequestsException",
        }
    assert states["NotifyFailure"]["Resource"] == "arn:aws:states:::sns:publish" or "sns:publish" in json.dumps(
        states["NotifyFailure"]["Resource"]
    )
    assert states["TrainingFailed"]["Type"] == "Fail"


def test_training_steps_follow_the_event_contract_in_order(synth: Synth) -> None:
    states = _training_definition(synth)["States"]
    order = []
    name = "Validate"
    while name in states and states[name]["Type"] == "Task":
        order.append(name)
        params = states[name]["Parameters"]
        assert params == {
            "step": name.lower(),
            "model.$": "$.model",
            "run_id.$": "$$.Execution.Name",
            "spec.$": "$.spec",
            "spec_dir.$": "$.spec_dir",
        }
        assert states[name]["ResultPath"] == f"$.{name.lower()}"
        name = states[name]["Next"]
    assert order == ["Validate", "Train", "Evaluate", "Convert", "Compare"]
    assert states["BeatsChampion?"]["Choices"][0] == {
        "Variable": "$.compare.passed",
        "BooleanEquals": True,
        "Next": "Register",
    }
    # The hand-over: registering ends by asking the release function to start a release, unless the input
    # says "release": false (`modeldeck train`).
    choice = states[states["Register"]["Next"]]
    assert choice["Type"] == "Choice" and states[choice["Choices"][0]["Next"]]["Type"] == "Succeed"
    hand_over = states[choice["Default"]]
    assert hand_over["Parameters"]["action"] == "start"
    assert hand_over["Parameters"]["event"]["version.$"] == "$.register.version"
    assert states[hand_over["Next"]]["Type"] == "Succeed"


def test_training_function_is_a_container_image_naming_its_handler(synth: Synth) -> None:
    _, fn = _function(synth, "modeldeck-dev-training")
    props = fn["Properties"]
    assert props["PackageType"] == "Image"
    assert props["ImageConfig"]["Command"] == ["lambdas.pipeline.handler.lambda_handler"]
    assert props["Environment"]["Variables"]["MODEL_BUCKET"]
    synth.template("Training").has_output("TrainingStateMachineArn", {})


def test_stacks_are_named_by_stage_and_ordered_by_dependency(synth: Synth) -> None:
    manifest = json.loads((synth.outdir / "manifest.json").read_text())["artifacts"]
    names = {
        k: v["properties"].get("stackName") for k, v in manifest.items() if v["type"] == "aws:cloudformation:stack"
    }
    assert names == {
        "Registry": "modeldeck-dev-registry",
        "Serving": "modeldeck-dev-serving",
        "Monitoring": "modeldeck-dev-monitoring",
        "Release": "modeldeck-dev-release",
        "Training": "modeldeck-dev-training",
        "Batch": "modeldeck-dev-batch",
    }
    assert "Registry" in manifest["Serving"]["dependencies"]
    assert "Monitoring" in manifest["Release"]["dependencies"]
    assert "Release" in manifest["Training"]["dependencies"]
    assert "Registry" in manifest["Batch"]["dependencies"]


def test_full_synth_is_fast(synth: Synth) -> None:
    assert synth.seconds < 30, f"synth took {synth.seconds:.1f} s"


# --- what the live alarms see -------------------------------------------------------------------------------


def _alarm(synth: Synth, name: str) -> dict[str, Any]:
    (alarm,) = [
        a["Properties"]
        for a in synth.resources("AWS::CloudWatch::Alarm").values()
        if a["Properties"]["AlarmName"] == name
    ]
    return alarm


def _emitted(out: str) -> dict[tuple[str, str, frozenset[tuple[str, str]]], list[float]]:
    """Every (namespace, metric, dimensions) the handler's EMF lines publish, with their values, the way
    CloudWatch extracts them (EMF specification: one metric per dimension set of the directive)."""
    found: dict[tuple[str, str, frozenset[tuple[str, str]]], list[float]] = {}
    for line in out.splitlines():
        if not line.startswith('{"_aws"'):
            continue
        blob = json.loads(line)
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            for dim_set in directive["Dimensions"]:
                dims = frozenset((d, str(blob[d])) for d in dim_set)
                for metric in directive["Metrics"]:
                    found.setdefault((directive["Namespace"], metric["Name"], dims), []).extend(blob[metric["Name"]])
    return found


def _key(metric: dict[str, Any]) -> tuple[str, str, frozenset[tuple[str, str]]]:
    return (
        metric["Namespace"],
        metric["MetricName"],
        frozenset((d["Name"], d["Value"]) for d in metric.get("Dimensions", [])),
    )


def _failing_model_traffic(configure_handler: Any, capsys: pytest.CaptureFixture[str], n: int) -> str:
    """``n`` scoring requests to a model version that cannot be served: the handler answers each with a 5xx
    (the version is not in the registry), as a broken release would, through the product's own code path."""
    from tests.fixtures.inference import ROW, call

    handler = configure_handler(MODEL_VERSION="99")
    capsys.readouterr()
    statuses = {call(handler, "POST", f"/v1/models/{MODEL}:predict", {"instances": [ROW]}).status for _ in range(n)}
    assert statuses and all(status >= 500 for status in statuses), statuses
    return capsys.readouterr().out


def test_the_live_error_rate_alarm_watches_metrics_the_handler_really_emits(
    synth: Synth, configure_handler: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the live server-error-rate alarm, and the EMF the handler writes when it answers 5xx
    alarm = _alarm(synth, f"{FUNCTION}-server-error-rate")
    emitted = _emitted(_failing_model_traffic(configure_handler, capsys, 3))
    # Then every metric the alarm reads from our namespace is one the handler publishes, dimensions included
    # (CloudWatch matches a metric on all its dimensions: one too many or too few and the alarm sees nothing)
    ours = [q["MetricStat"]["Metric"] for q in alarm["Metrics"] if "MetricStat" in q]
    ours = [m for m in ours if m["Namespace"] == "modeldeck"]
    assert [m["MetricName"] for m in ours] == ["ServerErrors"]
    assert all(_key(m) in emitted for m in ours), (ours, list(emitted))
    # and the Lambda metric it divides by is the live alias's
    lambda_metrics = [q["MetricStat"]["Metric"] for q in alarm["Metrics"] if "MetricStat" in q]
    invocations = next(m for m in lambda_metrics if m["Namespace"] == "AWS/Lambda")
    assert invocations["MetricName"] == "Invocations"
    assert {"Name": "Resource", "Value": f"{FUNCTION}:live"} in invocations["Dimensions"]


def _evaluate(alarm: dict[str, Any], values: dict[str, float | None]) -> float | None:
    """One period of an alarm's metric math, given each metric query's statistic, by the local cloud's
    implementation of CloudWatch metric math."""
    from modeldeck.localcloud import metric_math

    queries = {q["Id"]: q for q in alarm["Metrics"]}
    done: dict[str, float | None] = dict(values)

    def value(qid: str) -> float | None:
        if qid not in done:
            node = metric_math.parse(queries[qid]["Expression"])
            for dep in metric_math.ids(node):
                value(dep)
            done[qid] = metric_math.evaluate(node, done)
        return done[qid]

    (returned,) = [q["Id"] for q in alarm["Metrics"] if q.get("ReturnData", True)]
    return value(returned)


def test_a_model_answering_5xx_to_every_request_puts_the_live_alarm_in_alarm(
    synth: Synth, configure_handler: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a live version that answers every request with a 5xx, for 12 requests in one period
    alarm = _alarm(synth, f"{FUNCTION}-server-error-rate")
    emitted = _emitted(_failing_model_traffic(configure_handler, capsys, 12))
    # When CloudWatch computes the alarm's datapoint: ServerErrors from the EMF, Invocations from Lambda
    lambda_ids, ours = [], {}
    for q in alarm["Metrics"]:
        if "MetricStat" in q:
            metric = q["MetricStat"]["Metric"]
            assert q["MetricStat"]["Stat"] == "Sum"
            if metric["Namespace"] == "AWS/Lambda":
                lambda_ids.append(q["Id"])
            else:
                ours[q["Id"]] = sum(emitted[_key(metric)]) if _key(metric) in emitted else None
    datapoint = _evaluate(alarm, {**ours, **dict.fromkeys(lambda_ids, 12.0)})
    # Then it breaches the threshold: 100% of requests failed
    assert datapoint == 100.0
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and datapoint >= alarm["Threshold"]
    # while 12 requests with no 5xx (no ServerErrors datapoint), or too few requests to judge, do not breach
    healthy = _evaluate(alarm, {**dict.fromkeys(ours), **dict.fromkeys(lambda_ids, 12.0)})
    sparse = _evaluate(alarm, {**dict.fromkeys(ours, 3.0), **dict.fromkeys(lambda_ids, 3.0)})
    assert healthy == 0.0 and sparse == 0.0


def test_each_scoring_route_has_an_api_5xx_alarm_that_fires_while_the_other_routes_are_idle(synth: Synth) -> None:
    from infra.constructs.api import scoring_routes
    from infra.constructs.monitoring import route_slug

    for method, path in scoring_routes(MODEL):
        # Given the route's api-5xx-rate alarm
        alarm = _alarm(synth, f"{FUNCTION}-api-5xx-rate-{route_slug(path)}")
        metrics = {q["Id"]: q["MetricStat"]["Metric"] for q in alarm["Metrics"] if "MetricStat" in q}
        # Then it reads API Gateway's per-method 5XXError and Count of that route, in the dimensions API Gateway
        # publishes them with (detailed metrics: ApiName, Method, Resource, Stage)
        dims = {"ApiName": "modeldeck-dev-api", "Method": method, "Resource": path, "Stage": "dev"}
        assert {m["MetricName"] for m in metrics.values()} == {"5XXError", "Count"}
        assert all({d["Name"]: d["Value"] for d in m["Dimensions"]} == dims for m in metrics.values())
        ids = {m["MetricName"]: qid for qid, m in metrics.items()}
        # and 12 of 12 answered 5xx is a breach, 0 of 12 (no 5XXError datapoint at all) is not
        assert _evaluate(alarm, {ids["5XXError"]: 12.0, ids["Count"]: 12.0}) == 100.0 >= alarm["Threshold"]
        assert _evaluate(alarm, {ids["5XXError"]: None, ids["Count"]: 12.0}) == 0.0
    # and the routes exist in the API, with detailed metrics on for the stage
    resources = {r["Properties"]["PathPart"] for r in synth.resources("AWS::ApiGateway::Resource", "Serving").values()}
    assert {path.rsplit("/", 1)[-1] for _, path in scoring_routes(MODEL)} <= resources
    (stage,) = synth.resources("AWS::ApiGateway::Stage", "Serving").values()
    assert any(ms.get("MetricsEnabled") for ms in stage["Properties"]["MethodSettings"])


def test_no_alarm_sums_filled_series_that_may_be_empty(synth: Synth) -> None:
    # FILL of a series with no datapoint in the range is empty (read strictly), and so is a sum with it: an
    # alarm that adds FILL(...) terms goes blind whenever one of them is idle.
    for alarm in synth.resources("AWS::CloudWatch::Alarm").values():
        for query in alarm["Properties"].get("Metrics") or []:
            expression = query.get("Expression", "")
            assert not re.search(r"FILL\([^)]*\)\s*\+", expression), (alarm["Properties"]["AlarmName"], expression)


def test_the_firehose_processor_batch_fits_a_lambda_response(synth: Synth) -> None:
    # Given the delivery stream's processor: CloudWatch Logs gzip envelopes in, decompressed and base64 out,
    # within Lambda's 6 MB response (capture lines compress about 4.4 x)
    stream = next(iter(synth.resources("AWS::KinesisFirehose::DeliveryStream").values()))["Properties"]
    (processor,) = stream["ExtendedS3DestinationConfiguration"]["ProcessingConfiguration"]["Processors"]
    params = {p["ParameterName"]: p["ParameterValue"] for p in processor["Parameters"]}
    # Then the batch size is set (the default, 1 MB, overflows from a 4.5 x ratio) within Firehose's 0.2-3 MB
    size_mb = float(params["BufferSizeInMBs"])
    assert 0.2 <= size_mb <= 3
    assert size_mb * 20 * 4 / 3 <= 6, "a 20 x compressible batch must fit the 6 MB response"
    assert params["BufferIntervalInSeconds"] == "60"


def test_unknown_routes_answer_json_that_no_path_can_break(synth: Synth) -> None:
    # Given the gateway response for an unknown route: API Gateway substitutes variables without escaping them
    # (gateway response templates are not VTL), so a variable the client controls could break the JSON
    (response,) = [
        r["Properties"]
        for r in synth.resources("AWS::ApiGateway::GatewayResponse", "Serving").values()
        if r["Properties"]["ResponseType"] == "MISSING_AUTHENTICATION_TOKEN"
    ]
    template = response["ResponseTemplates"]["application/json"]
    # Then it holds no client-controlled variable, and a path full of quotes still yields valid JSON
    assert response["StatusCode"] == "404"
    for variable in ("$context.path", "$context.resourcePath", "$input", "$method.request"):
        assert variable not in template
    body = json.loads(template.replace("$context.httpMethod", "GET"))
    assert "no such route" in body["error"]
