"""Global flags (``--json``, ``--state-dir``, ``--aws``, ...) work before and after the subcommand."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldeck.cli import build_parser

GLOBAL_FLAGS = ("--aws", "--bucket", "--state-dir", "--json", "--stack-prefix", "--cdk-out")


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _commands(sub, (*path, name))


def test_every_command_accepts_every_global_flag() -> None:
    # Given the whole command tree
    commands = list(_commands(build_parser()))
    assert len(commands) > 10
    # Then each command, at every depth, takes each global flag itself
    for path, sub in commands:
        flags = {option for action in sub._actions for option in action.option_strings}
        missing = [f for f in GLOBAL_FLAGS if f not in flags]
        assert not missing, f"`modeldeck {' '.join(path)}` does not take {missing}"


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "breast-cancer", "--json"],
        ["--json", "status", "breast-cancer"],
        ["drift", "check", "breast-cancer", "--json"],
        ["models", "show", "breast-cancer", "--json"],
        ["models", "--json", "list"],
    ],
)
def test_json_is_honoured_in_any_position(argv: list[str]) -> None:
    assert build_parser().parse_args(argv).json is True


def test_a_flag_after_the_subcommand_overrides_and_an_absent_one_keeps_the_top_level_value() -> None:
    parser = build_parser()
    # When the state dir is given before and no --json after
    args = parser.parse_args(["--state-dir", "/tmp/a", "status"])
    # Then the top-level value stands and --json keeps its default
    assert args.state_dir == Path("/tmp/a") and args.json is False
    # When it is given after the subcommand, that value wins
    assert parser.parse_args(["--state-dir", "/tmp/a", "status", "--state-dir", "/tmp/b"]).state_dir == Path("/tmp/b")
