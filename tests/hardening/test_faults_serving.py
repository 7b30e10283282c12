"""A version whose artifact or card is missing is never served (its own module: it holds a served cloud)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from modeldeck.registry import BASELINE, CARD, HOLDOUT, MODEL, Registry
from tests.fixtures.inference import ROW, call
from tests.hardening.test_faults import injected

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


@pytest.mark.parametrize("missing", [MODEL, CARD])
def test_a_version_missing_its_artifact_or_card_is_never_served(
    served_cloud: Any, trained_demo: Any, configure_handler: Any, missing: str
) -> None:
    # Given v2 registered, then its artifact (or its card) deleted
    cloud, _ = served_cloud
    registry = Registry(cloud.client("s3"), cloud.bucket)
    card, _ = registry.register(
        replace(trained_demo.card, spec_sha256=f"{missing[:1]}" * 64),
        trained_demo.onnx,
        {BASELINE: trained_demo.baseline, HOLDOUT: trained_demo.holdout},
    )
    registry.s3.delete_object(Bucket=cloud.bucket, Key=f"models/{card.name}/{card.version}/{missing}")
    injected(f"missing {missing} (serving)")
    # When a function pinned to v2 gets traffic
    handler = configure_handler(MODEL_VERSION=str(card.version))
    reply = call(handler, "POST", f"/v1/models/{card.name}:predict", {"instances": [ROW]})
    # Then it is not ready (503 with Retry-After), and nothing was scored
    assert reply.status == 503 and set(reply.json) == {"error"}
    assert "Retry-After" in reply.headers
    assert call(handler, "GET", "/v2/health/ready").status == 503
