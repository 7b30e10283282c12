"""The experiment job: an A/B test's evidence so far, from the capture and the feedback, judged by
:mod:`modeldeck.sequential`.

Pure logic with injected boto3 clients (S3, SNS), numpy-only; the scheduled Lambda
(``lambdas.experiment.handler``) and ``modeldeck experiment status`` (which invokes it) call
:func:`run_experiment`. For one model with a running experiment (``models/{model}/experiment.json``) it

1. reads the capture records that carry the experiment's id (every request made during an experiment is
   captured) and the feedback records since the experiment started, and joins outcomes on the prediction id;
2. aggregates per variant over the randomization unit (the unit digest): units, requests, outcomes and the
   metric per unit, as sufficient statistics (n, sum, sum of squares); requests without a unit key
   (``"variant": null``) are counted apart and judged by nothing;
3. checks the split (sample-ratio mismatch), compares every challenger with the champion and decides
   (:func:`modeldeck.sequential.decide`);
4. stores the snapshot under ``experiments/{model}/{id}/snapshots/{ts}.json`` (the report plots them over
   time), emits per-variant metrics as EMF and publishes one SNS message, once, when a decision is reached.

Metrics, per unit (the randomization unit, so units are independent and the tests apply):

- ``conversion``: the unit converted when one of its outcomes has a value > 0; the share of units;
- ``value``: the unit's total outcome value (0 without outcome); the mean over units;
- a model metric on labels vs predictions: ``accuracy`` (higher is better), ``mae`` or ``mse`` (lower is
  better): the mean of the unit's labeled rows; only units with a label count.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from modeldeck import sequential
from modeldeck.capture import read_records
from modeldeck.emf import EmfMetrics
from modeldeck.errors import ModeldeckError
from modeldeck.experiments import experiment_key

logger = logging.getLogger(__name__)
NAMESPACE = "modeldeck"
SNAPSHOT_FORMAT = 1
BUSINESS_METRICS = ("conversion", "value")
# Model metrics that decompose per row, so a unit's score is the mean of its rows' (True: higher is better).
MODEL_METRICS: dict[str, bool] = {"accuracy": True, "mae": False, "mse": False}
METRICS = (*BUSINESS_METRICS, *MODEL_METRICS)


class ExperimentJobError(ModeldeckError):
    """The experiment job failed for at least one model."""


def archive_prefix(model: str, experiment_id: str) -> str:
    """Everything an experiment leaves behind: snapshots, the decision marker, the concluded document."""
    return f"experiments/{model}/{experiment_id}/"


def snapshot_key(model: str, experiment_id: str, at: datetime) -> str:
    return f"{archive_prefix(model, experiment_id)}snapshots/{at:%Y%m%dT%H%M%S.%fZ}.json"


def decision_key(model: str, experiment_id: str) -> str:
    """Written once (If-None-Match) when the job first reaches a decision: the SNS message goes out once."""
    return f"{archive_prefix(model, experiment_id)}decision.json"


def higher_is_better(metric: str) -> bool:
    return MODEL_METRICS.get(metric, True)


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


# --- aggregation -----------------------------------------------------------------------------------------


@dataclass
class VariantStats:
    """One variant's sufficient statistics: they merge by addition, so snapshots can be combined."""

    name: str
    version: int
    weight: float
    units: int = 0  # distinct unit digests assigned to the variant
    requests: int = 0
    outcomes: int = 0  # requests with feedback (a label, a value or both)
    n: int = 0  # units the metric is measured on (all units; for a model metric, the labeled ones)
    total: float = 0.0  # sum over those units of the per-unit metric (conversion: units that converted)
    total_sq: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    def interval(self, alpha: float) -> tuple[float, float]:
        """The metric's two-sided (1 - alpha) normal interval (per-variant; comparisons use sequential's)."""
        if self.n < 2:
            return math.nan, math.nan
        variance = max(self.total_sq / self.n - self.mean**2, 0.0) * self.n / (self.n - 1)
        half = sequential.normal_ppf(1 - alpha / 2) * math.sqrt(variance / self.n)
        return self.mean - half, self.mean + half


def _row_scores(metric: str, labels: Sequence[Any], predicted: Sequence[Any]) -> list[float]:
    if metric == "accuracy":
        return [1.0 if str(t) == str(p) else 0.0 for t, p in zip(labels, predicted, strict=True)]
    scores = []
    for t, p in zip(labels, predicted, strict=True):
        try:
            error = float(t) - float(p)
        except (TypeError, ValueError):
            continue  # a non-numeric label scores no error (the feedback route admits numbers for regression)
        scores.append(abs(error) if metric == "mae" else error * error)
    return scores


