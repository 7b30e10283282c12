"""The experiment report: one self-contained HTML file in the drift report's style (its CSS and helpers).

``render_report(snapshots)`` takes an experiment's stored snapshots (``experiment_analysis.snapshots``,
oldest first) and draws: the decision, the per-variant table of the latest snapshot, the SRM check, the
metric per variant with its interval over time, and each challenger's effect with its always-valid
confidence sequence over time (the band that may be read at any time without inflating false winners).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from modeldeck.drift_report import CSS, SERIES_COLORS, ChartFrame, _e, _num, _pvalue
from modeldeck.experiment_analysis import format_metric

Band = tuple[str, Sequence[float | None], Sequence[float | None], Sequence[float | None], str]


def _axis(lo: float, hi: float) -> tuple[float, float]:
    """Round axis bounds around [lo, hi] (five ticks)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        lo, hi = (lo - 1, hi + 1) if math.isfinite(lo) else (0.0, 1.0)
    step = 10 ** math.floor(math.log10((hi - lo) / 4))
    step = next(m * step for m in (1, 2, 2.5, 5, 10) if m * step * 4 >= hi - lo)
    return math.floor(lo / step) * step, math.ceil(hi / step) * step


def interval_chart(
    title: str,
    x_labels: Sequence[str],
    bands: Sequence[Band],
    *,
    reference: float | None = None,
    y_label: str = "value",
    width: int = 1120,
    height: int = 300,
) -> str:
    """Lines with shaded intervals over time (``(name, values, lows, highs, color)`` per series), and an
    optional dashed reference line (0 for an effect), as an inline SVG string."""
    finite = [v for _, vs, los, his, _ in bands for v in (*vs, *los, *his) if v is not None and math.isfinite(v)] + (
        [reference] if reference is not None else []
    )
    y_lo, y_hi = _axis(min(finite, default=0.0), max(finite, default=1.0))
    frame = ChartFrame(title, x_labels, y_lo, y_hi, left=64, width=width, height=height)
    if reference is not None:
        frame.hline(reference, "#555")
    for _name, vs, los, his, color in bands:
        idx = [i for i in range(frame.n) if los[i] is not None and his[i] is not None]
        if idx:
            upper = [f"{frame.px(i):.1f},{frame.py(float(his[i] or 0)):.1f}" for i in idx]
            lower = [f"{frame.px(i):.1f},{frame.py(float(los[i] or 0)):.1f}" for i in reversed(idx)]
            frame.parts.append(f'<polygon points="{" ".join(upper + lower)}" fill="{color}" fill-opacity="0.18"/>')
        frame.line(vs, color)
    return frame.svg(y_label, "snapshot (UTC)", [(name, color) for name, _, _, _, color in bands])


def _variant_rows(snap: Mapping[str, Any], metric: str) -> str:
    rows = []
    for v in snap["variants"]:
        value, low, high = (format_metric(v["metric"][k], metric) for k in ("value", "ci_low", "ci_high"))
        rows.append(
            f"<tr><td>{_e(v['name'])}{' (champion)' if v['champion'] else ''}</td><td>v{v['version']}</td>"
            f"<td>{v['weight']:.0%}</td><td>{v['units']:,}</td><td>{v['requests']:,}</td><td>{v['outcomes']:,}</td>"
            f"<td>{value}</td><td>[{low}, {high}]</td>"
            "</tr>"
        )
    return "".join(rows)


