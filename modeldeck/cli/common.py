"""What every command shares: the global flags, the parser classes, the context a command acts on (the
registry and deployment of the chosen cloud, and the console), progress and following executions.

Command modules import this one (the demo also drives the other commands); ``modeldeck.cli`` imports the
command modules and nothing imports it back, so imports run one way.
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


class CliError(ModeldeckError):
    """A usage problem found after parsing (bad combination of arguments)."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def version_type(text: str) -> int:
    """An argparse type: a model version number (``3`` or ``v3``), at least 1."""
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


def add_global_flags(parser: argparse.ArgumentParser, suppress: bool) -> None:
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


class SubParser(Parser):
    """A subcommand's parser: it also accepts the global flags (see :func:`add_global_flags`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        add_global_flags(self, suppress=True)


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

    # The demo starts a fresh cloud of its own, even while `modeldeck serve` owns the state directory.
    endpoint = None if getattr(args, "fresh_cloud", False) else running_endpoint(args.state_dir)
    if endpoint is not None:
        # `modeldeck serve` owns this state directory: act on its cloud, through its endpoint, once it has
        # deployed the app as the sources now are (a spec added or edited since it started).
        endpoint = current_endpoint(args.state_dir, endpoint)
        client = endpoint_client_factory(endpoint["url"])
        yield Context(args, client, endpoint["bucket"], Deployment(client, endpoint["outputs"]))
        return

    templates = assembly_templates(cdk_out_of(args), progress=_note)
    with local_cloud(args.state_dir, bucket=args.bucket or LOCAL_BUCKET, templates=templates) as cloud:
        local = Deployment(cloud.client, cloud.deployer.outputs, cloud) if templates else None
        yield Context(args, cloud.client, cloud.bucket, local, cloud)


def cdk_out_of(args: argparse.Namespace) -> Path:
    """Where the local cloud's cloud assembly is synthesized: --cdk-out, else STATE_DIR/cdk.out."""
    return Path(args.cdk_out or args.state_dir / "cdk.out")


SERVE_REDEPLOY_TIMEOUT = 60.0  # seconds; serve looks for a new assembly every second and deploys it in about one


def current_endpoint(state_dir: Path, endpoint: dict[str, Any]) -> dict[str, Any]:
    """The running ``modeldeck serve``'s endpoint once its cloud runs the app's templates as they are now.

    The templates are re-synthesized here when their sources changed (e.g. a spec added to models/); serve sees
    the new assembly and deploys it into its running cloud, following CloudFormation's update rules
    (``TemplateDeployer``). This waits for that, and says exactly what went wrong if it does not happen.
    """
    import time

    from modeldeck.localcloud import assembly_templates, running_endpoint
    from modeldeck.localcloud.cloudformation import assembly_digest

    if "assembly" not in endpoint or "cdk_out" not in endpoint:
        return endpoint  # a serve that does not pick up templates: it keeps what it started with
    cdk_out = Path(endpoint["cdk_out"])
    assembly_templates(cdk_out, progress=_note)
    wanted = assembly_digest(cdk_out)
    if wanted is None or wanted == endpoint["assembly"]:
        return endpoint
    pid = endpoint.get("pid")
    _note(f"modeldeck serve (pid {pid}) is deploying the changed templates into its cloud...")
    deadline = time.monotonic() + SERVE_REDEPLOY_TIMEOUT
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = running_endpoint(state_dir)
        if now is None:
            raise ModeldeckError(f"modeldeck serve (pid {pid}) stopped; run the command again")
        if now.get("assembly") == wanted:
            return now
        failed = now.get("deploy_error") or {}
        if failed.get("assembly") == wanted:
            raise ModeldeckError(
                f"modeldeck serve (pid {pid}) could not deploy the changed templates: {failed.get('error')}; "
                "stop it (Ctrl-C) and start it again to deploy them into a fresh cloud"
            )
    raise ModeldeckError(
        f"modeldeck serve (pid {pid}) has not deployed the changed templates within {SERVE_REDEPLOY_TIMEOUT:.0f} s; "
        "stop it (Ctrl-C) and start it again"
    )


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


# The training state machine's task states, as the progress bar names them.
_STATE_STAGES = {
    "Validate": "load data",
    "Train": "train",
    "Evaluate": "evaluate",
    "Convert": "convert",
    "Compare": "compare",
    "Register": "register",
}


def follow_execution(
    sfn: Any, execution: str, progress: Callable[[str], None], stages: dict[str, str] | None = None
) -> dict[str, Any]:
    """Poll an execution to its end, reporting each state of ``stages`` (state name → stage; by default the
    training state machine's) as it is entered."""
    import time

    stages = _STATE_STAGES if stages is None else stages
    seen = 0
    while True:
        described = sfn.describe_execution(executionArn=execution)
        events = sfn.get_execution_history(executionArn=execution, maxResults=1000)["events"]
        for event in events[seen:]:
            name = event.get("stateEnteredEventDetails", {}).get("name")
            if name in stages:
                progress(stages[name])
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


DEFAULT_VERSION_RULE = "the champion (the version live serves), or the latest version while there is no champion"


def default_version(ctx: Context, model: str, version: int | None) -> int:
    """The one rule for a command's optional VERSION: :data:`DEFAULT_VERSION_RULE`."""
    if version is not None:
        return version
    champion = ctx.registry.get_champion(model)
    return champion if champion is not None else ctx.registry.latest(model)


def fraction(what: str) -> Callable[[str], float]:
    """An argparse type: a number strictly between 0 and 1, which errors call ``what``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not 0 < value < 1:
            raise argparse.ArgumentTypeError(f"{what} is between 0 and 1 (exclusive), got {value:g}")
        return value

    return parse
