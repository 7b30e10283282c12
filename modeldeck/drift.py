"""The drift job: captured traffic of one window against the baseline of the version that served it.

Pure logic with injected boto3 clients (S3, CloudWatch, SNS); the scheduled Lambda
(``lambdas.drift.handler``) and ``modeldeck drift check|report`` call :func:`run_drift`.

For one model and one window ``[start, end)`` it

1. returns the stored result if ``drift/{model}/{end}-{seconds}s.json`` exists (idempotent re-runs);
2. reads the capture records (de-duplicated by id), drops shadow records and groups the rest by
   ``model_version``, so a canary's traffic is judged against its own baseline;
3. compares each group with ``models/{model}/{version}/baseline.json`` (``modeldeck.stats``);
4. joins feedback labels of the window by id and scores accuracy and the card's primary metric;
5. publishes CloudWatch metrics in the ``modeldeck`` namespace, time-stamped at the window end, per
   version (dimensions model + version [+ feature]) and per model (dimension model: the worst version);
6. publishes a human-readable SNS message (:func:`format_alarm_message`) when the window breaches;
7. writes the marker with the result, so a re-run of the window publishes nothing.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from botocore.exceptions import ClientError

from modeldeck import metrics as quality
from modeldeck.capture import read_records
from modeldeck.errors import ModeldeckError, RegistryError
from modeldeck.registry import BASELINE, Registry
from modeldeck.schema import MISSING_CATEGORY
from modeldeck.stats import DriftThresholds, breaches, judge_window, merge_profiles, window_profile

logger = logging.getLogger(__name__)
NAMESPACE = "modeldeck"
DEFAULT_THRESHOLDS = DriftThresholds()
RESULT_FORMAT = 1
# Metric names. Per version: dimensions model + version (FeaturePSI: + feature); the aggregate ones are
# also published with the dimension model alone, which is what the per-model alarms watch.
FEATURE_PSI = "FeaturePSI"
AGGREGATE_METRICS = ("DriftedFeatures", "DriftedShare", "MaxFeaturePSI", "PredictionDrift", "RowCount")
QUALITY_METRICS = ("Accuracy", "LabeledRows")  # plus the primary metric's own name, e.g. "roc_auc"
# What the per-model alarms compare (metric, statistic, comparison); thresholds come from DriftThresholds.
ALARM_RULES = (
    ("DriftedFeatures", "Maximum", ">=", "1"),
    ("DriftedShare", "Maximum", ">=", "drifted_share"),
    ("MaxFeaturePSI", "Maximum", ">=", "psi"),
    ("PredictionDrift", "Maximum", ">=", "prediction"),
)
_WINDOW_RE = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class DriftError(ModeldeckError):
    """The drift job cannot run for this model and window."""


def parse_window(text: str) -> timedelta:
    """``30m``, ``1h``, ``24h``, ``1d`` (or seconds, ``900s``) as a timedelta."""
    match = _WINDOW_RE.match(text)
    if not match or int(match.group(1)) == 0:
        raise DriftError(f"not a window length: {text!r} (use e.g. 30m, 1h, 24h, 1d)")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def format_window(length: timedelta) -> str:
    seconds = int(length.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def window_ending(now: datetime, length: timedelta, lag: timedelta = timedelta(0)) -> tuple[datetime, datetime]:
    """The latest complete window: its end is ``now - lag`` floored to a multiple of min(length, 1 h).

    Flooring makes every run inside one period judge the same window, so retries stay idempotent; the lag
    leaves time for Firehose to deliver the window's last records.
    """
    step = int(min(length, timedelta(hours=1)).total_seconds())
    stamp = int((now - lag).timestamp())
    end = datetime.fromtimestamp(stamp - stamp % step, UTC)
    return end - length, end


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        raise DriftError(f"not an ISO-8601 time: {text!r} (use e.g. 2026-11-23T08:00:00Z)") from None


def marker_key(model: str, start: datetime, end: datetime) -> str:
    """Where a window's result is stored: ``drift/{model}/{end}-{seconds}s.json``."""
    return f"drift/{model}/{end:%Y%m%dT%H%M%SZ}-{int((end - start).total_seconds())}s.json"


