"""Every AWS service that acts on our resources is allowed to, and nobody else is: evaluated, not read.

The templates are synthesized the way ``cdk deploy`` does (a concrete account and region) and their policies
go through a real IAM evaluator (:mod:`tests.infra.iam_sim`). Each test asks the question AWS asks when
the service acts: CloudWatch publishing an alarm to the alert topic (topic policy and key policy),
EventBridge starting the drift or training state machine, API Gateway invoking a model's ``live`` alias,
CloudWatch Logs assuming the subscription role to feed Firehose, Firehose invoking its processor, and our
own roles inside their S3 prefixes.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra import test_synth_env
from tests.infra.conftest import Synth
from tests.infra.iam_sim import ACCOUNT, OTHER_ACCOUNT, REGION, Request, Templates, decide

pytestmark = pytest.mark.xdist_group("infra")
PREFIX = "modeldeck-dev"
MODEL = "breast-cancer"
FUNCTION = f"{PREFIX}-{MODEL}"
ALLOWED, IMPLICIT, EXPLICIT = "Allowed", "ImplicitlyDenied", "ExplicitlyDenied"
# The session's concrete-environment synthesis (one per session for every infra test that needs it).
env_synths = test_synth_env.env_synths


@pytest.fixture(scope="module")
def deployed(env_synths: dict[str, Synth]) -> Synth:
    """The app as ``cdk deploy`` synthesizes it (account and region known), every option on (a training
    schedule, so the EventBridge → Step Functions path exists too): the synthesis test_synth_env.py makes."""
    synth = env_synths["everything"]
    assert (synth.config.account, synth.config.region) == (ACCOUNT, REGION)
    return synth


@pytest.fixture(scope="module")
def sim(deployed: Synth) -> Templates:
    return Templates(deployed.templates)


def _alarm(name: str, account: str = ACCOUNT) -> str:
    return f"arn:aws:cloudwatch:{REGION}:{account}:alarm:{name}"


def _cloudwatch_publishes(sim: Templates, alarm_arn: str, source_account: str, tls: bool = True) -> list[Request]:
    """What happens when an alarm fires: CloudWatch publishes to the topic, SNS uses the key as CloudWatch."""
    topic = sim.arn_of("AWS::SNS::Topic", TopicName=f"{PREFIX}-alerts")
    key = sim.key_of_topic(topic)
    context: dict[str, Any] = {
        "aws:SourceAccount": source_account,
        "aws:SourceArn": alarm_arn,
        "aws:SecureTransport": "true" if tls else "false",
    }
    return [
        Request("cloudwatch.amazonaws.com", "sns:Publish", topic, context, resource_policy=sim.topic_policy(topic)),
        Request("cloudwatch.amazonaws.com", "kms:GenerateDataKey", key, context, resource_policy=sim.key_policy(key)),
        Request("cloudwatch.amazonaws.com", "kms:Decrypt", key, context, resource_policy=sim.key_policy(key)),
    ]


def test_our_alarms_may_publish_to_the_encrypted_alert_topic(sim: Templates) -> None:
    # Given the alert topic (TLS only, KMS-encrypted) and alarms named under the stage's prefix
    requests = [
        *_cloudwatch_publishes(sim, _alarm(f"{FUNCTION}-errors"), ACCOUNT),
        *_cloudwatch_publishes(sim, _alarm(f"{PREFIX}-drift-job-errors"), ACCOUNT),
        # the release machinery's per-release canary alarms share the prefix
        *_cloudwatch_publishes(sim, _alarm(f"{FUNCTION}-canary-errors"), ACCOUNT),
    ]
    # When CloudWatch publishes an alarm notification
    # Then the topic policy and the key policy both allow it
    assert decide(requests) == [ALLOWED] * len(requests)


def test_other_accounts_and_other_alarms_may_not_publish(sim: Templates) -> None:
    # Given an alarm in another account, and an alarm of ours outside the stage's prefix
    foreign = _cloudwatch_publishes(sim, _alarm(f"{FUNCTION}-errors", OTHER_ACCOUNT), OTHER_ACCOUNT)
    # (another account's alarm that claims our account as its source: SourceArn still gives it away)
    spoofed = _cloudwatch_publishes(sim, _alarm(f"{FUNCTION}-errors", OTHER_ACCOUNT), ACCOUNT)
    unrelated = _cloudwatch_publishes(sim, _alarm("someone-elses-alarm"), ACCOUNT)
    # When they publish, Then nothing allows them
    results = decide([*foreign, *spoofed, *unrelated])
    assert results == [IMPLICIT] * len(results)


def test_a_publish_without_tls_is_denied_even_for_our_own_roles(sim: Templates) -> None:
    # Given the drift job's role, which may publish alerts
    topic = sim.arn_of("AWS::SNS::Topic", TopicName=f"{PREFIX}-alerts")
    role = _role(sim, "DriftDriftFunctionRole")
    policies = sim.role_policies(role)

    def publish(tls: str) -> Request:
        return Request(
            role,
            "sns:Publish",
            topic,
            {"aws:SecureTransport": tls},
            resource_policy=sim.topic_policy(topic),
            identity_policies=policies,
        )

    # When it publishes over TLS and over plain HTTP; and CloudWatch without TLS
    results = decide(
        [publish("true"), publish("false"), _cloudwatch_publishes(sim, _alarm(f"{FUNCTION}-errors"), ACCOUNT, False)[0]]
    )
    # Then TLS is allowed and plain HTTP is explicitly denied (the topic policy's Deny)
    assert results == [ALLOWED, EXPLICIT, EXPLICIT]


def _index_of(sim: Templates, logical_prefix: str) -> int:
    roles = sim.find("AWS::IAM::Role")
    matches = [i for i, (_, logical) in enumerate(roles) if logical.startswith(logical_prefix)]
    assert len(matches) == 1, (logical_prefix, roles)
    return matches[0]


def _role(sim: Templates, logical_prefix: str) -> str:
    stack, logical = sim.find("AWS::IAM::Role")[_index_of(sim, logical_prefix)]
    return sim.role_arn(sim.physical_name(stack, logical))


def test_eventbridge_may_start_the_drift_state_machine_and_it_may_run_the_drift_job(sim: Templates) -> None:
    # Given the role EventBridge assumes for the drift schedule, the drift state machine and its role
    role = _role(sim, "DriftStateMachineEventsRole")
    machine = sim.arn_of("AWS::StepFunctions::StateMachine", StateMachineName=f"{PREFIX}-drift")
    rule = next(sim._arn(s, r) for s, r in sim.find("AWS::Events::Rule") if r.startswith("DriftSchedule"))
    machine_role = _role(sim, "DriftStateMachineRole")
    fn = sim.arn_of("AWS::Lambda::Function", FunctionName=f"{PREFIX}-drift")
    training = sim.arn_of("AWS::StepFunctions::StateMachine", StateMachineName=f"{PREFIX}-training")
    context = {"aws:SourceArn": rule, "aws:SourceAccount": ACCOUNT}
    # When EventBridge assumes it and starts an execution, and the machine invokes the drift job
    results = decide(
        [
            Request("events.amazonaws.com", "sts:AssumeRole", role, context, resource_policy=sim.trust_policy(role)),
            Request(role, "states:StartExecution", machine, identity_policies=sim.role_policies(role)),
            Request(machine_role, "lambda:InvokeFunction", fn, identity_policies=sim.role_policies(machine_role)),
            Request(role, "states:StartExecution", training, identity_policies=sim.role_policies(role)),
        ]
    )
    # Then the schedule's path is allowed, and its role starts nothing else
    assert results == [ALLOWED, ALLOWED, ALLOWED, IMPLICIT]


def test_the_drift_job_writes_and_deletes_only_its_results_and_work_objects(sim: Templates) -> None:
    # Given the drift job's role
    bucket = f"arn:aws:s3:::{PREFIX}-registry-{ACCOUNT}-{REGION}"
    role = _role(sim, "DriftDriftFunctionRole")

    def req(action: str, key: str) -> Request:
        return Request(role, action, f"{bucket}/{key}", identity_policies=sim.role_policies(role))

    work = f"drift-work/{MODEL}/20261123T080000Z-3600s/window-20261123T070000Z.json"
    # When it writes and deletes its map/reduce work objects, and tries the same on results and capture
    results = decide(
        [
            req("s3:PutObject", work),
            req("s3:GetObject", work),
            req("s3:DeleteObject", work),
            req("s3:PutObject", f"drift/{MODEL}/20261123T080000Z-3600s.json"),
            req("s3:DeleteObject", f"drift/{MODEL}/20261123T080000Z-3600s.json"),
            req("s3:DeleteObject", f"capture/{MODEL}/dt=2026-11-23/hour=07/batch.jsonl"),
            req("s3:PutObject", f"models/{MODEL}/3/baseline.json"),
        ]
    )
    # Then only drift-work/ may be deleted, and nothing outside drift/ and drift-work/ written
    assert results == [ALLOWED] * 4 + [IMPLICIT] * 3


def test_eventbridge_may_start_the_training_state_machine(sim: Templates) -> None:
    # Given the role EventBridge assumes for the training schedule
    role = _role(sim, "PipelineStateMachineEventsRole")
    machine = sim.arn_of("AWS::StepFunctions::StateMachine", StateMachineName=f"{PREFIX}-training")
    rule = next(sim._arn(s, r) for s, r in sim.find("AWS::Events::Rule") if "Schedule" in r and s == "Training")
    context = {"aws:SourceArn": rule, "aws:SourceAccount": ACCOUNT}
    # When EventBridge assumes it and starts an execution
    results = decide(
        [
            Request("events.amazonaws.com", "sts:AssumeRole", role, context, resource_policy=sim.trust_policy(role)),
            Request(role, "states:StartExecution", machine, identity_policies=sim.role_policies(role)),
        ]
    )
    # Then both steps are allowed
    assert results == [ALLOWED, ALLOWED]


def test_api_gateway_may_invoke_each_models_live_alias_for_its_own_routes(sim: Templates) -> None:
    # Given the REST API and the model's live alias
    ((api_stack, api_logical),) = sim.find("AWS::ApiGateway::RestApi")
    api_id = sim.physical_name(api_stack, api_logical)
    alias = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{FUNCTION}:live"
    policy = sim.lambda_policy(alias)

    def invoke(method: str, path: str, target: str = alias) -> Request:
        source = f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{api_id}/dev/{method}{path}"
        return Request("apigateway.amazonaws.com", "lambda:InvokeFunction", target, {"aws:SourceArn": source}, policy)

    # When API Gateway invokes it for the model's routes, for a route it does not have, and from another API
    requests = [
        invoke("POST", f"/v1/models/{MODEL}:predict"),
        invoke("POST", f"/v2/models/{MODEL}/infer"),
        invoke("POST", f"/v1/models/{MODEL}:feedback"),
        invoke("GET", "/v2/health/ready"),
        invoke("DELETE", f"/v2/models/{MODEL}"),
        Request(
            "apigateway.amazonaws.com",
            "lambda:InvokeFunction",
            alias,
            {"aws:SourceArn": f"arn:aws:execute-api:{REGION}:{OTHER_ACCOUNT}:otherapi/dev/POST/v1/models/x:predict"},
            policy,
        ),
    ]
    # Then only its own routes are allowed
    assert decide(requests) == [ALLOWED] * 4 + [IMPLICIT] * 2


def test_logs_may_feed_the_capture_stream_and_firehose_may_run_its_processor(sim: Templates) -> None:
    # Given the subscription role (CloudWatch Logs → Firehose) and the delivery role (Firehose → S3, processor)
    logs_role = _role(sim, "CaptureSubscriptionRole")
    delivery_role = _role(sim, "CaptureDeliveryRole")
    stream = sim.arn_of("AWS::KinesisFirehose::DeliveryStream", DeliveryStreamName=f"{PREFIX}-capture")
    ((stack, processor_logical),) = [
        f for f in sim.find("AWS::Lambda::Function") if f[1].startswith("CaptureProcessor")
    ]
    processor = sim._arn(stack, processor_logical)
    log_group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{FUNCTION}"
    foreign_group = f"arn:aws:logs:{REGION}:{OTHER_ACCOUNT}:log-group:/aws/lambda/{FUNCTION}"
    delivery = sim.role_policies(delivery_role)
    requests = [
        Request(
            "logs.amazonaws.com",
            "sts:AssumeRole",
            logs_role,
            {"aws:SourceArn": log_group, "aws:SourceAccount": ACCOUNT},
            sim.trust_policy(logs_role),
        ),
        Request(logs_role, "firehose:PutRecordBatch", stream, identity_policies=sim.role_policies(logs_role)),
        Request(
            "firehose.amazonaws.com",
            "sts:AssumeRole",
            delivery_role,
            {"aws:SourceAccount": ACCOUNT, "aws:SourceArn": stream},
            sim.trust_policy(delivery_role),
        ),
        # Firehose invokes the function as configured (unqualified) and, in its own words, as ":$LATEST"
        Request(delivery_role, "lambda:InvokeFunction", processor, identity_policies=delivery),
        Request(delivery_role, "lambda:InvokeFunction", f"{processor}:$LATEST", identity_policies=delivery),
        Request(
            delivery_role,
            "s3:PutObject",
            f"arn:aws:s3:::{PREFIX}-registry-{ACCOUNT}-{REGION}/capture/{MODEL}/dt=2026-01-01/hour=00/x.jsonl",
            identity_policies=delivery,
        ),
        # denied: another account's log group, and a write outside capture/ and feedback/
        Request(
            "logs.amazonaws.com",
            "sts:AssumeRole",
            logs_role,
            {"aws:SourceArn": foreign_group, "aws:SourceAccount": OTHER_ACCOUNT},
            sim.trust_policy(logs_role),
        ),
        Request(
            delivery_role,
            "s3:PutObject",
            f"arn:aws:s3:::{PREFIX}-registry-{ACCOUNT}-{REGION}/models/{MODEL}/champion.json",
            identity_policies=delivery,
        ),
    ]
    assert decide(requests) == [ALLOWED] * 6 + [IMPLICIT] * 2


def test_readers_may_list_their_own_model_prefix_so_a_missing_key_is_a_404(sim: Templates) -> None:
    # Given the inference role and the drift job's role. S3 answers a GetObject of a missing key with 403
    # unless the caller may ListBucket (S3 API reference, GetObject): the inference function's usual missing
    # shadow.json, or a version without a baseline, would read as AccessDenied.
    bucket = f"arn:aws:s3:::{PREFIX}-registry-{ACCOUNT}-{REGION}"
    inference = _role(sim, "BreastCancerFunctionRole")
    drift_role = _role(sim, "DriftDriftFunctionRole")

    def list_(role: str, prefix: str) -> Request:
        return Request(role, "s3:ListBucket", bucket, {"s3:prefix": prefix}, identity_policies=sim.role_policies(role))

    def get(role: str, key: str) -> Request:
        return Request(role, "s3:GetObject", f"{bucket}/{key}", identity_policies=sim.role_policies(role))

    # When they list and read their own model's keys, and someone else's
    results = decide(
        [
            list_(inference, f"models/{MODEL}/shadow.json"),
            get(inference, f"models/{MODEL}/shadow.json"),
            list_(drift_role, f"models/{MODEL}/3/baseline.json"),
            get(drift_role, f"models/{MODEL}/3/baseline.json"),
            list_(drift_role, f"capture/{MODEL}/dt=2026-11-23/"),
            list_(inference, "models/other-model/"),
            list_(inference, f"capture/{MODEL}/"),
            list_(drift_role, "releases/"),
        ]
    )
    # Then their own prefixes are allowed and nothing else is
    assert results == [ALLOWED] * 5 + [IMPLICIT] * 3


def test_our_own_publishers_may_publish_encrypted_alerts(sim: Templates) -> None:
    # Given the roles that notify the alert topic: the drift job, the release function, the training pipeline
    topic = sim.arn_of("AWS::SNS::Topic", TopicName=f"{PREFIX}-alerts")
    key = sim.key_of_topic(topic)
    roles = [_role(sim, p) for p in ("DriftDriftFunctionRole", "ReleaseFunctionRole", "PipelineStateMachineRole")]
    tls = {"aws:SecureTransport": "true"}
    # When each publishes over TLS, SNS encrypting with the topic's key on its behalf
    requests = [
        request
        for role in roles
        for request in (
            Request(role, "sns:Publish", topic, tls, sim.topic_policy(topic), sim.role_policies(role)),
            Request(role, "kms:GenerateDataKey", key, tls, sim.key_policy(key), sim.role_policies(role)),
            Request(role, "kms:Decrypt", key, tls, sim.key_policy(key), sim.role_policies(role)),
        )
    ]
    # Then the topic policy (which replaced SNS's default) and the key policy let every one through
    assert decide(requests) == [ALLOWED] * len(requests)


def test_the_inference_role_may_forward_to_its_own_versions_and_read_its_experiment(sim: Templates) -> None:
    # Given the inference function's role (an experiment's live version invokes a challenger's pinned version
    # synchronously, and reads models/{model}/experiment.json)
    ((stack, logical),) = sim.find("AWS::Lambda::Function", FunctionName=FUNCTION)
    role_ref = sim._resource(stack, logical)["Properties"]["Role"]
    role = str(sim.resolve(stack, role_ref))
    policies = sim.role_policies(role)
    bucket = f"arn:aws:s3:::{PREFIX}-registry-{ACCOUNT}-{REGION}"

    def may(action: str, resource: str) -> Request:
        return Request(role, action, resource, identity_policies=policies)

    own = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{FUNCTION}"
    other = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{PREFIX}-other-model"
    # When it invokes its own published versions, another function's, and reads its and another model's document
    results = decide(
        [
            may("lambda:InvokeFunction", f"{own}:9"),
            may("s3:GetObject", f"{bucket}/models/{MODEL}/experiment.json"),
            may("lambda:InvokeFunction", f"{other}:9"),
            may("s3:GetObject", f"{bucket}/models/other-model/experiment.json"),
        ]
    )
    # Then only its own are allowed
    assert results == [ALLOWED, ALLOWED, IMPLICIT, IMPLICIT]
