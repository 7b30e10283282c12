"""The drift report: one self-contained HTML file (inline CSS and SVG, no scripts, fonts or network).

``render_report(result, history)`` takes a window result of ``modeldeck.drift`` and the stored results of
recent windows, and draws: a summary table, per-feature histograms (baseline vs current, worst drifted
first), the prediction distribution, and the metric history.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

BASE_COLOR = "#6b7a8f"
CURRENT_COLOR = "#e07b39"
SERIES_COLORS = ("#d1495b", "#00798c", "#edae49", "#30638e")
FONT = "font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _num(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.3g}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _pvalue(p: float | None) -> str:
    return "n/a" if p is None else ("< 1e-16" if p < 1e-16 else f"{p:.2g}")


def _nice_max(value: float) -> float:
    """A round axis maximum (1, 2, 2.5 or 5 times a power of ten) at or above ``value``."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= value)


def _tick(value: float, top: float) -> str:
    return f"{value:.0%}" if round(top * 100 / 4, 6).is_integer() else f"{value:.1%}"


def bar_chart(
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float], str]],
    y_label: str = "share of rows",
    x_label: str = "",
    width: int = 560,
    height: int = 280,
) -> str:
    """Grouped bars with labelled axes, gridlines and a legend, as an inline SVG string."""
    left, right, top = 56, 12, 34
    rotate = len(labels) > 6 or max((len(s) for s in labels), default=0) > 10
    bottom = 86 if rotate else 52
    plot_w, plot_h = width - left - right, height - top - bottom
    y_max = _nice_max(max((v for _, values, _ in series for v in values), default=0.0) * 1.05)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}" style="{FONT}">',
        f'<text x="{left}" y="18" font-size="13" font-weight="600">{_e(title)}</text>',
    ]
    for i in range(5):
        v = y_max * i / 4
        y = top + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e6ea"/>')
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
            f"{_e(_tick(v, y_max) if y_label.startswith('share') else _num(v))}</text>"
        )
    group_w = plot_w / max(len(labels), 1)
    bar_w = group_w * 0.8 / max(len(series), 1)
    for gi, label in enumerate(labels):
        x0 = left + gi * group_w + group_w * 0.1
        for si, (name, values, color) in enumerate(series):
            v = values[gi] if gi < len(values) else 0.0
            h = plot_h * v / y_max if y_max else 0
            parts.append(
                f'<rect x="{x0 + si * bar_w:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w - 1:.1f}" '
                f'height="{h:.1f}" fill="{color}"><title>{_e(name)} {_e(label)}: {v:.1%}</title></rect>'
            )
        cx = left + gi * group_w + group_w / 2
        ly = top + plot_h + 14
        if rotate:
            parts.append(
                f'<text x="{cx:.1f}" y="{ly}" font-size="10" text-anchor="end" '
                f'transform="rotate(-35 {cx:.1f} {ly})">{_e(label)}</text>'
            )
        else:
            parts.append(f'<text x="{cx:.1f}" y="{ly}" font-size="10" text-anchor="middle">{_e(label)}</text>')
    parts.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="#555"/>')
    parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#555"/>')
    parts.append(
        f'<text x="14" y="{top + plot_h / 2:.1f}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + plot_h / 2:.1f})">{_e(y_label)}</text>'
    )
    if x_label:
        parts.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" font-size="11" '
            f'text-anchor="middle">{_e(x_label)}</text>'
        )
    lx = left + plot_w
    for name, _, color in reversed(series):
        text_w = 7 * len(name) + 22
        lx -= text_w
        parts.append(
            f'<rect x="{lx}" y="9" width="12" height="12" fill="{color}"/>'
            f'<text x="{lx + 16}" y="19" font-size="11">{_e(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


class ChartFrame:
    """The plotting area of a line chart over ``n`` points on the x axis, from ``y_lo`` to ``y_hi``: the grid,
    labels, axes and legend that every line chart of the reports shares (drift windows, experiment
    snapshots)."""

    def __init__(
        self, title: str, x_labels: Sequence[str], y_lo: float, y_hi: float, *, left: int, width: int, height: int
    ) -> None:
        self.left, self.top, self.width, self.height = left, 34, width, height
        self.plot_w, self.plot_h = width - left - 16, height - 34 - 70
        self.n, self.y_lo, self.y_hi = len(x_labels), y_lo, y_hi
        self.parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}" style="{FONT}">',
            f'<text x="{left}" y="18" font-size="13" font-weight="600">{_e(title)}</text>',
        ]
        right, bottom = left + self.plot_w, self.top + self.plot_h
        for i in range(5):
            v = y_lo + (y_hi - y_lo) * i / 4
            self.parts.append(
                f'<line x1="{left}" x2="{right}" y1="{self.py(v):.1f}" y2="{self.py(v):.1f}" stroke="#e3e6ea"/>'
                f'<text x="{left - 6}" y="{self.py(v) + 4:.1f}" font-size="10" text-anchor="end">{_num(v)}</text>'
            )
        step = max(1, self.n // 12)
        for i, label in enumerate(x_labels):
            if i % step == 0 or i == self.n - 1:
                self.parts.append(
                    f'<text x="{self.px(i):.1f}" y="{bottom + 14}" font-size="10" text-anchor="end" '
                    f'transform="rotate(-30 {self.px(i):.1f} {bottom + 14})">{_e(label)}</text>'
                )

    def px(self, i: int) -> float:
        return self.left + (self.plot_w * i / (self.n - 1) if self.n > 1 else self.plot_w / 2)

    def py(self, v: float) -> float:
        clamped = min(max(v, self.y_lo), self.y_hi)
        return self.top + self.plot_h - self.plot_h * (clamped - self.y_lo) / (self.y_hi - self.y_lo)

    def hline(self, value: float, color: str, label: str = "", label_at_end: bool = True) -> None:
        """A dashed horizontal line (a threshold, a reference), labelled at one end."""
        left, right, y = self.left, self.left + self.plot_w, self.py(value)
        self.parts.append(
            f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{color}" stroke-dasharray="5 4" stroke-width="1.2"/>'
        )
        if label:
            tx, anchor = (right - 4, "end") if label_at_end else (left + 4, "start")
            self.parts.append(
                f'<text x="{tx}" y="{y - 4:.1f}" font-size="10" text-anchor="{anchor}" fill="{color}">{label}</text>'
            )

    def line(self, values: Sequence[float | None], color: str) -> None:
        """A series: its line and a dot per point (a missing value leaves a gap in neither)."""
        points = [(self.px(i), self.py(v)) for i, v in enumerate(values) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            self.parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        self.parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in points]

    def svg(self, y_label: str, x_label: str, legend: Sequence[tuple[str, str]]) -> str:
        """The axes, their labels and the legend (``(name, color)``), closing the SVG."""
        left, top, plot_w, plot_h = self.left, self.top, self.plot_w, self.plot_h
        parts = [
            *self.parts,
            f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="#555"/>'
            f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#555"/>'
            f'<text x="14" y="{top + plot_h / 2:.1f}" font-size="11" text-anchor="middle" '
            f'transform="rotate(-90 14 {top + plot_h / 2:.1f})">{_e(y_label)}</text>'
            f'<text x="{left + plot_w / 2:.1f}" y="{self.height - 4}" font-size="11" text-anchor="middle">'
            f"{_e(x_label)}</text>",
        ]
        lx = left + plot_w
        for name, color in reversed(legend):
            lx -= 7 * len(name) + 26
            parts.append(
                f'<rect x="{lx}" y="9" width="12" height="12" fill="{color}"/>'
                f'<text x="{lx + 16}" y="19" font-size="11">{_e(name)}</text>'
            )
        parts.append("</svg>")
        return "".join(parts)


def line_chart(
    title: str,
    x_labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None], str]],
    thresholds: Sequence[tuple[str, float, str]] = (),
    y_label: str = "value",
    width: int = 1120,
    height: int = 300,
) -> str:
    """Lines over windows with dashed threshold lines and a legend, as an inline SVG string."""
    values = [v for _, vs, _ in series for v in vs if v is not None] + [t for _, t, _ in thresholds]
    frame = ChartFrame(
        title, x_labels, 0.0, _nice_max(max(values, default=1.0) * 1.1), left=56, width=width, height=height
    )
    for i, (name, value, color) in enumerate(thresholds):
        # Alternate label sides so thresholds close together stay readable.
        frame.hline(value, color, f"{_e(name)} {_num(value)}", label_at_end=i % 2 == 0)
    for _name, vs, color in series:
        frame.line(vs, color)
    return frame.svg(y_label, "window end (UTC)", [(name, color) for name, _, color in series])


