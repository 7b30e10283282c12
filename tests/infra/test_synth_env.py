"""Synthesis the way `cdk deploy` does it: with a concrete account and region, for every option the config allows.

The CDK CLI always sets ``CDK_DEFAULT_REGION`` (``us-east-1`` with no AWS configuration) and, when it can
resolve credentials, ``CDK_DEFAULT_ACCOUNT``; ARNs then render with literal values, and a cdk-nag
acknowledgment written with ``<AWS::Region>`` placeholders no longer matches (``cdk synth`` fails).

The matrix (with the env-agnostic ``synth`` of conftest and ``variant`` of test_variants.py, every option is
synthesized both ways):

- ``everything``: account and eu-west-1; SageMaker, manual approval, schedule, retrain on drift, SnapStart,
  reserved concurrency, x86_64, the accuracy alarm, emails, and a non-default canary policy;
- ``region_only``: the region alone (the CLI without credentials), ap-southeast-7 (a region AWS's
  scikit-learn image table never listed), SageMaker training, the rest from cdk.json.

``make synth`` (run by ``.ci/run``, with and without an account) covers the CLI path itself.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.infra.conftest import ROOT, Synth, definition, synthesize

pytestmark = pytest.mark.xdist_group("infra")

ACCOUNT = "123456789012"
# SageMaker's rule for training job names (CreateTrainingJob: TrainingJobName).
JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
MATRIX: dict[str, dict[str, Any]] = {
    "everything": {
        "account": ACCOUNT,
        "region": "eu-west-1",
        "training__compute": "sagemaker",
        "training__manual_approval": True,
        "training__schedule": "rate(7 days)",
        "training__retrain_on_drift": True,
        "lambda__architecture": "x86_64",
        "lambda__snap_start": True,
        "lambda__reserved_concurrency": 50,
        "alarms__emails": ["ops@example.com"],
        "drift__accuracy_threshold": 0.9,
        "canary__strategy": "linear",
        "canary__steps": 3,
        "canary__error_rate_percent": 2.5,
        "canary__min_requests": 20,
        "canary__prediction_shift": 0.05,
        "canary__period_seconds": 300,
        "canary__gate_alpha": 0.01,
        "canary__gate_latency_margin_percent": 50.0,
    },
    "region_only": {"region": "ap-southeast-7", "training__compute": "sagemaker"},
}


@pytest.fixture(scope="session")
def env_synths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Synth]:
    return {name: synthesize(tmp_path_factory.mktemp(f"cdk.out.{name}"), **kw) for name, kw in MATRIX.items()}


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_cdk_nag_has_no_unacknowledged_finding_with_a_concrete_environment(
    env_synths: dict[str, Synth], name: str
) -> None:
    # Given the app synthesized with a concrete account and/or region, as `cdk deploy` does
    synth = env_synths[name]
    # Then cdk-nag reports nothing unacknowledged (the acknowledgments name the resolved ARNs)
    report = synth.outdir / "validation-report.json"
    assert synth.nag_error is None, report.read_text()[:4000] if report.exists() else str(synth.nag_error)
    # And the stacks really are bound to that environment
    assert synth.config.region == MATRIX[name]["region"]


def test_cfn_lint_reports_no_error_with_a_concrete_environment(env_synths: dict[str, Synth]) -> None:
    # Given every template of the matrix, When cfn-lint checks them in one run
    files = sorted(str(p) for s in env_synths.values() for p in s.outdir.glob("*.template.json"))
    done = subprocess.run(
        [sys.executable, "-m", "cfnlint", "--format", "json", *files], capture_output=True, text=True, check=False
    )
    # Then it finds no error
    assert [f for f in json.loads(done.stdout or "[]") if f["Level"] == "Error"] == []


def _training(synth: Synth) -> tuple[dict[str, Any], dict[str, Any]]:
    machine = next(iter(synth.resources("AWS::StepFunctions::StateMachine", stack="Training").values()))
    return machine, definition(machine)


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_sagemaker_trains_the_executions_spec_in_the_training_functions_image(
    env_synths: dict[str, Synth], name: str
) -> None:
    # Given training.compute = "sagemaker"
    synth = env_synths[name]
    template = synth.templates["Training"]
    raw_train = json.dumps(_training(synth)[0]["Properties"]["DefinitionString"])
    train = _training(synth)[1]["States"]["Train"]
    params = train["Parameters"]
    # Then the job runs the training Lambda's image (one asset, our Python 3.12 and pins), not a region map
    function = next(
        r["Properties"]
        for r in synth.resources("AWS::Lambda::Function", "Training").values()
        if "ImageUri" in r["Properties"]["Code"]
    )
    image_tag = json.dumps(function["Code"]["ImageUri"]).split(":")[-1].strip('"}')
    assert image_tag in raw_train
    assert "Mappings" not in template and "Fn::FindInMap" not in json.dumps(template)
    assets = json.loads(next(synth.outdir.glob("Training.assets.json")).read_text())
    assert len(assets["dockerImages"]) == 1
    # And its hyperparameters carry the execution's spec (as staged by validate), not the image's
    assert params["HyperParameters"]["spec_key.$"] == "$.validate.staged_spec"
    assert params["HyperParameters"]["model.$"] == "$.validate.model"
    assert params["HyperParameters"]["run_id.$"] == "$$.Execution.Name"
    # And the job name is per execution (a hash of its ARN) and within SageMaker's 63 characters
    name_format = params["TrainingJobName.$"]
    assert "States.Hash($$.Execution.Id, 'MD5')" in name_format
    literal = re.fullmatch(r"States\.Format\('([^']*)\{\}', States\.Hash\(\$\$\.Execution\.Id, 'MD5'\)\)", name_format)
    assert literal is not None, name_format
    assert JOB_NAME.match(literal.group(1) + "0" * 32)
    longest_stage_prefix = "modeldeck-" + "s" * 12 + "-"
    assert len(longest_stage_prefix) + 32 <= 63
    # And a retried task cannot start a second job: States.Timeout is not retried
    assert all("States.Timeout" not in r["ErrorEquals"] for r in train.get("Retry", []))


def test_the_release_function_gets_the_canary_policy_from_the_config(env_synths: dict[str, Synth]) -> None:
    # Given a non-default canary policy in the config
    synth = env_synths["everything"]
    env = next(
        r["Properties"]["Environment"]["Variables"]
        for r in synth.resources("AWS::Lambda::Function", "Release").values()
        if r["Properties"].get("FunctionName") == "modeldeck-dev-release"
    )
    # Then the release function's environment carries it, and no hard-coded threshold remains
    assert {k: v for k, v in env.items() if k.startswith("CANARY_")} == {
        "CANARY_ERROR_RATE_PERCENT": "2.5",
        "CANARY_MIN_REQUESTS": "20",
        "CANARY_LATENCY_P99_MS": "1000",
        "CANARY_PREDICTION_SHIFT": "0.05",
        "CANARY_PERIOD_SECONDS": "300",
        "CANARY_GATE_ENABLED": "true",
        "CANARY_GATE_ALPHA": "0.01",
        "CANARY_GATE_INTERVAL_SECONDS": "60",
        "CANARY_GATE_LATENCY_MARGIN_PERCENT": "50.0",
    }


def _worst_case_seconds(states: dict[str, Any]) -> int:
    """Every Task state in a row, each attempt to its TimeoutSeconds; only a retried States.Timeout
    (or States.ALL) repeats a whole attempt, other retried errors cost their backoff."""
    total = 0
    for state in states.values():
        if state["Type"] != "Task":
            continue
        timeout = state.get("TimeoutSeconds")
        assert timeout is not None, f"a task without a timeout can outlast any execution timeout: {state}"
        attempts = 1
        for retry in state.get("Retry", []):
            interval, rate, tries = (
                retry.get("IntervalSeconds", 1),
                retry.get("BackoffRate", 2.0),
                retry.get("MaxAttempts", 3),
            )
            total += int(sum(interval * rate**i for i in range(tries)))
            if {"States.Timeout", "States.ALL"} & set(retry["ErrorEquals"]):
                attempts += tries
        total += attempts * timeout
    return total


def test_the_training_execution_timeout_covers_every_task_with_its_retries(
    env_synths: dict[str, Synth], synth: Synth
) -> None:
    # Given the training state machine with manual approval and SageMaker, and the default one
    for s in (env_synths["everything"], synth):
        body = _training(s)[1]
        # Then no task with its retries can run past the execution's timeout (the approval's week included)
        assert body["TimeoutSeconds"] >= _worst_case_seconds(body["States"]), s.config.training
    approve = _training(env_synths["everything"])[1]["States"]["Approve"]
    assert all("States.Timeout" not in r["ErrorEquals"] for r in approve["Retry"])


def _asl(machine: dict[str, Any]) -> dict[str, Any]:
    """The definition with its CloudFormation tokens rendered as plausible values: pseudo parameters, and
    a function ARN for ``Fn::GetAtt`` (a task's ``Resource`` is the function's ARN when it calls it directly)."""

    def render(part: Any) -> str:
        if isinstance(part, str):
            return part
        pseudo = {"AWS::Partition": "aws", "AWS::Region": "eu-west-1", "AWS::AccountId": ACCOUNT}
        if part.get("Ref") in pseudo:
            return pseudo[part["Ref"]]
        return "arn:aws:lambda:eu-west-1:123456789012:function:f" if "Fn::GetAtt" in part else "x"

    body = machine["Properties"]["DefinitionString"]
    if isinstance(body, dict):
        body = "".join(render(p) for p in body["Fn::Join"][1])
    return dict(json.loads(body))


def test_every_state_machine_is_valid_asl(env_synths: dict[str, Synth], synth: Synth, tmp_path: Path) -> None:
    validator = ROOT / "node_modules" / ".bin" / "asl-validator"
    if not validator.exists():
        pytest.skip("asl-validator is not installed: run `npm ci` (make synth does)")
    # Given every state machine definition of the matrix and the default app
    files = []
    for s in (*env_synths.values(), synth):
        for key, machine in s.resources("AWS::StepFunctions::StateMachine").items():
            path = tmp_path / f"{len(files)}-{key.replace('/', '-')}.json"
            path.write_text(json.dumps(_asl(machine)))
            files.append(path)
    # When asl-validator checks them (ARNs are CloudFormation tokens here, so not their syntax)
    args = [a for f in files for a in ("--json-path", str(f))]
    done = subprocess.run([str(validator), "--no-arn-check", *args], capture_output=True, text=True, check=False)
    # Then each is valid Amazon States Language
    assert done.returncode == 0, done.stdout + done.stderr
