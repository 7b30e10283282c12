"""The release stack as `cdk deploy` synthesizes it: what its role may do (a real IAM evaluator) and the paths
of its state machine (issue 11 items 5 and 7)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modeldeck import release
from tests.infra.conftest import Synth, definition, synthesize
from tests.infra.iam_sim import ACCOUNT, REGION, Request, Templates, decide

PREFIX, MODEL = "modeldeck-dev", "breast-cancer"
BUCKET = f"{PREFIX}-registry-{ACCOUNT}-{REGION}"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synth]:
    yield synthesize(Path(tmp_path_factory.mktemp("cdk.out.release")), account=ACCOUNT, region=REGION)


@pytest.fixture(scope="module")
def machine(deployed: Synth) -> dict[str, Any]:
    template = next(t for name, t in deployed.templates.items() if name.endswith("Release") or "release" in name)
    (sm,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::StepFunctions::StateMachine"]
    return sm  # type: ignore[no-any-return]


def _release_role(sim: Templates) -> tuple[str, list[dict[str, Any]]]:
    ((stack, logical),) = sim.find("AWS::Lambda::Function", FunctionName=f"{PREFIX}-release")
    role_arn = str(sim.resolve(stack, sim.templates[stack]["Resources"][logical]["Properties"]["Role"]))
    return role_arn, sim.role_policies(role_arn)


def test_the_release_role_may_do_what_a_release_needs(deployed: Synth) -> None:
    """Given the deployed release role, when a shadow release stops, its report reads the model's capture;
    when a release ends, it deletes its own canary alarms and reads their history; when a lock is held, it
    asks Step Functions whether the holder still runs. Another model's capture stays out of reach."""
    sim = Templates(deployed.templates)
    role, policies = _release_role(sim)
    alarm = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{PREFIX}-{MODEL}-canary-v3-rel-errors"
    execution = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:{PREFIX}-release:{MODEL}-v3-abc"
    capture = f"arn:aws:s3:::{BUCKET}/capture/{MODEL}/2026/11/28/23/part-0.jsonl"

    def ask(action: str, resource: str, **context: str) -> Request:
        return Request(role, action, resource, context, identity_policies=policies)

    results = decide(
        [
            ask("s3:GetObject", capture),
            ask("s3:ListBucket", f"arn:aws:s3:::{BUCKET}", **{"s3:prefix": f"capture/{MODEL}/2026/11/28/23/"}),
            ask("cloudwatch:DeleteAlarms", alarm),
            ask("cloudwatch:DescribeAlarmHistory", alarm),
            ask("states:DescribeExecution", execution),
            ask("s3:GetObject", f"arn:aws:s3:::{BUCKET}/capture/other-model/2026/11/28/23/part-0.jsonl"),
        ]
    )
    assert results == ["Allowed"] * 5 + ["ImplicitlyDenied"]


def test_the_release_role_may_read_the_bakes_metric_totals(deployed: Synth) -> None:
    """Given the deployed release role, when the check totals the candidate's requests, server errors and
    scores over its bake, then GetMetricData is allowed (it has no resource-level permissions: '*')."""
    sim = Templates(deployed.templates)
    role, policies = _release_role(sim)

    results = decide([Request(role, "cloudwatch:GetMetricData", "*", {}, identity_policies=policies)])

    assert results == ["Allowed"]


def test_every_task_of_the_release_state_machine_has_a_way_out(machine: dict[str, Any]) -> None:
    """Given the release ASL, then every task catches every error (so the lock is freed and the alias has
    one owner on every path), and a lost lock (ReleaseSuperseded) is never retried."""
    states = definition(machine)["States"]
    tasks = {name: s for name, s in states.items() if s["Type"] == "Task"}
    assert {"Gate", "ShiftTraffic", "CheckAlarms", "Promote", "StartShadow", "StopShadow", "RollBack"} <= set(tasks)
    for name, task in tasks.items():
        assert any("States.ALL" in c["ErrorEquals"] for c in task.get("Catch", [])), name
        first = task["Retry"][0]
        assert "ReleaseSuperseded" in first["ErrorEquals"] and first["MaxAttempts"] == 0, name
    refused = states[tasks["Gate"]["Catch"][0]["Next"]]
    assert refused["Type"] == "Task" and refused["Parameters"]["action"] == "refused"


def test_the_check_waits_for_the_metrics_to_settle_after_each_bake(machine: dict[str, Any]) -> None:
    """Given the release ASL, then between a bake and the alarm check a Wait lets CloudWatch receive and
    evaluate the bake's last minutes (the gate passes the settle time)."""
    states = definition(machine)["States"]
    assert states["Worse?"]["Default"] == "SettleMetrics"
    assert states["SettleMetrics"] == {"Type": "Wait", "SecondsPath": "$.settle_seconds", "Next": "CheckAlarms"}
    assert release.settle_seconds(60) >= 60 + 180


def test_the_bake_is_a_loop_of_waits_and_looks_of_the_statistical_gate(machine: dict[str, Any]) -> None:
    """Given the release ASL, then each bake wait is followed by a look of the statistical gate, which rolls
    back when the candidate is worse, waits again while bake time is left, and otherwise goes on to the
    settle wait and the alarm check."""
    states = definition(machine)["States"]
    assert states["Bake"] == {"Type": "Wait", "SecondsPath": "$.gate_wait", "Next": "SequentialCheck"}
    look = states["SequentialCheck"]
    assert look["Parameters"]["action"] == "sequential_check" and look["Next"] == "Worse?"
    choices = {c["Variable"]: c for c in states["Worse?"]["Choices"]}
    assert choices["$.worse"]["BooleanEquals"] is True and choices["$.worse"]["Next"] == "RollBack"
    assert choices["$.bake_left"]["NumericGreaterThan"] == 0 and choices["$.bake_left"]["Next"] == "Bake"


def test_the_execution_timeout_covers_the_longest_configured_plan(deployed: Synth, machine: dict[str, Any]) -> None:
    """Given the config's canary policy, then the execution timeout is at least its longest plan."""
    c = deployed.config.canary
    period = int(getattr(c, "period_seconds", 60))
    timeout = definition(machine)["TimeoutSeconds"]
    assert timeout >= release.plan_seconds(c.strategy, c.steps, c.bake_minutes * 60, period)
    release.check_plan_fits(c.strategy, c.steps, c.bake_minutes * 60, period, timeout)
