"""The typed config: defaults, validation naming the key, overrides, and synth failing fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infra.config import ConfigError, load_config, merge_overrides
from tests.infra.conftest import ROOT, context

pytestmark = pytest.mark.xdist_group("infra")


def raw(**overrides: Any) -> dict[str, Any]:
    return context(**overrides)["modeldeck"]


def test_defaults_come_from_cdk_json_and_the_model_specs() -> None:
    config = load_config(raw(), repo_root=ROOT)
    assert config.stage == "dev"
    assert [m.name for m in config.models] == ["breast-cancer"]
    model = config.models[0]
    assert model.task == "classification" and "mean_radius" in model.features and model.initial_version == "0"
    assert (config.lambda_.architecture, config.lambda_.snap_start) == ("arm64", False)
    assert (config.canary.strategy, config.canary.weight, config.canary.bake_minutes) == ("canary", 0.1, 10)
    assert (config.drift.psi_threshold, config.drift.drifted_share, config.drift.alpha) == (0.2, 0.3, 0.01)
    assert config.drift.bonferroni is True
    assert config.training.compute == "lambda" and config.training.schedule is None
    assert config.function_name("breast-cancer") == "modeldeck-dev-breast-cancer"


def test_an_empty_section_falls_back_to_code_defaults() -> None:
    config = load_config({"stage": "prod"}, repo_root=ROOT)
    assert config.api.max_rows == 1000 and config.log_retention_days == 30 and config.alarms.emails == ()


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"lambda__architecture": "sparc"}, "modeldeck.lambda.architecture"),
        ({"lambda__memory_mb": True}, "modeldeck.lambda.memory_mb"),
        ({"canary__strategy": "blue-green"}, "modeldeck.canary.strategy"),
        ({"drift__drifted_share": 1.5}, "modeldeck.drift.drifted_share"),
        ({"drift__schedule": "every hour"}, "modeldeck.drift.schedule"),
        ({"training__compute": "ec2"}, "modeldeck.training.compute"),
        ({"alarms__emails": ["not-an-email"]}, "modeldeck.alarms.emails"),
        ({"log_retention_days": 31}, "modeldeck.log_retention_days"),
        ({"capture__sample_rate": -0.1}, "modeldeck.capture.sample_rate"),
        ({"api__typo": 1}, "modeldeck.api.typo"),
        ({"models": ["no-such-model"]}, "modeldeck.models"),
        ({"model_versions": {"other": "3"}}, "modeldeck.model_versions.other"),
    ],
)
def test_an_invalid_key_fails_with_a_message_naming_it(overrides: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(raw(**overrides), repo_root=ROOT)
    assert key in str(err.value)


def test_a_missing_required_key_is_named_and_all_problems_are_reported_at_once() -> None:
    bad = raw(lambda__architecture="sparc")
    del bad["stage"]
    with pytest.raises(ConfigError) as err:
        load_config(bad, repo_root=ROOT)
    assert "modeldeck.stage: is required" in str(err.value)
    assert "modeldeck.lambda.architecture" in str(err.value)


def test_account_and_region_are_validated() -> None:
    with pytest.raises(ConfigError, match="CDK_DEFAULT_REGION"):
        load_config(raw(), repo_root=ROOT, account="123456789012", region="moon-1")


def test_command_line_overrides_apply_by_dotted_path() -> None:
    merged = merge_overrides(
        raw(),
        {
            "modeldeck:stage": "prod",
            "modeldeck:lambda.snap_start": "true",
            "modeldeck:alarms.emails": '["ops@example.com"]',
            "unrelated": "x",
        },
    )
    config = load_config(merged, repo_root=ROOT)
    assert config.stage == "prod" and config.lambda_.snap_start is True
    assert config.alarms.emails == ("ops@example.com",)


def test_synth_fails_fast_naming_the_bad_key(tmp_path: Path) -> None:
    ctx = context(training__compute="ec2")
    env = {
        **os.environ,
        "CDK_CONTEXT_JSON": json.dumps(ctx),
        "CDK_OUTDIR": str(tmp_path),
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    }
    done = subprocess.run(
        [sys.executable, str(ROOT / "app.py")], env=env, capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert done.returncode == 2
    assert "modeldeck.training.compute: must be one of lambda, sagemaker, got 'ec2'" in done.stderr
    assert not (tmp_path / "manifest.json").exists()


def test_the_canary_policy_has_typed_defaults_and_covers_the_configured_plan() -> None:
    # Given cdk.json's canary table
    config = load_config(raw(), repo_root=ROOT)
    c = config.canary
    # Then every threshold the release function needs is there, typed
    assert (c.error_rate_percent, c.min_requests, c.prediction_shift, c.period_seconds) == (5.0, 10, 0.15, 60)
    # And the release state machine's timeout covers the plan (at least the 6 hours the CLI may use)
    assert config.release_timeout_minutes == 6 * 60
    long = load_config(raw(canary__strategy="linear", canary__steps=20, canary__bake_minutes=60), repo_root=ROOT)
    assert long.release_timeout_minutes * 60 >= 20 * (60 * 60 + 60 + 180)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"canary__error_rate_percent": 0}, "modeldeck.canary.error_rate_percent: must be > 0"),
        ({"canary__error_rate_percent": 101}, "modeldeck.canary.error_rate_percent: must be <= 100"),
        ({"canary__min_requests": 0}, "modeldeck.canary.min_requests: must be >= 1"),
        ({"canary__prediction_shift": -0.1}, "modeldeck.canary.prediction_shift: must be > 0"),
        ({"canary__period_seconds": 45}, "modeldeck.canary.period_seconds: must be one of 60, 120"),
        ({"canary__threshold": 1}, "modeldeck.canary.threshold: unknown key"),
    ],
)
def test_an_invalid_canary_threshold_is_refused_naming_it(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(raw(**overrides), repo_root=ROOT)
    assert message in str(err.value)


def test_a_bake_shorter_than_a_period_plus_the_metric_delay_is_refused_and_says_why() -> None:
    # Given a 3-minute canary bake with 60 s alarm periods (CloudWatch sees metrics up to 3 minutes late)
    with pytest.raises(ConfigError) as err:
        load_config(raw(canary__bake_minutes=3), repo_root=ROOT)
    # Then the config is refused, naming the key, the delay and the shortest bake
    message = str(err.value)
    assert "modeldeck.canary.bake_minutes: 3 is too short" in message
    assert "180 s late" in message and "use at least 4" in message
    # And a longer alarm period needs a longer bake
    with pytest.raises(ConfigError, match="use at least 8"):
        load_config(raw(canary__period_seconds=300, canary__bake_minutes=5), repo_root=ROOT)
    # But all-at-once has no bake to judge, and four minutes is enough for 60 s periods
    assert load_config(raw(canary__strategy="all-at-once", canary__bake_minutes=0), repo_root=ROOT)
    assert load_config(raw(canary__bake_minutes=4), repo_root=ROOT).canary.bake_minutes == 4