@dataclass(frozen=True)
class DriftSettings:
    """The drift job's typed settings, parsed once at the handler boundary (the env names in brackets)."""

    bucket: str  # MODEL_BUCKET
    models: tuple[str, ...] = ()  # MODELS, comma-separated
    thresholds: DriftThresholds = field(default_factory=DriftThresholds)
    window: timedelta = timedelta(hours=24)  # WINDOW_HOURS (or WINDOW, e.g. "30m")
    lag: timedelta = timedelta(minutes=15)  # WINDOW_LAG_MINUTES
    topic_arn: str | None = None  # TOPIC_ARN
    min_labeled_rows: int = 50  # MIN_LABELED_ROWS
    feedback_lookback: timedelta = timedelta(hours=24)  # FEEDBACK_LOOKBACK_HOURS

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DriftSettings:
        """Parse the Lambda environment; every problem is reported at once."""
        problems: list[str] = []

        def num(name: str, default: float, kind: type = float, lo: float = 0.0, hi: float = math.inf) -> Any:
            raw = env.get(name)
            if raw in (None, ""):
                return default
            try:
                value = kind(raw)
            except ValueError:
                problems.append(f"{name}={raw!r} is not a {kind.__name__}")
                return default
            if not lo <= value <= hi:
                problems.append(f"{name}={raw!r} must be within [{lo}, {hi}]")
            return value

        bucket = env.get("MODEL_BUCKET", "")
        if not bucket:
            problems.append("MODEL_BUCKET is required")
        defaults = DriftThresholds()
        thresholds = DriftThresholds(
            psi=num("PSI_THRESHOLD", defaults.psi),
            drifted_share=num("DRIFTED_SHARE_THRESHOLD", defaults.drifted_share, hi=1.0),
            alpha=num("P_VALUE_ALPHA", defaults.alpha, lo=1e-12, hi=0.5),
            bonferroni=env.get("BONFERRONI", "true").strip().lower() not in ("false", "0", "no"),
            min_rows=num("MIN_SAMPLE_SIZE", defaults.min_rows, int, lo=1),
            prediction=num("PREDICTION_DRIFT_THRESHOLD", defaults.prediction),
            min_effect_psi=num("MIN_EFFECT_PSI", defaults.min_effect_psi),
        )
        window = timedelta(hours=num("WINDOW_HOURS", 24, int, lo=1))
        if env.get("WINDOW"):
            try:
                window = parse_window(env["WINDOW"])
            except DriftError as exc:
                problems.append(f"WINDOW: {exc}")
        settings = cls(
            bucket=bucket,
            models=tuple(m.strip() for m in env.get("MODELS", "").split(",") if m.strip()),
            thresholds=thresholds,
            window=window,
            lag=timedelta(minutes=num("WINDOW_LAG_MINUTES", 15, int)),
            topic_arn=env.get("TOPIC_ARN") or None,
            min_labeled_rows=num("MIN_LABELED_ROWS", 50, int, lo=1),
            feedback_lookback=timedelta(hours=num("FEEDBACK_LOOKBACK_HOURS", 24, int)),
        )
        if problems:
            raise DriftError("invalid drift settings: " + "; ".join(problems))
        return settings


# --- assembling a window from capture records ------------------------------------------------------------


