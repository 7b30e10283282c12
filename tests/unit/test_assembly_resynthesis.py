"""The local cloud re-synthesizes the CDK app only when a file the templates are made from changed (by content,
not by mtime), and says how long the last synthesis took (issue 13.5)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from modeldeck.localcloud import cloudformation
from modeldeck.localcloud.cloudformation import assembly_digest, assembly_templates

# A stand-in for app.py: writes an empty cloud assembly and counts its runs.
FAKE_APP = """
import json, os, pathlib
out = pathlib.Path(os.environ["CDK_OUTDIR"]); out.mkdir(parents=True, exist_ok=True)
(out / "manifest.json").write_text(json.dumps({"artifacts": {}}))
runs = pathlib.Path(__file__).parent / "runs"
runs.write_text(str(int(runs.read_text()) + 1) if runs.exists() else "1")
"""


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "repo"
    (root / "models").mkdir(parents=True)
    (root / "infra").mkdir()
    (root / "app.py").write_text(FAKE_APP)
    (root / "cdk.json").write_text(json.dumps({"watch": {"include": ["app.py", "infra/**", "models/**"]}}))
    (root / "models" / "iris.toml").write_text('name = "iris"\n')
    (root / "infra" / "stacks.py").write_text("# stacks\n")
    monkeypatch.setattr(cloudformation, "REPO_ROOT", root)
    return root


def _synths(repo: Path) -> int:
    return int((repo / "runs").read_text()) if (repo / "runs").exists() else 0


def test_only_a_changed_source_re_synthesizes(repo: Path, tmp_path: Path) -> None:
    cdk_out = tmp_path / "state" / "cdk.out"
    said: list[str] = []
    # Given an assembly synthesized once
    assert assembly_templates(cdk_out, progress=said.append) == []
    assert _synths(repo) == 1 and assembly_digest(cdk_out)
    # When a source is touched (same content) or nothing changed
    os.utime(repo / "models" / "iris.toml", (2e9, 2e9))
    assembly_templates(cdk_out, progress=said.append)
    # Then nothing is synthesized again
    assert _synths(repo) == 1
    # When a spec is edited, or a file is added to a watched directory
    before = assembly_digest(cdk_out)
    (repo / "models" / "iris.toml").write_text('name = "iris"\ndescription = "edited"\n')
    assembly_templates(cdk_out, progress=said.append)
    (repo / "models" / "wine.toml").write_text('name = "wine"\n')
    assembly_templates(cdk_out, progress=said.append)
    # Then each re-synthesizes once, and the assembly records what it was made from
    assert _synths(repo) == 3
    assert assembly_digest(cdk_out) not in (None, before)


def test_the_message_says_why_and_the_measured_time(repo: Path, tmp_path: Path) -> None:
    cdk_out = tmp_path / "state" / "cdk.out"
    said: list[str] = []
    # Given a first synthesis, then a spec edit
    assembly_templates(cdk_out, progress=said.append)
    (repo / "models" / "iris.toml").write_text('name = "iris"\ndescription = "edited"\n')
    # When the next command needs the templates
    assembly_templates(cdk_out, progress=said.append)
    # Then no fixed promise is printed: the first run has nothing to time; later ones quote the last measured time
    assert not any("about 10 s" in line for line in said)
    assert "expect 15-30 s" in said[0] and said[1].startswith("synthesized in ")
    assert "its sources changed; the last synthesis here took" in said[2] and said[3].startswith("synthesized in ")


def test_a_spec_in_the_configured_models_dir_counts(repo: Path, tmp_path: Path) -> None:
    # Given specs read from a models_dir that cdk.json's watch list does not name
    config = {"watch": {"include": ["app.py"]}, "context": {"modeldeck": {"models_dir": "specs"}}}
    (repo / "cdk.json").write_text(json.dumps(config))
    (repo / "specs").mkdir()
    cdk_out = tmp_path / "state" / "cdk.out"
    assembly_templates(cdk_out)
    # When a spec is added there
    (repo / "specs" / "iris.toml").write_text('name = "iris"\n')
    assembly_templates(cdk_out)
    # Then the app is synthesized again
    assert _synths(repo) == 2
