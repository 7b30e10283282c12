"""XGBoost and LightGBM served as ONNX against their own predict, side by side in one run.

Per library, the example spec's model (100 trees) is trained once; then, interleaved so machine noise hits all
alike, at 1 and 1000 rows:
- the library's own ``predict_proba`` / ``predict`` on the already-preprocessed matrix (the booster alone);
- the whole fitted scikit-learn Pipeline's (imputation, one-hot, the derived band: what serving natively needs);
- onnxruntime ``session.run`` on the served graph (all of that inside it), one intra-op thread as in Lambda;
- our serving path, ``InferenceService.predict`` on JSON-ready records (validation, scoring, capture record).
Everything runs single-threaded (the boosters' n_jobs = 1, modeldeck's default; ORT one thread).
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import numpy as np
from moto import mock_aws

from benchmarks.timing import timed
from modeldeck.onnxmodel import OnnxModel
from modeldeck.registry import BASELINE, HOLDOUT, Registry
from modeldeck.serving import CaptureEmitter, InferenceService, ModelStore, Settings
from modeldeck.spec import load_spec
from training.datasets import load_dataset
from training.train import columns_of, fit_model, package_model

EXAMPLES = Path(__file__).resolve().parent.parent / "models" / "examples"
SPECS = ("breast-cancer-xgboost.toml", "diabetes-lightgbm.toml")
# The classifier spec again with LightGBM, and the regressor with XGBoost: each library on both tasks.
SWAPS = {"xgboost.XGBClassifier": "lightgbm.LGBMClassifier", "lightgbm.LGBMRegressor": "xgboost.XGBRegressor"}
SIZES = {1: 1500, 1000: 60}
BUCKET = "bench-boosters"
PATHS = ("booster", "pipeline", "onnx", "service")


def _specs() -> list[Any]:
    out = []
    for name in SPECS:
        spec = load_spec(EXAMPLES / name)
        other = SWAPS[spec.estimator.class_path]
        params = (
            {"n_estimators": 100, "num_leaves": 8}
            if other.startswith("lightgbm.")
            else {"n_estimators": 100, "max_depth": 3}
        )
        out += [
            spec,
            replace(spec, name=f"{spec.name}-swap", estimator=replace(spec.estimator, class_path=other, params=params)),
        ]
    return out


def fmt(us: float) -> str:
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"


def measure(spec: Any, registry: Registry, capture: logging.Logger) -> list[str]:
    """One model's table rows: each path at each size, interleaved."""
    data = load_dataset(spec)
    fitted, parts = fit_model(spec, data)
    trained = package_model(spec, data, fitted, parts)
    card, _ = registry.register(trained.card, trained.onnx, {BASELINE: trained.baseline, HOLDOUT: trained.holdout})
    model = OnnxModel(card, trained.onnx)
    settings = Settings(card.name, card.version, BUCKET)
    service = InferenceService(settings, ModelStore(settings, lambda: registry), CaptureEmitter(settings, capture))
    booster = fitted.named_steps["estimator"]
    native = booster.predict_proba if card.classes else booster.predict
    whole = fitted.predict_proba if card.classes else fitted.predict
    label = f"{spec.estimator.class_path.split('.')[-1]} ({spec.dataset.source.split(':')[-1]})"
    rows = []
    for size, repeat in SIZES.items():
        frame = parts.test_x.iloc[np.arange(size) % len(parts.test_x)].reset_index(drop=True)
        matrix = fitted.named_steps["preprocess"].transform(frame)
        columns = columns_of(spec.input_schema, frame)
        body = {"instances": frame[spec.input_schema.names].to_dict("records")}
        assert service.predict(card.name, body, "bench", "1").body["predictions"]
        calls = {
            "booster": lambda m=matrix: native(m),
            "pipeline": lambda f=frame: whole(f),
            "onnx": lambda c=columns: model.session.run(model.output_names, c),
            "service": lambda b=body: service.predict(card.name, b, "bench", "1"),
        }
        times: dict[str, list[np.ndarray]] = {p: [] for p in PATHS}
        for _ in range(3):
            for path in PATHS:
                times[path].append(timed(calls[path], repeat // 3, warmup=min(20, repeat // 3)))
        med = {p: statistics.median(np.concatenate(times[p]).tolist()) for p in PATHS}
        rows.append(
            f"| {label} | {size} | "
            + " | ".join(fmt(med[p]) for p in PATHS)
            + f" | {med['booster'] / med['onnx']:.1f}× | {med['pipeline'] / med['onnx']:.1f}× |"
        )
    return rows


def run() -> str:
    capture = logging.getLogger("bench.boosters.capture")
    capture.addHandler(logging.NullHandler())
    capture.propagate = False
    lines = [
        "## XGBoost and LightGBM: ONNX vs their own predict",
        "",
        "Medians per call, single-threaded (the boosters' `n_jobs = 1`, modeldeck's default; onnxruntime one "
        "intra-op thread, as the inference Lambda runs). 100 trees each; the models of "
        "`models/examples/breast-cancer-xgboost.toml` and `diabetes-lightgbm.toml`, each also with the other "
        "library. *booster*: the library's own `predict_proba`/`predict` on the already-preprocessed matrix; "
        "*pipeline*: the fitted scikit-learn Pipeline on a DataFrame (imputation, one-hot, then the booster: what "
        "serving natively would run); *onnx*: `session.run` on the served graph (the preprocessing and the derived "
        "band inside it); *service*: `InferenceService.predict` on JSON records (validation, scoring, the capture "
        "record), what the inference handler runs per request. Measured interleaved in one run "
        '(`.venv/bin/python -c "import benchmarks.boosters as m; print(m.run())"`).',
        "",
        "| model | rows | booster | pipeline | onnx | service | booster / onnx | pipeline / onnx |",
        "|---|---|---|---|---|---|---|---|",
    ]
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        registry = Registry(s3, BUCKET)
        for spec in _specs():
            lines += measure(spec, registry, capture)
    lines += [
        "",
        "Every model passed the parity gate on its whole holdout before it was measured.",
    ]
    return "\n".join(lines)
