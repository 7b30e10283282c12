"""Safe releases: the logic behind each task of the release state machine.

A release of model version ``N`` for model ``m`` is one Step Functions execution. Its tasks call
``handle(event, clients)`` with an ``action``:

``gate``      take the model's release lock; check the card, the artifact's hash and the differential
              test against the champion; refuse if a health alarm is already in ALARM; publish a new
              Lambda version whose environment pins ``MODEL_VERSION=N`` (nothing else changes); arm the
              canary alarms on its ``ExecutedVersion``; return the traffic plan.
``shift``     set the alias ``live`` to the plan's next weight (``RoutingConfig``).
``check``     read the canary's alarms; any in ALARM means roll back.
``promote``   point ``live`` at the new version, move the champion, record the outcome, free the lock.
``rollback``  clear the weights (``live`` stays on the champion), record why, notify SNS, free the lock.
``shadow``    start (or stop, with a report) mirroring live traffic to the candidate.

The lock (``releases/{model}/lock.json``, written with ``If-None-Match``) names the execution that owns
the alias while it is split, so the alias is never split without an owner, and a second release is
refused with the running one's name. Every outcome and its timeline is kept in
``releases/{model}/last.json`` and ``releases/{model}/history/``.
"""

from __future__ import annotations

import contextlib
import json
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from modeldeck.compare import diff_models
from modeldeck.errors import ModeldeckError, NotFoundError
from modeldeck.onnxmodel import OnnxModel
from modeldeck.registry import HOLDOUT, Registry, utcnow, with_retries

ALIAS = "live"
STRATEGIES = ("canary", "linear", "all-at-once", "shadow")
HEALTH_ALARMS = ("errors", "latency-p99", "throttles")


class ReleaseRefused(ModeldeckError):
    """A release, promotion or rollback was refused before any traffic moved."""


