"""`modeldeck predict` (batch scoring through the same session and validation) and `modeldeck openapi`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modeldeck.batch import BatchError, score_file
from modeldeck.cli import build_parser, main
from modeldeck.cli.common import Context
from modeldeck.cli.serve import cmd_predict, cmd_serve
from modeldeck.errors import ModeldeckError
from modeldeck.onnxmodel import OnnxModel
from modeldeck.openapi import document, spec_models
from modeldeck.registry import Registry
from tests.fixtures.inference import MODEL


@pytest.fixture
def holdout_csv(tmp_path: Path, trained_demo: Any) -> Path:
    """Given the demo holdout as a CSV file, with an extra id column and one missing value."""
    frame = pd.DataFrame(trained_demo.holdout["columns"])
    frame.insert(0, "patient", [f"p{i}" for i in range(len(frame))])
    frame.loc[3, "mean_texture"] = np.nan
    path = tmp_path / "holdout.csv"
    frame.to_csv(path, index=False)
    return path


def expected(trained_demo: Any, frame: pd.DataFrame) -> Any:
    model = OnnxModel(trained_demo.card, trained_demo.onnx)
    schema = trained_demo.card.schema
    return model.predict(schema.columns_from_arrays({c: frame[c].to_numpy() for c in frame.columns}))


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_predict_scores_a_file_in_chunks_like_the_api(
    served_cloud: Any,
    trained_demo: Any,
    holdout_csv: Path,
    tmp_path: Path,
    suffix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cloud, _ = served_cloud
    out = tmp_path / f"scored{suffix}"
    args = build_parser().parse_args(
        ["--json", "predict", MODEL, "--version", "1", "-i", str(holdout_csv), "-o", str(out), "--chunk-rows", "25"]
    )
    # When
    assert cmd_predict(Context(args, cloud.client, cloud.bucket)) == 0
    # Then every row is scored, in order, with the session's answers, and the input columns kept
    summary = json.loads(capsys.readouterr().out)
    source = pd.read_csv(holdout_csv)
    assert summary["rows"] == len(source) and summary["chunks"] == -(-len(source) // 25)
    want = expected(trained_demo, source)
    if suffix == ".jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["prediction"] for r in rows] == want.labels.tolist()
        assert rows[0]["patient"] == "p0" and rows[3]["mean_texture"] is None
        assert np.allclose([r["probabilities"] for r in rows], want.probabilities, atol=1e-6)
        return
    scored = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    assert scored["patient"].tolist() == source["patient"].tolist()
    assert scored["prediction"].tolist() == want.labels.tolist()
    assert np.allclose(scored["probability_malignant"], want.probabilities[:, 1], atol=1e-6)


def test_predict_reads_parquet(served_cloud: Any, holdout_csv: Path, tmp_path: Path, trained_demo: Any) -> None:
    source = tmp_path / "in.parquet"
    pd.read_csv(holdout_csv).to_parquet(source)
    result = score_file(OnnxModel(trained_demo.card, trained_demo.onnx), source, tmp_path / "out.csv", chunk_rows=50)
    assert result.rows == len(trained_demo.holdout["target"]) and result.chunks == 3


def test_an_invalid_row_names_its_file_row_and_leaves_no_output(
    trained_demo: Any, holdout_csv: Path, tmp_path: Path
) -> None:
    frame = pd.read_csv(holdout_csv)
    frame.loc[60, "mean_radius"] = -5.0
    frame.to_csv(holdout_csv, index=False)
    out = tmp_path / "scored.csv"
    with pytest.raises(BatchError) as err:
        score_file(OnnxModel(trained_demo.card, trained_demo.onnx), holdout_csv, out, chunk_rows=25)
    assert str(err.value) == (f"{holdout_csv}: row 61: 'mean_radius' = -5 is outside the allowed range [0.0, 100.0]")
    assert not out.exists()


@pytest.mark.parametrize("row", [6, 61])
def test_a_non_number_in_a_csv_names_its_own_row_and_column_and_leaves_no_output(
    trained_demo: Any, holdout_csv: Path, tmp_path: Path, row: int
) -> None:
    # Given a CSV whose numeric column holds text in one cell (pandas then reads the column as strings)
    lines = holdout_csv.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[row].split(",")  # line N is data row N (line 0 is the header)
    cells[header.index("mean_radius")] = "abc"
    lines[row] = ",".join(cells)
    holdout_csv.write_text("\n".join(lines) + "\n")
    out = tmp_path / "scored.csv"
    # When it is scored in chunks
    with pytest.raises(BatchError) as err:
        score_file(OnnxModel(trained_demo.card, trained_demo.onnx), holdout_csv, out, chunk_rows=25)
    # Then the error names that cell, not the first row of the column, and nothing is written
    assert str(err.value) == f"{holdout_csv}: row {row}: 'mean_radius' must be a number, got 'abc'"
    assert not out.exists()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("data.txt", "unsupported input format .txt"),
        ("missing.csv", "no such file"),
    ],
)
def test_unusable_inputs_are_one_line_errors(trained_demo: Any, tmp_path: Path, name: str, message: str) -> None:
    path = tmp_path / name
    if name.endswith(".txt"):
        path.write_text("x")
    with pytest.raises(BatchError, match=message):
        score_file(OnnxModel(trained_demo.card, trained_demo.onnx), path, tmp_path / "o.csv")


def test_a_missing_feature_column_is_an_error(trained_demo: Any, holdout_csv: Path, tmp_path: Path) -> None:
    pd.read_csv(holdout_csv).drop(columns=["mean_area"]).to_csv(holdout_csv, index=False)
    with pytest.raises(BatchError, match="missing column"):
        score_file(OnnxModel(trained_demo.card, trained_demo.onnx), holdout_csv, tmp_path / "o.jsonl")


def test_predict_uses_the_champion_by_default(
    served_cloud: Any, holdout_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cloud, _ = served_cloud
    Registry(cloud.client("s3"), cloud.bucket).set_champion(MODEL, 1)
    args = build_parser().parse_args(
        ["--json", "predict", MODEL, "-i", str(holdout_csv), "-o", str(tmp_path / "o.csv")]
    )
    assert cmd_predict(Context(args, cloud.client, cloud.bucket)) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 1


def test_openapi_prints_the_generated_document_without_a_cloud(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["openapi", "--server", "http://127.0.0.1:9"]) == 0
    assert json.loads(capsys.readouterr().out) == document(spec_models(), "http://127.0.0.1:9")


def test_serve_rejects_an_invalid_port(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--port", "70000"])
    assert "ports are 0-65535" in capsys.readouterr().err


def test_serve_binds_loopback_only(served_cloud: Any) -> None:
    cloud, _ = served_cloud
    args = build_parser().parse_args(["serve", "--host", "0.0.0.0"])
    with pytest.raises(ModeldeckError, match=r"binds 127\.0\.0\.1 only"):
        cmd_serve(Context(args, cloud.client, cloud.bucket, cloud=cloud))