def render_report(snapshots: Sequence[Mapping[str, Any]], generated: datetime | None = None) -> str:
    """The whole report as one HTML string (``snapshots`` oldest first, at least one)."""
    generated = generated or datetime.now(UTC)
    last = snapshots[-1]
    exp, decision, srm = last["experiment"], last["decision"], last["srm"]
    metric = str(exp["metric"])
    outcome = decision["outcome"]
    css = "ok" if outcome == "winner" else "alarm" if outcome == "srm" else ""
    winner = f" → {_e(decision['winner'])}" if decision.get("winner") else ""
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Experiment report: {_e(exp['model'])} {_e(exp['id'])}</title><style>{CSS}</style></head><body>",
        f"<h1>Experiment report: {_e(exp['model'])}</h1>",
        f"<p class='muted'>Experiment {_e(exp['id'])}, started {_e(exp['started_at'])}; latest snapshot "
        f"{_e(last['at'])} ({len(snapshots)} in all). Metric: {_e(metric)} per unit, alpha {_num(exp['alpha'])}, "
        f"MDE {_num(exp.get('mde'))}, power {_num(exp.get('power'))}: {exp.get('min_units') or 0:,} units per "
        f"variant planned, at most {_num(exp.get('max_days'))} days. Generated {generated:%Y-%m-%d %H:%M} UTC.</p>",
        f"<p>Decision: <span class='{css}'>{_e(outcome)}{winner}</span> — {_e(decision['reason'])}</p>",
        "<h2>Variants</h2><table><tr><th>variant</th><th>version</th><th>weight</th><th>units</th>"
        f"<th>requests</th><th>outcomes</th><th>{_e(metric)}</th><th>interval</th></tr>",
        _variant_rows(last, metric),
        "</table>",
        f"<p class='muted'>Unassigned requests (no unit key, served by the champion, judged by nothing): "
        f"{last['unassigned']['requests']:,}. Sample-ratio check: units {list(srm['observed'])} against the "
        f"weights, chi-square {_num(srm['chi2'])}, p {_e(_pvalue(srm['p_value']))}"
        f"{' — <span class=alarm>MISMATCH</span>' if srm['mismatch'] else ' (ok)'}.</p>",
    ]
    if last.get("comparisons"):
        out.append(
            "<h2>Comparisons with the champion</h2><table><tr><th>challenger</th><th>effect</th>"
            "<th>always-valid interval</th><th>sequential p</th><th>fixed-horizon interval</th>"
            "<th>fixed-horizon p</th></tr>"
        )
        for c in last["comparisons"]:
            out.append(
                f"<tr><td>{_e(c['treatment'])} vs {_e(c['control'])}</td><td>{_num(c['effect'])}</td>"
                f"<td>[{_num(c['ci_low'])}, {_num(c['ci_high'])}]</td><td>{_e(_pvalue(c['p_value']))}</td>"
                f"<td>[{_num(c['fixed_ci_low'])}, {_num(c['fixed_ci_high'])}]</td>"
                f"<td>{_e(_pvalue(c['fixed_p_value']))}</td></tr>"
            )
        out.append("</table>")
    labels = [str(s["at"])[5:16].replace("T", " ") for s in snapshots]
    names = [v["name"] for v in last["variants"]]

    def series(name: str, key: str) -> list[float | None]:
        found = [next((v for v in s["variants"] if v["name"] == name), None) for s in snapshots]
        return [None if v is None else v["metric"][key] for v in found]

    bands: list[Band] = [
        (name, series(name, "value"), series(name, "ci_low"), series(name, "ci_high"), SERIES_COLORS[i % 4])
        for i, name in enumerate(names)
    ]
    out.append("<h2>Over time</h2>")
    out.append(
        interval_chart(f"{exp['model']}: {metric} per variant, with its interval", labels, bands, y_label=metric)
    )
    effects: list[Band] = []
    for i, name in enumerate(names[1:], start=1):
        found = [next((c for c in s.get("comparisons") or [] if c["treatment"] == name), None) for s in snapshots]
        effects.append(
            (
                f"{name} − {exp['champion']}",
                [None if c is None else c["effect"] for c in found],
                [None if c is None else c["ci_low"] for c in found],
                [None if c is None else c["ci_high"] for c in found],
                SERIES_COLORS[i % 4],
            )
        )
    out.append(
        interval_chart(
            f"{exp['model']}: effect against the champion, always-valid confidence sequence",
            labels,
            effects,
            reference=0.0,
            y_label=f"{metric} difference",
        )
    )
    out.append(
        f"<p class='muted'>A challenger wins once its confidence sequence leaves zero (always-valid p below alpha "
        f"over the number of challengers); the sequence may be read at every snapshot. Reproduce: <code>modeldeck "
        f"experiment report {_e(exp['model'])} --id {_e(exp['id'])} --out report.html</code></p></body></html>"
    )
    return "\n".join(out)