@dataclass(frozen=True)
class Policy:
    """Thresholds for the canary alarms (from the release Lambda's environment, set by CDK config)."""

    error_threshold: float = 1.0
    latency_p99_ms: float = 1000.0
    prediction_shift: float = 0.15
    period_seconds: int = 60
    namespace: str = "modeldeck"
    alarm_prefix: str = "modeldeck"

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Policy:
        return cls(
            error_threshold=float(env.get("CANARY_ERROR_THRESHOLD", 1)),
            latency_p99_ms=float(env.get("CANARY_LATENCY_P99_MS", 1000)),
            prediction_shift=float(env.get("CANARY_PREDICTION_SHIFT", 0.15)),
            period_seconds=int(env.get("CANARY_PERIOD_SECONDS", 60)),
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


def alarm_name(prefix: str, model: str, kind: str, canary: bool = False) -> str:
    """``{prefix}-{model}-{kind}``: the monitoring stack's naming, shared by the canary alarms."""
    return f"{prefix}-{model}-{'canary-' if canary else ''}{kind}"


def _lock_key(model: str) -> str:
    return f"releases/{model}/lock.json"


def _record_key(model: str) -> str:
    return f"releases/{model}/last.json"


def read_json(registry: Registry, key: str) -> dict[str, Any] | None:
    try:
        body = with_retries(lambda: registry.s3.get_object(Bucket=registry.bucket, Key=key))["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    return json.loads(body)


def write_json(registry: Registry, key: str, data: dict[str, Any], exclusive: bool = False) -> None:
    extra = {"IfNoneMatch": "*"} if exclusive else {}
    body = json.dumps(data, indent=1, default=str).encode()
    with_retries(lambda: registry.s3.put_object(Bucket=registry.bucket, Key=key, Body=body, **extra))


def function_versions(lam: Any, function_name: str) -> dict[str, str]:
    """Published Lambda version → the MODEL_VERSION its environment pins."""
    out: dict[str, str] = {}
    for page in lam.get_paginator("list_versions_by_function").paginate(FunctionName=function_name):
        for fn in page["Versions"]:
            if fn["Version"] != "$LATEST":
                out[fn["Version"]] = fn.get("Environment", {}).get("Variables", {}).get("MODEL_VERSION", "")
    return out


def get_alias(lam: Any, function_name: str) -> dict[str, Any] | None:
    try:
        return with_retries(lambda: lam.get_alias(FunctionName=function_name, Name=ALIAS))
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


def publish_pinned(lam: Any, function_name: str, model_version: int) -> str:
    """A published Lambda version pinning ``MODEL_VERSION``; reuses one that already pins it.

    Only ``MODEL_VERSION`` changes: the rest of the environment is the function's current one.
    """
    for version, pinned in function_versions(lam, function_name).items():
        if pinned == str(model_version):
            return version
    config = with_retries(lambda: lam.get_function_configuration(FunctionName=function_name))
    env = dict(config.get("Environment", {}).get("Variables", {}))
    env["MODEL_VERSION"] = str(model_version)
    with_retries(lambda: lam.update_function_configuration(FunctionName=function_name, Environment={"Variables": env}))
    _wait_updated(lam, function_name)
    published = with_retries(
        lambda: lam.publish_version(FunctionName=function_name, Description=f"model version {model_version}")
    )
    return str(published["Version"])


def _wait_updated(lam: Any, function_name: str) -> None:
    # The waiter is an optimisation: publish_version fails loudly if the update is not done.
    with contextlib.suppress(Exception):
        lam.get_waiter("function_updated_v2").wait(
            FunctionName=function_name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )


def set_alias(lam: Any, function_name: str, version: str, canary: str | None = None, weight: float = 0.0) -> None:
    routing = (
        {"AdditionalVersionWeights": {canary: weight}} if canary and weight > 0 else {"AdditionalVersionWeights": {}}
    )
    if get_alias(lam, function_name) is None:
        with_retries(
            lambda: lam.create_alias(
                FunctionName=function_name, Name=ALIAS, FunctionVersion=version, RoutingConfig=routing
            )
        )
    else:
        with_retries(
            lambda: lam.update_alias(
                FunctionName=function_name, Name=ALIAS, FunctionVersion=version, RoutingConfig=routing
            )
        )


def arm_canary_alarms(
    c: Clients,
    model: str,
    function_name: str,
    version: str,
    model_version: int,
    champion_model_version: int | None,
) -> list[str]:
    """(Re)create the canary's alarms on its ExecutedVersion; they start in INSUFFICIENT_DATA."""
    p = c.policy
    dims = [
        {"Name": "FunctionName", "Value": function_name},
        {"Name": "Resource", "Value": f"{function_name}:{ALIAS}"},
        {"Name": "ExecutedVersion", "Value": version},
    ]
    names: list[str] = []

    def put(kind: str, description: str, **metric: Any) -> None:
        name = alarm_name(p.alarm_prefix, model, kind, canary=True)
        with_retries(
            lambda: c.cloudwatch.put_metric_alarm(
                AlarmName=name,
                AlarmDescription=description,
                EvaluationPeriods=1,
                DatapointsToAlarm=1,
                TreatMissingData="notBreaching",
                AlarmActions=[c.topic_arn] if c.topic_arn else [],
                Tags=[{"Key": "modeldeck:model", "Value": model}],
                **metric,
            )
        )
        names.append(name)

    lambda_metric = {"Namespace": "AWS/Lambda", "Dimensions": dims, "Period": p.period_seconds}
    put(
        "errors",
        f"Errors of {model} v{model_version} (Lambda version {version}) in canary",
        MetricName="Errors",
        Statistic="Sum",
        Threshold=p.error_threshold,
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

        def score(mid: str, mv: int) -> dict[str, Any]:
            dimensions = [{"Name": "model", "Value": model}, {"Name": "version", "Value": str(mv)}]
            return {
                "Id": mid,
                "ReturnData": False,
                "MetricStat": {
                    "Stat": "Average",
                    "Period": p.period_seconds,
                    "Metric": {"Namespace": p.namespace, "MetricName": "PredictionScore", "Dimensions": dimensions},
                },
            }

        put(
            "prediction-shift",
            f"Mean prediction score of {model} v{model_version} against the champion v{champion_model_version}",
            Metrics=[
                score("canary", model_version),
                score("champion", champion_model_version),
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


def alarm_states(cloudwatch: Any, names: list[str]) -> dict[str, dict[str, Any]]:
    if not names:
        return {}
    alarms: dict[str, dict[str, Any]] = {}
    for page in cloudwatch.get_paginator("describe_alarms").paginate(AlarmNames=names):
        for alarm in page.get("MetricAlarms", []) + page.get("CompositeAlarms", []):
            alarms[alarm["AlarmName"]] = alarm
    return alarms


def _timeline(record: dict[str, Any], event: str, **details: Any) -> None:
    record.setdefault("timeline", []).append({"at": utcnow(), "event": event, **details})


def _load_record(c: Clients, model: str) -> dict[str, Any]:
    record = read_json(c.registry, _record_key(model))
    if record is None:
        raise ReleaseRefused(f"no release record for {model}")
    return record


def _save_record(c: Clients, record: dict[str, Any]) -> None:
    write_json(c.registry, _record_key(record["model"]), record)


def _finish(c: Clients, record: dict[str, Any], outcome: str) -> None:
    record["outcome"] = outcome
    record["finished_at"] = utcnow()
    _save_record(c, record)
    write_json(
        c.registry, f"releases/{record['model']}/history/{record['started_at']}-v{record['version']}.json", record
    )
    lock = read_json(c.registry, _lock_key(record["model"]))
    if lock is not None and lock.get("execution") == record.get("execution"):
        c.registry.s3.delete_object(Bucket=c.registry.bucket, Key=_lock_key(record["model"]))


def _notify(c: Clients, subject: str, message: str) -> None:
    if c.topic_arn:
        with_retries(lambda: c.sns.publish(TopicArn=c.topic_arn, Subject=subject[:99], Message=message))


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
        "started_at": utcnow(),
        "function_name": function_name,
        "outcome": "in-progress",
    }
    _timeline(record, "requested", strategy=strategy, plan=steps)
    try:
        _acquire_lock(c, model, execution, version)
    except ReleaseRefused as exc:
        # The running release owns last.json; the refusal is only added to the history.
        record.update(outcome="refused", gate={"passed": False, "reason": str(exc)}, finished_at=utcnow())
        write_json(c.registry, f"releases/{model}/history/{record['started_at']}-v{version}.json", record)
        raise
    try:
        result = _gate_checks(event, c, record, model, version, function_name, strategy, steps)
    except Exception as exc:
        record["gate"] = {"passed": False, "reason": str(exc)}
        _timeline(record, "gate-failed", reason=str(exc))
        _finish(c, record, "refused")
        raise ReleaseRefused(f"release of {model} v{version} refused: {exc}") from None
    return result


def _acquire_lock(c: Clients, model: str, execution: str, version: int) -> None:
    try:
        write_json(
            c.registry, _lock_key(model), {"execution": execution, "version": version, "at": utcnow()}, exclusive=True
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "PreconditionFailed":
            raise
        holder = read_json(c.registry, _lock_key(model)) or {}
        raise ReleaseRefused(
            f"a release of {model} is already in flight: v{holder.get('version')} "
            f"(execution {holder.get('execution')}, since {holder.get('at')}); wait for it, or "
            f"`modeldeck rollback {model}` to stop it"
        ) from None


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
    first = live_fn is None or live_model is None
    alarms = [] if first else arm_canary_alarms(c, model, function_name, fn_version, version, live_model)
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
        "first_release": first,
        "plan": steps,
        "step": 0,
        "steps": len(steps),
        "strategy": strategy,
        "alarms": alarms,
        "bake_seconds": int(event.get("bake_seconds", 600)),
        "execution": record["execution"],
    }


def shift(event: dict[str, Any], c: Clients) -> dict[str, Any]:
    """Give the candidate the plan's weight for the current step."""
    weight = float(event["plan"][event["step"]])
    set_alias(c.lam, event["function_name"], event["live"], event["candidate"], weight)
    record = _load_record(c, event["model"])
    _timeline(record, "shift", weight=weight, step=event["step"] + 1, of=event["steps"])
    _save_record(c, record)
    return {**event, "weight": weight}


def check(event: dict[str, Any], c: Clients) -> dict[str, Any]:
    """After a bake: healthy when none of the canary's alarms is in ALARM."""
    states = alarm_states(c.cloudwatch, list(event.get("alarms", [])))
    firing = {name: a for name, a in states.items() if a["StateValue"] == "ALARM"}
    record = _load_record(c, event["model"])
    _timeline(
        record, "bake-checked", step=event["step"] + 1, alarms={name: a["StateValue"] for name, a in states.items()}
    )
    _save_record(c, record)
    out = {**event, "healthy": not firing, "step": event["step"] + 1}
    out["done"] = out["step"] >= event["steps"]
    if firing:
        name, alarm = next(iter(firing.items()))
        out["cause"] = {"alarm": name, "reason": alarm.get("StateReason", "")}
    return out


def promote(event: dict[str, Any], c: Clients) -> dict[str, Any]:
    """All traffic to the candidate; the champion moves; the previous version stays for rollback."""
    set_alias(c.lam, event["function_name"], event["candidate"])
    champion = c.registry.set_champion(
        event["model"],
        int(event["version"]),
        reason=f"released with {event.get('strategy')} ({event.get('execution')})",
    )
    record = _load_record(c, event["model"])
    _timeline(record, "promoted", function_version=event["candidate"], previous_champion=champion["previous"])
    _finish(c, record, "promoted")
    _notify(
        c,
        f"modeldeck: {event['model']} v{event['version']} promoted",
        f"{event['model']} v{event['version']} is live (Lambda version {event['candidate']}) after a "
        f"{event.get('strategy')} release. The previous champion v{champion['previous']} stays available: "
        f"`modeldeck rollback {event['model']}` returns to it.",
    )
    return {**event, "outcome": "promoted"}


def rollback(event: dict[str, Any], c: Clients) -> dict[str, Any]:
    """Clear the weights so the champion serves everything; record and announce why."""
    model, function_name = event["model"], event["function_name"]
    live = event.get("live")
    cause = event.get("cause") or {}
    if isinstance(cause, str):
        cause = _parse_cause(cause)
    if live:
        set_alias(c.lam, function_name, live)
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
    started = with_retries(
        lambda: c.sfn.start_execution(stateMachineArn=c.release_state_machine, name=name, input=json.dumps(event))
    )
    return {"execution_arn": started["executionArn"], "name": name}


ACTIONS: dict[str, Callable[[dict[str, Any], Clients], dict[str, Any]]] = {
    "start": start,
    "gate": gate,
    "shift": shift,
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


def manual_rollback(c: Clients, model: str, function_name: str, to: int | None = None) -> dict[str, Any]:
    """Operator rollback. Without ``to``: clear a split alias (idempotent). With ``to``: move ``live`` to the
    Lambda version pinning that model version, and make it champion."""
    alias = get_alias(c.lam, function_name)
    if alias is None:
        raise ReleaseRefused(f"nothing is live for {model} yet; there is nothing to roll back")
    weights = alias_weights(alias)
    if to is None:
        lock = read_json(c.registry, _lock_key(model))
        if len(weights) == 1 and lock is not None:
            c.registry.s3.delete_object(Bucket=c.registry.bucket, Key=_lock_key(model))
            return {
                "changed": True,
                "message": f"no traffic was split; released the lock held by v{lock.get('version')} "
                f"(execution {lock.get('execution')})",
            }
        if len(weights) == 1:
            live = alias["FunctionVersion"]
            pinned = function_versions(c.lam, function_name).get(live)
            return {
                "changed": False,
                "message": f"nothing to roll back: {model} v{pinned} (Lambda version {live}) "
                f"serves all traffic and no release is in flight",
            }
        set_alias(c.lam, function_name, alias["FunctionVersion"])
        if lock is not None:
            c.registry.s3.delete_object(Bucket=c.registry.bucket, Key=_lock_key(model))
        record = read_json(c.registry, _record_key(model))
        if record is not None and record.get("outcome") == "in-progress":
            _timeline(record, "rolled-back", cause={"error": "operator", "reason": "modeldeck rollback"})
            _finish(c, record, "rolled-back")
        return {
            "changed": True,
            "message": f"weights cleared: Lambda version {alias['FunctionVersion']} serves all traffic",
        }
    c.registry.get_card(model, to)
    target = publish_pinned(c.lam, function_name, to)
    set_alias(c.lam, function_name, target)
    c.registry.set_champion(model, to, reason="operator rollback")
    return {"changed": True, "message": f"{model} v{to} (Lambda version {target}) is live and champion"}


def manual_promote(c: Clients, model: str, function_name: str, version: int) -> dict[str, Any]:
    """Operator promotion of a version that passed its gate (or was never gated and passes it now)."""
    record = read_json(c.registry, _record_key(model))
    history = _history(c, model)
    for rec in [record, *history]:
        if rec and int(rec.get("version", -1)) == version and rec.get("outcome") in ("refused",):
            raise ReleaseRefused(
                f"v{version} failed its release gate ({(rec.get('gate') or {}).get('reason')}); it cannot be promoted"
            )
    lock = read_json(c.registry, _lock_key(model))
    if lock is not None:
        raise ReleaseRefused(
            f"a release of {model} is in flight (v{lock.get('version')}, execution "
            f"{lock.get('execution')}); wait for it or roll it back first"
        )
    card = c.registry.get_card(model, version)
    c.registry.get_model_bytes(card)
    target = publish_pinned(c.lam, function_name, version)
    set_alias(c.lam, function_name, target)
    c.registry.set_champion(model, version, reason="operator promote")
    return {"changed": True, "message": f"{model} v{version} (Lambda version {target}) is live and champion"}


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
