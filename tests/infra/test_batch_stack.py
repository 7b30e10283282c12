"""The batch stack as `cdk deploy` synthesizes it: the Distributed Map in the batch state machine's ASL, the
least privilege of its roles (a real IAM evaluator), and the function's image."""

from __future__ import annotations

from typing import Any

from tests.infra.conftest import Synth, definition
from tests.infra.iam_sim import ACCOUNT, REGION, Request, Templates, decide

PREFIX = "modeldeck-dev"
BUCKET = f"{PREFIX}-registry-{ACCOUNT}-{REGION}"


def _machine(synth: Synth) -> dict[str, Any]:
    (machine,) = synth.resources("AWS::StepFunctions::StateMachine", "Batch").values()
    return machine


def test_the_batch_state_machine_fans_out_with_a_distributed_map_as_configured(synth: Synth) -> None:
    # Given the default app's batch state machine
    asl = definition(_machine(synth))
    score = asl["States"]["Score"]
    # Then Score is a Distributed Map over the input prefix's listing, in batches within 256 KiB
    assert score["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    assert score["ItemReader"]["Resource"].endswith(":states:::s3:listObjectsV2")
    assert score["ItemReader"]["Parameters"]["Prefix.$"] == "$.input.prefix"
    batcher = score["ItemBatcher"]
    assert batcher["MaxItemsPerBatch"] == synth.config.batch.files_per_batch == 10
    assert 0 < batcher["MaxInputBytesPerBatch"] <= 256 * 1024
    assert batcher["BatchInput"] == {
        "model.$": "$.model",
        "version.$": "$.version",
        "input.$": "$.input",
        "output.$": "$.output",
    }
    assert score["MaxConcurrency"] == synth.config.batch.max_concurrency == 100
    # And the children's records go to S3 under the run's results prefix; the manifest follows either way
    assert score["ResultWriter"]["Resource"].endswith(":states:::s3:putObject")
    assert score["ResultWriter"]["Parameters"]["Prefix.$"] == "$.output.results"
    assert score["Next"] == "Manifest" and score["Catch"][0]["Next"] == "FailedManifest"
    assert asl["States"]["FailedManifest"]["Next"] == "Failed" and asl["States"]["Failed"]["Type"] == "Fail"
    child = score["ItemProcessor"]["States"]["ScoreBatch"]
    assert "Lambda.TooManyRequestsException" in child["Retry"][0]["ErrorEquals"]


def test_the_construct_declares_the_configured_concurrency_and_tolerated_failures() -> None:
    """Given the construct alone in a bare stack, with its own settings (5 %, 7 children at once)."""
    import aws_cdk as cdk
    from aws_cdk import aws_lambda as lambda_
    from aws_cdk import aws_s3 as s3
    from aws_cdk.assertions import Template

    from infra.constructs.batch import BatchScoring, BatchSettings
    from infra.constructs.functions import FunctionDefaults

    # cdk.json's flag: CDK renders a Distributed Map's ResultWriterV2 only with it
    stack = cdk.Stack(cdk.App(context={"@aws-cdk/aws-stepfunctions:useDistributedMapResultWriterV2": True}))
    settings = BatchSettings(
        "f", "m", "in-bucket", "in/", "out-bucket", "out/", max_concurrency=7, tolerated_failure_percent=5
    )
    BatchScoring(
        stack,
        "Batch",
        settings=settings,
        defaults=FunctionDefaults(),
        code=lambda_.DockerImageCode.from_ecr(_repository(stack), cmd=["lambdas.batch.handler.lambda_handler"]),
        registry=s3.Bucket.from_bucket_name(stack, "Registry", "registry"),
    )
    (machine,) = Template.from_stack(stack).find_resources("AWS::StepFunctions::StateMachine").values()
    score = definition(machine)["States"]["Score"]
    assert score["ToleratedFailurePercentage"] == 5 and score["MaxConcurrency"] == 7
    assert score["ItemReader"]["Parameters"]["Bucket"] == "in-bucket"
    assert score["ResultWriter"]["Parameters"]["Bucket"] == "out-bucket"


def _repository(stack: Any) -> Any:
    from aws_cdk import aws_ecr as ecr

    return ecr.Repository.from_repository_name(stack, "Repo", "batch")


def _role(sim: Templates, kind: str, **properties: Any) -> tuple[str, list[dict[str, Any]]]:
    ((stack, logical),) = sim.find(kind, **properties)
    role_arn = str(
        sim.resolve(
            stack,
            sim.templates[stack]["Resources"][logical]["Properties"]["RoleArn" if "StateMachine" in kind else "Role"],
        )
    )
    return role_arn, sim.role_policies(role_arn)


def test_the_batch_roles_reach_the_input_output_and_models_and_nothing_else(synth: Synth) -> None:
    """Given the deployed batch roles: the function reads inputs and models and writes outputs; the state
    machine lists the input prefix and writes results under the output prefix; neither reaches further."""
    sim = Templates(synth.templates)
    function, function_policies = _role(sim, "AWS::Lambda::Function", FunctionName=f"{PREFIX}-batch")
    machine, machine_policies = _role(sim, "AWS::StepFunctions::StateMachine", StateMachineName=f"{PREFIX}-batch")
    objects = f"arn:aws:s3:::{BUCKET}"

    def fn(action: str, resource: str, **context: str) -> Request:
        return Request(function, action, resource, context, identity_policies=function_policies)

    def sm(action: str, resource: str, **context: str) -> Request:
        return Request(machine, action, resource, context, identity_policies=machine_policies)

    allowed = decide(
        [
            fn("s3:GetObject", f"{objects}/batch/input/day/part-1.csv"),
            fn("s3:PutObject", f"{objects}/batch/output/day/part-1.csv.parquet"),
            fn("s3:GetObject", f"{objects}/models/breast-cancer/3/model.onnx"),
            fn("s3:ListBucket", objects, **{"s3:prefix": "models/breast-cancer/"}),
            sm("s3:ListBucket", objects, **{"s3:prefix": "batch/input/day/"}),
            sm("s3:PutObject", f"{objects}/batch/output/day/_results/x/manifest.json"),
        ]
    )
    denied = decide(
        [
            fn("s3:PutObject", f"{objects}/batch/input/day/part-1.csv"),
            fn("s3:PutObject", f"{objects}/models/breast-cancer/champion.json"),
            fn("s3:GetObject", f"{objects}/capture/breast-cancer/2026/11/28/part-0.jsonl"),
            fn("s3:ListBucket", objects, **{"s3:prefix": "capture/"}),
            sm("s3:ListBucket", objects, **{"s3:prefix": "models/"}),
            sm("s3:PutObject", f"{objects}/models/breast-cancer/champion.json"),
        ]
    )
    assert allowed == ["Allowed"] * 6
    assert all(result != "Allowed" for result in denied), denied


def test_the_batch_function_is_a_container_image_naming_its_handler(synth: Synth) -> None:
    (function,) = [
        f
        for f in synth.resources("AWS::Lambda::Function", "Batch").values()
        if f["Properties"].get("PackageType") == "Image"
    ]
    assert function["Properties"]["ImageConfig"]["Command"] == ["lambdas.batch.handler.lambda_handler"]
    assert function["Properties"]["Timeout"] == 15 * 60 and function["Properties"]["MemorySize"] == 3008
