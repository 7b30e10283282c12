"""CLI commands for A/B tests: ``experiment start|status|conclude|report``.

``start`` writes ``models/{model}/experiment.json`` (a conditional put: one experiment per model at a time)
after checking the versions, publishing a pinned Lambda version per challenger and computing the minimum
sample size; the inference function picks the document up within 20 s and assigns units to variants.
``status`` invokes the deployed experiment job (the statistics are computed in the cloud, as on its
schedule) and prints its snapshot; ``conclude`` archives the experiment and removes the document, and with
``--promote`` releases the winner through the release state machine (gate included); ``report`` writes an
HTML report of the snapshots over time.

Experiments and releases exclude each other: ``start`` refuses while a release holds the release lock, and
the release gate refuses while an experiment runs.
"""

from __future__ import annotations

import argparse
import json
import math
import uuid
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldeck import experiment_analysis as ea
from modeldeck.cli.common import CliError, fraction, positive_int
from modeldeck.errors import ModeldeckError

if TYPE_CHECKING:
    from modeldeck.cli.common import Context

NAMES = "ABCDEFGHIJ"


def add_commands(sub: Any, version_type: Any) -> None:
    parser = sub.add_parser("experiment", help="A/B tests: start, status, conclude, report")
    esub = parser.add_subparsers(dest="experiment_command", required=True, parser_class=type(parser))

    start = esub.add_parser("start", help="start an A/B test between registered versions")
    start.add_argument("model")
    start.add_argument(
        "--variant",
        action="append",
        type=_variant,
        required=True,
        metavar="VERSION[=WEIGHT]",
        help="a version in the test, with its traffic share; repeat it. The live version is the champion "
        "(variant A) and is added when not listed; unweighted variants share what is left equally",
    )
    start.add_argument("--champion", type=version_type, default=None, help="the champion (default: the live version)")
    start.add_argument(
        "--unit-key",
        type=_unit_key,
        required=True,
        metavar="FIELD|header:NAME",
        help="what identifies a unit (a user): a request body field, or header:NAME for a request header",
    )
    start.add_argument(
        "--metric",
        required=True,
        choices=ea.METRICS,
        help="conversion (units with an outcome value > 0), value (mean total value per unit), or a model "
        "metric on feedback labels",
    )
    start.add_argument("--mde", type=_positive, default=0.02, help="minimum detectable effect, absolute (0.02)")
    start.add_argument("--power", type=fraction("the power"), default=0.8, help="power at the MDE (0.8)")
    start.add_argument("--alpha", type=fraction("alpha"), default=0.05, help="significance level (0.05)")
    start.add_argument(
        "--baseline-rate",
        type=fraction("the baseline rate"),
        default=None,
        help="conversion/accuracy: the champion's expected rate (default 0.1; accuracy: the champion's card)",
    )
    start.add_argument(
        "--sd", type=_positive, default=None, help="value, mae, mse: the per-unit standard deviation (required)"
    )
    start.add_argument("--max-days", type=positive_int, default=14, help="stop after this many days (14)")
    start.set_defaults(func=cmd_start)

    status = esub.add_parser("status", help="per-variant results, p-values, SRM and the decision (runs the job)")
    status.add_argument("model")
    status.set_defaults(func=cmd_status)

    conclude = esub.add_parser("conclude", help="end the experiment: promote a version, or keep the champion")
    conclude.add_argument("model")
    what = conclude.add_mutually_exclusive_group(required=True)
    what.add_argument("--promote", type=version_type, metavar="VERSION", help="release this variant's version")
    what.add_argument("--keep", action="store_true", help="keep the champion")
    conclude.set_defaults(func=cmd_conclude)

    report = esub.add_parser("report", help="a self-contained HTML report of the experiment over time")
    report.add_argument("model")
    report.add_argument("--out", type=Path, required=True, help="the HTML file to write")
    report.add_argument("--id", default=None, help="a concluded experiment's id (default: the running or last one)")
    report.set_defaults(func=cmd_report)


# --- argument types --------------------------------------------------------------------------------------


