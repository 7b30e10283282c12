"""Docker-free Lambda bundles: ``pip install`` manylinux wheels for the target architecture, add our code.

Lambda's Python 3.12 runtime runs on Amazon Linux 2023 (glibc 2.34), so the manylinux_2_28 wheels of
onnxruntime and numpy run there unchanged; pip only has to be told which platform to pick. No Docker is
needed, and the same function builds an arm64 bundle on an x86_64 machine.

Bundles are cached under ``build/bundles/`` by a hash of everything that goes in (the requirements, the
architecture, the Python version, our source files and the strip rules), so a repeated synth costs a
hash of the sources and a hard-linked copy. The dependency layer is cached separately by the
requirements' hash: editing a handler does not re-run pip.

:class:`LocalBundler` plugs :func:`build_bundle` into CDK (``ILocalBundling``), so ``Code.from_asset``
never falls back to Docker.
"""

from __future__ import annotations

import ast
import contextlib
import fnmatch
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO_ROOT / "build" / "bundles"
PYTHON_VERSION = "3.12"
PLATFORMS = {"arm64": "manylinux_2_28_aarch64", "x86_64": "manylinux_2_28_x86_64"}
MANYLINUX2014 = {"arm64": "manylinux2014_aarch64", "x86_64": "manylinux2014_x86_64"}

# Core modules that must never ship in a zip bundle, even if an import chain reaches them: the CLI, the
# local cloud (moto) and the local gateway. Bundling fails loudly instead.
CORE_FORBIDDEN = frozenset({"cli", "__main__", "localcloud", "gateway"})
# The AWS SDK (boto3, botocore and their dependencies). The Lambda Python runtime ships a version of its own,
# which AWS updates on its schedule; a bundle whose requirements pin botocore ships the pinned SDK instead
# (a function's own directory comes first on its Python path), because it relies on an API the runtime's
# version may predate (S3 conditional writes, ``put_object(IfNoneMatch=...)``). Other bundles leave it out.
SDK_DIRS = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")
# What the runtime does not need: onnxruntime's tools, transformers and training helpers are offline
# utilities; headers, tests and caches are never imported.
STRIP_DIRS = ("__pycache__", "tests", "test", "include", "bin")
STRIP_PATHS = (
    "onnxruntime/tools",
    "onnxruntime/transformers",
    "onnxruntime/training",
    "onnxruntime/quantization",
    "onnxruntime/datasets",
    "numpy/f2py",
    "numpy/_pyinstaller",
    "numpy/typing/tests",
    "numpy/doc",
)
STRIP_FILES = ("*.pyc", "*.pyi", "*.h", "*.hpp", "*.c", "*.pxd", "*.pyx", "*.a")
STRIP_VERSION = "3"


@dataclass(frozen=True)
class BundleSpec:
    """What goes into one bundle. ``packages`` are repository-relative directories copied as is."""

    name: str
    requirements: Path | None
    packages: tuple[str, ...]
    architecture: str = "arm64"
    with_dependencies: bool = True
    core: bool = True


def _files(root: Path, rel: str) -> list[Path]:
    base = root / rel
    if base.is_file():
        return [base]
    return sorted(
        p for p in base.rglob("*") if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc")
    )


def _core_imports(path: Path) -> set[str]:
    """``modeldeck`` modules a file imports (absolute ``modeldeck.x`` imports, at any depth in the file)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == "modeldeck":
                if len(parts) > 1:
                    found.add(parts[1])
                else:
                    found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "modeldeck" and len(parts) > 1:
                    found.add(parts[1])
    return found


def core_modules(entry_files: Iterable[Path], root: Path = REPO_ROOT) -> list[str]:
    """The ``modeldeck`` modules the entry files need: the closure of their imports.

    Only what a handler can reach ships, so a new CLI-only or training-only module never lands in a
    Lambda bundle by accident.
    """
    core = root / "modeldeck"
    todo = [m for f in entry_files for m in _core_imports(f)]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        # Before the file check: the CLI and the local cloud are packages, not modules.
        if name in CORE_FORBIDDEN:
            raise ValueError(f"a Lambda bundle would include modeldeck.{name} (CLI/local-only); fix the import")
        if name in seen or not (core / f"{name}.py").is_file():
            continue
        seen.add(name)
        todo.extend(_core_imports(core / f"{name}.py"))
    return sorted(seen)


def _sources(spec: BundleSpec, root: Path) -> list[tuple[Path, str]]:
    """(source file, path inside the bundle) for our own code."""
    out: list[tuple[Path, str]] = []
    package_files = [p for package in spec.packages for p in _files(root, package) if p.suffix == ".py"]
    if spec.core:
        for name in ["__init__", *core_modules(package_files, root)]:
            path = root / "modeldeck" / f"{name}.py"
            out.append((path, path.relative_to(root).as_posix()))
    parents = {"lambdas/__init__.py"} if any(p.startswith("lambdas/") for p in spec.packages) else set()
    for rel in sorted(parents):
        if (root / rel).exists():
            out.append((root / rel, rel))
    for package in spec.packages:
        for path in _files(root, package):
            if path.name != "requirements.txt" and "tests" not in path.relative_to(root).parts:
                out.append((path, path.relative_to(root).as_posix()))
    return out


def _requirements_hash(spec: BundleSpec) -> str:
    digest = hashlib.sha256()
    digest.update(f"{spec.architecture}|{PYTHON_VERSION}|{STRIP_VERSION}|{spec.with_dependencies}".encode())
    if spec.requirements is not None and spec.with_dependencies:
        digest.update(spec.requirements.read_bytes())
    return digest.hexdigest()


def bundle_hash(spec: BundleSpec, root: Path = REPO_ROOT) -> str:
    """A hash of every input of the bundle: it names the cache entry and the CDK asset."""
    digest = hashlib.sha256(_requirements_hash(spec).encode())
    for path, dest in _sources(spec, root):
        digest.update(dest.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def pins_sdk(requirements: Path) -> bool:
    """Whether a requirements file pins botocore: its bundle then ships the SDK rather than use the runtime's."""
    for line in requirements.read_text().splitlines():
        name = re.split(r"[=<>!~\[; ]", line.strip(), maxsplit=1)[0].lower()
        if name == "botocore" and "==" in line:
            return True
    return False