def _columns(records: Sequence[Mapping[str, Any]], features: Mapping[str, Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Stack the columnar ``features`` of many records into one array per baseline feature."""
    out: dict[str, np.ndarray] = {}
    for name, profile in features.items():
        categorical = "frequencies" in profile
        parts: list[Any] = []
        for r in records:
            values = r["features"].get(name)
            if values is None:
                values = [None] * int(r.get("rows", 0))
            parts.extend(values)
        if categorical:
            out[name] = np.array([MISSING_CATEGORY if v is None else str(v) for v in parts], dtype=object)
        else:
            out[name] = np.array([math.nan if v is None else v for v in parts], dtype=np.float64)
    return out


def _predictions(records: Sequence[Mapping[str, Any]]) -> np.ndarray:
    labels: list[Any] = []
    for r in records:
        labels.extend(r.get("outputs", {}).get("label", []))
    return np.asarray(labels)


def _json_safe(value: Any) -> Any:
    """numpy scalars to Python, NaN/inf to None: the stored result is strict JSON."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --- quality from feedback labels ------------------------------------------------------------------------


def _quality(
    registry: Registry,
    model: str,
    version: str,
    captures: Sequence[Mapping[str, Any]],
    labels_by_id: Mapping[str, list[Any]],
    min_labeled_rows: int,
) -> dict[str, Any] | None:
    """Accuracy and the card's primary metric on the captured rows that received a label."""
    y_true: list[Any] = []
    y_pred: list[Any] = []
    proba: list[Any] = []
    for r in captures:
        labels = labels_by_id.get(r.get("id", ""))
        outputs = r.get("outputs", {})
        predicted = outputs.get("label", [])
        if labels is None or len(labels) != len(predicted):
            continue  # one label per captured row, or the feedback does not answer this request
        y_true.extend(labels)
        y_pred.extend(predicted)
        if "probabilities" in outputs:
            proba.extend(outputs["probabilities"])
    if not y_true:
        return None
    out: dict[str, Any] = {"labeled_rows": len(y_true), "status": "ok"}
    if len(y_true) < min_labeled_rows:
        out["status"] = "insufficient_labels"
        return out
    card = registry.get_card(model, int(version))
    classes = card.classes
    if card.task == "regression":
        t, p = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
        scores = {"r2": quality.r2(t, p), "rmse": quality.rmse(t, p), "mae": quality.mae(t, p)}
    else:
        t, p = np.asarray([str(v) for v in y_true]), np.asarray([str(v) for v in y_pred])
        scores = {"accuracy": quality.accuracy(t, p)}
        names = [str(c) for c in classes or []]
        if card.primary_metric == "f1":
            scores["f1"] = quality.f1(t, p, names)
        elif card.primary_metric in ("roc_auc", "log_loss") and len(proba) == len(y_true) and names:
            probs = np.asarray(proba, np.float64)
            known = np.isin(t, names)
            fn = quality.roc_auc if card.primary_metric == "roc_auc" else quality.log_loss
            scores[card.primary_metric] = fn(t[known], probs[known], names)
    out["primary_metric"] = card.primary_metric
    out["metrics"] = scores
    return out


def _feedback_labels(s3: Any, bucket: str, model: str, start: datetime, end: datetime) -> dict[str, list[Any]]:
    labels: dict[str, list[Any]] = {}
    for r in read_records(s3, bucket, "feedback", model, start, end):
        label = r.get("label")
        if label is None:  # an outcome value only (experiments): nothing to score the model against
            continue
        labels[r["id"]] = label if isinstance(label, list) else [label]
    return labels


# --- the job ---------------------------------------------------------------------------------------------


WORK_PREFIX = "drift-work"


def work_prefix(model: str, start: datetime, end: datetime) -> str:
    """Where a map/reduce run keeps its intermediate objects (labels, partition profiles) for one window."""
    return f"{WORK_PREFIX}/{model}/{end:%Y%m%dT%H%M%SZ}-{int((end - start).total_seconds())}s/"


def window_partitions(model: str, start: datetime, end: datetime, role: str = "window") -> list[dict[str, str]]:
    """The partitions of ``[start, end)``: one per capture hour prefix (``capture/{model}/dt=…/hour=…/``).

    Firehose partitions a record by its own timestamp, so a duplicate delivery and every part of a split
    record land in the same hour as the record: de-duplicating within a partition is de-duplicating the
    window."""
    parts = []
    hour = start.replace(minute=0, second=0, microsecond=0)
    while hour < end:
        lo, hi = max(start, hour), min(end, hour + timedelta(hours=1))
        parts.append({"model": model, "start": iso(lo), "end": iso(hi), "role": role})
        hour += timedelta(hours=1)
    return parts


def plan_partitions(
    model: str, start: datetime, end: datetime, labels: Mapping[str, Any], feedback_lookback: timedelta
) -> list[dict[str, str]]:
    """The map step's items: the window's hours, then the lookback's hours when feedback may answer them."""
    parts = window_partitions(model, start, end)
    if labels and feedback_lookback:
        parts += window_partitions(model, start - feedback_lookback, start, role="lookback")
    return parts


class _Baselines:
    """Baselines by version, read once per process (a missing one is remembered with its reason)."""

    def __init__(self, registry: Registry, model: str) -> None:
        self.registry, self.model = registry, model
        self._cache: dict[str, tuple[dict[str, Any] | None, str]] = {}

    def get(self, version: str) -> tuple[dict[str, Any] | None, str]:
        if version not in self._cache:
            try:
                self._cache[version] = (self.registry.get_json(self.model, int(version), BASELINE), "")
            except (RegistryError, ValueError) as exc:
                # Not judged, and the other versions and models still are. RegistryError beyond NotFoundError:
                # S3 answers AccessDenied, not NoSuchKey, for a missing key the reader may not list (S3 API
                # reference, GetObject), so a missing baseline can look like a permission error.
                self._cache[version] = (None, str(exc))
        return self._cache[version]


def profile_partition(
    s3: Any, bucket: str, part: Mapping[str, str], label_ids: Iterable[str] | set[str], baselines: _Baselines
) -> dict[str, Any]:
    """The map step for one partition: per served version its rows, its window profile against that version's
    baseline, and the captured answers feedback labels refer to (for quality). Lookback partitions give only
    those answers."""
    ids = label_ids if isinstance(label_ids, set) else set(label_ids)
    model, role = part["model"], part.get("role", "window")
    start, end = parse_iso(part["start"]), parse_iso(part["end"])
    records = [r for r in read_records(s3, bucket, "capture", model, start, end) if not r.get("shadow")]
    by_version: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if role == "window" or r.get("id") in ids:
            by_version.setdefault(str(r.get("model_version")), []).append(r)
    versions: dict[str, Any] = {}
    for version, group in by_version.items():
        entry: dict[str, Any] = {
            "answered": [{"id": r["id"], "outputs": r.get("outputs", {})} for r in group if r.get("id") in ids]
        }
        if role == "window":
            entry["rows"] = sum(int(r.get("rows", 0)) for r in group)
            baseline, _ = baselines.get(version)
            if baseline is not None:
                entry["profile"] = window_profile(baseline, _columns(group, baseline["features"]), _predictions(group))
        versions[version] = entry
    return {
        "partition": dict(part),
        "requests": len(records) if role == "window" else 0,
        "versions": versions,
    }


class WindowReducer:
    """The reduce step: folds partition profiles in (window hours in order, then lookback hours), holding one
    merged profile per version, then judges. Memory grows with versions and labelled rows, not with rows."""

    def __init__(self) -> None:
        self.requests = 0
        self.rows: dict[str, int] = {}
        self.profiles: dict[str, dict[str, Any]] = {}
        self.answered: dict[str, list[dict[str, Any]]] = {}
        self.earlier: dict[str, list[dict[str, Any]]] = {}
        self.answered_ids: set[str] = set()

    def add(self, partition: Mapping[str, Any]) -> None:
        """Fold one partition's output (``profile_partition``) in."""
        self.requests += int(partition["requests"])
        lookback = partition["partition"].get("role") == "lookback"
        for version, entry in partition["versions"].items():
            (self.earlier if lookback else self.answered).setdefault(version, []).extend(entry["answered"])
            if not lookback:
                self.answered_ids.update(r["id"] for r in entry["answered"])
            if "rows" in entry:
                self.rows[version] = self.rows.get(version, 0) + int(entry["rows"])
            if "profile" in entry:
                held = self.profiles.get(version)
                self.profiles[version] = entry["profile"] if held is None else merge_profiles([held, entry["profile"]])

    def finish(
        self,
        registry: Registry,
        baselines: _Baselines,
        model: str,
        start: datetime,
        end: datetime,
        thresholds: DriftThresholds,
        labels: Mapping[str, list[Any]],
        min_labeled_rows: int,
    ) -> dict[str, Any]:
        """The window's result: each version judged from its merged profile, quality from the answers."""
        versions: dict[str, dict[str, Any]] = {}
        # Feedback arrives after the prediction: labels of this window may answer requests of earlier ones, which
        # count once some label answers no request of the window.
        earlier = self.earlier if any(i not in self.answered_ids for i in labels) else {}
        answered = {v: self.answered.get(v, []) + earlier.get(v, []) for v in set(self.answered) | set(earlier)}
        for version in sorted(set(self.rows) | set(answered), key=_version_key):
            baseline, reason = baselines.get(version)
            if baseline is None:
                logger.warning("drift: %s v%s not judged, no readable baseline: %s", model, version, reason)
                versions[version] = {
                    "status": "no_baseline",
                    "reason": reason,
                    "rows": self.rows.get(version, 0),
                    "breaches": [],
                    "alarm": False,
                }
                continue
            profile = self.profiles.get(version, {"rows": 0})
            result = judge_window(baseline, profile, thresholds)
            q = _quality(registry, model, version, answered.get(version, []), labels, min_labeled_rows)
            if q is not None:
                result["quality"] = q
            versions[version] = result
        out = {
            "format": RESULT_FORMAT,
            "model": model,
            "window": {"start": iso(start), "end": iso(end), "length": format_window(end - start)},
            "thresholds": asdict(thresholds),
            "rows": sum(v["rows"] for v in versions.values()),
            "requests": self.requests,
            "versions": versions,
        }
        out["aggregate"] = aggregate(out, thresholds)
        return _json_safe(out)


def evaluate_window(
    s3: Any,
    bucket: str,
    model: str,
    start: datetime,
    end: datetime,
    thresholds: DriftThresholds,
    *,
    min_labeled_rows: int = 50,
    feedback_lookback: timedelta = timedelta(hours=24),
) -> dict[str, Any]:
    """Compute a window's drift result (no publishing, no marker): the pure part of the job.

    The same plan, map and reduce steps the drift state machine runs, one partition after another in this
    process, so memory is bounded by the largest partition."""
    registry = Registry(s3, bucket)
    baselines = _Baselines(registry, model)
    labels = _feedback_labels(s3, bucket, model, start, end)
    ids = set(labels)
    reducer = WindowReducer()
    for part in plan_partitions(model, start, end, labels, feedback_lookback):
        if part["role"] == "lookback" and ids <= reducer.answered_ids:
            break  # every label answers a request of the window: the lookback would not count
        reducer.add(profile_partition(s3, bucket, part, ids, baselines))
    return reducer.finish(registry, baselines, model, start, end, thresholds, labels, min_labeled_rows)


def _version_key(v: str) -> tuple[int, str]:
    return (int(v), v) if v.isdigit() else (1 << 30, v)


def aggregate(result: Mapping[str, Any], thresholds: DriftThresholds) -> dict[str, Any]:
    """The model-level view the per-model alarms watch: the worst version that had enough data."""
    judged = {v: r for v, r in result["versions"].items() if r.get("status") == "ok"}
    agg: dict[str, Any] = {
        "rows": result["rows"],
        "status": "ok" if judged else "insufficient_data",
        "versions_judged": sorted(judged, key=_version_key),
    }
    if judged:

        def worst(key: str) -> tuple[str, float]:
            version = max(judged, key=lambda v: judged[v][key])
            return version, float(judged[version][key])

        for key in ("drifted_count", "drifted_share", "max_psi", "prediction_drift"):
            agg[key + "_version"], agg[key] = worst(key)
        agg["breaches"] = breaches(agg, thresholds)
        agg["alarm"] = bool(agg["breaches"])
        agg["breaching_versions"] = [v for v, r in judged.items() if r.get("alarm")]
    else:
        agg.update(breaches=[], alarm=False, breaching_versions=[])
    return agg


def metric_data(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The CloudWatch datapoints of a window result (nothing drift-related for insufficient data)."""
    ts = parse_iso(result["window"]["end"])
    model = result["model"]
    data: list[dict[str, Any]] = []

    def put(name: str, value: float, unit: str = "None", **dims: str) -> None:
        data.append(
            {
                "MetricName": name,
                "Timestamp": ts,
                "Value": float(value),
                "Unit": unit,
                "Dimensions": [{"Name": "model", "Value": model}, *({"Name": k, "Value": v} for k, v in dims.items())],
            }
        )

    for version, r in result["versions"].items():
        put("RowCount", r["rows"], "Count", version=version)
        if r.get("status") == "ok":
            for feature, f in r["features"].items():
                put(FEATURE_PSI, f["psi"], version=version, feature=feature)
            put("DriftedFeatures", r["drifted_count"], "Count", version=version)
            put("DriftedShare", r["drifted_share"], version=version)
            put("MaxFeaturePSI", r["max_psi"], version=version)
            put("PredictionDrift", r["prediction_drift"], version=version)
        q = r.get("quality")
        if q and q.get("status") == "ok":
            put("LabeledRows", q["labeled_rows"], "Count", version=version)
            for name, value in q["metrics"].items():
                if value is not None:
                    put("Accuracy" if name == "accuracy" else name, value, version=version)
    agg = result["aggregate"]
    put("RowCount", agg["rows"], "Count")
    if agg["status"] == "ok":
        put("DriftedFeatures", agg["drifted_count"], "Count")
        put("DriftedShare", agg["drifted_share"])
        put("MaxFeaturePSI", agg["max_psi"])
        put("PredictionDrift", agg["prediction_drift"])
    # Model-level quality: the worst version (the accuracy alarm watches the Minimum).
    judged_q = [r["quality"] for r in result["versions"].values() if r.get("quality", {}).get("status") == "ok"]
    if judged_q:
        put("LabeledRows", sum(q["labeled_rows"] for q in judged_q), "Count")
        for name in {n for q in judged_q for n in q["metrics"]}:
            values = [q["metrics"][name] for q in judged_q if q["metrics"].get(name) is not None]
            if values:
                lower_is_better = name in ("log_loss", "rmse", "mae")
                put("Accuracy" if name == "accuracy" else name, max(values) if lower_is_better else min(values))
    return data


def publish_metrics(
    cloudwatch: Any,
    data: Sequence[Mapping[str, Any]],
    *,
    namespace: str = NAMESPACE,
) -> int:
    """PutMetricData in batches (the client retries throttling: ``modeldeck.aws``). Returns the datapoints sent."""
    for i in range(0, len(data), 500):
        cloudwatch.put_metric_data(Namespace=namespace, MetricData=list(data[i : i + 500]))
    return len(data)


def load_result(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    return json.loads(body)


def stored_results(s3: Any, bucket: str, model: str, limit: int = 48) -> list[dict[str, Any]]:
    """The most recent stored window results of a model, oldest first (the report's history)."""
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"drift/{model}/"):
        keys.extend(o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".json"))
    results = [load_result(s3, bucket, k) for k in sorted(keys)[-limit:]]
    return sorted((r for r in results if r), key=lambda r: (r["window"]["end"], r["window"]["length"]))


def run_drift(
    s3: Any,
    cloudwatch: Any,
    sns: Any,
    *,
    bucket: str,
    model: str,
    start: datetime,
    end: datetime,
    thresholds: DriftThresholds = DEFAULT_THRESHOLDS,
    topic_arn: str | None = None,
    min_labeled_rows: int = 50,
    feedback_lookback: timedelta = timedelta(hours=24),
) -> dict[str, Any]:
    """The drift job for one model and window: evaluate, publish metrics (and the alarm message), store.

    Idempotent: when the window's marker exists its stored result is returned with ``replayed = True``
    and nothing is published. The marker is written after publishing, with ``If-None-Match``, so a
    crashed run is retried in full; two concurrent runs may both publish the same datapoints, which the
    alarms (statistic Maximum) do not notice.
    """
    key = marker_key(model, start, end)
    stored = load_result(s3, bucket, key)
    if stored is not None:
        stored["replayed"] = True
        return stored
    result = evaluate_window(
        s3,
        bucket,
        model,
        start,
        end,
        thresholds,
        min_labeled_rows=min_labeled_rows,
        feedback_lookback=feedback_lookback,
    )
    return publish_and_store(s3, cloudwatch, sns, bucket=bucket, result=result, topic_arn=topic_arn)


def publish_and_store(
    s3: Any, cloudwatch: Any, sns: Any, *, bucket: str, result: dict[str, Any], topic_arn: str | None
) -> dict[str, Any]:
    """Publish a fresh window result (metrics, and the message when it breaches), then store its marker."""
    key = marker_key(result["model"], parse_iso(result["window"]["start"]), parse_iso(result["window"]["end"]))
    data = metric_data(result)
    result["published"] = {"metrics": publish_metrics(cloudwatch, data), "namespace": NAMESPACE}
    if result["aggregate"]["alarm"] and topic_arn:
        subject, body = format_alarm_message(result)
        reply = sns.publish(TopicArn=topic_arn, Subject=subject, Message=body)
        result["published"]["message_id"] = reply.get("MessageId")
    result["replayed"] = False
    stored_body = json.dumps(_json_safe(result), separators=(",", ":")).encode()
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=stored_body, ContentType="application/json", IfNoneMatch="*")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "PreconditionFailed":
            raise
    return result


# --- the drift state machine's steps (lambdas.drift.handler: plan, profile, reduce) ------------------------


def _put_json(s3: Any, bucket: str, key: str, value: Any) -> None:
    body = json.dumps(_json_safe(value), separators=(",", ":")).encode()
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")


def _get_json(s3: Any, bucket: str, key: str) -> Any:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def partition_object(part: Mapping[str, str]) -> str:
    """Where the map step stores a partition's profile (under the run's work prefix)."""
    return f"{part['work']}{part['role']}-{parse_iso(part['start']):%Y%m%dT%H%M%SZ}.json"


def plan_run(
    s3: Any, bucket: str, model: str, start: datetime, end: datetime, feedback_lookback: timedelta
) -> dict[str, Any]:
    """The plan step for one model and window: its partitions, and the window's feedback labels stored for
    the map and reduce steps. A window already judged (its marker exists) gets no partitions."""
    work = work_prefix(model, start, end)
    run: dict[str, Any] = {"model": model, "start": iso(start), "end": iso(end), "work": work, "partitions": []}
    run["stored"] = load_result(s3, bucket, marker_key(model, start, end)) is not None
    if not run["stored"]:
        labels = _feedback_labels(s3, bucket, model, start, end)
        _put_json(s3, bucket, f"{work}labels.json", labels)
        run["partitions"] = [{**p, "work": work} for p in plan_partitions(model, start, end, labels, feedback_lookback)]
    return run


def profile_items(s3: Any, bucket: str, items: Sequence[Mapping[str, str]]) -> list[str]:
    """The map step for a batch of partitions (a Distributed Map child): profile each, store it, return keys."""
    registry = Registry(s3, bucket)
    baselines: dict[str, _Baselines] = {}
    label_ids: dict[str, set[str]] = {}
    keys = []
    for part in items:
        model, work = part["model"], part["work"]
        if work not in label_ids:
            label_ids[work] = set(_get_json(s3, bucket, f"{work}labels.json"))
        found = baselines.setdefault(model, _Baselines(registry, model))
        key = partition_object(part)
        _put_json(s3, bucket, key, profile_partition(s3, bucket, part, label_ids[work], found))
        keys.append(key)
    return keys


def reduce_run(
    s3: Any,
    cloudwatch: Any,
    sns: Any,
    *,
    bucket: str,
    run: Mapping[str, Any],
    thresholds: DriftThresholds,
    topic_arn: str | None,
    min_labeled_rows: int,
    feedback_lookback: timedelta,
) -> dict[str, Any]:
    """The reduce step for one model and window: merge the partition profiles in the plan's order, judge,
    publish and store as :func:`run_drift` does, then delete the run's work objects.

    The partitions are planned again from the stored labels (the same pure function as the plan step), so the
    execution's state carries each partition once: Step Functions limits it to 256 KiB."""
    model, start, end = run["model"], parse_iso(run["start"]), parse_iso(run["end"])
    stored = load_result(s3, bucket, marker_key(model, start, end))
    if stored is not None:
        stored["replayed"] = True
        return stored
    work = run["work"]
    labels = _get_json(s3, bucket, f"{work}labels.json")
    registry = Registry(s3, bucket)
    baselines = _Baselines(registry, model)
    reducer = WindowReducer()
    parts = plan_partitions(model, start, end, labels, feedback_lookback)
    keys = [partition_object({**part, "work": work}) for part in parts]
    for key in keys:
        reducer.add(_get_json(s3, bucket, key))
    result = reducer.finish(registry, baselines, model, start, end, thresholds, labels, min_labeled_rows)
    result = publish_and_store(s3, cloudwatch, sns, bucket=bucket, result=result, topic_arn=topic_arn)
    objects = [{"Key": k} for k in [*keys, f"{work}labels.json"]]
    for i in range(0, len(objects), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": objects[i : i + 1000], "Quiet": True})
    return result


def run_scheduled(
    s3: Any, cloudwatch: Any, sns: Any, settings: DriftSettings, now: datetime, models: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """One scheduled run: the latest complete window of every configured model."""
    start, end = window_ending(now, settings.window, settings.lag)
    return [
        run_drift(
            s3,
            cloudwatch,
            sns,
            bucket=settings.bucket,
            model=m,
            start=start,
            end=end,
            thresholds=settings.thresholds,
            topic_arn=settings.topic_arn,
            min_labeled_rows=settings.min_labeled_rows,
            feedback_lookback=settings.feedback_lookback,
        )
        for m in (models or settings.models)
    ]


# --- the message operators read --------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _feature_line(name: str, f: Mapping[str, Any]) -> str:
    p = f.get("p_value")
    shown = "" if p is None else ("   p < 1e-16" if p < 1e-16 else f"   p {p:.2g}")
    head = f"  {name:<24} PSI {f['psi']:.3f}{shown}"
    if f["kind"] == "numeric":
        return f"{head}   mean {_fmt(f.get('baseline_mean'))} → {_fmt(f.get('current_mean'))}"
    changes = ", ".join(
        f"{c['category'] or '(missing)'} {c['baseline_share']:.0%} → {c['current_share']:.0%}"
        for c in f.get("top_changes", [])[:3]
    )
    return f"{head}   {changes}"


def report_command(result: Mapping[str, Any]) -> str:
    w = result["window"]
    return (
        f"modeldeck drift report {result['model']} --window {w['length']} --end {w['end']} "
        f"--out drift-{result['model']}.html"
    )


def format_alarm_message(result: Mapping[str, Any], alarm_name: str | None = None) -> tuple[str, str]:
    """The (subject, body) of the SNS message for a breaching window, written for the on-call human.

    ``result`` is what :func:`run_drift` returns (or stores in ``drift/{model}/...json``); the drift
    Lambda publishes this, and the local alarm evaluator can call it with the alarm's name.
    """
    model, w, agg = result["model"], result["window"], result["aggregate"]
    versions = result["versions"]
    breaching = agg.get("breaching_versions") or agg.get("versions_judged") or list(versions)
    label = ", ".join(f"v{v}" for v in breaching) or "no version"
    subject = f"modeldeck drift: {model} {label} drifted ({w['start'][:16]}Z, {w['length']})"[:100]
    lines = [f"Drift alarm for model {model}, version {label}."]
    if alarm_name:
        lines.append(f"Alarm: {alarm_name}")
    lines += [
        f"Window: {w['start']} → {w['end']} ({w['length']}), {result['rows']:,} rows "
        f"({result.get('requests', 0):,} requests, shadow traffic excluded).",
        "",
        "Why (the alarm rule: any metric at or over its threshold):",
    ]
    for b in agg.get("breaches", []):
        lines.append(f"  {b['metric']} = {_fmt(b['value'])} ≥ {_fmt(b['threshold'])}")
    for version in breaching:
        r = versions.get(version, {})
        if r.get("status") != "ok":
            continue
        served = r["rows"]
        lines += [
            "",
            f"Version {version}: {served:,} rows; {r['drifted_count']} of {len(r['features'])} features "
            f"drifted; max PSI {r['max_psi']:.3f} ({r['max_psi_feature']}); prediction drift "
            f"{r['prediction_drift']:.3f}. Top features:",
        ]
        ranked = sorted(r["features"].items(), key=lambda kv: (not kv[1]["drifted"], -kv[1]["psi"]))
        lines += [_feature_line(n, f) + ("   DRIFTED" if f["drifted"] else "") for n, f in ranked[:5]]
        pred = r["prediction"]
        if pred.get("kind") == "classes":
            bt, ct = max(sum(pred["baseline_counts"]), 1), max(sum(pred["current_counts"]), 1)
            shares = ", ".join(
                f"{c} {b / bt:.0%} → {n / ct:.0%}"
                for c, b, n in zip(pred["categories"], pred["baseline_counts"], pred["current_counts"], strict=True)
                if b or n
            )
            lines.append(f"  predictions: {shares} (PSI {pred['psi']:.3f})")
        q = r.get("quality")
        if q and q.get("status") == "ok":
            lines.append(
                "  on feedback labels: "
                + ", ".join(f"{k} {v:.4f}" for k, v in q["metrics"].items() if v is not None)
                + f" ({q['labeled_rows']} rows)"
            )
    lines += [
        "",
        "Report (histograms baseline vs current, history):",
        f"  {report_command(result)}",
        "",
        "What to do next:",
        "  1. Open the report. Check the drifted features first: is it an upstream data problem (a unit change,",
        "     a broken feature pipeline, a new client sending defaults) or a real change in the population?",
        "  2. Upstream problem: fix it at the source. The alarm clears on the first window back under threshold.",
        "  3. Real change: check Accuracy / the primary metric on feedback labels (above, or the dashboard). If the",
        f"     model got worse, retrain on recent data (modeldeck train models/{model}.toml) and release it as a",
        "     canary; its traffic is judged against its own baseline.",
        f"  4. If only a canary drifts: modeldeck rollback {model}",
        "  5. Noise (a small or unusual window): raise the thresholds in cdk.json (drift.*) and redeploy; do not",
        "     silence the alarm.",
    ]
    return subject, "\n".join(lines)