def aggregate(
    doc: Mapping[str, Any], captures: Iterable[Mapping[str, Any]], feedback: Iterable[Mapping[str, Any]]
) -> tuple[list[VariantStats], dict[str, int]]:
    """Per-variant statistics of one experiment, and the unassigned requests (no unit key) counted apart.

    ``captures`` may hold any capture records: only those carrying this experiment's id count (shadow copies
    never do). Outcomes are joined on the prediction id; a feedback record for a request of another
    experiment, or of none, is ignored.
    """
    metric = str(doc["metric"])
    stats = {v["name"]: VariantStats(v["name"], int(v["version"]), float(v["weight"])) for v in doc["variants"]}
    by_id: dict[str, Mapping[str, Any]] = {str(r["id"]): r for r in feedback if r.get("id")}
    unassigned = {"requests": 0, "outcomes": 0}
    # unit digest -> (variant, summed value, any value > 0, labeled row scores)
    units: dict[tuple[str, str], list[Any]] = {}
    for r in captures:
        exp = r.get("experiment")
        if r.get("shadow") or not isinstance(exp, Mapping) or exp.get("id") != doc["id"]:
            continue
        outcome = by_id.get(str(r.get("id")))
        variant = exp.get("variant")
        if variant is None or variant not in stats:
            unassigned["requests"] += 1
            unassigned["outcomes"] += outcome is not None
            continue
        s = stats[variant]
        s.requests += 1
        unit = units.setdefault((variant, str(exp.get("unit"))), [0.0, False, []])
        if outcome is None:
            continue
        s.outcomes += 1
        values = outcome.get("value")
        if values is not None:
            values = values if isinstance(values, list) else [values]
            numbers = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
            unit[0] += sum(numbers)
            unit[1] = unit[1] or any(v > 0 for v in numbers)
        labels = outcome.get("label")
        if metric in MODEL_METRICS and labels is not None:
            labels = labels if isinstance(labels, list) else [labels]
            predicted = (r.get("outputs") or {}).get("label") or []
            if len(labels) == len(predicted):  # one label per captured row, or it answers nothing
                unit[2].extend(_row_scores(metric, labels, predicted))
    for (variant, _), (value, converted, scores) in units.items():
        s = stats[variant]
        s.units += 1
        if metric == "conversion":
            x: float | None = 1.0 if converted else 0.0
        elif metric == "value":
            x = value
        else:
            x = sum(scores) / len(scores) if scores else None
        if x is not None:
            s.n += 1
            s.total += x
            s.total_sq += x * x
    return list(stats.values()), unassigned


# --- judgement -------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Dataclasses to dicts, NaN/inf to None: snapshots are strict JSON."""
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _compare(doc: Mapping[str, Any], control: VariantStats, treatment: VariantStats) -> Any:
    metric, alpha = str(doc["metric"]), float(doc.get("alpha", 0.05))
    names = (control.name, treatment.name)
    # The mixture's scale is the planned MDE: the minimum sample size at start assumed it.
    mixing = float(doc["mde"]) if doc.get("mde") else None
    if metric == "conversion":
        return sequential.compare_proportions(
            int(control.total),
            control.n,
            int(treatment.total),
            treatment.n,
            alpha=alpha,
            names=names,
            metric=metric,
            mixing_sd=mixing,
        )
    return sequential.compare_means(
        control.n,
        control.total,
        control.total_sq,
        treatment.n,
        treatment.total,
        treatment.total_sq,
        alpha=alpha,
        names=names,
        metric=metric,
        mixing_sd=mixing,
    )


