"""`train --release` follows the release the training state machine hands the version to, as `release` does:
its outcome is printed and the exit status says whether it was promoted (issue 13.9)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modeldeck.cli import main
from tests.conftest import DEMO_SPEC


def test_train_release_reports_a_refused_release_and_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Given a registered v1 and another release of the model holding the release lock
    state = tmp_path / "state"
    assert main(["--state-dir", str(state), "--json", "train", str(DEMO_SPEC)]) == 0
    capsys.readouterr()
    (bucket,) = [p for p in (state / "s3").iterdir() if (p / "models" / "breast-cancer").is_dir()]
    lock = bucket / "releases" / "breast-cancer" / "lock.json"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"execution": "someone-else", "version": 7, "at": "2026-11-28T00:00:00.000000Z"}))
    # When the same spec is trained with --release
    code = main(["--state-dir", str(state), "train", str(DEMO_SPEC), "--release"])
    out, err = capsys.readouterr()
    # Then the release was followed to its end: refused, with the gate's reason, and the exit status says so
    assert code == 1, out + err
    assert "breast-cancer v1: refused" in out
    assert "already in flight" in out
    assert "release started" not in out
