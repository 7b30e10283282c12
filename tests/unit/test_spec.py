"""Model spec validation: every problem is reported with the path of the field that causes it."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from modeldeck.errors import SpecError
from modeldeck.schema import Feature, FeatureSchema
from modeldeck.spec import load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]


def demo_raw() -> dict[str, Any]:
    return tomllib.loads((ROOT / "models" / "breast-cancer.toml").read_text())


def test_demo_spec_is_valid_and_has_a_categorical_feature() -> None:
    spec = load_spec(ROOT / "models" / "breast-cancer.toml")
    assert spec.name == "breast-cancer"
    assert spec.task == "classification"
    assert [f.name for f in spec.schema.categorical] == ["size_band"]
    assert spec.dataset.derive[0].labels == ("small", "medium", "large")
    assert len(spec.sha256) == 64


def test_a_derived_feature_gives_way_to_its_raw_source_in_the_served_inputs() -> None:
    # Given the demo spec, whose size_band is binned from mean_area
    spec = load_spec(ROOT / "models" / "breast-cancer.toml")
    # When its served inputs are listed
    inputs = spec.input_schema
    # Then clients send mean_area (numeric, no range: the spec gives none) in size_band's place, and the
    # derivation is recorded; the Pipeline itself is still fitted on size_band
    assert inputs.names == [*spec.schema.names[:-1], "mean_area"]
    assert inputs.feature("mean_area") == Feature("mean_area", "numeric")
    assert inputs.derived == spec.dataset.derive
    assert spec.schema.feature("size_band").kind == "categorical" and not spec.schema.derived


def test_a_source_that_is_also_a_feature_keeps_its_range_and_is_sent_once() -> None:
    # Given a spec listing mean_area with a range, and two bands derived from it, one of them required
    raw = demo_raw()
    raw["features"].insert(0, {"name": "mean_area", "type": "numeric", "min": 0.0, "max": 5000.0})
    raw["features"].append({"name": "area_band", "type": "categorical", "allow_missing": False})
    raw["dataset"]["derive"].append(
        {"name": "area_band", "source": "mean_area", "bins": [700.0], "labels": ["lo", "hi"]}
    )
    # When its served inputs are listed
    inputs = parse_spec(raw).input_schema
    # Then mean_area appears once, keeps its range, and may not be missing (area_band may not be)
    assert inputs.names.count("mean_area") == 1 and "area_band" not in inputs.names
    assert inputs.feature("mean_area") == Feature("mean_area", "numeric", 0.0, 5000.0, allow_missing=False)


def test_the_served_schema_round_trips_its_derivations_and_reads_old_cards() -> None:
    spec = load_spec(ROOT / "models" / "breast-cancer.toml")
    data = spec.input_schema.to_dict()
    assert FeatureSchema.from_dict(data) == spec.input_schema
    old = {k: v for k, v in data.items() if k != "derived"}  # a card written before derivations were served
    assert FeatureSchema.from_dict(old).derived == ()


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r["features"][1].update(type="nummeric"), "features[1].type: must be 'numeric' or 'categorical'"),
        (lambda r: r["training"].update(primary_metric="auc"), "training.primary_metric: must be one of"),
        (lambda r: r["training"].update(test_size=0.9), "training.test_size: must be between 0.05 and 0.5"),
        (lambda r: r["training"].update(seed="42"), "training.seed: must be an integer"),
        (lambda r: r["training"].update(seed=True), "training.seed: must be an integer"),
        (lambda r: r.update(name="Bad Name"), "name: must be 2-41 lowercase"),
        (lambda r: r.pop("name"), "name: is required"),
        (lambda r: r["dataset"].pop("target"), "dataset.target: is required"),
        (lambda r: r["dataset"].update(source="sklearn:nope"), "dataset.source: unknown bundled dataset 'nope'"),
        (lambda r: r["dataset"].update(source="s3://bucket/key.csv"), "dataset.version_id: is required"),
        (lambda r: r["dataset"].update(source="data.xlsx"), "dataset.source: must be sklearn:<name>"),
        (lambda r: r["estimator"].update({"class": "os.system"}), "estimator.class: must be a scikit-learn import"),
        (lambda r: r.update(colour="blue"), "colour: unknown field"),
        (lambda r: r["features"][0].update(min=5.0, max=1.0), "features[0].min: min 5.0 is greater than max 1.0"),
        (lambda r: r["features"][9].update(min=0.0), "features[9]: min/max apply to numeric features only"),
        (lambda r: r["features"].append(dict(r["features"][0])), "features: feature 'mean_radius' is listed more"),
        (lambda r: r["features"][0].update(name="mean radius"), "features[0].name: must be an identifier"),
        (lambda r: r["dataset"]["derive"][0].update(labels=["a"]), "dataset.derive[0].labels: needs len(bins)+1"),
        (
            lambda r: r["dataset"]["derive"][0].update(bins=[500.0, 500.0]),
            "dataset.derive[0].bins: must be a non-empty, strictly",
        ),
        (
            lambda r: r["dataset"]["derive"][0].update(bins=[float("nan"), 1.0]),
            "dataset.derive[0].bins: must be a non-empty",
        ),
        (
            lambda r: r["dataset"]["derive"][0].update(name="band"),
            "dataset.derive[0].name: 'band' is not listed in [[features]]",
        ),
        (
            lambda r: r["features"][9].update(values=["small", "big"]),
            "dataset.derive[0].labels: 'medium', 'large' not in features[9].values",
        ),
        (
            lambda r: r["dataset"]["derive"][0].update(source="size_band"),
            "dataset.derive[0].source: 'size_band' is itself derived",
        ),
        (
            lambda r: r["dataset"]["derive"].append(dict(r["dataset"]["derive"][0])),
            "dataset.derive[1].name: 'size_band' is derived more than once",
        ),
        (lambda r: r.update(features=[]), "features: must list at least one feature"),
        (lambda r: r.update(task="clustering"), "task: must be 'classification' or 'regression'"),
    ],
)
def test_invalid_field_is_named_in_the_error(mutate: Any, expected: str) -> None:
    # Given the demo spec with one field broken
    raw = demo_raw()
    mutate(raw)
    # When it is validated, Then the error names the field
    with pytest.raises(SpecError) as err:
        parse_spec(raw, origin="models/x.toml")
    assert expected in str(err.value)
    assert "models/x.toml" in str(err.value)


def test_every_problem_is_reported_at_once() -> None:
    raw = demo_raw()
    raw["training"]["seed"] = -1
    raw["features"][2]["type"] = "text"
    with pytest.raises(SpecError) as err:
        parse_spec(raw)
    assert "training.seed" in str(err.value) and "features[2].type" in str(err.value)


def test_unreadable_or_malformed_files_are_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(bad)


def test_task_is_inferred_from_the_estimator() -> None:
    raw = demo_raw()
    del raw["task"]
    raw["estimator"] = {"class": "sklearn.ensemble.RandomForestRegressor"}
    raw["training"]["primary_metric"] = "rmse"
    assert parse_spec(raw).task == "regression"


def test_spec_hash_changes_with_content() -> None:
    a = parse_spec(demo_raw())
    raw = demo_raw()
    raw["estimator"]["params"]["C"] = 0.5
    assert parse_spec(raw).sha256 != a.sha256
    assert parse_spec(demo_raw()).sha256 == a.sha256
