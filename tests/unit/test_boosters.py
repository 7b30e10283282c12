"""XGBoost and LightGBM estimators in specs: trained in the same Pipeline, converted by onnxmltools' converters,
held to the same parity gate, card, baseline and reproducibility, registered and served as ONNX.

Small datasets and few trees: each training takes well under a second.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import onnx
import pytest
from moto import mock_aws

from modeldeck.errors import ParityError, SpecError
from modeldeck.onnxmodel import OnnxModel
from modeldeck.registry import BASELINE, HOLDOUT, Registry
from modeldeck.serving import CaptureEmitter, InferenceService, ModelStore, Settings
from modeldeck.spec import BOOSTER_ESTIMATORS, ModelSpec, parse_spec
from training import boosters, pipeline, steps
from training.datasets import load_dataset
from training.train import TrainedModel, columns_of, fit_model, package_model, train_model

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "models" / "examples"
BUCKET = "registry"
# The two example specs, each also trained with the other library's estimator: the four booster classes. The
# LightGBM regressor keeps its example's 100 trees: with onnx's nearest-float32 thresholds one holdout row of it
# went the other way at a split (|diff| 2.7), which the converter's float32 thresholds fix.
CASES: dict[str, tuple[str, dict[str, Any] | None]] = {
    "xgboost.XGBClassifier": ("breast-cancer-xgboost.toml", {"n_estimators": 20, "max_depth": 3}),
    "lightgbm.LGBMClassifier": ("breast-cancer-xgboost.toml", {"n_estimators": 20, "num_leaves": 8}),
    "xgboost.XGBRegressor": ("diabetes-lightgbm.toml", {"n_estimators": 20, "max_depth": 3}),
    "lightgbm.LGBMRegressor": ("diabetes-lightgbm.toml", None),
}


def booster_raw(class_path: str) -> dict[str, Any]:
    """An example spec as plain data (what a training execution's input carries), with ``class_path``."""
    example, params = CASES[class_path]
    raw = tomllib.loads((EXAMPLES / example).read_text())
    raw["name"] = class_path.split(".")[-1].lower()
    raw["estimator"] = {"class": class_path, "params": raw["estimator"]["params"] if params is None else params}
    return raw


def booster_spec(class_path: str, **changes: Any) -> ModelSpec:
    return parse_spec({**booster_raw(class_path), **changes}, origin=f"{CASES[class_path][0]} with {class_path}")


@dataclass(frozen=True)
class Trained:
    spec: ModelSpec
    fitted: Any  # the scikit-learn Pipeline, with the library's estimator
    parts: pipeline.Split
    model: TrainedModel


@pytest.fixture(scope="module")
def trained() -> dict[str, Trained]:
    """Each booster trained once (about 0.3 s each; the first import of the libraries about 1 s)."""
    out = {}
    for class_path in CASES:
        spec = booster_spec(class_path)
        data = load_dataset(spec)
        fitted, parts = fit_model(spec, data)
        out[class_path] = Trained(spec, fitted, parts, package_model(spec, data, fitted, parts))
    return out


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def test_the_example_specs_load_and_name_a_booster_each() -> None:
    for example, library in (("breast-cancer-xgboost.toml", "xgboost."), ("diabetes-lightgbm.toml", "lightgbm.")):
        spec = parse_spec(tomllib.loads((EXAMPLES / example).read_text()), origin=example)
        assert spec.estimator.class_path.startswith(library) and spec.estimator.class_path in BOOSTER_ESTIMATORS


@pytest.mark.parametrize("class_path", ["xgboost.XGBRanker", "catboost.CatBoostClassifier", "xgboost.Booster"])
def test_an_unsupported_estimator_class_is_refused_naming_the_supported_ones(class_path: str) -> None:
    with pytest.raises(SpecError) as err:
        booster_spec("xgboost.XGBClassifier", estimator={"class": class_path})
    message = str(err.value)
    assert "estimator.class: must be a scikit-learn import path" in message and repr(class_path) in message
    assert all(c in message for c in BOOSTER_ESTIMATORS)


@pytest.mark.parametrize("class_path", list(CASES))
def test_each_booster_trains_and_passes_the_parity_gate(trained: dict[str, Trained], class_path: str) -> None:
    model = trained[class_path].model
    card = model.card
    # The parity gate compared the library's own predictions with onnxruntime's on every holdout row
    assert card.parity["rows"] == card.dataset["holdout_rows"] > 0
    assert card.parity["label_agreement"] == 1.0 and card.parity["max_abs_diff"] <= card.parity["tolerance"]
    # The converters' tree ensembles (ai.onnx.ml) sit in the one graph, after the pipeline's preprocessing
    graph = onnx.load_from_string(model.onnx)
    ops = {(n.domain, n.op_type) for n in graph.graph.node}
    kind = "Classifier" if class_path.endswith("Classifier") else "Regressor"
    assert ("ai.onnx.ml", f"TreeEnsemble{kind}") in ops and ("ai.onnx.ml", "Imputer") in ops
    assert not any(op == "ZipMap" for _, op in ops) and card.opset == {"ai.onnx": 18, "ai.onnx.ml": 3}
    # The card records the library that trained it and the converter, with scikit-learn's own
    library = class_path.split(".")[0]
    assert {library, "onnxmltools", "scikit-learn", "skl2onnx", "onnxruntime"} <= set(card.libraries)
    assert card.estimator == class_path and card.extra["scaled"] is False  # trees: no scaler in the pipeline
    assert card.hyperparameters["n_estimators"] == trained[class_path].spec.estimator.params["n_estimators"]
    assert card.hyperparameters["random_state"] == card.seed == 42 and card.hyperparameters["n_jobs"] == 1
    json.dumps(card.hyperparameters, allow_nan=False)  # XGBoost's missing=NaN is recorded as text
    assert model.baseline["rows"] == card.dataset["train_rows"]


@pytest.mark.parametrize("class_path", ["xgboost.XGBClassifier", "lightgbm.LGBMClassifier"])
def test_a_booster_classifier_outputs_the_class_names_as_a_scikit_learn_one_does(
    trained: dict[str, Trained], trained_demo: Any, class_path: str
) -> None:
    # Given the demo's logistic regression and the same spec with a booster (XGBoost trains on 0..n-1)
    t = trained[class_path]
    card, demo = t.model.card, trained_demo.card
    # Then the card's classes and outputs are the sklearn model's: string labels, [n, classes] probabilities
    assert card.classes == demo.classes == ["benign", "malignant"]
    assert card.outputs == demo.outputs
    # And the graph's label output is those names, the library's own predictions
    labels, proba = OnnxModel(card, t.model.onnx).run(columns_of(t.spec.input_schema, t.parts.test_x))
    assert labels.ravel().tolist() == t.fitted.predict(t.parts.test_x).tolist()
    assert set(labels.ravel().tolist()) == {"benign", "malignant"} and proba.shape == (len(t.parts.test_x), 2)
    assert t.model.baseline["prediction"]["kind"] == "classes"


def test_a_multiclass_xgboost_model_keeps_three_string_classes() -> None:
    raw = {
        "name": "iris-xgb",
        "dataset": {"source": "sklearn:iris", "target": "target"},
        "features": [{"name": n, "type": "numeric"} for n in ("sepal_length_cm", "sepal_width_cm", "petal_length_cm")],
        "estimator": {"class": "xgboost.XGBClassifier", "params": {"n_estimators": 10, "max_depth": 2}},
    }
    spec = parse_spec(raw)
    model = train_model(spec, load_dataset(spec))
    assert len(model.card.classes or []) == 3 and all(isinstance(c, str) for c in model.card.classes or [])
    assert model.card.outputs[1].shape == [-1, 3] and model.card.parity["label_agreement"] == 1.0


@pytest.mark.parametrize("class_path", ["xgboost.XGBClassifier", "lightgbm.LGBMRegressor"])
def test_retraining_the_same_spec_gives_the_same_onnx_bytes(trained: dict[str, Trained], class_path: str) -> None:
    first = trained[class_path].model
    again = train_model(trained[class_path].spec, load_dataset(trained[class_path].spec))
    assert again.onnx == first.onnx and again.card.onnx_sha256 == first.card.onnx_sha256
    assert again.card.metrics == first.card.metrics and again.baseline == first.baseline


@pytest.mark.parametrize(
    ("class_path", "expected"),
    [
        ("xgboost.XGBClassifier", 'estimator.params: XGBoost does not know { "n_trees" }'),
        ("lightgbm.LGBMRegressor", "estimator.params: LightGBM does not know 'n_trees'"),
    ],
)
def test_a_parameter_the_library_does_not_know_is_refused(class_path: str, expected: str) -> None:
    # Given a spec with a typo in its booster's parameters (both libraries would only warn, and train without it)
    spec = booster_spec(class_path, estimator={"class": class_path, "params": {"n_trees": 10}})
    # Then training refuses it, naming the parameter
    with pytest.raises(SpecError) as err:
        train_model(spec, load_dataset(spec))
    assert expected in str(err.value)


@pytest.mark.parametrize("class_path", list(CASES))
def test_each_booster_registers_and_serves_through_the_inference_service(
    trained: dict[str, Trained], s3: Any, class_path: str
) -> None:
    # Given the trained booster registered
    t = trained[class_path]
    registry = Registry(s3, BUCKET)
    files = {BASELINE: t.model.baseline, HOLDOUT: t.model.holdout}
    card, created = registry.register(t.model.card, t.model.onnx, files)
    assert created and registry.get_card(card.name, card.version).libraries == t.model.card.libraries
    # When the inference service scores three holdout rows (raw inputs, as clients send them)
    rows = [{n: t.model.holdout["columns"][n][i] for n in t.spec.input_schema.names} for i in range(3)]
    settings = Settings(card.name, card.version, BUCKET)
    service = InferenceService(settings, ModelStore(settings, lambda: registry), CaptureEmitter(settings))
    reply = service.predict(card.name, {"instances": rows}, "gateway-id", "1").body
    # Then it answers what the library itself predicts for them
    frame = t.parts.test_x.iloc[:3]
    if card.classes:
        assert reply["predictions"] == t.fitted.predict(frame).tolist()
        np.testing.assert_allclose(reply["probabilities"], t.fitted.predict_proba(frame), atol=1e-5)
    else:
        np.testing.assert_allclose(reply["predictions"], t.fitted.predict(frame), rtol=1e-5)


class _Tamper:
    """XGBoost's converter getting some leaves wrong: the fault sits in the conversion itself."""

    def __init__(self, convert: Any) -> None:
        self.convert = convert

    def __call__(self, scope: Any, operator: Any, container: Any) -> None:
        self.convert(scope, operator, container)
        node = next(n for n in reversed(container.nodes) if n.op_type == "TreeEnsembleClassifier")
        weights = next(a for a in node.attribute if a.name == "class_weights")
        for i in range(0, len(weights.floats), 7):
            weights.floats[i] += 0.5


def test_a_conversion_that_disagrees_fails_the_gate_and_nothing_is_written(s3: Any) -> None:
    from skl2onnx import update_registered_converter

    alias, shapes, convert, options = boosters.CONVERTERS[boosters.XGBClassifier]

    # Given an XGBoost spec fitted by the training pipeline's train step
    raw = {**booster_raw("xgboost.XGBClassifier"), "name": "tampered-xgb"}
    event = {"model": raw["name"], "run_id": "run-1", "spec": raw}
    ctx = steps.StepContext(s3, BUCKET)
    steps.train(event, ctx)
    # And XGBoost's converter made to get some leaves wrong
    update_registered_converter(boosters.XGBClassifier, alias, shapes, _Tamper(convert), options=options)
    try:
        # When the convert step runs
        with pytest.raises(ParityError) as err:
            steps.convert(event, ctx)
    finally:
        boosters.register_converters()
    # Then the parity gate fails naming the worst rows, and neither staging nor the registry holds an artifact,
    # a card or a baseline: only the train step's own pipeline
    assert "parity gate failed" in str(err.value) and "Nothing was registered" in str(err.value)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert [k for k in keys if "tampered-xgb" in k] == ["staging/tampered-xgb/run-1/pipeline.joblib"]


def test_float32_thresholds_split_float32_inputs_as_the_double_thresholds_do() -> None:
    # Given two adjacent float32 values and the double midpoint LightGBM splits them at, which onnx's
    # round-to-nearest would store as the upper value
    a = np.float32(0.0380759)
    b = np.nextafter(a, np.float32(1))
    t = (float(a) + float(b)) / 2
    assert float(np.float32(t)) in (float(a), float(b))
    for mode, compare in (("BRANCH_LEQ", lambda x, y: x <= y), ("BRANCH_LT", lambda x, y: x < y)):
        for threshold in (t, float(a), float(b), -t):
            (stored,) = boosters.float32_thresholds([threshold], [mode])
            # Then every float32 input nearby compares with the stored threshold as with the double one
            for x in (a, b, np.nextafter(a, np.float32(-1)), np.nextafter(b, np.float32(1)), -a, -b):
                assert compare(float(x), stored) == compare(float(x), threshold), (mode, threshold, x)
            assert float(np.float32(stored)) == stored


def test_the_training_image_installs_the_boosters_as_tested_and_the_runtime_lightgbm_links() -> None:
    # Given the root requirements the tests run with, and the training image's own
    def pins(path: Path) -> dict[str, str]:
        lines = [x.split("#")[0].strip() for x in path.read_text().splitlines()]
        return dict(x.split("==", 1) for x in lines if "==" in x)

    root, image = pins(ROOT / "requirements.txt"), pins(ROOT / "training" / "requirements.txt")
    # Then the image pins the same xgboost, lightgbm and onnxmltools
    for package in ("xgboost-cpu", "lightgbm", "onnxmltools"):
        assert image[package] == root[package], package
    # And installs libgomp, which lightgbm's library links and Lambda's AL2023 minimal base image lacks
    dockerfile = (ROOT / "infra" / "docker" / "training.Dockerfile").read_text()
    assert "dnf install -y libgomp" in dockerfile
