"""`modeldeck drift check|report` on moto: the verdict, and a self-contained HTML report."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modeldeck import drift
from modeldeck.cli import build_parser
from modeldeck.cli.common import CliError, Context
from modeldeck.cli.drift import EXIT_ALARM, EXIT_NO_VERDICT, EXIT_OK, cmd_check, cmd_report
from modeldeck.registry import BASELINE, Registry
from tests.integration.test_drift_job import END, MODEL, make_requests, put_firehose, register


def context(cloud: Any, argv: list[str]) -> Context:
    return Context(build_parser().parse_args(argv), cloud.client, cloud.bucket)


def seed_windows(cloud: Any, registry: Registry, trained: Any) -> int:
    """Five hourly windows: the last two with worst_radius drifting upwards."""
    v1 = register(registry, trained, "a")
    baseline = registry.get_json(MODEL, v1, BASELINE)
    rng = np.random.default_rng(11)
    s3, cw, sns = cloud.client("s3"), cloud.client("cloudwatch"), cloud.client("sns")
    for hours_back, scale in ((4, 1.0), (3, 1.0), (2, 1.0), (1, 1.1), (0, 1.3)):
        records = make_requests(baseline, v1, 80, 5, rng, scale={"worst_radius": scale}, id_prefix=f"h{hours_back}-")
        shift = timedelta(hours=hours_back)
        for r in records:
            ts = drift.parse_iso(r["ts"].split(".")[0] + "Z") - shift
            r["ts"] = ts.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        put_firehose(s3, cloud.bucket, "capture", records, f"b{hours_back}")
        if hours_back:
            end = END - shift
            drift.run_drift(s3, cw, sns, bucket=cloud.bucket, model=MODEL, start=end - timedelta(hours=1), end=end)
    return v1


def test_check_prints_the_verdict_as_json(cloud: Any, registry: Registry, trained_demo: Any, capsys: Any) -> None:
    seed_windows(cloud, registry, trained_demo)
    ctx = context(cloud, ["--json", "drift", "check", MODEL, "--window", "1h", "--end", "2026-11-23T08:00:00Z"])
    assert cmd_check(ctx) == EXIT_ALARM  # a pipeline can gate on the exit status
    data = json.loads(capsys.readouterr().out)
    assert data["rows"] == 400 and data["aggregate"]["alarm"] is True
    assert data["versions"]["1"]["drifted_features"] == ["worst_radius"]
    # check without --publish neither publishes nor stores
    assert "published" not in data
    assert len(drift.stored_results(cloud.client("s3"), cloud.bucket, MODEL)) == 4  # the seeded windows only


def test_report_is_one_self_contained_html_file(
    cloud: Any, registry: Registry, trained_demo: Any, tmp_path: Path
) -> None:
    # Given four judged windows and a drifted current one
    seed_windows(cloud, registry, trained_demo)
    out = tmp_path / "report.html"
    # When the report is written
    ctx = context(
        cloud, ["drift", "report", MODEL, "--window", "1h", "--end", "2026-11-23T08:00:00Z", "--out", str(out)]
    )
    assert cmd_report(ctx) == 0
    page = out.read_text()
    # Then it needs nothing from the network: no scripts, stylesheets, fonts or images by URL
    assert not re.search(r"<script|<link|@import|url\(|src=", page)
    assert set(re.findall(r"https?://[^\"' )]+", page)) <= {"http://www.w3.org/2000/svg"}
    # and it has the summary, one histogram per feature (worst drifted first), predictions and history
    assert "<h2>Summary</h2>" in page and "ALARM" in page
    charts = re.findall(r'aria-label="([^"]+)"', page)
    assert charts[0].startswith("worst_radius: PSI") and "(drifted)" in charts[0]
    assert sum(1 for c in charts if ": PSI" in c and not c.startswith("Predicted")) == 10
    assert any(c.startswith("Predicted classes") for c in charts)
    assert any("drift over the last 5 judged windows" in c for c in charts)
    assert "modeldeck drift report breast-cancer --window 1h --end 2026-11-23T08:00:00Z" in page


def test_a_window_the_job_already_judged_says_it_is_stored_and_when(
    cloud: Any, registry: Registry, trained_demo: Any, capsys: Any
) -> None:
    # Given a window the drift job judged (and stored), within the thresholds
    seed_windows(cloud, registry, trained_demo)
    # When a plain check asks for it
    ctx = context(cloud, ["--json", "drift", "check", MODEL, "--window", "1h", "--end", "2026-11-23T05:00:00Z"])
    code = cmd_check(ctx)
    data = json.loads(capsys.readouterr().out)
    # Then the stored verdict comes back, saying so and from when, with the exit status of its verdict
    assert code == EXIT_OK and data["aggregate"]["status"] == "ok"
    assert data["stored_at"] and data["notes"] == [
        f"stored result: the drift job judged this window at {data['stored_at']}"
    ]


def test_traffic_after_the_latest_complete_window_is_pointed_at(
    cloud: Any, registry: Registry, trained_demo: Any, capsys: Any
) -> None:
    # Given traffic captured just now, in the window still in progress
    v1 = register(registry, trained_demo, "a")
    baseline = registry.get_json(MODEL, v1, BASELINE)
    records = make_requests(baseline, v1, 30, 5, np.random.default_rng(3), id_prefix="now-")
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    for r in records:
        r["ts"] = now
    put_firehose(cloud.client("s3"), cloud.bucket, "capture", records, "now")
    # When `drift check --window 1h` runs without --end (the latest complete hour, which has no data)
    code = cmd_check(context(cloud, ["drift", "check", MODEL, "--window", "1h"]))
    out = capsys.readouterr().out
    # Then there is no verdict, and the output says which window was judged and where the 150 rows are
    assert code == EXIT_NO_VERDICT
    assert "0 rows" in out and "insufficient data" in out
    assert "150 rows arrived after this window" in out and "--end" in out


def test_publishing_a_window_that_has_not_ended_is_refused(cloud: Any) -> None:
    future = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:00:00Z")
    ctx = context(cloud, ["drift", "check", MODEL, "--window", "1h", "--end", future, "--publish"])
    with pytest.raises(CliError, match="in the future: the window is not complete"):
        cmd_check(ctx)


def test_the_report_escapes_tiny_p_values_and_counts_one_window_in_the_singular(
    cloud: Any, registry: Registry, trained_demo: Any
) -> None:
    from modeldeck.drift_report import render_report

    # Given a judged window whose worst feature has a p-value below what floats print
    seed_windows(cloud, registry, trained_demo)
    s3 = cloud.client("s3")
    result = drift.stored_results(s3, cloud.bucket, MODEL)[-1]
    version = next(iter(result["versions"].values()))
    next(iter(version["features"].values()))["p_value"] = 1e-300
    # When the report is rendered with that one window as its history
    page = render_report(result, [result])
    # Then "< 1e-16" is HTML-escaped text, and the history is "1 judged window"
    assert "&lt; 1e-16" in page and "p < 1e-16" not in page and "<td>< 1e-16" not in page
    assert "last 1 judged window" in page and "1 judged windows" not in page
