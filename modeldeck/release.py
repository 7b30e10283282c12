"""Safe releases: the logic behind each task of the release state machine.

A release of model version ``N`` for model ``m`` is one Step Functions execution. Its tasks call
``handle(event, clients)`` with an ``action``:

``gate``      take the model's release lock; check the card, the artifact's hash and the differential
              test against the champion; refuse if a health alarm is already in ALARM or the bake is too
              short for CloudWatch to judge it; publish (or reuse an identical) Lambda version whose
              environment pins ``MODEL_VERSION=N``; create this release's own canary alarms on it; return
              the traffic plan.
``shift``     set the alias ``live`` to the plan's next weight (``RoutingConfig``).
``sequential_check``  one look of the statistical gate during the bake (the bake is a loop of short waits):
              is the candidate worse than the champion, by always-valid sequential tests on its error
              rate, latency and prediction scores? If so the release rolls back before the bake ends.
``check``     after the bake and the metric settle time: did any of the canary's alarms reach ALARM at
              any time since they were created (alarm history, not only the state at the end)? The
              statistical gate takes its last look over the whole bake here.
``promote``   point ``live`` at the new version, move the champion, record the outcome, free the lock.
``rollback``  clear the weights (``live`` stays on the champion), record why, notify SNS, free the lock.
``refused``   the gate's failure path: free the lock if this execution took it.
``shadow``    start (or stop, with a report) mirroring live traffic to the candidate.

The lock (``releases/{model}/lock.json``, written with ``If-None-Match``) names the execution that owns
the alias while it is split. It is re-entrant for its own execution (a retried gate), freed on every
terminal path, and taken over, with the reason recorded, when its execution no longer runs. Every task
that moves the alias first checks that its execution still holds the lock, so a release an operator ended
(``rollback``, ``promote``) never moves traffic again. Every outcome and its timeline is kept in
``releases/{model}/last.json`` and ``releases/{model}/history/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from modeldeck.cloudwatch_timing import error_rate_expression, minimum_bake_seconds
from modeldeck.compare import diff_models
from modeldeck.errors import ModeldeckError, NotFoundError
from modeldeck.onnxmodel import OnnxModel
from modeldeck.registry import HOLDOUT, Registry, utcnow

log = logging.getLogger(__name__)

ALIAS = "live"
STRATEGIES = ("canary", "linear", "all-at-once", "shadow")
BAKED = ("canary", "linear")  # the strategies whose bakes the canary alarms judge
HEALTH_ALARMS = ("errors", "latency-p99", "throttles")
# CloudWatch evaluates an alarm about once a minute ("Using Amazon CloudWatch alarms").
ALARM_EVALUATION_SECONDS = 60
# The tasks around the bakes: the gate (differential test, publishing, SnapStart's optimisation of the
# version) and promote or roll back, each with Step Functions' retries.
TASK_ALLOWANCE_SECONDS = 30 * 60
MAX_ALARM_NAME = 255  # CloudWatch's limit
TERMINAL_OUTCOMES = ("promoted", "rolled-back", "refused", "shadow-complete", "stopped", "abandoned")


class ReleaseRefused(ModeldeckError):
    """A release, promotion or rollback was refused before any traffic moved."""


class ReleaseSuperseded(ModeldeckError):
    """This execution no longer holds its model's release lock (an operator ended the release, or a later
    release took over the lock of a dead one), so it must not move traffic."""


@dataclass(frozen=True)
class Policy:
    """Thresholds for the canary alarms (from the release Lambda's environment, set from the config's
    ``canary`` table by CDK)."""

    error_rate_percent: float = 5.0
    min_requests: int = 10
    latency_p99_ms: float = 1000.0
    prediction_shift: float = 0.15
    period_seconds: int = 60
    namespace: str = "modeldeck"
    alarm_prefix: str = "modeldeck"
    # The statistical gate (see ``statistical_gate``): on, its family-wise false-rollback rate per bake, how
    # often it looks, and the latency increase it tolerates (percent of the champion's mean).
    gate_enabled: bool = True
    gate_alpha: float = 0.05
    gate_interval_seconds: int = 60
    gate_latency_margin_percent: float = 20.0

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Policy:
        """The policy the release function was deployed with (defaults as in the config)."""
        return cls(
            error_rate_percent=float(env.get("CANARY_ERROR_RATE_PERCENT", 5.0)),
            min_requests=int(env.get("CANARY_MIN_REQUESTS", 10)),
            latency_p99_ms=float(env.get("CANARY_LATENCY_P99_MS", 1000)),
            prediction_shift=float(env.get("CANARY_PREDICTION_SHIFT", 0.15)),
            period_seconds=int(env.get("CANARY_PERIOD_SECONDS", 60)),
            gate_enabled=env.get("CANARY_GATE_ENABLED", "true").lower() == "true",
            gate_alpha=float(env.get("CANARY_GATE_ALPHA", 0.05)),
            gate_interval_seconds=int(env.get("CANARY_GATE_INTERVAL_SECONDS", 60)),
            gate_latency_margin_percent=float(env.get("CANARY_GATE_LATENCY_MARGIN_PERCENT", 20.0)),
            namespace=env.get("METRICS_NAMESPACE", "modeldeck"),
            alarm_prefix=env.get("ALARM_PREFIX", "modeldeck"),
        )


@dataclass
class Clients:
    """AWS clients a release needs; injected so tests and the local cloud pass their own."""

    lam: Any
    cloudwatch: Any
    sns: Any
    registry: Registry
    topic_arn: str | None = None
    policy: Policy = field(default_factory=Policy)
    sfn: Any = None
    release_state_machine: str | None = None


def plan(strategy: str, steps: int = 1, canary_weight: float = 0.1) -> list[float]:
    """The weights the candidate gets, step by step, before promotion (which is 100%)."""
    if strategy == "canary":
        return [canary_weight]
    if strategy == "linear":
        steps = max(1, steps)
        return [round(i / (steps + 1), 4) for i in range(1, steps + 1)]
    if strategy in ("all-at-once", "shadow"):
        return []
    raise ReleaseRefused(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")


def settle_seconds(period_seconds: int) -> int:
    """How long to wait after a bake before judging it: the bake's last period reaches CloudWatch a metric
    delay after it closes, and its alarms evaluate it within the next minute."""
    return minimum_bake_seconds(period_seconds) + ALARM_EVALUATION_SECONDS


def plan_seconds(strategy: str, steps: int, bake_seconds: int, period_seconds: int) -> int:
    """The longest an execution of this plan may take: each bake and its settle time, plus the tasks."""
    if strategy == "shadow":
        waits = bake_seconds
    else:
        waits = len(plan(strategy, steps)) * (bake_seconds + settle_seconds(period_seconds))
    return waits + TASK_ALLOWANCE_SECONDS


def check_bake(strategy: str, bake_seconds: int, period_seconds: int) -> None:
    """Refuse a bake too short for CloudWatch to have seen it (only canary and linear bakes are judged)."""
    shortest = minimum_bake_seconds(period_seconds)
    if strategy in BAKED and bake_seconds < shortest:
        raise ReleaseRefused(
            f"a bake of {bake_seconds} s is too short: CloudWatch receives Lambda and EMF metrics 1-3 minutes "
            f"late and the canary alarms judge whole {period_seconds} s periods, so a bake under {shortest} s "
            f"(one period plus the metric delay) would decide on nothing; bake for at least {shortest} s"
        )


def check_plan_fits(strategy: str, steps: int, bake_seconds: int, period_seconds: int, timeout_seconds: int) -> None:
    """Refuse a plan the release state machine's execution timeout would cut short (leaving the alias split)."""
    needed = plan_seconds(strategy, steps, bake_seconds, period_seconds)
    if needed > timeout_seconds:
        raise ReleaseRefused(
            f"this plan can take up to {needed // 60} minutes ({strategy}, {steps} step(s) of {bake_seconds} s "
            f"bake plus {settle_seconds(period_seconds)} s for the metrics to settle, and the tasks), but the "
            f"release state machine times out after {timeout_seconds // 60} minutes; use fewer steps or a "
            f"shorter bake, or raise the canary policy in cdk.json and redeploy"
        )


