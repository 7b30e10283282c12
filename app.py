"""The CDK app: read the config once, compose the stacks, synthesize (offline; no AWS calls).

``cdk synth`` passes cdk.json's context in ``CDK_CONTEXT_JSON``; ``python app.py`` alone reads cdk.json
itself, so both produce the same templates (into ``CDK_OUTDIR`` when set, else ``cdk.out/``). Account and
region come from ``CDK_DEFAULT_ACCOUNT`` and ``CDK_DEFAULT_REGION`` (set by the CDK CLI from the profile)
and only here. ``MODELDECK_BUNDLING=stub`` skips the pip layer of the Lambda bundles (for a local cloud,
which runs handlers from the repository and never reads the bundles).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from infra.config import CONTEXT_KEY, ConfigError, load_config, merge_overrides
from infra.stacks import build_app

ROOT = Path(__file__).resolve().parent


def main() -> None:
    if "CDK_CONTEXT_JSON" in os.environ:
        app = cdk.App()
    else:
        context = json.loads((ROOT / "cdk.json").read_text()).get("context", {})
        app = cdk.App(outdir=None if "CDK_OUTDIR" in os.environ else str(ROOT / "cdk.out"), context=context)
    raw = merge_overrides(app.node.try_get_context(CONTEXT_KEY) or {}, _context(app))
    if os.environ.get("MODELDECK_BUNDLING"):
        raw["bundling"] = os.environ["MODELDECK_BUNDLING"]
    try:
        config = load_config(
            raw,
            repo_root=ROOT,
            account=os.environ.get("CDK_DEFAULT_ACCOUNT"),
            region=os.environ.get("CDK_DEFAULT_REGION"),
        )
    except ConfigError as exc:
        print(f"modeldeck: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    build_app(app, config)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    app.synth()


def _context(app: cdk.App) -> dict[str, object]:
    """Context entries named ``modeldeck:<path>`` (``cdk synth -c modeldeck:stage=prod``)."""
    raw = os.environ.get("CDK_CONTEXT_JSON")
    entries = json.loads(raw) if raw else {}
    return {k: v for k, v in entries.items() if k.startswith(f"{CONTEXT_KEY}:")}


if __name__ == "__main__":
    main()
