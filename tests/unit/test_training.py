"""Training: reproducible artifacts, the parity gate, and clear errors for bad input."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
import pandas as pd
import pytest

from modeldeck.errors import DatasetError, ParityError, SpecError
from modeldeck.onnxmodel import OnnxModel
from modeldeck.schema import MISSING_CATEGORY, Derivation, Feature, FeatureSchema
from modeldeck.spec import ModelSpec, parse_spec
from training import onnx_export, pipeline
from training.datasets import derive_column, load_dataset
from training.train import columns_of, train_model

ROOT = Path(__file__).resolve().parents[2]


def demo_raw(**estimator: Any) -> dict[str, Any]:
    raw = tomllib.loads((ROOT / "models" / "breast-cancer.toml").read_text())
    if estimator:
        raw["estimator"] = estimator
    return raw


def test_same_spec_and_data_give_byte_identical_onnx_and_metrics(demo_spec: ModelSpec) -> None:
    first = train_model(demo_spec, load_dataset(demo_spec))
    second = train_model(demo_spec, load_dataset(demo_spec))
    assert first.onnx == second.onnx
    assert first.card.onnx_sha256 == second.card.onnx_sha256
    assert first.card.metrics == second.card.metrics
    assert first.baseline == second.baseline


CLASSIFIER_PARAMS = {"LogisticRegression": {"max_iter": 2000}}


@pytest.mark.parametrize(
    "estimator",
    [
        {"class": c, "params": CLASSIFIER_PARAMS.get(c.rsplit(".", 1)[1], {"n_estimators": 50})}
        for c in onnx_export.TESTED_ESTIMATORS
        if not c.endswith("Regressor")
    ],
)
def test_parity_gate_passes_with_a_categorical_feature(estimator: dict[str, Any]) -> None:
    spec = parse_spec(demo_raw(**estimator))
    assert spec.schema.categorical, "the demo spec must exercise the one-hot path"
    trained = train_model(spec, load_dataset(spec))
    assert trained.card.parity["label_agreement"] == 1.0
    assert trained.card.parity["max_abs_diff"] <= 1e-5
    assert trained.card.metrics["accuracy"] > 0.85


def test_onnx_graph_has_named_inputs_dynamic_batch_and_no_zipmap(trained_demo: Any, demo_spec: ModelSpec) -> None:
    model = onnx.load_from_string(trained_demo.onnx)
    inputs = {i.name: i for i in model.graph.input}
    # The raw inputs: size_band is derived from mean_area inside the graph.
    assert list(inputs) == demo_spec.input_schema.names
    assert "mean_area" in inputs and "size_band" not in inputs
    for inp in inputs.values():
        batch = inp.type.tensor_type.shape.dim[0]
        assert not batch.HasField("dim_value"), "the batch dimension must be dynamic"
    assert [o.name for o in model.graph.output] == ["label", "probabilities"]
    assert all(node.op_type != "ZipMap" for node in model.graph.node)
    assert {imp.domain: imp.version for imp in model.opset_import}[""] == onnx_export.OPSET[""]


def test_a_regressor_trains_with_parity_relative_to_target_scale() -> None:
    raw = {
        "name": "diabetes",
        "dataset": {"source": "sklearn:diabetes", "target": "target"},
        "features": [{"name": n, "type": "numeric"} for n in ("age", "bmi", "bp", "s1", "s5")],
        "estimator": {"class": "sklearn.ensemble.RandomForestRegressor", "params": {"n_estimators": 20}},
        "training": {"primary_metric": "rmse"},
    }
    spec = parse_spec(raw)
    trained = train_model(spec, load_dataset(spec))
    assert spec.task == "regression"
    assert trained.card.classes is None
    assert trained.card.outputs[0].name == "variable"
    assert trained.baseline["prediction"]["kind"] == "scores"
    assert trained.card.metrics["r2"] > 0.2


def test_parity_gate_fails_with_the_worst_rows_named(demo_spec: ModelSpec) -> None:
    # Given a trained pipeline and an ONNX graph whose coefficients were tampered with
    data = load_dataset(demo_spec)
    parts = pipeline.split(demo_spec, data)
    fitted = pipeline.fit(demo_spec, parts)
    model = onnx.load_from_string(onnx_export.convert(fitted, demo_spec))
    linear = next(node for node in model.graph.node if node.op_type == "LinearClassifier")
    coefficients = next(attr for attr in linear.attribute if attr.name == "coefficients")
    coefficients.floats[0] += 0.5  # a small skew: only some rows move
    broken = model.SerializeToString()
    outputs = OnnxModel(_card_stub(), broken).run(columns_of(demo_spec.input_schema, parts.test_x))
    # When the gate runs, Then it fails naming rows and the size of the gap
    with pytest.raises(ParityError) as err:
        onnx_export.check_parity(fitted, outputs, parts.test_x, "classification")
    message = str(err.value)
    assert "parity gate failed" in message and "Worst: row " in message and "Nothing was registered" in message


def _card_stub() -> Any:
    class Card:
        task = "classification"
        byo: ClassVar[dict[str, Any]] = {}  # a model modeldeck trained, not brought (modeldeck.byo)

    return Card()


def test_parity_gate_reports_agreement_when_it_passes(demo_spec: ModelSpec) -> None:
    data = load_dataset(demo_spec)
    parts = pipeline.split(demo_spec, data)
    fitted = pipeline.fit(demo_spec, parts)
    graph = onnx_export.convert(fitted, demo_spec)
    outputs = OnnxModel(_card_stub(), graph).run(columns_of(demo_spec.input_schema, parts.test_x))
    report = onnx_export.check_parity(fitted, outputs, parts.test_x, "classification")
    assert report.rows == len(parts.test_x) and report.label_agreement == 1.0


def _write_csv(tmp_path: Path, frame: pd.DataFrame) -> Path:
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    return path


def _csv_spec(path: Path, **overrides: Any) -> ModelSpec:
    raw: dict[str, Any] = {
        "name": "toy",
        "dataset": {"source": str(path), "target": "y"},
        "features": [{"name": "x", "type": "numeric"}, {"name": "colour", "type": "categorical"}],
        "estimator": {"class": "sklearn.linear_model.LogisticRegression"},
    }
    raw.update(overrides)
    return parse_spec(raw)


def _toy_frame(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x = rng.normal(size=n)
    return pd.DataFrame({"x": x, "colour": rng.choice(["red", "blue"], n), "y": np.where(x > 0, "yes", "no")})


def test_csv_dataset_trains(tmp_path: Path) -> None:
    spec = _csv_spec(_write_csv(tmp_path, _toy_frame()))
    data = load_dataset(spec)
    assert data.rows == 60 and len(data.sha256) == 64
    assert train_model(spec, data).card.dataset["source"].endswith("data.csv")


def test_parquet_dataset_trains(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    _toy_frame().to_parquet(path)
    spec = _csv_spec(path)
    assert load_dataset(spec).rows == 60


@pytest.mark.parametrize(
    ("frame_change", "expected"),
    [
        (lambda f: f.drop(columns=["y"]), "missing target column(s) 'y'"),
        (lambda f: f.drop(columns=["colour"]), "missing feature column(s) 'colour'"),
        (lambda f: f.assign(x=["abc", *f["x"].tolist()[1:]]), "feature 'x' is numeric but row 0 holds 'abc'"),
        (lambda f: f.iloc[0:0], "the dataset is empty"),
        (lambda f: f.iloc[0:5], "only 5 rows"),
        (lambda f: f.assign(y="yes"), "has a single class"),
        (lambda f: f.assign(y=[None, *f["y"].tolist()[1:]]), "target 'y' is missing in row 0"),
    ],
)
def test_bad_dataset_gives_a_clear_error(tmp_path: Path, frame_change: Any, expected: str) -> None:
    spec = _csv_spec(_write_csv(tmp_path, frame_change(_toy_frame())))
    with pytest.raises(DatasetError) as err:
        train_model(spec, load_dataset(spec))
    assert expected in str(err.value)


def test_values_outside_the_declared_range_are_rejected(tmp_path: Path) -> None:
    spec = _csv_spec(
        _write_csv(tmp_path, _toy_frame()),
        features=[{"name": "x", "type": "numeric", "min": 0.0}, {"name": "colour", "type": "categorical"}],
    )
    with pytest.raises(DatasetError, match=r"data.csv row \d+: 'x' = -[\d.]+ is below the minimum 0.0"):
        load_dataset(spec)


def test_missing_file_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot read dataset"):
        load_dataset(_csv_spec(tmp_path / "nope.csv"))


@pytest.mark.parametrize(
    ("estimator", "error", "expected"),
    [
        ({"class": "sklearn.linear_model.NoSuchModel"}, SpecError, "estimator.class: unknown estimator"),
        ({"class": "sklearn.semi_supervised.LabelPropagation"}, SpecError, "cannot be converted to ONNX"),
        ({"class": "sklearn.linear_model.LogisticRegression", "params": {"bogus": 1}}, SpecError, "estimator.params"),
        ({"class": "sklearn.linear_model.LinearRegression"}, SpecError, "is not a classifier"),
        ({"class": "sklearn.svm.SVC"}, SpecError, "probability = true"),
    ],
)
def test_bad_estimator_gives_a_clear_error(estimator: dict[str, Any], error: type, expected: str) -> None:
    raw = demo_raw(**estimator)
    raw["task"] = "classification"
    spec = parse_spec(raw)
    with pytest.raises(error) as err:
        train_model(spec, load_dataset(spec))
    assert expected in str(err.value)


def test_an_unconvertible_estimator_is_named_with_the_tested_ones_and_no_cut_dump() -> None:
    raw = demo_raw(**{"class": "sklearn.semi_supervised.LabelPropagation"})
    spec = parse_spec(raw)
    with pytest.raises(SpecError) as err:
        train_model(spec, load_dataset(spec))
    message = str(err.value)
    assert message.startswith("estimator.class: sklearn.semi_supervised.LabelPropagation cannot be converted")
    assert message.endswith(
        "Tested estimators: LogisticRegression, RandomForestClassifier, GradientBoostingClassifier, "
        "RandomForestRegressor"
    )
    assert "{" not in message and len(message) < 400


def test_tree_models_are_not_scaled_but_linear_ones_are() -> None:
    assert pipeline.wants_scaling(parse_spec(demo_raw()))
    assert not pipeline.wants_scaling(parse_spec(demo_raw(**{"class": "sklearn.ensemble.RandomForestClassifier"})))


def test_baseline_profiles_every_feature_and_the_predictions(trained_demo: Any, demo_spec: ModelSpec) -> None:
    baseline = trained_demo.baseline
    # Drift is judged on the raw inputs capture holds, so the baseline profiles mean_area, not size_band.
    assert set(baseline["features"]) == set(demo_spec.input_schema.names)
    radius = baseline["features"]["mean_radius"]
    assert len(radius["counts"]) == len(radius["edges"]) + 1
    assert sum(radius["counts"]) == baseline["rows"] == trained_demo.card.dataset["train_rows"]
    assert (
        "size_band" not in baseline["features"] and sum(baseline["features"]["mean_area"]["counts"]) == baseline["rows"]
    )
    assert sum(baseline["prediction"]["counts"].values()) == baseline["rows"]


def test_card_records_lineage(trained_demo: Any, demo_spec: ModelSpec) -> None:
    card = trained_demo.card
    assert card.spec_sha256 == demo_spec.sha256
    assert card.dataset["source"] == "sklearn:breast_cancer" and card.dataset["rows"] == 569
    assert set(card.libraries) >= {"scikit-learn", "skl2onnx", "onnxruntime", "numpy", "python"}
    assert card.seed == 42 and card.hyperparameters["C"] == 1.0
    assert card.schema.names == demo_spec.input_schema.names and card.schema.derived == demo_spec.dataset.derive
    assert card.schema.feature("mean_area") == Feature("mean_area", "numeric")  # no range in the spec
    assert card.classes == ["benign", "malignant"]


def _derivation_only_graph(derivation: Derivation) -> OnnxModel:
    """A graph that only derives: the derived string input passed through, with its derivation prepended."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", [derivation.name], ["label"])],
        "derive",
        [helper.make_tensor_value_info(derivation.name, TensorProto.STRING, [None, 1])],
        [helper.make_tensor_value_info("label", TensorProto.STRING, [None, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", onnx_export.OPSET[""])], ir_version=8)
    inputs = FeatureSchema((Feature(derivation.source, "numeric"),), derived=(derivation,))
    return OnnxModel(_card_stub(), onnx_export.prepend_derivations(model, inputs).SerializeToString())


_F32_ABOVE_500 = float(np.nextafter(np.float32(500.0), np.float32(np.inf)))


@pytest.mark.parametrize(
    ("bins", "value", "label"),
    [
        ((500.0, 1000.0), 500.0, "small"),  # on an edge: bins are right-closed, as pandas.cut
        ((500.0, 1000.0), _F32_ABOVE_500, "medium"),  # the next float32 after it
        ((500.0, 1000.0), 1000.0, "medium"),
        ((500.0, 1000.0), -1e30, "small"),  # below the first edge
        ((500.0, 1000.0), 0.0, "small"),
        ((500.0, 1000.0), 1e30, "large"),  # above the last edge
        ((500.0, 1000.0), float("nan"), MISSING_CATEGORY),  # missing, then one-hot as an unknown category
        # 0.1 has no float32: float32(0.1) is just above 0.1 in double, where pandas compares it
        ((0.1,), float(np.float32(0.1)), "medium"),
        ((0.1,), float(np.nextafter(np.float32(0.1), np.float32(0))), "small"),
    ],
)
def test_the_graph_bins_exactly_as_training_does(bins: tuple[float, ...], value: float, label: str) -> None:
    # Given a derivation, and a value the model receives as float32
    labels = ("small", "medium", "large")[: len(bins) + 1]
    derivation = Derivation("band", "x", bins, labels)
    column = np.array([[value]], dtype=np.float32)
    # When training derives it and the served graph derives it
    trained = derive_column(column.ravel().astype(np.float64), derivation)
    served = _derivation_only_graph(derivation).run({"x": column})[0].ravel().tolist()
    # Then both give the same label, the one pandas.cut gives on right-closed bins
    assert trained == served == [label]


def test_training_derives_from_the_float32_value_serving_receives(tmp_path: Path) -> None:
    # Given a dataset whose source is a hair above an edge in float64 but exactly on it in float32
    frame = _toy_frame()
    frame["area"] = np.where(frame.index % 2 == 0, 500.00001, 900.0)
    assert np.float32(500.00001) == np.float32(500.0)
    spec = _csv_spec(
        _write_csv(tmp_path, frame),
        dataset={
            "source": str(tmp_path / "data.csv"),
            "target": "y",
            "derive": [{"name": "band", "source": "area", "bins": [500.0], "labels": ["small", "large"]}],
        },
        features=[{"name": "x", "type": "numeric"}, {"name": "band", "type": "categorical"}],
    )
    # When training loads it
    data = load_dataset(spec)
    # Then the band is the one the served graph computes from the float32 input ('small'), not 'large'
    assert data.frame["band"][0] == "small" and data.frame["band"][1] == "large"
    assert data.frame["area"][0] == 500.0


def test_the_parity_gate_catches_a_graph_that_bins_differently(demo_spec: ModelSpec) -> None:
    # Given the demo pipeline, and its graph with size_band's first edge moved from 500 to 600
    data = load_dataset(demo_spec)
    parts = pipeline.split(demo_spec, data)
    fitted = pipeline.fit(demo_spec, parts)
    model = onnx.load_from_string(onnx_export.convert(fitted, demo_spec))
    edges = next(t for t in model.graph.initializer if t.name == "derive_size_band_edges")
    edges.CopyFrom(onnx.numpy_helper.from_array(np.array([[600.0, 1000.0]]), edges.name))
    outputs = OnnxModel(_card_stub(), model.SerializeToString()).run(columns_of(demo_spec.input_schema, parts.test_x))
    # When the gate compares scikit-learn on the bands training derived with the graph on raw mean_area
    # Then the rows between the edges disagree, and nothing is registered
    with pytest.raises(ParityError, match="parity gate failed"):
        onnx_export.check_parity(fitted, outputs, parts.test_x, "classification")
