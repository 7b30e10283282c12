"""Bring-your-own ONNX: ``register_onnx`` checks, gates and registers a model built elsewhere, and the inference
service serves it (OIP ``infer`` and ``:predict``), capturing summary features rather than tensors.

The registry is moto's S3; the models are built in the test with ``onnx.helper`` (an MLP over a tensor input)
and with skl2onnx (a tabular model taking one packed [N, F] input, as most converters emit).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import onnx
import pytest
from moto import mock_aws
from onnx import TensorProto, helper, numpy_helper

from modeldeck.byo import register_onnx
from modeldeck.compare import diff
from modeldeck.errors import ModeldeckError, ParityError, SpecError, ValidationError
from modeldeck.registry import BASELINE, HOLDOUT, Registry
from modeldeck.serving import CaptureEmitter, InferenceService, ModelStore, Settings, status_of

SHAPE = (2, 3, 4)  # channels, height, width
CLASSES = ["cat", "dog", "owl"]
RNG = np.random.default_rng(7)
W1 = RNG.normal(size=(24, 16)).astype(np.float32)
B1 = RNG.normal(size=16).astype(np.float32)
W2 = RNG.normal(size=(16, 3)).astype(np.float32)
B2 = RNG.normal(size=3).astype(np.float32)


def mlp_bytes(input_name: str = "pixels", elem: int = TensorProto.FLOAT) -> bytes:
    """Flatten → MatMul/Add/Relu → MatMul/Add → Softmax, opset 17 (onnxruntime's IR 10)."""
    nodes = [
        helper.make_node("Flatten", [input_name], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W1"], ["h0"]),
        helper.make_node("Add", ["h0", "B1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "W2"], ["z0"]),
        helper.make_node("Add", ["z0", "B2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    weights = [numpy_helper.from_array(a, n) for a, n in ((W1, "W1"), (B1, "B1"), (W2, "W2"), (B2, "B2"))]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info(input_name, elem, ["N", *SHAPE])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="handmade")
    model.producer_version = "0.1"
    model.ir_version = 8
    return model.SerializeToString()


def numpy_forward(x: np.ndarray) -> np.ndarray:
    h = np.maximum(x.reshape(len(x), -1) @ W1 + B1, 0)
    z = h @ W2 + B2
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


TENSOR_SPEC = """
name = "mlp"
task = "classification"
[model]
kind = "onnx"
[input]
name = "pixels"
datatype = "FP32"
shape = [-1, 2, 3, 4]
per_channel = true
[output]
probabilities = "probs"
classes = ["cat", "dog", "owl"]
[reference]
path = "reference.npy"
[parity]
holdout = "holdout.npz"
"""


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="registry")
        yield client


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MLP, its spec, a reference batch and a holdout with its expected outputs and targets."""
    d = tmp_path_factory.mktemp("byo")
    (d / "mlp.onnx").write_bytes(mlp_bytes())
    (d / "mlp.toml").write_text(TENSOR_SPEC)
    reference = RNG.normal(size=(200, *SHAPE)).astype(np.float32)
    np.save(d / "reference.npy", reference)
    holdout = RNG.normal(size=(50, *SHAPE)).astype(np.float32)
    probs = numpy_forward(holdout)
    np.savez(d / "holdout.npz", pixels=holdout, probs=probs, target=np.array(CLASSES)[probs.argmax(axis=1)])
    return d


def registered(s3: Any, name: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket="registry", Prefix=f"models/{name}/").get("Contents", [])]


@pytest.fixture(scope="module")
def mlp_card(s3: Any, files: Path) -> Any:
    card, created = register_onnx(
        Registry(s3, "registry"), "mlp", files / "mlp.onnx", files / "mlp.toml", memory_mb=1024
    )
    assert created
    return card


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(record.getMessage()))


@pytest.fixture(scope="module")
def service(s3: Any, mlp_card: Any) -> tuple[InferenceService, Records]:
    settings = Settings("mlp", mlp_card.version, "registry")
    logger = logging.getLogger("test_byo.capture")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    records = Records()
    logger.addHandler(records)
    store = ModelStore(settings, lambda: Registry(s3, "registry"))
    return InferenceService(settings, store, CaptureEmitter(settings, logger)), records


def test_a_tensor_mlp_registers_with_provenance_parity_and_a_summary_baseline(s3: Any, mlp_card: Any) -> None:
    # Given the MLP registered from its file and spec
    # Then its card records where it came from and how parity was checked
    prov = mlp_card.byo["provenance"]
    assert prov["producer_name"] == "handmade" and prov["producer_version"] == "0.1"
    assert prov["opset"] == {"ai.onnx": 17} and prov["sha256"] == mlp_card.onnx_sha256
    assert mlp_card.parity["mode"] == "holdout" and mlp_card.parity["rows"] == 50
    assert mlp_card.parity["max_abs_diff"] < 1e-5 and mlp_card.metrics["accuracy"] == 1.0
    # And the baseline profiles the per-channel summary features and the predicted classes, never the tensor
    baseline = Registry(s3, "registry").get_json("mlp", mlp_card.version, BASELINE)
    assert sorted(baseline["features"]) == sorted(
        f"pixels_c{c}_{s}" for c in (0, 1) for s in ("mean", "std", "min", "max")
    )
    assert baseline["rows"] == 200 and sum(baseline["prediction"]["counts"].values()) == 200
    # And its holdout feeds the release gate's differential test, which scores tensors too
    assert HOLDOUT in {k.rsplit("/", 1)[-1] for k in registered(s3, "mlp")}
    result = diff(Registry(s3, "registry"), "mlp", mlp_card.version, mlp_card.version)
    assert result.rows == 50 and result.agreement == 1.0 and result.passed


def test_the_mlp_serves_over_oip_and_predict_like_a_numpy_forward_pass(service: Any) -> None:
    svc, records = service
    x = RNG.normal(size=(5, *SHAPE)).astype(np.float32)
    want = numpy_forward(x)
    # Given the metadata, the input is the declared tensor
    meta = svc.metadata("mlp")
    assert meta["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 2, 3, 4]}]
    # When a client sends OIP infer with flat data
    body = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [5, *SHAPE], "data": x.ravel().tolist()}]}
    out = svc.infer("mlp", body, "g1", "1").body["outputs"]
    # Then the output tensor is the forward pass
    assert out[0]["name"] == "probs" and out[0]["shape"] == [5, 3]
    np.testing.assert_allclose(np.array(out[0]["data"]).reshape(5, 3), want, atol=1e-5)
    # And nested data gives the same answer
    body["inputs"][0]["data"] = x.tolist()
    np.testing.assert_allclose(
        np.array(svc.infer("mlp", body, "g2", "1").body["outputs"][0]["data"]), want.ravel(), atol=1e-5
    )
    # When it sends :predict instances, one nested array per row
    reply = svc.predict("mlp", {"instances": x.tolist()}, "g3", "1").body
    assert reply["predictions"] == [CLASSES[i] for i in want.argmax(axis=1)]
    np.testing.assert_allclose(np.array(reply["probabilities"]), want, atol=1e-5)
    # Then the capture record holds the summary features and outputs, not the tensor
    record = records.lines[-1]
    assert "pixels" not in record["features"]
    np.testing.assert_allclose(record["features"]["pixels_c1_mean"], x[:, 1].reshape(5, -1).mean(axis=1), rtol=1e-5)
    assert record["outputs"]["label"] == reply["predictions"]


@pytest.mark.parametrize(
    ("send", "message"),
    [
        (
            {"instances": [[[[0.0] * 4] * 3] * 2, [[[0.0, 0.0, 0.0, "x"]] * 3] * 2]},
            "instances[1][0][0][3]: expected a number, got a string",
        ),
        ({"instances": [[[[0.0] * 4] * 3] * 3]}, "dimension 1 is 3; expected 2"),
        ({"instances": [[[[0.0] * 4] * 3, [[0.0] * 4] * 2]]}, "instances[0][1]: has 2 elements; expected 3"),
        ({"instances": [[[[True] * 4] * 3] * 2]}, "instances[0][0][0][0]: expected a number, got a boolean"),
    ],
)
def test_a_bad_tensor_in_predict_is_a_4xx_naming_the_element(service: Any, send: Any, message: str) -> None:
    svc, _ = service
    with pytest.raises(ValidationError) as err:
        svc.predict("mlp", send, "g", "1")
    assert message in str(err.value) and status_of(err.value) == 400


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        ({"datatype": "FP64"}, "inputs[pixels].datatype: expected 'FP32', got 'FP64'"),
        ({"shape": [1, 2, 3]}, "has rank 3; expected [N, 2, 3, 4]"),
        ({"shape": [1, 2, 3, 5]}, "dimension 3 is 5; expected 4"),
        ({"data": [0.0] * 23}, "has 23 values; shape [1, 2, 3, 4] needs 24"),
        ({"data": [0.0] * 5 + [None] + [0.0] * 18}, "inputs[pixels].data[5]: expected a number, got null"),
        ({"name": "image"}, "unknown input(s) 'image'; expected 'pixels'"),
    ],
)
def test_a_bad_oip_tensor_is_a_4xx_naming_the_problem(service: Any, tensor: dict[str, Any], message: str) -> None:
    svc, _ = service
    good = {"name": "pixels", "datatype": "FP32", "shape": [1, *SHAPE], "data": [0.0] * 24}
    with pytest.raises(ValidationError) as err:
        svc.infer("mlp", {"inputs": [{**good, **tensor}]}, "g", "1")
    assert message in str(err.value) and status_of(err.value) == 400


def write_spec(d: Path, text: str, name: str = "bad.toml") -> Path:
    path = d / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            'name = "pixels"',
            'name = "image"',
            "input.name: the graph has no input 'image' (it has pixels FP32[-1, 2, 3, 4])",
        ),
        (
            "shape = [-1, 2, 3, 4]",
            "shape = [-1, 2, 4, 3]",
            "input.shape: dimension 2 declared 4 but the graph's input has 3",
        ),
        ("shape = [-1, 2, 3, 4]", "shape = [-1, 24]", "input.shape: declared [-1, 24] (rank 2)"),
        (
            'datatype = "FP32"',
            'datatype = "FP64"',
            "input.datatype: declared FP64 but the graph's input 'pixels' is FP32",
        ),
        ('classes = ["cat", "dog", "owl"]', "", "output.classes: is required for a classifier"),
        ('classes = ["cat", "dog", "owl"]', 'classes = ["cat", "dog"]', "2 classes declared but output 'probs' has 3"),
        (
            'probabilities = "probs"',
            'probabilities = "scores"',
            "output.probabilities: the graph has no output 'scores'",
        ),
    ],
)
def test_a_declaration_that_does_not_match_the_graph_is_refused_and_nothing_is_registered(
    s3: Any, files: Path, old: str, new: str, message: str
) -> None:
    spec = write_spec(files, TENSOR_SPEC.replace('name = "mlp"', 'name = "bad"').replace(old, new))
    with pytest.raises(ModeldeckError) as err:
        register_onnx(Registry(s3, "registry"), "bad", files / "mlp.onnx", spec, memory_mb=1024)
    assert message in str(err.value)
    assert registered(s3, "bad") == []


def test_a_holdout_the_graph_does_not_reproduce_fails_parity_and_nothing_is_registered(s3: Any, files: Path) -> None:
    # Given a holdout whose expected probabilities are off by 0.01 on one row
    data = dict(np.load(files / "holdout.npz"))
    data["probs"] = data["probs"].copy()
    data["probs"][7] += 0.01
    np.savez(files / "drifted.npz", **data)
    spec = write_spec(files, TENSOR_SPEC.replace('"mlp"', '"off"').replace("holdout.npz", "drifted.npz"))
    with pytest.raises(ParityError) as err:
        register_onnx(Registry(s3, "registry"), "off", files / "mlp.onnx", spec, memory_mb=1024)
    assert "output 'probs' differs from drifted.npz on 1 of 50 rows; worst row 7" in str(err.value)
    assert registered(s3, "off") == []


def test_parity_none_registers_and_the_card_says_so(s3: Any, files: Path) -> None:
    text = TENSOR_SPEC.replace('"mlp"', '"unchecked"').replace('[parity]\nholdout = "holdout.npz"', "")
    text = text.replace("[model]", 'parity = "none"\n[model]')
    card, _ = register_onnx(
        Registry(s3, "registry"), "unchecked", files / "mlp.onnx", write_spec(files, text), memory_mb=1024
    )
    assert card.parity == {"mode": "none"} and card.metrics == {}


def test_a_model_too_big_for_the_function_is_refused_naming_the_limit(s3: Any, files: Path) -> None:
    # Given the MLP with 3 GB of weights declared as ONNX external data (declared, not written)
    model = onnx.load_from_string(mlp_bytes())
    big = TensorProto(name="W_big", data_type=TensorProto.FLOAT, dims=[750_000_000])
    big.data_location = TensorProto.EXTERNAL
    big.external_data.add(key="location", value="weights.bin")
    big.external_data.add(key="length", value=str(3_000_000_000))
    model.graph.initializer.append(big)
    (files / "big.onnx").write_bytes(model.SerializeToString())
    spec = write_spec(files, TENSOR_SPEC.replace('"mlp"', '"big"'))
    # When it is registered for a 3008 MB function
    with pytest.raises(ModeldeckError) as err:
        register_onnx(Registry(s3, "registry"), "big", files / "big.onnx", spec, memory_mb=3008)
    # Then the refusal names the function's configured memory
    assert "does not fit the inference function" in str(err.value) and "configured memory of 3,008 MB" in str(err.value)
    # And beyond Lambda's own maximum it names that quota
    model.graph.initializer[-1].external_data[1].value = str(4_000_000_000)
    (files / "big.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(ModeldeckError, match="maximum function memory of 10,240 MB"):
        register_onnx(Registry(s3, "registry"), "big", files / "big.onnx", spec, memory_mb=10_240)
    assert registered(s3, "big") == []


def test_a_small_model_is_refused_against_a_small_function(s3: Any, files: Path) -> None:
    # The MLP itself fits 128 MB? Its load needs the runtime reserve (160 MB): more than the smallest function.
    spec = write_spec(files, TENSOR_SPEC.replace('"mlp"', '"tiny"'))
    with pytest.raises(ModeldeckError, match="configured memory of 128 MB"):
        register_onnx(Registry(s3, "registry"), "tiny", files / "mlp.onnx", spec, memory_mb=128)


TABULAR_SPEC = """
name = "iris-byo"
task = "classification"
[model]
kind = "onnx"
packed_input = "X"
[[features]]
name = "sepal_length"
type = "numeric"
[[features]]
name = "sepal_width"
type = "numeric"
[[features]]
name = "petal_length"
type = "numeric"
[[features]]
name = "petal_width"
type = "numeric"
[output]
label = "label"
probabilities = "probabilities"
classes = [0, 1, 2]
[reference]
path = "iris-reference.csv"
[parity]
holdout = "iris-holdout.csv"
"""


def test_a_tabular_model_converted_elsewhere_registers_and_serves_named_features(s3: Any, tmp_path: Path) -> None:
    import pandas as pd
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    # Given an sklearn model converted outside modeldeck, taking one packed [N, 4] input
    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    clf = LogisticRegression(max_iter=500).fit(x, y)
    onx = to_onnx(clf, x[:1], options={"zipmap": False}, target_opset=17)
    onx.ir_version = 8
    (tmp_path / "iris.onnx").write_bytes(onx.SerializeToString())
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    frame = pd.DataFrame(x, columns=names)
    frame.to_csv(tmp_path / "iris-reference.csv", index=False)
    holdout = frame.iloc[::5].reset_index(drop=True)
    proba = clf.predict_proba(x[::5])
    holdout["label"] = clf.predict(x[::5])
    for j in range(3):
        holdout[f"probabilities[{j}]"] = proba[:, j]
    holdout["target"] = y[::5]
    holdout.to_csv(tmp_path / "iris-holdout.csv", index=False)
    spec = write_spec(tmp_path, TABULAR_SPEC, "iris-byo.toml")
    # When it is registered as bring-your-own
    card, created = register_onnx(Registry(s3, "registry"), "iris-byo", tmp_path / "iris.onnx", spec, memory_mb=1024)
    # Then it passed parity and serves named features like a model modeldeck trained
    assert created and card.parity["mode"] == "holdout" and card.metrics["accuracy"] > 0.9
    assert HOLDOUT in {k.rsplit("/", 1)[-1] for k in registered(s3, "iris-byo")}
    settings = Settings("iris-byo", card.version, "registry")
    svc = InferenceService(settings, ModelStore(settings, lambda: Registry(s3, "registry")), CaptureEmitter(settings))
    rows = [dict(zip(names, map(float, r), strict=True)) for r in x[:3]]
    reply = svc.predict("iris-byo", {"instances": rows}, "g", "1").body
    assert reply["predictions"] == clf.predict(x[:3]).tolist()
    np.testing.assert_allclose(reply["probabilities"], clf.predict_proba(x[:3]), atol=1e-5)
    # And registering the same files again is idempotent
    again, created = register_onnx(Registry(s3, "registry"), "iris-byo", tmp_path / "iris.onnx", spec, memory_mb=1024)
    assert not created and again.version == card.version
    # And a wrong feature count is refused naming the packed input
    fewer = TABULAR_SPEC.replace('[[features]]\nname = "petal_width"\ntype = "numeric"\n', "").replace(
        "iris-byo", "iris-three"
    )
    with pytest.raises(
        SpecError, match=r"model.packed_input.shape: dimension 1 declared 3 but the graph's input has 4"
    ):
        register_onnx(
            Registry(s3, "registry"), "iris-three", tmp_path / "iris.onnx", write_spec(tmp_path, fewer), memory_mb=1024
        )


def test_the_api_models_of_a_tensor_model_describe_its_tensor(mlp_card: Any) -> None:
    import jsonschema

    from modeldeck.openapi import ModelApi, document, draft4, infer_request, predict_request

    # Given the request models API Gateway gets for the registered MLP (JSON Schema draft 4)
    api = ModelApi.from_card(mlp_card)
    predict = jsonschema.Draft4Validator(draft4(predict_request(api)))
    infer = jsonschema.Draft4Validator(draft4(infer_request(api)))
    row = np.zeros(SHAPE).tolist()
    # Then a well-formed request passes, flat or nested
    assert predict.is_valid({"instances": [row, row]})
    tensor = {"name": "pixels", "datatype": "FP32", "shape": [2, *SHAPE], "data": [0.0] * 48}
    assert infer.is_valid({"inputs": [tensor]}) and infer.is_valid({"inputs": [{**tensor, "data": [row, row]}]})
    # And a wrong row shape, element type, tensor name, datatype or rank is refused at the gateway
    assert not predict.is_valid({"instances": [np.zeros((3, 3, 4)).tolist()]})
    assert not predict.is_valid({"instances": [[[["x"] * 4] * 3] * 2]})
    assert not infer.is_valid({"inputs": [{**tensor, "name": "image"}]})
    assert not infer.is_valid({"inputs": [{**tensor, "datatype": "FP64"}]})
    assert not infer.is_valid({"inputs": [{**tensor, "shape": [2, 24]}]})
    # And the OpenAPI document builds with the tensor model's schemas
    assert "mlp" in json.dumps(document([api]))


@pytest.fixture
def mlp_handler(s3: Any, mlp_card: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The inference Lambda's entry point serving the registered MLP (a fresh execution environment)."""
    from lambdas.inference import handler

    def reset() -> None:
        for value in vars(handler).values():
            if callable(getattr(value, "cache_clear", None)):
                value.cache_clear()
        handler.metrics.clear_metrics()
        handler.metrics.default_dimensions.clear()

    for key, value in {"MODEL_NAME": "mlp", "MODEL_VERSION": str(mlp_card.version), "MODEL_BUCKET": "registry"}.items():
        monkeypatch.setenv(key, value)
    for key in ("MAX_ROWS", "MAX_BODY_BYTES", "CAPTURE_SAMPLE_RATE", "CAPTURE_REDACT"):
        monkeypatch.delenv(key, raising=False)
    reset()
    yield handler
    reset()


def test_the_inference_function_serves_the_tensor_model_and_answers_bad_tensors_with_400(mlp_handler: Any) -> None:
    from tests.fixtures.inference import FakeLambdaContext, call

    context = FakeLambdaContext(function_name="mlp-inference")
    x = RNG.normal(size=(2, *SHAPE)).astype(np.float32)
    # Given the function's metadata route, it shows the tensor's shape
    meta = call(mlp_handler, "GET", "/v2/models/mlp", context=context)
    assert meta.status == 200 and meta.json["inputs"][0]["shape"] == [-1, 2, 3, 4]
    # When a client sends two rows to :predict, it gets the forward pass's classes
    ok = call(mlp_handler, "POST", "/v1/models/mlp:predict", {"instances": x.tolist()}, context=context)
    assert ok.status == 200 and ok.json["predictions"] == [CLASSES[i] for i in numpy_forward(x).argmax(axis=1)]
    # When one element is a string, the answer is a 400 naming its path
    bad = x.tolist()
    bad[1][0][2][3] = "x"
    reply = call(mlp_handler, "POST", "/v1/models/mlp:predict", {"instances": bad}, context=context)
    assert reply.status == 400 and reply.json["error"].startswith("instances[1][0][2][3]: expected a number")


@pytest.mark.parametrize("name", ["digits-mlp", "iris-byo"])
def test_the_readme_examples_register(s3: Any, name: str) -> None:
    examples = Path(__file__).resolve().parents[2] / "models" / "examples" / "byo"
    card, _ = register_onnx(
        Registry(s3, "registry"), name, examples / f"{name}.onnx", examples / f"{name}.toml", memory_mb=1024
    )
    assert card.parity["mode"] == "holdout" and card.metrics["accuracy"] > 0.85
