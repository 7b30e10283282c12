"""The S3 registry on moto: immutable versions, card last, champion pointer, diffs."""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace
from typing import Any
from unittest import mock

import pytest
from botocore.exceptions import ClientError

from modeldeck.compare import diff
from modeldeck.errors import NotFoundError, RegistryError
from modeldeck.registry import BASELINE, CARD, HOLDOUT, MODEL, Registry
from modeldeck.spec import parse_spec
from tests.conftest import DEMO_SPEC
from training.datasets import load_dataset
from training.train import train_model


def register(registry: Registry, trained: Any, **card_changes: Any) -> Any:
    card = replace(trained.card, **card_changes) if card_changes else trained.card
    return registry.register(card, trained.onnx, {BASELINE: trained.baseline, HOLDOUT: trained.holdout})


def keys(registry: Registry) -> list[str]:
    listing = registry.s3.list_objects_v2(Bucket=registry.bucket)
    return sorted(obj["Key"] for obj in listing.get("Contents", []))


def test_register_writes_the_layout_and_versions_grow(registry: Registry, trained_demo: Any) -> None:
    card, created = register(registry, trained_demo)
    assert created and card.version == 1 and card.parent_version is None
    assert keys(registry) == [f"models/breast-cancer/1/{f}" for f in (BASELINE, CARD, HOLDOUT, MODEL)]
    second, _ = register(registry, trained_demo, spec_sha256="0" * 64)
    assert second.version == 2
    assert registry.list_versions("breast-cancer") == [1, 2]
    assert registry.list_models() == ["breast-cancer"]
    assert registry.get_card("breast-cancer", 1).onnx_sha256 == trained_demo.card.onnx_sha256


def test_registering_the_same_content_again_returns_the_existing_version(registry: Registry, trained_demo: Any) -> None:
    first, _ = register(registry, trained_demo)
    again, created = register(registry, trained_demo)
    assert not created and again.version == first.version
    assert registry.list_versions("breast-cancer") == [1]


def test_a_failure_mid_registration_leaves_no_visible_version(registry: Registry, trained_demo: Any) -> None:
    # Given S3 fails when the card (the last object) is written
    real_put = registry.s3.put_object

    def failing_put(**kwargs: Any) -> Any:
        if kwargs["Key"].endswith(CARD):
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "boom"}}, "PutObject")
        return real_put(**kwargs)

    with mock.patch.object(registry.s3, "put_object", side_effect=failing_put), pytest.raises(ClientError):
        register(registry, trained_demo)
    # Then nothing is visible, and what was written was cleaned up
    assert registry.list_versions("breast-cancer") == []
    assert keys(registry) == []
    # And a retry succeeds
    assert register(registry, trained_demo)[0].version == 1


def test_leftovers_of_a_crashed_registration_are_invisible_and_skipped(registry: Registry, trained_demo: Any) -> None:
    registry.s3.put_object(Bucket=registry.bucket, Key="models/breast-cancer/1/model.onnx", Body=b"partial")
    assert registry.list_versions("breast-cancer") == []
    card, _ = register(registry, trained_demo)
    assert card.version == 2
    assert registry.get_model_bytes(card) == trained_demo.onnx


def test_versions_are_never_overwritten(registry: Registry, trained_demo: Any) -> None:
    register(registry, trained_demo)
    with pytest.raises(ClientError, match="PreconditionFailed"):
        registry._put(Registry.key("breast-cancer", 1, MODEL), b"other", exclusive=True, content_type="x")


def test_a_tampered_artifact_is_refused(registry: Registry, trained_demo: Any) -> None:
    card, _ = register(registry, trained_demo)
    registry.s3.put_object(Bucket=registry.bucket, Key=Registry.key(card.name, card.version, MODEL), Body=b"evil")
    with pytest.raises(RegistryError, match="does not match the card"):
        registry.get_model_bytes(card)


def test_an_artifact_that_does_not_match_its_card_is_not_registered(registry: Registry, trained_demo: Any) -> None:
    with pytest.raises(RegistryError, match="nothing was registered"):
        registry.register(trained_demo.card, trained_demo.onnx + b"x", {})
    assert keys(registry) == []


def test_champion_pointer_remembers_the_previous_version(registry: Registry, trained_demo: Any) -> None:
    register(registry, trained_demo)
    register(registry, trained_demo, spec_sha256="1" * 64)
    assert registry.get_champion("breast-cancer") is None
    registry.set_champion("breast-cancer", 1, reason="first release")
    record = registry.set_champion("breast-cancer", 2, reason="canary passed")
    assert record["previous"] == 1 and registry.get_champion("breast-cancer") == 2
    third, _ = register(registry, trained_demo, spec_sha256="2" * 64)
    assert third.parent_version == 2
    with pytest.raises(NotFoundError):
        registry.set_champion("breast-cancer", 9)


def test_missing_things_are_not_found(registry: Registry) -> None:
    with pytest.raises(NotFoundError, match="no version 3"):
        registry.get_card("breast-cancer", 3)
    with pytest.raises(NotFoundError, match="no registered versions"):
        registry.latest("breast-cancer")


def test_diff_scores_both_versions_on_the_newer_holdout(registry: Registry, trained_demo: Any) -> None:
    register(registry, trained_demo)
    raw = tomllib.loads(DEMO_SPEC.read_text())
    raw["estimator"] = {"class": "sklearn.ensemble.RandomForestClassifier", "params": {"n_estimators": 30}}
    spec = parse_spec(raw)
    forest = train_model(spec, load_dataset(spec))
    registry.register(forest.card, forest.onnx, {BASELINE: forest.baseline, HOLDOUT: forest.holdout})
    result = diff(registry, "breast-cancer", 1, 2)
    holdout = json.loads(
        registry.s3.get_object(Bucket=registry.bucket, Key="models/breast-cancer/2/holdout.json")["Body"].read()
    )
    assert result.rows == len(holdout["target"]) == forest.card.dataset["holdout_rows"]
    assert 0.85 <= result.agreement <= 1.0
    assert set(result.metrics_old) == set(result.metrics_new) == {"accuracy", "f1", "roc_auc", "log_loss"}
    assert result.metrics_new["accuracy"] == pytest.approx(forest.card.metrics["accuracy"])
    assert result.primary_metric == "roc_auc"
    assert result.passed == (result.regression <= 0.01)


def test_diff_of_a_version_with_itself_agrees_fully(registry: Registry, trained_demo: Any) -> None:
    register(registry, trained_demo)
    result = diff(registry, "breast-cancer", 1, 1)
    assert result.agreement == 1.0 and result.regression == 0.0 and result.passed
