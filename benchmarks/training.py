"""Training benchmark: wall time per stage, ONNX size, and onnxruntime vs scikit-learn predict latency."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks.timing import timed
from modeldeck.onnxmodel import OnnxModel
from modeldeck.spec import load_spec
from training import pipeline
from training.datasets import load_dataset
from training.train import columns_of, train_model

SPEC = Path("models/breast-cancer.toml")


def run() -> str:
    spec = load_spec(SPEC)
    stages: dict[str, float] = {}
    last = [time.perf_counter(), "load data"]

    def progress(stage: str) -> None:
        now = time.perf_counter()
        stages[str(last[1])] = now - float(last[0])
        last[0], last[1] = now, stage

    started = time.perf_counter()
    data = load_dataset(spec)
    trained = train_model(spec, data, progress)
    stages[str(last[1])] = time.perf_counter() - float(last[0])
    total = time.perf_counter() - started

    parts = pipeline.split(spec, data)
    fitted = pipeline.fit(spec, parts)
    model = OnnxModel(trained.card, trained.onnx)
    frame = parts.test_x
    big = frame.sample(1000, replace=True, random_state=0).reset_index(drop=True)
    rows: list[tuple[str, np.ndarray, np.ndarray]] = []
    for label, batch in (("1 row", frame.iloc[:1]), ("1000 rows", big)):
        cols = columns_of(spec.input_schema, batch)  # raw inputs: the graph derives size_band itself
        sk = timed(lambda b=batch: fitted.predict_proba(b), 200 if label == "1 row" else 50)
        ox = timed(lambda c=cols: model.run(c), 2000 if label == "1 row" else 200)
        rows.append((label, sk, ox))

    lines = [
        "## Training (demo model)",
        "",
        f"`{SPEC}`: {spec.estimator.class_path}, {data.rows} rows, {len(spec.schema.features)} features "
        f"({len(spec.schema.categorical)} categorical).",
        "",
        "| stage | wall time |",
        "|---|---|",
        *[f"| {stage} | {secs * 1000:.0f} ms |" for stage, secs in stages.items()],
        f"| **total (load → baseline)** | **{total * 1000:.0f} ms** |",
        "",
        f"ONNX model size: **{len(trained.onnx):,} bytes**; parity max |diff| "
        f"{trained.card.parity['max_abs_diff']:.2g} over {trained.card.parity['rows']} holdout rows.",
        "",
        "Predict latency, scikit-learn `predict_proba` on a DataFrame vs onnxruntime `session.run` on the "
        "same rows (one thread), measured side by side:",
        "",
        "| batch | sklearn p50 | sklearn p99 | onnxruntime p50 | onnxruntime p99 | speed-up (p50) |",
        "|---|---|---|---|---|---|",
    ]
    for label, sk, ox in rows:
        lines.append(
            f"| {label} | {np.median(sk):,.0f} µs | {np.percentile(sk, 99):,.0f} µs | "
            f"{np.median(ox):,.1f} µs | {np.percentile(ox, 99):,.1f} µs | "
            f"{np.median(sk) / np.median(ox):.0f}× |"
        )
    return "\n".join(lines) + "\n"
