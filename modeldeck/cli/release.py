"""CLI commands for releases: ``release``, ``promote``, ``rollback`` and ``status``.

``release`` starts the release state machine (the same one on AWS and in the local cloud) and follows
its record until it finishes; ``promote``/``rollback`` are operator actions; ``status`` reads the alias,
the published versions, the alarms, the champion and the last release.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from modeldeck import release
from modeldeck.cli.common import fraction, positive_int, rule
from modeldeck.errors import ModeldeckError

if TYPE_CHECKING:
    from modeldeck.cli.common import Context

TERMINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}


def add_commands(sub: Any, version_type: Any) -> None:
    rel = sub.add_parser("release", help="release a registered version through the alias `live`")
    rel.add_argument("model")
    rel.add_argument("version", type=version_type)
    rel.add_argument("--strategy", choices=release.STRATEGIES, default="canary")
    rel.add_argument("--steps", type=positive_int, default=None, help="linear: number of steps (default 4)")
    rel.add_argument(
        "--weight", type=fraction("a canary weight"), default=0.1, help="canary: the candidate's share (default 0.1)"
    )
    rel.add_argument(
        "--bake",
        type=_duration,
        default=None,
        help="bake time per step, e.g. 10m, 30s (default: the canary policy's, 10m)",
    )
    rel.add_argument("--no-wait", action="store_true", help="start the release and return")
    rel.set_defaults(func=cmd_release)

    promote = sub.add_parser("promote", help="send all traffic to a version and make it champion")
    promote.add_argument("model")
    promote.add_argument("version", type=version_type)
    promote.set_defaults(func=cmd_promote)

    rollback = sub.add_parser("rollback", help="clear a canary's weights, or go back to a version")
    rollback.add_argument("model")
    rollback.add_argument("--to", type=version_type, default=None, metavar="VERSION")
    rollback.set_defaults(func=cmd_rollback)

    status = sub.add_parser("status", help="alias weights, versions, alarms, champion and the last release")
    status.add_argument("model", nargs="?")
    status.set_defaults(func=cmd_status)


def _duration(text: str) -> int:
    """``90``, ``90s``, ``10m`` or ``1h`` as seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        value = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 30s, 10m, 1h)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a duration cannot be negative: {text!r}")
    return int(value * units[unit])


def _clients(ctx: Context) -> release.Clients:
    deployment = ctx.deployment
    return release.Clients(
        lam=ctx.client("lambda"),
        cloudwatch=ctx.client("cloudwatch"),
        sns=ctx.client("sns"),
        registry=ctx.registry,
        topic_arn=deployment.output("AlertTopicArn", required=False),
        policy=_policy(ctx),
        # Operator actions stop the release in flight.
        sfn=ctx.client("stepfunctions"),
    )


def _policy(ctx: Context) -> release.Policy:
    """The canary policy the release function was deployed with (its environment), so the CLI judges a plan
    by the same period and alarm prefix as the gate."""
    deployment = ctx.deployment
    prefix = deployment.output("AlarmPrefix", required=False) or "modeldeck"
    function = deployment.output("ReleaseFunctionName", required=False)
    if not function:
        return release.Policy(alarm_prefix=prefix)
    env = ctx.client("lambda").get_function_configuration(FunctionName=function).get("Environment") or {}
    return release.Policy.from_env({"ALARM_PREFIX": prefix, **(env.get("Variables") or {})})


def check_plan(ctx: Context, payload: dict[str, Any]) -> None:
    """Refuse, before starting anything, a bake CloudWatch cannot judge or a plan the state machine's
    execution timeout would cut short (it would end with the alias split)."""
    policy = _policy(ctx)
    strategy, steps, bake = payload["strategy"], int(payload["steps"]), int(payload["bake_seconds"])
    try:
        if release.live_model_version(ctx.client("lambda"), payload["function_name"]) is not None:
            release.check_bake(strategy, bake, policy.period_seconds)
        arn = ctx.deployment.output("ReleaseStateMachineArn")
        definition = json.loads(ctx.client("stepfunctions").describe_state_machine(stateMachineArn=arn)["definition"])
        if definition.get("TimeoutSeconds"):
            release.check_plan_fits(strategy, steps, bake, policy.period_seconds, int(definition["TimeoutSeconds"]))
    except release.ReleaseRefused as exc:
        raise ModeldeckError(f"release of {payload['model']} v{payload['version']} refused: {exc}") from None


