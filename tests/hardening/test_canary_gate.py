"""The canary's statistical gate end to end, on the local cloud with production defaults (10-minute bake,
a look every minute, 60 s periods, the virtual clock), reusing the canary fixtures of
``test_canary_rollback``.

Given steady client traffic through ``live``, a real faulty model (the demo's recall-weighted retraining:
it passes the pre-release gate, answers every request, and shifts every score) is rolled back by the
statistical gate's prediction-shift test before the bake ends, with the reason naming the test and its
always-valid p-value, and the champion and the alias untouched.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from modeldeck import release
from modeldeck.capture import parse_ts
from modeldeck.cli.models import run_training
from tests.conftest import DEMO_SPEC
from tests.e2e.test_canary_rollback import MODEL, deployed, release_with_traffic

# A whole local cloud, two trainings and a release under traffic: over the suite's CPU budget, so it runs with
# `make harden` (tests/hardening); tests/unit/test_canary_gate.py covers the same path on moto in the fast suite.
pytestmark = [pytest.mark.e2e, pytest.mark.slow]
FAULTY_SPEC = DEMO_SPEC.parent / "demo" / "breast-cancer-recall-weighted.toml"


def test_a_faulty_model_is_rolled_back_by_the_statistical_gate_before_the_bake_ends(tmp_path: Path) -> None:
    # Given v1 live and champion, and v2: the demo model retrained with malignant cases weighted 300:1
    with deployed(tmp_path) as ctx:
        v2, _, _ = run_training(ctx, FAULTY_SPEC)
        fn, lam = ctx.deployment.function_name(MODEL), ctx.client("lambda")
        alias = release.get_alias(lam, fn)
        assert alias is not None
        live_before = alias["FunctionVersion"]
        # When v2 is released with the production canary under client traffic
        record, answers = release_with_traffic(ctx, int(v2.version))
        champion_after = ctx.registry.get_champion(MODEL)
        weights_after = release.alias_weights(release.get_alias(lam, fn))
    # Then no client saw an error, and the release rolled back on the gate's evidence, during the bake
    assert answers[f"v{v2.version} 200"] > 0 and not [k for k in answers if not k.endswith(" 200")], answers
    assert record["outcome"] == "rolled-back"
    cause = record["cause"]
    assert cause["error"] == "statistical-gate", cause
    assert "prediction-shift" in cause["reason"] and "always-valid p = " in cause["reason"]
    events = {e["event"]: e for e in record["timeline"]}
    assert "bake-checked" not in events  # it never got to the alarm check
    shifted, rolled = parse_ts(events["shift"]["at"]), parse_ts(events["rolled-back"]["at"])
    assert (rolled - shifted).total_seconds() < 600, "rolled back before the 10-minute bake ended"
    looked = events["gate-checked"]
    assert looked["worse"] is True and any(t["p_value"] < t["alpha"] for t in looked["tests"])
    # and the champion, and the alias it serves, are untouched
    assert champion_after == 1
    assert weights_after == {live_before: 1.0}
