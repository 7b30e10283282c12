"""The Docker-free bundle builder: real arm64 inference and release bundles (cached in build/bundles/).

The first run downloads the wheels from PyPI (pip runs in a subprocess, outside pytest-socket); later
runs reuse the cache and take milliseconds.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from infra.bundling import (
    REPO_ROOT,
    BundleSpec,
    build_bundle,
    bundle_hash,
    core_modules,
    iter_wheel_tags,
    pins_sdk,
    tree_size,
)

pytestmark = pytest.mark.xdist_group("infra")
LAMBDA_LIMIT = 250 * 1000 * 1000  # Lambda's unzipped limit for zip packages (function + layers)
INFERENCE_GOAL = 150 * 2**20  # the inference bundle's own goal: room under the limit for a larger model runtime
# Lambdas whose code writes to S3 with If-None-Match (conditional writes, 2024): the release lock
# (modeldeck.release) and the drift job's window marker (modeldeck.drift).
CONDITIONAL_WRITERS = ("release", "drift")


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
    for dist in ("onnxruntime", "numpy", "pybase64"):  # pybase64: the SIMD base64 of proxy bodies
        (name,) = [d for d in tags if d.startswith(f"{dist}-")]
        assert any(t.startswith("cp312-cp312-manylinux") and t.endswith("aarch64") for t in tags[name]), tags[name]
    for absent in ("sklearn", "scipy", "pandas", "boto3", "botocore", "xgboost", "lightgbm", "onnxmltools"):
        assert not (arm64_bundle / absent).exists(), absent
    assert not list(arm64_bundle.rglob("__pycache__"))
    assert not (arm64_bundle / "onnxruntime" / "tools").exists()
    size = tree_size(arm64_bundle)
    record_property("inference_arm64_unzipped_bytes", size)
    print(f"\ninference bundle (arm64) unzipped: {size / 2**20:.1f} MiB")
    assert size <= INFERENCE_GOAL < LAMBDA_LIMIT


def test_the_inference_bundle_requires_no_booster_library() -> None:
    # Given the inference bundle's requirements (XGBoost and LightGBM models are served as ONNX)
    names = {
        re.split(r"[=<>\[ ;]", line, maxsplit=1)[0].lower()
        for line in (REPO_ROOT / "lambdas/inference/requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    # Then none of the training-only booster packages is among them
    assert not names & {"xgboost", "xgboost-cpu", "lightgbm", "onnxmltools", "scikit-learn", "skl2onnx"}, names


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


def _pinned(requirements: Path, name: str) -> str:
    (line,) = [x for x in requirements.read_text().splitlines() if x.startswith(f"{name}==")]
    return line.split("==", 1)[1].strip()


def _sdk_seen_from(bundle: Path) -> dict[str, object]:
    """What ``import botocore`` finds with the bundle first on the path, as Lambda puts /var/task first."""
    probe = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import boto3, botocore.session; "
        "s3 = botocore.session.get_session().get_service_model('s3'); "
        "print(json.dumps({'boto3': boto3.__version__, 'botocore': botocore.__version__, "
        "'from_bundle': botocore.__file__.startswith(sys.argv[1]), "
        "'put_if_none_match': 'IfNoneMatch' in s3.operation_model('PutObject').input_shape.members}))"
    )
    done = subprocess.run([sys.executable, "-I", "-c", probe, str(bundle)], capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout))


@pytest.mark.parametrize("name", CONDITIONAL_WRITERS)
def test_a_lambda_that_writes_conditionally_pins_the_sdk_it_relies_on(name: str) -> None:
    # Given the requirements of a Lambda whose code calls put_object(IfNoneMatch="*")
    requirements = REPO_ROOT / f"lambdas/{name}/requirements.txt"
    # Then they pin boto3 and botocore, so its bundle ships them instead of relying on the runtime's SDK
    assert pins_sdk(requirements)
    assert _pinned(requirements, "boto3") and _pinned(requirements, "botocore")


def test_the_release_bundle_ships_the_pinned_sdk_and_it_knows_conditional_writes(record_property) -> None:  # type: ignore[no-untyped-def]
    # Given the real arm64 release bundle
    requirements = REPO_ROOT / "lambdas/release/requirements.txt"
    bundle = build_bundle(
        BundleSpec(name="release", requirements=requirements, packages=("lambdas/release",), architecture="arm64")
    )
    # When Python imports botocore with the bundle first on its path (Lambda's order: /var/task first)
    seen = _sdk_seen_from(bundle)
    # Then it gets the pinned SDK from the bundle, whose S3 PutObject takes IfNoneMatch
    assert seen == {
        "boto3": _pinned(requirements, "boto3"),
        "botocore": _pinned(requirements, "botocore"),
        "from_bundle": True,
        "put_if_none_match": True,
    }
    size = tree_size(bundle)
    record_property("release_arm64_unzipped_bytes", size)
    print(f"\nrelease bundle (arm64) unzipped, with the SDK: {size / 2**20:.1f} MiB")
    assert size < LAMBDA_LIMIT


def test_pins_sdk_reads_an_exact_botocore_pin(tmp_path: Path) -> None:
    cases = {"botocore==1.44.8\n": True, "boto3==1.44.5\n": False, "botocore>=1.35\n": False, "# botocore==1\n": False}
    for text, expected in cases.items():
        (tmp_path / "r.txt").write_text(text)
        assert pins_sdk(tmp_path / "r.txt") is expected, text


@pytest.mark.parametrize("package", ["cli", "localcloud"])
def test_a_handler_reaching_the_cli_or_the_local_cloud_fails_the_bundle(tmp_path: Path, package: str) -> None:
    # Given a handler that imports from a CLI-only package (packages, not single modules)
    handler = tmp_path / "handler.py"
    handler.write_text(f"from modeldeck.{package}.common import x\n")
    # Then the bundle refuses it, instead of shipping a handler that cannot import
    with pytest.raises(ValueError, match=f"modeldeck.{package} \\(CLI/local-only\\)"):
        core_modules([handler])
