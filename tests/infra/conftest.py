"""One synthesis of the whole CDK app per test session, shared by every infra test.

The app is synthesized with cdk-nag's AwsSolutions checks registered, into a temporary cloud assembly,
with ``bundling = "stub"`` (our code without the pip layer; ``test_bundling.py`` builds a real bundle).
A cdk-nag finding makes ``app.synth()`` raise; the templates are written all the same, so the fixture
keeps the error for ``test_cdk_nag`` and the other tests still read the templates.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")


def context(**overrides: Any) -> dict[str, Any]:
    """cdk.json's context with ``bundling = "stub"`` and dotted-path overrides (``training__compute``)."""
    ctx = json.loads((ROOT / "cdk.json").read_text())["context"]
    ctx = copy.deepcopy(ctx)
    ctx["modeldeck"]["bundling"] = "stub"
    for key, value in overrides.items():
        node = ctx["modeldeck"]
        *parents, leaf = key.split("__")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return ctx


@dataclass
class Synth:
    """The synthesized assembly: templates by stack id, the cdk-nag error (if any) and the config."""

    outdir: Path
    templates: dict[str, dict[str, Any]]
    nag_error: Exception | None
    config: Any
    seconds: float

    def template(self, stack: str) -> Any:
        from aws_cdk.assertions import Template

        return Template.from_json(self.templates[stack])

    def resources(self, kind: str, stack: str | None = None) -> dict[str, dict[str, Any]]:
        """Every resource of a type, keyed by ``Stack/LogicalId``."""
        out = {}
        for name, template in self.templates.items():
            if stack in (None, name):
                for logical, res in template.get("Resources", {}).items():
                    if res["Type"] == kind:
                        out[f"{name}/{logical}"] = res
        return out


def synthesize(outdir: Path, *, account: str | None = None, region: str | None = None, **overrides: Any) -> Synth:
    """Synthesize the app for cdk.json's context plus ``overrides``, with cdk-nag registered.

    ``account``/``region`` play ``CDK_DEFAULT_ACCOUNT``/``CDK_DEFAULT_REGION``, which the CDK CLI always
    sets (the region alone, ``us-east-1``, when no AWS configuration exists): ``cdk deploy`` synthesizes
    with a concrete environment, so the tests must too.
    """
    import time

    import aws_cdk as cdk
    from cdk_nag import AwsSolutionsChecks

    from infra.config import load_config
    from infra.stacks import build_app

    started = time.perf_counter()
    ctx = context(**overrides)
    app = cdk.App(outdir=str(outdir), context=ctx)
    config = load_config(ctx["modeldeck"], repo_root=ROOT, account=account, region=region)
    build_app(app, config)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    error: Exception | None = None
    try:
        app.synth()
    except Exception as exc:  # ValidationFailed from cdk-nag; the templates are on disk regardless
        error = exc
    manifest = json.loads((outdir / "manifest.json").read_text())
    templates = {
        name: json.loads((outdir / art["properties"]["templateFile"]).read_text())
        for name, art in manifest["artifacts"].items()
        if art["type"] == "aws:cloudformation:stack"
    }
    return Synth(
        outdir=outdir, templates=templates, nag_error=error, config=config, seconds=time.perf_counter() - started
    )


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synth]:
    """The default app (cdk.json), synthesized once."""
    yield synthesize(tmp_path_factory.mktemp("cdk.out"))


def definition(state_machine: dict[str, Any]) -> dict[str, Any]:
    """A state machine's ASL, with CloudFormation tokens in it replaced by placeholders."""
    body = state_machine["Properties"]["DefinitionString"]
    if isinstance(body, dict):
        body = "".join(p if isinstance(p, str) else "TOKEN" for p in body["Fn::Join"][1])
    return json.loads(body)
