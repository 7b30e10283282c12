"""Every ```bash block of README.md runs as written, in order, against a fresh local cloud.

Conventions (README, Development section):

- A block fenced ```bash runs: its text goes to ``bash -e -o pipefail`` with the working directory a temporary
  copy of ``models/``, ``modeldeck`` the venv's console script, ``MODELDECK_STATE_DIR`` a fresh state directory
  and the session's shared synthesized app (``MODELDECK_CDK_OUT``, see tests/conftest.py). A non-zero exit fails.
- A line ending in ``# terminal 1`` is a blocking server (``modeldeck serve``): it starts in the background and
  stops (Ctrl-C) after the last block. Port 8080 is replaced by a free port, so the test runs beside a ``make serve``.
- ``curl`` fails on an HTTP error (``--fail-with-body``), and every ``curl`` is followed in its block by the
  documented response as a ``# {...}`` comment, which the real response must match (same keys and values; a
  string holding ``…`` matches any string, numbers to the README's four decimals).
- Blocks fenced ```bash no-run (they would run this test suite itself) or ```bash aws (they need an AWS account)
  are checked, not run: ``bash -n``, and every ``modeldeck`` command line parses with the CLI's own parser.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modeldeck.cli import build_parser
from modeldeck.localcloud import running_endpoint
from tests.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("readme")]

README = ROOT / "README.md"
BIN = Path(sys.executable).parent
CHECKED_ONLY = {"no-run", "aws"}
SERVER_LINE = re.compile(r"#\s*terminal 1\b")
# Every curl call fails on an HTTP error and leaves its body in $DOCS_CURL/<n>.out for the output checks.
CURL_SHIM = r"""
curl() {
  local out
  out="$DOCS_CURL/$(printf '%03d' "$(find "$DOCS_CURL" -name '*.out' | wc -l)").out"
  command curl --fail-with-body --max-time 60 "$@" > "$out" || { local rc=$?; cat "$out"; return $rc; }
  cat "$out"
}
"""


@dataclass
class Block:
    info: str  # the fence's words after "bash" ("" when the block runs)
    text: str
    line: int  # 1-based line of the opening fence in README.md

    @property
    def runs(self) -> bool:
        return not CHECKED_ONLY & set(self.info.split())


def bash_blocks(markdown: str) -> list[Block]:
    """The ```bash blocks of a Markdown document, in order."""
    blocks = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        match = re.fullmatch(r"```bash(?:\s+(.*))?", lines[i].strip())
        if match:
            end = lines.index("```", i + 1)
            blocks.append(Block((match.group(1) or "").strip(), "\n".join(lines[i + 1 : end]) + "\n", i + 1))
            i = end
        i += 1
    return blocks


def logical_lines(text: str) -> list[str]:
    """Shell lines with backslash continuations joined (quoted multi-line arguments stay as they are)."""
    return text.replace("\\\n", " ").splitlines()


def modeldeck_commands(text: str) -> list[list[str]]:
    """Each ``modeldeck ...`` command of a block as its argument list (redirections and comments left out)."""
    commands = []
    for line in logical_lines(text):
        if "modeldeck" not in line or line.lstrip().startswith("#"):
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        tokens = list(lexer)
        command: list[str] = []
        for token in [*tokens, ";"]:
            if token in {"&&", "||", ";", "|", "&"}:
                words = [w for w in command if not re.fullmatch(r"[A-Z_]+=.*", w)]  # VAR=value prefixes
                if words and words[0] == "modeldeck":
                    commands.append(words[1:])
                command = []
            elif token in {">", ">>", "<", "2>"}:
                command.append("\0redirect")
            elif command and command[-1] == "\0redirect":
                command.pop()  # the redirection's target
            else:
                command.append(token)
    return commands


def assert_parses(block: Block) -> None:
    for argv in modeldeck_commands(block.text):
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:
            raise AssertionError(f"README.md:{block.line}: `modeldeck {shlex.join(argv)}` does not parse") from exc


def expected_outputs(text: str) -> list[Any]:
    """The documented responses: a ``# {`` comment line and the ``#`` lines continuing it, as JSON."""
    documented: list[list[str]] = []
    open_comment = False
    for line in text.splitlines():
        if line.startswith("# {"):
            documented.append([line[2:]])
        elif open_comment and line.startswith("#  "):
            documented[-1].append(line[2:])
        open_comment = line.startswith("#") and bool(documented)
    return [json.loads("".join(parts)) for parts in documented]


def matches(expected: Any, actual: Any) -> bool:
    """``actual`` has ``expected``'s shape and values; ``…`` in a string is a wildcard, numbers to 1e-4."""
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and expected.keys() == actual.keys()
            and all(matches(expected[k], actual[k]) for k in expected)
        )
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and all(map(matches, expected, actual))
    if isinstance(expected, str) and "…" in expected:
        return isinstance(actual, str)
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        return isinstance(actual, (int, float)) and abs(expected - actual) <= 1e-4
    return bool(expected == actual)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_blocks_that_need_aws_or_run_the_tests_are_valid_commands() -> None:
    # Given the README's blocks that are not run here
    blocks = [block for block in bash_blocks(README.read_text()) if not block.runs]
    # Then there are few, each is valid bash, and every modeldeck line in them parses
    assert {block.info for block in blocks} <= CHECKED_ONLY and len(blocks) <= 3, blocks
    for block in blocks:
        done = subprocess.run(["bash", "-n"], input=block.text, capture_output=True, text=True)
        assert done.returncode == 0, f"README.md:{block.line}: {done.stderr}"
        assert_parses(block)


