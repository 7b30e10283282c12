"""A running `modeldeck serve` picks up a model added after it started (issue 13.5): another command
re-synthesizes the app, serve deploys the new assembly into its running cloud as a stack update, and the
command then acts on the new model through serve's endpoint."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from modeldeck.cli.common import current_endpoint
from modeldeck.cli.serve import pick_up_templates
from modeldeck.deployment import INFERENCE_HANDLER, Deployment
from modeldeck.errors import ModeldeckError
from modeldeck.localcloud import (
    LocalCloud,
    SharedEndpoint,
    cloudformation,
    endpoint_client_factory,
    load_templates,
    running_endpoint,
)
from modeldeck.localcloud.cloudformation import SYNTH_RECORD

NOW = "the sources as they are now"  # source_digest(), fixed: other edits to this tree must not re-synthesize


def _function(model: str) -> dict[str, Any]:
    return {
        "Type": "AWS::Lambda::Function",
        "Properties": {
            "FunctionName": f"modeldeck-dev-{model}",
            "Handler": INFERENCE_HANDLER,
            "Runtime": "python3.12",
            "Code": {"S3Bucket": "assets", "S3Key": f"{model}.zip"},
            "Environment": {"Variables": {"MODEL_NAME": model, "MODEL_VERSION": "0"}},
        },
    }


def _synthesize(cdk_out: Path, resources: dict[str, Any], sources: str) -> None:
    """What `assembly_templates` leaves behind: a cloud assembly and the digest of its sources (written last)."""
    cdk_out.mkdir(parents=True, exist_ok=True)
    (cdk_out / "Serving.template.json").write_text(
        json.dumps({"Resources": resources, "Outputs": {"Models": {"Value": ",".join(sorted(resources))}}})
    )
    stack = {"type": "aws:cloudformation:stack", "properties": {"templateFile": "Serving.template.json"}}
    (cdk_out / "manifest.json").write_text(json.dumps({"artifacts": {"Serving": stack}}))
    (cdk_out / SYNTH_RECORD).write_text(json.dumps({"sources": sources, "seconds": 1.0}))


@pytest.fixture
def serving(cloud: LocalCloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    """`modeldeck serve` on a cloud deployed with one model: its endpoint, and its loop picking up templates."""
    monkeypatch.setattr(cloudformation, "source_digest", lambda: NOW)
    state, cdk_out = tmp_path / "state", tmp_path / "state" / "cdk.out"
    _synthesize(cdk_out, {"BreastCancer": _function("breast-cancer")}, sources="at serve's start")
    cloud.deploy(load_templates(cdk_out))
    endpoint = SharedEndpoint(cloud, state)
    endpoint.publish(cdk_out=str(cdk_out), assembly="at serve's start")
    ctx = SimpleNamespace(cloud=cloud, err=Console(file=open("/dev/null", "w")))  # noqa: SIM115
    stop = threading.Event()

    def loop() -> None:
        deployed: str | None = "at serve's start"
        while not stop.wait(0.1):
            deployed = pick_up_templates(ctx, endpoint, cdk_out, deployed)  # type: ignore[arg-type]

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield state, cdk_out
    stop.set()
    thread.join()
    endpoint.close()


def test_a_model_added_after_serve_started_is_served(serving: tuple[Path, Path]) -> None:
    state, cdk_out = serving
    # Given serve running, and a spec added since: the app re-synthesized from the sources as they are now
    _synthesize(cdk_out, {"BreastCancer": _function("breast-cancer"), "Iris": _function("iris")}, NOW)
    # When a command acts through serve's endpoint
    endpoint = current_endpoint(state, running_endpoint(state) or {})
    # Then serve has deployed the new assembly into its cloud: the command finds the new model's function
    deployment = Deployment(endpoint_client_factory(endpoint["url"]), endpoint["outputs"])
    assert deployment.function_name("iris") == "modeldeck-dev-iris"
    assert deployment.models() == ["breast-cancer", "iris"]
    assert endpoint["outputs"]["Models"] == "BreastCancer,Iris"


def test_a_failed_redeploy_is_reported_to_the_waiting_command(serving: tuple[Path, Path]) -> None:
    state, cdk_out = serving
    # Given serve running, and changed templates that CloudFormation would fail (an alias of no function)
    alias = {"Type": "AWS::Lambda::Alias", "Properties": {"FunctionName": "nope", "FunctionVersion": "1", "Name": "x"}}
    _synthesize(cdk_out, {"BreastCancer": _function("breast-cancer"), "Broken": alias}, NOW)
    # When a command acts through serve's endpoint
    # Then it is told in one line why, and what to do
    with pytest.raises(ModeldeckError, match=r"could not deploy the changed templates: .*start it again"):
        current_endpoint(state, running_endpoint(state) or {})
