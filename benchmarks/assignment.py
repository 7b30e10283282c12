"""Experiment assignment benchmark: what an A/B test costs the live path per request.

- In-process: reading the unit key, the SHA-256 assignment and the record's experiment field (``unit_of`` +
  ``assign`` + ``record_field``), and the cached ``experiment.json`` lookup with and without an experiment.
- Local cloud: a ``:predict`` request through the alias ``live`` with no experiment, assigned to the champion
  (scored by the live version) and assigned to the challenger (forwarded by a synchronous invocation of the
  challenger's pinned version, whose answer comes back), measured side by side in one loop.
- On paper for AWS: the challenger's extra invoke and the double billing of the live function's wait.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from dataclasses import replace
from typing import Any

import numpy as np

from benchmarks.load import ROW
from benchmarks.timing import timed
from modeldeck.experiments import Experiment, assign, experiment_key, record_field, unit_of
from modeldeck.gateway import proxy_event
from modeldeck.serving import ExperimentConfig

REPEAT = 20_000
REQUESTS = 150  # per kind, interleaved
# Lambda pricing, us-east-1, arm64 (aws.amazon.com/lambda/pricing): per GB-second and per request.
GB_SECOND_USD = 0.0000133334
REQUEST_USD = 0.20 / 1_000_000
MEMORY_GB = 1024 / 1024  # cdk.json lambda.memory_mb


def _doc(variants: int, function: str = "fn", qualifiers: list[str] | None = None) -> dict[str, Any]:
    qualifiers = qualifiers or [str(i + 1) for i in range(variants)]
    return {
        "id": "exp-bench",
        "model": "breast-cancer",
        "status": "running",
        "unit_key": {"field": "user_id"},
        "variants": [
            {"name": chr(65 + i), "version": i + 1, "weight": 1 / variants, "function_name": function, "qualifier": q}
            for i, q in enumerate(qualifiers)
        ],
        "champion": "A",
        "metric": "conversion",
    }


def _p(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q))


def in_process() -> dict[str, Any]:
    """Microseconds per request of the assignment itself and of the cached document lookup."""
    out: dict[str, Any] = {}
    body = {"instances": [ROW], "user_id": "user-12345"}
    headers = {"content-type": "application/json", "x-user-id": "user-12345"}
    for n in (2, 5):
        exp = Experiment.from_json(_doc(n))

        def step(exp: Experiment = exp) -> None:
            unit = unit_of(exp, body, headers, "predict")
            record_field(exp, assign(exp, unit), unit)

        out[f"assign {n}"] = timed(step, REPEAT)
    by_header = Experiment.from_json({**_doc(2), "unit_key": {"header": "X-User-Id"}})

    def header_step() -> None:
        unit = unit_of(by_header, body, headers, "predict")
        record_field(by_header, assign(by_header, unit), unit)

    out["assign header"] = timed(header_step, REPEAT)
    raw = json.dumps(_doc(2)).encode()
    running = ExperimentConfig(lambda: raw)
    none = ExperimentConfig(lambda: None)
    out["lookup running"] = timed(running.running, REPEAT)
    out["lookup none"] = timed(none.running, REPEAT)
    out["parse"] = timed(lambda: Experiment.from_json(raw), 2000)
    return out


def local_cloud_latency() -> dict[str, np.ndarray]:
    """Milliseconds per ``:predict`` through ``live`` (client-side, lambda.invoke): none, champion, challenger."""
    from modeldeck.localcloud import deploy_inference_version, local_cloud
    from modeldeck.registry import BASELINE, HOLDOUT, Registry
    from modeldeck.spec import load_spec
    from training.datasets import load_dataset
    from training.train import train_model

    spec = load_spec("models/breast-cancer.toml")
    trained = train_model(spec, load_dataset(spec))
    with local_cloud() as cloud, contextlib.redirect_stdout(io.StringIO()):
        registry = Registry(cloud.client("s3"), cloud.bucket)
        files = {BASELINE: trained.baseline, HOLDOUT: trained.holdout}
        registry.register(trained.card, trained.onnx, files)
        registry.register(replace(trained.card, spec_sha256="2" * 64), trained.onnx, files)
        lam = cloud.client("lambda")
        env = {"CAPTURE_SAMPLE_RATE": "0"}  # experiment requests are captured whatever the sample: the same work

        def deploy(function: str) -> tuple[str, str]:
            _, live = deploy_inference_version(cloud, spec.name, 1, function_name=function, environment=env)
            _, challenger = deploy_inference_version(cloud, spec.name, 2, function_name=function, environment=env)
            lam.update_alias(
                FunctionName=function,
                Name="live",
                FunctionVersion=live,
                RoutingConfig={"AdditionalVersionWeights": {}},
            )
            return live, challenger

        def request(function: str, body: dict[str, Any]) -> float:
            event = proxy_event("POST", f"/v1/models/{spec.name}:predict", json.dumps(body).encode(), headers={})
            payload = json.dumps(event).encode()
            t0 = time.perf_counter()
            out = lam.invoke(FunctionName=function, Qualifier="live", Payload=payload)
            response = json.loads(out["Payload"].read())
            elapsed = (time.perf_counter() - t0) * 1000
            if response["statusCode"] != 200:
                raise RuntimeError(f"benchmark request failed: {response}")
            return elapsed

        deploy("bench-plain")
        for _ in range(20):
            request("bench-plain", {"instances": [ROW]})
        plain = [request("bench-plain", {"instances": [ROW]}) for _ in range(REQUESTS)]
        live, challenger = deploy("bench-exp")
        doc = _doc(2, "bench-exp", [live, challenger])
        cloud.client("s3").put_object(Bucket=cloud.bucket, Key=experiment_key(spec.name), Body=json.dumps(doc).encode())
        exp = Experiment.from_json(doc)
        units = {name: next(f"u{i}" for i in range(1000) if assign(exp, f"u{i}").name == name) for name in "AB"}
        for name in "AB" * 20:
            request("bench-exp", {"instances": [ROW], "user_id": units[name]})
        champion, forwarded = [], []
        for _ in range(REQUESTS):
            champion.append(request("bench-exp", {"instances": [ROW], "user_id": units["A"]}))
            forwarded.append(request("bench-exp", {"instances": [ROW], "user_id": units["B"]}))
        cloud.client("s3").delete_object(Bucket=cloud.bucket, Key=experiment_key(spec.name))
    return {"none": np.array(plain), "champion": np.array(champion), "challenger": np.array(forwarded)}


def us(x: float) -> str:
    return f"{x:.1f} µs" if x < 1000 else f"{x / 1000:.2f} ms"


def run() -> str:
    cpu = in_process()
    cloud = local_cloud_latency()
    lines = [
        "## Experiments: assignment cost per request",
        "",
        "What an A/B test adds to the live path (`benchmarks/assignment.py`). In-process, per request: reading the "
        "unit key, the SHA-256 assignment and the capture record's `experiment` field, and the cached "
        "`experiment.json` lookup (one S3 read per 20 s per execution environment; between reads, a clock check).",
        "",
        "| step | p50 | p99 |",
        "|---|---:|---:|",
        f"| `unit_of` + `assign` + `record_field`, 2 variants (body field) | {us(_p(cpu['assign 2'], 50))} "
        f"| {us(_p(cpu['assign 2'], 99))} |",
        f"| … 5 variants | {us(_p(cpu['assign 5'], 50))} | {us(_p(cpu['assign 5'], 99))} |",
        f"| … unit key in a header | {us(_p(cpu['assign header'], 50))} | {us(_p(cpu['assign header'], 99))} |",
        f"| cached lookup, experiment running | {us(_p(cpu['lookup running'], 50))} "
        f"| {us(_p(cpu['lookup running'], 99))} |",
        f"| cached lookup, no experiment (every request's cost when none runs) | {us(_p(cpu['lookup none'], 50))} "
        f"| {us(_p(cpu['lookup none'], 99))} |",
        f"| parsing and validating `experiment.json` (once per TTL) | {us(_p(cpu['parse'], 50))} "
        f"| {us(_p(cpu['parse'], 99))} |",
        "",
    ]
    none, champ, chal = (cloud[k] for k in ("none", "champion", "challenger"))
    extra = _p(chal, 50) - _p(champ, 50)
    lines += [
        f"On the local cloud, a 1-row `:predict` through the alias `live` ({REQUESTS} requests of each kind, "
        "interleaved; client-side time of `lambda.invoke`, in-process moto, so the absolute times are the "
        "emulator's):",
        "",
        "| request | p50 | p99 |",
        "|---|---:|---:|",
        f"| no experiment | {_p(none, 50):.2f} ms | {_p(none, 99):.2f} ms |",
        f"| experiment, unit assigned to the champion (scored by the live version) | {_p(champ, 50):.2f} ms "
        f"| {_p(champ, 99):.2f} ms |",
        f"| experiment, unit assigned to the challenger (forwarded: a synchronous invoke of its version) "
        f"| {_p(chal, 50):.2f} ms | {_p(chal, 99):.2f} ms |",
        "",
        f"The forward costs {extra:.2f} ms at p50 here: one more Lambda `Invoke` through the SDK and the emulator, "
        "and the challenger's own handler.",
        "",
        "On AWS, on paper: a challenger's request is one more synchronous `Invoke` from inside the live function "
        "(the Lambda API round trip within the region, plus the challenger's own duration), and it is billed "
        "twice: the challenger for its duration and one request, and the live function for the whole time it "
        "waits. With the function's 1024 MB on arm64 (us-east-1 prices: "
        f"${GB_SECOND_USD * 1e6:.2f} per million GB-seconds, ${REQUEST_USD * 1e6:.2f} per million requests), per "
        "million requests sent to a challenger, for a challenger that scores in 5 ms:",
        "",
        "| assumed invoke overhead | latency added | live function's extra billed time | extra cost per million |",
        "|---:|---:|---:|---:|",
    ]
    for overhead_ms in (10, 20, 40):
        handler_ms = 5
        live_extra_gbs = (overhead_ms + handler_ms) / 1000 * MEMORY_GB * 1e6  # waits instead of scoring...
        live_saved_gbs = handler_ms / 1000 * MEMORY_GB * 1e6  # ...which it no longer does itself
        challenger_gbs = handler_ms / 1000 * MEMORY_GB * 1e6
        cost = (live_extra_gbs - live_saved_gbs + challenger_gbs) * GB_SECOND_USD + REQUEST_USD * 1e6
        lines.append(
            f"| {overhead_ms} ms | ≈ {overhead_ms} ms | {overhead_ms + handler_ms} ms instead of {handler_ms} ms "
            f"| ${cost:.2f} |"
        )
    lines += [
        "",
        "The invoke overhead is an assumption to measure on AWS (X-Ray shows the `Invoke` subsegment); the local "
        "cloud's figure above is not AWS's. Units assigned to the champion cost only the assignment (microseconds), "
        "and with no experiment running every request pays one cached lookup.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
