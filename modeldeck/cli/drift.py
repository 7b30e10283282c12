"""CLI commands for drift: ``drift check`` and ``drift report``.

Both judge one window of captured traffic against the baseline of the version that served it
(``modeldeck.drift``). ``check`` prints the verdict (with ``--publish`` it runs the deployed drift state
machine on the window: metrics, alarm message, stored result); ``report`` writes one self-contained HTML file.

``check`` exits 0 when the window was judged and is within the thresholds, 3 when it is in ALARM and 4 when it
had too little data for a verdict, so it can gate a pipeline (1 and 2 stay errors and usage errors).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldeck import drift
from modeldeck.stats import DriftThresholds

if TYPE_CHECKING:
    from modeldeck.cli.common import Context


def add_commands(sub: Any) -> None:
    parser = sub.add_parser("drift", help="judge captured traffic against the baseline; HTML reports")
    dsub = parser.add_subparsers(dest="drift_command", required=True, parser_class=type(parser))
    check = dsub.add_parser("check", help="drift of one window, per version and for the model")
    report = dsub.add_parser("report", help="a self-contained HTML drift report")
    for p in (check, report):
        p.add_argument("model")
        p.add_argument(
            "--window",
            type=_window,
            default=drift.parse_window("1h"),
            help="window length: 30m, 1h, 24h, 1d (default 1h)",
        )
        p.add_argument(
            "--end", type=_end, default=None, help="window end, ISO-8601 UTC (default: the latest complete window)"
        )
        p.add_argument(
            "--min-rows",
            type=int,
            default=DriftThresholds().min_rows,
            help=f"below this many rows a window is not judged (default {DriftThresholds().min_rows})",
        )
    check.add_argument(
        "--publish",
        action="store_true",
        help="run the deployed drift job on the window: metrics, alarm message, stored result (idempotent)",
    )
    check.set_defaults(func=cmd_check)
    report.add_argument("--out", type=Path, required=True, help="the HTML file to write")
    report.add_argument("--history", type=int, default=48, help="how many stored windows to plot (default 48)")
    report.set_defaults(func=cmd_report)


def _window(text: str) -> Any:
    try:
        return drift.parse_window(text)
    except drift.DriftError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _end(text: str) -> datetime:
    try:
        return drift.parse_iso(text)
    except drift.DriftError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


EXIT_OK, EXIT_ALARM, EXIT_NO_VERDICT = 0, 3, 4


def _bounds(ctx: Context) -> tuple[datetime, datetime]:
    if ctx.args.end is not None:
        return ctx.args.end - ctx.args.window, ctx.args.end
    return drift.window_ending(datetime.now(UTC), ctx.args.window)


def _evaluate(ctx: Context, start: datetime, end: datetime) -> dict[str, Any]:
    """The stored result of the window when the drift job already judged it (marked ``stored_at``), else a
    fresh evaluation that stores nothing."""
    s3 = ctx.client("s3")
    key = drift.marker_key(ctx.args.model, start, end)
    stored = drift.load_result(s3, ctx.registry.bucket, key)
    if stored is not None:
        modified = s3.head_object(Bucket=ctx.registry.bucket, Key=key)["LastModified"]
        return {**stored, "stored_at": drift.iso(modified)}
    return drift.evaluate_window(
        s3, ctx.registry.bucket, ctx.args.model, start, end, DriftThresholds(min_rows=ctx.args.min_rows)
    )


def _recent_rows(ctx: Context, since: datetime, now: datetime) -> int:
    """Captured rows that arrived after the judged window (the window still in progress)."""
    from modeldeck.capture import read_records

    records = read_records(ctx.client("s3"), ctx.registry.bucket, "capture", ctx.args.model, since, now)
    return sum(int(r.get("rows", 0)) for r in records if not r.get("shadow"))


def _notes(ctx: Context, result: dict[str, Any], end: datetime) -> list[str]:
    """What a user needs to read the verdict right: a stored result, or data that lies after the window."""
    notes = []
    if result.get("stored_at") and not ctx.args.publish:
        notes.append(f"stored result: the drift job judged this window at {result['stored_at']}")
    if result["aggregate"]["status"] != "ok" and ctx.args.end is None:
        now = datetime.now(UTC)
        recent = _recent_rows(ctx, end, now)
        if recent:
            next_end = end + min(ctx.args.window, drift.parse_window("1h"))
            notes.append(
                f"{recent:,} rows arrived after this window (the latest complete one); they are judged in the "
                f"window ending {drift.iso(next_end)}, or now with --end {drift.iso(now)}"
            )
    return notes


DRIFT_STAGES = {"Plan": "plan", "Profile": "profile partitions", "Reduce": "merge, judge, publish"}


def _run_job(ctx: Context, start: datetime, end: datetime) -> dict[str, Any]:
    """Run the deployed drift state machine on one window (its own thresholds and topic), then read what it
    stored."""
    import json
    import uuid

    from modeldeck.cli.common import execution_failure, follow_execution, stage_progress
    from modeldeck.errors import ModeldeckError

    payload = {"model": ctx.args.model, "window": drift.format_window(end - start), "end": drift.iso(end)}
    sfn = ctx.client("stepfunctions")
    execution = sfn.start_execution(
        stateMachineArn=ctx.deployment.output("DriftStateMachineArn"),
        name=f"drift-{ctx.args.model}-{uuid.uuid4().hex[:12]}"[:80],
        input=json.dumps(payload),
    )["executionArn"]
    with stage_progress(ctx, list(DRIFT_STAGES.values()), f"drift {ctx.args.model}") as progress:
        described = follow_execution(sfn, execution, progress, DRIFT_STAGES)
    if described["status"] != "SUCCEEDED":
        raise ModeldeckError(f"the drift job failed: {execution_failure(sfn, execution, described)}")
    body = json.loads(described.get("output") or "{}")
    stored = drift.load_result(ctx.client("s3"), ctx.registry.bucket, drift.marker_key(ctx.args.model, start, end))
    if stored is None:
        raise ModeldeckError(f"the drift job stored no result for {payload['window']} ending {payload['end']}")
    stored["replayed"] = bool(body.get("results", [{}])[0].get("replayed"))
    return stored


def cmd_check(ctx: Context) -> int:
    from rich.table import Table

    from modeldeck.cli.common import CliError

    start, end = _bounds(ctx)
    if ctx.args.publish and end > datetime.now(UTC):
        raise CliError(
            f"--end {drift.iso(end)} is in the future: the window is not complete, and a published result is "
            "stored for good; publish a window that has ended"
        )
    result = _run_job(ctx, start, end) if ctx.args.publish else _evaluate(ctx, start, end)
    result["notes"] = _notes(ctx, result, end)

    def render() -> None:
        agg, w = result["aggregate"], result["window"]
        state = (
            "[bold red]ALARM[/]"
            if agg["alarm"]
            else "[green]OK[/]"
            if agg["status"] == "ok"
            else "[yellow]insufficient data[/] (no alarm)"
        )
        ctx.out.print(f"{result['model']}: {w['start']} → {w['end']} ({w['length']}), {result['rows']:,} rows: {state}")
        table = Table(
            "version",
            "rows",
            "status",
            "drifted",
            "max PSI (feature)",
            "prediction drift",
            "accuracy",
            title_justify="left",
        )
        for version, r in result["versions"].items():
            if r.get("status") != "ok":
                table.add_row(f"v{version}", f"{r['rows']:,}", r["status"], "", "", "", "")
                continue
            q = r.get("quality") or {}
            acc = q.get("metrics", {}).get("accuracy") if q.get("status") == "ok" else None
            table.add_row(
                f"v{version}",
                f"{r['rows']:,}",
                "[red]alarm[/]" if r["alarm"] else "ok",
                ", ".join(r["drifted_features"]) or "none",
                f"{r['max_psi']:.3f} ({r['max_psi_feature']})",
                f"{r['prediction_drift']:.3f}",
                "" if acc is None else f"{acc:.3f}",
            )
        ctx.out.print(table)
        for b in agg["breaches"]:
            ctx.out.print(f"  [red]{b['metric']} = {b['value']:.4g} ≥ {b['threshold']:.4g}[/]")
        if agg["alarm"]:
            ctx.out.print(f"report: {drift.report_command(result)}")
        if result.get("published"):
            verb = (
                "already judged; nothing published again"
                if result.get("replayed")
                else (f"published {result['published']['metrics']} datapoints to namespace {drift.NAMESPACE}")
            )
            ctx.out.print(f"[dim]{verb}[/]")
        for note in result["notes"]:
            ctx.out.print(f"[dim]note: {note}[/]")

    ctx.emit(result, render)
    # A non-zero status always comes with one line on stderr, like every other non-zero exit.
    if result["aggregate"]["alarm"]:
        sys.stderr.write(f"modeldeck: drift check: {result['model']} is in ALARM (exit {EXIT_ALARM})\n")
        return EXIT_ALARM
    if result["aggregate"]["status"] != "ok":
        sys.stderr.write(
            f"modeldeck: drift check: no verdict for {result['model']}: too little data (exit {EXIT_NO_VERDICT})\n"
        )
        return EXIT_NO_VERDICT
    return EXIT_OK


def cmd_report(ctx: Context) -> int:
    from modeldeck.drift_report import render_report

    start, end = _bounds(ctx)
    result = _evaluate(ctx, start, end)
    history = drift.stored_results(ctx.client("s3"), ctx.registry.bucket, ctx.args.model, ctx.args.history)
    if not any(h["window"] == result["window"] for h in history):
        history = sorted([*history, result], key=lambda h: h["window"]["end"])
    ctx.args.out.write_text(render_report(result, history), encoding="utf-8")
    data = {
        "out": str(ctx.args.out),
        "model": result["model"],
        "window": result["window"],
        "alarm": result["aggregate"]["alarm"],
        "history_windows": len(history),
    }
    windows = f"{len(history)} window{'' if len(history) == 1 else 's'}"
    ctx.emit(data, lambda: ctx.out.print(f"wrote {ctx.args.out} ({result['rows']:,} rows, {windows} of history)"))
    return 0
