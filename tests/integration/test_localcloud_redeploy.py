"""Deploying changed templates over a live local cloud follows CloudFormation's update rules, so a redeploy
after releases can be tested locally: it must neither fail nor move ``live``."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest

from modeldeck.localcloud import LocalCloud, assembly_templates, local_cloud
from modeldeck.localcloud.cloudformation import DeployError

INFERENCE = "lambdas.inference.handler.lambda_handler"


def _template(code: str = "a", memory: int = 128, version_description: str = "first") -> dict[str, Any]:
    return {
        "Resources": {
            "Fn": {
                "Type": "AWS::Lambda::Function",
                "Properties": {
                    "FunctionName": "fn",
                    "Handler": "tests.fixtures.clock_handlers.answers_500",
                    "Runtime": "python3.12",
                    "Code": {"S3Bucket": "assets", "S3Key": f"{code}.zip"},
                    "MemorySize": memory,
                    "Environment": {"Variables": {"MODEL_VERSION": "0"}},
                },
            },
            "FirstVersion": {
                "Type": "AWS::Lambda::Version",
                "Properties": {"FunctionName": {"Ref": "Fn"}, "Description": version_description},
            },
            "Live": {
                "Type": "AWS::Lambda::Alias",
                "Properties": {
                    "FunctionName": {"Ref": "Fn"},
                    "FunctionVersion": {"Fn::GetAtt": ["FirstVersion", "Version"]},
                    "Name": "live",
                },
            },
            "Errors": {
                "Type": "AWS::CloudWatch::Alarm",
                "Properties": {
                    "AlarmName": "fn-errors",
                    "Namespace": "AWS/Lambda",
                    "MetricName": "Errors",
                    "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": "Fn"}}],
                    "Statistic": "Sum",
                    "Period": 60,
                    "EvaluationPeriods": 1,
                    "Threshold": 1,
                    "ComparisonOperator": "GreaterThanOrEqualToThreshold",
                    "TreatMissingData": "ignore",
                },
            },
        }
    }


def _release(cloud: LocalCloud, function: str, model_version: str) -> str:
    """What a release leaves behind: a published version pinning the model version, behind ``live``."""
    lam = cloud.client("lambda")
    env = lam.get_function_configuration(FunctionName=function)["Environment"]["Variables"]
    lam.update_function_configuration(
        FunctionName=function, Environment={"Variables": {**env, "MODEL_VERSION": model_version}}
    )
    version = str(lam.publish_version(FunctionName=function)["Version"])
    lam.update_alias(
        FunctionName=function, Name="live", FunctionVersion=version, RoutingConfig={"AdditionalVersionWeights": {}}
    )
    lam.update_function_configuration(FunctionName=function, Environment={"Variables": env})
    return version


def _versions(cloud: LocalCloud, function: str) -> list[str]:
    listed = cloud.client("lambda").list_versions_by_function(FunctionName=function)["Versions"]
    return [v["Version"] for v in listed if v["Version"] != "$LATEST"]


def test_cloudformation_update_rules_for_functions_versions_aliases_and_alarms(cloud: LocalCloud) -> None:
    # Given a deployed stack, a release behind `live`, and the stack's alarm in ALARM
    cloud.deploy([_template()])
    released = _release(cloud, "fn", "7")
    cw, lam = cloud.client("cloudwatch"), cloud.client("lambda")
    cw.set_alarm_state(AlarmName="fn-errors", StateValue="ALARM", StateReason="a crash")
    # When the stack is deployed again with other code and memory (the Version and Alias unchanged)
    cloud.deploy([_template(code="b", memory=256)])
    # Then the function is updated in place, the version is not touched, `live` stays, the alarm keeps its state
    assert lam.get_function_configuration(FunctionName="fn")["MemorySize"] == 256
    assert _versions(cloud, "fn") == ["1", released]
    assert lam.get_alias(FunctionName="fn", Name="live")["FunctionVersion"] == released
    assert cw.describe_alarms(AlarmNames=["fn-errors"])["MetricAlarms"][0]["StateValue"] == "ALARM"
    # When the Version's properties change: a replacement, i.e. a new publish (the function changed since)
    cloud.deploy([_template(code="b", memory=256, version_description="second")])
    assert _versions(cloud, "fn") == ["1", released, "3"]
    # Then publishing again with nothing changed in the function fails, as CloudFormation fails it
    with pytest.raises(DeployError, match=r"A version for this Lambda function exists \( 3 \)"):
        cloud.deploy([_template(code="b", memory=256, version_description="third")])


@pytest.fixture(scope="module")
def templates() -> list[dict[str, Any]]:
    found = assembly_templates(Path(os.environ["MODELDECK_CDK_OUT"]))
    assert found is not None
    return found


def _changed(templates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The app's templates after a change to the model function's code, environment and memory, as a new
    ``cdk synth`` writes them (tests/infra/test_redeploy.py: its Version and Alias stay as they are)."""
    changed = copy.deepcopy(templates)
    for template in changed:
        for resource in template["Resources"].values():
            props = resource.get("Properties", {})
            if resource["Type"] == "AWS::Lambda::Function" and props.get("Handler") == INFERENCE:
                props["MemorySize"] = int(props.get("MemorySize", 128)) + 512
                props["Environment"]["Variables"]["MAX_ROWS"] = "77"
                props["Code"] = {"S3Bucket": "assets", "S3Key": "new-code.zip"}
    return changed


def test_a_redeploy_after_releases_neither_fails_nor_moves_live(templates: list[dict[str, Any]]) -> None:
    with local_cloud(templates=templates) as cloud:
        # Given the app deployed and two releases of the model function, the second one live
        name = "modeldeck-dev-breast-cancer"
        lam = cloud.client("lambda")
        _release(cloud, name, "1")
        live = _release(cloud, name, "2")
        before = _versions(cloud, name)
        # When the changed templates are deployed over it
        cloud.deploy(_changed(templates))
        # Then the deploy succeeded, the function changed, no version was published, and `live` did not move
        config = lam.get_function_configuration(FunctionName=name)
        assert config["Environment"]["Variables"]["MAX_ROWS"] == "77"
        assert _versions(cloud, name) == before
        alias = lam.get_alias(FunctionName=name, Name="live")
        assert alias["FunctionVersion"] == live
        pinned = lam.get_function_configuration(FunctionName=name, Qualifier=live)
        assert pinned["Environment"]["Variables"]["MODEL_VERSION"] == "2"