def analyze(
    doc: Mapping[str, Any],
    captures: Iterable[Mapping[str, Any]],
    feedback: Iterable[Mapping[str, Any]],
    now: datetime,
) -> dict[str, Any]:
    """The snapshot: per-variant statistics, the SRM check, every challenger against the champion and the
    decision. Pure (no clients)."""
    stats, unassigned = aggregate(doc, captures, feedback)
    alpha = float(doc.get("alpha", 0.05))
    champion = next(s for s in stats if s.name == doc.get("champion", stats[0].name))
    challengers = [s for s in stats if s is not champion]
    srm = sequential.srm([s.units for s in stats], [s.weight for s in stats])
    comparisons = [_compare(doc, champion, s) for s in challengers] if all(s.n >= 2 for s in stats) else []
    if comparisons:
        decision = sequential.decide(
            comparisons,
            units={s.name: s.units for s in stats},
            min_units=int(doc.get("min_units", 0)),
            started_at=parse_iso(str(doc["started_at"])),
            now=now,
            max_days=float(doc.get("max_days", 14)),
            alpha=alpha,
            srm_result=srm,
            mde=None if doc.get("mde") is None else float(doc["mde"]),
            higher_is_better=higher_is_better(str(doc["metric"])),
        )
        decision_out = _plain(decision)
    else:
        decision_out = {
            "outcome": "continue",
            "winner": None,
            "reason": "not enough units with a measured metric in every variant to compare yet",
        }
    variants = []
    for s in stats:
        low, high = s.interval(alpha)
        variants.append(
            {
                "name": s.name,
                "version": s.version,
                "weight": s.weight,
                "champion": s is champion,
                "units": s.units,
                "requests": s.requests,
                "outcomes": s.outcomes,
                "n": s.n,
                "sum": s.total,
                "sum_sq": s.total_sq,
                "metric": {"value": s.mean, "ci_low": low, "ci_high": high},
            }
        )
    return _plain(
        {
            "format": SNAPSHOT_FORMAT,
            "at": iso(now),
            "experiment": {
                k: doc.get(k)
                for k in ("id", "model", "metric", "champion", "alpha", "power", "mde", "min_units", "max_days")
            }
            | {"started_at": doc.get("started_at")},
            "variants": variants,
            "unassigned": unassigned,
            "srm": srm,
            "comparisons": comparisons,
            "decision": decision_out,
        }
    )


# --- the job ---------------------------------------------------------------------------------------------


