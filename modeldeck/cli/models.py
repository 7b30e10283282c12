"""``train`` and ``models list|show|diff``: training through the training state machine, and the registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modeldeck.cli.common import (
    DEFAULT_VERSION_RULE,
    Context,
    SubParser,
    default_version,
    execution_failure,
    follow_execution,
    stage_progress,
)
from modeldeck.cli.release import follow_release, released, render_outcome, shadow_summary
from modeldeck.errors import ModeldeckError


def add_commands(sub: Any, version_type: Any) -> None:
    train = sub.add_parser("train", help="train a model spec, gate it on parity, and register it")
    train.add_argument("spec", type=Path, help="path to a model spec, e.g. models/breast-cancer.toml")
    train.add_argument(
        "--release",
        action="store_true",
        help="hand the registered version over to a release (canary policy from cdk.json)",
    )
    train.set_defaults(func=cmd_train)

    models = sub.add_parser("models", help="inspect the registry")
    msub = models.add_subparsers(dest="models_command", required=True, parser_class=SubParser)
    mlist = msub.add_parser("list", help="models and their versions")
    mlist.add_argument("name", nargs="?")
    mlist.set_defaults(func=cmd_models_list)
    show = msub.add_parser("show", help="a version's model card")
    show.add_argument("name")
    show.add_argument("version", nargs="?", type=version_type, help=f"default: {DEFAULT_VERSION_RULE}")
    show.set_defaults(func=cmd_models_show)
    mdiff = msub.add_parser("diff", help="metrics side by side and prediction agreement of two versions")
    mdiff.add_argument("name")
    mdiff.add_argument("old", type=version_type)
    mdiff.add_argument("new", type=version_type)
    mdiff.add_argument(
        "--shadow",
        action="store_true",
        help="also the shadow report: NEW's agreement and latency against live on captured traffic",
    )
    mdiff.set_defaults(func=cmd_models_diff)


TRAIN_STAGES = ("load data", "train", "evaluate", "convert", "compare", "register")


def run_training(ctx: Context, spec_path: Path, release: bool = False) -> tuple[Any, bool, dict[str, Any]]:
    """Start the training state machine on a spec file and follow it. Returns (card, created, output)."""
    import uuid

    from modeldeck.spec import load_spec, spec_dir, spec_payload

    spec = load_spec(spec_path)  # a bad spec fails here, in one line, before anything starts
    payload = {
        "model": spec.name,
        "spec": spec_payload(spec_path),
        "spec_dir": spec_dir(spec_path),
        "release": release,
    }
    sfn = ctx.client("stepfunctions")
    execution = sfn.start_execution(
        stateMachineArn=ctx.deployment.output("TrainingStateMachineArn"),
        name=f"{spec.name}-{uuid.uuid4().hex[:12]}",
        input=json.dumps(payload),
    )["executionArn"]
    with stage_progress(ctx, TRAIN_STAGES, f"train {spec.name}") as progress:
        described = follow_execution(sfn, execution, progress)
    if described["status"] != "SUCCEEDED":
        raise ModeldeckError(f"training of {spec.name} failed: {execution_failure(sfn, execution, described)}")
    output = json.loads(described["output"])
    card = ctx.registry.get_card(spec.name, int(output["register"]["version"]))
    return card, bool(output["register"]["created"]), {**output, "execution": execution}


def cmd_train(ctx: Context) -> int:
    """Train a spec through the training state machine; the card of the result is shown. With --release, the
    release the training state machine hands the version to is followed to its end, as ``release`` does: the
    exit status is 0 only when it was promoted."""
    card, created, output = run_training(ctx, ctx.args.spec, release=bool(ctx.args.release))
    release_execution = (output.get("release_execution") or {}).get("execution_arn")
    data: dict[str, Any] = {
        "created": created,
        "card": card.to_dict(),
        "execution": output["execution"],
        "release_execution": release_execution,
    }
    if not ctx.json:
        verb = "registered" if created else "already registered (same spec, data and artifact) as"
        ctx.out.print(f"[bold green]✓[/] {card.name} {verb} v{card.version}")
        render_card(ctx, card)
    result = follow_release(ctx, release_execution) if release_execution else None
    if result is not None:
        data["release"] = result

    def render() -> None:
        if result is not None:
            render_outcome(ctx, card.name, card.version, result)

    ctx.emit(data, render)
    return 0 if result is None or released(result) else 1


def _parity_line(task: str, parity: dict[str, Any]) -> str:
    """scikit-learn vs onnxruntime on the holdout; label agreement only means something for a classifier."""
    if parity.get("mode") == "none":
        return 'not checked (the spec declares parity = "none")'
    if parity.get("mode") == "holdout":  # bring your own: the holdout's expected outputs vs onnxruntime
        outputs = ", ".join(parity.get("outputs", []))
        return f"{parity.get('rows')} holdout rows, {outputs}: max |diff| {parity.get('max_abs_diff', 0):.2g}"
    labels = f"labels {parity.get('label_agreement', 0):.0%}, " if task == "classification" else ""
    return f"{parity.get('rows')} rows, {labels}max |diff| {parity.get('max_abs_diff', 0):.2g}"


def render_card(ctx: Context, card: Any) -> None:
    from rich.table import Table

    table = Table(title=f"{card.name} v{card.version}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in card.metrics.items())
    parity = card.parity
    rows = [
        ("created", card.created_at),
        ("estimator", card.estimator),
        ("task", f"{card.task}" + (f" ({', '.join(map(str, card.classes))})" if card.classes else "")),
        ("metrics (holdout)", metrics),
        ("primary metric", card.primary_metric),
        ("parity", _parity_line(card.task, parity)),
        ("dataset", f"{card.dataset['source']} · {card.dataset['rows']} rows · sha256 {card.dataset['sha256'][:12]}"),
        ("features", ", ".join(f"{f.name}:{f.kind[:3]}" for f in card.schema.features)),
        ("outputs", ", ".join(f"{o.name} {o.datatype}{o.shape}" for o in card.outputs)),
        ("onnx", f"{card.onnx_bytes:,} bytes · opset {card.opset} · sha256 {card.onnx_sha256[:12]}"),
        ("parent", f"v{card.parent_version}" if card.parent_version else "none (no champion when registered)"),
        ("code", f"{card.code_version} · seed {card.seed}"),
        ("libraries", ", ".join(f"{k} {v}" for k, v in card.libraries.items())),
    ]
    if card.schema.derived:
        # Clients send the sources; the graph computes these (right-closed bins, as training's pandas.cut).
        derived = "; ".join(
            f"{d.name} from {d.source}: bins {list(d.bins)} → {'|'.join(d.labels)}" for d in card.schema.derived
        )
        rows.insert(9, ("derived in the model", derived))
    byo = card.byo
    if byo:
        prov = byo["provenance"]
        tensor = card.tensor_input
        rows.insert(0, ("provenance", f"{prov['producer_name']} {prov['producer_version']} · IR {prov['ir_version']}"))
        if tensor is not None:
            rows.insert(8, ("input", f"{tensor.name} {tensor.datatype}{list(tensor.shape)} (drift: summary features)"))
    for key, value in rows:
        table.add_row(key, str(value))
    ctx.out.print(table)


def cmd_models_list(ctx: Context) -> int:
    from rich.table import Table

    names = [ctx.args.name] if ctx.args.name else ctx.registry.list_models()
    data: list[dict[str, Any]] = []
    for name in names:
        champion = ctx.registry.get_champion(name)
        for version in ctx.registry.list_versions(name):
            card = ctx.registry.get_card(name, version)
            data.append(
                {
                    "name": name,
                    "version": version,
                    "champion": version == champion,
                    "created_at": card.created_at,
                    "estimator": card.estimator,
                    card.primary_metric: card.metrics.get(card.primary_metric),
                }
            )
    if ctx.args.name and not data:
        raise ModeldeckError(f"model {ctx.args.name!r} has no registered versions")

    def render() -> None:
        if not data:
            ctx.out.print("The registry is empty. Train one with: modeldeck train models/breast-cancer.toml")
            return
        table = Table("model", "version", "champion", "created", "estimator", "primary metric")
        for row in data:
            metric = next(k for k in row if k not in {"name", "version", "champion", "created_at", "estimator"})
            table.add_row(
                row["name"],
                f"v{row['version']}",
                "★" if row["champion"] else "",
                row["created_at"][:19],
                row["estimator"].rsplit(".", 1)[-1],
                # A bring-your-own version registered without a holdout target has no metrics.
                f"{metric} {row[metric]:.4f}" if row[metric] is not None else f"{metric} (no holdout target)",
            )
        ctx.out.print(table)

    ctx.emit(data, render)
    return 0


def cmd_models_show(ctx: Context) -> int:
    version = default_version(ctx, ctx.args.name, ctx.args.version)
    card = ctx.registry.get_card(ctx.args.name, version)
    ctx.emit(card.to_dict(), lambda: render_card(ctx, card))
    return 0


def cmd_models_diff(ctx: Context) -> int:
    from rich.table import Table

    from modeldeck.compare import diff

    result = diff(ctx.registry, ctx.args.name, ctx.args.old, ctx.args.new)
    data = result.to_dict()
    if getattr(ctx.args, "shadow", False):
        data["shadow_report"] = shadow = latest_shadow_report(ctx, ctx.args.name, ctx.args.new)

    def render() -> None:
        table = Table(
            "metric",
            f"v{result.old}",
            f"v{result.new}",
            "change",
            title=f"{result.name}: v{result.old} vs v{result.new} on v{result.new}'s holdout ({result.rows} rows)",
            title_justify="left",
        )
        for metric, old in result.metrics_old.items():
            new = result.metrics_new[metric]
            mark = " (primary)" if metric == result.primary_metric else ""
            table.add_row(metric + mark, f"{old:.4f}", f"{new:.4f}", f"{new - old:+.4f}")
        ctx.out.print(table)
        ctx.out.print(f"prediction agreement: [bold]{result.agreement:.2%}[/]")
        verdict = "[green]passes[/]" if result.passed else "[red]fails[/]"
        change = result.metrics_new[result.primary_metric] - result.metrics_old[result.primary_metric]
        direction = "worse" if result.regression > 0 else "better" if result.regression < 0 else "unchanged"
        ctx.out.print(
            f"gate: v{result.new} {verdict} ({result.primary_metric} {change:+.4f}: {direction}"
            + (f" by {abs(result.regression):.4f}" if result.regression else "")
            + f"; a version may be worse by at most {result.tolerance})"
        )
        if "shadow_report" in data:
            if shadow is None:
                ctx.out.print(
                    f"no shadow release of v{result.new} has finished yet "
                    f"(modeldeck release {result.name} {result.new} --strategy shadow)"
                )
            else:
                ctx.out.print(f"shadow: v{result.new} {shadow_summary(shadow)}")

    ctx.emit(data, render)
    return 0


def latest_shadow_report(ctx: Context, model: str, version: int) -> dict[str, Any] | None:
    """The report of the most recent finished shadow release of a version, from the release records."""
    from modeldeck import release

    s3, bucket = ctx.registry.s3, ctx.registry.bucket
    keys = [
        o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"releases/{model}/history/").get("Contents", [])
    ]
    for key in sorted(keys, reverse=True):
        record = release.read_json(ctx.registry, key) or {}
        if record.get("version") == version and record.get("shadow_report"):
            return dict(record["shadow_report"])
    return None
