"""CLI commands for serving: ``serve`` (the local API gateway), ``predict`` (batch scoring) and ``openapi``."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldeck.cli.common import (
    DEFAULT_VERSION_RULE,
    CliError,
    cdk_out_of,
    default_version,
    execution_failure,
    follow_execution,
    positive_int,
    stage_progress,
)
from modeldeck.errors import ModeldeckError

if TYPE_CHECKING:
    from modeldeck.cli.common import Context

LOOPBACK = "127.0.0.1"


def add_commands(sub: Any, version_type: Any) -> None:
    serve = sub.add_parser("serve", help="the HTTP API on 127.0.0.1, through the local API gateway")
    serve.add_argument(
        "--port",
        type=_port,
        default=int(os.environ.get("MODELDECK_PORT", 8080)),
        help="port on 127.0.0.1 (default 8080; 0 picks a free one)",
    )
    serve.add_argument(
        "--host",
        default=LOOPBACK,
        help="only 127.0.0.1 is allowed: the local gateway is not meant to be reachable from other machines",
    )
    serve.set_defaults(func=cmd_serve)

    predict = sub.add_parser(
        "predict",
        help="score a CSV or Parquet file with a registered version, or an S3 prefix with the batch state machine",
    )
    predict.add_argument("model")
    predict.add_argument("--version", type=version_type, default=None, help=f"default: {DEFAULT_VERSION_RULE}")
    predict.add_argument(
        "--input", "-i", required=True, help="input .csv or .parquet, or s3://bucket/prefix/ (CSV, JSON Lines, Parquet)"
    )
    predict.add_argument(
        "--output", "-o", required=True, help="output .csv, .parquet or .jsonl, or s3://bucket/prefix/ (Parquet)"
    )
    predict.add_argument("--chunk-rows", type=positive_int, default=10_000, help="rows per chunk (default 10000)")
    predict.set_defaults(func=cmd_predict)

    openapi = sub.add_parser("openapi", help="print the HTTP API's OpenAPI 3 document")
    openapi.add_argument("--server", default=None, help="a server URL to include, e.g. http://127.0.0.1:8080")
    openapi.set_defaults(func=cmd_openapi, standalone=True)


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"ports are 0-65535, got {value}")
    return value


def cmd_openapi(args: argparse.Namespace) -> int:
    """Needs no cloud: the document is generated from the model specs, as the API is synthesized from them."""
    from modeldeck.openapi import document, spec_models

    print(json.dumps(document(spec_models(), args.server), indent=2))
    return 0


def cmd_predict(ctx: Context) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from modeldeck.batch import check_paths, count_rows, score_file
    from modeldeck.onnxmodel import OnnxModel

    args = ctx.args
    remote = [str(p).startswith("s3://") for p in (args.input, args.output)]
    if any(remote):
        if not all(remote):
            raise CliError("--input and --output must both be s3:// prefixes (batch scoring), or both local files")
        return _predict_s3(ctx)
    args.input, args.output = Path(args.input), Path(args.output)
    check_paths(args.input, args.output)  # before the model loads and the progress bar starts
    version = default_version(ctx, args.model, args.version)
    card = ctx.registry.get_card(args.model, version)
    model = OnnxModel(card, ctx.registry.get_model_bytes(card), threads=os.cpu_count() or 1)
    total = count_rows(args.input)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=ctx.err, disable=ctx.json, transient=False) as progress:
        task = progress.add_task(f"score {args.input.name} with {card.name} v{version}", total=total)
        result = score_file(
            model,
            args.input,
            args.output,
            chunk_rows=args.chunk_rows,
            progress=lambda rows: progress.advance(task, rows),
        )
    data = {
        "model": card.name,
        "version": version,
        "rows": result.rows,
        "chunks": result.chunks,
        "output": str(result.output),
    }
    ctx.emit(
        data,
        lambda: ctx.out.print(
            f"[bold green]✓[/] scored {result.rows:,} rows with {card.name} v{version} → {result.output}"
        ),
    )
    return 0


# The batch state machine's states, as the progress bar names them.
BATCH_STAGES = {"Plan": "plan", "Score": "score files", "Manifest": "manifest", "FailedManifest": "manifest"}


def _predict_s3(ctx: Context) -> int:
    """Score an S3 prefix through the batch state machine (Distributed Map), following it to its end; the
    run's manifest (``{output}_manifest.json``) is shown, or printed whole with --json."""
    import uuid

    from modeldeck.batch import MANIFEST, Location

    args = ctx.args
    source, target = Location.parse(args.input, "--input"), Location.parse(args.output, "--output")
    request: dict[str, Any] = {"model": args.model, "input": str(source), "output": str(target)}
    if args.version is not None:
        request["version"] = args.version
    sfn = ctx.client("stepfunctions")
    execution = sfn.start_execution(
        stateMachineArn=ctx.deployment.output("BatchStateMachineArn"),
        name=f"{args.model}-{uuid.uuid4().hex[:12]}",
        input=json.dumps(request),
    )["executionArn"]
    title = f"score {source} with {args.model}"
    with stage_progress(ctx, list(dict.fromkeys(BATCH_STAGES.values())), title) as progress:
        described = follow_execution(sfn, execution, progress, BATCH_STAGES)
    manifest = _run_manifest(ctx.client("s3"), target, execution)
    if described["status"] != "SUCCEEDED" or manifest is None:
        where = f" (manifest: {target}{MANIFEST})" if manifest is not None else ""
        raise ModeldeckError(f"batch scoring failed: {execution_failure(sfn, execution, described)}{where}")

    def render() -> None:
        ctx.out.print(
            f"[bold green]✓[/] scored {manifest['rows_out']:,} of {manifest['rows_in']:,} rows with "
            f"{manifest['model']} v{manifest['version']} ({manifest['version_source']}) in "
            f"{manifest['duration_seconds']:.1f} s → {target}"
        )
        for reason, entry in manifest["rejected"].items():
            ctx.out.print(f"  rejected {entry['count']:,}: {reason} (e.g. {entry['examples'][0]['error']})")
        skipped = [f["file"] for f in manifest["files"] if "skipped" in f]
        if skipped:
            ctx.out.print(f"  skipped {len(skipped)} object(s) that are not CSV, JSON Lines or Parquet")
        ctx.out.print(f"  manifest: {target}{MANIFEST}")

    ctx.emit(manifest, render)
    return 0