def read_json(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return None
        raise
    return dict(json.loads(body))


def load_experiment(s3: Any, bucket: str, model: str) -> dict[str, Any] | None:
    """The model's running experiment, or None."""
    return read_json(s3, bucket, experiment_key(model))


def snapshots(s3: Any, bucket: str, model: str, experiment_id: str) -> list[dict[str, Any]]:
    """Every stored snapshot of an experiment, oldest first (their keys sort by time)."""
    prefix = f"{archive_prefix(model, experiment_id)}snapshots/"
    keys = [
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for obj in page.get("Contents", [])
    ]
    return [json.loads(s3.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in sorted(keys)]


def emf_lines(snapshot: Mapping[str, Any], timestamp_ms: int | None = None) -> list[str]:
    """Per-variant CloudWatch metrics as EMF documents (dimensions model, experiment, variant): Units,
    Requests, Outcomes, MetricValue and, for a challenger, its sequential and fixed-horizon p-values."""
    exp = snapshot["experiment"]
    by_treatment = {c["treatment"]: c for c in snapshot.get("comparisons") or []}
    lines: list[str] = []
    for v in snapshot["variants"]:
        m = EmfMetrics(NAMESPACE)
        m.set_default_dimensions(model=str(exp["model"]), experiment=str(exp["id"]), variant=str(v["name"]))
        m.add_metric("Units", "Count", v["units"])
        m.add_metric("Requests", "Count", v["requests"])
        m.add_metric("Outcomes", "Count", v["outcomes"])
        if v["metric"]["value"] is not None:
            m.add_metric("MetricValue", "None", v["metric"]["value"])
        c = by_treatment.get(v["name"])
        if c is not None:
            for name, key in (("PValue", "p_value"), ("FixedPValue", "fixed_p_value")):
                if c.get(key) is not None:
                    m.add_metric(name, "None", c[key])
        lines.extend(m.serialize(timestamp_ms))
    return lines


def format_metric(x: float | None, metric: str) -> str:
    """A metric's value for people: rates as percentages, the rest to four significant digits."""
    if x is None:
        return "n/a"
    return f"{x:.2%}" if metric in ("conversion", "accuracy") else f"{x:.4g}"


def format_decision_message(snapshot: Mapping[str, Any]) -> tuple[str, str]:
    """The SNS subject and body an operator reads when the experiment reaches a decision."""
    exp, decision = snapshot["experiment"], snapshot["decision"]
    metric = str(exp["metric"])
    winner = decision.get("winner")
    verdict = f"{winner} wins" if winner else str(decision["outcome"])
    subject = f"modeldeck: experiment {exp['id']} on {exp['model']}: {verdict}"[:100]
    lines = [
        f"Experiment {exp['id']} on {exp['model']} reached a decision: {decision['outcome']}.",
        f"  {decision.get('reason', '')}",
        "",
        f"Metric: {metric} (per unit), alpha {exp.get('alpha')}",
    ]
    for v in snapshot["variants"]:
        m = v["metric"]
        lines.append(
            f"  {v['name']} (v{v['version']}{', champion' if v['champion'] else ''}): {v['units']:,} units, "
            f"{v['requests']:,} requests, {v['outcomes']:,} outcomes; {metric} {format_metric(m['value'], metric)} "
            f"[{format_metric(m['ci_low'], metric)}, {format_metric(m['ci_high'], metric)}]"
        )
    for c in snapshot.get("comparisons") or []:
        lines.append(
            f"  {c['treatment']} vs {c['control']}: effect {c['effect']:+.4g} "
            f"[{c['ci_low']:+.4g}, {c['ci_high']:+.4g}], sequential p {c['p_value']:.3g}, "
            f"fixed-horizon p {c['fixed_p_value']:.3g}"
        )
    srm = snapshot.get("srm") or {}
    lines.append(
        f"  Sample-ratio check: p {srm.get('p_value', float('nan')):.3g}{' MISMATCH' if srm.get('mismatch') else ''}"
    )
    version = next((v["version"] for v in snapshot["variants"] if v["name"] == winner), None)
    lines += [
        "",
        "Next:",
        f"  modeldeck experiment status {exp['model']}",
        f"  modeldeck experiment report {exp['model']} --out report.html",
        (
            f"  modeldeck experiment conclude {exp['model']} --promote {version}"
            if version is not None and winner != exp.get("champion")
            else f"  modeldeck experiment conclude {exp['model']} --keep"
        ),
    ]
    return subject, "\n".join(lines)


def run_experiment(
    s3: Any,
    sns: Any,
    *,
    bucket: str,
    model: str,
    now: datetime,
    topic_arn: str | None = None,
    write: Callable[[str], Any] | None = None,
) -> dict[str, Any] | None:
    """The experiment job for one model: analyse, store the snapshot, emit metrics and, the first time a
    decision is reached, publish it. None when the model runs no experiment (nothing to do)."""
    doc = load_experiment(s3, bucket, model)
    if doc is None:
        return None
    started = parse_iso(str(doc["started_at"]))
    captures = read_records(s3, bucket, "capture", model, started, now)
    feedback = read_records(s3, bucket, "feedback", model, started, now)
    snapshot = analyze(doc, captures, feedback, now)
    key = snapshot_key(model, str(doc["id"]), now)
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(snapshot, indent=1).encode())
    snapshot["snapshot_key"] = key
    lines = emf_lines(snapshot, int(now.timestamp() * 1000))
    if write is not None and lines:
        write("\n".join(lines) + "\n")
    snapshot["notified"] = False
    if snapshot["decision"]["outcome"] != "continue" and topic_arn:
        snapshot["notified"] = _notify_once(s3, sns, bucket, topic_arn, snapshot)
    return snapshot


def _notify_once(s3: Any, sns: Any, bucket: str, topic_arn: str, snapshot: Mapping[str, Any]) -> bool:
    """Publish the decision unless an earlier run did: the marker is taken first (If-None-Match), and given
    back when the publish fails, so the next run retries."""
    exp = snapshot["experiment"]
    key = decision_key(str(exp["model"]), str(exp["id"]))
    body = json.dumps({"at": snapshot["at"], "decision": snapshot["decision"]}).encode()
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
            return False
        raise
    subject, message = format_decision_message(snapshot)
    try:
        sns.publish(TopicArn=topic_arn, Subject=subject, Message=message)
    except Exception:
        s3.delete_object(Bucket=bucket, Key=key)
        raise
    return True


def run_scheduled(
    s3: Any,
    sns: Any,
    *,
    bucket: str,
    models: Sequence[str],
    now: datetime,
    topic_arn: str | None = None,
    write: Callable[[str], Any] | None = None,
) -> list[dict[str, Any]]:
    """Every configured model's running experiment (most models run none: nothing to do). One model's
    failure does not starve the others; it is raised once they ran, so the function's errors alarm sees it."""
    out, failed = [], []
    for model in models:
        try:
            snapshot = run_experiment(s3, sns, bucket=bucket, model=model, now=now, topic_arn=topic_arn, write=write)
        except Exception:
            logger.exception("experiment job failed for %s", model)
            failed.append(model)
            continue
        if snapshot is not None:
            out.append(snapshot)
    if failed:
        raise ExperimentJobError(f"the experiment job failed for {', '.join(failed)} (see the log)")
    return out