def _shares(counts: Sequence[float]) -> list[float]:
    total = sum(counts)
    return [c / total if total else 0.0 for c in counts]


def bin_labels(edges: Sequence[float]) -> list[str]:
    if not edges:
        return ["all"]
    labels = [f"≤ {_num(edges[0])}"]
    labels += [f"{_num(a)}–{_num(b)}" for a, b in itertools.pairwise(edges)]
    labels.append(f"> {_num(edges[-1])}")
    return labels


def feature_chart(name: str, f: Mapping[str, Any]) -> str:
    if f["kind"] == "numeric":
        labels, x_label = bin_labels(f["edges"]), "baseline decile bins"
    else:
        labels = [c or "(missing)" for c in f["categories"]]
        x_label = "category"
    keep = [
        i
        for i, (b, c) in enumerate(zip(f["baseline_counts"], f["current_counts"], strict=True))
        if b or c or f["kind"] == "numeric"
    ]
    base, cur = _shares(f["baseline_counts"]), _shares(f["current_counts"])
    return bar_chart(
        f"{name}: PSI {f['psi']:.3f}" + (" (drifted)" if f.get("drifted") else ""),
        [labels[i] for i in keep],
        [("baseline", [base[i] for i in keep], BASE_COLOR), ("current window", [cur[i] for i in keep], CURRENT_COLOR)],
        x_label=x_label,
    )


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1160px;color:#1f2933}
h1{font-size:22px;margin-bottom:4px}
h2{font-size:17px;margin-top:28px;border-bottom:1px solid #d9dde2;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #d9dde2;padding:4px 8px;text-align:right}
th{background:#f3f5f7} td:first-child,th:first-child{text-align:left}
.alarm{color:#b42318;font-weight:600} .ok{color:#067647;font-weight:600} .muted{color:#667085;font-size:13px}
.grid{display:grid;grid-template-columns:repeat(2,570px);gap:10px} .card{border:1px solid #e3e6ea;padding:4px}
.stats{font-size:12px;color:#475467;margin:2px 6px 6px} code{background:#f3f5f7;padding:1px 4px}
"""


def _summary_rows(result: Mapping[str, Any]) -> str:
    rows = []
    for version, r in result["versions"].items():
        if r.get("status") != "ok":
            rows.append(
                f"<tr><td>v{_e(version)}</td><td>{r['rows']:,}</td><td colspan='5'>{_e(r['status'])}</td><td></td></tr>"
            )
            continue
        q = r.get("quality") or {}
        acc = q.get("metrics", {}).get("accuracy") if q.get("status") == "ok" else None
        state = "<span class='alarm'>ALARM</span>" if r["alarm"] else "<span class='ok'>OK</span>"
        rows.append(
            f"<tr><td>v{_e(version)}</td><td>{r['rows']:,}</td>"
            f"<td>{r['drifted_count']} of {len(r['features'])}</td><td>{r['drifted_share']:.0%}</td>"
            f"<td>{r['max_psi']:.3f} ({_e(r['max_psi_feature'])})</td><td>{r['prediction_drift']:.3f}</td>"
            f"<td>{'n/a' if acc is None else f'{acc:.3f}'}</td><td>{state}</td></tr>"
        )
    return "".join(rows)


def render_report(
    result: Mapping[str, Any], history: Sequence[Mapping[str, Any]] = (), generated: datetime | None = None
) -> str:
    """The whole report as one HTML string."""
    generated = generated or datetime.now(UTC)
    w, agg, t = result["window"], result["aggregate"], result["thresholds"]
    state = (
        "<span class='alarm'>ALARM</span>"
        if agg["alarm"]
        else "<span class='ok'>OK</span>"
        if agg["status"] == "ok"
        else "insufficient data"
    )
    why = "; ".join(f"{b['metric']} {_num(b['value'])} ≥ {_num(b['threshold'])}" for b in agg["breaches"])
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Drift report: {_e(result['model'])} {_e(w['end'])}</title><style>{CSS}</style></head><body>",
        f"<h1>Drift report: {_e(result['model'])}</h1>",
        f"<p class='muted'>Window {_e(w['start'])} → {_e(w['end'])} ({_e(w['length'])}), {result['rows']:,} rows "
        f"from {result.get('requests', 0):,} requests (shadow traffic excluded). Generated {generated:%Y-%m-%d %H:%M} "
        "UTC.</p>",
        f"<p>Model status: {state}{' — ' + _e(why) if why else ''}</p>",
        "<h2>Summary</h2><table><tr><th>version</th><th>rows</th><th>drifted features</th><th>drifted share</th>"
        "<th>max PSI (feature)</th><th>prediction drift</th><th>accuracy</th><th>state</th></tr>",
        _summary_rows(result),
        "</table>",
        f"<p class='muted'>A feature drifts when its p-value (KS for numeric, chi-square for categorical) is below "
        f"{_num(t['alpha'])}{' / n_features (Bonferroni)' if t['bonferroni'] else ''} with PSI ≥ "
        f"{_num(t['min_effect_psi'])}, or when its PSI ≥ {_num(t['psi'])}. The window alarms when any feature "
        f"drifted, the drifted share ≥ {_num(t['drifted_share'])}, or prediction PSI ≥ {_num(t['prediction'])}. "
        f"Windows under {t['min_rows']} rows are not judged.</p>",
    ]
    for version, r in result["versions"].items():
        if r.get("status") != "ok":
            continue
        out.append(
            f"<h2>Version {_e(version)}: features, worst first</h2><table><tr><th>feature</th><th>PSI</th>"
            "<th>test</th><th>p-value</th><th>baseline</th><th>current</th><th>drifted</th></tr>"
        )
        ranked = sorted(r["features"].items(), key=lambda kv: (not kv[1]["drifted"], -kv[1]["psi"]))
        for name, f in ranked:
            if f["kind"] == "numeric":
                base, cur = f"mean {_num(f['baseline_mean'])}", f"mean {_num(f['current_mean'])}"
            else:
                top = f["top_changes"][0] if f["top_changes"] else None
                base = f"{_e(top['category'] or '(missing)')} {top['baseline_share']:.0%}" if top else ""
                cur = f"{top['current_share']:.0%}" if top else ""
            mark = "<span class='alarm'>yes</span>" if f["drifted"] else "no"
            out.append(
                f"<tr><td>{_e(name)}</td><td>{f['psi']:.3f}</td><td>{f['test']}</td>"
                f"<td>{_e(_pvalue(f['p_value']))}</td><td>{base}</td><td>{cur}</td><td>{mark}</td></tr>"
            )
        out.append("</table><div class='grid'>")
        for name, f in ranked:
            extra = (
                f"baseline mean {_num(f['baseline_mean'])}, current {_num(f['current_mean'])}; missing "
                f"{f['baseline_missing_share']:.1%} → {f['missing_share']:.1%}"
                if f["kind"] == "numeric"
                else "unseen: " + (", ".join(f"{_e(k)} ({v})" for k, v in f["unseen"].items()) or "none")
            )
            pv = _pvalue(f["p_value"])
            out.append(
                f"<div class='card'>{feature_chart(name, f)}<div class='stats'>{f['test'].upper()} "
                f"p {_e(pv if pv.startswith('<') else '= ' + pv)}; {extra}</div></div>"
            )
        out.append("</div>")
        pred = r["prediction"]
        if pred["kind"] == "classes":
            keep = [
                i
                for i, (b, c) in enumerate(zip(pred["baseline_counts"], pred["current_counts"], strict=True))
                if b or c
            ]
            pb, pc = _shares(pred["baseline_counts"]), _shares(pred["current_counts"])
            chart = bar_chart(
                f"Predicted classes, v{version}: PSI {pred['psi']:.3f}",
                [pred["categories"][i] for i in keep],
                [
                    ("baseline", [pb[i] for i in keep], BASE_COLOR),
                    ("current window", [pc[i] for i in keep], CURRENT_COLOR),
                ],
                x_label="predicted class",
            )
        else:
            chart = feature_chart(f"Predicted score, v{version}", pred)
        out.append(f"<h2>Version {_e(version)}: predictions</h2><div class='card' style='width:570px'>{chart}</div>")
    out.append("<h2>History</h2>")
    points = [h for h in history if h.get("aggregate", {}).get("status") == "ok"]
    if points:
        labels = [h["window"]["end"][5:16].replace("T", " ") for h in points]
        series = [
            ("max feature PSI", [h["aggregate"]["max_psi"] for h in points], SERIES_COLORS[0]),
            ("drifted share", [h["aggregate"]["drifted_share"] for h in points], SERIES_COLORS[1]),
            ("prediction drift", [h["aggregate"]["prediction_drift"] for h in points], SERIES_COLORS[2]),
        ]
        limits = [
            ("PSI threshold", t["psi"], SERIES_COLORS[0]),
            ("share threshold", t["drifted_share"], SERIES_COLORS[1]),
        ]
        out.append(
            line_chart(
                f"{result['model']}: drift over the last {_count(len(points), 'judged window')}",
                labels,
                series,
                limits,
                y_label="metric value",
            )
        )
    else:
        out.append("<p class='muted'>No earlier judged windows are stored yet (drift/{model}/*.json).</p>")
    out.append(
        f"<p class='muted'>Reproduce: <code>modeldeck drift report {_e(result['model'])} --window "
        f"{_e(w['length'])} --end {_e(w['end'])} --out report.html</code></p></body></html>"
    )
    return "\n".join(out)
