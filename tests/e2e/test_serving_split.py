"""End to end over real HTTP on loopback: the local gateway, the alias `live` split 90/10, and capture."""

from __future__ import annotations

import http.client
import json
import math
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from modeldeck.gateway import Gateway, serve
from modeldeck.localcloud import LocalCloud
from tests.fixtures.gateway import deployed_api
from tests.fixtures.inference import MODEL, ROW

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore:No application metrics to publish")]


@pytest.fixture(scope="module")
def live(trained_demo: Any) -> Iterator[tuple[LocalCloud, str, int]]:
    """Given v1 live and v2 released as a 10% canary on the alias, behind `modeldeck serve`'s gateway, with an
    API throttled at 5000 requests per second (cdk.json's 100 would refuse this test's burst, as AWS would)."""
    with deployed_api(trained_demo, canary=0.1, throttle=(5000, 5000)) as cloud:
        server = serve(Gateway(cloud, api_key="e2e-key"), port=0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield cloud, "127.0.0.1", server.server_address[1]
        finally:
            server.shutdown()
            server.server_close()


def request(
    host: str, port: int, method: str, path: str, payload: Any = None, conn: http.client.HTTPConnection | None = None
) -> tuple[int, dict[str, str], Any]:
    own = conn is None
    conn = conn or http.client.HTTPConnection(host, port, timeout=10)
    body = json.dumps(payload).encode() if payload is not None else None
    conn.request(method, path, body=body, headers={"x-api-key": "e2e-key", "content-type": "application/json"})
    response = conn.getresponse()
    data = json.loads(response.read())
    if own:
        conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


def test_a_90_10_alias_split_sends_about_10_percent_to_the_canary(live: tuple[LocalCloud, str, int]) -> None:
    cloud, host, port = live
    cloud.lambdas.rng.seed(20261123)
    n = 1000

    # When 1000 predictions arrive over 4 keep-alive connections in parallel
    def client(count: int) -> list[tuple[int, str, str]]:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        out = []
        for _ in range(count):
            status, headers, data = request(
                host, port, "POST", f"/v1/models/{MODEL}:predict", {"instances": [ROW]}, conn
            )
            out.append((status, headers["x-executed-version"], data.get("model_version")))
        conn.close()
        return out

    with ThreadPoolExecutor(4) as pool:
        results = [r for chunk in pool.map(client, [n // 4] * 4) for r in chunk]

    # Then every request succeeded, each answer names the version that served it,
    # and the canary's share is within a binomial 5-sigma bound of 10%
    assert all(status == 200 for status, _, _ in results)
    assert len({(lam, model) for _, lam, model in results}) == 2  # one Lambda version per model version
    canary = Counter(model for _, _, model in results)["2"]
    assert abs(canary - 0.1 * n) <= 5 * math.sqrt(n * 0.1 * 0.9), canary


def test_the_api_over_http(live: tuple[LocalCloud, str, int]) -> None:
    _cloud, host, port = live
    status, _, doc = request(host, port, "GET", "/openapi.json")
    assert status == 200 and f"/v1/models/{MODEL}:predict" in doc["paths"]
    status, _, data = request(host, port, "GET", f"/v2/models/{MODEL}")
    assert status == 200 and data["platform"] == "onnx"
    status, _headers, data = request(host, port, "POST", f"/v1/models/{MODEL}:predict", {"instances": []})
    assert status == 400 and data == {"error": "Invalid request body"}  # API Gateway's model: minItems 1
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", f"/v2/models/{MODEL}")  # no API key
    response = conn.getresponse()
    assert response.status == 403 and "Forbidden" in json.loads(response.read())["error"]
    conn.close()


def test_a_prediction_and_its_feedback_land_in_s3(live: tuple[LocalCloud, str, int]) -> None:
    cloud, host, port = live
    _, _, prediction = request(host, port, "POST", f"/v1/models/{MODEL}:predict", {"instances": [ROW]})
    status, _, _ = request(
        host, port, "POST", f"/v1/models/{MODEL}:feedback", {"id": prediction["id"], "label": "benign"}
    )
    assert status == 202
    cloud.flush_capture()
    s3 = cloud.client("s3")
    found = {}
    for kind in ("capture", "feedback"):
        for obj in s3.list_objects_v2(Bucket=cloud.bucket, Prefix=f"{kind}/{MODEL}/").get("Contents", []):
            for line in s3.get_object(Bucket=cloud.bucket, Key=obj["Key"])["Body"].read().splitlines():
                record = json.loads(line)
                if record["id"] == prediction["id"]:
                    found[kind] = record
    assert found["capture"]["outputs"]["label"] == prediction["predictions"]
    assert found["feedback"]["label"] == ["benign"]
