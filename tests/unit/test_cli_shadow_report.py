"""The shadow report reads like the rest of the CLI's output: agreement as a percentage, latencies in ms,
request pairs; never a Python dict of raw floats (issue 13.9)."""

from __future__ import annotations

from types import SimpleNamespace

from rich.console import Console

from modeldeck.cli.release import render_outcome, render_timeline

REPORT = {"pairs": 3, "rows": 3, "agreement": 2 / 3, "live_p50_ms": 1.23456789, "shadow_p50_ms": 2.5}
RECORD = {
    "outcome": "shadow-complete",
    "shadow_report": REPORT,
    "timeline": [{"at": "2026-11-28T10:00:00.000000Z", "event": "shadow-stopped", **REPORT}],
}


def _printed(render: object) -> str:
    console = Console(record=True, width=200, highlight=False)
    render(SimpleNamespace(out=console))  # type: ignore[operator]
    return console.export_text()


def test_a_finished_shadow_release_prints_its_report_formatted() -> None:
    # Given a release record with a shadow report
    # When the outcome and the timeline (as `status` shows it) are printed
    outcome = _printed(lambda ctx: render_outcome(ctx, "m", 2, {"status": "SUCCEEDED", "record": RECORD}))
    timeline = _printed(lambda ctx: render_timeline(ctx, RECORD))
    # Then both say it in words and units, with no dict and no raw float
    for text in (outcome, timeline):
        assert "66.7% of 3 rows (3 mirrored request pairs)" in text
        assert "p50 latency 2.5 ms vs live 1.2 ms" in text
        assert "{" not in text and "0.666" not in text and "1.2345" not in text


def test_a_shadow_report_without_pairs_says_n_a() -> None:
    # Given a shadow run during which no request was mirrored
    empty = {"pairs": 0, "rows": 0, "agreement": None, "live_p50_ms": None, "shadow_p50_ms": None}
    # When its outcome is printed
    text = _printed(
        lambda ctx: render_outcome(
            ctx, "m", 2, {"status": "SUCCEEDED", "record": {"outcome": "shadow-complete", "shadow_report": empty}}
        )
    )
    # Then nothing measured reads n/a, not None
    assert "agreed with live on n/a of 0 rows" in text and "None" not in text