def _run_manifest(s3: Any, target: Any, execution: str) -> dict[str, Any] | None:
    """This execution's manifest, if it wrote one (a refused request writes none; an older run's is not it)."""
    from botocore.exceptions import ClientError

    from modeldeck.batch import MANIFEST

    try:
        manifest = json.loads(s3.get_object(Bucket=target.bucket, Key=f"{target.prefix}{MANIFEST}")["Body"].read())
    except ClientError:
        return None
    return manifest if manifest.get("execution") == execution.rsplit(":", 1)[-1] else None


def _live_table(ctx: Context, functions: dict[str, str]) -> Any:
    from rich.table import Table

    lam = ctx.client("lambda")
    table = Table("model", "function", "alias live → Lambda version (model version, weight)", title_justify="left")
    for model, function in sorted(functions.items()):
        try:
            alias = lam.get_alias(FunctionName=function, Name="live")
        except Exception:
            table.add_row(model, function, "[red]no alias live[/]")
            continue
        pinned = {
            v["Version"]: v.get("Environment", {}).get("Variables", {}).get("MODEL_VERSION")
            for v in lam.list_versions_by_function(FunctionName=function)["Versions"]
        }
        weights = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
        main = 1.0 - sum(weights.values())
        parts = [f"{alias['FunctionVersion']} (v{pinned.get(alias['FunctionVersion'])}, {main:.0%})"]
        parts += [f"{ver} (v{pinned.get(ver)}, {w:.0%})" for ver, w in weights.items()]
        cell = ", ".join(parts)
        if pinned.get(alias["FunctionVersion"]) in (None, "0"):
            cell += "  [yellow]nothing released yet: modeldeck release " + model + " <version>[/]"
        table.add_row(model, function, cell)
    return table