def run_release(
    ctx: Context,
    model: str,
    version: int,
    *,
    strategy: str = "canary",
    steps: int | None = None,
    weight: float = 0.1,
    bake: int | None = None,
    wait: bool = True,
) -> dict[str, Any]:
    """Start the release state machine and (by default) follow it. Returns the execution and its record."""
    deployment = ctx.deployment
    function_name = deployment.function_name(model)
    ctx.registry.get_card(model, version)  # fail fast, in one line, on an unknown version
    payload = {
        "model": model,
        "version": version,
        "function_name": function_name,
        "strategy": strategy,
        "steps": steps or (4 if strategy == "linear" else 1),
        "canary_weight": weight,
        "bake_seconds": bake if bake is not None else deployment.default_bake_seconds(),
    }
    check_plan(ctx, payload)
    name = f"{model}-v{version}-{uuid.uuid4().hex[:8]}"
    sfn = ctx.client("stepfunctions")
    execution = sfn.start_execution(
        stateMachineArn=deployment.output("ReleaseStateMachineArn"), name=name, input=json.dumps(payload)
    )["executionArn"]
    if not wait:
        return {"execution": execution, "input": payload}
    return follow_release(ctx, execution, payload)


def follow_release(ctx: Context, execution: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """Follow a release execution to its end (its input is read back when not given, e.g. for the release
    the training state machine started). Returns the execution, its status and its release record."""
    sfn = ctx.client("stepfunctions")
    if payload is None:
        payload = json.loads(sfn.describe_execution(executionArn=execution)["input"])
    model = payload["model"]
    name = execution.rsplit(":", 1)[-1]
    described = follow(ctx, execution, model, payload)
    record = release.read_json(ctx.registry, f"releases/{model}/last.json") or {}
    if record.get("execution") != name:
        history = release._history(_clients(ctx), model)
        record = next((r for r in history if r.get("execution") == name), record)
    return {"execution": execution, "status": described["status"], "record": record}


def released(result: dict[str, Any]) -> bool:
    """Whether a followed release ended as asked: promoted, or a shadow run that completed."""
    return (result.get("record") or {}).get("outcome") in ("promoted", "shadow-complete")


def cmd_release(ctx: Context) -> int:
    args = ctx.args
    result = run_release(
        ctx,
        args.model,
        args.version,
        strategy=args.strategy,
        steps=args.steps,
        weight=args.weight,
        bake=args.bake,
        wait=not args.no_wait,
    )
    if args.no_wait:
        ctx.emit(
            result,
            lambda: ctx.out.print(
                f"release started: {result['execution']}\nfollow it with `modeldeck status {args.model}`"
            ),
        )
        return 0
    ctx.emit(result, lambda: render_outcome(ctx, args.model, args.version, result))
    return 0 if released(result) else 1


def render_outcome(ctx: Context, model: str, version: int, result: dict[str, Any]) -> None:
    record = result["record"]
    outcome = record.get("outcome", result["status"].lower())
    colour = {"promoted": "green", "shadow-complete": "green"}.get(outcome, "red")
    ctx.out.print(f"[bold {colour}]{model} v{version}: {outcome}[/]")
    if outcome == "rolled-back":
        cause = record.get("cause") or {}
        ctx.out.print(f"cause: {cause.get('alarm') or cause.get('error')} — {cause.get('reason', '')}")
    if outcome == "refused":
        ctx.out.print(f"why: {(record.get('gate') or {}).get('reason')}")
    if record.get("shadow_report"):
        ctx.out.print(f"shadow report: {shadow_summary(record['shadow_report'])}")


def follow(ctx: Context, execution: str, model: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Wait for a release execution, showing its timeline as it grows."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    sfn = ctx.client("stepfunctions")
    ctx.deployment.while_waiting()
    shown = 0
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=ctx.err,
        disable=ctx.json,
        transient=True,
    ) as progress:
        task = progress.add_task(f"release {model} v{payload['version']} ({payload['strategy']})")
        while True:
            described = sfn.describe_execution(executionArn=execution)
            record = release.read_json(ctx.registry, f"releases/{model}/last.json") or {}
            timeline = record.get("timeline", []) if record.get("execution") == execution.rsplit(":", 1)[-1] else []
            for event in timeline[shown:]:
                progress.console.print(f"  {event['at'][11:19]}  {_describe(event)}")
            shown = max(shown, len(timeline))
            if described["status"] in TERMINAL:
                return described
            weights = release.alias_weights(release.get_alias(ctx.client("lambda"), payload["function_name"]))
            progress.update(task, description=f"release {model} v{payload['version']} · weights {weights}")
            time.sleep(0.25)


def _describe(event: dict[str, Any]) -> str:
    kind = event["event"]
    if kind == "shift":
        return f"shift: candidate gets {event['weight']:.0%} (step {event['step']} of {event['of']})"
    if kind == "bake-checked":
        states = ", ".join(f"{_kind(k)}={v}" for k, v in event["alarms"].items())
        fired = ", ".join(_kind(k) for k in event.get("fired", []))
        return f"bake done: alarms {states or 'none'}" + (f"; in ALARM during the bake: {fired}" if fired else "")
    if kind == "gate-checked":
        failing = [t for t in event.get("tests", []) if t["p_value"] < t["alpha"]]
        worst = min(failing, key=lambda t: t["p_value"], default=None)
        if worst is None:
            return "statistical gate: no test rejects"
        return f"statistical gate: the {worst['test']} test rejects (always-valid p = {worst['p_value']:.2g})"
    if kind == "gate-passed":
        extra = f", agreement {event['agreement']:.2%}" if "agreement" in event else ""
        return f"gate passed: Lambda version {event['function_version']}{extra}"
    if kind in ("gate-failed", "rolled-back", "promoted", "stopped", "abandoned", "lock-taken-over") and (
        event.get("reason") or event.get("cause")
    ):
        cause = event.get("cause") or {}
        who = cause.get("alarm") or cause.get("error") or ""
        reason = event.get("reason") or cause.get("reason") or ""
        return f"{kind}: " + " — ".join(part for part in (who, reason) if part)
    if kind == "shadow-stopped":
        return f"shadow stopped: {shadow_summary(event)}"
    if kind in ("operator-rollback", "operator-promote"):
        return f"{kind}: {event.get('reason', '')}"
    return kind + "".join(f" {k}={v}" for k, v in event.items() if k not in ("at", "event"))


def shadow_summary(report: dict[str, Any]) -> str:
    """A shadow report (``modeldeck.release.shadow_report``) in one line: agreement as a percentage of the
    compared rows, mirrored request pairs, and the median latencies in ms ("n/a" where nothing was measured)."""

    def ms(value: Any) -> str:
        return "n/a" if value is None else f"{float(value):.1f} ms"

    agreement = report.get("agreement")
    share = "n/a" if agreement is None else f"{float(agreement):.1%}"
    return (
        f"agreed with live on {share} of {report.get('rows', 0)} rows ({report.get('pairs', 0)} mirrored "
        f"request pairs); p50 latency {ms(report.get('shadow_p50_ms'))} vs live {ms(report.get('live_p50_ms'))}"
    )


def _kind(alarm: str) -> str:
    """A canary alarm's kind (``...-canary-{release}-server-error-rate`` → ``server-error-rate``)."""
    for kind in ("server-error-rate", "missing-scores", "errors", "latency-p99", "prediction-shift"):
        if alarm.endswith("-" + kind):
            return kind
    return alarm.split("-canary-")[-1]


def render_timeline(ctx: Context, record: dict[str, Any]) -> None:
    for event in record.get("timeline", []):
        ctx.out.print(f"  {event['at'][11:19]}  {_describe(event)}")


def cmd_promote(ctx: Context) -> int:
    result = release.manual_promote(
        _clients(ctx), ctx.args.model, ctx.deployment.function_name(ctx.args.model), ctx.args.version
    )
    ctx.emit(result, lambda: ctx.out.print(result["message"]))
    return 0


def cmd_rollback(ctx: Context) -> int:
    result = release.manual_rollback(
        _clients(ctx), ctx.args.model, ctx.deployment.function_name(ctx.args.model), ctx.args.to
    )
    ctx.emit(result, lambda: ctx.out.print(result["message"]))
    return 0


def cmd_status(ctx: Context) -> int:
    from rich.table import Table

    models = [ctx.args.model] if ctx.args.model else ctx.deployment.models()
    if not models:
        raise ModeldeckError("no model functions are deployed")
    clients = _clients(ctx)
    data = [release.status(clients, m, ctx.deployment.function_name(m)) for m in models]

    def render() -> None:
        for st in data:
            rule(ctx.out, f"[bold]{st['model']}[/] · function {st['function_name']}")
            weights = st["weights"]
            table = Table("Lambda version", "model version", "traffic", "")
            for fn_version, model_version in st["versions"].items():
                share = weights.get(fn_version)
                marks = []
                if str(st["champion"]) == model_version:
                    marks.append("★ champion")
                if share is not None and share < 1:
                    marks.append("canary" if share < 0.5 and len(weights) > 1 else "")
                table.add_row(
                    fn_version,
                    f"v{model_version}",
                    f"{share:.0%}" if share is not None else "",
                    " ".join(m for m in marks if m),
                )
            ctx.out.print(table)
            if st["alarms"]:
                alarms = Table("alarm", "state")
                colour = {"OK": "green", "ALARM": "red"}
                for name, state in st["alarms"].items():
                    alarms.add_row(name, f"[{colour.get(state, 'yellow')}]{state}[/]")
                ctx.out.print(alarms)
            last = st["last_release"]
            if last:
                ctx.out.print(
                    f"last release: v{last.get('version')} {last.get('strategy')} → [bold]{last.get('outcome')}[/]"
                )
                render_timeline(ctx, last)
                shadow = last.get("shadow_report")
                if shadow:
                    ctx.out.print(f"shadow report: {shadow_summary(shadow)}")
            if st["lock"]:
                ctx.out.print(f"[yellow]in flight:[/] v{st['lock'].get('version')} ({st['lock'].get('execution')})")

    ctx.emit(data, render)
    return 0
