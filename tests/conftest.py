"""Shared fixtures. Every AWS call goes to moto; sockets may only reach loopback (pytest-socket)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldeck.localcloud import LocalCloud, local_cloud
from modeldeck.registry import Registry
from modeldeck.spec import ModelSpec, load_spec

ROOT = Path(__file__).resolve().parent.parent
DEMO_SPEC = ROOT / "models" / "breast-cancer.toml"
# Every CLI test deploys the same synthesized app into its local cloud: synthesize it once (stub bundles).
os.environ.setdefault("MODELDECK_CDK_OUT", str(ROOT / "build" / "test-assembly"))


@pytest.fixture(scope="session")
def demo_spec() -> ModelSpec:
    return load_spec(DEMO_SPEC)


@pytest.fixture
def cloud() -> Iterator[LocalCloud]:
    """A fresh in-process local cloud (moto) with the registry bucket."""
    with local_cloud() as c:
        yield c


@pytest.fixture
def registry(cloud: LocalCloud) -> Registry:
    return Registry(cloud.client("s3"), cloud.bucket)


@pytest.fixture(scope="session")
def trained_demo(demo_spec: ModelSpec):  # type: ignore[no-untyped-def]
    """The demo model trained once per session (about 0.2 s, but many tests need it)."""
    from training.datasets import load_dataset
    from training.train import train_model

    return train_model(demo_spec, load_dataset(demo_spec))
