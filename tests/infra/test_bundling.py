"""The Docker-free bundle builder: one real arm64 inference bundle (cached in build/bundles/).

The first run downloads the wheels from PyPI (pip runs in a subprocess, outside pytest-socket); later
runs reuse the cache and take milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.bundling import REPO_ROOT, BundleSpec, build_bundle, bundle_hash, core_modules, iter_wheel_tags, tree_size

pytestmark = pytest.mark.xdist_group("infra")
LAMBDA_LIMIT = 250 * 1000 * 1000  # Lambda's unzipped limit for zip packages (function + layers)


@pytest.fixture(scope="module")
def arm64_bundle() -> Path:
    spec = BundleSpec(
        name="inference",
        requirements=REPO_ROOT / "lambdas/inference/requirements.txt",
        packages=("lambdas/inference",),
        architecture="arm64",
    )
    return build_bundle(spec)


def test_arm64_bundle_has_aarch64_cp312_wheels_and_no_sklearn(arm64_bundle: Path, record_property) -> None:  # type: ignore[no-untyped-def]
    tags = dict(iter_wheel_tags(arm64_bundle))
    for dist in ("onnxruntime", "numpy"):
        (name,) = [d for d in tags if d.startswith(f"{dist}-")]
        assert any(t.startswith("cp312-cp312-manylinux") and t.endswith("aarch64") for t in tags[name]), tags[name]
    for absent in ("sklearn", "scipy", "pandas", "boto3", "botocore"):
        assert not (arm64_bundle / absent).exists(), absent
    assert not list(arm64_bundle.rglob("__pycache__"))
    assert not (arm64_bundle / "onnxruntime" / "tools").exists()
    size = tree_size(arm64_bundle)
    record_property("inference_arm64_unzipped_bytes", size)
    print(f"\ninference bundle (arm64) unzipped: {size / 2**20:.1f} MiB")
    assert size < LAMBDA_LIMIT


def test_bundle_holds_the_handler_and_only_the_core_modules_it_imports(arm64_bundle: Path) -> None:
    assert (arm64_bundle / "lambdas" / "inference" / "handler.py").is_file()
    shipped = {p.stem for p in (arm64_bundle / "modeldeck").glob("*.py")}
    assert shipped == {"__init__", *core_modules((REPO_ROOT / "lambdas/inference").rglob("*.py"))}
    assert {"serving", "schema", "capture"} <= shipped
    assert not shipped & {"cli", "localcloud", "gateway", "release"}
    assert not (arm64_bundle / "training").exists()


def test_bundle_hash_changes_with_architecture_and_sources() -> None:
    base = BundleSpec(name="capture", requirements=None, packages=("lambdas/capture",), architecture="arm64")
    x86 = BundleSpec(name="capture", requirements=None, packages=("lambdas/capture",), architecture="x86_64")
    other = BundleSpec(name="capture", requirements=None, packages=("lambdas/inference",), architecture="arm64")
    assert len({bundle_hash(base), bundle_hash(x86), bundle_hash(other)}) == 3
    assert bundle_hash(base) == bundle_hash(base)
