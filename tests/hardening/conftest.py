"""Fixtures for the hardening suite: a deployed demo model behind the local gateway, with an API key."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from modeldeck.gateway import Gateway, serve
from modeldeck.localcloud import LocalCloud
from tests.fixtures.gateway import deployed_api
from tests.fixtures.inference import MODEL, configure_handler, served_card, served_cloud  # noqa: F401
from tests.integration.test_release import release_template, world  # noqa: F401

API_KEY = "hk-7f3a9c1e-hardening-secret"


@dataclass
class LiveApi:
    cloud: LocalCloud
    gateway: Gateway
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@pytest.fixture(scope="module")
def live_api(trained_demo: Any) -> Iterator[LiveApi]:
    """Given v1 live and v2 as a 10% canary of the demo model, behind the gateway of the deployed templates on
    127.0.0.1:0 with a key (throttled at 5000 requests per second: the generated requests come faster than
    cdk.json's 100)."""
    with deployed_api(trained_demo, canary=0.1, throttle=(5000, 5000)) as cloud:
        gateway = Gateway(cloud, api_key=API_KEY)
        server = serve(gateway, port=0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield LiveApi(cloud, gateway, "127.0.0.1", server.server_address[1])
        finally:
            server.shutdown()
            server.server_close()


def record_figures(name: str, figures: dict[str, Any]) -> None:
    """Keep a run's figures in build/hardening/{name}.json for docs/reliability.md (merged per key)."""
    import json
    from pathlib import Path

    out = Path(__file__).resolve().parents[2] / "build" / "hardening"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    current = json.loads(path.read_text()) if path.exists() else {}
    current.update(figures)
    path.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