def test_the_readme_runs_as_written_in_order(tmp_path: Path) -> None:
    # Given a fresh state directory, a working directory with the model specs, and the README's runnable blocks
    blocks = [block for block in bash_blocks(README.read_text()) if block.runs]
    assert len(blocks) >= 6, "the README lost its runnable examples"
    for block in blocks:
        code = "\n".join(line.split(" # ")[0] for line in block.text.splitlines() if not line.startswith("#"))
        assert not re.search(r"…|\[[A-Z_]+\]", code), f"README.md:{block.line}: a placeholder in a bash block"
        # make targets run this suite or write into the repository; such blocks are fenced ```bash no-run
        assert not re.search(r"^\s*make\b", code, re.M), f"README.md:{block.line}: `make` in a block that runs"
        assert_parses(block)
    work, state, curl_dir = tmp_path / "work", tmp_path / "state", tmp_path / "curl"
    shutil.copytree(ROOT / "models", work / "models")
    curl_dir.mkdir()
    port = str(free_port())
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "MODELDECK_STATE_DIR": str(state),
        "DOCS_CURL": str(curl_dir),
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    }
    servers: list[subprocess.Popen[str]] = []
    timings = []
    try:
        # When each block runs in order
        for block in blocks:
            started = time.monotonic()
            text = block.text.replace("127.0.0.1:8080", f"127.0.0.1:{port}").replace("--port 8080", f"--port {port}")
            script = []
            for line in text.splitlines(keepends=True):
                if SERVER_LINE.search(line):
                    servers.append(start_server(line, work, env, state, block))
                else:
                    script.append(line)
            curls_before = len(list(curl_dir.glob("*.out")))
            done = subprocess.run(
                ["bash", "-e", "-o", "pipefail", "-c", CURL_SHIM + "".join(script)],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            # Then it succeeds
            assert done.returncode == 0, (
                f"README.md:{block.line}: the block failed (exit {done.returncode}):\n{block.text}\n"
                f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
            )
            # And every curl answered what the README documents
            answers = sorted(curl_dir.glob("*.out"))[curls_before:]
            documented = expected_outputs(block.text)
            assert len(documented) == len(answers), f"README.md:{block.line}: document every curl's response"
            for expected, answer in zip(documented, answers, strict=True):
                actual = json.loads(answer.read_text())
                assert matches(expected, actual), f"README.md:{block.line}: documented {expected}, got {actual}"
            synth = " (synthesized the app)" if "synthesizing the CDK app" in done.stderr else ""
            timings.append(f"README.md:{block.line} {time.monotonic() - started:.1f} s{synth}")
    finally:
        for server in servers:
            os.killpg(server.pid, signal.SIGINT)  # Ctrl-C, as the README says
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        print("\n".join(timings))
    # And the examples' files were written where the user ran them, not into the repository
    assert (work / "scored.parquet").is_file() and (work / "report.html").is_file()


def start_server(line: str, cwd: Path, env: dict[str, str], state: Path, block: Block) -> subprocess.Popen[str]:
    """Start a ``# terminal 1`` line in the background and wait until it serves and owns the state directory."""
    process = subprocess.Popen(
        ["bash", "-c", line],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 120
    seen = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        seen.append(line)
        if "serving on" in line or not line:
            break
    while running_endpoint(state) is None and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert running_endpoint(state) is not None, f"README.md:{block.line}: the server did not start:\n{''.join(seen)}"
    # Keep reading its output, so a full pipe never blocks it.
    threading.Thread(target=process.stdout.read, daemon=True).start()
    return process


def test_the_checks_catch_a_broken_block() -> None:
    # Given blocks with what the README must not hold
    readme = (
        "```bash\nMODELDECK_API_KEY=k modeldeck serve --port 1   # terminal 1\nmodeldeck models show m [VERSION]\n```\n"
    )
    block = bash_blocks(readme)[0]
    # Then the commands are found behind variables, and a placeholder version does not parse
    assert modeldeck_commands(block.text) == [["serve", "--port", "1"], ["models", "show", "m", "[VERSION]"]]
    with pytest.raises(AssertionError, match="does not parse"):
        assert_parses(block)
    # And a documented response must match the real one, with … as the only wildcard
    documented = expected_outputs('curl x\n# {"id":"…","labels":1,\n#   "p":[0.7164]}\n')
    assert documented == [{"id": "…", "labels": 1, "p": [0.7164]}]
    assert matches(documented[0], {"id": "abc", "labels": 1, "p": [0.71639978]})
    assert not matches(documented[0], {"id": "abc", "labels": 2, "p": [0.71639978]})
    assert not matches(documented[0], {"id": "abc", "labels": 1, "p": [0.7164], "error": "x"})