def _strip(out: Path, keep_sdk: bool = False) -> None:
    strip_dirs = STRIP_DIRS if keep_sdk else STRIP_DIRS + SDK_DIRS
    for dirpath, dirnames, filenames in os.walk(out, topdown=True):
        here = Path(dirpath)
        rel = here.relative_to(out).as_posix()
        keep = []
        for d in dirnames:
            sub = f"{rel}/{d}" if rel != "." else d
            if d in strip_dirs or sub in STRIP_PATHS:
                shutil.rmtree(here / d)
            else:
                keep.append(d)
        dirnames[:] = keep
        for f in filenames:
            if any(fnmatch.fnmatch(f, pattern) for pattern in STRIP_FILES):
                (here / f).unlink()


def _pip_install(requirements: Path, architecture: str, target: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        "--target",
        str(target),
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--platform",
        PLATFORMS[architecture],
        # Some wheels (orjson) only ship manylinux2014 tags, which glibc 2.28 runs as well.
        "--platform",
        MANYLINUX2014[architecture],
        "--python-version",
        PYTHON_VERSION,
        "--upgrade",
        "-r",
        str(requirements),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"pip could not build the {architecture} bundle:\n{result.stderr[-4000:]}")


def _dependencies(spec: BundleSpec, cache: Path) -> Path | None:
    """The stripped site-packages for the requirements, built once per requirements hash."""
    if spec.requirements is None or not spec.with_dependencies:
        return None
    layer = cache / f"deps-{spec.architecture}-{_requirements_hash(spec)[:16]}"
    if layer.is_dir():
        return layer
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".deps-", dir=cache))
    try:
        _pip_install(spec.requirements, spec.architecture, tmp)
        _strip(tmp, keep_sdk=pins_sdk(spec.requirements))
        # An atomic rename: a concurrent synth either sees a complete layer or builds its own.
        with contextlib.suppress(OSError):
            tmp.rename(layer)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return layer


def _link_tree(src: Path, dest: Path) -> None:
    """Copy a tree with hard links where possible (same filesystem), so a copy costs no disk space."""

    def link(s: str, d: str) -> object:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)
        return d

    shutil.copytree(src, dest, copy_function=link, dirs_exist_ok=True)


def build_bundle(spec: BundleSpec, *, cache: Path = CACHE_DIR, root: Path = REPO_ROOT) -> Path:
    """Build (or reuse) the bundle described by ``spec`` and return its directory.

    The directory is the Lambda's ``/var/task``: dependencies at the top level, then ``modeldeck/`` (the
    numpy-only core modules) and the packages listed in ``spec``.
    """
    if spec.architecture not in PLATFORMS:
        raise ValueError(f"unknown architecture {spec.architecture!r}; expected one of {', '.join(PLATFORMS)}")
    digest = bundle_hash(spec, root)
    out = cache / f"{spec.name}-{spec.architecture}-{digest[:16]}"
    if out.is_dir():
        return out
    layer = _dependencies(spec, cache)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=cache))
    try:
        if layer is not None:
            _link_tree(layer, tmp)
        for path, dest in _sources(spec, root):
            target = tmp / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        with contextlib.suppress(OSError):
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def tree_size(path: Path) -> int:
    """Bytes of every file under ``path`` (hard links counted once per path, as Lambda unzips them)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@jsii.implements(ILocalBundling)
class LocalBundler:
    """CDK's hook for bundling without Docker: builds the bundle and links it into CDK's output dir."""

    def __init__(self, spec: BundleSpec, cache: Path = CACHE_DIR) -> None:
        self.spec = spec
        self.cache = cache

    def try_bundle(self, output_dir: str, *, image: DockerImage, **_: object) -> bool:
        _link_tree(build_bundle(self.spec, cache=self.cache), Path(output_dir))
        return True


def lambda_code(spec: BundleSpec, *, cache: Path = CACHE_DIR) -> lambda_.Code:
    """``Code.from_asset`` bundled locally; the asset hash is our input hash, so CDK never fingerprints
    the repository and skips bundling when ``cdk.out`` already holds this asset."""
    source = REPO_ROOT / spec.packages[0] if spec.packages else REPO_ROOT / "modeldeck"
    return lambda_.Code.from_asset(
        str(source),
        asset_hash_type=AssetHashType.CUSTOM,
        asset_hash=bundle_hash(spec),
        bundling=BundlingOptions(
            # Never pulled: the local bundler always succeeds, and CDK only falls back to the image when it
            # does not. CDK requires an image all the same.
            image=DockerImage.from_registry("public.ecr.aws/sam/build-python3.12"),
            local=LocalBundler(spec, cache),
        ),
    )


def iter_wheel_tags(bundle: Path) -> Iterable[tuple[str, Sequence[str]]]:
    """(distribution, its WHEEL ``Tag`` lines) for every installed distribution in a bundle."""
    for wheel in sorted(bundle.glob("*.dist-info/WHEEL")):
        tags = [line.split(":", 1)[1].strip() for line in wheel.read_text().splitlines() if line.startswith("Tag:")]
        yield wheel.parent.name, tags
