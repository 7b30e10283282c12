"""Lambda bundles, built for the Lambda platform without Docker: unzipped and zipped size per function."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from infra.bundling import REPO_ROOT, BundleSpec, build_bundle, iter_wheel_tags, tree_size

LIMIT_MIB = 250  # Lambda's unzipped limit for a zip deployment
GOAL_MIB = 150  # the inference bundle's goal

BUNDLES = [
    ("inference", "lambdas/inference/requirements.txt", "lambdas/inference"),
    ("release", "lambdas/release/requirements.txt", "lambdas/release"),
    ("drift", "lambdas/drift/requirements.txt", "lambdas/drift"),
]


def _zipped(path: Path) -> int:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            zf.write(file, file.relative_to(path).as_posix())
    return buffer.tell()


def run() -> str:
    lines = [
        "## Lambda bundles (arm64, built without Docker)",
        "",
        "Built by `infra/bundling.py` exactly as `cdk synth` builds them: manylinux_2_28 aarch64 wheels for "
        "CPython 3.12, stripped of tests, headers and what the runtime provides (boto3).",
        "",
        "| function | unzipped | zipped | goal | platform tags |",
        "|---|---|---|---|---|",
    ]
    for name, requirements, package in BUNDLES:
        spec = BundleSpec(name=name, requirements=REPO_ROOT / requirements, packages=(package,), architecture="arm64")
        path = build_bundle(spec)
        size = tree_size(path) / 2**20
        tags = sorted({t.split("-")[-1] for _, ts in iter_wheel_tags(path) for t in ts if "manylinux" in t})
        goal = (
            f"≤ {GOAL_MIB} MiB: {'met' if size <= GOAL_MIB else 'MISSED'}"
            if name == "inference"
            else f"≤ {LIMIT_MIB} MiB (Lambda)"
        )
        lines.append(
            f"| {name} | {size:.1f} MiB | {_zipped(path) / 2**20:.1f} MiB | {goal} | "
            f"{', '.join(tags) or 'pure Python'} |"
        )
    return "\n".join(lines) + "\n"