def alarm_name(prefix: str, model: str, kind: str, canary: bool = False, release: str | None = None) -> str:
    """``{prefix}-{model}-{kind}``, the monitoring stack's naming. A canary alarm belongs to one release:
    ``{prefix}-{model}-canary-{release}-{kind}``, within CloudWatch's 255 characters."""
    if not canary:
        return f"{prefix}-{model}-{kind}"
    head = f"{prefix}-{model}-canary-"
    name = f"{head}{release}-{kind}" if release else f"{head}{kind}"
    if len(name) > MAX_ALARM_NAME and release:
        name = f"{head}{hashlib.sha256(release.encode()).hexdigest()[:16]}-{kind}"
    return name


def _lock_key(model: str) -> str:
    return f"releases/{model}/lock.json"


def _record_key(model: str) -> str:
    return f"releases/{model}/last.json"


def _read(registry: Registry, key: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        response = registry.s3.get_object(Bucket=registry.bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None, None
        raise
    return json.loads(response["Body"].read()), response.get("ETag")


def read_json(registry: Registry, key: str) -> dict[str, Any] | None:
    """A JSON object of the registry bucket, or None when there is none."""
    return _read(registry, key)[0]


def write_json(
    registry: Registry, key: str, data: dict[str, Any], exclusive: bool = False, if_match: str | None = None
) -> None:
    """Write a JSON object; ``exclusive`` only if none exists, ``if_match`` only over that ETag."""
    extra = {"IfNoneMatch": "*"} if exclusive else {"IfMatch": if_match} if if_match else {}
    body = json.dumps(data, indent=1, default=str).encode()
    registry.s3.put_object(Bucket=registry.bucket, Key=key, Body=body, **extra)


def _published(lam: Any, function_name: str) -> list[dict[str, Any]]:
    return [
        fn
        for page in lam.get_paginator("list_versions_by_function").paginate(FunctionName=function_name)
        for fn in page["Versions"]
        if fn["Version"] != "$LATEST"
    ]


def _variables(config: dict[str, Any]) -> dict[str, str]:
    return dict((config.get("Environment") or {}).get("Variables") or {})


def function_versions(lam: Any, function_name: str) -> dict[str, str]:
    """Published Lambda version → the MODEL_VERSION its environment pins."""
    return {fn["Version"]: _variables(fn).get("MODEL_VERSION", "") for fn in _published(lam, function_name)}


def get_alias(lam: Any, function_name: str) -> dict[str, Any] | None:
    """The alias ``live``, or None before the first release."""
    try:
        return dict(lam.get_alias(FunctionName=function_name, Name=ALIAS))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return None
        raise


def alias_weights(alias: dict[str, Any] | None) -> dict[str, float]:
    """Function version → share of traffic on the alias."""
    if alias is None:
        return {}
    extra = {k: float(v) for k, v in ((alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}).items()}
    return {alias["FunctionVersion"]: round(1.0 - sum(extra.values()), 6), **extra}


def live_model_version(lam: Any, function_name: str) -> int | None:
    """The model version ``live`` serves, or None when nothing is released yet (``MODEL_VERSION=0``)."""
    alias = get_alias(lam, function_name)
    if alias is None:
        return None
    pinned = function_versions(lam, function_name).get(alias["FunctionVersion"], "")
    return int(pinned) if pinned.isdigit() and int(pinned) > 0 else None


# What a published version freezes ("Lambda function versions"): a version is reused only when all of it
# matches the function's current configuration with MODEL_VERSION=N.
_FROZEN = (
    "CodeSha256",
    "PackageType",
    "Runtime",
    "Handler",
    "Role",
    "MemorySize",
    "Timeout",
    "Architectures",
    "EphemeralStorage",
    "TracingConfig",
    "VpcConfig",
    "DeadLetterConfig",
    "KMSKeyArn",
    "FileSystemConfigs",
    "ImageConfigResponse",
    "LoggingConfig",
)


def _frozen(config: dict[str, Any], variables: dict[str, str]) -> dict[str, Any]:
    frozen = {key: config.get(key) for key in _FROZEN}
    frozen["Environment"] = variables
    frozen["Layers"] = sorted(layer["Arn"] for layer in config.get("Layers") or [])
    frozen["SnapStart"] = (config.get("SnapStart") or {}).get("ApplyOn", "None")
    return frozen


def publish_pinned(lam: Any, function_name: str, model_version: int) -> str:
    """A published Lambda version of the function's current code and configuration pinning ``MODEL_VERSION``.

    Only ``MODEL_VERSION`` changes. A published version freezes its code and configuration, so one is reused
    only when everything matches (after a ``cdk deploy`` that changed the handler, a new one is published).
    With SnapStart, the version is only returned once it is ``Active`` (it cannot be invoked before).
    """
    latest = lam.get_function_configuration(FunctionName=function_name)
    variables = {**_variables(latest), "MODEL_VERSION": str(model_version)}
    wanted = _frozen(latest, variables)
    same = (fn["Version"] for fn in _published(lam, function_name) if _frozen(fn, _variables(fn)) == wanted)
    version = next(same, None)
    if version is None:
        version = _publish(lam, function_name, latest, variables, model_version)
    if wanted["SnapStart"] == "PublishedVersions":
        lam.get_waiter("published_version_active").wait(
            FunctionName=function_name, Qualifier=version, WaiterConfig={"Delay": 5, "MaxAttempts": 100}
        )
    return str(version)


def _publish(
    lam: Any, function_name: str, latest: dict[str, Any], variables: dict[str, str], model_version: int
) -> str:
    if _variables(latest) != variables:
        # RevisionId: fail rather than overwrite a configuration someone changed since it was read.
        revision = {"RevisionId": latest["RevisionId"]} if latest.get("RevisionId") else {}
        lam.update_function_configuration(FunctionName=function_name, Environment={"Variables": variables}, **revision)
        lam.get_waiter("function_updated_v2").wait(FunctionName=function_name)
        latest = lam.get_function_configuration(FunctionName=function_name)
    if _variables(latest) != variables:
        raise ReleaseRefused(f"the environment of {function_name} changed while v{model_version} was being published")
    revision = {"RevisionId": latest["RevisionId"]} if latest.get("RevisionId") else {}
    published = lam.publish_version(
        FunctionName=function_name,
        CodeSha256=latest["CodeSha256"],
        Description=f"model version {model_version}",
        **revision,
    )
    pinned = _variables(published).get("MODEL_VERSION")
    if pinned != str(model_version) or published.get("CodeSha256") != latest["CodeSha256"]:
        raise ReleaseRefused(
            f"Lambda version {published['Version']} of {function_name} pins MODEL_VERSION={pinned} with code "
            f"{published.get('CodeSha256')}, not v{model_version} with {latest['CodeSha256']}; the function "
            f"changed while it was being published"
        )
    return str(published["Version"])


def set_alias(lam: Any, function_name: str, version: str, canary: str | None = None, weight: float = 0.0) -> None:
    """Point ``live`` at ``version``, giving ``canary`` the share ``weight`` (none: all to ``version``)."""
    routing = (
        {"AdditionalVersionWeights": {canary: weight}} if canary and weight > 0 else {"AdditionalVersionWeights": {}}
    )
    if get_alias(lam, function_name) is None:
        lam.create_alias(FunctionName=function_name, Name=ALIAS, FunctionVersion=version, RoutingConfig=routing)
    else:
        lam.update_alias(FunctionName=function_name, Name=ALIAS, FunctionVersion=version, RoutingConfig=routing)


def _emf(p: Policy, qid: str, metric: str, stat: str, model: str, model_version: int) -> dict[str, Any]:
    """A query of one of the inference handler's EMF metrics; it emits them under the dimension set
    (model, version), version being the MODEL_VERSION the Lambda version pins."""
    dimensions = [{"Name": "model", "Value": model}, {"Name": "version", "Value": str(model_version)}]
    return {
        "Id": qid,
        "ReturnData": False,
        "MetricStat": {
            "Stat": stat,
            "Period": p.period_seconds,
            "Metric": {"Namespace": p.namespace, "MetricName": metric, "Dimensions": dimensions},
        },
    }


def arm_canary_alarms(
    c: Clients,
    model: str,
    function_name: str,
    version: str,
    model_version: int,
    champion_model_version: int | None,
    release: str,
) -> list[str]:
    """Create this release's own canary alarms; new alarms start in INSUFFICIENT_DATA.

    They judge what clients see: the server-error rate of the candidate's requests (500/503 are successes
    to Lambda), Lambda's ``Errors`` (crashes, timeouts), p99 duration, and the shift of its mean prediction
    score from the champion's. A candidate answering without prediction scores is judged by ``check`` from
    the bake's metric totals (no alarm can see a series that is absent for the whole bake). Names carry the release,
    so no earlier release's state (``PutMetricAlarm`` keeps an existing alarm's) can judge this one.
    """
    p = c.policy
    dims = [
        {"Name": "FunctionName", "Value": function_name},
        {"Name": "Resource", "Value": f"{function_name}:{ALIAS}"},
        {"Name": "ExecutedVersion", "Value": version},
    ]
    names: list[str] = []

    def put(kind: str, description: str, **metric: Any) -> None:
        name = alarm_name(p.alarm_prefix, model, kind, canary=True, release=release)
        c.cloudwatch.put_metric_alarm(
            AlarmName=name,
            AlarmDescription=description,
            EvaluationPeriods=1,
            DatapointsToAlarm=1,
            TreatMissingData="notBreaching",
            AlarmActions=[c.topic_arn] if c.topic_arn else [],
            Tags=[{"Key": "modeldeck:model", "Value": model}],
            **metric,
        )
        names.append(name)

    # The handler counts every scoring request (`Requests`), answered or not; `Latency` and `PredictionScore`
    # exist only for answered ones, so a candidate failing every request has none in the whole bake. Whether
    # FILL gives values for a series with no datapoint in the queried range is not documented; read strictly
    # it does not, and arithmetic on an empty series is empty. So the rate's denominator is `Requests`, and
    # FILL only fills `ServerErrors`, whose emptiness means there were none (missing, notBreaching: right).
    # "Served without scores" needs the absent series itself, so no alarm judges it; `check` does, from
    # GetMetricData totals (see bake_evidence).
    put(
        "server-error-rate",
        f"Server errors (5xx) of {model} v{model_version} (Lambda version {version}) in canary, as a percentage "
        f"of its requests, once it received at least {p.min_requests} in a period",
        Metrics=[
            _emf(p, "requests", "Requests", "Sum", model, model_version),
            _emf(p, "errors", "ServerErrors", "Sum", model, model_version),
            {
                "Id": "rate",
                "Expression": error_rate_expression(p.min_requests),
                "ReturnData": True,
                "Label": "server error rate (%)",
            },
        ],
        Threshold=p.error_rate_percent,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    lambda_metric = {"Namespace": "AWS/Lambda", "Dimensions": dims, "Period": p.period_seconds}
    put(
        "errors",
        f"Crashes and timeouts (Lambda Errors) of {model} v{model_version} (Lambda version {version}) in canary",
        MetricName="Errors",
        Statistic="Sum",
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        **lambda_metric,
    )
    put(
        "latency-p99",
        f"p99 duration of {model} v{model_version} in canary",
        MetricName="Duration",
        ExtendedStatistic="p99",
        Threshold=p.latency_p99_ms,
        ComparisonOperator="GreaterThanThreshold",
        **lambda_metric,
    )
    if champion_model_version is not None:
        canary = _emf(p, "canary", "PredictionScore", "Average", model, model_version)
        champion = _emf(p, "champion", "PredictionScore", "Average", model, champion_model_version)
        put(
            "prediction-shift",
            f"Mean prediction score of {model} v{model_version} against the champion v{champion_model_version}",
            Metrics=[
                canary,
                champion,
                {
                    "Id": "shift",
                    "Expression": "ABS(canary - champion)",
                    "ReturnData": True,
                    "Label": "prediction shift",
                },
            ],
            Threshold=p.prediction_shift,
            ComparisonOperator="GreaterThanThreshold",
        )
    return names


def delete_alarms(c: Clients, names: list[str]) -> None:
    """Remove a finished release's canary alarms (DeleteAlarms takes up to 100 names)."""
    for i in range(0, len(names), 100):
        c.cloudwatch.delete_alarms(AlarmNames=names[i : i + 100])


def alarm_states(cloudwatch: Any, names: list[str]) -> dict[str, dict[str, Any]]:
    """The named alarms as DescribeAlarms returns them."""
    if not names:
        return {}
    alarms: dict[str, dict[str, Any]] = {}
    for page in cloudwatch.get_paginator("describe_alarms").paginate(AlarmNames=names):
        for alarm in page.get("MetricAlarms", []) + page.get("CompositeAlarms", []):
            alarms[alarm["AlarmName"]] = alarm
    return alarms


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def alarms_fired_since(cloudwatch: Any, names: list[str], since: str) -> dict[str, str]:
    """Each alarm that was in ALARM at any time since ``since`` → the reason CloudWatch gave.

    The state at the end of a bake is not enough: an alarm that fired early in the bake and recovered
    would pass. Its history of state updates ("DescribeAlarmHistory", HistoryItemType StateUpdate) shows
    every transition.
    """
    fired: dict[str, str] = {}
    start = _parse_time(since)
    for name in names:
        pages = cloudwatch.get_paginator("describe_alarm_history").paginate(
            AlarmName=name, HistoryItemType="StateUpdate", StartDate=start, ScanBy="TimestampAscending"
        )
        for page in pages:
            for item in page.get("AlarmHistoryItems", []):
                new = json.loads(item.get("HistoryData") or "{}").get("newState") or {}
                if new.get("stateValue") == "ALARM" and name not in fired:
                    fired[name] = str(new.get("stateReason") or item.get("HistorySummary", ""))
    for name, alarm in alarm_states(cloudwatch, names).items():
        if alarm["StateValue"] == "ALARM" and name not in fired:
            fired[name] = str(alarm.get("StateReason", ""))
    return fired


# The candidate's totals over its bake, as GetMetricData returns them: (query id, EMF metric, statistic).
EVIDENCE = (
    ("requests", "Requests", "Sum"),
    ("server_errors", "ServerErrors", "Sum"),
    ("scores", "PredictionScore", "SampleCount"),
)


def bake_evidence(
    cloudwatch: Any, p: Policy, model: str, model_version: int, start: datetime, end: datetime
) -> dict[str, float]:
    """The candidate's requests, server errors and prediction scores in ``[start, end]``, from its EMF metrics.

    Counted here rather than judged by an alarm: a series with no datapoint in the whole range is empty, and
    an alarm's expression over it is missing data, which cannot breach ("Metric math syntax and functions"
    does not promise FILL values there). Here an empty ``Values`` is simply a total of 0. The range is widened
    to whole periods ("GetMetricData": StartTime and EndTime are rounded to the period).
    """
    return metric_totals(cloudwatch, p, model, [model_version], start, end)[model_version]


def metric_totals(
    cloudwatch: Any, p: Policy, model: str, model_versions: list[int], start: datetime, end: datetime
) -> dict[int, dict[str, float]]:
    """The ``EVIDENCE`` totals of each model version in ``[start, end]``, in one GetMetricData call."""
    period = p.period_seconds
    first = datetime.fromtimestamp(math.floor(start.timestamp() / period) * period, UTC)
    last = datetime.fromtimestamp(math.ceil(end.timestamp() / period) * period, UTC)
    queries = [
        {**_emf(p, f"{qid}_{i}", metric, stat, model, v), "ReturnData": True}
        for i, v in enumerate(model_versions)
        for qid, metric, stat in EVIDENCE
    ]
    totals = {v: {qid: 0.0 for qid, _, _ in EVIDENCE} for v in model_versions}
    for page in cloudwatch.get_paginator("get_metric_data").paginate(
        MetricDataQueries=queries, StartTime=first, EndTime=last, ScanBy="TimestampAscending"
    ):
        for result in page.get("MetricDataResults", []):
            qid, _, i = result["Id"].rpartition("_")
            totals[model_versions[int(i)]][qid] += float(sum(result.get("Values") or []))
    return totals


def judge_evidence(totals: dict[str, float], p: Policy) -> str | None:
    """Why the bake's totals show an unhealthy candidate, or None. Below ``min_requests`` nothing is judged,
    as the server-error-rate alarm does not judge a period with fewer."""
    requests, errors, scores = totals["requests"], totals["server_errors"], totals["scores"]
    if requests < p.min_requests:
        return None
    rate = 100 * errors / requests
    if rate >= p.error_rate_percent:
        return (
            f"{errors:g} of its {requests:g} requests in the bake were server errors ({rate:.1f}%, the limit is "
            f"{p.error_rate_percent:g}%)"
        )
    if scores == 0:
        return f"it received {requests:g} requests in the bake but emitted no prediction score"
    return None


@dataclass
class Moments:
    """Sufficient statistics of one numeric series (count, sum, sum of squares): they merge by addition."""

    n: int = 0
    total: float = 0.0
    sumsq: float = 0.0

    def add(self, value: float) -> None:
        """Count one observation."""
        self.n += 1
        self.total += value
        self.sumsq += value * value

    @property
    def mean(self) -> float:
        """The mean, 0 without data."""
        return self.total / self.n if self.n else 0.0


@dataclass
class VersionSample:
    """What the gate knows about one model version during a bake: its server errors among its requests
    (EMF metrics, every request) and its latency and prediction scores (the captured requests)."""

    requests: float = 0.0
    server_errors: float = 0.0
    latency_ms: Moments = field(default_factory=Moments)
    score: Moments = field(default_factory=Moments)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary for the release record."""
        return {
            "requests": self.requests,
            "server_errors": self.server_errors,
            "captured": self.latency_ms.n,
            "latency_ms_mean": round(self.latency_ms.mean, 3),
            "scored": self.score.n,
            "score_mean": round(self.score.mean, 4),
        }


def record_score(record: dict[str, Any]) -> float | None:
    """A captured request's prediction score, as the handler's ``PredictionScore`` defines it
    (``modeldeck.serving.prediction_score``): the mean positive-class probability (binary), mean top-class
    probability (multiclass) or mean prediction (regression); None when the record has none."""
    outputs = record.get("outputs") or {}
    proba = outputs.get("probabilities")
    if proba:
        column = [row[1] if len(row) == 2 else max(row) for row in proba if row]
        return sum(column) / len(column) if column else None
    labels = outputs.get("label") or []
    if labels and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in labels):
        return sum(float(x) for x in labels) / len(labels)
    return None


def gate_samples(
    c: Clients, model: str, candidate: int, champion: int, start: datetime, end: datetime
) -> dict[int, VersionSample]:
    """The candidate's and the champion's samples over ``[start, end)``: requests and server errors from
    GetMetricData (``metric_totals``), latency and prediction scores from the captured requests each
    version answered itself (shadow copies aside). Both lag by the same CloudWatch and Firehose delays, so
    the comparison is fair at every look."""
    from modeldeck.capture import read_records

    totals = metric_totals(c.cloudwatch, c.policy, model, [candidate, champion], start, end)
    samples = {
        v: VersionSample(requests=totals[v]["requests"], server_errors=totals[v]["server_errors"])
        for v in (candidate, champion)
    }
    for rec in read_records(c.registry.s3, c.registry.bucket, "capture", model, start, end):
        if rec.get("shadow"):
            continue
        try:
            sample = samples.get(int(rec.get("model_version", -1)))
        except (TypeError, ValueError):
            continue
        if sample is None:
            continue
        latency = rec.get("latency_ms")
        if isinstance(latency, (int, float)) and math.isfinite(latency):
            sample.latency_ms.add(float(latency))
        score = record_score(rec)
        if score is not None and math.isfinite(score):
            sample.score.add(score)
    return samples


# The gate's one-sided tests; its alpha is split evenly over them (Bonferroni), so a healthy candidate
# is rolled back with probability at most alpha per bake however often the gate looks.
GATE_TESTS = ("error-rate", "latency", "prediction-shift-up", "prediction-shift-down")
# The mSPRT mixing scales (an equal mixture, ``modeldeck.sequential``): the error rate's reach from an increase
# of one point (1% -> 2%) to a candidate failing every request; latency's are in champion standard deviations;
# the prediction score's from the tolerated shift to half the score's range.
GATE_ERROR_RATE_MIXING = (0.01, 0.05, 0.25)
GATE_LATENCY_MIXING = (0.1, 0.5, 2.0)
GATE_SCORE_MIXING = (1.0, 3.0)
# Below this many observations per version a test is not run (the normal approximation needs a few).
GATE_MIN_SAMPLES = 10


def statistical_gate(samples: dict[int, VersionSample], candidate: int, champion: int, p: Policy) -> dict[str, Any]:
    """Is the candidate worse than the champion, on the evidence so far? Always-valid one-sided mSPRT tests
    (``modeldeck.sequential``), each at ``p.gate_alpha / 4``:

    - ``error-rate``: its server-error rate is higher (difference of proportions);
    - ``latency``: its mean captured latency is higher than the champion's by more than
      ``gate_latency_margin_percent`` of the champion's mean (a new version's first requests are a little
      slower; that is not a reason to roll back);
    - ``prediction-shift-up`` / ``-down``: its mean prediction score differs from the champion's by more than
      the policy's ``prediction_shift`` (the tolerance of the prediction-shift alarm), in either direction.

    Returns ``{"worse": bool, "reason": str | None, "tests": [...]}``; ``reason`` names the test and its
    p-value.
    """
    from modeldeck.sequential import compare_means, compare_proportions

    cand, champ = samples[candidate], samples[champion]
    level = p.gate_alpha / len(GATE_TESTS)
    tests: list[dict[str, Any]] = []
    names = (f"v{champion}", f"v{candidate}")

    def add(name: str, comparison: Any, unit: str, margin: float = 0.0) -> None:
        tests.append(
            {
                "test": name,
                "p_value": comparison.p_value,
                "alpha": level,
                "candidate": comparison.treatment_mean,
                "champion": comparison.control_mean,
                "margin": margin,
                "n": [comparison.n_treatment, comparison.n_control],
                "unit": unit,
            }
        )

    if cand.requests >= GATE_MIN_SAMPLES and champ.requests >= GATE_MIN_SAMPLES:
        add(
            "error-rate",
            compare_proportions(
                int(min(champ.server_errors, champ.requests)),
                int(champ.requests),
                int(min(cand.server_errors, cand.requests)),
                int(cand.requests),
                alpha=level,
                names=names,
                metric="server error rate",
                alternative="greater",
                mixing_sd=GATE_ERROR_RATE_MIXING,
                fixed=False,
            ),
            "rate",
        )
    lat_c, lat_h = cand.latency_ms, champ.latency_ms
    if lat_c.n >= GATE_MIN_SAMPLES and lat_h.n >= GATE_MIN_SAMPLES:
        # H0: candidate mean <= champion mean + margin; shifting the candidate's values by the margin turns it
        # into the one-sided test of a difference of means.
        margin = p.gate_latency_margin_percent / 100 * lat_h.mean
        shifted = lat_c.total - margin * lat_c.n
        shifted_sq = lat_c.sumsq - 2 * margin * lat_c.total + margin * margin * lat_c.n
        sd = math.sqrt(max(lat_h.sumsq / lat_h.n - lat_h.mean**2, 0.0)) or max(lat_h.mean, 1.0)
        cmp = compare_means(
            lat_h.n,
            lat_h.total,
            lat_h.sumsq,
            lat_c.n,
            shifted,
            shifted_sq,
            alpha=level,
            names=names,
            metric="latency_ms",
            alternative="greater",
            mixing_sd=[f * sd for f in GATE_LATENCY_MIXING],
            fixed=False,
        )
        add("latency", replace(cmp, treatment_mean=lat_c.mean), "ms", margin)
    sc_c, sc_h = cand.score, champ.score
    if sc_c.n >= GATE_MIN_SAMPLES and sc_h.n >= GATE_MIN_SAMPLES:
        shift = p.prediction_shift
        for name, sign in (("prediction-shift-up", 1.0), ("prediction-shift-down", -1.0)):
            total = sc_c.total - sign * shift * sc_c.n
            sumsq = sc_c.sumsq - 2 * sign * shift * sc_c.total + shift * shift * sc_c.n
            cmp = compare_means(
                sc_h.n,
                sc_h.total,
                sc_h.sumsq,
                sc_c.n,
                total,
                sumsq,
                alpha=level,
                names=names,
                metric="prediction score",
                alternative="greater" if sign > 0 else "less",
                mixing_sd=[f * shift for f in GATE_SCORE_MIXING],
                fixed=False,
            )
            add(name, replace(cmp, treatment_mean=sc_c.mean), "score", shift)
    failing = [t for t in tests if t["p_value"] < level]
    if not failing:
        return {"worse": False, "reason": None, "tests": tests}
    worst = min(failing, key=lambda t: t["p_value"])
    what = {
        "error-rate": "server-error rate",
        "latency": f"mean latency (ms, beyond a margin of {worst['margin']:.3g})",
        "prediction-shift-up": f"mean prediction score (beyond the tolerated shift of {worst['margin']:g})",
        "prediction-shift-down": f"mean prediction score (beyond the tolerated shift of {worst['margin']:g})",
    }[worst["test"]]
    reason = (
        f"statistical gate, {worst['test']} test: the candidate v{candidate}'s {what} is worse than the champion "
        f"v{champion}'s ({worst['candidate']:.4g} vs {worst['champion']:.4g}, n = {worst['n'][0]} vs "
        f"{worst['n'][1]}); always-valid p = {worst['p_value']:.2g} < {level:.3g} (mSPRT, alpha {p.gate_alpha:g} "
        f"over {len(GATE_TESTS)} tests)"
    )
    return {"worse": True, "reason": reason, "tests": tests}


def sequential_check(event: dict[str, Any], c: Clients) -> dict[str, Any]:
    """One look of the statistical gate during a bake (the state machine's ``SequentialCheck``, after each
    ``Bake`` wait): compare the candidate with the champion over ``[shift, now]``; ``worse`` sends the release
    to ``RollBack`` with the gate's reason; otherwise the next wait is the gate's interval or what is left
    of the bake (``bake_left``; 0 goes on to the settle wait and the alarm check)."""
    _require_lock(c, event)
    left = max(0, int(event.get("bake_left", 0)) - int(event.get("gate_wait", 0)))
    out = {**event, "bake_left": left, "gate_wait": min(gate_interval(c.policy), left), "worse": False}
    if not gate_active(event, c.policy):
        return out
    model, candidate, champion = event["model"], int(event["version"]), int(event["live_model"])
    start = _parse_time(event["shifted_at"])
    end = _parse_time(utcnow())
    verdict = statistical_gate(gate_samples(c, model, candidate, champion, start, end), candidate, champion, c.policy)
    if verdict["worse"]:
        record = _load_record(c, model)
        _timeline(
            record,
            "gate-checked",
            step=event["step"] + 1,
            worse=True,
            tests=verdict["tests"],
            **{"from": start.isoformat(), "to": end.isoformat()},
        )
        _save_record(c, record)
        out.update(
            worse=True, cause={"error": "statistical-gate", "reason": verdict["reason"], "tests": verdict["tests"]}
        )
    return out


def gate_interval(p: Policy) -> int:
    """Seconds between the gate's looks: never under one metric period (no new datapoint before that)."""
    return max(p.gate_interval_seconds, p.period_seconds)


def gate_active(event: dict[str, Any], p: Policy) -> bool:
    """The gate runs when enabled and there is a champion to compare with."""
    return p.gate_enabled and event.get("live_model") is not None


def _timeline(record: dict[str, Any], event: str, **details: Any) -> None:
    record.setdefault("timeline", []).append({"at": utcnow(), "event": event, **details})


def _load_record(c: Clients, model: str) -> dict[str, Any]:
    record = read_json(c.registry, _record_key(model))
    if record is None:
        raise ReleaseRefused(f"no release record for {model}")
    return record


def _save_record(c: Clients, record: dict[str, Any]) -> None:
    write_json(c.registry, _record_key(record["model"]), record)


def _history_key(record: dict[str, Any]) -> str:
    return f"releases/{record['model']}/history/{record['started_at']}-v{record['version']}.json"


def _finish(c: Clients, record: dict[str, Any], outcome: str) -> None:
    """Record the outcome, remove the release's canary alarms and free its lock (if it still holds it)."""
    record["outcome"] = outcome
    record["finished_at"] = utcnow()
    if record.get("alarms"):
        delete_alarms(c, list(record["alarms"]))
    _save_record(c, record)
    write_json(c.registry, _history_key(record), record)
    _release_lock(c, record["model"], record.get("execution"))


def _release_lock(c: Clients, model: str, execution: str | None) -> None:
    lock = read_json(c.registry, _lock_key(model))
    if lock is not None and lock.get("execution") == execution:
        c.registry.s3.delete_object(Bucket=c.registry.bucket, Key=_lock_key(model))


def _require_lock(c: Clients, event: dict[str, Any]) -> None:
    """Raise ReleaseSuperseded unless this execution still holds its model's lock: checked before any task
    moves the alias, so a release that an operator ended never moves traffic again."""
    lock = read_json(c.registry, _lock_key(event["model"]))
    if lock is None or lock.get("execution") != event.get("execution"):
        holder = f"held by {lock.get('execution')}" if lock else "free"
        raise ReleaseSuperseded(
            f"release {event.get('execution')} of {event['model']} v{event.get('version')} no longer holds the "
            f"release lock (now {holder}); it moves no traffic"
        )


def _notify(c: Clients, subject: str, message: str) -> None:
    # The outcome is already recorded; a lost notification must not undo or repeat it.
    if c.topic_arn:
        try:
            c.sns.publish(TopicArn=c.topic_arn, Subject=subject[:99], Message=message)
        except ClientError as exc:
            log.warning("release notification not sent: %s", exc)


def gate(event: dict[str, Any], c: Clients) -> dict[str, Any]:
    """Everything checked before traffic moves. Raises ReleaseRefused (nothing changed) on failure."""
    model, version = event["model"], int(event["version"])
    function_name = event["function_name"]
    # Step Functions names the execution; a direct call gets a unique name of its own.
    execution = event.get("execution") or f"direct-{uuid.uuid4().hex[:12]}"
    strategy = event.get("strategy", "canary")
    steps = plan(strategy, int(event.get("steps", 1)), float(event.get("canary_weight", 0.1)))
    record: dict[str, Any] = {
        "model": model,
        "version": version,
        "strategy": strategy,
        "execution": execution,
        "execution_arn": event.get("execution_arn"),
        "started_at": utcnow(),
        "function_name": function_name,
        "outcome": "in-progress",
    }
    _timeline(record, "requested", strategy=strategy, plan=steps)
    try:
        _acquire_lock(c, record)
    except ReleaseRefused as exc:
        # The running release owns last.json; the refusal is only added to the history.
        record.update(outcome="refused", gate={"passed": False, "reason": str(exc)}, finished_at=utcnow())
        write_json(c.registry, _history_key(record), record)
        raise
    try:
        result = _gate_checks(event, c, record, model, version, function_name, strategy, steps)
    except Exception as exc:
        record["gate"] = {"passed": False, "reason": str(exc)}
        _timeline(record, "gate-failed", reason=str(exc))
        _finish(c, record, "refused")
        raise ReleaseRefused(f"release of {model} v{version} refused: {exc}") from None
    return result


def _acquire_lock(c: Clients, record: dict[str, Any]) -> None:
    """Take the model's release lock for this execution.

    Re-entrant: a retried gate of the same execution keeps it. A lock whose execution no longer runs
    (it failed, timed out or was aborted) is taken over, and why is recorded in both releases' timelines.
    """
    model, execution = record["model"], record["execution"]
    key = _lock_key(model)
    mine = {"execution": execution, "execution_arn": record.get("execution_arn"), "version": record["version"]}
    try:
        write_json(c.registry, key, {**mine, "at": utcnow()}, exclusive=True)
        return
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "PreconditionFailed":
            raise
    holder, etag = _read(c.registry, key)
    holder = holder or {}
    if holder.get("execution") == execution:
        return
    status = _execution_status(c, holder)
    if status in (None, "RUNNING", "PENDING_REDRIVE"):
        raise ReleaseRefused(
            f"a release of {model} is already in flight: v{holder.get('version')} "
            f"(execution {holder.get('execution')}, since {holder.get('at')}); wait for it, or "
            f"`modeldeck rollback {model}` to stop it"
        )
    reason = f"execution {holder.get('execution')} (v{holder.get('version')}) holding the lock is {status}"
    try:
        write_json(c.registry, key, {**mine, "at": utcnow(), "took_over": reason}, if_match=etag)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "PreconditionFailed":
            raise
        raise ReleaseRefused(f"another release of {model} took the lock first; try again") from None
    _timeline(record, "lock-taken-over", reason=reason)
    _close_dead_release(c, model, holder, reason)


def _execution_status(c: Clients, holder: dict[str, Any]) -> str | None:
    """The holder's Step Functions status; None when it cannot be known (no ARN, no client)."""
    arn = holder.get("execution_arn")
    if not arn or c.sfn is None:
        return None
    try:
        return str(c.sfn.describe_execution(executionArn=arn)["status"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ExecutionDoesNotExist":
            return "MISSING"
        raise


def _close_dead_release(c: Clients, model: str, holder: dict[str, Any], reason: str) -> None:
    """A release whose execution died mid-way: give the alias back to the version it split from, remove
    its shadow switch and alarms, and record it as abandoned."""
    record = read_json(c.registry, _record_key(model))
    if record is None or record.get("execution") != holder.get("execution") or record.get("outcome") != "in-progress":
        return
    function_name = str(record.get("function_name") or "")
    alias = get_alias(c.lam, function_name) if function_name else None
    if alias is not None and len(alias_weights(alias)) > 1:
        set_alias(c.lam, function_name, alias["FunctionVersion"])
    if record.get("strategy") == "shadow":
        c.registry.s3.delete_object(Bucket=c.registry.bucket, Key=f"models/{model}/shadow.json")
    _timeline(record, "abandoned", reason=reason)
    record["cause"] = {"error": "abandoned", "reason": reason}
    record["outcome"], record["finished_at"] = "abandoned", utcnow()
    if record.get("alarms"):
        delete_alarms(c, list(record["alarms"]))
    write_json(c.registry, _history_key(record), record)


def _gate_checks(
    event: dict[str, Any],
    c: Clients,
    record: dict[str, Any],
    model: str,
    version: int,
    function_name: str,
    strategy: str,
    steps: list[float],
) -> dict[str, Any]:
    registry = c.registry
    card = registry.get_card(model, version)  # NotFoundError: no card, no release
    candidate = OnnxModel(card, registry.get_model_bytes(card))  # RegistryError on a hash mismatch
    firing = [
        name
        for name, alarm in alarm_states(
            c.cloudwatch, [alarm_name(c.policy.alarm_prefix, model, kind) for kind in HEALTH_ALARMS]
        ).items()
        if alarm["StateValue"] == "ALARM"
    ]
    if firing:
        raise ReleaseRefused(
            f"health alarm(s) already in ALARM: {', '.join(firing)}. Fix the live version first; "
            f"once the cause is gone the alarm returns to OK (see the runbook: a stuck alarm)"
        )
    experiment = read_json(registry, f"models/{model}/experiment.json")
    if experiment is not None:
        # A release would change what the experiment's champion serves mid-test (and its traffic split).
        raise ReleaseRefused(
            f"experiment {experiment.get('id')} is running on {model}; conclude it first: "
            f"`modeldeck experiment conclude {model} --promote VERSION` releases a variant, `--keep` keeps the champion"
        )
    alias = get_alias(c.lam, function_name)
    versions = function_versions(c.lam, function_name)
    live_fn = alias["FunctionVersion"] if alias else None
    live_model = (
        int(versions[live_fn])
        if live_fn and versions.get(live_fn, "").isdigit() and int(versions[live_fn]) > 0
        else None
    )
    if alias and len(alias_weights(alias)) > 1:
        raise ReleaseRefused(
            f"the alias {ALIAS} is split ({alias_weights(alias)}) with no release owning it; "
            f"run `modeldeck rollback {model}` first"
        )
    champion = registry.get_champion(model)
    if live_model == version:
        raise ReleaseRefused(f"v{version} is already live")
    first = live_fn is None or live_model is None
    bake_seconds = int(event.get("bake_seconds", 600))
    if not first and steps:
        check_bake(strategy, bake_seconds, c.policy.period_seconds)
    gate_result: dict[str, Any] = {"passed": True, "card": True, "hash": True}
    baseline_version = champion or live_model
    if baseline_version is not None and baseline_version != version:
        champ_card = registry.get_card(model, baseline_version)
        result = diff_models(
            OnnxModel(champ_card, registry.get_model_bytes(champ_card)),
            candidate,
            registry.get_json(model, version, HOLDOUT),
        )
        gate_result.update(
            champion=baseline_version,
            agreement=result.agreement,
            regression=result.regression,
            primary_metric=result.primary_metric,
            tolerance=result.tolerance,
        )
        if not result.passed:
            raise ReleaseRefused(
                f"the differential test against champion v{baseline_version} failed: "
                f"{result.primary_metric} regresses by {result.regression:.4f} (tolerance "
                f"{result.tolerance}); agreement {result.agreement:.2%}"
            )
    fn_version = publish_pinned(c.lam, function_name, version)
    tag = f"v{version}-{record['execution']}"
    alarms = [] if first else arm_canary_alarms(c, model, function_name, fn_version, version, live_model, tag)
    record.update(
        gate=gate_result,
        candidate_function_version=fn_version,
        live_function_version=live_fn,
        live_model_version=live_model,
        alarms=alarms,
        first_release=first,
        plan=steps,
    )
    _timeline(
        record,
        "gate-passed",
        function_version=fn_version,
        **{k: v for k, v in gate_result.items() if k in ("agreement", "regression")},
    )
    _save_record(c, record)
    return {
        "model": model,
        "version": version,
        "function_name": function_name,
        "candidate": fn_version,
        "live": live_fn,
        "live_model": live_model,
        "first_release": first,
        "plan": steps,
        "step": 0,
        "steps": len(steps),
        "strategy": strategy,
        "alarms": alarms,
        "bake_seconds": bake_seconds,
        "settle_seconds": settle_seconds(c.policy.period_seconds),
        "execution": record["execution"],
        "since": record["started_at"],
    }


def refused(event: dict[str, Any], c: Clients) -> dict[str, Any]:
    """The gate's failure path (a refusal, a crash or a timeout of the gate): if this execution took the
    lock, finish its record as refused and free the lock; another release's lock is left alone."""
    model, execution = event["model"], event.get("execution")
    lock = read_json(c.registry, _lock_key(model))
    if lock is None or lock.get("execution") != execution:
        return {**event, "outcome": "refused"}
    record = read_json(c.registry, _record_key(model))
    if record is not None and record.get("execution") == execution and record.get("outcome") == "in-progress":
        reason = _parse_cause((event.get("error") or {}).get("Cause", "")).get("reason", "the gate failed")
        record["gate"] = {"passed": False, "reason": reason}
        _timeline(record, "gate-failed", reason=reason)
        _finish(c, record, "refused")
    else:
        _release_lock(c, model, execution)
    return {**event, "outcome": "refused"}


def shift(event: dict[str, Any], c: Clients) -> dict[str, Any]:
    """Give the candidate the plan's weight for the current step."""
    _require_lock(c, event)
    weight = float(event["plan"][event["step"]])
    set_alias(c.lam, event["function_name"], event["live"], event["candidate"], weight)
    record = _load_record(c, event["model"])
    shifted_at = utcnow()
    _timeline(record, "shift", weight=weight, step=event["step"] + 1, of=event["steps"])
    _save_record(c, record)
    bake = int(event.get("bake_seconds", 0))
    # The bake is a series of waits, each followed by a look of the statistical gate; they add up to the bake.
    wait = min(gate_interval(c.policy), bake) if gate_active(event, c.policy) else bake
    return {**event, "weight": weight, "shifted_at": shifted_at, "bake_left": bake, "gate_wait": wait}


def check(event: dict[str, Any], c: Clients) -> dict[str, Any]:
    """After a bake and the metric settle time: healthy when none of the release's canary alarms was in
    ALARM at any time since they were created, the bake's own totals (:func:`bake_evidence` over
    ``[shift, shift + bake]``) show no server-error rate at the limit and no traffic answered without scores,
    and the statistical gate's last look over the same window does not find the candidate worse."""
    _require_lock(c, event)
    names = list(event.get("alarms", []))
    record = _load_record(c, event["model"])
    fired = alarms_fired_since(c.cloudwatch, names, event.get("since") or record["started_at"])
    states = alarm_states(c.cloudwatch, names)
    shifted = event.get("shifted_at") or next(
        (e["at"] for e in reversed(record.get("timeline", [])) if e.get("event") == "shift"), record["started_at"]
    )
    start = _parse_time(shifted)
    end = datetime.fromtimestamp(start.timestamp() + int(event.get("bake_seconds", 0)), UTC)
    evidence = bake_evidence(c.cloudwatch, c.policy, event["model"], int(event["version"]), start, end)
    verdict = judge_evidence(evidence, c.policy)
    # The statistical gate's last look, over the whole bake now that its last minutes have settled.
    sequential: dict[str, Any] | None = None
    if gate_active(event, c.policy):
        candidate, champion = int(event["version"]), int(event["live_model"])
        samples = gate_samples(c, event["model"], candidate, champion, start, end)
        sequential = statistical_gate(samples, candidate, champion, c.policy)
        sequential["samples"] = {f"v{v}": s.to_dict() for v, s in samples.items()}
    _timeline(
        record,
        "bake-checked",
        step=event["step"] + 1,
        alarms={name: a["StateValue"] for name, a in states.items()},
        fired=sorted(fired),
        evidence={**evidence, "from": start.isoformat(), "to": end.isoformat()},
        **({"unhealthy": verdict} if verdict else {}),
        **({"statistical_gate": sequential} if sequential else {}),
    )
    _save_record(c, record)
    worse = bool(sequential and sequential["worse"])
    out = {**event, "healthy": not fired and verdict is None and not worse, "step": event["step"] + 1}
    out["done"] = out["step"] >= event["steps"]
    if fired:
        name, reason = next(iter(fired.items()))
        out["cause"] = {"alarm": name, "reason": reason, "evidence": evidence}
    elif verdict:
        out["cause"] = {"error": "evidence", "reason": verdict, "evidence": evidence}
    elif sequential and worse:
        out["cause"] = {"error": "statistical-gate", "reason": sequential["reason"], "tests": sequential["tests"]}
    return out


def promote(event: dict[str, Any], c: Clients) -> dict[str, Any]:
    """All traffic to the candidate; the champion moves; the previous version stays for rollback."""
    _require_lock(c, event)
    model, version = event["model"], int(event["version"])
    set_alias(c.lam, event["function_name"], event["candidate"])
    previous = c.registry.get_champion(model)
    if previous != version:  # idempotent when Step Functions retries this task
        reason = f"released with {event.get('strategy')} ({event.get('execution')})"
        c.registry.set_champion(model, version, reason=reason)
    record = _load_record(c, model)
    _timeline(record, "promoted", function_version=event["candidate"], previous_champion=previous)
    _finish(c, record, "promoted")
    _notify(
        c,
        f"modeldeck: {model} v{version} promoted",
        f"{model} v{version} is live (Lambda version {event['candidate']}) after a "
        f"{event.get('strategy')} release. The previous champion v{previous} stays available: "
        f"`modeldeck rollback {model}` returns to it.",
    )
    return {**event, "outcome": "promoted"}


def rollback(event: dict[str, Any], c: Clients) -> dict[str, Any]:
    """Clear the weights so the champion serves everything; record and announce why."""
    _require_lock(c, event)
    model, function_name = event["model"], event["function_name"]
    live = event.get("live")
    cause = event.get("cause") or {}
    if isinstance(cause, str):
        cause = _parse_cause(cause)
    if live:
        set_alias(c.lam, function_name, live)
    if event.get("strategy") == "shadow":
        c.registry.s3.delete_object(Bucket=c.registry.bucket, Key=f"models/{model}/shadow.json")
    live_model = event.get("live_model")
    if live_model and c.registry.get_champion(model) == int(event.get("version", -1)):
        # A Promote that failed half-way moved the champion; it follows the alias back.
        c.registry.set_champion(model, int(live_model), reason=f"rollback of {event.get('execution')}")
    record = read_json(c.registry, _record_key(model)) or {
        "model": model,
        "version": event.get("version"),
        "started_at": utcnow(),
        "execution": event.get("execution"),
    }
    _timeline(record, "rolled-back", cause=cause)
    record["cause"] = cause
    _finish(c, record, "rolled-back")
    alarm = cause.get("alarm") or cause.get("error") or "a failed step"
    _notify(
        c,
        f"modeldeck: {model} v{event.get('version')} rolled back",
        f"Release of {model} v{event.get('version')} (Lambda version {event.get('candidate')}) was rolled back "
        f"automatically.\n\nWhy: {alarm} — {cause.get('reason', '')}\n"
        f"Now: all traffic is on the champion (Lambda version {live}); nothing else changed.\n"
        f"Next: inspect the canary with `modeldeck status {model}` and its logs; fix and retrain, then "
        f"`modeldeck release {model} <version>` again. If the alarm was noise, raise its threshold in the "
        f"canary policy (cdk.json) rather than re-releasing blindly.",
    )
    return {**event, "outcome": "rolled-back"}


def _parse_cause(raw: str) -> dict[str, Any]:
    """Step Functions' Catch gives ``{"Error": ..., "Cause": "<json or text>"}``; keep it readable."""
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {"error": "task failed", "reason": raw[:500]}
    if isinstance(parsed, dict):
        return {"error": parsed.get("errorType", "task failed"), "reason": str(parsed.get("errorMessage", ""))[:500]}
    return {"error": "task failed", "reason": str(parsed)[:500]}


def failed(event: dict[str, Any], c: Clients) -> dict[str, Any]:
    """A Catch landed here: roll back with the error as the cause."""
    error = event.get("error") or {}
    cause = _parse_cause(error.get("Cause", "")) if isinstance(error, dict) else {"reason": str(error)}
    if isinstance(error, dict) and error.get("Error"):
        cause["error"] = error["Error"]
    return rollback({**event, "cause": cause}, c)


def shadow(event: dict[str, Any], c: Clients) -> dict[str, Any]:
    """Start mirroring: the live version sends copies of requests to the candidate, whose outputs are
    only captured. Stopping writes the shadow report into the release record."""
    _require_lock(c, event)
    model = event["model"]
    key = f"models/{model}/shadow.json"  # under the model prefix the inference role may read
    if event.get("stop"):
        c.registry.s3.delete_object(Bucket=c.registry.bucket, Key=key)
        record = _load_record(c, model)
        record["shadow_report"] = shadow_report(c.registry, model, record["started_at"], utcnow())
        _timeline(record, "shadow-stopped", **record["shadow_report"])
        _finish(c, record, "shadow-complete")
        return {**event, "outcome": "shadow-complete"}
    write_json(
        c.registry,
        key,
        {
            "function_name": event["function_name"],
            "qualifier": event["candidate"],
            "model_version": event["version"],
            "execution": event.get("execution"),
            "started_at": utcnow(),
        },
    )
    record = _load_record(c, model)
    _timeline(record, "shadow-started", function_version=event["candidate"])
    _save_record(c, record)
    return event


def start(event: dict[str, Any], c: Clients) -> dict[str, Any]:
    """Start a release execution (the training pipeline's hand-over)."""
    if c.sfn is None or not c.release_state_machine:
        raise ReleaseRefused("this release function has no release state machine to start")
    name = f"{event['model']}-v{event['version']}-{uuid.uuid4().hex[:8]}"
    started = c.sfn.start_execution(stateMachineArn=c.release_state_machine, name=name, input=json.dumps(event))
    return {"execution_arn": started["executionArn"], "name": name}


ACTIONS: dict[str, Callable[[dict[str, Any], Clients], dict[str, Any]]] = {
    "start": start,
    "gate": gate,
    "refused": refused,
    "shift": shift,
    "sequential_check": sequential_check,
    "check": check,
    "promote": promote,
    "rollback": rollback,
    "failed": failed,
    "shadow": shadow,
}


def handle(event: dict[str, Any], c: Clients) -> dict[str, Any]:
    """Dispatch a state machine task: ``{"action", "event": <state input>, ...extra fields}``."""
    action = event.get("action")
    if action not in ACTIONS:
        raise ReleaseRefused(f"unknown release action {action!r}")
    payload = dict(event.get("event") or {})
    payload.update({k: v for k, v in event.items() if k not in ("action", "event")})
    return ACTIONS[action](payload, c)


def status(c: Clients, model: str, function_name: str) -> dict[str, Any]:
    """Alias weights, versions with their model versions, alarm states, champion, the last release."""
    alias = get_alias(c.lam, function_name)
    alarms: dict[str, dict[str, Any]] = {}
    prefix = f"{c.policy.alarm_prefix}-{model}-"
    for page in c.cloudwatch.get_paginator("describe_alarms").paginate(AlarmNamePrefix=prefix):
        alarms.update({a["AlarmName"]: a for a in page.get("MetricAlarms", []) + page.get("CompositeAlarms", [])})
    try:
        champion = c.registry.get_champion(model)
    except NotFoundError:
        champion = None
    return {
        "model": model,
        "function_name": function_name,
        "weights": alias_weights(alias),
        "versions": function_versions(c.lam, function_name),
        "alarms": {name: a["StateValue"] for name, a in sorted(alarms.items())},
        "champion": champion,
        "lock": read_json(c.registry, _lock_key(model)),
        "last_release": read_json(c.registry, _record_key(model)),
    }


def end_release_in_flight(c: Clients, model: str, action: str, outcome: str, reason: str) -> dict[str, Any]:
    """An operator acted on ``model``: end the release in flight, if any, before the action moves the alias.

    The lock passes to the operator first, so no task of the release moves traffic again (each checks it
    holds the lock); then the execution is stopped with the reason, its canary alarms and shadow switch are
    removed, and its record gets the operator's action as its last event. Returns the operator's lock
    name, and the ended lock and record when a release was in flight. The caller frees the operator's lock
    with :func:`release_operator_lock`.
    """
    key = _lock_key(model)
    operator = {"execution": f"operator-{action}-{uuid.uuid4().hex[:8]}", "version": None, "at": utcnow()}
    holder, etag = _read(c.registry, key)
    try:
        if holder is None:
            write_json(c.registry, key, operator, exclusive=True)
        else:
            write_json(c.registry, key, operator, if_match=etag)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "PreconditionFailed":
            raise
        raise ReleaseRefused(f"the release lock of {model} changed while `{action}` was taking it; try again") from None
    c_operator = operator["execution"]
    if holder is None:
        return {"operator": c_operator}
    if holder.get("execution_arn") and c.sfn is not None:
        try:
            c.sfn.stop_execution(executionArn=holder["execution_arn"], error="OperatorAction", cause=reason[:32768])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ExecutionDoesNotExist":
                raise
    record = read_json(c.registry, _record_key(model))
    if record is None or record.get("execution") != holder.get("execution") or record.get("outcome") != "in-progress":
        return {"operator": c_operator, "holder": holder}
    if record.get("strategy") == "shadow":
        c.registry.s3.delete_object(Bucket=c.registry.bucket, Key=f"models/{model}/shadow.json")
    cause = {"error": "operator", "reason": reason}
    _timeline(record, outcome, by="operator", cause=cause)
    record["cause"] = cause
    _finish(c, record, outcome)  # the lock is the operator's now: _finish leaves it
    return {"operator": c_operator, "holder": holder, "record": record}


def release_operator_lock(c: Clients, model: str, ended: dict[str, Any]) -> None:
    """Free the lock an operator action took with :func:`end_release_in_flight`."""
    _release_lock(c, model, ended.get("operator"))


def _note_operator(c: Clients, model: str, event: str, reason: str, **details: Any) -> None:
    """Add an operator's action to the last release's timeline, so ``status`` shows it as the latest event."""
    record = read_json(c.registry, _record_key(model))
    if record is None:
        return
    _timeline(record, event, by="operator", reason=reason, **details)
    _save_record(c, record)


def manual_rollback(c: Clients, model: str, function_name: str, to: int | None = None) -> dict[str, Any]:
    """Operator rollback. Ends a release in flight (stopping its execution). Without ``to``: clear a split
    alias (idempotent). With ``to``: move ``live`` to the Lambda version pinning that model version, and
    make it champion."""
    alias = get_alias(c.lam, function_name)
    if alias is None:
        raise ReleaseRefused(f"nothing is live for {model} yet; there is nothing to roll back")
    if to is not None:
        c.registry.get_card(model, to)
    what = f"modeldeck rollback {model}" + (f" --to {to}" if to is not None else "")
    lock = read_json(c.registry, _lock_key(model))
    weights = alias_weights(alias)
    if to is None and lock is None and len(weights) == 1:
        live = alias["FunctionVersion"]
        pinned = function_versions(c.lam, function_name).get(live)
        return {
            "changed": False,
            "message": f"nothing to roll back: {model} v{pinned} (Lambda version {live}) "
            f"serves all traffic and no release is in flight",
        }
    reason = f"operator: `{what}`" + (f" while v{lock.get('version')} was in flight" if lock else "")
    ended = end_release_in_flight(c, model, "rollback", "rolled-back", reason)
    try:
        messages = []
        if lock is not None:
            messages.append(f"ended the release of v{lock.get('version')} (execution {lock.get('execution')})")
        if to is None:
            if len(weights) > 1:
                set_alias(c.lam, function_name, alias["FunctionVersion"])
            messages.append(f"Lambda version {alias['FunctionVersion']} serves all traffic")
            if not ended.get("record"):
                _note_operator(c, model, "rolled-back", reason, cause={"error": "operator", "reason": reason})
        else:
            target = publish_pinned(c.lam, function_name, to)
            set_alias(c.lam, function_name, target)
            c.registry.set_champion(model, to, reason="operator rollback")
            _note_operator(c, model, "operator-rollback", reason, to=to, function_version=target)
            messages.append(f"{model} v{to} (Lambda version {target}) is live and champion")
    finally:
        release_operator_lock(c, model, ended)
    return {"changed": True, "message": "; ".join(messages)}


def manual_promote(c: Clients, model: str, function_name: str, version: int) -> dict[str, Any]:
    """Operator promotion of a version that passed its gate (or was never gated and passes it now).

    A release in flight ends: promoting its own candidate ends it early as promoted; promoting another
    version stops it."""
    record = read_json(c.registry, _record_key(model))
    history = _history(c, model)
    for rec in [record, *history]:
        # A refusal because another release held the lock says nothing about the version itself.
        gate_failed = rec is not None and any(e.get("event") == "gate-failed" for e in rec.get("timeline", []))
        if rec and gate_failed and int(rec.get("version", -1)) == version and rec.get("outcome") == "refused":
            raise ReleaseRefused(
                f"v{version} failed its release gate ({(rec.get('gate') or {}).get('reason')}); it cannot be promoted"
            )
    card = c.registry.get_card(model, version)
    c.registry.get_model_bytes(card)
    lock = read_json(c.registry, _lock_key(model))
    own = lock is not None and lock.get("version") == version
    reason = f"operator: `modeldeck promote {model} {version}`" + (
        f" while v{lock.get('version')} was in flight" if lock else ""
    )
    ended = end_release_in_flight(c, model, "promote", "promoted" if own else "stopped", reason)
    try:
        target = publish_pinned(c.lam, function_name, version)
        set_alias(c.lam, function_name, target)
        c.registry.set_champion(model, version, reason="operator promote")
        if not own:
            _note_operator(c, model, "operator-promote", reason, version=version, function_version=target)
    finally:
        release_operator_lock(c, model, ended)
    early = " (its release ended early, as promoted)" if own else ""
    return {"changed": True, "message": f"{model} v{version} (Lambda version {target}) is live and champion{early}"}


def _history(c: Clients, model: str) -> list[dict[str, Any]]:
    s3, bucket = c.registry.s3, c.registry.bucket
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=f"releases/{model}/history/")
    return [json.loads(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()) for o in listing.get("Contents", [])]


def shadow_report(registry: Registry, model: str, start: str, end: str) -> dict[str, Any]:
    """Agreement and latency of the shadow candidate against live over the captured pairs of a window."""
    from modeldeck.capture import parse_ts, read_records

    records = read_records(registry.s3, registry.bucket, "capture", model, parse_ts(start), parse_ts(end))
    return agreement_of_pairs([r for r in records if not r.get("shadow")], [r for r in records if r.get("shadow")])


def agreement_of_pairs(live: list[dict[str, Any]], shadow_records: list[dict[str, Any]]) -> dict[str, Any]:
    """The shadow report: how often the candidate agrees with live on the same requests, and its latency."""
    by_id = {r["id"]: r for r in live if not r.get("shadow")}
    agree = total = 0
    live_ms: list[float] = []
    shadow_ms: list[float] = []
    for rec in shadow_records:
        base = by_id.get(rec["id"])
        if base is None:
            continue
        a, b = base["outputs"].get("label") or [], rec["outputs"].get("label") or []
        total += len(a)
        agree += sum(1 for x, y in zip(a, b, strict=False) if x == y)
        live_ms.append(float(base.get("latency_ms", math.nan)))
        shadow_ms.append(float(rec.get("latency_ms", math.nan)))

    def p50(values: list[float]) -> float | None:
        finite = sorted(v for v in values if not math.isnan(v))
        return finite[len(finite) // 2] if finite else None

    return {
        "pairs": len(live_ms),
        "rows": total,
        "agreement": (agree / total) if total else None,
        "live_p50_ms": p50(live_ms),
        "shadow_p50_ms": p50(shadow_ms),
    }
