"""The demo's nine stages, end to end on the local cloud, with the production canary policy.

The releases bake for the policy's 10 minutes (plus the metric settle time) on the local cloud's virtual
clock, so the run takes seconds of wall time. Stage 6 releases a real faulty model version through the
normal path; nothing is injected.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modeldeck import release
from modeldeck.cli import main
from tests.conftest import DEMO_SPEC

pytestmark = pytest.mark.e2e


def test_the_demo_runs_every_stage_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a fresh state directory, when the demo runs with its defaults
    state = tmp_path / "state"
    code = main(["--state-dir", str(state), "demo", "--spec", str(DEMO_SPEC)])
    out = capsys.readouterr().out
    # Then every stage ran and showed what it says it shows
    assert code == 0, out[-3000:]
    for stage in range(1, 10):
        assert f"stage {stage}/9" in out
    assert "canary v2 at 10% for 10 minutes" in out
    assert "virtual" in out and "s wall" in out
    assert "v1 is live and champion" in out
    assert "an Open Inference Protocol client request was answered by v1" in out
    assert "a request without the API key is refused (403)" in out
    assert "prediction agreement" in out
    assert "v2 was healthy and is promoted" in out
    # And the faulty v3 is a trained model that the gates pass and the canary rolls back on its prediction shift
    # (the statistical gate's prediction-shift test during the bake, or the prediction-shift alarm after it)
    assert "models/demo/breast-cancer-recall-weighted.toml" in out
    assert "gate: v3 passes" in out
    assert "prediction-shift" in out.split("v3 rolled back: ", 1)[1].split("\n", 1)[0]
    assert "no client saw an error during the faulty release" in out
    assert "SNS › modeldeck: breast-cancer v3 rolled back" in out
    # And the A/B test reached its decision on the experiment job's schedule, told once on SNS, and concluded
    assert "the experiment job decided: A (v2) wins" in out
    assert "SNS › modeldeck: experiment exp-" in out and "A wins" in out
    assert "keeps the champion v2" in out
    assert (state / "experiment-report.html").is_file()
    assert 'SNS › ALARM: "modeldeck-dev-breast-cancer-drifted-features"' in out
    report = state / "drift-report.html"
    assert report.is_file() and "<svg" in report.read_text()
    assert "last release: v3 canary → rolled-back" in out
    # And it ends where a user can go on: no health alarm would refuse the next release
    assert "no health alarm in ALARM" in out

    # The state persisted: a later command sees v2 live and the rollback in the record.
    code = main(["--state-dir", str(state), "--json", "status", "breast-cancer"])
    status = json.loads(capsys.readouterr().out)[0]
    assert code == 0
    assert status["champion"] == 2 and status["last_release"]["outcome"] == "rolled-back"
    assert list(status["weights"].values()) == [1.0]
    health = {release.alarm_name("modeldeck-dev", "breast-cancer", kind) for kind in release.HEALTH_ALARMS}
    assert health <= set(status["alarms"]) and all(status["alarms"][name] != "ALARM" for name in health)
