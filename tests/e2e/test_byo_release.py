"""A bring-your-own tensor model registered, released and served end to end on the local cloud.

Given the app deployed on a local cloud, when ``modeldeck register`` brings the MLP of ``test_byo`` under the
served model's name (its function exists in the deployed templates) and the release state machine releases it,
then the real inference handler behind the alias ``live`` answers :predict and OIP infer with the numpy forward
pass, a bad element is a 400 naming its path, and the captured record holds the summary features.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modeldeck.cli import build_parser, main
from modeldeck.cli.common import Context, open_context
from modeldeck.cli.release import run_release
from modeldeck.gateway import proxy_event
from tests.integration.test_byo import CLASSES, SHAPE, TENSOR_SPEC, mlp_bytes, numpy_forward

# Slow (make harden): a whole deployment and release; tests/integration/test_byo.py covers the same behaviour fast,
# through InferenceService and the inference Lambda's entry point.
pytestmark = [pytest.mark.e2e, pytest.mark.slow]
MODEL = "breast-cancer"  # the served model: its function exists in the deployed templates


def invoke(ctx: Context, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    fn = ctx.deployment.function_name(MODEL)
    data = b"" if body is None else json.dumps(body).encode()
    event = proxy_event(method, path, data, headers={"content-type": ["application/json"]})
    result, _ = ctx.cloud.lambdas.invoke(fn, "live", event)
    return int(result["statusCode"]), json.loads(result["body"])


def test_a_byo_tensor_model_registers_releases_and_serves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(3)
    (tmp_path / "model.onnx").write_bytes(mlp_bytes())
    (tmp_path / f"{MODEL}.toml").write_text(TENSOR_SPEC.replace('name = "mlp"', f'name = "{MODEL}"'))
    np.save(tmp_path / "reference.npy", rng.normal(size=(100, *SHAPE)).astype(np.float32))
    holdout = rng.normal(size=(20, *SHAPE)).astype(np.float32)
    probs = numpy_forward(holdout)
    np.savez(tmp_path / "holdout.npz", pixels=holdout, probs=probs, target=np.array(CLASSES)[probs.argmax(axis=1)])
    state = ["--state-dir", str(tmp_path / "state")]
    # Given the MLP registered with the CLI
    code = main(
        [
            *state,
            "register",
            MODEL,
            "--onnx",
            str(tmp_path / "model.onnx"),
            "--spec",
            str(tmp_path / f"{MODEL}.toml"),
            "--json",
        ]
    )
    assert code == 0
    card = json.loads(capsys.readouterr().out)["card"]
    assert card["version"] == 1 and card["parity"]["mode"] == "holdout"
    args = build_parser().parse_args([*state, "status", MODEL])
    with open_context(args) as ctx:
        # When the release state machine releases it
        assert run_release(ctx, MODEL, 1)["record"]["outcome"] == "promoted"
        x = rng.normal(size=(3, *SHAPE)).astype(np.float32)
        want = numpy_forward(x)
        # Then live serves the tensor model: metadata, :predict and OIP infer
        status, meta = invoke(ctx, "GET", f"/v2/models/{MODEL}")
        assert status == 200 and meta["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, *SHAPE]}]
        status, reply = invoke(ctx, "POST", f"/v1/models/{MODEL}:predict", {"instances": x.tolist()})
        assert status == 200, reply
        assert reply["predictions"] == [CLASSES[i] for i in want.argmax(axis=1)]
        np.testing.assert_allclose(reply["probabilities"], want, atol=1e-5)
        tensor = {"name": "pixels", "datatype": "FP32", "shape": [3, *SHAPE], "data": x.ravel().tolist()}
        status, reply = invoke(ctx, "POST", f"/v2/models/{MODEL}/infer", {"inputs": [tensor]})
        assert status == 200 and reply["outputs"][0]["shape"] == [3, 3]
        np.testing.assert_allclose(np.reshape(reply["outputs"][0]["data"], (3, 3)), want, atol=1e-5)
        # And a bad element is a 400 naming its path
        bad = x.tolist()
        bad[2][1][0][3] = None
        status, reply = invoke(ctx, "POST", f"/v1/models/{MODEL}:predict", {"instances": bad})
        assert status == 400 and reply["error"].startswith("instances[2][1][0][3]: expected a number, got null")
        # And the captured records hold the tensor's summary features, never the tensor
        ctx.cloud.flush_capture()
        s3 = ctx.cloud.client("s3")
        records = [
            json.loads(line)
            for obj in s3.list_objects_v2(Bucket=ctx.cloud.bucket, Prefix=f"capture/{MODEL}/").get("Contents", [])
            for line in s3.get_object(Bucket=ctx.cloud.bucket, Key=obj["Key"])["Body"].read().splitlines()
        ]
        assert records and all("pixels" not in r["features"] for r in records)
        assert "pixels_c0_mean" in records[0]["features"] and "label" in records[0]["outputs"]
