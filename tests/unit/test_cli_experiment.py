"""`modeldeck experiment start`'s argument checks: variants and weights, unit keys, the sample size."""

from __future__ import annotations

import pytest

from modeldeck.cli import build_parser
from modeldeck.cli.common import CliError
from modeldeck.cli.experiment import minimum_units, plan_variants


def start_args(*extra: str) -> list[str]:
    return ["experiment", "start", "m", "--unit-key", "user_id", "--metric", "conversion", *extra]


def test_the_live_version_is_champion_a_and_unweighted_variants_share_the_rest() -> None:
    assert plan_variants([(2, None)], champion=1) == [("A", 1, 0.5), ("B", 2, 0.5)]
    assert plan_variants([(2, 0.2), (3, None)], champion=1) == [("A", 1, 0.4), ("B", 2, 0.2), ("C", 3, 0.4)]
    assert plan_variants([(2, 0.1), (1, 0.9)], champion=1) == [("A", 1, 0.9), ("B", 2, 0.1)]


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ([(2, 0.3), (1, 0.3)], "must sum to 1, they sum to 0.6"),
        ([(2, 0.7), (3, 0.5)], "leaving nothing for v1"),
        ([(1, None)], "needs a challenger"),
        ([(2, None), (2, 0.5)], "more than once"),
    ],
)
def test_a_bad_plan_is_refused_with_what_is_wrong(variants: list, message: str) -> None:
    with pytest.raises(CliError, match=message):
        plan_variants(variants, champion=1)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (start_args("--variant", "x"), "not a version"),
        (start_args("--variant", "2=1.5"), "between 0 and 1"),
        (["experiment", "start", "m", "--variant", "2", "--unit-key", "header:", "--metric", "value"], "header name"),
        (start_args("--variant", "2", "--metric", "f1"), "invalid choice"),
    ],
)
def test_malformed_arguments_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_unit_keys_are_a_field_or_a_case_insensitive_header() -> None:
    assert build_parser().parse_args(start_args("--variant", "2")).unit_key == {"field": "user_id"}
    args = build_parser().parse_args(
        ["experiment", "start", "m", "--variant", "2", "--unit-key", "header:X-User-Id", "--metric", "value"]
    )
    assert args.unit_key == {"header": "x-user-id"}


def test_the_minimum_sample_size_follows_the_metric() -> None:
    from modeldeck import sequential

    args = build_parser().parse_args(start_args("--variant", "2", "--mde", "0.02", "--baseline-rate", "0.1"))
    assert minimum_units(args, None) == (sequential.sample_size_proportions(0.1, 0.02), 0.1)
    args = build_parser().parse_args([*start_args("--variant", "2"), "--metric", "value"])
    with pytest.raises(CliError, match="needs --sd"):
        minimum_units(args, None)
    args.sd = 2.0
    assert minimum_units(args, None) == (sequential.sample_size_means(2.0, 0.02), None)


def test_status_prints_the_table_the_comparison_the_split_check_and_the_decision() -> None:
    from types import SimpleNamespace

    from rich.console import Console

    from modeldeck import experiment_analysis as ea
    from modeldeck.cli.experiment import render_snapshot
    from tests.unit.test_experiment_analysis import STARTED, doc, simulated

    captures, feedback = simulated(600, (0.1, 0.4))
    snap = ea.analyze(doc(), captures, feedback, STARTED)
    console = Console(record=True, width=200)
    render_snapshot(SimpleNamespace(out=console), snap)  # type: ignore[arg-type]
    text = console.export_text()
    assert "A (champion)" in text and "conversion (CI)" in text and "%" in text
    assert "B vs A: effect +" in text and "sequential" in text and "fixed-horizon" in text
    assert "sample-ratio check: units [300, 300]" in text and "decision: winner → B" in text
