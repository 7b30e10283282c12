"""``register``: bring your own ONNX model (``modeldeck.byo``).

Unlike ``train``, which runs the training state machine in the cloud, ``register`` runs on the operator's
machine and writes the new version straight into the registry bucket (S3) with the operator's credentials, through
:class:`modeldeck.registry.Registry` (conditional writes, card last). There is nothing to compute in the cloud: the
artifact already exists, and its checks (graph vs declaration, holdout parity, Lambda fit, reference profile) need
only onnxruntime and the files at hand. On AWS the operator needs ``s3:PutObject``, ``s3:GetObject`` and
``s3:ListBucket`` on the registry bucket. A release then deploys it like any registered version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modeldeck.cli.common import Context, positive_int

DEFAULT_MEMORY_MB = 1024  # infra.config.LambdaConfig's default, when no cdk.json says otherwise


def add_commands(sub: Any) -> None:
    register = sub.add_parser(
        "register",
        help="register a bring-your-own ONNX model: check it against its spec, gate it on parity, profile it",
    )
    register.add_argument("model", help="the model's name (the spec's name)")
    register.add_argument("--onnx", type=Path, required=True, help="the ONNX file")
    register.add_argument("--spec", type=Path, required=True, help="its spec, e.g. models/MODEL.toml")
    register.add_argument(
        "--memory-mb",
        type=positive_int,
        default=None,
        help="the inference function's memory the model must fit (default: cdk.json lambda.memory_mb, else 1024)",
    )
    register.set_defaults(func=cmd_register)


def configured_memory_mb(cdk_json: Path = Path("cdk.json")) -> int:
    """The inference function's memory from ``cdk.json`` (``context.modeldeck.lambda.memory_mb``)."""
    try:
        context = json.loads(cdk_json.read_text())["context"]["modeldeck"]
        return int(context["lambda"]["memory_mb"])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_MEMORY_MB


def cmd_register(ctx: Context) -> int:
    """Register; the card of the new (or identical, already registered) version is shown."""
    from modeldeck.byo import register_onnx
    from modeldeck.cli.models import render_card

    args = ctx.args
    memory = args.memory_mb or configured_memory_mb()
    card, created = register_onnx(ctx.registry, args.model, args.onnx, args.spec, memory_mb=memory)

    def render() -> None:
        verb = "registered" if created else "already registered (same spec, reference and artifact) as"
        ctx.out.print(f"[bold green]✓[/] {card.name} {verb} v{card.version}")
        render_card(ctx, card)

    ctx.emit({"created": created, "card": card.to_dict()}, render)
    return 0
