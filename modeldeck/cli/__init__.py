"""The ``modeldeck`` command line. Human-readable by default, ``--json`` on request.

Against the local cloud (moto, in-process, persisted in ``--state-dir``) unless ``--aws`` is given.
Every error is one line on stderr and a non-zero exit code; tracebacks are for bugs only.

One module per command group (``models``: train and the registry; ``release``; ``serve``: the API,
batch scoring and the OpenAPI document; ``drift``; ``experiment``: A/B tests; ``demo``), each importing
only ``common``; this module assembles them, so imports run one way.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from modeldeck.cli.common import Parser, SubParser, add_global_flags, open_context, version_type
from modeldeck.errors import ModeldeckError


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree (command modules are imported here, when a command line is parsed)."""
    from modeldeck.cli import demo, drift, experiment, models, register, release, serve

    parser = Parser(prog="modeldeck", description="Train, register, compare and serve scikit-learn models.")
    add_global_flags(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=SubParser)
    models.add_commands(sub, version_type)
    register.add_commands(sub)
    release.add_commands(sub, version_type)
    serve.add_commands(sub, version_type)
    drift.add_commands(sub)
    experiment.add_commands(sub, version_type)
    demo.add_commands(sub)
    return parser


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
