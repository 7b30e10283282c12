"""The experiment job in the synthesized MonitoringStack: its function, schedule and least-privilege role."""

from __future__ import annotations

import pytest

from tests.infra import test_synth_env
from tests.infra.conftest import Synth
from tests.infra.test_stacks import MODEL, _arn_text, _as_list, _function, _policies_of_role, _statements

pytestmark = pytest.mark.xdist_group("infra")
# The session's concrete-environment synthesis, shared with every infra test that needs one.
env_synths = test_synth_env.env_synths


def _objects(statements: list[dict], action: str) -> set[str]:
    return {
        _arn_text(r).split("-<token>/", 1)[-1]
        for s in statements
        if action in _as_list(s["Action"])
        for r in _as_list(s["Resource"])
    }


def test_the_experiment_job_reads_documents_capture_and_feedback_and_writes_only_its_own_objects(synth: Synth) -> None:
    # Given the synthesized MonitoringStack, the experiment function
    key, fn = _function(synth, "modeldeck-dev-experiment")
    props = fn["Properties"]
    assert key.startswith("Monitoring/")
    assert props["Handler"] == "lambdas.experiment.handler.lambda_handler"
    env = props["Environment"]["Variables"]
    assert env["MODELS"] == MODEL and "MODEL_BUCKET" in env and "TOPIC_ARN" in env
    # Then its role reads the experiment documents, its models' capture and the feedback, nothing else
    role = props["Role"]["Fn::GetAtt"][0]
    statements = [s for p in _policies_of_role(synth, "Monitoring", role) for s in _statements(p)]
    assert _objects(statements, "s3:GetObject") == {
        f"models/{MODEL}/experiment.json",
        f"capture/{MODEL}/*",
        "feedback/*",
        "experiments/*",
    }
    # And it writes and deletes only under experiments/ (never the experiment document: conclude owns that)
    assert _objects(statements, "s3:PutObject") == {"experiments/*"}
    assert _objects(statements, "s3:DeleteObject") == {"experiments/*"}
    # And its metrics go through EMF in its log group: no PutMetricData, no model or release writes
    actions = {a for s in statements for a in _as_list(s["Action"])}
    assert "cloudwatch:PutMetricData" not in actions
    assert "sns:Publish" in actions
    lists = next(s for s in statements if s["Action"] == "s3:ListBucket")
    assert set(lists["Condition"]["StringLike"]["s3:prefix"]) == {
        f"capture/{MODEL}/*",
        f"models/{MODEL}/*",
        "feedback/*",
        "experiments/*",
    }


def test_the_experiment_job_runs_every_15_minutes_and_its_name_is_an_output(synth: Synth) -> None:
    rules = [
        r
        for r in synth.resources("AWS::Events::Rule", "Monitoring").values()
        if r["Properties"].get("ScheduleExpression") == "rate(15 minutes)"
    ]
    assert len(rules) == 1 and rules[0]["Properties"]["State"] == "ENABLED"
    (target,) = rules[0]["Properties"]["Targets"]
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 2
    function_key, _ = _function(synth, "modeldeck-dev-experiment")
    assert target["Arn"] == {"Fn::GetAtt": [function_key.split("/")[1], "Arn"]}
    outputs = synth.templates["Monitoring"]["Outputs"]
    assert any(k.startswith("ExperimentFunctionName") for k in outputs)


def test_eventbridge_may_run_the_job_and_its_role_acts_only_within_its_prefixes(
    env_synths: dict[str, Synth],
) -> None:
    """Evaluated by a real IAM evaluator on the templates synthesized as `cdk deploy` does (tests/infra/iam_sim.py)."""
    from tests.infra.iam_sim import ACCOUNT, REGION, Request, Templates, decide

    sim = Templates(env_synths["everything"].templates)
    prefix = "modeldeck-dev"
    fn = sim.arn_of("AWS::Lambda::Function", FunctionName=f"{prefix}-experiment")
    rule = next(sim._arn(s, r) for s, r in sim.find("AWS::Events::Rule") if r.startswith("ExperimentsSchedule"))
    roles = [(s, r) for s, r in sim.find("AWS::IAM::Role") if r.startswith("ExperimentsExperimentFunctionRole")]
    assert len(roles) == 1
    role = sim.role_arn(sim.physical_name(*roles[0]))
    policies = sim.role_policies(role)
    bucket = f"arn:aws:s3:::{prefix}-registry-{ACCOUNT}-{REGION}"
    topic = sim.arn_of("AWS::SNS::Topic", TopicName=f"{prefix}-alerts")
    key = sim.key_of_topic(topic)

    def s3(action: str, key_name: str) -> Request:
        return Request(role, action, f"{bucket}/{key_name}", identity_policies=policies)

    snapshot = f"experiments/{MODEL}/exp-1/snapshots/20261129T030000.000000Z.json"
    results = decide(
        [
            # EventBridge invokes the job on its schedule (the function's resource policy)
            Request(
                "events.amazonaws.com",
                "lambda:InvokeFunction",
                fn,
                {"aws:SourceArn": rule, "aws:SourceAccount": ACCOUNT},
                resource_policy=sim.lambda_policy(fn),
            ),
            s3("s3:GetObject", f"models/{MODEL}/experiment.json"),
            s3("s3:GetObject", f"capture/{MODEL}/dt=2026-11-29/hour=03/batch.jsonl"),
            s3("s3:GetObject", "feedback/breast-cancer/dt=2026-11-29/hour=03/batch.jsonl"),
            s3("s3:PutObject", snapshot),
            s3("s3:DeleteObject", f"experiments/{MODEL}/exp-1/decision.json"),
            Request(
                role,
                "sns:Publish",
                topic,
                {"aws:SecureTransport": "true"},
                resource_policy=sim.topic_policy(topic),
                identity_policies=policies,
            ),
            Request(role, "kms:GenerateDataKey", key, identity_policies=policies, resource_policy=sim.key_policy(key)),
            # and nothing else: the experiment document (conclude's), the models, the capture
            s3("s3:PutObject", f"models/{MODEL}/experiment.json"),
            s3("s3:DeleteObject", f"models/{MODEL}/experiment.json"),
            s3("s3:GetObject", f"models/{MODEL}/1/model.onnx"),
            s3("s3:DeleteObject", f"capture/{MODEL}/dt=2026-11-29/hour=03/batch.jsonl"),
        ]
    )
    assert results == ["Allowed"] * 8 + ["ImplicitlyDenied"] * 4