def _variant(text: str) -> tuple[int, float | None]:
    version, sep, weight = text.partition("=")
    try:
        number = int(version.strip().lstrip("v"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a version: {version!r} (use VERSION or VERSION=WEIGHT)") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"versions start at 1, got {version!r}")
    if not sep:
        return number, None
    return number, fraction("a variant's weight")(weight)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _unit_key(text: str) -> dict[str, str]:
    kind, sep, name = text.partition(":")
    if sep and kind.lower() == "header":
        if not name.strip():
            raise argparse.ArgumentTypeError("header:NAME needs a header name, e.g. header:X-User-Id")
        return {"header": name.strip().lower()}
    if not text.strip() or sep:
        raise argparse.ArgumentTypeError(f"not a unit key: {text!r} (use a body field, e.g. user_id, or header:NAME)")
    return {"field": text.strip()}


# --- helpers ---------------------------------------------------------------------------------------------


def _now() -> datetime:
    """Now, as the registry stamps records (the local cloud moves it onto its virtual clock)."""
    from modeldeck import registry

    return ea.parse_iso(registry.utcnow())


def _release_in_flight(ctx: Context, model: str) -> dict[str, Any] | None:
    """The release lock's holder while its execution still runs (or cannot be asked), else None."""
    from botocore.exceptions import ClientError

    from modeldeck.release import read_json

    holder = read_json(ctx.registry, f"releases/{model}/lock.json")
    if holder is None:
        return None
    arn = holder.get("execution_arn")
    if not arn:
        return holder
    try:
        status = ctx.client("stepfunctions").describe_execution(executionArn=arn)["status"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ExecutionDoesNotExist":
            return None
        raise
    return holder if status in ("RUNNING", "PENDING_REDRIVE") else None


def plan_variants(requested: list[tuple[int, float | None]], champion: int) -> list[tuple[str, int, float]]:
    """(name, version, weight) per variant: the champion first as A, the challengers B, C... in the given
    order; unweighted variants share what the weighted ones leave, equally. Raises CliError on a bad plan."""
    versions = [v for v, _ in requested]
    duplicates = sorted({v for v in versions if versions.count(v) > 1})
    if duplicates:
        raise CliError(f"--variant lists v{', v'.join(map(str, duplicates))} more than once")
    plan = dict(requested)
    if champion not in plan:
        plan = {champion: None, **plan}
    order = [champion, *(v for v in plan if v != champion)]
    if len(order) < 2:
        raise CliError(f"an experiment needs a challenger besides the champion v{champion}: add --variant VERSION")
    if len(order) > len(NAMES):
        raise CliError(f"at most {len(NAMES)} variants, got {len(order)}")
    given = sum(w for w in plan.values() if w is not None)
    free = [v for v in order if plan[v] is None]
    if free:
        if given >= 1:
            raise CliError(
                f"the weights given sum to {given:g}, leaving nothing for {', '.join(f'v{v}' for v in free)}"
            )
        share = (1 - given) / len(free)
        plan.update({v: share for v in free})
    elif abs(given - 1) > 1e-6:
        raise CliError(
            "the variants' weights must sum to 1, they sum to "
            f"{given:g} ({', '.join(f'v{v}={plan[v]:g}' for v in order)})"
        )
    return [(NAMES[i], v, round(float(plan[v] or 0.0), 6)) for i, v in enumerate(order)]


def minimum_units(args: argparse.Namespace, champion_card: Any) -> tuple[int, float | None]:
    """Units per variant for the requested power at the MDE (modeldeck.sequential), and the baseline rate."""
    from modeldeck import sequential

    metric, mde = args.metric, args.mde
    try:
        if metric in ("conversion", "accuracy"):
            baseline = args.baseline_rate
            if baseline is None:
                baseline = float((champion_card.metrics or {}).get("accuracy", 0.9)) if metric == "accuracy" else 0.1
            if baseline + mde >= 1:
                raise CliError(f"--baseline-rate {baseline:g} + --mde {mde:g} must stay below 1")
            return sequential.sample_size_proportions(baseline, mde, alpha=args.alpha, power=args.power), baseline
        if args.sd is None:
            raise CliError(f"--metric {metric} needs --sd (the per-unit standard deviation) to size the test")
        return sequential.sample_size_means(args.sd, mde, alpha=args.alpha, power=args.power), None
    except ValueError as exc:
        raise CliError(str(exc)) from None


# --- start -----------------------------------------------------------------------------------------------


def cmd_start(ctx: Context) -> int:
    from botocore.exceptions import ClientError

    from modeldeck import release
    from modeldeck.experiments import Experiment, experiment_key

    args, model = ctx.args, ctx.args.model
    function_name = ctx.deployment.function_name(model)
    lam = ctx.client("lambda")
    holder = _release_in_flight(ctx, model)
    if holder is not None:
        raise CliError(
            f"a release of {model} is in flight (v{holder.get('version')}, execution {holder.get('execution')}); "
            "an experiment starts once it has ended"
        )
    alias = release.get_alias(lam, function_name)
    if alias is None or release.live_model_version(lam, function_name) is None:
        raise CliError(f"{model} has no live version: release one first (`modeldeck release {model} VERSION`)")
    if len(release.alias_weights(alias)) > 1:
        raise CliError(f"the alias live of {model} is split {release.alias_weights(alias)}; end that first")
    live = int(release.live_model_version(lam, function_name) or 0)
    champion = args.champion or live
    if champion != live:
        raise CliError(f"the champion must be the live version v{live}, got --champion {champion}")
    variants = plan_variants(args.variant, champion)
    cards = {}
    known = ctx.registry.list_versions(model)
    for _, version, _ in variants:
        if version not in known:
            raise CliError(
                f"{model} has no version {version} (registered: {', '.join(f'v{v}' for v in known) or 'none'})"
            )
        cards[version] = ctx.registry.get_card(model, version)
    if args.metric in ea.MODEL_METRICS:
        task = "regression" if args.metric in ("mae", "mse") else "classification"
        if cards[champion].task != task:
            raise CliError(f"--metric {args.metric} is a {task} metric; {model} is a {cards[champion].task} model")
    min_units, baseline = minimum_units(args, cards[champion])
    existing = ea.load_experiment(ctx.client("s3"), ctx.registry.bucket, model)
    if existing is not None:
        raise CliError(
            f"experiment {existing.get('id')} is already running on {model}; conclude it first "
            f"(`modeldeck experiment conclude {model} --keep` or `--promote VERSION`)"
        )
    now = _now()
    doc_variants = []
    for name, version, weight in variants:
        qualifier = (
            alias["FunctionVersion"] if version == champion else release.publish_pinned(lam, function_name, version)
        )
        doc_variants.append(
            {"name": name, "version": version, "weight": weight, "function_name": function_name, "qualifier": qualifier}
        )
    doc: dict[str, Any] = {
        "id": f"exp-{now:%Y%m%dT%H%M}-{uuid.uuid4().hex[:4]}",
        "model": model,
        "status": "running",
        "unit_key": args.unit_key,
        "variants": doc_variants,
        "champion": "A",
        "metric": args.metric,
        "alpha": args.alpha,
        "power": args.power,
        "mde": args.mde,
        "min_units": min_units,
        "max_days": args.max_days,
        "started_at": ea.iso(now),
    }
    if baseline is not None:
        doc["baseline_rate"] = baseline
    try:
        Experiment.from_json(doc)  # the inference function's own validation, before anything is written
    except ValueError as exc:
        raise ModeldeckError(f"the experiment document is invalid: {exc}") from None
    try:
        ctx.registry.s3.put_object(
            Bucket=ctx.registry.bucket,
            Key=experiment_key(model),
            Body=json.dumps(doc, indent=1).encode(),
            IfNoneMatch="*",
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
            raise CliError(
                f"another experiment on {model} started meanwhile; see `modeldeck experiment status`"
            ) from None
        raise

    def render() -> None:
        key = "header " + doc["unit_key"]["header"] if "header" in doc["unit_key"] else doc["unit_key"]["field"]
        ctx.out.print(f"[bold]experiment {doc['id']}[/] on {model} started ({doc['metric']} per unit of {key})")
        for v in doc_variants:
            role = "champion" if v["name"] == "A" else "challenger"
            ctx.out.print(f"  {v['name']}: v{v['version']} {v['weight']:.0%} ({role}, Lambda version {v['qualifier']})")
        ctx.out.print(
            f"minimum sample size: {min_units:,} units per variant (power {args.power:g} at an MDE of {args.mde:g}, "
            f"alpha {args.alpha:g}, always-valid test); at most {args.max_days} days"
        )
        ctx.out.print(f"[dim]routing starts within 20 s; follow it with `modeldeck experiment status {model}`[/]")

    ctx.emit(doc, render)
    return 0


# --- status ----------------------------------------------------------------------------------------------


def run_job(ctx: Context, model: str) -> dict[str, Any]:
    """Invoke the deployed experiment job on the model and return its snapshot."""
    reply = ctx.client("lambda").invoke(
        FunctionName=ctx.deployment.output("ExperimentFunctionName"),
        Payload=json.dumps({"model": model}).encode(),
    )
    body = json.loads(reply["Payload"].read() or b"{}")
    if reply.get("FunctionError"):
        raise ModeldeckError(f"the experiment job failed: {body.get('errorMessage', body)}")
    if body.get("error"):
        raise ModeldeckError(f"the experiment job refused: {body['error']}")
    if body.get("snapshot") is None:
        raise CliError(f"no experiment is running on {model}; start one with `modeldeck experiment start {model} ...`")
    return dict(body["snapshot"])


def render_snapshot(ctx: Context, snap: dict[str, Any]) -> None:
    """The per-variant table, the comparisons, the SRM check and the decision."""
    from rich.table import Table

    exp, decision = snap["experiment"], snap["decision"]
    metric = str(exp["metric"])
    ctx.out.print(f"[bold]{exp['model']}[/]: experiment {exp['id']} since {exp['started_at']}, as of {snap['at']}")
    table = Table(
        "variant", "version", "weight", "units", "requests", "outcomes", f"{metric} (CI)", title_justify="left"
    )
    for v in snap["variants"]:
        value, low, high = (ea.format_metric(v["metric"][k], metric) for k in ("value", "ci_low", "ci_high"))
        table.add_row(
            f"{v['name']}{' (champion)' if v['champion'] else ''}",
            f"v{v['version']}",
            f"{v['weight']:.0%}",
            f"{v['units']:,}",
            f"{v['requests']:,}",
            f"{v['outcomes']:,}",
            f"{value} [{low}, {high}]",
        )
    ctx.out.print(table)
    ctx.out.print(
        f"min units per variant: {exp.get('min_units') or 0:,}; unassigned requests (no unit key): "
        f"{snap['unassigned']['requests']:,}"
    )
    for c in snap["comparisons"]:
        ctx.out.print(
            f"{c['treatment']} vs {c['control']}: effect {c['effect']:+.4g} (always-valid CI "
            f"[{c['ci_low']:+.4g}, {c['ci_high']:+.4g}]), p = {c['p_value']:.3g} sequential, "
            f"{c['fixed_p_value']:.3g} fixed-horizon"
        )
    srm = snap["srm"]
    verdict = "[red]MISMATCH[/]" if srm["mismatch"] else "ok"
    ctx.out.print(f"sample-ratio check: units {list(srm['observed'])}, p = {srm['p_value']:.3g}: {verdict}")
    colour = {"continue": "yellow", "winner": "green"}.get(decision["outcome"], "red")
    winner = f" → {decision['winner']}" if decision.get("winner") else ""
    ctx.out.print(f"[bold {colour}]decision: {decision['outcome']}{winner}[/] — {decision['reason']}")


def cmd_status(ctx: Context) -> int:
    snap = run_job(ctx, ctx.args.model)
    ctx.emit(snap, lambda: render_snapshot(ctx, snap))
    return 0


# --- conclude --------------------------------------------------------------------------------------------


def conclude(ctx: Context, model: str, promote: int | None) -> dict[str, Any]:
    """Archive the running experiment (its document and last snapshot under experiments/{model}/{id}/) and
    remove the document, so routing stops; with ``promote`` (a challenger's version), release it."""
    from modeldeck.cli.release import run_release
    from modeldeck.experiments import experiment_key

    s3, bucket = ctx.client("s3"), ctx.registry.bucket
    doc = ea.load_experiment(s3, bucket, model)
    if doc is None:
        raise CliError(f"no experiment is running on {model}")
    versions = {int(v["version"]): v["name"] for v in doc["variants"]}
    champion_version = next(int(v["version"]) for v in doc["variants"] if v["name"] == doc["champion"])
    if promote is not None and promote not in versions:
        raise CliError(
            f"v{promote} is not a variant of experiment {doc['id']} ({', '.join(f'v{v}' for v in versions)})"
        )
    snapshot = run_job(ctx, model)
    action = "keep" if promote in (None, champion_version) else "promote"
    archived = {
        **doc,
        "status": "concluded",
        "concluded_at": ea.iso(_now()),
        "conclusion": {"action": action, "version": champion_version if action == "keep" else promote},
        "final": {"at": snapshot["at"], "decision": snapshot["decision"]},
    }
    key = f"{ea.archive_prefix(model, str(doc['id']))}experiment.json"
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(archived, indent=1).encode())
    s3.delete_object(Bucket=bucket, Key=experiment_key(model))
    result: dict[str, Any] = {"experiment": archived, "archived_at": key, "snapshot": snapshot}
    if action == "promote":
        assert promote is not None
        result["release"] = run_release(ctx, model, promote)
    return result


def cmd_conclude(ctx: Context) -> int:
    from modeldeck.cli.release import released, render_outcome

    args = ctx.args
    result = conclude(ctx, args.model, args.promote)
    exp = result["experiment"]

    def render() -> None:
        render_snapshot(ctx, result["snapshot"])
        c = exp["conclusion"]
        verb = "keeps the champion" if c["action"] == "keep" else "promotes"
        ctx.out.print(f"[bold]experiment {exp['id']} concluded[/]: {verb} v{c['version']}; routing stops within 20 s")
        ctx.out.print(f"[dim]archived at {result['archived_at']}[/]")
        if "release" in result:
            render_outcome(ctx, args.model, int(c["version"]), result["release"])

    ctx.emit(result, render)
    return 0 if "release" not in result or released(result["release"]) else 1


# --- report ----------------------------------------------------------------------------------------------


def _last_experiment_id(ctx: Context, model: str) -> str | None:
    """The newest archived experiment of the model (ids start with their start time)."""
    s3 = ctx.client("s3")
    prefix = f"experiments/{model}/"
    ids = [
        p["Prefix"][len(prefix) : -1]
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=ctx.registry.bucket, Prefix=prefix, Delimiter="/"
        )
        for p in page.get("CommonPrefixes", [])
    ]
    return max(ids) if ids else None


def cmd_report(ctx: Context) -> int:
    from modeldeck.experiment_report import render_report

    args, model = ctx.args, ctx.args.model
    s3, bucket = ctx.client("s3"), ctx.registry.bucket
    experiment_id = args.id
    if experiment_id is None:
        running = ea.load_experiment(s3, bucket, model)
        experiment_id = str(running["id"]) if running else _last_experiment_id(ctx, model)
    if experiment_id is None:
        raise CliError(f"{model} has had no experiment")
    history = ea.snapshots(s3, bucket, model, experiment_id)
    if not history:
        raise CliError(
            f"experiment {experiment_id} has no snapshot yet: the experiment job writes one every 15 minutes, "
            f"or now with `modeldeck experiment status {model}`"
        )
    args.out.write_text(render_report(history), encoding="utf-8")
    data = {"out": str(args.out), "model": model, "experiment": experiment_id, "snapshots": len(history)}
    ctx.emit(data, lambda: ctx.out.print(f"wrote {args.out} ({len(history)} snapshots of {experiment_id})"))
    return 0
