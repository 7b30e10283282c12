"""The bring-your-own spec (``modeldeck.byo``), the Lambda fit rule, the tensor summaries, and the CDK app's
reading of a bring-your-own spec in ``models/``."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from modeldeck.byo import check_fits_lambda, parse_any_spec, parse_byo_spec
from modeldeck.errors import ModeldeckError, SpecError
from modeldeck.spec import ModelSpec
from modeldeck.tensor import TensorInput

ROOT = Path(__file__).resolve().parents[2]
TENSOR = """
name = "digits"
task = "classification"
[model]
kind = "onnx"
[input]
name = "pixels"
datatype = "FP32"
shape = [-1, 1, 8, 8]
[output]
probabilities = "logits"
postprocess = "softmax"
classes = ["a", "b", "c"]
[reference]
path = "ref.npy"
[parity]
holdout = "holdout.npz"
"""


def test_a_tensor_spec_parses_into_its_input_reading_and_summary_schema() -> None:
    spec = parse_byo_spec(tomllib.loads(TENSOR))
    assert spec.tensor == TensorInput("pixels", "FP32", (-1, 1, 8, 8))
    assert spec.served_schema.names == ["pixels_mean", "pixels_std", "pixels_min", "pixels_max"]
    assert spec.output["postprocess"] == "softmax" and spec.classes == ("a", "b", "c")
    assert spec.parity == {"mode": "holdout", "holdout": "holdout.npz", "tolerance": 1e-4, "target": "target"}


def test_every_problem_of_a_byo_spec_is_named_by_its_field() -> None:
    bad = (
        TENSOR.replace('datatype = "FP32"', 'datatype = "FLOAT"')
        .replace("shape = [-1, 1, 8, 8]", "shape = [1, 8, 8]")
        .replace('postprocess = "softmax"', 'postprocess = "argmax"')
        .replace('path = "ref.npy"', 'path = "ref.csv"')
        .replace('[parity]\nholdout = "holdout.npz"\n', "")
    )
    with pytest.raises(SpecError) as err:
        parse_byo_spec(tomllib.loads(bad), "bad.toml")
    text = str(err.value)
    for expected in (
        "input.datatype: must be one of BOOL",
        "input.shape: the first dimension is the batch and must be -1, got 1",
        "output.postprocess: must be one of none, softmax, sigmoid, got 'argmax'",
        "reference.path: must be a .npy or .npz file for a tensor model, got 'ref.csv'",
        'parity: is required: a [parity] table naming a holdout with expected outputs, or parity = "none"',
    ):
        assert expected in text


def test_either_kind_of_spec_is_read_by_its_model_kind() -> None:
    trained = tomllib.loads((ROOT / "models" / "breast-cancer.toml").read_text())
    assert isinstance(parse_any_spec(trained), ModelSpec)
    assert parse_any_spec(tomllib.loads(TENSOR)).name == "digits"


@pytest.mark.parametrize(
    ("size_mb", "memory_mb", "limit"),
    [
        (300, 1024, "configured memory of 1,024 MB"),  # 160 + 3 x 300 = 1,060 MB
        (3_500, 10_240, "maximum function memory of 10,240 MB"),  # 10,660 MB: no setting could hold it
    ],
)
def test_a_model_that_cannot_load_in_the_function_is_refused_naming_the_limit(
    size_mb: int, memory_mb: int, limit: str
) -> None:
    with pytest.raises(ModeldeckError, match=limit):
        check_fits_lambda(size_mb * 2**20, 0, memory_mb)


def test_a_model_that_fits_passes_the_lambda_check() -> None:
    check_fits_lambda(280 * 2**20, 0, 1024)  # 160 + 840 = 1,000 MB


def test_per_channel_summaries_are_computed_per_row_and_channel() -> None:
    t = TensorInput("img", "FP32", (-1, 2, 2, 2), ("mean", "max"), per_channel=True)
    batch = np.arange(16, dtype=np.float32).reshape(2, 2, 2, 2)
    summary = t.summarize(batch)
    assert list(summary) == ["img_c0_mean", "img_c0_max", "img_c1_mean", "img_c1_max"]
    np.testing.assert_allclose(summary["img_c1_mean"].ravel(), [5.5, 13.5])
    np.testing.assert_allclose(summary["img_c0_max"].ravel(), [3.0, 11.0])


def test_the_cdk_app_serves_a_byo_spec_in_models_and_never_schedules_its_retraining(tmp_path: Path) -> None:
    from infra.config import load_config

    # Given models/ with the demo spec and a bring-your-own tensor spec
    models = tmp_path / "models"
    models.mkdir()
    (models / "breast-cancer.toml").write_text((ROOT / "models" / "breast-cancer.toml").read_text())
    (models / "digits.toml").write_text(TENSOR)
    # When cdk.json's configuration is read
    config = load_config({"stage": "dev", "models_dir": "models"}, repo_root=tmp_path)
    # Then the BYO model is a served model whose captured features are its tensor's summaries
    byo = {m.name: m for m in config.models}["digits"]
    assert byo.byo and byo.features == ("pixels_mean", "pixels_std", "pixels_min", "pixels_max")
    assert not {m.name: m for m in config.models}["breast-cancer"].byo
