"""The ``modeldeck`` command line. Human-readable by default, ``--json`` on request.

Against the local cloud (moto, in-process, persisted in ``--state-dir``) unless ``--aws`` is given.
Every error is one line on stderr and a non-zero exit code; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from modeldeck.errors import ModeldeckError

DEFAULT_STATE_DIR = Path(".modeldeck")
TRAIN_STAGES = ("load data", "train", "evaluate", "convert", "compare", "register")


class CliError(ModeldeckError):
    """A usage problem found after parsing (bad combination of arguments)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def _version(text: str) -> int:
    try:
        value = int(text.lstrip("v"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a version number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"versions start at 1, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_global_flags(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The flags every command takes, before or after the subcommand (``status --json`` = ``--json status``).

    On subcommands they default to ``SUPPRESS``, so a flag given there overrides the top-level one and an
    absent flag leaves the top-level value (or default) alone.
    """

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--aws", action="store_true", default=default(False), help="act on real AWS instead of the local cloud"
    )
    parser.add_argument(
        "--bucket",
        default=default(os.environ.get("MODELDECK_BUCKET")),
        help="registry bucket (default: the local cloud's, or $MODELDECK_BUCKET)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=default(Path(os.environ.get("MODELDECK_STATE_DIR", DEFAULT_STATE_DIR))),
        help="where the local cloud keeps its state between commands (default: .modeldeck)",
    )
    parser.add_argument("--json", action="store_true", default=default(False), help="machine-readable output")
    parser.add_argument(
        "--stack-prefix",
        default=default(os.environ.get("MODELDECK_STACK_PREFIX", "modeldeck-dev-")),
        help="with --aws: the CloudFormation stacks to read outputs from (default: modeldeck-dev-, the dev stage)",
    )
    parser.add_argument(
        "--cdk-out",
        type=Path,
        default=default(Path(os.environ["MODELDECK_CDK_OUT"]) if os.environ.get("MODELDECK_CDK_OUT") else None),
        help="local cloud: where the app is synthesized for local deployment (default: STATE_DIR/cdk.out)",
    )


class _SubParser(_Parser):
    """A subcommand's parser: it also accepts the global flags (see :func:`_add_global_flags`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _add_global_flags(self, suppress=True)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="modeldeck", description="Train, register, compare and serve scikit-learn models.")
    _add_global_flags(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_SubParser)

    train = sub.add_parser("train", help="train a model spec, gate it on parity, and register it")
    train.add_argument("spec", type=Path, help="path to a model spec, e.g. models/breast-cancer.toml")
    train.add_argument(
        "--release",
        action="store_true",
        help="hand the registered version over to a release (canary policy from cdk.json)",
    )
    train.set_defaults(func=cmd_train)

    models = sub.add_parser("models", help="inspect the registry")
    msub = models.add_subparsers(dest="models_command", required=True, parser_class=_SubParser)
    mlist = msub.add_parser("list", help="models and their versions")
    mlist.add_argument("name", nargs="?")
    mlist.set_defaults(func=cmd_models_list)
    show = msub.add_parser("show", help="a version's model card")
    show.add_argument("name")
    show.add_argument("version", nargs="?", type=_version, help=f"default: {DEFAULT_VERSION_RULE}")
    show.set_defaults(func=cmd_models_show)
    mdiff = msub.add_parser("diff", help="metrics side by side and prediction agreement of two versions")
    mdiff.add_argument("name")
    mdiff.add_argument("old", type=_version)
    mdiff.add_argument("new", type=_version)
    mdiff.add_argument(
        "--shadow",
        action="store_true",
        help="also the shadow report: NEW's agreement and latency against live on captured traffic",
    )
    mdiff.set_defaults(func=cmd_models_diff)

    from modeldeck.cli_release import add_commands as add_release_commands

    add_release_commands(sub, _version)

    from modeldeck.cli_serve import add_commands as add_serving_commands

    add_serving_commands(sub, _version)

    from modeldeck.cli_drift import add_commands as add_drift_commands

    add_drift_commands(sub)

    demo = sub.add_parser("demo", help="the narrated lifecycle on the local cloud")
    demo.add_argument("--spec", type=Path, default=Path("models/breast-cancer.toml"))
    demo.set_defaults(func=cmd_demo)
    return parser


class Context:
    """What a command acts on: the registry and the deployed resources of the chosen cloud, and the console."""

    def __init__(
        self,
        args: argparse.Namespace,
        client: Callable[[str], Any],
        bucket: str,
        deployment: Any = None,
        cloud: Any = None,
    ) -> None:
        from rich.console import Console

        from modeldeck.registry import Registry

        self.args = args
        self.client = client
        self.registry = Registry(client("s3"), bucket)
        self.json = bool(args.json)
        # Piped output keeps whole lines: rich would otherwise wrap and truncate tables at 80 columns.
        wide = None if sys.stdout.isatty() else 10_000
        self.out = Console(highlight=False, soft_wrap=True, width=wide)
        self.err = Console(stderr=True, highlight=False)
        self._deployment = deployment
        self.cloud = cloud

    @property
    def deployment(self) -> Any:
        if self._deployment is None:
            raise CliError("this command needs the deployed app; on the local cloud run `make synth` first")
        return self._deployment

    def emit(self, data: Any, render: Callable[[], None]) -> None:
        if self.json:
            print(json.dumps(data, indent=2, sort_keys=True, default=str))
        else:
            render()


def rule(console: Any, title: str) -> None:
    """A titled horizontal rule, at most 100 columns wide (piped output is 10,000 columns wide for tables)."""
    from rich.rule import Rule

    console.print(Rule(title), width=min(console.width, 100))


@contextmanager
def open_context(args: argparse.Namespace) -> Iterator[Context]:
    from modeldeck.deployment import Deployment

    if args.aws:
        import boto3

        from modeldeck.aws import client_config

        session = boto3.Session()

        def aws_client(service: str) -> Any:
            return session.client(service, config=client_config())

        deployment = Deployment.from_aws(aws_client, args.stack_prefix)
        bucket = args.bucket or deployment.outputs.get("RegistryBucketName")
        if not bucket:
            raise CliError(
                "no registry bucket: pass --bucket, set MODELDECK_BUCKET, or deploy the stacks "
                f"(no stack named {args.stack_prefix}* has the output RegistryBucketName)"
            )
        yield Context(args, aws_client, bucket, deployment)
        return
    from modeldeck.localcloud import (
        LOCAL_BUCKET,
        assembly_templates,
        endpoint_client_factory,
        local_cloud,
        running_endpoint,
    )

    endpoint = running_endpoint(args.state_dir) if getattr(args, "func", None) is not cmd_demo else None
    if endpoint is not None:
        # `modeldeck serve` owns this state directory: act on its cloud, through its endpoint.
        client = endpoint_client_factory(endpoint["url"])
        yield Context(args, client, endpoint["bucket"], Deployment(client, endpoint["outputs"]))
        return

    cdk_out = args.cdk_out or args.state_dir / "cdk.out"
    templates = assembly_templates(cdk_out, progress=_note)
    with local_cloud(args.state_dir, bucket=args.bucket or LOCAL_BUCKET, templates=templates) as cloud:
        local = Deployment(cloud.client, cloud.deployer.outputs, cloud) if templates else None
        yield Context(args, cloud.client, cloud.bucket, local, cloud)


def _note(message: str) -> None:
    sys.stderr.write(message + "\n")


@contextmanager
def stage_progress(ctx: Context, stages: Sequence[str], title: str) -> Iterator[Callable[[str], None]]:
    """A progress bar over named stages; silent in --json mode."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    if ctx.json:
        yield lambda stage: None
        return
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[stage]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=ctx.err, transient=False) as progress:
        task = progress.add_task(title, total=len(stages), stage="")
        seen: list[str] = []

        def advance(stage: str) -> None:
            if seen:
                progress.advance(task)
            seen.append(stage)
            progress.update(task, stage=stage)

        yield advance
        progress.update(task, completed=len(stages), stage="done")


def run_training(ctx: Context, spec_path: Path, release: bool = False) -> tuple[Any, bool, dict[str, Any]]:
    """Start the training state machine on a spec file and follow it. Returns (card, created, output)."""
    import uuid

    from modeldeck.spec import load_spec, spec_payload

    spec = load_spec(spec_path)  # a bad spec fails here, in one line, before anything starts
    payload = {"model": spec.name, "spec": spec_payload(spec_path), "release": release}
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
    """Train a spec through the training state machine; the card of the result is shown."""
    card, created, output = run_training(ctx, ctx.args.spec, release=bool(ctx.args.release))
    release_execution = (output.get("release_execution") or {}).get("execution_arn")
    data = {
        "created": created,
        "card": card.to_dict(),
        "execution": output["execution"],
        "release_execution": release_execution,
    }

    def render() -> None:
        verb = "registered" if created else "already registered (same spec, data and artifact) as"
        ctx.out.print(f"[bold green]✓[/] {card.name} {verb} v{card.version}")
        render_card(ctx, card)
        if release_execution:
            ctx.out.print(f"release started: follow it with `modeldeck status {card.name}`")

    ctx.emit(data, render)
    return 0


# The training state machine's task states, as the progress bar names them.
_STATE_STAGES = {
    "Validate": "load data",
    "Train": "train",
    "Evaluate": "evaluate",
    "Convert": "convert",
    "Compare": "compare",
    "Register": "register",
}


def follow_execution(sfn: Any, execution: str, progress: Callable[[str], None]) -> dict[str, Any]:
    """Poll an execution to its end, reporting each task state as it is entered."""
    import time

    seen = 0
    while True:
        described = sfn.describe_execution(executionArn=execution)
        events = sfn.get_execution_history(executionArn=execution, maxResults=1000)["events"]
        for event in events[seen:]:
            name = event.get("stateEnteredEventDetails", {}).get("name")
            if name in _STATE_STAGES:
                progress(_STATE_STAGES[name])
        seen = len(events)
        if described["status"] != "RUNNING":
            return described
        time.sleep(0.1)


def execution_failure(sfn: Any, execution: str, described: dict[str, Any]) -> str:
    """The first task failure of an execution, as one readable line (the error's own message)."""
    events = sfn.get_execution_history(executionArn=execution, maxResults=1000)["events"]
    for event in events:
        details = event.get("lambdaFunctionFailedEventDetails") or event.get("taskFailedEventDetails")
        if details and details.get("error") not in (None, "States.Timeout"):
            cause = details.get("cause", "")
            try:
                parsed = json.loads(cause)
                cause = parsed.get("errorMessage", cause) if isinstance(parsed, dict) else cause
            except ValueError:
                pass
            return str(cause).replace("\n", " ").strip() or str(details.get("error"))
    if described.get("error") == "CandidateRejected":
        output = json.loads(events[-2].get("stateEnteredEventDetails", {}).get("input", "{}") or "{}")
        return f"rejected by the comparison with the champion: {(output.get('compare') or {}).get('reason')}"
    return f"{described.get('error')}: {described.get('cause')}"


def _parity_line(task: str, parity: dict[str, Any]) -> str:
    """scikit-learn vs onnxruntime on the holdout; label agreement only means something for a classifier."""
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
                f"{metric} {row[metric]:.4f}",
            )
        ctx.out.print(table)

    ctx.emit(data, render)
    return 0


DEFAULT_VERSION_RULE = "the champion (the version live serves), or the latest version while there is no champion"


def default_version(ctx: Context, model: str, version: int | None) -> int:
    """The one rule for a command's optional VERSION: :data:`DEFAULT_VERSION_RULE`."""
    if version is not None:
        return version
    champion = ctx.registry.get_champion(model)
    return champion if champion is not None else ctx.registry.latest(model)


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
                agreement = "n/a" if shadow["agreement"] is None else f"{shadow['agreement']:.2%}"
                ctx.out.print(
                    f"shadow: v{result.new} agreed with live on {agreement} of {shadow['rows']} rows "
                    f"({shadow['pairs']} mirrored requests); p50 latency {shadow['shadow_p50_ms']} ms "
                    f"vs live {shadow['live_p50_ms']} ms"
                )

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


def cmd_demo(ctx: Context) -> int:
    """The whole lifecycle, narrated, on the local cloud (make demo)."""
    from modeldeck.demo import Demo, DemoSettings

    if ctx.cloud is None:
        raise CliError("the demo runs on the local cloud; drop --aws")
    return Demo(ctx, DemoSettings(spec=ctx.args.spec)).run()


def main(argv: Sequence[str] | None = None) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "standalone", False):  # needs no cloud (e.g. `openapi`)
            return int(args.func(args))
        with open_context(args) as ctx:
            return int(args.func(ctx))
    except ModeldeckError as exc:
        sys.stderr.write(f"modeldeck: error: {exc}\n")
        return 1
    except (BotoCoreError, ClientError) as exc:  # --aws without a region or credentials, access denied...
        sys.stderr.write(f"modeldeck: error: AWS: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("modeldeck: interrupted\n")
        return 130
