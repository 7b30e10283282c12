"""Hostile command lines and model specs: one line on stderr and a non-zero exit, never a traceback.

Generated argument lists go through ``modeldeck.cli.main`` against a local cloud that holds the demo model
(the deployed app is left out, so commands that need it fail with their own one-line error). Generated spec
tables go through ``parse_spec`` and generated files through ``load_spec``: only ``SpecError`` may escape.
"""

from __future__ import annotations

import contextlib
import io
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modeldeck import cli
from modeldeck.cli.common import Context
from modeldeck.errors import SpecError
from modeldeck.localcloud import LocalCloud, local_cloud
from modeldeck.registry import BASELINE, HOLDOUT, Registry
from modeldeck.spec import load_spec, parse_spec
from tests.conftest import DEMO_SPEC
from tests.hardening.conftest import record_figures

COUNTS = {"cli_argument_lists": 0, "cli_nonzero_exits": 0, "spec_tables": 0, "spec_files": 0, "spec_errors": 0}

# Every command and flag of the CLI (but `serve`, which serves until interrupted), with values good and bad.
VOCAB = [
    "train",
    "models",
    "list",
    "show",
    "diff",
    "release",
    "promote",
    "rollback",
    "status",
    "drift",
    "check",
    "report",
    "predict",
    "openapi",
    "demo",
    "--json",
    "--aws",
    "--bucket",
    "--state-dir",
    "--cdk-out",
    "--stack-prefix",
    "--strategy",
    "canary",
    "linear",
    "shadow",
    "all-at-once",
    "bogus",
    "--steps",
    "--weight",
    "--no-wait",
    "--to",
    "--window",
    "--end",
    "--min-rows",
    "--publish",
    "--topic-arn",
    "--out",
    "--history",
    "--version",
    "--input",
    "-i",
    "--output",
    "-o",
    "--chunk-rows",
    "--server",
    "--spec",
    "--help",
    "-h",
    "breast-cancer",
    "no-such-model",
    "1",
    "2",
    "0",
    "-1",
    "v1",
    "1.5",
    "1e9",
    "99999999999999999999",
    "nan",
    "inf",
    "1h",
    "0h",
    "-5m",
    "2026-13-45T99:99",
    "2026-01-01T00:00:00Z",
    "",
    " ",
    "--",
    "-",
    "--=",
    "=",
    str(DEMO_SPEC),
    "missing.toml",
    "out.html",
    "in.csv",
    "out.parquet",
    "bad.toml",
    "empty.csv",
    ".",
    "\x00",
    "ünïcødé",
    "😀",
    "--json=1",
    "--weight=2",
    "--weight=-0.1",
    "--steps=0",
    "--port",
    "70000",
]
TOKEN = st.one_of(
    st.sampled_from(VOCAB), st.text(st.characters(blacklist_characters="/\\", codec="utf-8"), max_size=12)
)
COMMANDS = st.sampled_from(
    [
        [],
        ["models", "list"],
        ["models", "show"],
        ["models", "diff"],
        ["release"],
        ["promote"],
        ["rollback"],
        ["status"],
        ["drift", "check"],
        ["drift", "report"],
        ["predict"],
        ["openapi"],
        ["train"],
        ["demo"],
    ]
)


@pytest.fixture(scope="module")
def registry_cloud(trained_demo: Any) -> Iterator[LocalCloud]:
    """A local cloud whose registry holds the demo model v1, without the deployed app."""
    with local_cloud() as cloud:
        Registry(cloud.client("s3"), cloud.bucket).register(
            trained_demo.card, trained_demo.onnx, {BASELINE: trained_demo.baseline, HOLDOUT: trained_demo.holdout}
        )
        yield cloud


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli-fuzz")
    (path / "bad.toml").write_text("name = [\n")
    (path / "in.csv").write_text("mean_radius,size_band\n1,small\nx,\n")
    (path / "empty.csv").write_text("")
    return path


