"""What the CLI prints: whole lines when piped, honest wording for regressors and for the gate's direction."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from modeldeck.cli import build_parser
from modeldeck.cli.common import Context
from modeldeck.cli.models import _parity_line, cmd_models_diff
from modeldeck.compare import Diff


def test_a_regressor_parity_line_has_no_label_agreement() -> None:
    parity = {"rows": 90, "label_agreement": 1.0, "max_abs_diff": 2e-6}
    assert _parity_line("regression", parity) == "90 rows, max |diff| 2e-06"
    assert _parity_line("classification", parity) == "90 rows, labels 100%, max |diff| 2e-06"


def _context(argv: list[str]) -> Context:
    return Context(build_parser().parse_args(argv), lambda service: SimpleNamespace(), "bucket")


def test_piped_tables_are_not_cut_at_80_columns(capsys: pytest.CaptureFixture[str]) -> None:
    from rich.table import Table

    # Given output that is not a terminal (pytest captures stdout)
    ctx = _context(["status"])
    table = Table("model", "description")
    table.add_row("breast-cancer-with-a-long-name", "x" * 150)
    # When a wide table is printed
    ctx.out.print(table)
    # Then nothing is elided
    out = capsys.readouterr().out
    assert "breast-cancer-with-a-long-name" in out and "x" * 150 in out and "…" not in out


def test_the_gate_line_gives_the_metric_change_and_its_direction(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given v2 scoring 0.0007 lower on the primary metric (higher is better)
    result = Diff("m", 1, 2, 100, 0.99, {"roc_auc": 0.9907}, {"roc_auc": 0.9900}, "roc_auc", 0.01)
    monkeypatch.setattr("modeldeck.compare.diff", lambda *a: result)
    # When models diff prints the gate
    cmd_models_diff(_context(["models", "diff", "m", "1", "2"]))
    out = capsys.readouterr().out
    # Then the change and the word agree in sign
    assert "roc_auc -0.0007: worse by 0.0007" in out and "+0.0007" not in out.split("gate:")[1]


def test_predict_refuses_an_unsupported_output_before_loading_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from modeldeck.batch import BatchError
    from modeldeck.cli.serve import cmd_predict

    source = tmp_path / "in.csv"
    source.write_text("x\n1\n")
    # Given a context whose cloud would fail on first use
    ctx = _context(["predict", "m", "-i", str(source), "-o", str(tmp_path / "y.txt")])
    # When the output format is unsupported, Then that is the error, and no progress bar started
    with pytest.raises(BatchError, match=r"y.txt: unsupported output format .txt; use .csv, .parquet or .jsonl"):
        cmd_predict(ctx)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("champion", "expected"), [(1, 1), (None, 3)])
def test_a_command_without_a_version_takes_the_champion_else_the_latest(champion: int | None, expected: int) -> None:
    from modeldeck.cli.common import default_version

    # Given versions 1..3, with v1 as champion or no champion yet
    ctx = SimpleNamespace(registry=SimpleNamespace(get_champion=lambda model: champion, latest=lambda model: 3))
    # Then `models show` and `predict` (which share this rule) take the champion, else the latest
    assert default_version(ctx, "m", None) == expected  # type: ignore[arg-type]
    assert default_version(ctx, "m", 2) == 2  # type: ignore[arg-type]


def test_rules_stay_100_columns_wide_when_tables_may_be_wider(capsys: pytest.CaptureFixture[str]) -> None:
    from modeldeck.cli.common import rule

    ctx = _context(["status"])
    rule(ctx.out, "stage 1/8 · train")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "stage 1/8 · train" in lines[0] and len(lines[0]) <= 100
