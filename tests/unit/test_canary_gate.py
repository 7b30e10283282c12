"""The canary's statistical gate (modeldeck.release.statistical_gate, sequential_check): what it rolls back,
what it leaves alone, and its measured rates on simulated canaries (benchmarks.experiments has the larger
runs recorded in docs/benchmarks.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from benchmarks.experiments import simulate_canaries
from modeldeck import release
from modeldeck.capture import encode_batch, partition_key
from modeldeck.release import Moments, Policy, VersionSample, statistical_gate
from tests.conftest import DEMO_SPEC
from tests.unit.test_release_gate import MODEL, World, world  # noqa: F401  (the moto world fixture)

CANDIDATE, CHAMPION = 2, 1


def _sample(requests: float, errors: float, latency: tuple[int, float, float] = (0, 0, 0), score=(0, 0, 0)):
    return VersionSample(requests, errors, Moments(*latency), Moments(*score))


def _moments(n: int, mean: float, sd: float) -> tuple[int, float, float]:
    return n, n * mean, n * (sd * sd + mean * mean)


def test_no_data_and_too_little_data_are_never_a_reason_to_roll_back():
    assert statistical_gate({2: _sample(0, 0), 1: _sample(0, 0)}, CANDIDATE, CHAMPION, Policy())["worse"] is False
    few = {2: _sample(9, 9), 1: _sample(500, 0)}
    assert statistical_gate(few, CANDIDATE, CHAMPION, Policy()) == {"worse": False, "reason": None, "tests": []}


def test_a_candidate_failing_every_request_is_worse_and_the_reason_names_the_test_and_its_p_value():
    verdict = statistical_gate({2: _sample(12, 12), 1: _sample(108, 1)}, CANDIDATE, CHAMPION, Policy())
    assert verdict["worse"] is True
    assert "error-rate test" in verdict["reason"] and "always-valid p = " in verdict["reason"]
    assert "v2" in verdict["reason"] and "v1" in verdict["reason"]
    (test,) = verdict["tests"]
    assert test["test"] == "error-rate" and test["p_value"] < test["alpha"] == pytest.approx(0.05 / 4)


def test_a_better_candidate_is_never_worse_one_sided():
    verdict = statistical_gate({2: _sample(5000, 0), 1: _sample(45000, 4500)}, CANDIDATE, CHAMPION, Policy())
    assert verdict["worse"] is False and verdict["tests"][0]["p_value"] == pytest.approx(1.0, abs=1e-6)


def test_latency_within_the_margin_passes_and_twice_as_slow_is_worse():
    champion = _sample(20000, 0, _moments(20000, 3.0, 2.0))
    slightly = _sample(20000, 0, _moments(20000, 3.3, 2.0))  # 10% slower: inside the 20% margin
    assert statistical_gate({2: slightly, 1: champion}, CANDIDATE, CHAMPION, Policy())["worse"] is False
    slow = _sample(2000, 0, _moments(2000, 6.0, 4.0))
    verdict = statistical_gate({2: slow, 1: champion}, CANDIDATE, CHAMPION, Policy())
    assert verdict["worse"] is True and "latency test" in verdict["reason"]


def test_a_prediction_shift_beyond_the_tolerance_either_way_is_worse_and_within_it_is_not():
    champion = _sample(5000, 0, score=_moments(5000, 0.40, 0.2))
    within = _sample(5000, 0, score=_moments(5000, 0.48, 0.2))  # shifted 0.08 < the 0.15 tolerance
    assert statistical_gate({2: within, 1: champion}, CANDIDATE, CHAMPION, Policy())["worse"] is False
    for mean, test in ((0.70, "prediction-shift-up"), (0.10, "prediction-shift-down")):
        moved = _sample(1000, 0, score=_moments(1000, mean, 0.2))
        verdict = statistical_gate({2: moved, 1: champion}, CANDIDATE, CHAMPION, Policy())
        assert verdict["worse"] is True and f"{test} test" in verdict["reason"]


def test_record_score_follows_the_handlers_prediction_score():
    assert release.record_score({"outputs": {"probabilities": [[0.9, 0.1], [0.2, 0.8]]}}) == pytest.approx(0.45)
    assert release.record_score({"outputs": {"probabilities": [[0.2, 0.5, 0.3]]}}) == pytest.approx(0.5)
    assert release.record_score({"outputs": {"label": [1.5, 2.5]}}) == pytest.approx(2.0)
    assert release.record_score({"outputs": {"label": ["benign"]}}) is None


def test_healthy_simulated_canaries_are_rarely_rolled_back_at_most_at_alpha():
    # Given 150 simulated healthy canaries (same error rate, latency and scores as the champion) at 1,200
    # requests a minute, judged at every look of a production bake
    runs = simulate_canaries(150, rpm=1200, seed=11)
    # Then the false-rollback rate is within alpha (a peeked fixed-horizon test would roll back far more)
    assert runs.rate <= 0.05 + 2 * (0.05 * 0.95 / 150) ** 0.5


def test_twice_the_error_rate_is_rolled_back_during_the_bake_at_production_traffic():
    # Given candidates with 2% server errors against a 1% champion, at 12,000 requests a minute (10% canary)
    runs = simulate_canaries(40, rpm=12000, candidate_error=0.02, seed=12)
    # Then nearly all are rolled back by the error-rate test, within the bake, minutes after the shift
    assert runs.bake_rate >= 0.9 and runs.tests.get("error-rate", 0) == runs.rolled_back
    assert sorted(runs.minutes)[len(runs.minutes) // 2] <= 6


def _emit(w: World, version: int, at: datetime, requests: int, errors: int) -> None:
    dims = [{"Name": "model", "Value": MODEL}, {"Name": "version", "Value": str(version)}]
    w.cw.client.put_metric_data(
        Namespace="modeldeck",
        MetricData=[
            {"MetricName": "Requests", "Dimensions": dims, "Timestamp": at, "Value": requests},
            {"MetricName": "ServerErrors", "Dimensions": dims, "Timestamp": at, "Value": errors},
        ],
    )


def _capture(w: World, at: datetime, version: int, latencies: list[float]) -> None:
    records = [
        {
            "kind": "capture",
            "model": MODEL,
            "model_version": str(version),
            "id": f"v{version}-{i}",
            "ts": (at + timedelta(milliseconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "outputs": {"label": ["benign"], "probabilities": [[0.7, 0.3]]},
            "latency_ms": ms,
        }
        for i, ms in enumerate(latencies)
    ]
    key = f"{partition_key('capture', MODEL, at)}/v{version}.jsonl"
    w.registry.s3.put_object(Bucket=w.registry.bucket, Key=key, Body=encode_batch(records))


def test_sequential_check_splits_the_bake_and_rolls_back_a_worse_candidate_with_the_reason(world: World) -> None:  # noqa: F811
    # Given a canary shifted with the production bake: the gate looks every 60 s, and the waits add up to it
    shifted = release.shift(world.gate(), world.clients)
    assert (shifted["bake_left"], shifted["gate_wait"]) == (600, 60)
    # When nothing is wrong yet (the champion's and the candidate's requests, no errors, equal latencies)
    now = datetime.now(UTC)
    _emit(world, 1, now, 900, 0)
    _emit(world, world.v2, now, 100, 0)
    _capture(world, now, 1, [3.0, 3.1, 2.9, 3.0] * 5)
    _capture(world, now, world.v2, [3.0, 3.1, 2.9, 3.0] * 5)
    look = release.sequential_check(shifted, world.clients)
    # Then it carries on to the next wait, with the bake's remaining time
    assert look["worse"] is False and (look["bake_left"], look["gate_wait"]) == (540, 60)
    # When the candidate then fails 30 of 60 more requests
    _emit(world, world.v2, now, 60, 30)
    worse = release.sequential_check(look, world.clients)
    # Then the look says worse, with a cause naming the test and its p-value, recorded on the timeline
    assert worse["worse"] is True and worse["cause"]["error"] == "statistical-gate"
    assert "error-rate test" in worse["cause"]["reason"] and "p = " in worse["cause"]["reason"]
    event = world.record()["timeline"][-1]
    assert event["event"] == "gate-checked" and event["worse"] is True
    rolled = release.rollback(worse, world.clients)
    assert rolled["outcome"] == "rolled-back" and world.weights() == {"1": 1.0}
    assert "statistical-gate" in json.dumps(world.record()["cause"])


def test_a_disabled_gate_waits_the_whole_bake_once(world: World) -> None:  # noqa: F811
    world.clients.policy = release.Policy(alarm_prefix="modeldeck-dev", gate_enabled=False)
    shifted = release.shift(world.gate(), world.clients)
    assert (shifted["bake_left"], shifted["gate_wait"]) == (600, 600)
    _emit(world, world.v2, datetime.now(UTC), 100, 100)
    look: dict[str, Any] = release.sequential_check(shifted, world.clients)
    assert look["worse"] is False and look["bake_left"] == 0


def test_the_gate_settings_come_from_the_canary_config_with_sane_defaults(tmp_path) -> None:
    from infra.config import ConfigError, load_config

    models = tmp_path / "models"
    models.mkdir()
    (models / "breast-cancer.toml").write_text(DEMO_SPEC.read_text())
    c = load_config({"stage": "dev", "models_dir": "models"}, repo_root=tmp_path).canary
    assert (c.gate_enabled, c.gate_alpha, c.gate_interval_seconds, c.gate_latency_margin_percent) == (
        True,
        0.05,
        60,
        20.0,
    )
    p = Policy.from_env({})
    assert (p.gate_enabled, p.gate_alpha, p.gate_interval_seconds, p.gate_latency_margin_percent) == (
        True,
        0.05,
        60,
        20.0,
    )
    off = {"stage": "dev", "models_dir": "models", "canary": {"gate_enabled": False, "gate_alpha": 0.01}}
    c = load_config(off, repo_root=tmp_path).canary
    assert (c.gate_enabled, c.gate_alpha) == (False, 0.01)
    with pytest.raises(ConfigError, match=r"canary\.gate_alpha"):
        load_config({"stage": "dev", "models_dir": "models", "canary": {"gate_alpha": 0.5}}, repo_root=tmp_path)
    with pytest.raises(ConfigError, match=r"canary\.gate_enabled"):
        load_config({"stage": "dev", "models_dir": "models", "canary": {"gate_enabled": "yes"}}, repo_root=tmp_path)
