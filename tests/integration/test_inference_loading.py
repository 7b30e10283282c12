"""Model loading: integrity, missing versions, S3 failures and recovery, and a lean import path."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from modeldeck.registry import BASELINE, HOLDOUT, MODEL, Registry
from modeldeck.serving import ModelStore
from tests.fixtures.inference import MODEL as NAME
from tests.fixtures.inference import ROW, call

PREDICT = f"/v1/models/{NAME}:predict"
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


class ThrottledS3:
    """S3 itself (moto's backend) answers SlowDown to every GetObject while ``failing`` is set, so only the
    SDK's retry mode can act on it; botocore's back-off sleeps are recorded instead of slept."""

    def __init__(self) -> None:
        self.failing = True
        self.calls = 0
        self.sleeps: list[float] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from types import SimpleNamespace

        from moto.s3.exceptions import S3ClientError
        from moto.s3.models import S3Backend

        real = S3Backend.get_object

        def get_object(backend: Any, *args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.failing:
                raise S3ClientError("SlowDown", "Please reduce your request rate.")
            return real(backend, *args, **kwargs)

        monkeypatch.setattr(S3Backend, "get_object", get_object)
        monkeypatch.setattr("botocore.endpoint.time", SimpleNamespace(sleep=self.sleeps.append))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_tampered_artifact_is_never_served(served_cloud: Any, trained_demo: Any, configure_handler: Any) -> None:
    # Given v2 registered, then its model.onnx replaced behind the registry's back
    cloud, _ = served_cloud
    registry = Registry(cloud.client("s3"), cloud.bucket)
    card, _ = registry.register(
        replace(trained_demo.card, spec_sha256="2" * 64),
        trained_demo.onnx,
        {BASELINE: trained_demo.baseline, HOLDOUT: trained_demo.holdout},
    )
    cloud.client("s3").put_object(
        Bucket=cloud.bucket, Key=Registry.key(NAME, card.version, MODEL), Body=trained_demo.onnx[:-16] + b"\0" * 16
    )
    handler = configure_handler(MODEL_VERSION=str(card.version))
    # When
    ready = call(handler, "GET", "/v2/health/ready")
    reply = call(handler, "POST", PREDICT, {"instances": [ROW]})
    # Then both say why, and nothing is predicted
    assert ready.status == 503 and reply.status == 503
    assert "does not match the card's" in reply.json["error"] and "refusing to use it" in reply.json["error"]
    assert reply.json["error"].startswith(f"model {NAME} v{card.version} is not ready")
    assert int(reply.headers["Retry-After"]) >= 1


@pytest.mark.parametrize(
    ("version", "message"),
    [
        ("7", f"model {NAME} v7 is not ready: model '{NAME}' has no version 7"),
        ("0", f"model {NAME} v0 is not ready: no model version has been released to this function yet"),
    ],
)
def test_a_missing_version_is_503(configure_handler: Any, version: str, message: str) -> None:
    handler = configure_handler(MODEL_VERSION=version)
    for path in ("/v2/health/ready", f"/v2/models/{NAME}", f"/v2/models/{NAME}/ready"):
        reply = call(handler, "GET", path)
        assert reply.status == 503
        assert reply.json["error"].startswith(message)
    assert call(handler, "GET", "/v2/health/live").status == 200  # alive, just not ready


def test_an_invalid_environment_is_503_naming_every_problem(configure_handler: Any) -> None:
    handler = configure_handler(MAX_ROWS="lots", CAPTURE_SAMPLE_RATE="2")
    reply = call(handler, "POST", PREDICT, {"instances": [ROW]})
    assert reply.status == 503
    assert reply.json == {
        "error": "invalid inference settings: MAX_ROWS must be an integer, got 'lots'; "
        "CAPTURE_SAMPLE_RATE must be between 0 and 1, got 2"
    }


def test_s3_throttling_is_retried_then_503_then_recovers_when_s3_does(
    configure_handler: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given S3 throttling every read (the handler's own client, standard retry mode), and a controllable clock
    handler: ModuleType = configure_handler()
    flaky = ThrottledS3()
    flaky.install(monkeypatch)
    clock = Clock()
    service = handler.service()
    service.store = ModelStore(
        service.settings,
        lambda: Registry(handler.s3_client(), service.settings.model_bucket),
        clock=clock,
        backoff=1.0,
        max_backoff=8.0,
    )

    # When the first request arrives: the SDK retries the read with back-off (4 retries), then 503
    first = call(handler, "POST", PREDICT, {"instances": [ROW]})
    assert first.status == 503 and "SlowDown" in first.json["error"]
    assert len(flaky.sleeps) == 4  # five attempts, one request
    calls = flaky.calls

    # While the store backs off, requests are answered at once without touching S3
    second = call(handler, "POST", PREDICT, {"instances": [ROW]})
    assert second.status == 503 and "next attempt in 1.0 s" in second.json["error"]
    assert flaky.calls == calls and second.headers["Retry-After"] == "1"

    # After the back-off, still failing: the back-off doubles
    clock.now += 1.01
    assert call(handler, "GET", "/v2/health/ready").status == 503
    assert flaky.calls == 2 * calls and len(flaky.sleeps) == 8
    clock.now += 1.01
    assert call(handler, "GET", "/v2/health/ready").status == 503 and flaky.calls == 2 * calls

    # When S3 recovers and the back-off has passed, the next request loads the model and is served
    flaky.failing = False
    clock.now += 2.0
    recovered = call(handler, "POST", PREDICT, {"instances": [ROW]})
    assert recovered.status == 200 and recovered.json["model_version"] == "1"
    assert call(handler, "GET", "/v2/health/ready").status == 200


@pytest.mark.parametrize("init_type", ["on-demand", "provisioned-concurrency", "snap-start"])
def test_lambdas_initialization_loads_the_model_so_the_first_request_reads_nothing(
    configure_handler: Any, monkeypatch: pytest.MonkeyPatch, init_type: str
) -> None:
    from moto.s3.models import S3Backend

    # Given a cold execution environment, and S3 reads counted at the service
    handler: ModuleType = configure_handler()
    reads: list[str] = []
    real = S3Backend.get_object
    monkeypatch.setattr(
        S3Backend, "get_object", lambda b, bucket, key, *a, **k: reads.append(key) or real(b, bucket, key, *a, **k)
    )
    # When Lambda initializes it (Lambda sets AWS_LAMBDA_INITIALIZATION_TYPE for the init phase)
    handler.initialize({"AWS_LAMBDA_INITIALIZATION_TYPE": init_type})
    loaded = len(reads)
    # Then the model was read during init, and the first request is served without reading it again (it reads
    # only the shadow setting, as every request does once per 20 s)
    assert any(key.endswith("/model.onnx") for key in reads)
    first = call(handler, "POST", PREDICT, {"instances": [ROW]})
    assert first.status == 200
    assert [key for key in reads[loaded:] if key.endswith(("/model.onnx", "/card.json"))] == []


def test_outside_lambda_nothing_is_loaded_at_initialization(configure_handler: Any) -> None:
    # Given a cold execution environment outside Lambda (no AWS_LAMBDA_INITIALIZATION_TYPE)
    handler: ModuleType = configure_handler()
    # When it is initialized, then nothing was created: tests and tools start moto first
    handler.initialize({})
    assert handler.service.cache_info().currsize == 0 and handler.s3_client.cache_info().currsize == 0


def test_serving_imports_neither_scikit_learn_nor_scipy_nor_pandas(tmp_path: Path, trained_demo: Any) -> None:
    # Given the artifact and card on disk, for a fresh interpreter to register in its own moto
    (tmp_path / "model.onnx").write_bytes(trained_demo.onnx)
    (tmp_path / "card.json").write_bytes(trained_demo.card.to_json())
    script = textwrap.dedent(f"""
        import json, sys, pathlib
        root = pathlib.Path({str(tmp_path)!r})
        from modeldeck.localcloud import local_cloud
        with local_cloud() as cloud:
            s3 = cloud.client("s3")
            onnx = (root / "model.onnx").read_bytes()
            s3.put_object(Bucket=cloud.bucket, Key="models/{NAME}/1/model.onnx", Body=onnx)
            card = json.loads((root / "card.json").read_text())
            card["version"] = 1
            s3.put_object(Bucket=cloud.bucket, Key="models/{NAME}/1/card.json", Body=json.dumps(card).encode())
            import os
            os.environ.update(MODEL_NAME="{NAME}", MODEL_VERSION="1", MODEL_BUCKET=cloud.bucket)
            from lambdas.inference import handler
            from tests.fixtures.inference import ROW, call
            reply = call(handler, "POST", "/v1/models/{NAME}:predict", {{"instances": [ROW]}})
        heavy = sorted(m for m in ("sklearn", "scipy", "pandas", "skl2onnx") if m in sys.modules)
        print("RESULT", json.dumps({{"status": reply.status, "heavy": heavy}}))
    """)
    # When
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    # Then a prediction was served and no heavy library was imported on the way
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, done.stderr[-2000:]
    result = json.loads(line.removeprefix("RESULT "))
    assert result == {"status": 200, "heavy": []}