def run_cli(argv: list[str]) -> tuple[int, str]:
    """``main(argv)``'s exit code and stderr; any exception but SystemExit fails the test."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = cli.main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, err.getvalue()


def check_outcome(argv: list[str], code: int, stderr: str) -> None:
    COUNTS["cli_argument_lists"] += 1
    assert "Traceback" not in stderr, (argv, stderr)
    if code != 0:
        COUNTS["cli_nonzero_exits"] += 1
        # The error line names the program (a newline the user typed in an argument may be echoed back).
        assert stderr.strip(), (argv, "a non-zero exit with nothing on stderr")
        assert any(line.startswith("modeldeck") for line in stderr.split("\n")), (argv, stderr)


@pytest.fixture
def fuzz_cli(registry_cloud: LocalCloud, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    @contextlib.contextmanager
    def open_context(args: Any) -> Iterator[Context]:
        yield Context(args, registry_cloud.client, registry_cloud.bucket, None, registry_cloud)

    monkeypatch.setattr(cli, "open_context", open_context)
    monkeypatch.chdir(workdir)

    def fuzz(argv: list[str]) -> None:
        code, stderr = run_cli(argv)
        check_outcome(argv, code, stderr)

    return fuzz


def _cli_examples(n: int) -> Any:
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@_cli_examples(60)
@given(command=COMMANDS, tokens=st.lists(TOKEN, max_size=6))
def test_cli_argument_lists_fail_in_one_line(fuzz_cli: Any, command: list[str], tokens: list[str]) -> None:
    fuzz_cli([*command, *tokens])


@pytest.mark.slow
@_cli_examples(600)
@given(command=COMMANDS, tokens=st.lists(TOKEN, max_size=8))
def test_cli_argument_lists_fail_in_one_line_many(fuzz_cli: Any, command: list[str], tokens: list[str]) -> None:
    fuzz_cli([*command, *tokens])


def test_aws_without_region_or_credentials_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    # Regression: botocore's NoRegionError / NoCredentialsError escaped as a traceback.
    for key in (
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
    ):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    code, stderr = run_cli(["--aws", "status"])
    assert code == 1 and "Traceback" not in stderr
    assert stderr.count("\n") == 1 and stderr.startswith("modeldeck: error: AWS: "), stderr


# Spec fuzzing: TOML-shaped values, and mutations of the demo spec (near-valid is where bugs hide).
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
TOML_VALUES = st.recursive(
    SCALARS.filter(lambda v: v is not None),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12,
)
DEMO = tomllib.loads(DEMO_SPEC.read_text())
KEYS = [
    "name",
    "task",
    "description",
    "dataset",
    "features",
    "estimator",
    "training",
    "source",
    "target",
    "version_id",
    "derive",
    "bins",
    "labels",
    "type",
    "min",
    "max",
    "values",
    "allow_missing",
    "class",
    "params",
    "test_size",
    "seed",
    "primary_metric",
    "tolerance",
    "scale",
    "bogus",
]


@st.composite
def mutated_spec(draw: Any) -> dict[str, Any]:
    """The demo spec with a few values replaced, deleted or added, at any depth."""
    import copy

    spec = copy.deepcopy(DEMO)
    for _ in range(draw(st.integers(1, 4))):
        node: Any = spec
        while isinstance(node, (dict, list)) and node and draw(st.booleans()):
            child = draw(st.sampled_from(list(node) if isinstance(node, dict) else list(range(len(node)))))
            if not isinstance(node[child], (dict, list)):
                break
            node = node[child]
        if isinstance(node, dict):
            key = draw(st.sampled_from([*node, *KEYS])) if node else draw(st.sampled_from(KEYS))
            if draw(st.integers(0, 3)) == 0:
                node.pop(key, None)
            else:
                node[key] = draw(TOML_VALUES)
        elif isinstance(node, list):
            if node and draw(st.booleans()):
                node[draw(st.integers(0, len(node) - 1))] = draw(TOML_VALUES)
            else:
                node.append(draw(TOML_VALUES))
    return spec


def check_spec(raw: Any) -> None:
    COUNTS["spec_tables"] += 1
    try:
        parse_spec(raw, origin="<fuzz>")
    except SpecError as exc:
        COUNTS["spec_errors"] += 1
        assert str(exc).startswith("invalid model spec <fuzz>:")


@settings(max_examples=150, deadline=None, derandomize=True)
@given(raw=st.one_of(mutated_spec(), st.dictionaries(st.sampled_from(KEYS), TOML_VALUES, max_size=6)))
def test_generated_spec_tables_raise_only_spec_error(raw: dict[str, Any]) -> None:
    check_spec(raw)


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, derandomize=True)
@given(raw=st.one_of(mutated_spec(), st.dictionaries(st.sampled_from(KEYS), TOML_VALUES, max_size=6)))
def test_generated_spec_tables_raise_only_spec_error_many(raw: dict[str, Any]) -> None:
    check_spec(raw)


@settings(
    max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    content=st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200).map(str.encode),
        st.sampled_from([DEMO_SPEC.read_bytes()]).flatmap(lambda b: st.integers(0, len(b)).map(lambda i: b[:i])),
    )
)
def test_generated_spec_files_raise_only_spec_error(tmp_path: Path, content: bytes) -> None:
    # Given arbitrary bytes, or the demo spec cut anywhere, as a spec file
    path = tmp_path / "fuzz.toml"
    path.write_bytes(content)
    COUNTS["spec_files"] += 1
    # Then loading it succeeds or raises SpecError, never anything else
    with contextlib.suppress(SpecError):
        load_spec(path)


def test_a_spec_that_is_a_directory_or_missing_is_a_spec_error(tmp_path: Path) -> None:
    for path in (tmp_path, tmp_path / "missing.toml"):
        with pytest.raises(SpecError):
            load_spec(path)


@pytest.fixture(scope="module", autouse=True)
def figures() -> Iterator[None]:
    yield
    if COUNTS["cli_argument_lists"] or COUNTS["spec_tables"]:
        record_figures("cli", dict(COUNTS))
