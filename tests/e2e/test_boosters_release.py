"""An XGBoost and a LightGBM model released and served end to end on the local cloud.

Given the app deployed on a local cloud, when the demo model's spec is trained through the training state machine
with XGBoost's classifier (v1) and then LightGBM's (v2), each is released by the release state machine and served
by the real inference handler behind the alias ``live``: the answers are the class names and probabilities a
scikit-learn model gives, from the version released. Nothing but ONNX reaches the inference function.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from modeldeck.cli import build_parser
from modeldeck.cli.common import Context, open_context
from modeldeck.cli.models import run_training
from modeldeck.cli.release import run_release
from modeldeck.gateway import proxy_event
from tests.conftest import ROOT
from tests.fixtures.inference import MALIGNANT_ROW, ROW

pytestmark = pytest.mark.e2e
MODEL = "breast-cancer"  # the served model: its function exists in the deployed templates
EXAMPLE = ROOT / "models" / "examples" / "breast-cancer-xgboost.toml"


def booster_spec(tmp: Path, estimator: str, params: str) -> Path:
    """The XGBoost example spec as the served model, with ``estimator`` and few trees (fast to train)."""
    text = EXAMPLE.read_text().replace('name = "breast-cancer-xgboost"', f'name = "{MODEL}"')
    text = text.replace('class = "xgboost.XGBClassifier"', f'class = "{estimator}"')
    text = text.replace("params = { n_estimators = 100, max_depth = 3, learning_rate = 0.1 }", f"params = {params}")
    spec = tmp / "models" / f"{MODEL}.toml"
    spec.parent.mkdir(exist_ok=True)
    spec.write_text(text)
    assert tomllib.loads(text)["estimator"] == tomllib.loads(f'class = "{estimator}"\nparams = {params}')
    return spec


def predict(ctx: Context) -> tuple[int, dict[str, Any]]:
    fn = ctx.deployment.function_name(MODEL)
    body = json.dumps({"instances": [ROW, MALIGNANT_ROW]}).encode()
    event = proxy_event("POST", f"/v1/models/{MODEL}:predict", body, headers={"content-type": ["application/json"]})
    result, _ = ctx.cloud.lambdas.invoke(fn, "live", event)
    return int(result["statusCode"]), json.loads(result["body"])


def test_an_xgboost_then_a_lightgbm_model_train_release_and_serve(tmp_path: Path) -> None:
    args = build_parser().parse_args(["--state-dir", str(tmp_path / "state"), "status", MODEL])
    with open_context(args) as ctx:
        # Given an XGBoost classifier trained through the training state machine, and released
        card, created, _ = run_training(ctx, booster_spec(tmp_path, "xgboost.XGBClassifier", "{ n_estimators = 20 }"))
        assert created and card.version == 1 and card.estimator == "xgboost.XGBClassifier"
        assert card.parity["label_agreement"] == 1.0 and {"xgboost", "onnxmltools"} <= set(card.libraries)
        assert run_release(ctx, MODEL, 1)["record"]["outcome"] == "promoted"
        # When a client asks live for a benign-looking and a malignant-looking row
        status, reply = predict(ctx)
        # Then v1 answers with the class names, as the scikit-learn demo model does
        assert status == 200, reply
        assert reply["model_version"] in (1, "1") and reply["predictions"] == ["benign", "malignant"]
        assert [len(p) for p in reply["probabilities"]] == [2, 2]

        # Given a LightGBM classifier of the same spec trained as v2, and released all at once
        card, created, _ = run_training(ctx, booster_spec(tmp_path, "lightgbm.LGBMClassifier", "{ n_estimators = 20 }"))
        assert created and card.version == 2 and "lightgbm" in card.libraries
        assert run_release(ctx, MODEL, 2, strategy="all-at-once")["record"]["outcome"] == "promoted"
        # Then live now answers from v2, with the same classes
        status, reply = predict(ctx)
        assert status == 200 and reply["model_version"] in (2, "2"), reply
        assert reply["predictions"] == ["benign", "malignant"]
        assert ctx.registry.get_champion(MODEL) == 2
