"""Load on the local gateway: 10,000 :predict requests over 16 keep-alive connections, with a canary shift.

The demo model's v1 is live and v2 a 10% canary on the alias ``live``; a third of the way in the canary goes to
50%, two thirds of the way in v2 takes all traffic (``modeldeck.release.set_alias``, as a release does).
Every request must get a 200, and every 200 names the Lambda version that served it
(``X-Executed-Version``): the section fails loudly otherwise. Client and server share this process (and its
GIL) on loopback, so the figures are the emulation's, not Lambda's: compare them run to run.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

REQUESTS = int(os.environ.get("MODELDECK_LOAD_REQUESTS", 10_000))
CONNECTIONS = 16
TIME_LIMIT_S = 600.0
API_KEY = "load-test-key"
# The app synthesized for the local cloud (stub bundles), kept apart from the tests' assembly.
ASSEMBLY = Path("build/bench-assembly")
ROW = {
    "mean_radius": 14.1,
    "mean_texture": 19.3,
    "mean_smoothness": 0.096,
    "mean_compactness": 0.104,
    "mean_concavity": 0.089,
    "mean_symmetry": 0.181,
    "worst_radius": 16.3,
    "worst_texture": 25.7,
    "worst_concave_points": 0.115,
    "mean_area": 624.0,
}


class _Null(io.TextIOBase):
    def write(self, text: str) -> int:
        return len(text)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(requests: int = REQUESTS, connections: int = CONNECTIONS) -> dict[str, Any]:
    """Run the load and return its figures; raises if any request failed or was lost."""
    from infra.config import pascal
    from modeldeck.gateway import Gateway, serve
    from modeldeck.localcloud import assembly_templates, deploy_inference_version, local_cloud, with_api_throttle
    from modeldeck.registry import BASELINE, HOLDOUT, Registry
    from modeldeck.release import set_alias
    from modeldeck.spec import load_spec
    from training.datasets import load_dataset
    from training.train import train_model

    spec = load_spec("models/breast-cancer.toml")
    trained = train_model(spec, load_dataset(spec))
    body = json.dumps({"instances": [ROW]}).encode()
    # The API as deployed (the templates' RestApi), with the usage plan raised above this load: the point is the
    # canary shift under load, not API Gateway's throttling (which answers 429 past cdk.json's 100 requests/s).
    templates = with_api_throttle(assembly_templates(ASSEMBLY) or [], rate=100_000, burst=100_000)
    with local_cloud(templates=templates) as cloud, contextlib.redirect_stdout(_Null()):
        registry = Registry(cloud.client("s3"), cloud.bucket)
        files = {BASELINE: trained.baseline, HOLDOUT: trained.holdout}
        registry.register(trained.card, trained.onnx, files)
        registry.register(replace(trained.card, spec_sha256="2" * 64), trained.onnx, files)
        env = {"CAPTURE_SAMPLE_RATE": "0.1"}
        name = str(cloud.deployer.outputs[f"{pascal(spec.name)}FunctionName"])
        function, live = deploy_inference_version(cloud, spec.name, 1, function_name=name, environment=env)
        _, canary = deploy_inference_version(cloud, spec.name, 2, function_name=name, environment=env, weight=0.1)
        server = serve(Gateway(cloud, api_key=API_KEY), port=0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_address[1]
        lam = cloud.client("lambda")

        done = Counter[str]()
        lock = threading.Lock()
        latencies: list[float] = []
        statuses: Counter[int] = Counter()
        versions: Counter[str] = Counter()
        phases: Counter[tuple[str, str]] = Counter()
        phase = {"name": "canary 10%"}
        deadline = time.monotonic() + TIME_LIMIT_S
        per_connection = [requests // connections + (i < requests % connections) for i in range(connections)]

        def client(count: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            headers = {"x-api-key": API_KEY, "content-type": "application/json"}
            for _ in range(count):
                if time.monotonic() > deadline:
                    break
                started = time.perf_counter()
                try:
                    conn.request("POST", f"/v1/models/{spec.name}:predict", body=body, headers=headers)
                    response = conn.getresponse()
                    response.read()
                    status, version = response.status, response.getheader("X-Executed-Version") or "?"
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    status, version = -1, "?"
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    latencies.append(elapsed)
                    statuses[status] += 1
                    versions[version] += 1
                    phases[(phase["name"], version)] += 1
                    done["n"] += 1
            conn.close()

        def shifter() -> None:
            for fraction, name, shift in (
                (1 / 3, "canary 50%", lambda: set_alias(lam, function, live, canary, 0.5)),
                (2 / 3, "v2 100%", lambda: set_alias(lam, function, canary)),
            ):
                while done["n"] < fraction * requests and time.monotonic() < deadline:
                    time.sleep(0.01)
                shift()  # the runtime reads the alias on every invocation: no restart, no drain
                phase["name"] = name

        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(n,)) for n in per_connection]
        mover = threading.Thread(target=shifter, daemon=True)
        mover.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIME_LIMIT_S + 60)
        wall = time.perf_counter() - started
        server.shutdown()
        server.server_close()
    sent = sum(statuses.values())
    figures = {
        "requests": requests,
        "answered": sent,
        "connections": connections,
        "wall_s": wall,
        "rps": sent / wall,
        "p50_ms": _percentile(latencies, 0.50),
        "p99_ms": _percentile(latencies, 0.99),
        "max_ms": max(latencies),
        "statuses": dict(statuses),
        "versions": dict(versions),
        "phases": {f"{p} → v{v}": n for (p, v), n in sorted(phases.items())},
        "errors": sent - statuses[200],
        "lost": requests - sent,
    }
    if figures["errors"] or sent != requests or sum(versions[v] for v in (live, canary)) != requests:
        raise RuntimeError(f"load test failed: {json.dumps(figures, default=str)}")
    return figures


def run() -> str:
    f = measure()
    phases = "\n".join(f"| {name} | {n:,} |" for name, n in f["phases"].items())
    return f"""## Load: the local gateway under a canary shift

{f["requests"]:,} `:predict` requests (one row each) over {f["connections"]} keep-alive loopback connections,
through the local gateway (API key checked) and the alias `live`, while the canary moves 10% → 50% → 100%
with `modeldeck.release.set_alias` at one and two thirds of the run. Client and server share one Python
process, so these are the emulation's figures (bounded by the GIL), not Lambda's.

| figure | value |
|---|---|
| requests sent / answered 200 | {f["requests"]:,} / {f["statuses"].get(200, 0):,} |
| errors (non-200) / lost | {f["errors"]} / {f["lost"]} |
| throughput | {f["rps"]:,.0f} requests/s ({f["wall_s"]:.1f} s) |
| latency p50 / p99 / max | {f["p50_ms"]:.1f} ms / {f["p99_ms"]:.1f} ms / {f["max_ms"]:.1f} ms |

| phase (when the request completed) → executed version | requests |
|---|---|
{phases}

A few requests in flight at a shift complete under the next phase's label on the previous version.
"""
