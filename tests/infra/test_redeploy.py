"""A redeploy never republishes a version nor moves ``live``: CloudFormation creates the first version and the
alias once, with logical ids and properties that no change to the function alters (the release machinery
owns them after). With ``function.current_version`` the Version's logical id and CodeSha256 follow the code
and configuration, so every change was a new publish and moved ``live`` back to MODEL_VERSION=0."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Template

from infra.constructs.functions import FunctionDefaults
from infra.constructs.serving import ModelServing, ServingSettings


def _serving_templates(*variants: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The serving construct's resources for each (code, settings) variant, from one synthesis."""
    app = cdk.App()
    for i, (code, settings) in enumerate(variants):
        stack = cdk.Stack(app, f"Serving{i}", env=cdk.Environment(account="123456789012", region="eu-west-1"))
        ModelServing(
            stack,
            "Model",
            settings=ServingSettings(model="breast-cancer", function_name="modeldeck-dev-breast-cancer", **settings),
            defaults=FunctionDefaults(),
            code=lambda_.Code.from_inline(code),
            bucket=s3.Bucket(stack, "Registry"),
        )
    assembly = app.synth()
    return [
        dict(Template.from_json(assembly.get_stack_by_name(f"Serving{i}").template).to_json()["Resources"])
        for i in range(len(variants))
    ]


def _of_type(resources: dict[str, Any], kind: str) -> dict[str, Any]:
    return {logical: r for logical, r in resources.items() if r["Type"] == kind}


def test_versions_and_alias_keep_their_ids_and_properties_whatever_changes_in_the_function() -> None:
    # Given the serving construct synthesized twice: other code, environment and memory
    first, second = _serving_templates(
        ("def handler(e, c): return 1", {"memory_mb": 1024, "initial_version": "0"}),
        (
            "def handler(e, c): return 2",
            {"memory_mb": 2048, "initial_version": "3", "capture_sample_rate": 0.5, "timeout_seconds": 20},
        ),
    )
    # Then the functions differ ...
    assert _of_type(first, "AWS::Lambda::Function") != _of_type(second, "AWS::Lambda::Function")
    # ... and the Version and the Alias are the same resources, with the same properties
    for kind in ("AWS::Lambda::Version", "AWS::Lambda::Alias"):
        assert _of_type(first, kind) == _of_type(second, kind), kind
        assert len(_of_type(first, kind)) == 1, kind
    ((_, version),) = _of_type(first, "AWS::Lambda::Version").items()
    assert "CodeSha256" not in version["Properties"], "a code hash would republish on every code change"
    assert version["DeletionPolicy"] == "Retain", "`live` may still point at the first version"
