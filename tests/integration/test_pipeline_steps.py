"""The training pipeline's steps on moto, run in the order the state machine runs them."""

from __future__ import annotations

from typing import Any

import pytest

from modeldeck.errors import DatasetError, SpecError
from modeldeck.localcloud import LocalCloud
from modeldeck.registry import Registry
from modeldeck.spec import spec_payload
from tests.conftest import DEMO_SPEC
from training.steps import STEPS, StepContext, run_step


def run_all(ctx: StepContext, run_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    results = {}
    for step in STEPS:
        results[step] = run_step({"step": step, "model": "breast-cancer", "run_id": run_id, "spec": spec}, ctx)
    return results


def model_keys(registry: Registry) -> list[str]:
    listing = registry.s3.list_objects_v2(Bucket=registry.bucket, Prefix="models/")
    return [o["Key"] for o in listing.get("Contents", [])]


def test_steps_register_a_version_and_compare_with_the_champion(cloud: LocalCloud, registry: Registry) -> None:
    ctx = StepContext(cloud.client("s3"), cloud.bucket)
    first = run_all(ctx, "run-1", spec_payload(DEMO_SPEC))
    assert first["validate"]["rows"] == 569
    assert first["convert"]["parity"]["label_agreement"] == 1.0
    assert first["evaluate"]["metrics"]["accuracy"] == pytest.approx(first["convert"]["metrics"]["accuracy"])
    assert first["compare"] == {
        "champion": None,
        "passed": True,
        "reason": "no champion yet: the first model is compared to nothing",
    }
    assert first["register"]["version"] == 1 and first["register"]["created"]

    registry.set_champion("breast-cancer", 1)
    spec = spec_payload(DEMO_SPEC)
    spec["estimator"]["params"]["C"] = 0.05
    second = run_all(ctx, "run-2", spec)
    assert second["compare"]["champion"] == 1
    assert 0.8 <= second["compare"]["agreement"] <= 1.0
    assert "regression" in second["compare"]["reason"]
    assert second["register"]["version"] == 2


def test_a_retried_register_step_does_not_create_a_second_version(cloud: LocalCloud, registry: Registry) -> None:
    ctx = StepContext(cloud.client("s3"), cloud.bucket)
    run_all(ctx, "run-1", spec_payload(DEMO_SPEC))
    again = run_step(
        {"step": "register", "model": "breast-cancer", "run_id": "run-1", "spec": spec_payload(DEMO_SPEC)}, ctx
    )
    assert again == {**again, "version": 1, "created": False}
    assert registry.list_versions("breast-cancer") == [1]


def test_bad_data_stops_at_validate_and_writes_nothing(cloud: LocalCloud, registry: Registry) -> None:
    ctx = StepContext(cloud.client("s3"), cloud.bucket)
    spec = spec_payload(DEMO_SPEC)
    spec["dataset"]["target"] = "diagnosis"
    with pytest.raises(DatasetError, match="missing target column"):
        run_step({"step": "validate", "model": "breast-cancer", "run_id": "r", "spec": spec}, ctx)
    assert model_keys(registry) == []


def test_unknown_steps_and_models_are_spec_errors(cloud: LocalCloud) -> None:
    ctx = StepContext(cloud.client("s3"), cloud.bucket)
    with pytest.raises(SpecError, match="unknown pipeline step 'deploy'"):
        run_step({"step": "deploy"}, ctx)
    with pytest.raises(SpecError, match="model spec not found"):
        run_step({"step": "validate", "model": "nope"}, ctx)


def test_the_bundled_spec_is_used_when_the_input_has_none(cloud: LocalCloud) -> None:
    ctx = StepContext(cloud.client("s3"), cloud.bucket)
    assert run_step({"step": "validate", "model": "breast-cancer"}, ctx)["rows"] == 569