def pick_up_templates(ctx: Context, endpoint: Any, cdk_out: Path, deployed: str | None) -> str | None:
    """Deploy the assembly in ``cdk_out`` into the running cloud when another command re-synthesized it (its
    digest is no longer ``deployed``), as a stack update: new models get their functions, alarms and routes,
    unchanged resources are not touched, ``live`` stays (``TemplateDeployer``). The endpoint file then tells
    other commands the new outputs, or the error. Returns the digest now deployed (or tried)."""
    from modeldeck.deployment import Deployment
    from modeldeck.localcloud.cloudformation import assembly_digest, synthesized_templates

    if assembly_digest(cdk_out) in (None, deployed):
        return deployed
    before = set(Deployment(ctx.cloud.client, {}).models())
    digest = None
    try:
        digest, templates = synthesized_templates(cdk_out)
        ctx.cloud.deploy(templates)
    except Exception as exc:  # reported to the waiting command; serving goes on with what is deployed
        ctx.err.print(f"[red]could not deploy the changed templates:[/] {exc}", markup=True)
        endpoint.publish(deploy_error={"assembly": digest or assembly_digest(cdk_out), "error": str(exc)})
        return digest or assembly_digest(cdk_out)
    endpoint.publish(outputs=ctx.cloud.deployer.outputs, assembly=digest, deploy_error=None)
    added = sorted(set(Deployment(ctx.cloud.client, {}).models()) - before)
    ctx.err.print("deployed the changed templates" + (f"; now serving {', '.join(added)} too" if added else ""))
    return digest


def cmd_serve(ctx: Context) -> int:
    from modeldeck.gateway import Gateway, serve

    args = ctx.args
    if args.host not in (LOOPBACK, "localhost"):
        raise ModeldeckError(f"--host {args.host}: the local gateway binds 127.0.0.1 only")
    if ctx.cloud is None and not args.aws:
        raise ModeldeckError(
            f"modeldeck serve is already running for {args.state_dir}; stop it first or use another --state-dir"
        )
    if ctx.cloud is None:
        raise ModeldeckError(
            "serve runs the local gateway; on AWS, call the API Gateway endpoint (stack output ApiUrl) instead"
        )
    api_key = os.environ.get("MODELDECK_API_KEY") or None
    gateway = Gateway(ctx.cloud, api_key=api_key)
    try:
        server = serve(gateway, args.port, access_log=lambda line: ctx.err.print(line, markup=False))
    except OSError as exc:
        raise ModeldeckError(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}") from None
    functions = gateway.functions()
    url = gateway.server_url
    if not functions:
        ctx.err.print("[yellow]no model is deployed yet: train one (modeldeck train models/breast-cancer.toml)[/]")
    else:
        ctx.out.print(_live_table(ctx, functions))
    # Every method requires the API key, as on AWS; without MODELDECK_API_KEY the gateway made one up.
    key = ' -H "x-api-key: $MODELDECK_API_KEY"' if api_key else f' -H "x-api-key: {gateway.api_key}"'
    ctx.out.print(
        f"serving on {url} (API key {'from MODELDECK_API_KEY' if api_key else gateway.api_key}, "
        f"in the x-api-key header); OpenAPI at {url}/openapi.json; Ctrl-C stops",
        markup=False,
    )
    if functions:
        model = sorted(functions)[0]
        ctx.out.print(f"  curl -s{key} {url}/v2/models/{model}", markup=False)
        ctx.out.print(
            f"  curl -s{key} -H 'content-type: application/json' -d '{{\"instances\": [{{...}}]}}' "
            f"{url}/v1/models/{model}:predict",
            markup=False,
        )
    sys.stdout.flush()
    from modeldeck.localcloud import SharedEndpoint
    from modeldeck.localcloud.cloudformation import assembly_digest

    endpoint = SharedEndpoint(ctx.cloud, args.state_dir)
    cdk_out = cdk_out_of(args).resolve()
    deployed = assembly_digest(cdk_out)
    endpoint.publish(cdk_out=str(cdk_out), assembly=deployed)
    # A plain `kill` stops the server like Ctrl-C does, so the cloud's state is saved on the way out.
    signal.signal(signal.SIGTERM, _interrupt)
    ctx.cloud.start_ticker()
    ctx.err.print(
        f"other modeldeck commands with --state-dir {args.state_dir} act on this cloud while it runs "
        f"(AWS endpoint {endpoint.url})"
    )
    thread = threading.Thread(target=server.serve_forever, name="modeldeck-gateway", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(1.0)
            deployed = pick_up_templates(ctx, endpoint, cdk_out, deployed)
    except KeyboardInterrupt:
        ctx.err.print("stopping")
    finally:
        server.shutdown()
        server.server_close()
        endpoint.close()
    return 0
