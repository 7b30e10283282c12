"""`modeldeck drift check|report` on moto: the verdict, and a self-contained HTML report."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from modeldeck import drift
from modeldeck.cli import Context, build_parser
from modeldeck.cli_drift import cmd_check, cmd_report
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
    assert cmd_check(ctx) == 0
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
