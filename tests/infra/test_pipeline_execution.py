"""The synthesized training state machine really executes on moto (the local cloud), end to end.

Given the shared synth's templates deployed into the local cloud, when an execution starts, then the
training function's steps run in order and register a model; a bad model name ends in the failure
notification and ``TrainingFailed``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.infra.conftest import Synth

pytestmark = pytest.mark.xdist_group("infra")


@pytest.fixture(scope="module")
def cloud(synth: Synth) -> Iterator[Any]:
    from modeldeck.localcloud import load_templates, local_cloud

    with local_cloud(templates=load_templates(synth.outdir)) as c:
        yield c


def run(cloud: Any, name: str, payload: dict[str, Any]) -> dict[str, Any]:
    sfn = cloud.client("stepfunctions")
    arn = cloud.deployer.outputs["TrainingStateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=arn, name=name, input=json.dumps(payload))["executionArn"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        described = sfn.describe_execution(executionArn=execution)
        if described["status"] != "RUNNING":
            return described
        time.sleep(0.2)
    raise AssertionError(f"{name} still running")


def test_an_execution_with_the_spec_runs_every_step_and_registers(cloud: Any) -> None:
    from modeldeck.spec import spec_payload

    spec = spec_payload(Path(__file__).resolve().parents[2] / "models" / "breast-cancer.toml")
    result = run(cloud, "with-spec", {"model": "breast-cancer", "spec": spec})
    assert result["status"] == "SUCCEEDED", result.get("cause")
    output = json.loads(result["output"])
    assert list(output) == [
        "model",
        "spec",
        "lock",
        "spec_dir",  # NoSpecDir: "" when the input names none (read from the bundled specs' directory)
        "validate",
        "train",
        "evaluate",
        "convert",
        "compare",
        "register",
        "release_execution",
    ]
    assert output["compare"]["passed"] is True
    assert output["register"]["version"] >= 1
    # The hand-over started the release state machine for the registered version.
    assert output["release_execution"]["name"].startswith(f"breast-cancer-v{output['register']['version']}-")
    sfn = cloud.client("stepfunctions")
    assert (
        sfn.describe_execution(executionArn=output["release_execution"]["execution_arn"])["stateMachineArn"]
        == (cloud.deployer.outputs["ReleaseStateMachineArn"])
    )


def test_an_execution_asked_not_to_release_only_registers(cloud: Any) -> None:
    from modeldeck.spec import spec_payload

    spec = spec_payload(Path(__file__).resolve().parents[2] / "models" / "breast-cancer.toml")
    spec["estimator"]["params"]["C"] = 0.5
    result = run(cloud, "no-release", {"model": "breast-cancer", "spec": spec, "release": False})
    assert result["status"] == "SUCCEEDED", result.get("cause")
    output = json.loads(result["output"])
    assert "release_execution" not in output and output["register"]["created"] is True


def test_a_failing_step_notifies_and_fails(cloud: Any) -> None:
    result = run(cloud, "unknown-model", {"model": "no-such-model"})
    assert result["status"] == "FAILED"
    assert result["error"] == "TrainingFailed"
